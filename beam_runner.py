"""Command line: ``python beam_runner.py [--pipeline NAME] [--source KIND[:LANG]=PATTERN ...] [Beam options]``.

Any Beam option passes through (``--runner DataflowRunner --project ...``).
Local runs (no runner, or DirectRunner) use the FnApiRunner directly, which
needs no download and honours ``--direct_num_workers``.
"""

import argparse
import logging
import sys


class _WithoutBigQueryNotice(logging.Filter):
    """Beam announces at import that BigQuery's client is missing; no stage here uses BigQuery."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("apitools not found")


# Before Beam is imported, so its import-time notice meets the filter.
logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
logging.getLogger().handlers[0].addFilter(_WithoutBigQueryNotice())

import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions  # noqa: E402
from apache_beam.runners.portability.fn_api_runner import FnApiRunner  # noqa: E402

from mining.summary import format_summary  # noqa: E402
from pipelines import io, pretrain  # noqa: E402
from pipelines.options import MiningOptions  # noqa: E402
from schemas.manifest import MANIFEST_NAME, Manifest, parse_manifest  # noqa: E402


def load_manifest(directory: str) -> Manifest:
    path = io.join(directory, MANIFEST_NAME)
    return parse_manifest(io.read_bytes(path), where=path)


def _unknown_options(options: PipelineOptions) -> list[str]:
    known = options.get_all_options(retain_unknown_options=False)
    return sorted(set(options.get_all_options(retain_unknown_options=True)) - set(known))


def _local_runner(options: PipelineOptions):
    """The FnApiRunner for local runs: DirectRunner would first try to download Prism."""
    runner = options.view_as(StandardOptions).runner
    if runner is not None and runner.lower() not in ("directrunner", "direct"):
        return None
    direct = options.view_as(DirectOptions)
    if direct.direct_num_workers != 1 and direct.direct_running_mode == "in_memory":
        direct.direct_running_mode = "multi_processing"
    return FnApiRunner()


def run_pipeline(argv: list[str]) -> int:
    options = PipelineOptions(argv)
    unknown = _unknown_options(options)
    if unknown:
        raise SystemExit(f"unknown option(s): {', '.join('--' + name for name in unknown)}")
    mining = options.view_as(MiningOptions)
    io.prepare_output(mining.output)
    with beam.Pipeline(runner=_local_runner(options), options=options) as pipeline:
        pretrain.build(pipeline, mining)
    print(format_summary(load_manifest(mining.output), mining.output))
    return 0


def summary_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="beam_runner.py summary", description="Print a run's funnel summary.")
    parser.add_argument("directory", help="output directory of a run (local or gs://)")
    args = parser.parse_args(argv)
    print(format_summary(load_manifest(args.directory), args.directory))
    return 0


COMMANDS = {"summary": summary_command}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    if argv and not argv[0].startswith("-"):
        raise SystemExit(f"unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)}, or pipeline options")
    return run_pipeline(argv)


if __name__ == "__main__":
    sys.exit(main())
