"""``python -m training``: contrastive pre-training and fine-tuning on mined outputs, and held-out splits.

    python -m training pretrain --data DIR [--data DIR ...] --output CKPT [--model PATH|tiny]
        [--batch-size N] [--chunk-size N] [--max-steps N] [--lr X] [--temperature X] [--seed N] [--resume] ...
    python -m training finetune --data DIR [--data DIR ...] --model CKPT --output CKPT2 [--negatives N]
        [--batch-size N] [--epochs N | --max-steps N] [--temperature X] [--instruction TEXT] [--resume] ...
    python -m training split DIR --heldout-fraction F --train DIR --heldout DIR [--seed N]
    python -m training evaluate tatoeba|retrieval --model SPEC --data PATH [...] [--json OUT]

Under torchrun, ``pretrain`` runs one process per GPU (``torchrun --nproc-per-node 8 -m training pretrain ...``).
"""

import argparse
import json
import re
import sys

import transformers

from training import distributed, evaluation
from training.holdout import split_output
from training.prompts import DEFAULT_TASK
from training.shard_store import ShardIntegrityError
from training.checkpoint import StoredRun
from training.trainer import PretrainConfig, Trainer, resumed_config, run_to_resume

_DEFAULTS = PretrainConfig()
# Fine-tuning is pre-training's loop from a checkpoint, with instructions on queries and more hard negatives.
_FINETUNE_DEFAULTS = {"max_negatives": 7, "instruction": DEFAULT_TASK, "lr": 2e-5}


def _prefix(value: str) -> tuple[str, str, str]:
    match = re.fullmatch(r"([^:=]+):(query|passage)=(.*)", value, flags=re.DOTALL)
    if not match:
        raise argparse.ArgumentTypeError(f"expected SOURCE:query=TEXT or SOURCE:passage=TEXT, not {value!r}")
    return match.group(1), match.group(2), match.group(3)


def _pretrain_parser(commands, command: str = "pretrain") -> None:
    finetune = command == "finetune"
    parser = commands.add_parser(
        command,
        help="fine-tuning of a checkpoint with instructions and hard negatives (InfoNCE) on mined fine-tuning pairs"
        if finetune
        else "contrastive pre-training (InfoNCE, in-batch negatives) on mined pairs",
        argument_default=argparse.SUPPRESS,  # on --resume, only what is given overrides the stored run
    )

    def option(name: str, help: str, *, dest: str | None = None, **kwargs) -> None:
        field = dest or name.lstrip("-").replace("-", "_")
        default = getattr(_DEFAULTS, field, None)
        if finetune:
            default = None if field == "model" else _FINETUNE_DEFAULTS.get(field, default)
        shown = default is not None and default is not False and default not in ("", [], {})
        suffix = f" (default: {default})" if shown else ""
        # Flags too: an option left out must not override a resumed run's stored value.
        parser.add_argument(name, dest=field, help=help + suffix, default=argparse.SUPPRESS, **kwargs)

    option(
        "--data",
        "mined output directory, local or any fsspec URL (gs://...); repeatable",
        action="append",
        metavar="DIR",
    )
    option(
        "--output",
        "checkpoint directory: a Hugging Face / sentence-transformers model plus the training state",
        metavar="CKPT",
    )
    if finetune:
        option(
            "--model",
            "the checkpoint to fine-tune (a pretrain --output, or any transformers encoder); required unless --resume",
            metavar="CKPT",
        )
    else:
        option(
            "--model",
            "transformers encoder (path or hub id), or 'tiny': a small random BERT with a vocabulary trained on --data",
            metavar="PATH",
        )
    option("--batch-size", "pairs per global batch, all ranks together", type=int, metavar="N")
    option(
        "--chunk-size",
        "rows embedded at once with gradient caching; unset: the whole batch at once",
        type=int,
        metavar="N",
    )
    option("--max-steps", "train up to this step (with --resume: continue up to it)", type=int, metavar="N")
    if finetune:
        option(
            "--epochs",
            "instead of --max-steps: this many passes over the data, sum over sources of ceil(rows / batch size) steps each",
            type=float,
            metavar="N",
        )
    option("--lr", "peak learning rate of AdamW", type=float, metavar="X")
    option(
        "--warmup-steps",
        "linear warm-up steps, then linear decay to 0 at --max-steps (default: max-steps / 10)",
        type=int,
        metavar="N",
    )
    option("--weight-decay", "AdamW weight decay (not on biases and norms)", type=float, metavar="X")
    option("--max-grad-norm", "gradient clipping", type=float, metavar="X")
    option("--temperature", "InfoNCE temperature", type=float, metavar="X")
    option("--seed", "seeds the data order, source draws and initialisation", type=int, metavar="N")
    option("--alpha", "a batch's source is drawn with probability rows^alpha / sum", type=float, metavar="X")
    option("--max-query-length", "query tokens kept", type=int, metavar="N")
    option("--max-passage-length", "passage and negative tokens kept", type=int, metavar="N")
    option(
        "--export-max-length",
        "the exported model's max_seq_length, what SentenceTransformer truncates to (default: the length trained"
        " at, the larger of --max-query-length and --max-passage-length)",
        type=int,
        metavar="N",
    )
    if finetune:
        option(
            "--negatives",
            "hard negatives per row, from its negatives column: each query's group is its passage and these"
            " (all of the batch's are candidates for every query)",
            dest="max_negatives",
            type=int,
            metavar="N",
        )
        option(
            "--distill-weight",
            "weight of KL(teacher || student) over each row's [passage, negatives], for rows with teacher_scores",
            type=float,
            metavar="X",
        )
        option(
            "--instruction",
            "the task of rows without a task column, and of the queries of --eval-task; stored as the checkpoint's"
            " query prompt",
            metavar="TEXT",
        )
    else:
        option("--max-negatives", "hard negatives used per row (from the negatives column)", type=int, metavar="N")
        option(
            "--prefix",
            "SOURCE:query=TEXT or SOURCE:passage=TEXT: a source's own prefix instead of the E5 ones; repeatable",
            type=_prefix,
            action="append",
            metavar="SOURCE:SIDE=TEXT",
        )
    option("--gradient-checkpointing", "recompute activations in the backward pass to save memory", action="store_true")
    option("--num-workers", "loader worker processes per rank (tokenisation happens there)", type=int, metavar="N")
    option("--log-every", "steps between metrics lines", type=int, metavar="N")
    option("--save-every", "steps between checkpoints (one is always written at the end)", type=int, metavar="N")
    option(
        "--eval-data",
        "held-out mined output for in-batch retrieval accuracy; repeatable",
        action="append",
        metavar="DIR",
    )
    option(
        "--eval-task",
        "TASK=PATH evaluated with the held-out data: tatoeba=DIR (bitext mining), retrieval=XQUAD.json or "
        "a MIRACL/BEIR directory; repeatable",
        dest="eval_tasks",
        action="append",
        metavar="TASK=PATH",
    )
    option("--eval-every", "steps between held-out evaluations", type=int, metavar="N")
    option("--eval-batch-size", "held-out pairs per in-batch retrieval", type=int, metavar="N")
    option("--eval-max-pairs", "held-out pairs read per source", type=int, metavar="N")
    option("--cache-dir", "where remote shards are fetched to", metavar="DIR")
    option("--device", "cpu, cuda, cuda:1, ... (default: the local rank's GPU, else the CPU)", metavar="DEVICE")
    parser.add_argument(
        "--no-progress", "--quiet", dest="progress", action="store_false", default=argparse.SUPPRESS,
        help="no progress bars (none either when stderr is not a terminal)",
    )
    parser.add_argument("--resume", action="store_true", default=False, help="continue the run stored in --output")


def _split_parser(commands) -> None:
    parser = commands.add_parser("split", help="split a mined output into training and held-out outputs")
    parser.add_argument("source", metavar="DIR", help="mined output directory")
    parser.add_argument(
        "--heldout-fraction", type=float, required=True, metavar="F", help="share of rows held out, between 0 and 1"
    )
    parser.add_argument("--train", required=True, metavar="DIR", help="where the training part is written")
    parser.add_argument("--heldout", required=True, metavar="DIR", help="where the held-out part is written")
    parser.add_argument("--seed", type=int, default=0, help="keys the hash that picks held-out rows (default: 0)")


def _evaluate_parser(commands) -> None:
    parser = commands.add_parser("evaluate", help="score an encoder on bitext mining or retrieval")
    parser.add_argument("task", choices=("tatoeba", "retrieval"))
    parser.add_argument(
        "--model", required=True, metavar="SPEC",
        help="a checkpoint or transformers encoder (path or hub id), st:PATH for SentenceTransformer(PATH), "
        "or python:MODULE:CALLABLE taking (texts, kind) and returning a 2-D array",
    )
    parser.add_argument(
        "--data", required=True, action="append", metavar="PATH",
        help="tatoeba: a LASER-layout directory; retrieval: SQuAD-format JSON (XQuAD, MLQA) or a MIRACL/BEIR "
        "directory, as LANG=PATH to name its language; repeatable",
    )
    parser.add_argument("--languages", nargs="+", metavar="LANG", help="tatoeba: the xxx of tatoeba.xxx-eng")
    cross = parser.add_mutually_exclusive_group()
    cross.add_argument("--corpus-language", metavar="LANG", help="retrieval: every language's queries against this one's corpus")
    cross.add_argument("--pooled", action="store_true", help="retrieval: queries against all corpora pooled")
    parser.add_argument("--batch-size", type=int, default=64, metavar="N", help="texts encoded per call (default: 64)")
    parser.add_argument("--device", metavar="DEVICE", help="cpu, cuda, cuda:1, ... (default: the GPU, else the CPU)")
    parser.add_argument("--json", metavar="OUT", help="also write the scores as JSON")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar (none either when stderr is not a terminal)"
    )


def _evaluate(args: dict) -> None:
    if args["batch_size"] < 1:
        raise SystemExit(f"evaluate: --batch-size must be at least 1, not {args['batch_size']}")
    try:
        encoder = evaluation.load_encoder(args["model"], args["device"], args["batch_size"])
    except (OSError, ValueError, ImportError, AttributeError) as error:  # the first line says what is wrong
        raise SystemExit(f"evaluate: cannot load --model {args['model']}: {str(error).splitlines()[0]}") from None
    try:
        if args["task"] == "tatoeba":
            report = evaluation.evaluate_tatoeba(encoder, args["data"][0], args["languages"], not args["quiet"])
        else:
            sets = {}
            for item in args["data"]:
                lang, _, path = item.rpartition("=")
                sets[lang or evaluation.language_of(path)] = evaluation.retrieval_set(path)
            report = evaluation.evaluate_retrieval(
                encoder, sets, args["corpus_language"], args["pooled"], not args["quiet"]
            )
    except evaluation.EvaluationDataError as error:
        raise SystemExit(f"evaluate: {error}") from None
    report["model"] = args["model"]
    print(evaluation.format_report(report))
    if args["json"]:
        with open(args["json"], "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)


def _config(given: dict, resume: bool, command: str = "pretrain") -> tuple[PretrainConfig, StoredRun | None]:
    """The run's configuration, and on ``resume`` the stored state it continues."""
    if "output" not in given:
        raise SystemExit(f"{command}: --output is required")
    if "epochs" in given and "max_steps" in given:
        raise SystemExit(f"{command}: give --epochs or --max-steps, not both")
    prefixes: dict[str, dict[str, str]] = {}
    for source, side, text in given.pop("prefix", []):
        prefixes.setdefault(source, {})[side] = text
    if prefixes:
        given["prefixes"] = prefixes
    if resume:
        try:
            run = run_to_resume(given["output"])
            return resumed_config(run, given), run
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f"{command}: {error}") from None
    if "data" not in given:
        raise SystemExit(f"{command}: --data is required")
    if command == "finetune":
        if "model" not in given:
            raise SystemExit("finetune: --model is required (the checkpoint to fine-tune)")
        given = {**_FINETUNE_DEFAULTS, **given}
    try:
        return PretrainConfig(**given), None
    except ValueError as error:
        raise SystemExit(f"{command}: {error}") from None


def _one_line(error: Exception) -> str:
    # A DataLoader worker's error reaches this process with the worker's traceback before its own message.
    kind = type(error)
    return str(error).strip().splitlines()[-1].removeprefix(f"{kind.__module__}.{kind.__qualname__}: ")


def main(argv: list[str] | None = None, prog: str = "python -m training") -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _pretrain_parser(commands)
    _pretrain_parser(commands, "finetune")
    _split_parser(commands)
    _evaluate_parser(commands)
    args = vars(parser.parse_args(argv))
    command = args.pop("command")
    if args.get("quiet") or not args.get("progress", True) or not sys.stderr.isatty():
        transformers.utils.logging.disable_progress_bar()  # its bars of loading and saving weights
    if command == "evaluate":
        _evaluate(args)
        return
    if command == "split":
        try:
            manifests = split_output(
                args["source"], args["train"], args["heldout"], args["heldout_fraction"], args["seed"]
            )
        except (ValueError, FileExistsError, ShardIntegrityError) as error:
            raise SystemExit(f"split: {error}") from None
        for part, manifest in manifests.items():
            print(f"{part}: {manifest.totals.output} pairs in {args[part]}")
        return
    resume = args.pop("resume")
    config, resume_from = _config(args, resume, command)
    try:
        trainer = Trainer(config, resume_from=resume_from)
    except (FileExistsError, FileNotFoundError, ValueError, ShardIntegrityError) as error:
        raise SystemExit(f"{command}: {error}") from None
    try:
        logged = trainer.run()
    except (ShardIntegrityError, evaluation.EvaluationDataError) as error:  # both are read when first needed
        raise SystemExit(f"{command}: {_one_line(error)}") from None
    distributed.teardown()
    if trainer.context.is_main:
        losses = [record["loss"] for record in logged if "loss" in record]
        print(json.dumps({"step": trainer.step, "output": config.output, **({"loss": losses[-1]} if losses else {})}))
