"""A job's output as one text over its attempts (core/joblog.py): where an offset lands,
what is read for it, and where a read may end in UTF-8."""

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.core import joblog


def whole(files: list[bytes], said: bytes = b"") -> bytes:
    out = b""
    for a, data in enumerate(files, 1):
        out += (joblog.boundary(a) if a > 1 else b"") + data
    return out + said


def read_all(files: list[bytes], said: bytes, offset: int, limit: int, last_fixed: bool) -> bytes:
    sizes = {a: len(d) for a, d in enumerate(files, 1)}
    parts = joblog.segments(len(files), sizes, sizes[len(files)] if last_fixed else None, said)
    out = b""
    for part, local, most in joblog.ranges(parts, offset, limit):
        out += (
            part.text[local : local + most]
            if part.attempt is None
            else files[part.attempt - 1][local : local + most]
        )
    return out


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=5), st.binary(max_size=20), st.data())
def test_reading_from_any_offset_gives_the_whole_text_from_there(files, said, data):
    text = whole(files, said)
    offset = data.draw(st.integers(0, len(text)))
    limit = data.draw(st.integers(1, 64))
    assert read_all(files, said, offset, limit, last_fixed=True) == text[offset : offset + limit]


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=5), st.data())
def test_a_read_stops_at_the_attempt_still_writing(files, data):
    text = whole(files)  # gpuq's words come only after the job ended
    offset = data.draw(st.integers(0, len(text)))
    got = read_all(files, b"", offset, 1 << 20, last_fixed=False)
    assert got == text[offset:]  # what is there is read; nothing is made up past it


def test_the_text_has_a_length_only_when_every_part_is_fixed():
    assert joblog.total(joblog.segments(2, {1: 5}, None)) is None
    assert joblog.total(joblog.segments(2, {1: 5}, 3, b"x")) == 5 + len(joblog.boundary(2)) + 3 + 1
    assert joblog.segments(0, {}, None, b"setup failed\n") == [joblog.Segment(None, None, b"setup failed\n")]


@given(st.text(max_size=30), st.integers(0, 200))
def test_a_read_never_ends_inside_a_character(text, cut):
    data = text.encode()[:cut]
    end = joblog.complete_utf8(data)
    assert data[:end].decode("utf-8") == text.encode()[:end].decode("utf-8")  # decodes whole
    assert len(data) - end < 4
