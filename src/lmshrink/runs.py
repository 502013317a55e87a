"""Output folders: refuse to clobber another run, and appear only when complete.

A workflow writes into a hidden staging folder beside `--out` and renames it into place
at the end, so a crash or an error never leaves a half-written model, and a previous run
is replaced only once the new one is complete. A folder that cannot be written (disk full,
read-only, no permission) is a one-line error naming it, and the previous run stays.

While a command writes `--out`, it holds a lock file beside it, `<out>.lock` (`out_lock`;
the CLI takes it around every command that has an `--out`), so that two runs never share
an output folder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmshrink.errors import ConfigError, RunFolderError

# errno -> what a user is told when writing fails with it
_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
WRITE_ERRORS = {
    errno.ENOSPC: "the disk is full",
    _FULL[1]: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}
# the errors that only writing meets (reading a file may also be denied permission)
DISK_ERRORS = (*_FULL, errno.EROFS)


def check_out(out: str, overwrite: bool) -> Path:
    """Validate `--out` before any work: it must be new, empty, or `--overwrite` given."""
    if not out:
        raise ConfigError("no output folder given; pass --out.")
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{path}: --out is an existing file; choose a folder path.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise RunFolderError(
            f"{path}: --out already holds another run; choose another folder "
            "or pass --overwrite to replace it."
        )
    return path


@contextlib.contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """Yield a staging folder; on success it atomically becomes `out`, else it is removed
    and `out` stays as it was. A disk that is full or read-only, or a folder without write
    permission, is a RunFolderError naming `out` and the fix."""
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
    except OSError as exc:
        raise cannot_write(out, exc) from None
    try:
        yield stage
    except BaseException as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in DISK_ERRORS:
            raise cannot_write(out, exc) from None
        raise
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    try:
        if out.exists():
            os.replace(out, old)
        try:
            os.replace(stage, out)
        except OSError:
            if old.exists():
                os.replace(old, out)  # the previous output comes back
            raise
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise cannot_write(out, exc) from None
    shutil.rmtree(old, ignore_errors=True)


def cannot_write(path: Path, exc: OSError, output: bool = True) -> RunFolderError:
    """The error for an OSError (`WRITE_ERRORS`) met writing `path`; `output`: `path` is the
    output folder, which the error says is left as it was."""
    why = WRITE_ERRORS.get(exc.errno or 0) or exc.strerror or str(exc)
    fix = (
        "free some disk space or choose another --out"
        if exc.errno in _FULL
        else "choose a folder you can write to as --out"
    )
    kept = f"the previous {path} is unchanged" if path.exists() else "nothing was written"
    return RunFolderError(
        f"{path}: cannot be written ({why}); {fix}; {kept}."
        if output
        else f"{path}: cannot be written ({why}); {fix}."
    )


# --- the lock on --out ----------------------------------------------------------------------


def lock_path(out: Path) -> Path:
    """The lock file of the output folder `out`: `<out>.lock`, beside it."""
    full = Path(os.path.abspath(out))
    return full.parent / f"{full.name}.lock"


@contextlib.contextmanager
def out_lock(out: str | Path) -> Iterator[Path | None]:
    """Hold the lock of the output folder `out` (`<out>.lock`: pid, host, start time) while
    a command writes it; another run pointed at `out` meanwhile fails with a RunFolderError
    naming the holder. The lock goes when the block ends, by an error too. A lock left by a
    run that is gone (its pid no longer runs on this host: a kill -9, a crash) is taken over,
    with a warning. No lock for an empty `out` (the command asks for one), nor in the
    processes after the first of a multi-process launch (accelerate, torchrun)."""
    rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))
    if not str(out) or rank not in ("0", ""):
        yield None
        return
    path = Path(out).expanduser()
    lock = lock_path(path)
    made = [p for p in (lock.parent, *lock.parent.parents) if not p.exists()]  # deepest first
    mine = _claim(path, lock)
    _HELD.add(lock)
    try:
        yield lock
    finally:
        _HELD.discard(lock)
        with contextlib.suppress(OSError):
            if lock.read_text() == mine:
                lock.unlink()
            for folder in made:  # the folders made for the lock, when nothing else went in
                folder.rmdir()


_HELD: set[Path] = set()  # the locks this process holds


def _claim(out: Path, lock: Path) -> str:
    """Create `lock` (atomically: O_CREAT | O_EXCL) holding this process; returns its text."""
    record = {"pid": os.getpid(), "host": socket.gethostname()}
    record["started"] = time.strftime("%Y-%m-%d %H:%M:%S")
    mine = json.dumps(record)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot_write(out, exc) from None
    for _ in range(5):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if lock.is_dir():
                raise RunFolderError(
                    f"{out}: cannot be locked ({lock} is a folder); move it or choose another "
                    "--out."
                ) from None
            _check_holder(out, lock)  # the run is gone (or the lock just went): again
            continue
        except OSError as exc:
            raise cannot_write(out, exc) from None
        try:
            with os.fdopen(fd, "w") as file:
                file.write(mine)
        except OSError as exc:
            lock.unlink(missing_ok=True)
            raise cannot_write(out, exc) from None
        return mine
    raise RunFolderError(f"{out}: its lock {lock} keeps changing; wait, then try again.")


def _check_holder(out: Path, lock: Path) -> None:
    """For an existing `lock`: raise the "in use" error if its run is alive; remove it (and
    warn) if that run is gone."""
    try:
        text = lock.read_text(errors="replace")
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    try:
        holder = json.loads(text)
        pid, host = int(holder["pid"]), str(holder["host"])
        started = str(holder.get("started", "?"))
    except (ValueError, KeyError, TypeError):  # being written right now, or damaged
        if age < 10:
            time.sleep(0.2)
            return
        pid, host, started = 0, "?", "?"
    who = f"pid {pid} on host {host}, started {started}"
    here = host == socket.gethostname()
    # this process's pid in a lock it does not hold: an earlier process's (a container
    # restarted with the same pids)
    mine = pid == os.getpid() and lock not in _HELD
    if host != "?" and (not here or (not mine and _runs(pid))):
        gone = "" if here else f"; if that run is gone, delete {lock}"
        raise RunFolderError(
            f"{out} is in use by another lmshrink run ({who}); wait for it or choose "
            f"another --out{gone}"
        )
    aside = lock.with_name(f".{lock.name}.stale-{os.getpid()}")
    try:
        os.replace(lock, aside)
    except FileNotFoundError:
        return
    if aside.read_text(errors="replace") != text:  # another run took it over first
        os.replace(aside, lock)
        return
    aside.unlink()
    print(
        f"warning: {out}: taking over the lock of a run that is gone ({who}).",
        file=sys.stderr,
        flush=True,
    )


def _runs(pid: int) -> bool:
    """Whether process `pid` runs on this machine."""
    if pid <= 0 or os.name == "nt":  # os.kill(pid, 0) would stop a process on Windows
        return pid > 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file so that readers see the old or the new content, never a part."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def apply_threads(threads: int) -> None:
    """Set PyTorch's intra-op thread count when a command's `threads` asks for one (> 0);
    0 leaves PyTorch's default (all cores)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def write_json_file(path: Path, result: dict[str, Any]) -> None:
    """Write `--json` atomically; a path that cannot be written is an error naming the fix."""
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "is a folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(result, indent=2) + "\n")
    except OSError as exc:
        raise ConfigError(
            f"--json {path}: cannot be written ({exc.strerror or exc}); pass a file path in a "
            "writable folder."
        ) from None
