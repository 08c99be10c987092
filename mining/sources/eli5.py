"""ELI5 (Explain Like I'm 5, long-form QA from Reddit) as the Hugging Face ``eli5`` set publishes it:
JSON lines ``{"q_id", "title", "selftext", "document", "subreddit", "answers": {"a_id": [...],
"text": [...], "score": [...]}, "title_urls", "selftext_urls", "answers_urls"}``.

Every question is a candidate: (its title, and its text when it has one; the answer with the
highest score, the first of equals). A question without answers is dropped as ``no_answer``.
"""

from mining.records import Drop
from mining.sources import register
from mining.sources.base import JsonLinesReader, Malformed, optional_text, require_object, require_text
from schemas.reasons import MISSING_FIELD, NO_ANSWER, WRONG_TYPE


@register
class Eli5Reader(JsonLinesReader):
    kind = "eli5"
    task = "Provided a user question, retrieve the highest voted answers on Reddit ELI5 forum"

    def parse(self, value, task, origin):
        require_object(value)
        title = require_text(value, "title")
        selftext = optional_text(value, "selftext").strip()
        question = f"{title}\n{selftext}" if selftext else title
        if value.get("answers") is None:
            raise Malformed(MISSING_FIELD, "'answers' missing")
        answers = _scored_answers(require_object(value["answers"], "answers"))
        fields = dict(query_lang=task.lang, passage_lang=task.lang, origin=origin)
        if not answers:
            return Drop(self.pair(question, "", **fields), NO_ANSWER)
        best = max(answers, key=lambda answer: answer[0])[1]  # max keeps the first of equal scores
        return self.pair(question, best, **fields)


def _scored_answers(answers: dict) -> list[tuple[int, str]]:
    """(score, text) of each answer; the answers' fields are parallel lists."""
    texts, scores = answers.get("text"), answers.get("score")
    if not isinstance(texts, list) or not isinstance(scores, list) or len(texts) != len(scores):
        raise Malformed(WRONG_TYPE, "answers: 'text' and 'score' must be lists of one length")
    if not all(isinstance(text, str) for text in texts):
        raise Malformed(WRONG_TYPE, "answers: 'text' must be a list of strings")
    if not all(isinstance(score, int) and not isinstance(score, bool) for score in scores):
        raise Malformed(WRONG_TYPE, "answers: 'score' must be a list of integers")
    return list(zip(scores, texts))
