"""The rows of what a run removed, as the run's JSON-lines files hold them.

A rejected sample (``rejected/<reason>.jsonl``) is a dropped pair's public fields
(``schemas.pairs``) plus why it was dropped and where it was read. A dead letter
(``dead_letter/*.jsonl``) is an input record that never became a pair.
"""

from schemas.pairs import SOURCE

# Both kinds: the named reason, and what about the record it concerns.
REASON = "reason"
DETAIL = "detail"
# A rejected sample's place in its input (a reader's file and line); it breaks ties between equal ids.
ORIGIN = "origin"
# A dead letter: the source whose reader met it, where, and (cut) what it read.
FILE = "file"
LINE = "line"
PAYLOAD = "payload"
DEAD_LETTER_FIELDS = (REASON, DETAIL, SOURCE, FILE, LINE, PAYLOAD)
