"""Unpacking a user's package (node/unpack.py): what a zip may not make, whoever
unpacks it. No cluster needed; the end-to-end path, as real users, is in
tests/api/test_trust.py."""

import io
import stat
import zipfile

import pytest

from orchestrator.node.unpack import UnpackError, unpack


def zipped(*entries: tuple[str, int, bytes]) -> io.BytesIO:
    """A zip whose entries carry the given Unix modes (type bits included)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, mode, data in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            z.writestr(info, data)
    buf.seek(0)
    return buf


def test_set_uid_set_gid_and_sticky_bits_are_dropped_and_permissions_kept(tmp_path):
    unpack(
        zipped(("tool", stat.S_IFREG | 0o6755, b"#!/bin/sh\n"), ("notes.txt", stat.S_IFREG | 0o1640, b"x")),
        tmp_path,
        1 << 20,
    )
    assert stat.S_IMODE((tmp_path / "tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "notes.txt").stat().st_mode) == 0o640


def test_a_link_inside_the_package_is_kept_and_one_leading_out_is_left_out(tmp_path):
    left_out = unpack(
        zipped(
            ("pkg/real.py", stat.S_IFREG | 0o644, b"X = 1\n"),
            ("pkg/alias.py", stat.S_IFLNK | 0o777, b"real.py"),
            ("up", stat.S_IFLNK | 0o777, b"../../etc/shadow"),
            ("abs", stat.S_IFLNK | 0o777, b"/etc/shadow"),
        ),
        tmp_path,
        1 << 20,
    )
    assert (tmp_path / "pkg" / "alias.py").read_text() == "X = 1\n"
    assert not (tmp_path / "up").is_symlink() and not (tmp_path / "abs").is_symlink()
    assert len(left_out) == 2 and all("outside the package" in line for line in left_out)


def test_no_file_is_written_through_a_link_the_package_makes(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    # The link comes first in the zip; links are made last, so the file lands in a real folder.
    unpack(
        zipped(("d", stat.S_IFLNK | 0o777, b"../outside"), ("d/x", stat.S_IFREG | 0o644, b"data")),
        dest,
        1 << 20,
    )
    assert not list(outside.iterdir())


def test_devices_and_fifos_are_left_out(tmp_path):
    left_out = unpack(
        zipped(
            ("dev", stat.S_IFCHR | 0o666, b""),
            ("pipe", stat.S_IFIFO | 0o644, b""),
            ("ok", stat.S_IFREG | 0o644, b"ok"),
        ),
        tmp_path,
        1 << 20,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]
    assert len(left_out) == 2


@pytest.mark.parametrize("name", ["/etc/cron.d/evil", "../escape", "a/../../escape", "C:/windows"])
def test_a_name_that_leaves_the_package_is_refused(tmp_path, name):
    with pytest.raises(UnpackError):
        unpack(zipped((name, stat.S_IFREG | 0o644, b"x")), tmp_path / "dest", 1 << 20)
    assert not (tmp_path / "escape").exists()


def test_what_a_package_unpacks_to_is_bounded_whatever_it_declares(tmp_path):
    with pytest.raises(UnpackError, match="more than 1000 bytes"):
        unpack(zipped(("big", stat.S_IFREG | 0o644, b"0" * 5000)), tmp_path, 1000)
