"""A small OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

It answers ``POST /v1/chat/completions`` with recorded responses (``tests/data/llm_responses.json``) for the
prompt's task type and language, their JSON keys named from ``mining.instruct.TEMPLATES``; reports ``usage``
(a token per whitespace-separated word, the same for every asking); and injects faults: 429s with
``Retry-After``, 500s, slow responses and truncated bodies. Which attempt of which prompt fails is a pure
function of the prompt and the attempt's number, so a run's faults do not depend on timing.
It counts what it served: every request, and the tokens of the responses it delivered whole.
"""

import hashlib
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mining import generation, instruct

RECORDED = json.loads((Path(__file__).parent / "data" / "llm_responses.json").read_text("utf-8"))
FAULTS = ("429", "500", "slow", "truncate")


@dataclass
class Faults:
    """Per attempt, the chance of each fault (drawn from the prompt's hash and the attempt number)."""

    rates: dict[str, float] = field(default_factory=dict)
    retry_after: float = 0.05  # seconds, sent as Retry-After
    slow_seconds: float = 2.0
    always_fail: tuple[str, ...] = ()  # prompts containing one of these always get a 500
    answer_after: int | None = None  # every prompt's attempts past this many succeed (bounds the retries)

    def pick(self, digest: str, attempt: int, content: str) -> str | None:
        if any(marker in content for marker in self.always_fail):
            return "500"
        if self.answer_after is not None and attempt > self.answer_after:
            return None
        draw = int(hashlib.sha256(f"{digest}:{attempt}".encode()).hexdigest()[:8], 16) / 2**32
        for fault in FAULTS:
            rate = self.rates.get(fault, 0.0)
            if draw < rate:
                return fault
            draw -= rate
        return None


def task_type_of(content: str) -> str:
    for task_type, prompt in generation.BRAINSTORM_PROMPTS.items():
        if content == prompt:
            return "brainstorm:" + task_type
    if content.startswith("You have been assigned a retrieval task"):
        return "short-long"
    if content.startswith("You have been assigned a text classification task"):
        return "long-short"
    if content.startswith("You have been assigned a text matching task"):
        return "short-short" if "very short" in content else "long-long"
    if "semantic similarity" in content:
        return "sts"
    return "bitext"


def _language(content: str, task_type: str) -> str:
    if task_type == "bitext":
        match = re.search(r" in ([A-Z][A-Za-z ]+?) and (?:one|two) \w+s? in ([A-Z][A-Za-z ]+?) with", content)
        return f"{match.group(1)}|{match.group(2)}" if match else ""
    match = re.search(r"should be in ([A-Z][A-Za-z ]+?)\.|strings in ([A-Z][A-Za-z ]+?), do not", content)
    return next((group for group in match.groups() if group), "") if match else ""


def answer(content: str, digest: str) -> str:
    """The recorded response for a prompt: a task list, or an example in its language (English when none
    is recorded in it, as a model that ignores the language would), fenced or in prose by the prompt's hash."""
    task_type = task_type_of(content)
    if task_type.startswith("brainstorm:"):
        return RECORDED["brainstorm"][task_type.split(":", 1)[1]]
    recorded = RECORDED["examples"][task_type]
    examples = recorded.get(_language(content, task_type)) or next(iter(recorded.values()))
    values = examples[int(digest[:8], 16) % len(examples)]
    template = instruct.TEMPLATES[task_type]
    roles = (template.query, template.positive, template.negative)
    body = json.dumps({key: value for key, value in zip(roles, values) if key}, ensure_ascii=False, indent=2)
    style = int(digest[8:10], 16) % 3
    return (body, f"```json\n{body}\n```", f"Sure! Here is the JSON object:\n\n{body}")[style]


class FakeLLM:
    """``with FakeLLM(faults) as server:`` serves on ``server.base_url`` (ending in /v1) until the block ends."""

    def __init__(self, faults: Faults | None = None, api_key: str | None = None):
        self.faults = faults or Faults()
        self.api_key = api_key  # when set, requests without it get a 401
        self.lock = threading.Lock()
        self.reset()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                server._handle(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def reset(self) -> None:
        with self.lock:
            self.requests = 0  # HTTP requests
            self.completed = 0  # responses delivered whole (the ones a client can bill)
            self.prompt_tokens = 0
            self.completion_tokens = 0
            self.faults_served: Counter = Counter()
            self.attempts: Counter = Counter()  # per prompt digest
            self.times: dict[str, list[float]] = {}  # per prompt digest: when each attempt arrived
            self.arrivals: list[float] = []
            self.authorizations: set[str] = set()
            self.models: Counter = Counter()
            self.in_flight = 0
            self.most_in_flight = 0  # requests being answered at once, at most

    def __enter__(self) -> "FakeLLM":
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _send(self, handler, status: int, body: dict, headers: dict | None = None, truncate: bool = False) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        if truncate:
            handler.wfile.write(data[: len(data) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        handler.wfile.write(data)

    def _handle(self, handler) -> None:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self._answer(handler)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _answer(self, handler) -> None:
        length = int(handler.headers.get("Content-Length", 0))
        request = json.loads(handler.rfile.read(length))
        content = "\n".join(message["content"] for message in request["messages"])
        digest = hashlib.sha256(json.dumps([request["messages"], request.get("seed")]).encode()).hexdigest()
        authorization = handler.headers.get("Authorization", "")
        with self.lock:
            self.requests += 1
            self.arrivals.append(time.monotonic())
            self.attempts[digest] += 1
            attempt = self.attempts[digest]
            self.times.setdefault(digest, []).append(time.monotonic())
            self.authorizations.add(authorization)
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            self._send(handler, 401, {"error": {"message": "invalid key", "type": "invalid_request_error"}})
            return
        fault = self.faults.pick(digest, attempt, content)
        if fault:
            with self.lock:
                self.faults_served[fault] += 1
        if fault == "429":
            self._send(handler, 429, {"error": {"message": "Rate limit reached", "type": "requests"}},
                       {"Retry-After": f"{self.faults.retry_after:g}"})
            return
        if fault == "500":
            self._send(handler, 500, {"error": {"message": "The server had an error", "type": "server_error"}})
            return
        if fault == "slow":
            time.sleep(self.faults.slow_seconds)
        text = answer(content, digest)
        usage = {"prompt_tokens": len(content.split()), "completion_tokens": len(text.split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        body = {
            "id": f"chatcmpl-{digest[:24]}", "object": "chat.completion", "created": 1700000000,
            "model": request["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage,
        }
        truncate = fault == "truncate"
        try:
            self._send(handler, 200, body, truncate=truncate)
        except (BrokenPipeError, ConnectionResetError):
            return  # the client gave up (a timeout): nothing was delivered
        if not truncate:
            with self.lock:
                self.completed += 1
                self.prompt_tokens += usage["prompt_tokens"]
                self.completion_tokens += usage["completion_tokens"]
                self.models[request["model"]] += 1
