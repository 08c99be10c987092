"""LLM generation of instruction data, as "Improving Text Embeddings with Large Language Models" (Wang et al.,
2024, appendix) does it: brainstorm tasks per task type, deduplicate them, then one generation per
(task, sampled placeholders, language).

Pure logic, no Beam and no HTTP: the prompts (their JSON keys from ``mining.instruct.TEMPLATES``), every draw
as a pure function of (seed, index), parsing and deduplicating brainstormed task lists, cache keys, token
estimates and cost. ``pipelines.generate`` sends the prompts; ``mining.llm_client`` is the client.
"""

import ast
import hashlib
import json
import random
import re
from dataclasses import dataclass, field

import json_repair

from mining.clean import fold_whitespace
from mining.instruct import TEMPLATES, Template

# --- languages ------------------------------------------------------------------------------------------
# XLM-R's (CC-100) languages without their romanised variants, as (code, the English name the prompt uses).
# Each name reads back through ``mining.sources.synthetic.language_code`` to its code.
XLMR_LANGUAGES = (
    ("af", "Afrikaans"), ("am", "Amharic"), ("ar", "Arabic"), ("as", "Assamese"), ("az", "Azerbaijani"),
    ("be", "Belarusian"), ("bg", "Bulgarian"), ("bn", "Bengali"), ("br", "Breton"), ("bs", "Bosnian"),
    ("ca", "Catalan"), ("cs", "Czech"), ("cy", "Welsh"), ("da", "Danish"), ("de", "German"), ("el", "Greek"),
    ("en", "English"), ("eo", "Esperanto"), ("es", "Spanish"), ("et", "Estonian"), ("eu", "Basque"),
    ("fa", "Persian"), ("fi", "Finnish"), ("fr", "French"), ("fy", "Western Frisian"), ("ga", "Irish"),
    ("gd", "Scottish Gaelic"), ("gl", "Galician"), ("gu", "Gujarati"), ("ha", "Hausa"), ("he", "Hebrew"),
    ("hi", "Hindi"), ("hr", "Croatian"), ("hu", "Hungarian"), ("hy", "Armenian"), ("id", "Indonesian"),
    ("is", "Icelandic"), ("it", "Italian"), ("ja", "Japanese"), ("jv", "Javanese"), ("ka", "Georgian"),
    ("kk", "Kazakh"), ("km", "Khmer"), ("kn", "Kannada"), ("ko", "Korean"), ("ku", "Kurdish"), ("ky", "Kirghiz"),
    ("la", "Latin"), ("lo", "Lao"), ("lt", "Lithuanian"), ("lv", "Latvian"), ("mg", "Malagasy"),
    ("mk", "Macedonian"), ("ml", "Malayalam"), ("mn", "Mongolian"), ("mr", "Marathi"), ("ms", "Malay"),
    ("my", "Burmese"), ("ne", "Nepali"), ("nl", "Dutch"), ("no", "Norwegian"), ("om", "Oromo"), ("or", "Odia"),
    ("pa", "Punjabi"), ("pl", "Polish"), ("ps", "Pashto"), ("pt", "Portuguese"), ("ro", "Romanian"),
    ("ru", "Russian"), ("sa", "Sanskrit"), ("sd", "Sindhi"), ("si", "Sinhala"), ("sk", "Slovak"),
    ("sl", "Slovenian"), ("so", "Somali"), ("sq", "Albanian"), ("sr", "Serbian"), ("su", "Sundanese"),
    ("sv", "Swedish"), ("sw", "Swahili"), ("ta", "Tamil"), ("te", "Telugu"), ("th", "Thai"), ("tl", "Tagalog"),
    ("tr", "Turkish"), ("ug", "Uighur"), ("uk", "Ukrainian"), ("ur", "Urdu"), ("uz", "Uzbek"),
    ("vi", "Vietnamese"), ("xh", "Xhosa"), ("yi", "Yiddish"), ("zh", "Simplified Chinese"),
    ("zh", "Traditional Chinese"),
)
# The paper samples "from the XLM-R languages, with higher probability for high-resource languages". Here:
# English weighs 40, the 14 largest CC-100 languages after it 4 each, every other language 1 (the two Chinese
# scripts one each); so 23% of the draws are English, 32% the 14 large ones, 45% the remaining 79 names.
_HIGH_RESOURCE = frozenset({"ru", "id", "vi", "fa", "uk", "sv", "th", "ja", "de", "ro", "hu", "bg", "fr", "fi"})
LANGUAGE_WEIGHTS = tuple(
    40 if code == "en" else 4 if code in _HIGH_RESOURCE else 1 for code, _ in XLMR_LANGUAGES
)

# --- the paper's prompts, their keys from the templates -----------------------------------------------
_JSON_ONLY = "Your output must always be a JSON object only, do not explain yourself or output anything else. Be creative!"
_LIST_ONLY = (
    "Your output must always be a python list of strings only, with about 20 elements, and each element corresponds "
    "to a distinct {what} in one sentence. Do not explain yourself or output anything else. Be creative!"
)

BRAINSTORM_PROMPTS = {
    "short-long": (
        "Brainstorm a list of potentially useful text retrieval tasks.\n"
        "Here are a few examples for your reference:\n"
        "- Retrieve relevant documents for a short keyword web search query that asks for weather information.\n"
        "- Search for documents that answers a FAQ-style query on children's nutrition.\n"
        "Please adhere to the following guidelines:\n"
        "- Specify what the query is, and what the desired documents are.\n"
        "- Each retrieval task should cover a wide range of queries, and should not be too specific.\n"
        + _LIST_ONLY.format(what="retrieval task")
    ),
    "long-short": (
        "Brainstorm a list of potentially useful text classification tasks.\n"
        "Please adhere to the following guidelines:\n"
        "- Tasks should cover a diverse range of domains and task types.\n"
        "- Labels should be clear and specific, avoiding overly abstract information.\n"
        + _LIST_ONLY.format(what="text classification task")
    ),
    "short-short": (
        "Brainstorm a list of text matching tasks where both the queries and the groundtruth documents are very "
        "short (one or two sentences, even a short phrase).\n"
        "Here are a few examples:\n"
        "- Given a scientific paper title, retrieve the title of papers that cite the given paper.\n"
        "- Match a word with its definition.\n"
        "- Provided a notable person's name, identify their occupation or achievement.\n"
        + _LIST_ONLY.format(what="task")
    ),
    "long-long": (
        "Brainstorm a list of text matching tasks where the queries are long documents.\n"
        "Here are a few examples:\n"
        "- Given a document that supports a debatable argument, find another document that contains opposite "
        "arguments.\n"
        "- Provided a lengthy business proposal, retrieve competitive business strategies in the same industry.\n"
        + _LIST_ONLY.format(what="task")
    ),
}
# STS and bitext are not brainstormed: their task is fixed, and so is the instruction their rows carry.
FIXED_TASKS = {"sts": "Retrieve semantically similar text.", "bitext": "Retrieve parallel sentences"}

# Placeholder values, the paper's sets.
PLACEHOLDERS = {
    "short-long": {
        "query_type": ("extremely long-tail", "long-tail", "common"),
        "query_length": ("less than 5 words", "5 to 15 words", "at least 10 words"),
        "clarity": ("clear", "understandable with some effort", "ambiguous"),
        "num_words": ("50", "100", "200", "300", "400", "500"),
        "difficulty": ("high school", "college", "PhD"),
    },
    "long-short": {
        "num_words": ("less than 10", "at least 10", "at least 50", "at least 100", "at least 200"),
        "clarity": ("clear", "understandable with some effort", "ambiguous"),
        "difficulty": ("high school", "college", "PhD"),
    },
    "short-short": {},
    "long-long": {},
    "sts": {
        "unit": ("sentence", "phrase", "passage"),
        "high_score": ("4", "4.5", "5"),
        "low_score": ("2.5", "3", "3.5"),
        "difficulty": ("elementary school", "high school", "college"),
    },
    "bitext": {
        "unit": ("sentence", "phrase", "passage"),
        "difficulty": ("elementary school", "high school", "college"),
    },
}


def _key_lines(template: Template, descriptions: tuple[str, str, str | None]) -> str:
    roles = (template.query, template.positive, template.negative)
    return "".join(
        f'- "{key}": a string, {description}\n'
        for key, description in zip(roles, descriptions, strict=True)
        if key and description
    )


def _generation_prompt(task_type: str, task: str, values: dict[str, str]) -> str:
    template = TEMPLATES[task_type]
    q, p, n = (f'"{key}"' if key else None for key in (template.query, template.positive, template.negative))
    v = values
    if task_type == "short-long":
        return (
            f"You have been assigned a retrieval task: {task}\n"
            "Your mission is to write one text retrieval example for this task in JSON format. The JSON object must "
            "contain the following keys:\n"
            + _key_lines(template, (
                "a random user search query specified by the retrieval task.",
                "a relevant document for the user query.",
                "a hard negative document that only appears relevant to the query.",
            ))
            + "Please adhere to the following guidelines:\n"
            f"- The {q} should be {v['query_type']}, {v['query_length']}, {v['clarity']}, and diverse in topic.\n"
            "- All documents must be created independent of the query. Avoid copying the query verbatim. It's "
            f"acceptable if some parts of the {p} are not topically related to the query.\n"
            f"- All documents should be at least {v['num_words']} words long.\n"
            + (f"- The {n} contains some useful information, but it should be less useful or comprehensive "
               f"compared to the {p}.\n" if n else "")
            + f"- Both the query and documents should be in {v['language']}.\n"
            "- Do not provide any explanation in any document on why it is relevant or not relevant to the query.\n"
            f"- Both the query and documents require {v['difficulty']} level education to understand.\n"
            + _JSON_ONLY
        )
    if task_type == "long-short":
        return (
            f"You have been assigned a text classification task: {task}\n"
            "Your mission is to write one text classification example for this task in JSON format. The JSON "
            "object must contain the following keys:\n"
            + _key_lines(template, (
                "the input text specified by the classification task.",
                "the correct label of the input text.",
                "an incorrect label that is related to the task.",
            ))
            + "Please adhere to the following guidelines:\n"
            f"- The {q} should be {v['num_words']} words and diverse in expression.\n"
            + (f"- The {n} must be a valid label for the given task, but not as appropriate as the {p} for the "
               f"{q}.\n" if n else "")
            + f"- The values for all fields should be in {v['language']}.\n"
            f"- Avoid including the values of the {p}{f' and {n}' if n else ''} fields in the {q}, that would make "
            "the task too easy.\n"
            f"- The {q} is {v['clarity']} and requires {v['difficulty']} level education to comprehend.\n"
            + _JSON_ONLY
        )
    if task_type in ("short-short", "long-long"):
        size = ("very short (a sentence or a phrase)" if task_type == "short-short"
                else "long documents (at least 300 words)")
        return (
            f"You have been assigned a text matching task: {task}\n"
            "Your mission is to write one example for this task in JSON format. The JSON object must contain the "
            "following keys:\n"
            + _key_lines(template, (
                "a random input specified by the task.",
                f"a relevant document for the {q} according to the task.",
                f"a document that appears relevant to the {q} but is not, according to the task.",
            ))
            + "Please adhere to the following guidelines:\n"
            f"- The values of all fields should be in {v['language']}.\n"
            f"- Both the {q} and {p} should be {size}, avoid substantial word overlaps, otherwise the task would "
            "be too easy.\n"
            f"- The {q} and {p} should be independent of each other.\n"
            + _JSON_ONLY
        )
    keys = ", ".join(f'"{key}"' for key in template.keys)
    unit = v["unit"]
    if task_type == "sts":
        return (
            f"Write a {unit} triple with varying semantic similarity scores in JSON format.\n"
            "The semantic similarity score ranges from 1 to 5, with 1 denotes least similar and 5 denotes most "
            "similar.\n"
            "Please adhere to the following guidelines:\n"
            f"- The keys in JSON are {keys}, the values are all strings in {v['language']}, do not add any other "
            "keys.\n"
            f"- There should be some word overlaps between all three {unit}s.\n"
            f"- The similarity score between {q} and {p} should be {v['high_score']}.\n"
            + (f"- The similarity score between {q} and {n} should be {v['low_score']}.\n" if n else "")
            + f"- The {unit}s require {v['difficulty']} level education to understand and should be diverse in "
            "terms of topic and length.\n"
            + _JSON_ONLY
        )
    # bitext
    source_language, target_language = v["language"], v["target_language"]
    return (
        f"Write a {unit} {'triple' if n else 'pair'} with one {unit} in {source_language} and "
        + (f"two {unit}s in {target_language}" if n else f"one {unit} in {target_language}")
        + " with varying translation qualities in JSON format.\n"
        "Please adhere to the following guidelines:\n"
        f"- The keys in JSON are {keys}, the values are all strings, do not add any other keys.\n"
        f"- {q} is in {source_language}, {p} is a faithful translation of {q} in {target_language}"
        + (f", and {n} is in {target_language} with some word overlaps with {p} but a different meaning" if n else "")
        + ".\n"
        f"- The {unit}s require {v['difficulty']} level education to understand and should be diverse in terms of "
        "topic and length.\n"
        + _JSON_ONLY
    )


# --- requests and draws ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sampling:
    """The sampling parameters every request carries (they are part of its cache key)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 2048


@dataclass(frozen=True)
class Prompt:
    """One chat completion to ask for. ``key`` orders the output: ("brainstorm", type, i) or ("generate", i)."""

    kind: str  # "brainstorm" or "generate"
    index: int
    task_type: str
    messages: tuple[tuple[str, str], ...]  # (role, content)
    seed: int  # the request's own seed, a function of --seed and index
    instruction: str = ""
    language: str | list[str] = ""

    def message_dicts(self) -> list[dict]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def payload(self) -> dict:
        """What a dead letter keeps of the prompt: its content, never a credential."""
        return {"kind": self.kind, "index": self.index, "task_type": self.task_type,
                "messages": self.message_dicts(), "seed": self.seed}


def derived_seed(seed: int, *parts) -> int:
    """A 63-bit seed that depends only on ``seed`` and ``parts``: the same on every worker and every run."""
    text = "\x1f".join(str(part) for part in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


def brainstorm_prompts(task_types: list[str], requests_per_type: int, seed: int) -> list[Prompt]:
    return [
        Prompt("brainstorm", index, task_type, (("user", BRAINSTORM_PROMPTS[task_type]),),
               derived_seed(seed, "brainstorm", task_type, index))
        for task_type in task_types
        if task_type in BRAINSTORM_PROMPTS
        for index in range(requests_per_type)
    ]


def task_type_of(index: int, task_types: list[str]) -> str:
    """Generations are spread over the task types in turn."""
    return task_types[index % len(task_types)]


def _language_names(rng: random.Random, count: int) -> list[str]:
    names = [name for _, name in XLMR_LANGUAGES]
    chosen: list[str] = []
    while len(chosen) < count:
        (name,) = rng.choices(names, weights=LANGUAGE_WEIGHTS)
        # Two Chinese scripts are still one language for a bitext pair.
        if all(name.split()[-1] != other.split()[-1] for other in chosen):
            chosen.append(name)
    return chosen


def generation_prompt(index: int, task_types: list[str], tasks: dict[str, list[str]], seed: int) -> Prompt | None:
    """Generation ``index``: its task type, task, placeholders and language(s), all drawn from (seed, index)
    and the deduplicated task lists; None when its task type has no task to draw from."""
    task_type = task_type_of(index, task_types)
    rng = random.Random(derived_seed(seed, "generate", index))
    task = FIXED_TASKS.get(task_type)
    if task is None:
        candidates = tasks.get(task_type) or []
        if not candidates:
            return None
        task = candidates[rng.randrange(len(candidates))]
    values = {name: rng.choice(choices) for name, choices in sorted(PLACEHOLDERS[task_type].items())}
    if TEMPLATES[task_type].bilingual:
        values["language"], values["target_language"] = _language_names(rng, 2)
        language: str | list[str] = [values["language"], values["target_language"]]
    else:
        values["language"] = language = _language_names(rng, 1)[0]
    content = _generation_prompt(task_type, task, values)
    return Prompt("generate", index, task_type, (("user", content),), derived_seed(seed, "request", index),
                  instruction=task, language=language)


# --- brainstormed task lists ----------------------------------------------------------------------------
_MAX_TASK_CHARS = 500
_LIST_ITEM = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+(.+?)\s*$")


def parse_task_list(response: str) -> list[str]:
    """The tasks in a brainstorm response: a python (or JSON) list of strings, possibly fenced or with prose
    around it, or failing that a bulleted or numbered list. ValueError when there is none."""
    start, end = response.find("["), response.rfind("]")
    items = None
    if start >= 0 and end > start:
        text = response[start : end + 1]
        for parse in (ast.literal_eval, json_repair.loads):
            try:
                value = parse(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(value, list) and value:
                items = value
                break
    if items is None:
        items = [match.group(1) for line in response.splitlines() if (match := _LIST_ITEM.match(line))]
    tasks = [fold_whitespace(item).strip("\"'") for item in items if isinstance(item, str)]
    tasks = [task for task in tasks if task and len(task) <= _MAX_TASK_CHARS]
    if not tasks:
        raise ValueError("no list of task strings in the response")
    return tasks


def _task_key(task: str) -> str:
    return fold_whitespace(task).casefold().rstrip(" .!?;:")


def dedup_tasks(lists: list[tuple[int, list[str]]]) -> list[str]:
    """One task list from the brainstorm responses (request index, tasks): the first spelling of each task
    (case, whitespace and final punctuation aside), in (request, position) order, whatever order they came in."""
    seen, tasks = set(), []
    for _, items in sorted(lists, key=lambda item: item[0]):
        for task in items:
            key = _task_key(task)
            if key not in seen:
                seen.add(key)
                tasks.append(task)
    return tasks


# --- cache keys, tokens and cost ------------------------------------------------------------------------
def cache_key(model: str, messages: list[dict], sampling: Sampling, seed: int) -> str:
    """sha256 of what decides a response: the model, the messages, the sampling parameters and the seed."""
    text = json.dumps(
        {"model": model, "messages": messages, "temperature": sampling.temperature, "top_p": sampling.top_p,
         "max_tokens": sampling.max_tokens, "seed": seed},
        ensure_ascii=False, sort_keys=True, separators=(",", ":"),
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_path(key: str) -> str:
    """A cache entry's path under the cache directory: a 256-way fan-out by the key's first two hex digits."""
    return f"{key[:2]}/{key}.json"


def estimated_tokens(messages: list[dict], max_tokens: int) -> int:
    """An upper estimate of a request's tokens for the tokens-per-minute limit, before its usage is known:
    a token per 3 UTF-8 bytes of the prompt, plus the completion it may use."""
    prompt_bytes = sum(len(message["content"].encode("utf-8")) for message in messages)
    return prompt_bytes // 3 + 8 * len(messages) + max_tokens


# US dollars per 1,000 prompt and completion tokens, list prices as of 2025; --price-per-1k-input and
# --price-per-1k-output override them (and price any other model). A model in neither has no cost.
PRICES_PER_1K = {
    "gpt-4o": (0.0025, 0.01),
    "gpt-4o-mini": (0.00015, 0.0006),
    "gpt-4.1": (0.002, 0.008),
    "gpt-4.1-mini": (0.0004, 0.0016),
    "gpt-4.1-nano": (0.0001, 0.0004),
    "gpt-4-turbo": (0.01, 0.03),
    "gpt-3.5-turbo": (0.0005, 0.0015),
}


def prices(model: str, input_price: float | None, output_price: float | None) -> tuple[float, float] | None:
    listed = PRICES_PER_1K.get(model)
    if input_price is None and output_price is None:
        return listed
    return (input_price if input_price is not None else (listed[0] if listed else 0.0),
            output_price if output_price is not None else (listed[1] if listed else 0.0))


def cost(prompt_tokens: int, completion_tokens: int, price: tuple[float, float] | None) -> float | None:
    if price is None:
        return None
    return round(prompt_tokens / 1000 * price[0] + completion_tokens / 1000 * price[1], 10)


# --- what a run counts ----------------------------------------------------------------------------------
@dataclass
class Usage:
    requests: int = 0  # responses received (paid for), retries that failed excluded
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def merge(self, other: "Usage") -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens


@dataclass
class GenerationStats:
    """Counts of one bundle (merged into the run's): prompts == generations + task_lists + failed."""

    prompts: int = 0
    cached: int = 0  # answered from the cache: no request
    sent: int = 0  # prompts sent (at least one HTTP request each)
    attempts: int = 0  # HTTP requests, retries included
    generations: int = 0
    task_lists: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # by reason
    usage: dict[str, Usage] = field(default_factory=dict)  # by model (the response's, else the requested one)
    seconds_waited: float = 0.0  # for the rate limits

    def fail(self, reason: str, n: int = 1) -> None:
        self.failed[reason] = self.failed.get(reason, 0) + n

    def merge(self, other: "GenerationStats") -> "GenerationStats":
        self.prompts += other.prompts
        self.cached += other.cached
        self.sent += other.sent
        self.attempts += other.attempts
        self.generations += other.generations
        self.task_lists += other.task_lists
        for reason, n in other.failed.items():
            self.fail(reason, n)
        for model, usage in other.usage.items():
            self.usage.setdefault(model, Usage()).merge(usage)
        self.seconds_waited += other.seconds_waited
        return self
