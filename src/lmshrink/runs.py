"""Output folders: refuse to clobber another run, and appear only when complete.

A workflow writes into a hidden staging folder beside `--out` and renames it into place
at the end, so a crash or an error never leaves a half-written model, and a previous run
is replaced only once the new one is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmshrink.errors import ConfigError, RunFolderError


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
    """Yield a staging folder; on success it atomically becomes `out`, else it is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(stage, out)
    shutil.rmtree(old, ignore_errors=True)


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
