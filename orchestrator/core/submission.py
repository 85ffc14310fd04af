"""What a submission may carry besides a JobSpec, and the bounds on a request's other
inputs: array ranges, idempotency keys, log offsets. Checked before any work is done
or memory spent in proportion to the input, by the orchestrator and the API alike."""

from __future__ import annotations

from orchestrator.core.errors import InvalidSpec

MAX_ARRAY = 10_000
ARRAY_PREFIX = "arr"  # an array's id: never hex-first, so never the prefix of a job id
MAX_ARRAY_TEXT = 20_000  # characters of an "A-B,C,…" list: bounds the parse itself
MAX_KEY_CHARS = 200
MAX_LOG_OFFSET = 1 << 50  # a byte offset into a log; beyond any file a job writes


def check_key(key: object) -> None:
    """An idempotency key is stored with the job and loaded at every start: only text."""
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS or not key.isprintable():
        raise InvalidSpec([("idempotency_key", f"must be 1-{MAX_KEY_CHARS} printable characters")])


def parse_array(value: object) -> list[int] | None:
    """`array`: a count (10 -> 0..9), a range "A-B", or a list "1,3,5"; at most 10,000 jobs.
    Sizes are checked before any index is made, so a huge range costs nothing."""
    if value is None:
        return None
    help_ = f'must be a count, a range "0-9" or a list "1,3,5", of at most {MAX_ARRAY} jobs'
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidSpec([("array", help_)])
    if isinstance(value, int):
        if not 1 <= value <= MAX_ARRAY:
            raise InvalidSpec([("array", help_)])
        return list(range(value))
    if len(value) > MAX_ARRAY_TEXT:
        raise InvalidSpec([("array", help_)])
    spans = []
    try:
        for part in value.split(","):
            first, _, last = part.strip().partition("-")
            lo, hi = int(first), int(last) if last else int(first)
            if not 0 <= lo <= hi:
                raise ValueError
            spans.append((lo, hi))
    except ValueError:
        raise InvalidSpec([("array", help_)]) from None
    if sum(hi - lo + 1 for lo, hi in spans) > MAX_ARRAY:
        raise InvalidSpec([("array", help_)])
    indices = sorted(i for lo, hi in spans for i in range(lo, hi + 1))
    if len(set(indices)) != len(indices):
        raise InvalidSpec([("array", help_ + ", each index once")])
    return indices
