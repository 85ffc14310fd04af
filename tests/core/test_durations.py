import pytest

from orchestrator.core.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3600", 3600),
        (90, 90),
        ("30s", 30),
        ("90m", 5400),
        ("4h", 14400),
        ("2d", 172800),
        ("1h30m", 5400),
        ("1w", 604800),
        ("10:00", 600),  # Slurm MM:SS
        ("02:30:00", 9000),
        ("1-00:00:00", 86400),
        ("2-12", 216000),  # Slurm days-hours
    ],
)
def test_parse_duration_accepts_units_and_slurm_forms(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "4x", "-5", "1.5h", "h4"])
def test_parse_duration_rejects_nonsense_and_says_what_is_accepted(text):
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_format_duration_is_compact():
    assert [format_duration(s) for s in (5, 600, 3900, 93600)] == ["5s", "10m", "1h05m", "1d02h"]
