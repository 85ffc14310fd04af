"""A job's output as one text: every attempt's log in order, with a line between them.

A job that is retried runs again from its first byte into a log of its own per
attempt (<data_dir>/<node>/jobs/<id>/<attempt>/<rank>/output.log). Readers that want
"the job's output" (`gpuq logs`, `gpuq run`, `ray job logs`, the web page, REST
`logs?follow=true`) read one address space over all of them, so an offset means the
same to every reader and a follower that reconnects at the offset it reached gets the
rest, exactly once:

    attempt 1's bytes | BOUNDARY(2) | attempt 2's bytes | ... | gpuq's own words, if any

The attempts before the last have ended, so their sizes are fixed; the last grows
until the job ends. gpuq's words (why a runtime env could not be made: the job's
command never ran, so no log holds them) close the text.

Pure: sizes in, ranges out; head/requests.py reads the ranges from the nodes.
"""

from __future__ import annotations

from typing import NamedTuple


def boundary(attempt: int) -> bytes:
    """The line between attempt-1's output and attempt's."""
    return f"[gpuq] --- attempt {attempt} ---\n".encode()


class Segment(NamedTuple):
    """A part of the text: an attempt's log (`attempt`, its `size` once fixed, None while
    it may grow), or gpuq's own bytes (`attempt` None, `text`)."""

    attempt: int | None
    size: int | None
    text: bytes = b""

    @property
    def length(self) -> int | None:
        return len(self.text) if self.attempt is None else self.size


def segments(attempts: int, sizes: dict[int, int], last_size: int | None, said: bytes = b"") -> list[Segment]:
    """The text's parts for a job with `attempts` attempts: `sizes` of the ended ones,
    `last_size` of the last (None while it may grow), and gpuq's words `said`."""
    out: list[Segment] = []
    for a in range(1, attempts + 1):
        if a > 1:
            out.append(Segment(None, None, boundary(a)))
        out.append(Segment(a, last_size if a == attempts else sizes.get(a, 0)))
    if said:
        out.append(Segment(None, None, said))
    return out


def ranges(parts: list[Segment], offset: int, limit: int) -> list[tuple[Segment, int, int]]:
    """What to read for [offset, offset + limit): (segment, its local offset, how many
    bytes at most), in order. It stops at a part whose size is not fixed (what is there
    is read, nothing past it), and at `limit`."""
    out: list[tuple[Segment, int, int]] = []
    start = 0
    for part in parts:
        length = part.length
        if length is not None and offset >= start + length:
            start += length
            continue
        local = max(0, offset - start)
        room = limit - sum(n for _, _, n in out)
        if room <= 0:
            break
        out.append((part, local, room if length is None else min(room, length - local)))
        if length is None:
            break
        start += length
    return out


def total(parts: list[Segment]) -> int | None:
    """The text's length, if every part's is fixed."""
    lengths = [p.length for p in parts]
    return sum(n for n in lengths if n is not None) if None not in lengths else None


def complete_utf8(data: bytes) -> int:
    """How much of `data` ends on a character boundary: a multi-byte UTF-8 character
    cut by a read is left for the next read instead of shown as two broken ones."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:  # ASCII: the cut is clean
            return len(data)
        if byte >= 0xC0:  # a lead byte: is its character whole?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)  # not UTF-8 at all: nothing to wait for
