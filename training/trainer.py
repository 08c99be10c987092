"""Contrastive training: the loop, its optimiser and schedule, logging and checkpoints.

Pre-training and fine-tuning are the same loop with another configuration:
fine-tuning starts from a checkpoint (``model``), formats queries with
instructions (``instruction``, ``training.prompts.InstructPrompts``) and uses
the rows' hard negatives (``max_negatives``).
"""

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from schemas.manifest import DEFAULT_SAMPLING_ALPHA
from training import checkpoint, distributed
from training.encoder import Encoder
from training.evaluation import evaluate_spec, held_out_rows, in_batch_retrieval
from training.loss import InfoNCELoss
from training.prompts import InstructPrompts, Prompts
from training.shard_store import DEFAULT_CACHE_DIR, ShardsBySource, ShardStore, read_data, shards_by_source
from training.step import contrastive_backward
from training.stream import PairLoader, PairStream
from training.tiny import build_tiny_encoder

TINY = "tiny"


@dataclass
class PretrainConfig:
    data: list[str] = field(default_factory=list)
    output: str = ""
    model: str = TINY
    batch_size: int = 256
    chunk_size: int | None = None  # rows embedded at once with gradient caching; None embeds the batch in one pass
    max_steps: int = 1000
    epochs: float | None = None  # if set, max_steps is this many passes over the data (see steps_in_epochs)
    lr: float = 1e-4
    warmup_steps: int | None = None  # None: a tenth of max_steps, fixed when the run starts
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    temperature: float = 0.01
    distill_weight: float = 1.0  # of KL(teacher || student), for rows with a teacher_scores column; 0: none
    seed: int = 0
    alpha: float = DEFAULT_SAMPLING_ALPHA
    max_query_length: int = 128
    max_passage_length: int = 256
    # The exported model's max_seq_length; None: the length trained at, the larger of the two above.
    export_max_length: int | None = None
    max_negatives: int = 1
    prefixes: dict[str, dict[str, str]] = field(default_factory=dict)  # source -> {"query": ..., "passage": ...}
    # Fine-tuning: queries become "Instruct: {task}\nQuery: {query}", with the row's task, or this one for rows
    # (and evaluation queries) without; passages keep the checkpoint's passage prefix. None: plain prefixes.
    instruction: str | None = None
    gradient_checkpointing: bool = False
    num_workers: int = 2
    log_every: int = 10
    save_every: int = 1000
    eval_data: list[str] = field(default_factory=list)
    eval_tasks: list[str] = field(default_factory=list)  # "tatoeba=DIR", "retrieval=PATH": training.evaluation
    eval_every: int = 100
    eval_batch_size: int = 64
    eval_max_pairs: int = 1024  # per source
    cache_dir: str = str(DEFAULT_CACHE_DIR)
    device: str | None = None
    progress: bool = True

    def __post_init__(self):
        """Every numeric option in its range, before any work."""
        for name, least in _AT_LEAST.items():
            value = getattr(self, name)
            if value is not None and not (least <= value < math.inf):  # NaN fails both
                raise ValueError(f"--{name.replace('_', '-')} must be at least {least}, not {value}")
        for name in _POSITIVE:
            value = getattr(self, name)
            if value is not None and not (0 < value < math.inf):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive number, not {value}")
        if self.seed >= 2**63:
            raise ValueError(f"--seed must be below 2**63, not {self.seed}")
        for spec in self.eval_tasks:
            task, _, path = spec.partition("=")
            if task not in ("tatoeba", "retrieval") or not path:
                raise ValueError(f"--eval-task must be tatoeba=DIR or retrieval=PATH, not {spec!r}")
        if self.device is not None:
            try:
                device = torch.device(self.device)
            except RuntimeError:
                raise ValueError(f"--device {self.device!r} is not a device: cpu, cuda, cuda:1, ...") from None
            if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
                raise ValueError(f"--device {self.device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


# The smallest value of each numeric option (None, where allowed, is always accepted).
_AT_LEAST = {
    "batch_size": 1,
    "chunk_size": 1,
    "max_steps": 1,
    "warmup_steps": 0,
    "weight_decay": 0,
    "distill_weight": 0,
    "seed": 0,
    "alpha": 0,
    "max_query_length": 1,
    "max_passage_length": 1,
    "export_max_length": 1,
    "max_negatives": 0,
    "num_workers": 0,
    "log_every": 1,
    "save_every": 1,
    "eval_every": 1,
    "eval_batch_size": 2,  # in-batch retrieval needs a second passage to rank
    "eval_max_pairs": 2,
}
_POSITIVE = ("epochs", "lr", "max_grad_norm", "temperature")


# What may differ between a stored run and its resumption without changing
# what it computes, or only in floating-point rounding (chunk size).
MUTABLE_ON_RESUME = frozenset(
    {
        "data",  # the stream refuses data whose sources or sizes differ
        "output",  # the checkpoint may have moved
        "max_steps",
        "epochs",  # fixes max_steps
        "chunk_size",
        "gradient_checkpointing",
        "num_workers",
        "log_every",
        "save_every",
        "eval_data",
        "eval_tasks",
        "eval_every",
        "eval_batch_size",
        "eval_max_pairs",
        "cache_dir",
        "device",
        "progress",
        "export_max_length",  # read only when the model is exported
    }
)


def run_to_resume(output: str) -> checkpoint.StoredRun:
    """The training state stored in ``output``, every file checked against its record."""
    run = checkpoint.stored_run(Path(output))
    if run is None:
        raise FileNotFoundError(f"{output} holds no training state to resume")
    return run


def resumed_config(run: checkpoint.StoredRun, given: dict) -> PretrainConfig:
    """The stored run's configuration, with the options given now where they may change."""
    stored = dict(run.config)
    conflicts = [key for key, value in given.items() if key not in MUTABLE_ON_RESUME and value != stored.get(key)]
    if conflicts:
        raise ValueError(
            "a resumed run keeps its configuration; these options differ from the stored run: "
            + ", ".join(f"{key} (stored {stored.get(key)!r}, given {given[key]!r})" for key in conflicts)
        )
    if "max_steps" in given:
        stored["epochs"] = None  # an explicit step count replaces a stored epoch count
    return PretrainConfig(**{**stored, **given})


def steps_in_epochs(shards: ShardsBySource, batch_size: int, epochs: float) -> int:
    """Steps in ``epochs`` passes over every source: each pass of a source is ceil(rows / batch size) batches.

    (Sources are drawn by rows^alpha, so with alpha < 1 small sources are seen more often and large ones less.)
    """
    batches = sum(-(-sum(shard.rows for shard in source_shards) // batch_size) for source_shards in shards.values())
    return max(1, math.ceil(epochs * batches))


def _optimizer(encoder: Encoder, config: PretrainConfig) -> torch.optim.AdamW:
    # Biases and LayerNorm gains (the one-dimensional parameters) are not decayed.
    parameters = [p for p in encoder.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in parameters if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in parameters if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr)


class Trainer:
    def __init__(self, config: PretrainConfig, *, resume_from: checkpoint.StoredRun | None = None):
        """``resume_from``: the state to continue, as ``run_to_resume`` checked it; None starts a new run."""
        self.context = distributed.setup(config.device)
        self.output = Path(config.output)
        if self.output.exists() and not self.output.is_dir():
            raise FileExistsError(f"{self.output} is a file, not a checkpoint directory: choose another --output")
        # Every manifest read, once (and so every data error met), before anything is written.
        shards, self.data_manifests = read_data(config.data)
        self.source_rows = {name: sum(shard.rows for shard in source_shards) for name, source_shards in shards.items()}
        held_out_shards = shards_by_source(config.eval_data) if config.eval_data else {}
        for spec in config.eval_tasks:
            path = spec.partition("=")[2]
            fs, located = fsspec.core.url_to_fs(path)
            if not fs.exists(located):
                raise FileNotFoundError(f"--eval-task {spec}: {path} does not exist")
        if resume_from is None:
            for directory in (self.output, checkpoint.state_dir(self.output)):
                if directory.exists() and any(directory.iterdir()):
                    raise FileExistsError(
                        f"{directory} is not empty: pass --resume to continue the run it holds, or choose another"
                        " --output"
                    )
        if config.epochs is not None:
            config = dataclasses.replace(
                config, max_steps=steps_in_epochs(shards, config.batch_size, config.epochs)
            )
        if config.warmup_steps is None:
            config = dataclasses.replace(config, warmup_steps=config.max_steps // 10)
        self.config = config
        if self.context.is_main:
            self.output.mkdir(parents=True, exist_ok=True)  # a run from a checkpoint logs before it first saves
        self.metrics = checkpoint.MetricsLog(self.output)
        store = ShardStore(Path(config.cache_dir))

        torch.manual_seed(config.seed + self.context.rank)  # dropout; restored from the state on resume
        self.encoder = self._encoder(shards, store, resume=resume_from is not None).to(self.context.device)
        self.encoder.max_length = self._export_max_length(self.encoder)
        if config.gradient_checkpointing:
            self.encoder.enable_activation_checkpointing()
        self.encoder.train()
        if config.instruction is not None:
            # Exported with the checkpoint: the default task's query prefix is its "query" prompt.
            self.encoder.prompts = InstructPrompts(config.instruction, passage=self.encoder.prompts.passage)
        self.optimizer = _optimizer(self.encoder, config)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, config.warmup_steps, config.max_steps)
        self.loss_fn = InfoNCELoss(config.temperature, distill_weight=config.distill_weight)
        self.prompts = {source: Prompts(**sides) for source, sides in config.prefixes.items()}
        stream = PairStream(
            shards,
            self.encoder.tokenizer,
            batch_size=config.batch_size,
            seed=config.seed,
            alpha=config.alpha,
            rank=self.context.rank,
            world_size=self.context.world_size,
            max_query_length=config.max_query_length,
            max_passage_length=config.max_passage_length,
            max_negatives=config.max_negatives,
            prompts=self.prompts,
            default_prompts=self.encoder.prompts,
            cache_dir=Path(config.cache_dir),
        )
        self.loader = PairLoader(stream, num_workers=config.num_workers)
        self.step = 0
        if resume_from is not None:
            checkpoint.restore_state(
                resume_from, self.context, encoder=self.encoder, optimizer=self.optimizer, scheduler=self.scheduler
            )
            self.loader.load_state_dict(resume_from.data)
            self.step = resume_from.step
            if self.context.is_main:
                self.metrics.truncate_after(resume_from.step)
        # Only the first rank evaluates; the others wait for it in the next step's collectives.
        self.evaluates = bool(config.eval_data or config.eval_tasks) and self.context.is_main
        self.held_out = (
            held_out_rows(held_out_shards, store, config.eval_max_pairs) if self.evaluates and held_out_shards else None
        )

    def _encoder(self, shards: ShardsBySource, store: ShardStore, resume: bool) -> Encoder:
        if resume:
            return Encoder.from_pretrained(self.output)  # the weights come from the state
        if self.config.model != TINY:
            try:
                return Encoder.from_pretrained(self.config.model)
            except (OSError, ValueError) as error:  # transformers' say what is wrong in their first line
                raise ValueError(f"cannot load --model {self.config.model}: {str(error).splitlines()[0]}") from None
        # Built once and read back by every rank, so all start from the same weights and vocabulary.
        if self.context.is_main:
            tiny = build_tiny_encoder(shards, store=store, seed=self.config.seed)
            self._export_max_length(tiny)  # refused before anything is written
            self.output.mkdir(parents=True, exist_ok=True)
            checkpoint.export(tiny, self.output)
        distributed.barrier()
        return Encoder.from_pretrained(self.output)

    def _export_max_length(self, encoder: Encoder) -> int:
        length = self.config.export_max_length or max(self.config.max_query_length, self.config.max_passage_length)
        positions = getattr(encoder.model.config, "max_position_embeddings", None)
        if self.config.export_max_length and positions and length > positions:
            raise ValueError(f"--export-max-length {length}: the model has {positions} positions")
        return length

    def run(self) -> list[dict]:
        """Trains up to ``max_steps``; returns the metrics logged by this run."""
        config = self.config
        logged = []
        if self.step == 0 and self.evaluates:
            logged.append(self._evaluate())
        progress = tqdm(
            total=config.max_steps,
            initial=self.step,
            unit="step",
            disable=True if not (config.progress and self.context.is_main) else None,  # None: a terminal only
            dynamic_ncols=True,
        )
        window = self._new_window()
        batches = iter(self.loader) if self.step < config.max_steps else iter(())
        for batch in batches:
            lr = self.scheduler.get_last_lr()[0]
            loss = contrastive_backward(self.encoder, batch, self.loss_fn, config.chunk_size)
            distributed.sum_gradients(self.encoder)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.encoder.parameters(), config.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step = batch.step + 1

            window["loss"] += distributed.all_sum(loss).item()
            window["steps"] += 1
            window["pairs"] += batch.global_size
            window["distilled_rows"] += self._distilled_rows(batch)
            progress.update(1)
            if self.step % config.log_every == 0 or self.step == config.max_steps:
                elapsed = time.perf_counter() - window["since"]
                distilled = torch.tensor(window["distilled_rows"], device=self.encoder.device)
                record = {
                    "step": self.step,
                    "loss": window["loss"] / window["steps"],
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    "pairs_per_s": window["pairs"] / elapsed,
                    "distilled_rows": int(distributed.all_sum(distilled).item()),
                }
                progress.set_postfix(
                    loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}", pairs_s=f"{record['pairs_per_s']:.0f}"
                )
                logged.append(self._log(record))
                window = self._new_window()
            paused = time.perf_counter()
            if self.evaluates and (self.step % config.eval_every == 0 or self.step == config.max_steps):
                logged.append(self._evaluate())
            if self.step % config.save_every == 0 or self.step == config.max_steps:
                self.save()
            window["since"] += time.perf_counter() - paused  # evaluating and saving are not training throughput
            if self.step >= config.max_steps:
                break
        progress.close()
        return logged

    @staticmethod
    def _new_window() -> dict:
        return {"loss": 0.0, "steps": 0, "pairs": 0, "distilled_rows": 0, "since": time.perf_counter()}

    def _distilled_rows(self, batch) -> int:
        """Rows of this rank's batch whose group the loss distilled from teacher scores (a row without negatives
        has a group of one, where teacher and student always agree); summed over the ranks when logged."""
        if batch.teacher_scores is None or batch.negative_counts is None or not self.loss_fn.distill_weight:
            return 0
        return int(((~batch.teacher_scores[:, 0].isnan()) & (batch.negative_counts > 0)).sum())

    def _evaluate(self) -> dict:
        record = {"step": self.step}
        if self.held_out:
            metrics = in_batch_retrieval(
                self.encoder,
                self.held_out,
                batch_size=self.config.eval_batch_size,
                temperature=self.config.temperature,
                prompts=self.prompts,
            )
            tqdm.write(
                f"step {self.step}: held-out accuracy {metrics['eval_accuracy']:.3f}"
                f" (chance {metrics['eval_chance']:.3f}), loss {metrics['eval_loss']:.4f}"
            )
            record.update(metrics)
        for spec in self.config.eval_tasks:
            scores = evaluate_spec(spec, self.encoder, self.config.eval_batch_size, self.config.progress)
            tqdm.write(f"step {self.step}: {spec}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
            record.update({f"{spec.split('=', 1)[0]}/{metric}": value for metric, value in scores.items()})
        return self._log(record)

    def _log(self, record: dict) -> dict:
        if self.context.is_main:
            self.metrics.append(record)
        return record

    def save(self) -> None:
        checkpoint.save_state(
            self.output,
            self.context,
            step=self.step,
            config=dataclasses.asdict(self.config),
            data=self.loader.state_dict(),
            encoder=self.encoder,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
        )
        if self.context.is_main:
            card = checkpoint.model_card(
                dataclasses.asdict(self.config), self.step, self.data_manifests, self.source_rows, self.encoder,
                self.metrics.records(),
            )
            checkpoint.export(self.encoder, self.output, card)
        distributed.barrier()


def pretrain(config: PretrainConfig, *, resume: bool = False) -> list[dict]:
    return Trainer(config, resume_from=run_to_resume(config.output) if resume else None).run()
