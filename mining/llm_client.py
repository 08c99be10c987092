"""Sending a batch of chat completions to an OpenAI-compatible endpoint through the ``openai`` client.

Bounded concurrency (a thread pool of ``concurrency`` threads over one client), requests- and tokens-per-minute
limits (token buckets shared by the threads), and retries with exponential backoff and full jitter on 429
(at least its ``Retry-After``), 5xx, timeouts, broken connections and unreadable bodies. A request that
keeps failing, or that the endpoint refuses (another 4xx), comes back as an ``Outcome`` with its error, for a
dead letter. The client's own retries are off: every attempt is counted here.

The API key is given to the client and to nothing else: no outcome, error detail or log line holds it.
"""

import email.utils
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from mining.generation import Prompt, Sampling, cache_key, estimated_tokens
from schemas.reasons import LLM_REQUEST_REFUSED, LLM_RETRIES_EXHAUSTED


@dataclass(frozen=True)
class ClientOptions:
    base_url: str
    model: str
    concurrency: int = 8
    requests_per_minute: float | None = None  # None: no limit
    tokens_per_minute: float | None = None
    max_retries: int = 6
    timeout: float = 120.0  # seconds per attempt
    backoff: float = 1.0  # seconds: the first retry waits up to this, each later one up to twice as long
    max_backoff: float = 60.0


class RateLimiter:
    """A token bucket: ``per_minute`` units a minute, at most a second's worth (and at least one unit) in a
    burst. A request takes what it is estimated to cost; ``settle`` corrects that by its actual cost, which
    may leave the bucket in debt for the next request to wait out. Thread-safe; sleeps outside its lock."""

    def __init__(self, per_minute: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self._rate = per_minute / 60 if per_minute else None
        self._capacity = max(1.0, self._rate or 0.0)
        self._level = self._capacity
        self._clock, self._sleep = clock, sleep
        self._updated = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self._capacity, self._level + (now - self._updated) * self._rate)
        self._updated = now

    def acquire(self, units: float = 1.0) -> float:
        """Take ``units``, waiting until the bucket holds them (or, for more than it can hold, until it is
        full); the seconds waited."""
        if self._rate is None:
            return 0.0
        waited = 0.0
        while True:
            with self._lock:
                self._refill()
                needed = min(units, self._capacity)
                # A tolerance: a wait computed to the last bit may refill a hair short (and the clock may
                # not move at all for a wait that small).
                if self._level >= needed - 1e-9 * max(1.0, needed):
                    self._level -= units
                    return waited
                wait = (needed - self._level) / self._rate
            self._sleep(wait)
            waited += wait

    def settle(self, delta: float) -> None:
        """Take ``delta`` more units (give them back when negative)."""
        if self._rate is None or not delta:
            return
        with self._lock:
            self._refill()
            self._level = min(self._capacity, self._level - delta)


@dataclass
class Outcome:
    prompt: Prompt
    key: str
    content: str | None = None
    finish_reason: str | None = None
    model: str | None = None  # the model the response names
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    attempts: int = 0
    waited: float = 0.0  # seconds waited for the rate limits
    reason: str | None = None  # a dead letter's reason, when it failed
    detail: str = ""

    def cache_entry(self) -> dict:
        return {"key": self.key, "model": self.model, "content": self.content, "finish_reason": self.finish_reason,
                "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}}

    @classmethod
    def from_cache(cls, prompt: Prompt, key: str, entry: dict) -> "Outcome":
        usage = entry.get("usage") or {}
        return cls(prompt, key, entry["content"], entry.get("finish_reason"), entry.get("model"),
                   usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0), cached=True)


def _retry_after(error) -> float | None:
    """The seconds a 429 (or 503) asks to wait: ``retry-after-ms``, or ``retry-after`` in seconds or as a date."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        if headers.get("retry-after-ms") is not None:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            moment = email.utils.parsedate_to_datetime(value)
            return max(0.0, moment.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


class Sender:
    """Sends prompts concurrently; one per worker (``openai`` is imported here, on the workers that send).

    ``cache_get(key) -> dict | None`` and ``cache_put(key, entry)`` keep responses (None: no cache); a cached
    prompt is answered without a request, and a fresh response is cached as soon as it arrives, so a run
    killed half-way has kept everything it paid for.
    """

    def __init__(self, options: ClientOptions, sampling: Sampling, api_key: str,
                 cache_get: Callable[[str], dict | None] | None = None,
                 cache_put: Callable[[str, dict], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        import openai

        self._openai = openai
        self._options = options
        self._sampling = sampling
        self._secret = api_key
        self._client = openai.OpenAI(base_url=options.base_url, api_key=api_key, max_retries=0,
                                     timeout=options.timeout)
        self._cache_get, self._cache_put = cache_get, cache_put
        self._requests = RateLimiter(options.requests_per_minute)
        self._tokens = RateLimiter(options.tokens_per_minute)
        self._sleep = sleep
        self._pool = ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="llm")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()

    def key_of(self, prompt: Prompt) -> str:
        return cache_key(self._options.model, prompt.message_dicts(), self._sampling, prompt.seed)

    def send_all(self, prompts: list[Prompt]) -> list[Outcome]:
        """An outcome per prompt, in the prompts' order."""
        return list(self._pool.map(self.send, prompts))

    def send(self, prompt: Prompt) -> Outcome:
        key = self.key_of(prompt)
        if self._cache_get is not None:
            entry = self._cache_get(key)
            if entry is not None and entry.get("key") == key and isinstance(entry.get("content"), str):
                return Outcome.from_cache(prompt, key, entry)
        outcome = self._request(prompt, key)
        if outcome.reason is None and self._cache_put is not None:
            self._cache_put(key, outcome.cache_entry())
        return outcome

    def _redacted(self, text: str) -> str:
        text = " ".join(str(text).split())[:300]
        return text.replace(self._secret, "***") if self._secret else text

    def _request(self, prompt: Prompt, key: str) -> Outcome:
        openai, options, sampling = self._openai, self._options, self._sampling
        outcome = Outcome(prompt, key)
        messages = prompt.message_dicts()
        estimate = estimated_tokens(messages, sampling.max_tokens)
        for attempt in range(options.max_retries + 1):
            outcome.waited += self._requests.acquire(1)
            outcome.waited += self._tokens.acquire(estimate)
            outcome.attempts += 1
            retry_after = None
            try:
                response = self._client.chat.completions.create(
                    model=options.model, messages=messages, temperature=sampling.temperature,
                    top_p=sampling.top_p, max_tokens=sampling.max_tokens, seed=prompt.seed,
                )
                choice = response.choices[0] if response.choices else None
                content = choice.message.content if choice is not None else None
                if not isinstance(content, str):
                    raise ValueError("the response holds no message content")
            except openai.RateLimitError as error:
                problem, retry_after = f"HTTP 429: {error.message}", _retry_after(error)
            except openai.APITimeoutError:
                problem = f"no response within {options.timeout:g}s"
            except openai.APIConnectionError as error:
                problem = f"connection failed: {error.__cause__ or error}"
            except openai.APIStatusError as error:
                problem = f"HTTP {error.status_code}: {error.message}"
                if error.status_code < 500 and error.status_code not in (408, 409):
                    outcome.reason, outcome.detail = LLM_REQUEST_REFUSED, self._redacted(problem)
                    self._tokens.settle(-estimate)
                    return outcome
                retry_after = _retry_after(error)
            except (openai.APIResponseValidationError, ValueError, KeyError, AttributeError, IndexError) as error:
                problem = f"unreadable response: {type(error).__name__}: {error}"
            else:
                usage = response.usage
                outcome.content, outcome.finish_reason = content, choice.finish_reason
                outcome.model = response.model or options.model
                outcome.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
                outcome.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
                if usage is not None:
                    self._tokens.settle(outcome.prompt_tokens + outcome.completion_tokens - estimate)
                return outcome
            # A failed attempt used no tokens that count against the limit.
            self._tokens.settle(-estimate)
            if attempt == options.max_retries:
                break
            delay = random.uniform(0, min(options.max_backoff, options.backoff * 2**attempt))
            if retry_after is not None:
                delay = max(delay, min(retry_after, options.max_backoff))
            self._sleep(delay)
        outcome.reason = LLM_RETRIES_EXHAUSTED
        outcome.detail = self._redacted(f"{outcome.attempts} attempt(s), the last: {problem}")
        return outcome
