"""Output folders (`lmshrink.runs`): the lock that keeps two runs out of one --out, and a
disk that is full or read-only, which is a one-line error that leaves the previous output."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import tiny_finetune_config

from lmshrink.cli import _commands, main
from lmshrink.config import OutputSettings
from lmshrink.errors import RunFolderError
from lmshrink.runs import lock_path, out_lock, staged_output

WRITERS = {"finetune", "distill", "prune", "export", "quantize", "report", "shrink"}
POSITIONAL = {"export", "quantize", "prune", "report", "shrink"}  # they take a model or runs
STARTED = "2024-05-01 09:30:00"


@pytest.fixture
def live_pid():
    """The pid of a process that runs (on this host) for the test's length."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child.pid
    child.kill()
    child.wait()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def hold(out, pid: int, host: str | None = None) -> str:
    """Write the lock of `out` as a run `pid` on `host` holds it; returns its text."""
    record = {"pid": pid, "host": host or socket.gethostname(), "started": STARTED}
    text = json.dumps(record)
    lock_path(out).write_text(text)
    return text


def in_use(out, pid: int, host: str | None = None) -> str:
    return (
        f"error: {out} is in use by another lmshrink run (pid {pid} on host "
        f"{host or socket.gethostname()}, started {STARTED}); wait for it or choose another --out"
    )


def test_every_command_that_writes_out_refuses_a_folder_another_run_holds(
    tmp_path, live_pid, capsys
):
    writers = {name for name, (cls, _, _) in _commands().items() if issubclass(cls, OutputSettings)}
    assert writers == WRITERS  # evaluate and bench write no folder
    out = tmp_path / "runs" / "x"
    out.parent.mkdir()
    held = hold(out, live_pid)
    for name in sorted(WRITERS):
        argv = [name, *(["model"] if name in POSITIONAL else []), "--out", str(out)]
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.strip() == in_use(out, live_pid), name  # before any work: no other error
        assert not out.exists() and lock_path(out).read_text() == held


def test_a_lock_from_another_host_cannot_be_checked_and_says_how_to_clear_it(tmp_path, capsys):
    out = tmp_path / "x"
    hold(out, 1, host="other-host")
    assert main(["report", "model", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == in_use(out, 1, "other-host") + f"; if that run is gone, delete {out}.lock"


def test_the_lock_holds_pid_host_and_time_and_goes_after_success_or_error(tmp_path, capsys):
    out = tmp_path / "new" / "x"
    with out_lock(str(out)) as lock:
        assert lock == tmp_path / "new" / "x.lock"
        record = json.loads(lock.read_text())
        assert (record["pid"], record["host"]) == (os.getpid(), socket.gethostname())
        refused = pytest.raises(RunFolderError, match=r"x is in use by another lmshrink run \(")
        with refused, out_lock(out):  # a second run in this process is refused too
            pass
        assert lock.is_file()
    assert not (tmp_path / "new").exists()  # the folder made for the lock went with it
    with pytest.raises(KeyError), out_lock(out):
        raise KeyError("a failing command")
    assert not lock_path(out).exists()
    # a command that fails (no such model) leaves no lock behind
    assert main(["export", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "model folder does not exist" in capsys.readouterr().err
    assert not lock_path(out).exists() and not out.exists()


def test_a_lock_whose_run_is_gone_is_taken_over_with_a_warning(tmp_path, capsys):
    out = tmp_path / "x"
    for pid in (dead_pid(), os.getpid()):  # this pid, not held here: an earlier process's
        hold(out, pid)
        with out_lock(out) as lock:
            assert json.loads(lock.read_text())["pid"] == os.getpid()
        err = capsys.readouterr().err
        assert err == (
            f"warning: {out}: taking over the lock of a run that is gone (pid {pid} on host "
            f"{socket.gethostname()}, started {STARTED}).\n"
        )
        assert not lock_path(out).exists()
    lock_path(out).write_text("")  # damaged (not being written: it is old)
    os.utime(lock_path(out), (0, 0))
    with out_lock(out):
        pass
    assert "taking over the lock of a run that is gone (pid 0 on host ?" in capsys.readouterr().err


def test_only_the_first_process_of_a_launch_takes_the_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with out_lock(tmp_path / "x") as lock:
        assert lock is None and not lock_path(tmp_path / "x").exists()


def test_a_full_disk_while_staging_leaves_the_previous_output(tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    (out / "model.txt").write_text("previous")
    with pytest.raises(RunFolderError) as error, staged_output(out) as stage:
        (stage / "model.txt").write_text("new")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(stage / "big"))
    assert str(error.value) == (
        f"{out}: cannot be written (the disk is full); free some disk space or choose another "
        f"--out; the previous {out} is unchanged."
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # no staging folder left
    assert (out / "model.txt").read_text() == "previous"


def test_a_failed_rename_puts_the_previous_output_back(tmp_path, monkeypatch):
    out = tmp_path / "x"
    out.mkdir()
    (out / "model.txt").write_text("previous")
    real = os.replace

    def replace(src, dst):
        if ".partial-" in str(src):  # the staged folder moving into place
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))
        real(src, dst)

    monkeypatch.setattr("lmshrink.runs.os.replace", replace)
    refused = pytest.raises(RunFolderError, match=r"\(the file system is read-only\); choose")
    with refused, staged_output(out) as stage:
        (stage / "model.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
    assert (out / "model.txt").read_text() == "previous"


def test_a_read_only_parent_folder_is_a_one_line_error(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder; see the ENOSPC tests")
    parent = tmp_path / "ro"
    (parent / "x").mkdir(parents=True)
    (parent / "x" / "model.txt").write_text("previous")
    parent.chmod(0o555)
    try:
        assert main(["report", "model", "--out", str(parent / "x")]) == 2
        assert capsys.readouterr().err == (
            f"error: {parent / 'x'}: cannot be written (permission denied); choose a folder you "
            f"can write to as --out; the previous {parent / 'x'} is unchanged.\n"
        )
        with pytest.raises(RunFolderError, match="permission denied"), staged_output(parent / "x"):
            pass
    finally:
        parent.chmod(0o755)
    assert sorted(p.name for p in parent.iterdir()) == ["x"]
    assert (parent / "x" / "model.txt").read_text() == "previous"


def test_a_lock_that_cannot_be_written_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    def read_only(path, flags, mode=0o777):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr("lmshrink.runs.os.open", read_only)  # as a read-only disk would
    assert main(["report", "model", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'x'}: cannot be written (the file system is read-only); choose a "
        "folder you can write to as --out; nothing was written.\n"
    )


def test_a_finetune_whose_model_cannot_be_written_fails_cleanly_and_resumes(
    tiny_encoder, sst2_dir, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "teacher"
    out.mkdir()
    (out / "keep.txt").write_text("previous")
    cfg = tiny_finetune_config(tiny_encoder, sst2_dir, out, epochs=1)
    argv = [
        "finetune", "--model", cfg.model, "--task", "sst2", "--data-dir", sst2_dir,
        "--max-length", 32, "--epochs", 1, "--batch-size", 16, "--lr", 4e-3,
        "--no-progress", "--out", out, "--overwrite",
    ]  # fmt: skip

    def full(cfg, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("lmshrink.finetune.dump_yaml", full)
    assert main([str(a) for a in argv]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (  # after transformers' progress bars
        f"error: {out}: cannot be written (the disk is full); free some disk space or choose "
        f"another --out; the previous {out} is unchanged."
    )
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["glue", "teacher", "teacher.work"]
    monkeypatch.undo()
    # once there is room, --resume writes the trained model without training again
    assert main([str(a) for a in [*argv, "--resume"]]) == 0
    assert (out / "config.json").is_file() and not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["glue", "teacher"]
