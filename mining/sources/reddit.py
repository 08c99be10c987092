"""Reddit, as Pushshift dumps come (JSON lines, plain, .gz or .zst): (parent, reply) pairs.

Comments (``RC_*``: ``id, parent_id, body, score, ...``) reply to a comment
(``parent_id`` ``t1_...``) or to a submission (``t3_...``); submissions
(``RS_*``: ``id, title, selftext, ...``) may be read in the same run to pair
top-level comments with their post. Each comment is a candidate, joined with
its parent through a shuffle. E5's rules: bodies ``[deleted]``/``[removed]``,
score below 1 and bodies over 4096 characters make no pair, on either side.
"""

from mining.records import Drop
from mining.sources import register
from mining.sources.base import (
    JoiningReader, JoinPart, JsonLinesReader, optional_text, require_integer, require_object, require_text,
)
from schemas.reasons import BODY_TOO_LONG, DELETED, LOW_SCORE, PARENT_FILTERED, PARENT_MISSING

MAX_BODY_CHARS = 4096
REMOVED_BODIES = ("[deleted]", "[removed]")


_PARENT, _REPLY = "parent", "reply"


def comment_problem(body: str, score: int) -> str | None:
    """Why a comment may not be one side of a pair, if it may not."""
    if body.strip() in REMOVED_BODIES:
        return DELETED
    if score < 1:
        return LOW_SCORE
    if len(body) > MAX_BODY_CHARS:
        return BODY_TOO_LONG
    return None


@register
class RedditReader(JoiningReader, JsonLinesReader):
    kind = "reddit"
    task = "Given a Reddit comment, retrieve a reply to it"

    def parse(self, value, task, origin):
        require_object(value)
        post_id = require_text(value, "id")
        score = require_integer(value, "score", default=1)
        if "parent_id" not in value:
            title = require_text(value, "title")
            selftext = optional_text(value, "selftext")
            text = title if selftext.strip() in REMOVED_BODIES or not selftext.strip() else f"{title}\n{selftext}"
            problem = DELETED if title.strip() in REMOVED_BODIES else None
            part = {"text": text, "problem": problem, "lang": task.lang, "origin": origin}
            return JoinPart(f"t3_{post_id}", _PARENT, part)
        body = require_text(value, "body")
        parent_id = require_text(value, "parent_id")
        part = {"text": body, "problem": comment_problem(body, score), "lang": task.lang, "origin": origin}
        return [JoinPart(parent_id, _REPLY, part), JoinPart(f"t1_{post_id}", _PARENT, part)]

    def join(self, round_index, key, parts):
        parts = list(parts)
        # A dump may hold a post twice: the copy with the smallest origin stands, whatever the shuffle order.
        parent = min(
            (part.value for part in parts if part.role == _PARENT), key=lambda value: value["origin"], default=None
        )
        for part in parts:
            if part.role != _REPLY:
                continue
            reply = part.value
            record = self.pair(
                parent["text"] if parent else "", reply["text"],
                query_lang=reply["lang"], passage_lang=reply["lang"], origin=reply["origin"],
            )
            if reply["problem"]:
                yield Drop(record, reply["problem"])
            elif parent is None:
                yield Drop(record, PARENT_MISSING, key)
            elif parent["problem"]:
                yield Drop(record, PARENT_FILTERED, f"{key}: {parent['problem']}")
            else:
                yield record
