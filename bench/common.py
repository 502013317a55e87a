"""Shared helpers of the benchmark scripts: where data and trained models live, results I/O.

Benchmarks are resumable: each finished unit of work (a trained teacher, a results row) is
kept on disk and skipped when the script runs again, because long runs on a 2-core machine
outlive a single shell session.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from lmshrink.runs import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def glue_dir() -> Path:
    """The GLUE glue_data folder: $LMSHRINK_GLUE_DIR or ../shared/data/glue."""
    path = Path(os.environ.get("LMSHRINK_GLUE_DIR", ROOT.parent / "shared" / "data" / "glue"))
    if not path.is_dir():
        raise SystemExit(f"error: GLUE data folder {path} not found; set LMSHRINK_GLUE_DIR.")
    return path


def runs_dir() -> Path:
    """Where benchmarks keep trained models (not in git): $LMSHRINK_BENCH_RUNS, else
    ~/.cache/lmshrink/bench-runs, outside the checkout so that a fresh clone of the
    repository finds the teachers and caches that earlier runs trained."""
    default = Path.home() / ".cache" / "lmshrink" / "bench-runs"
    return Path(os.environ.get("LMSHRINK_BENCH_RUNS", default))


def teacher_dir(task: str) -> Path:
    """The fine-tuned MiniLM teacher for `task`, as bench/teachers.py saves it."""
    return runs_dir() / "teachers" / task


def write_results(name: str, payload: dict[str, Any], markdown: str) -> None:
    """Write bench/results/NAME.json and NAME.md (atomically, so a kill leaves the old ones)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(payload, indent=2) + "\n"), (".md", markdown)):
        write_text_atomic(RESULTS / f"{name}{suffix}", text)


def today() -> str:
    return dt.date.today().isoformat()
