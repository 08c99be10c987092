"""``--pipeline generate``: brainstorm tasks per task type -> deduplicate -> one generation per (task, sampled
placeholders, language) -> ``generations/*.jsonl`` (the lines ``--source synthetic=...`` reads) + manifest.

Prompts travel in batches of --batch-size; each batch is sent concurrently (``mining.llm_client.Sender``).
Every response is cached under ``OUTPUT/llm_cache/`` as it arrives, outside the staged run, so a killed run
keeps what it paid for and a rerun into the same output (--overwrite) asks again only for what is missing.
The API key comes from ``OPENAI_API_KEY`` on the worker that sends; it is never part of the pipeline's graph,
options, output or manifest.
"""

import datetime
import hashlib
import json
import os
import urllib.parse
from dataclasses import dataclass

import apache_beam as beam

from mining import generation, instruct, run_store
from mining.generation import GenerationStats, Prompt, Sampling, Usage
from mining.llm_client import ClientOptions, Outcome
from mining.records import DeadLetter
from pipelines import io, stages
from pipelines.options import MiningOptions
from pipelines.reporting import DEAD, UndeclaredReason
from schemas import reasons
from schemas.manifest import (
    GENERATIONS_DIR, LLM_CACHE_DIR, Generation, GenerationFile, Manifest, ModelUsage, Totals,
)

API_KEY_VARIABLE = "OPENAI_API_KEY"
STATS = "stats"
LINES_PER_FILE = 10_000
# The fields of a generations line, as the manifest's schema.
LINE_SCHEMA = {
    "task_type": "string", "instruction": "string", "language": "string, or [string, string] for bitext",
    "response": "string", "generation": "int64",
}


@dataclass(frozen=True)
class GeneratePlan:
    task_types: tuple[str, ...]
    generations: int
    seed: int
    brainstorm: tuple[Prompt, ...]
    client: ClientOptions
    sampling: Sampling
    price: tuple[float, float] | None  # per 1k (input, output) tokens of the requested model
    prices: tuple[float | None, float | None]  # as given on the command line
    cache_dir: str | None  # None: --no-cache


def parse_task_types(value: str | None) -> tuple[str, ...]:
    """--task-types: comma-separated names of ``mining.instruct.TEMPLATES``, in their order; all when absent."""
    if value is None:
        return tuple(instruct.TEMPLATES)
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in instruct.TEMPLATES]
    if unknown or not names:
        raise ValueError(f"--task-types {value}: known task types are {', '.join(instruct.TEMPLATES)}")
    return tuple(name for name in instruct.TEMPLATES if name in names)


def check_base_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or not parts.path.rstrip("/").endswith("/v1"):
        raise ValueError(f"--llm-base-url {url}: an http(s) URL ending in /v1 (an OpenAI-compatible endpoint)")


def shown_url(url: str) -> str:
    """The base URL as the manifest records it: without any user:password part."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


def plan(options: MiningOptions) -> GeneratePlan:
    """Everything checked before any work: ValueError naming the first problem."""
    if options.source:
        raise ValueError("--pipeline generate writes generations; it reads no --source")
    if not options.llm_model:
        raise ValueError("--pipeline generate needs --llm-model NAME")
    check_base_url(options.llm_base_url)
    if not os.environ.get(API_KEY_VARIABLE):
        raise ValueError(f"--pipeline generate needs the endpoint's key in {API_KEY_VARIABLE} (any value for "
                         "an endpoint that takes none)")
    task_types = parse_task_types(options.task_types)
    given = (options.price_per_1k_input, options.price_per_1k_output)
    return GeneratePlan(
        task_types=task_types,
        generations=options.generations,
        seed=options.seed,
        brainstorm=tuple(generation.brainstorm_prompts(list(task_types), options.brainstorm_requests, options.seed)),
        client=ClientOptions(
            base_url=options.llm_base_url, model=options.llm_model, concurrency=options.llm_concurrency,
            requests_per_minute=options.llm_requests_per_minute, tokens_per_minute=options.llm_tokens_per_minute,
            max_retries=options.llm_max_retries, timeout=options.llm_timeout, backoff=options.llm_backoff,
        ),
        sampling=Sampling(options.llm_temperature, options.llm_top_p, options.llm_max_tokens),
        price=generation.prices(options.llm_model, *given),
        prices=given,
        cache_dir=None if options.no_cache else io.join(options.output, LLM_CACHE_DIR),
    )


class ResponseCache:
    """Cached responses as files ``<cache_dir>/<key[:2]>/<key>.json``, each written atomically; an entry that
    cannot be read counts as none."""

    def __init__(self, directory: str):
        self._directory = directory

    def _path(self, key: str) -> str:
        return io.join(self._directory, *generation.cache_path(key).split("/"))

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        try:
            if not io.exists(path):
                return None
            entry = json.loads(io.read_bytes(path))
        except Exception:  # noqa: BLE001 - damaged or vanished: asked again
            return None
        return entry if isinstance(entry, dict) else None

    def put(self, key: str, entry: dict) -> None:
        io.write_atomically(self._path(key), json.dumps(entry, ensure_ascii=False, sort_keys=True).encode("utf-8"))


class _SendPrompts(beam.DoFn):
    """A batch of prompts -> their outcomes, sent concurrently; each outcome handled by ``_handle``; stats on
    the ``stats`` output, dead letters (reasons of ``reasons.GENERATE``) on ``dead_letter``."""

    def __init__(self, plan: GeneratePlan):
        self._plan = plan

    def setup(self):
        from mining.llm_client import Sender

        key = os.environ.get(API_KEY_VARIABLE)
        if not key:
            raise RuntimeError(f"{API_KEY_VARIABLE} is not set on this worker")
        cache = ResponseCache(self._plan.cache_dir) if self._plan.cache_dir else None
        self._sender = Sender(self._plan.client, self._plan.sampling, key,
                              cache.get if cache else None, cache.put if cache else None)

    def teardown(self):
        sender = getattr(self, "_sender", None)
        if sender is not None:
            sender.close()

    def _dead_letter(self, stats: GenerationStats, prompt: Prompt, reason: str, detail: str, payload: dict):
        if reason not in reasons.GENERATE.dead_letters:
            raise UndeclaredReason(f"stage {reasons.GENERATE.name} dead-lettered a prompt for {reason!r}")
        stats.fail(reason)
        letter = DeadLetter.of(reason, detail, instruct.source_name(prompt.task_type), prompt.kind, prompt.index,
                               json.dumps(payload, ensure_ascii=False, sort_keys=True))
        return beam.pvalue.TaggedOutput(DEAD, letter.to_dict())

    def _send(self, prompts: list[Prompt], stats: GenerationStats):
        stats.prompts += len(prompts)
        for outcome in self._sender.send_all(prompts):
            if outcome.cached:
                stats.cached += 1
            else:
                stats.sent += 1
                stats.attempts += outcome.attempts
                stats.seconds_waited += outcome.waited
            if outcome.reason is not None:
                yield self._dead_letter(stats, outcome.prompt, outcome.reason, outcome.detail,
                                        outcome.prompt.payload())
                continue
            if not outcome.cached:
                stats.usage.setdefault(outcome.model or self._plan.client.model, Usage()).merge(
                    Usage(1, outcome.prompt_tokens, outcome.completion_tokens)
                )
            yield from self._handle(outcome, stats)

    def _handle(self, outcome: Outcome, stats: GenerationStats):
        raise NotImplementedError


class Brainstorm(_SendPrompts):
    """Brainstorm prompts -> (task type, (request index, tasks))."""

    def process(self, prompts: list[Prompt]):
        stats = GenerationStats()
        yield from self._send(prompts, stats)
        yield beam.pvalue.TaggedOutput(STATS, stats)

    def _handle(self, outcome: Outcome, stats: GenerationStats):
        prompt = outcome.prompt
        try:
            tasks = generation.parse_task_list(outcome.content)
        except ValueError as error:
            yield self._dead_letter(stats, prompt, reasons.UNPARSEABLE_TASK_LIST, str(error),
                                    {**prompt.payload(), "response": outcome.content})
            return
        stats.task_lists += 1
        yield prompt.task_type, (prompt.index, tasks)


class Generate(_SendPrompts):
    """A range of generation indices -> ((task type, file number), (index, generations line))."""

    def process(self, index_range: tuple[int, int], tasks: dict[str, list[str]]):
        stats = GenerationStats()
        prompts = []
        for index in range(*index_range):
            prompt = generation.generation_prompt(index, list(self._plan.task_types), tasks, self._plan.seed)
            if prompt is None:
                stats.prompts += 1
                task_type = generation.task_type_of(index, list(self._plan.task_types))
                placeholder = Prompt("generate", index, task_type, (), 0)
                yield self._dead_letter(stats, placeholder, reasons.NO_TASKS,
                                        f"no brainstormed {task_type} task to draw", placeholder.payload())
            else:
                prompts.append(prompt)
        yield from self._send(prompts, stats)
        yield beam.pvalue.TaggedOutput(STATS, stats)

    def _handle(self, outcome: Outcome, stats: GenerationStats):
        prompt = outcome.prompt
        stats.generations += 1
        line = json.dumps(
            {"task_type": prompt.task_type, "instruction": prompt.instruction, "language": prompt.language,
             "response": outcome.content, "generation": prompt.index},
            ensure_ascii=False, sort_keys=True,
        )
        yield (prompt.task_type, prompt.index // LINES_PER_FILE), (prompt.index, line)


def task_lists(brainstormed: list, task_types: tuple[str, ...]) -> dict[str, list[str]]:
    """Every brainstormed task type's deduplicated tasks, in (request, position) order."""
    by_type: dict[str, list] = {task_type: [] for task_type in task_types if task_type in generation.BRAINSTORM_PROMPTS}
    for task_type, indexed in brainstormed:
        by_type[task_type].append(indexed)
    return {task_type: generation.dedup_tasks(lists) for task_type, lists in by_type.items()}


class _WriteGenerationFile(beam.DoFn):
    def __init__(self, staging: str):
        self._staging = staging

    def process(self, keyed_lines):
        (task_type, number), lines = keyed_lines
        data = "".join(line + "\n" for _, line in sorted(lines)).encode("utf-8")
        relative = f"{GENERATIONS_DIR}/{task_type}-{number:05d}.jsonl"
        io.write_atomically(io.join(self._staging, GENERATIONS_DIR, f"{task_type}-{number:05d}.jsonl"), data)
        yield GenerationFile(path=relative, task_type=task_type, rows=data.count(b"\n"), bytes=len(data),
                             sha256=hashlib.sha256(data).hexdigest())


class MergeStats(beam.CombineFn):
    def create_accumulator(self):
        return GenerationStats()

    def add_input(self, accumulator, stats):
        return accumulator.merge(stats)

    def merge_accumulators(self, accumulators):
        merged = GenerationStats()
        for accumulator in accumulators:
            merged.merge(accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator


def generation_record(plan: GeneratePlan, stats: GenerationStats, tasks: dict[str, list[str]],
                      files: list[GenerationFile]) -> Generation:
    usage = {}
    for model, counted in sorted(stats.usage.items()):
        price = generation.prices(model, *plan.prices) or plan.price
        usage[model] = ModelUsage(
            requests=counted.requests, prompt_tokens=counted.prompt_tokens,
            completion_tokens=counted.completion_tokens,
            cost=generation.cost(counted.prompt_tokens, counted.completion_tokens, price),
        )
    costs = [entry.cost for entry in usage.values()]
    total = None if None in costs or (not costs and plan.price is None) else round(sum(costs), 10)
    return Generation(
        model=plan.client.model, base_url=shown_url(plan.client.base_url), prompts=stats.prompts,
        brainstorm_prompts=len(plan.brainstorm), cached=stats.cached, sent=stats.sent, requests=stats.attempts,
        generations=stats.generations, task_lists=stats.task_lists,
        tasks={task_type: len(items) for task_type, items in sorted(tasks.items())},
        failed=dict(sorted(stats.failed.items())), usage=usage,
        prompt_tokens=sum(entry.prompt_tokens for entry in usage.values()),
        completion_tokens=sum(entry.completion_tokens for entry in usage.values()),
        cost=total, price_per_1k=plan.price, files=sorted(files, key=lambda file: file.path),
    )


class _WriteGenerationManifest(beam.DoFn):
    def __init__(self, plan: GeneratePlan, staging: str, options: dict):
        self._plan = plan
        self._staging = staging
        self._options = options

    def process(self, _, files, stats, tasks):
        manifest = Manifest(
            pipeline="generate",
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            options=self._options, schema=LINE_SCHEMA, shards=[], totals=Totals(), sources={},
            generation=generation_record(self._plan, stats, tasks, files),
        )
        run_store.write_manifest(io, self._staging, manifest)
        yield manifest


def recorded_options(options: MiningOptions, plan: GeneratePlan) -> dict:
    """What the manifest records of the options: everything that shapes the generations, never the key."""
    return {
        "generations": plan.generations, "task_types": list(plan.task_types), "seed": plan.seed,
        "brainstorm_requests": options.brainstorm_requests, "llm_model": plan.client.model,
        "llm_base_url": shown_url(plan.client.base_url), "llm_temperature": plan.sampling.temperature,
        "llm_top_p": plan.sampling.top_p, "llm_max_tokens": plan.sampling.max_tokens,
        "llm_concurrency": plan.client.concurrency, "llm_requests_per_minute": plan.client.requests_per_minute,
        "llm_tokens_per_minute": plan.client.tokens_per_minute, "llm_max_retries": plan.client.max_retries,
        "llm_timeout": plan.client.timeout, "llm_backoff": plan.client.backoff,
        "price_per_1k_input": plan.prices[0], "price_per_1k_output": plan.prices[1],
        "cache": "off" if plan.cache_dir is None else LLM_CACHE_DIR, "batch_size": options.batch_size,
    }


def _batches(items: list, size: int) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def build(pipeline: beam.Pipeline, options: MiningOptions, plan: GeneratePlan, destination: io.Destination) -> None:
    size = options.batch_size
    brainstorm = (
        pipeline
        | "BrainstormPrompts" >> beam.Create(_batches(list(plan.brainstorm), size))
        | "SpreadBrainstorm" >> beam.Reshuffle()
        | "Brainstorm" >> beam.ParDo(Brainstorm(plan)).with_outputs(STATS, DEAD, main="tasks")
    )
    tasks = (
        brainstorm.tasks
        | "AllTaskLists" >> beam.combiners.ToList()
        | "DedupTasks" >> beam.Map(task_lists, plan.task_types)
    )
    ranges = [(start, min(start + size, plan.generations)) for start in range(0, plan.generations, size)]
    generated = (
        pipeline
        | "GenerationRanges" >> beam.Create(ranges)
        | "SpreadGenerations" >> beam.Reshuffle()
        | "Generate" >> beam.ParDo(Generate(plan), tasks=beam.pvalue.AsSingleton(tasks)).with_outputs(
            STATS, DEAD, main="lines"
        )
    )
    files = (
        generated.lines
        | "ByFile" >> beam.GroupByKey()
        | "WriteGenerations" >> beam.ParDo(_WriteGenerationFile(destination.staging))
    )
    stats = (
        (brainstorm[STATS], generated[STATS])
        | "AllStats" >> beam.Flatten()
        | "MergeStats" >> beam.CombineGlobally(MergeStats())
    )
    dead_letter_files = (
        (brainstorm[DEAD], generated[DEAD])
        | "AllDeadLetters" >> beam.Flatten()
        | "DeadLetters" >> stages.WriteDeadLetters(destination.staging)
    )
    _ = (
        pipeline
        | "Once" >> beam.Create([None])
        | "WriteManifest" >> beam.ParDo(
            _WriteGenerationManifest(plan, destination.staging, recorded_options(options, plan)),
            files=beam.pvalue.AsList(files), stats=beam.pvalue.AsSingleton(stats),
            tasks=beam.pvalue.AsSingleton(tasks),
        )
        # A step of its own, as in stages.WriteManifest: a retried bundle must not stage a second manifest.
        | "Written" >> beam.Reshuffle()
        | "Publish" >> beam.ParDo(stages.PublishRun(destination), beam.pvalue.AsList(dead_letter_files))
    )
