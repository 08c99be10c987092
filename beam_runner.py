"""Command line: ``python beam_runner.py [--pipeline NAME] [--source KIND[:LANG]=PATTERN ...] [Beam options]``.

Any Beam option passes through (``--runner DataflowRunner --project ...``).
Local runs (no runner, or DirectRunner) use the FnApiRunner directly, which
needs no download and honours ``--direct_num_workers``.
"""

import argparse
import copy
import functools
import importlib
import json
import logging
import os
import re
import signal
import sys
from typing import Callable


class _WithoutBigQueryNotice(logging.Filter):
    """Beam announces at import that BigQuery's client is missing; no stage here uses BigQuery."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("apitools not found")


# The packages whose ValueErrors name a problem of the data a run was given (a damaged shard, an
# encoder's NaN output), found only while the run reads it: the user's to fix, told in one line.
_OWN_PACKAGES = ("inspection", "mining", "pipelines", "schemas", "training")


def _is_data_error(error: BaseException | None) -> bool:
    return isinstance(error, ValueError) and type(error).__module__.split(".", 1)[0] in _OWN_PACKAGES


# A runner whose workers are other processes (a portable job service, Flink, Spark, Dataflow) reports a
# worker's failure as text, the worker's traceback, in which "package.module.Class: message" names the error.
_RAISED_LINE = re.compile(rf"^((?:{'|'.join(_OWN_PACKAGES)})(?:\.\w+)+)\.(\w+): (.+)$", re.MULTILINE)


def _data_error_named(text: str) -> str | None:
    """The message of the last data error a worker's traceback names, if any."""
    for module, name, message in reversed(_RAISED_LINE.findall(text)):
        try:
            raised = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if isinstance(raised, type) and issubclass(raised, ValueError):
            return message
    return None


def _data_error_message(error: BaseException) -> str | None:
    return str(error) if _is_data_error(error) else _data_error_named(str(error))


class _WithoutDataErrorTraceback(logging.Filter):
    """Beam logs a failing element's traceback before re-raising it (a runner with workers of their own, as
    text in the job's messages); a data error is said once, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            return not _is_data_error(record.exc_info[1])
        return _data_error_named(record.getMessage()) is None


# Before Beam is imported, so its import-time notice meets the filter.
logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
logging.getLogger().handlers[0].addFilter(_WithoutBigQueryNotice())
logging.getLogger().handlers[0].addFilter(_WithoutDataErrorTraceback())

import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import (  # noqa: E402
    DirectOptions, GoogleCloudOptions, PipelineOptions, StandardOptions,
)
from apache_beam.runners.portability.fn_api_runner import FnApiRunner  # noqa: E402
from apache_beam.runners.runner import PipelineRunner  # noqa: E402

from inspection.diff import diff  # noqa: E402
from inspection.sample import MAX_SAMPLE_ROWS, InspectionError, format_rows, sample_removed, sample_rows  # noqa: E402
from inspection.summary import format_summary, summarize  # noqa: E402
from inspection.terminal import terminal_safe  # noqa: E402
from mining import run_store  # noqa: E402
from pipelines import io, mine, progress  # noqa: E402
from pipelines.options import MiningOptions  # noqa: E402
from schemas.manifest import (  # noqa: E402
    DEAD_LETTER_DIR,
    MANIFEST_NAME,
    REJECTED_DIR,
    SHARDS_DIR,
    Manifest,
    ManifestError,
)


def load_manifest(directory: str) -> Manifest:
    missing = f"{directory} is not a finished run: no {MANIFEST_NAME} there (or no such directory)"
    return run_store.read_manifest(io, directory, missing).manifest


# Pipelines that read a finished run (--input) rather than mine sources. These modules (and generate's) are
# imported only when chosen: RunInference imports torch, seconds and hundreds of MB at every start otherwise.
DERIVED_PIPELINES = {
    "consistency": "pipelines.consistency", "hardnegatives": "pipelines.hard_negatives", "teacher": "pipelines.teacher",
}
# Pipelines with a plan and a build of their own: the derived ones, and generate (which reads nothing).
PLANNED_PIPELINES = {**DERIVED_PIPELINES, "generate": "pipelines.generate"}


def _unknown_options(options: PipelineOptions) -> list[str]:
    known = options.get_all_options(retain_unknown_options=False)
    return sorted(set(options.get_all_options(retain_unknown_options=True)) - set(known))


def _runs_locally(options: PipelineOptions) -> bool:
    """No --runner, or the DirectRunner: the run's workers are this machine."""
    runner = options.view_as(StandardOptions).runner
    return runner is None or runner.lower() in ("directrunner", "direct")


def _local_runner(options: PipelineOptions, quiet: bool):
    """The FnApiRunner for local runs (DirectRunner would first try to download Prism); with progress on a terminal."""
    if not _runs_locally(options):
        return None
    direct = options.view_as(DirectOptions)
    if direct.direct_num_workers != 1 and direct.direct_running_mode == "in_memory":
        direct.direct_running_mode = "multi_processing"
    return progress.ProgressRunner() if progress.shows_progress(quiet) else FnApiRunner()


def _check_cloud_options(options: PipelineOptions) -> None:
    runner = (options.view_as(StandardOptions).runner or "").lower()
    if runner not in ("dataflowrunner", "dataflow"):
        return
    cloud = options.view_as(GoogleCloudOptions)
    for name, value in (("--project", cloud.project), ("--region", cloud.region)):
        if not value:
            raise SystemExit(f"--runner DataflowRunner needs {name}")
    if not (cloud.temp_location or "").startswith("gs://"):
        raise SystemExit("--runner DataflowRunner needs --temp_location gs://BUCKET/PATH for staging and temp files")


def _check_local_device(options: PipelineOptions, device: str | None) -> None:
    """A local run's workers are this machine: --device cuda without CUDA here would fail on the first batch."""
    if device == "cuda" and _runs_locally(options):
        import torch  # only runs that name a device need it

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: this machine has no CUDA device for a local run's workers")


def run_pipeline(argv: list[str], runner: PipelineRunner | None = None) -> int:
    """Check everything that can be checked before any work starts, each failure one line; then run, on RUNNER
    if given (a benchmark's metered runner) instead of the one the options name."""
    options = PipelineOptions(argv)
    unknown = _unknown_options(options)
    if unknown:
        raise SystemExit(f"unknown option(s): {', '.join('--' + name for name in unknown)}")
    _check_cloud_options(options)
    mining = options.view_as(MiningOptions)
    _check_local_device(options, mining.device)
    planned = PLANNED_PIPELINES.get(mining.pipeline)
    derived = importlib.import_module(planned) if planned else None
    try:
        mining.anchor_local_paths()
        mining.validate()
        plan = derived.plan(mining) if derived else mine.plan_sources(mining)
        sources = [] if derived else [("--source", spec.pattern) for spec in plan.specs]
        io.check_output_apart(mining.output, mining.read_paths() + sources)
        io.prepare_output(mining.output, mining.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        raise SystemExit(str(error)) from None
    pipeline = beam.Pipeline(runner=runner or _local_runner(options, mining.quiet), options=options)
    (derived.build if derived else mine.build)(pipeline, mining, plan, io.Destination.for_output(mining.output))
    try:
        result = pipeline.run()
        template = options.view_as(GoogleCloudOptions).template_location
        if template:
            print(f"Dataflow template written to {template}; nothing was submitted")
            return 0
        result.wait_until_finish()
    except Exception as error:
        message = _data_error_message(error)
        if message is not None:
            raise SystemExit(f"the run stopped, nothing was published: {message}") from None
        raise
    print(format_summary(load_manifest(mining.output), mining.output))
    return 0


def _relative_files(directory: str, folder: str) -> list[str]:
    prefix = directory.rstrip("/") + "/"
    return [path[len(prefix) :] for path in io.match_files(io.join(directory, folder, "**"))]


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default, also of those without a help text (argparse shows defaults only in help texts)."""

    def _format_action(self, action: argparse.Action) -> str:
        if action.option_strings and not action.help and action.default is not argparse.SUPPRESS:
            action = copy.copy(action)
            action.help = "default: %(default)s"
        return super()._format_action(action)


def inspect_command(argv: list[str], prog: str = "beam_runner.py") -> int:
    parser = argparse.ArgumentParser(
        prog=f"{prog} inspect", description="Look into finished runs.", formatter_class=_DefaultsHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_command = functools.partial(commands.add_parser, formatter_class=_DefaultsHelpFormatter)
    summary = add_command("summary", help="totals, funnel, sources, languages, shards")
    summary.add_argument("directory")
    summary.add_argument("--json", action="store_true", help="machine-readable output")
    verify = add_command("verify", help="check every shard against the manifest; exit 1 on any problem")
    verify.add_argument("directory")
    sample = add_command("sample", help="print rows, or removed records of a reason")
    sample.add_argument("directory")
    sample.add_argument("--source")
    sample.add_argument("--lang")
    sample.add_argument("--rejected", metavar="REASON", help="a drop or dead-letter reason")
    sample.add_argument("-n", type=int, default=5, help=f"rows drawn, 1 to {MAX_SAMPLE_ROWS}")
    sample.add_argument("--seed", type=int, default=0, help="seeds the draw")
    compare = add_command("diff", help="what changed between two runs")
    compare.add_argument("directory")
    compare.add_argument("other")
    report = add_command("report", help="a self-contained HTML page")
    report.add_argument("directory")
    report.add_argument("--html", required=True, metavar="OUT.html", help="the page to write")
    args = parser.parse_args(argv)
    if args.command == "sample" and not 1 <= args.n <= MAX_SAMPLE_ROWS:
        raise SystemExit(f"-n must be between 1 and {MAX_SAMPLE_ROWS}, not {args.n}")
    # Writing over a directory would delete it, everything in it included.
    if args.command == "report" and (args.html.endswith("/") or os.path.isdir(args.html)):
        raise SystemExit(f"--html {args.html} is a directory; name the page, e.g. {args.html.rstrip('/')}/report.html")
    try:
        return _inspect(args)
    except (ManifestError, InspectionError) as error:
        raise SystemExit(str(error)) from None


def _inspect(args: argparse.Namespace) -> int:
    directory = args.directory
    manifest = load_manifest(directory)

    def join(*parts: str) -> str:
        return io.join(directory, *parts)

    if args.command == "summary":
        print(json.dumps(summarize(manifest), indent=2) if args.json
              else format_summary(manifest, directory))
    elif args.command == "verify":
        problems = run_store.verify(manifest, io, directory, _relative_files(directory, SHARDS_DIR))
        print(terminal_safe(
            "\n".join(problems) if problems else f"{directory}: {len(manifest.shards)} shard(s)"
            + (f", {len(manifest.generation.files)} generation file(s)" if manifest.generation else "") + " verified"
        ))
        return 1 if problems else 0
    elif args.command == "sample":
        if args.rejected is not None:
            rows = sample_removed(
                manifest, args.rejected, io.open_file, join, _relative_files(directory, REJECTED_DIR),
                _relative_files(directory, DEAD_LETTER_DIR), args.n, args.seed,
            )
        else:
            rows = sample_rows(
                manifest, io.open_file, join, _relative_files(directory, SHARDS_DIR), args.n, args.seed,
                args.source, args.lang,
            )
        print(format_rows(rows) if rows else "no matching rows")
    elif args.command == "diff":
        changes = diff(manifest, load_manifest(args.other))
        print(terminal_safe("\n".join(changes)) if changes else "no differences")
    else:
        from inspection.html_report import run_report  # only this command draws the page

        page = run_report(manifest, f"Mining run {directory}", io.open_file, join,
                          _relative_files(directory, SHARDS_DIR), _relative_files(directory, REJECTED_DIR))
        io.write_atomically(args.html, page.encode("utf-8"))
        print(f"wrote {args.html}")
    return 0


def _quiet_when_the_reader_leaves(command: Callable[[list[str]], int], argv: list[str]) -> int:
    """Run ``command``; if its reader closes the pipe (``| head``), stop quietly as Unix tools do."""
    try:
        code = command(argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # Python flushes stdout once more at exit; the pipe is gone, so that flush goes nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


COMMANDS = {"inspect": inspect_command}


def _option_classes(base: type) -> list[type]:
    return [cls for sub in base.__subclasses__() for cls in (sub, *_option_classes(sub))]


def pipeline_help(beam_options: bool = False, prog: str = "beam_runner.py") -> str:
    """The pipelines' own options (Beam's parser would list only -h); with ``beam_options``, Beam's instead."""
    parser = argparse.ArgumentParser(
        prog=prog, usage="%(prog)s [--pipeline NAME] [options] [Beam options]", formatter_class=_DefaultsHelpFormatter,
        description="Mine sources (pretrain, finetune, instruct), derive from a finished run (consistency, "
        f"hardnegatives) or generate instruction data (generate). `{prog.removesuffix(' mine')} inspect --help`: the tools that "
        "read a finished run.",
        epilog="Every option is also accepted spelled with underscores (--shard_size_mb). Any Beam pipeline option "
        "passes through (--runner DataflowRunner --project P --region R --temp_location gs://..., "
        "--direct_num_workers N): --help-beam lists them.",
    )
    if not beam_options:
        MiningOptions._add_argparse_args(parser)
        return parser.format_help()
    for options_class in dict.fromkeys(_option_classes(PipelineOptions)):
        if options_class is not MiningOptions:
            options_class._add_argparse_args(parser.add_argument_group(options_class.__name__))
    return parser.format_help()


def _print_help(argv: list[str], prog: str) -> int:
    print(pipeline_help(beam_options="--help-beam" in argv, prog=prog))
    return 0


def main(argv: list[str] | None = None, prog: str = "beam_runner.py") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return _quiet_when_the_reader_leaves(functools.partial(COMMANDS[argv[0]], prog=prog), argv[1:])
    if "-h" in argv or "--help" in argv or "--help-beam" in argv:
        return _quiet_when_the_reader_leaves(functools.partial(_print_help, prog=prog), argv)
    if argv and not argv[0].startswith("-"):
        raise SystemExit(f"unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)}, or pipeline options")
    return run_pipeline(argv)


TRAINING_COMMANDS = ("pretrain", "finetune", "split", "evaluate")
EMBEDMILL_USAGE = """usage: embedmill COMMAND [options]   (COMMAND --help for its options)

  mine       mine, derive or generate a run (python beam_runner.py): --pipeline pretrain|finetune|instruct|
             consistency|hardnegatives|teacher|generate, with Beam's options passing through
  inspect    read a finished run: summary, verify, sample, diff, report
  pretrain   contrastive pre-training on mined runs (python -m training pretrain)
  finetune   fine-tuning from a checkpoint
  split      a held-out part of a run
  evaluate   Tatoeba bitext mining or retrieval scores of an encoder"""


def embedmill(argv: list[str] | None = None) -> int:
    """The ``embedmill`` console command: one entry to the mining and the training commands."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(EMBEDMILL_USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "mine":
        return main(rest, prog="embedmill mine")
    if command in COMMANDS:
        return main(argv, prog="embedmill")
    if command in TRAINING_COMMANDS:
        from training.cli import main as training_main  # torch is imported only by the commands that need it

        training_main(argv, prog="embedmill")
        return 0
    raise SystemExit(f"unknown command {command!r}; commands: mine, {', '.join((*COMMANDS, *TRAINING_COMMANDS))}")


if __name__ == "__main__":
    sys.exit(main())
