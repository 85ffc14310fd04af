"""A job's files on its node: private modes, records written atomically, and reads that
never follow what a job may have left in its own folder (no Ray, no root needed)."""

import os

from orchestrator.node import jobfiles


def test_a_bundle_folder_and_its_log_are_private(tmp_path):
    folder = jobfiles.job_dir(str(tmp_path), "gmi-node-1", "j1", 1, 0)
    dfd, log = jobfiles.prepare(folder, None, group_read=False)
    os.write(log, b"hello\n")
    jobfiles.write_record(dfd, "exit.json", {"exit_code": 0, "reason": "exited"}, None)
    assert os.stat(folder).st_mode & 0o777 == 0o700
    assert os.stat(folder / "output.log").st_mode & 0o777 == 0o600
    assert os.stat(folder / "exit.json").st_mode & 0o777 == 0o600
    assert jobfiles.read_exit(folder)["exit_code"] == 0
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_a_site_may_make_logs_group_readable(tmp_path):
    folder = tmp_path / "b"
    _, log = jobfiles.prepare(folder, None, group_read=True)
    assert (
        os.stat(folder).st_mode & 0o777 == 0o750 and os.stat(folder / "output.log").st_mode & 0o777 == 0o640
    )


def test_a_link_in_the_folder_is_never_followed(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("admin token")
    folder = tmp_path / "b"
    jobfiles.prepare(folder, None, group_read=False)
    (folder / "output.log").unlink()
    (folder / "output.log").symlink_to(secret)
    (folder / "exit.json").symlink_to(secret)
    assert jobfiles.open_owned(folder, "output.log") is None
    assert jobfiles.read_exit(folder) is None


def test_an_exit_record_is_believed_only_as_far_as_it_makes_sense(tmp_path):
    folder = tmp_path / "b"
    dfd, _ = jobfiles.prepare(folder, None, group_read=False)
    jobfiles.write_record(
        dfd, "exit.json", {"exit_code": "0", "signal": True, "reason": None, "ended_at": "x"}, None
    )
    assert jobfiles.read_exit(folder) == {
        "exit_code": None,
        "signal": None,
        "reason": "exited",
        "message": "",
        "started_at": None,
        "ended_at": None,
    }
    (folder / "exit.json").write_text("[1, 2]")
    assert jobfiles.read_exit(folder) is None


def test_a_folder_that_exists_is_refused_never_adopted(tmp_path):
    import pytest

    folder = tmp_path / "b"
    folder.mkdir()
    os.mkfifo(folder / "output.log")
    with pytest.raises(jobfiles.FolderRefused, match="exists already"):
        jobfiles.prepare(folder, None, group_read=False)


def test_a_record_with_a_second_link_is_not_the_jobs(tmp_path):
    folder = tmp_path / "b"
    dfd, _ = jobfiles.prepare(folder, None, group_read=False)
    jobfiles.write_record(dfd, "exit.json", {"exit_code": 0, "reason": "exited"}, None)
    os.link(folder / "exit.json", tmp_path / "elsewhere")  # a hard link: the same file, named twice
    assert jobfiles.read_exit(folder) is None
