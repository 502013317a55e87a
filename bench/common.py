"""Shared helpers of the benchmark scripts: where data and trained models live, results I/O.

Benchmarks are resumable: each finished unit of work (a trained teacher, a results row) is
kept on disk and skipped when the script runs again, because long runs on a 2-core machine
outlive a single shell session.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
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


def run_logged(cmd: list[str], log: Path, cwd: Path | None = None) -> int:
    """Run `cmd` with its output (stdout and stderr) appended to `log` after a `$ cmd` line;
    returns its exit status. Benchmarks keep every step's output beside its run folder."""
    import subprocess

    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(map(str, cmd))}\n")
        out.flush()
        return subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT).returncode


def write_results(name: str, payload: dict[str, Any], markdown: str) -> None:
    """Write bench/results/NAME.json and NAME.md (atomically, so a kill leaves the old ones)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(payload, indent=2) + "\n"), (".md", markdown)):
        write_text_atomic(RESULTS / f"{name}{suffix}", text)


def write_figure(filename: str, figure: Any) -> Path:
    """Save a matplotlib Figure as bench/results/FILENAME (atomically, like write_results)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / filename
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    figure.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    return path


def parse_names(text: str, known: list[str], what: str) -> list[str]:
    """The comma-separated names of a --tasks or --rows option, each checked against `known`."""
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(
            f"error: unknown {what} {', '.join(unknown)}; choose from {', '.join(known)}."
        )
    return names


def today() -> str:
    return dt.date.today().isoformat()


def run_distill(cfg: Any, label: str) -> dict[str, Any]:
    """Run one benchmark row, a DistillConfig whose `out` is the row's run folder.

    A finished run (report.json present) is kept and its report returned. An unfinished run
    with the same settings resumes from its last checkpoint; a run with other settings (made
    by an older version of the script) starts over, keeping its fingerprint-keyed teacher
    cache.
    """
    from lmshrink.config import load_yaml
    from lmshrink.distill import DistillConfig, distill

    out = Path(cfg.out)
    saved = out / "config.yaml"
    old = _comparable(load_yaml(DistillConfig, saved)) if saved.is_file() else None
    new = _comparable(cfg)
    if (out / "report.json").is_file():
        changed = sorted(k for k in new if old is not None and old.get(k) != new[k])
        note = f" (its {', '.join(changed)} differ; delete {out} to rerun)" if changed else ""
        print(f"[{label}] kept the finished run{note}", flush=True)
        return json.loads((out / "report.json").read_text())
    same = old == new
    cfg.resume, cfg.overwrite = same, not same
    print(f"[{label}] " + ("resuming" if same else "starting"), flush=True)
    return distill(cfg)


def _comparable(cfg: Any) -> dict[str, Any]:
    """A run's settings without the flags that say how to start it."""
    from lmshrink.config import to_dict

    free = ("resume", "overwrite", "progress", "quiet")
    return {k: v for k, v in to_dict(cfg).items() if k not in free}


def reuse_teacher_cache(out: Path, others: list[Path]) -> None:
    """Start the run folder `out` with the teacher cache of the first of `others` (run
    folders) that has one, so that the teacher labels a transfer set only once per benchmark.
    The cache is keyed by a fingerprint of its inputs: a stale one is simply not used.
    Files are hard-linked where possible (the cache's shards are written once, never changed)."""
    if (out / "cache").exists():
        return

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    for other in others:
        cache = other / "cache"
        if other != out and cache.is_dir() and any(cache.iterdir()):
            out.mkdir(parents=True, exist_ok=True)
            shutil.copytree(cache, out / "cache", copy_function=link)
            return
