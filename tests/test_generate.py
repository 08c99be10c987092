"""--pipeline generate against a real HTTP server (tests/llm_server.py) through the real openai client."""

import base64
import bz2
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

import beam_runner
from mining import generation, instruct, languages
from mining.llm_client import RateLimiter
from mining.sources.synthetic import language_code
from schemas import reasons
from schemas.manifest import Manifest
from tests.llm_server import FakeLLM, Faults

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-test-" + "".join(random.Random(os.getpid()).choices("abcdefghijklmnopqrstuvwxyz0123456789", k=24))
MODEL = "gpt-4o-mini"
ALL_TYPES = list(instruct.TEMPLATES)
BRAINSTORMED = [task_type for task_type in ALL_TYPES if task_type in generation.BRAINSTORM_PROMPTS]


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def run_generate(output: Path, server: FakeLLM, *extra: str, generations: int = 18) -> Manifest:
    argv = [
        "--pipeline=generate", f"--output={output}", f"--generations={generations}", f"--llm-model={MODEL}",
        f"--llm-base-url={server.base_url}", "--llm-backoff=0.01", "--batch-size=6", *extra,
    ]
    assert beam_runner.main(argv) == 0
    return Manifest.model_validate_json((output / "manifest.json").read_text("utf-8"))


def generation_lines(output: Path) -> list[dict]:
    return [json.loads(line) for path in sorted((output / "generations").glob("*.jsonl")) for line in path.open()]


def dead_letters(output: Path) -> list[dict]:
    return [json.loads(line) for path in (output / "dead_letter").glob("*.jsonl") for line in path.open()]


def file_bytes(output: Path, folder: str) -> dict[str, bytes]:
    return {str(path.relative_to(output)): path.read_bytes() for path in sorted((output / folder).rglob("*"))
            if path.is_file()}


def cache_files(output: Path) -> list[Path]:
    return sorted((output / "llm_cache").rglob("*.json"))


# --- pure logic ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task_type", ALL_TYPES)
def test_prompts_ask_for_the_keys_of_their_template(task_type):
    tasks = {name: ["Retrieve documents about a topic."] for name in BRAINSTORMED}
    index = ALL_TYPES.index(task_type)
    prompt = generation.generation_prompt(index, ALL_TYPES, tasks, seed=3)
    assert prompt.task_type == task_type
    content = prompt.messages[0][1]
    template = instruct.TEMPLATES[task_type]
    for key in template.keys:
        assert f'"{key}"' in content
    other_keys = {key for other in instruct.TEMPLATES.values() for key in other.keys} - set(template.keys)
    assert not [key for key in other_keys if f'"{key}"' in content]
    assert "{" not in content.replace("JSON object", "")  # every placeholder filled
    language = prompt.language if isinstance(prompt.language, str) else prompt.language[0]
    assert language in content


def test_draws_are_a_pure_function_of_seed_and_index():
    tasks = {name: [f"task {i} of {name}" for i in range(30)] for name in BRAINSTORMED}
    first = [generation.generation_prompt(i, ALL_TYPES, tasks, seed=7) for i in range(60)]
    # Any worker computing any index alone draws the same.
    assert [generation.generation_prompt(i, ALL_TYPES, tasks, seed=7) for i in reversed(range(60))] == first[::-1]
    other = [generation.generation_prompt(i, ALL_TYPES, tasks, seed=8) for i in range(60)]
    assert [p.messages for p in other] != [p.messages for p in first]
    assert Counter(p.task_type for p in first) == {task_type: 10 for task_type in ALL_TYPES}
    assert len({p.seed for p in first}) == 60
    # A task type without tasks draws nothing.
    assert generation.generation_prompt(0, ALL_TYPES, {}, seed=7) is None


def test_every_language_name_reads_back_and_english_weighs_most():
    for code, name in generation.XLMR_LANGUAGES:
        assert language_code(name) == languages.normalize(code), name
    tasks = {name: ["a task"] for name in BRAINSTORMED}
    drawn = Counter(generation.generation_prompt(i, ["short-long"], tasks, seed=0).language for i in range(3000))
    english = drawn["English"] / 3000
    assert 0.19 < english < 0.27  # 40 / 175
    assert drawn.most_common(1)[0][0] == "English" and len(drawn) > 60


def test_bitext_draws_two_languages():
    prompts = [generation.generation_prompt(i, ["bitext"], {}, seed=1) for i in range(200)]
    assert all(len(p.language) == 2 and p.language[0] != p.language[1] for p in prompts)


@pytest.mark.parametrize("response, expected", [
    ('["Find a.", "Find b."]', ["Find a.", "Find b."]),
    ("```python\n['Find a.', 'Find b.']\n```", ["Find a.", "Find b."]),
    ('Sure:\n["Find a.", "Find b.",]\nHope it helps', ["Find a.", "Find b."]),
    ("1. Find a.\n2. Find b.", ["Find a.", "Find b."]),
    ("- Find a.\n- Find b.", ["Find a.", "Find b."]),
])
def test_task_lists_parse(response, expected):
    assert generation.parse_task_list(response) == expected


@pytest.mark.parametrize("response", ["", "I cannot help with that.", "[1, 2, 3]", '[""]'])
def test_responses_without_tasks_are_refused(response):
    with pytest.raises(ValueError):
        generation.parse_task_list(response)


def test_dedup_keeps_the_first_spelling_whatever_the_arrival_order():
    lists = [(1, ["Find b.", "find  A"]), (0, ["Find a.", "Find c"])]
    assert generation.dedup_tasks(lists) == generation.dedup_tasks(lists[::-1]) == ["Find a.", "Find c", "Find b."]


def test_cache_keys_change_with_what_decides_a_response():
    messages = [{"role": "user", "content": "hi"}]
    base = generation.cache_key(MODEL, messages, generation.Sampling(), 1)
    assert base == generation.cache_key(MODEL, [dict(messages[0])], generation.Sampling(), 1)
    others = {
        generation.cache_key("gpt-4o", messages, generation.Sampling(), 1),
        generation.cache_key(MODEL, [{"role": "user", "content": "hi!"}], generation.Sampling(), 1),
        generation.cache_key(MODEL, messages, generation.Sampling(temperature=0.5), 1),
        generation.cache_key(MODEL, messages, generation.Sampling(max_tokens=10), 1),
        generation.cache_key(MODEL, messages, generation.Sampling(), 2),
    }
    assert base not in others and len(others) == 5


def test_rate_limiter_holds_requests_and_tokens_to_their_rate():
    now = [0.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(600, clock=lambda: now[0], sleep=sleep)  # 10 a second, a burst of 10
    for _ in range(30):
        limiter.acquire()
    assert now[0] == pytest.approx(2.0)  # 10 at once, then 20 at 10 a second
    tokens = RateLimiter(60_000, clock=lambda: now[0], sleep=sleep)  # 1000 a second
    start = now[0]
    for _ in range(5):
        tokens.acquire(2500)  # more than a burst holds: waits for a full bucket, then owes the rest
    assert now[0] - start == pytest.approx(10.0)  # 12,500 tokens at 1000 a second, less the first 1000 + 1500 owed
    tokens.settle(-2500)  # fewer tokens than estimated: given back
    waited = tokens.acquire(1000)
    assert waited == pytest.approx(0.0)
    assert RateLimiter(None).acquire(10**9) == 0.0


# --- against the server ----------------------------------------------------------------------------------
def test_a_clean_run_lands_every_generation_and_the_servers_token_count(tmp_path):
    with FakeLLM() as server:
        manifest = run_generate(tmp_path / "gen", server, "--price-per-1k-input=0.5", "--price-per-1k-output=2")
    record = manifest.generation
    assert manifest.pipeline == "generate" and record.generations == 18 and not record.failed
    assert record.prompts == 18 + len(BRAINSTORMED) == record.sent == record.requests == server.requests
    assert record.prompt_tokens == server.prompt_tokens and record.completion_tokens == server.completion_tokens
    assert record.usage[MODEL].requests == server.completed
    assert record.cost == pytest.approx(server.prompt_tokens / 1000 * 0.5 + server.completion_tokens / 1000 * 2)
    lines = generation_lines(tmp_path / "gen")
    for path in (tmp_path / "gen" / "generations").glob("*.jsonl"):
        indices = [json.loads(line)["generation"] for line in path.open()]
        assert indices == sorted(indices) and path.name.startswith(generation.task_type_of(indices[0], ALL_TYPES))
    assert Counter(line["task_type"] for line in lines) == {task_type: 3 for task_type in ALL_TYPES}
    assert sum(file.rows for file in record.files) == 18
    assert set(record.tasks) == set(BRAINSTORMED) and all(record.tasks.values())


def test_retries_recover_from_429s_500s_slow_and_truncated_responses(tmp_path):
    faults = Faults({"429": 0.15, "500": 0.15, "truncate": 0.15, "slow": 0.1}, retry_after=0.05,
                    slow_seconds=0.2, answer_after=4)
    with FakeLLM(faults) as server:
        manifest = run_generate(tmp_path / "gen", server, "--llm-max-retries=6", "--llm-timeout=10",
                                "--price-per-1k-input=0.5", "--price-per-1k-output=2")
    record = manifest.generation
    assert set(server.faults_served) == {"429", "500", "truncate", "slow"}
    assert record.generations == 18 and not record.failed
    assert record.requests == server.requests > record.sent == record.prompts
    assert record.requests - record.sent == sum(server.faults_served[f] for f in ("429", "500", "truncate"))
    # Tokens and cost are what the server delivered whole: a truncated body is no response.
    assert record.prompt_tokens == server.prompt_tokens and record.completion_tokens == server.completion_tokens
    assert record.cost == pytest.approx(server.prompt_tokens / 1000 * 0.5 + server.completion_tokens / 1000 * 2)


def test_a_429_waits_its_retry_after(tmp_path):
    faults = Faults({"429": 1.0}, retry_after=0.4, answer_after=1)
    with FakeLLM(faults) as server:
        run_generate(tmp_path / "gen", server, "--task-types=sts", generations=4)
    gaps = [times[1] - times[0] for times in server.times.values()]
    assert len(gaps) == 4 and min(gaps) >= 0.4


def test_a_slow_response_times_out_and_is_retried(tmp_path):
    # A second between the timeout and the slow answer, and a second for a prompt answer on a loaded machine.
    faults = Faults({"slow": 1.0}, slow_seconds=2.0, answer_after=1)
    with FakeLLM(faults) as server:
        manifest = run_generate(tmp_path / "gen", server, "--task-types=sts", "--llm-timeout=1", generations=3)
    assert manifest.generation.generations == 3
    assert manifest.generation.requests == 6 and set(server.attempts.values()) == {2}


def test_a_prompt_that_keeps_failing_is_dead_lettered_with_its_prompt(tmp_path):
    faults = Faults(always_fail=("faithful translation",))  # every bitext prompt
    with FakeLLM(faults) as server:
        manifest = run_generate(tmp_path / "gen", server, "--llm-max-retries=2")
    record = manifest.generation
    assert record.failed == {reasons.LLM_RETRIES_EXHAUSTED: 3}
    assert record.generations == 15 and record.prompts == 15 + len(BRAINSTORMED) + 3
    letters = dead_letters(tmp_path / "gen")
    assert len(letters) == 3 and {letter["source"] for letter in letters} == {"synthetic-bitext"}
    assert all("3 attempt(s), the last: HTTP 500" in letter["detail"] for letter in letters)
    payload = json.loads(letters[0]["payload"])
    assert payload["task_type"] == "bitext" and "faithful translation" in payload["messages"][0]["content"]
    assert record.requests == server.requests == 15 + len(BRAINSTORMED) + 3 * 3


def test_a_refused_request_is_dead_lettered_at_once(tmp_path):
    with FakeLLM(api_key="sk-another-key") as server:
        manifest = run_generate(tmp_path / "gen", server, "--task-types=sts", generations=3)
    assert manifest.generation.failed == {reasons.LLM_REQUEST_REFUSED: 3}
    assert server.requests == 3 and manifest.generation.generations == 0
    assert all("HTTP 401" in letter["detail"] for letter in dead_letters(tmp_path / "gen"))


def test_unparseable_brainstorms_and_types_left_without_tasks_are_dead_lettered(tmp_path, monkeypatch):
    from tests import llm_server

    monkeypatch.setitem(llm_server.RECORDED["brainstorm"], "short-long", "I'd rather not.")
    with FakeLLM() as server:
        manifest = run_generate(tmp_path / "gen", server, "--task-types=short-long,sts", generations=6)
    assert manifest.generation.failed == {reasons.UNPARSEABLE_TASK_LIST: 1, reasons.NO_TASKS: 3}
    assert manifest.generation.generations == 3 and server.requests == 1 + 3


def test_concurrency_is_bounded(tmp_path):
    with FakeLLM(Faults({"slow": 1.0}, slow_seconds=0.1)) as server:
        run_generate(tmp_path / "gen", server, "--task-types=sts", "--llm-concurrency=3", "--batch-size=12",
                     generations=24)
    assert server.most_in_flight == 3


def test_requests_per_minute_are_held_to(tmp_path):
    with FakeLLM() as server:
        run_generate(tmp_path / "gen", server, "--task-types=sts", "--llm-requests-per-minute=600",
                     "--llm-concurrency=8", generations=30)
    arrivals = sorted(server.arrivals)
    assert len(arrivals) == 30
    # A burst of 10, then 10 a second: the 30th request no earlier than 2 s after the first.
    assert arrivals[-1] - arrivals[0] >= 1.8
    for start in arrivals:
        assert sum(start <= moment < start + 1.0 for moment in arrivals) <= 21


def test_a_rerun_makes_no_request_and_writes_the_same_bytes(tmp_path):
    output = tmp_path / "gen"
    with FakeLLM(Faults({"500": 0.2}, answer_after=2)) as server:
        first = run_generate(output, server)
        written = file_bytes(output, "generations")
        cached = cache_files(output)
        assert len(cached) == first.generation.prompts
        server.reset()
        again = run_generate(output, server, "--overwrite")
        assert server.requests == 0
        assert again.generation.cached == again.generation.prompts and again.generation.sent == 0
        assert again.generation.prompt_tokens == 0 and again.generation.cost == 0
        assert file_bytes(output, "generations") == written and cache_files(output) == cached
        # --no-cache, or a new output, starts afresh.
        server.reset()
        run_generate(output, server, "--overwrite", "--no-cache")
        assert server.completed == first.generation.prompts
        server.reset()
        fresh = run_generate(tmp_path / "other", server)
        assert server.completed == fresh.generation.sent == fresh.generation.prompts
        assert file_bytes(tmp_path / "other", "generations") == written


def test_output_does_not_depend_on_the_worker_count(tmp_path):
    with FakeLLM() as server:
        run_generate(tmp_path / "one", server, "--batch-size=2")
        run_generate(tmp_path / "two", server, "--batch-size=5", "--direct_num_workers=2",
                     "--direct_running_mode=multi_processing")
    assert file_bytes(tmp_path / "one", "generations") == file_bytes(tmp_path / "two", "generations")


_DRIVER = """
import sys
import beam_runner
sys.exit(beam_runner.main(sys.argv[1:]))
"""


def test_a_run_killed_half_way_reruns_only_the_missing_prompts(tmp_path):
    output = tmp_path / "gen"
    generations = 40
    prompts = generations + len(BRAINSTORMED)
    with FakeLLM(Faults({"slow": 1.0}, slow_seconds=0.15)) as server:
        argv = [
            "--pipeline=generate", f"--output={output}", f"--generations={generations}", f"--llm-model={MODEL}",
            f"--llm-base-url={server.base_url}", "--batch-size=10", "--llm-concurrency=2",
        ]
        process = subprocess.Popen([sys.executable, "-c", _DRIVER, *argv], cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while server.completed < 16 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        logs = process.communicate()[0]
        assert not (output / "manifest.json").exists()
        kept = len(cache_files(output))
        assert 0 < kept < prompts
        server.faults = Faults()
        server.reset()
        # Only the staging and the cache are left: no earlier run, so no --overwrite needed.
        manifest = run_generate(output, server, "--batch-size=10", generations=generations)
    assert server.requests == prompts - kept
    assert manifest.generation.cached == kept and manifest.generation.generations == generations
    assert KEY.encode() not in logs


def test_generations_feed_instruct_and_the_trainer_and_no_key_is_written(tmp_path, capfd):
    gen, mined = tmp_path / "gen", tmp_path / "mined"
    with FakeLLM(Faults({"429": 0.1, "500": 0.1}, answer_after=2)) as server:
        run_generate(gen, server, "--seed=5", generations=60)
    assert f"Bearer {KEY}" in server.authorizations  # the key did travel, to the endpoint only
    assert beam_runner.main(["--pipeline=instruct", f"--source=synthetic={gen}/generations/*.jsonl",
                             f"--output={mined}"]) == 0
    manifest = Manifest.model_validate_json((mined / "manifest.json").read_text("utf-8"))
    assert manifest.totals.input == 60 and manifest.totals.output > 0
    rows = [row for shard in manifest.shards for row in pa.ipc.open_stream(mined / shard.path).read_all().to_pylist()]
    assert all(row["query"].startswith(f"Instruct: {row['instruction']}\nQuery: ") for row in rows)
    assert beam_runner.main(["inspect", "summary", str(gen)]) == 0
    assert beam_runner.main(["inspect", "verify", str(mined)]) == 0
    from training.shard_store import shards_by_source

    assert sum(ref.rows for refs in shards_by_source([str(mined)]).values() for ref in refs) == len(rows)
    summary = capfd.readouterr()
    assert "prompts 64 = generations 60 + task lists 4 + dead-lettered 0" in summary.out
    assert "cost $" in summary.out
    for path in [*gen.rglob("*"), *mined.rglob("*")]:
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in summary.out + summary.err
    assert beam_runner.main(["inspect", "verify", str(gen)]) == 0
    damaged = sorted((gen / "generations").glob("*.jsonl"))[0]
    damaged.write_bytes(damaged.read_bytes().replace(b"\"generation\"", b"\"generatiom\"", 1))  # same size
    assert beam_runner.main(["inspect", "verify", str(gen)]) == 1
    assert f"{damaged.relative_to(gen)}: " in capfd.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--llm-concurrency=0"], "--llm-concurrency must be between 1 and 1024"),
    (["--llm-requests-per-minute=0"], "--llm-requests-per-minute must be above 0"),
    (["--llm-top-p=0"], "--llm-top-p must be above 0"),
    (["--generations=0"], "--generations must be at least 1"),
    (["--price-per-1k-input=-1"], "--price-per-1k-input must be at least 0"),
    (["--llm-base-url=http://127.0.0.1:1/api"], "ending in /v1"),
    (["--task-types=sts,poetry"], "known task types are"),
    (["--source=synthetic=x.jsonl"], "reads no --source"),
])
def test_options_are_checked_before_any_request(tmp_path, argv, message):
    base = ["--pipeline=generate", f"--output={tmp_path / 'gen'}", f"--llm-model={MODEL}",
            "--llm-base-url=http://127.0.0.1:1/v1"]
    with pytest.raises(SystemExit, match=message):
        beam_runner.main(base + argv)


def test_a_missing_model_or_key_is_named(tmp_path, monkeypatch):
    base = ["--pipeline=generate", f"--output={tmp_path / 'gen'}", "--llm-base-url=http://127.0.0.1:1/v1"]
    with pytest.raises(SystemExit, match="needs --llm-model"):
        beam_runner.main(base)
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(SystemExit, match="OPENAI_API_KEY"):
        beam_runner.main([*base, f"--llm-model={MODEL}"])


def test_the_cache_works_in_cloud_storage(gcs_bucket):
    from pipelines import io

    output = f"{gcs_bucket}/generated"
    argv = ["--pipeline=generate", f"--output={output}", "--generations=6", f"--llm-model={MODEL}",
            "--task-types=sts,bitext", "--llm-backoff=0.01"]
    with FakeLLM(Faults({"500": 0.3}, answer_after=2)) as server:
        assert beam_runner.main([*argv, f"--llm-base-url={server.base_url}"]) == 0
        assert len(io.match_files(f"{output}/llm_cache/**")) == 6
        written = {path: io.read_bytes(path) for path in io.match_files(f"{output}/generations/*.jsonl")}
        server.reset()
        assert beam_runner.main([*argv, f"--llm-base-url={server.base_url}", "--overwrite"]) == 0
    assert server.requests == 0
    assert {path: io.read_bytes(path) for path in io.match_files(f"{output}/generations/*.jsonl")} == written
    assert len(io.match_files(f"{output}/llm_cache/**")) == 6


def test_neither_the_key_nor_url_credentials_travel_in_the_pipeline(tmp_path):
    from apache_beam.internal import pickler

    from pipelines import generate
    from pipelines.options import MiningOptions

    assert generate.shown_url("https://user:secret@host.example:8443/v1") == "https://host.example:8443/v1"
    options = MiningOptions([f"--output={tmp_path}", "--pipeline=generate", f"--llm-model={MODEL}"])
    plan = generate.plan(options)
    def pickled(value) -> bytes:  # what the runner stages: Beam's pickle, base64 of bz2
        return bz2.decompress(base64.b64decode(pickler.dumps(value)))

    assert KEY.encode() in pickled({"planted": KEY})  # the check can see a key
    for step in (generate.Brainstorm(plan), generate.Generate(plan), plan):
        assert KEY.encode() not in pickled(step)
    assert KEY not in json.dumps(generate.recorded_options(options, plan))


def test_publishing_a_run_keeps_the_response_cache(tmp_path):
    from pipelines import io

    output = tmp_path / "out"
    (output / "llm_cache" / "ab").mkdir(parents=True)
    (output / "llm_cache" / "ab" / "abc.json").write_text("{}")
    # A cache alone (a killed run's) is no earlier run.
    io.prepare_output(str(output), overwrite=False)
    for name in ("old", "new"):
        staging = output / f".staging-{name}"
        (staging / "generations").mkdir(parents=True)
        (staging / "generations" / f"{name}.jsonl").write_text(name)
        (staging / "manifest.json").write_text(name)
        if name == "old":
            io.prepare_output(str(output), overwrite=False)  # a staging and a cache: still no earlier run
        else:
            with pytest.raises(FileExistsError, match="add --overwrite"):
                io.prepare_output(str(output), overwrite=False)
            io.prepare_output(str(output), overwrite=True)
        io.publish_run(str(staging), str(output))
    assert sorted(path.name for path in (output / "generations").iterdir()) == ["new.jsonl"]
    assert (output / "manifest.json").read_text() == "new"
    assert (output / "llm_cache" / "ab" / "abc.json").read_text() == "{}"
