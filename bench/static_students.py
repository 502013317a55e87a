"""Static students on SST-2: what a hashed bigram table and a hidden layer add to the mean of
token vectors, on the shrink search's own training set (issue 14's static-student target).

    python bench/shrink.py              # first: the search, its teacher cache, its static run
    python bench/static_students.py     # the variants, then one interleaved timing

Every variant is the shrink search's static student (`static-embedding_dim256`: its data,
transfer set, teacher cache, stages and seed, read from that run's config.yaml) with one
or two student settings changed; each trains in its own resumable run folder under
$LMSHRINK_BENCH_RUNS/static-students (one thread, so rows may run side by side) and is kept
when the script runs again. Each is exported to ONNX (fp32, with the parity check) and all
are scored on dev and timed end to end (raw string in, label out) by one `lmshrink bench
--end-to-end` call, interleaved, one thread: run the timing alone.

Choices use dev only (SST-2 has no public test labels); the variants are settings a user of
fastText or a deep averaging network would try first, not a search over dev.

Results: bench/results/static_students.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from common import glue_dir, parse_names, run_logged, runs_dir, today, write_results
from shrink import PLANS, search_dir

from lmshrink.measure.machine import machine_info

MAX_LENGTH = PLANS["sst2"].max_length  # as the shrink search ran
BASE = "static-embedding_dim256"  # the shrink search's static candidate (its default grid)
# name -> the student settings changed from the search's static student
VARIANTS: dict[str, dict[str, Any]] = {
    "static-256": {},
    "static-256-bigrams": {"bigram_buckets": 16384},
    "static-256-hidden256": {"hidden_size": 256},
    "static-256-hidden256-bigrams": {"hidden_size": 256, "bigram_buckets": 16384},
}
SPEED_EXAMPLES = 200
ROUNDS = 5


def work_dir() -> Path:
    return runs_dir() / "static-students"


def base_run() -> Path:
    run = search_dir("sst2") / "candidates" / BASE / "run"
    if not (run / "report.json").is_file():
        raise SystemExit(f"error: no finished static run in {run}; run bench/shrink.py first.")
    return run


def train(name: str, changes: dict[str, Any]) -> Path:
    """The run folder of variant `name`: the search's own run when nothing changes, else a
    distill run with the search's config and `changes` to its student (resumed if killed)."""
    base = base_run()
    if not changes:
        return base
    run = work_dir() / name
    if (run / "report.json").is_file():
        return run
    cfg = yaml.safe_load((base / "config.yaml").read_text())
    cfg["student"] = {**cfg["student"], **changes}
    cfg["out"] = str(run)
    cfg["threads"] = 1
    cfg["progress"] = False
    cfg["resume"] = (run / "config.yaml").is_file()
    cfg["overwrite"] = not cfg["resume"]
    config = work_dir() / f"{name}.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    print(f"[static] training {name}", flush=True)
    cmd = [sys.executable, "-m", "lmshrink", "distill", "--config", str(config)]
    if run_logged(cmd, work_dir() / f"{name}-log.txt") != 0:
        raise SystemExit(f"error: training {name} failed; see {work_dir() / f'{name}-log.txt'}")
    return run


def export(name: str, run: Path) -> Path:
    """`run`'s model as an ONNX fp32 folder (kept when present)."""
    out = work_dir() / "onnx" / name
    if not (out / "model.onnx").is_file():
        cmd = [
            sys.executable, "-m", "lmshrink", "export", str(run / "model"), "--out", str(out),
            "--task", "sst2", "--data-dir", str(glue_dir()), "--max-length", str(MAX_LENGTH),
            "--overwrite", "--no-progress",
        ]  # fmt: skip
        if run_logged(cmd, work_dir() / f"{name}-log.txt") != 0:
            raise SystemExit(f"error: exporting {name} failed; see {work_dir()}")
    return out


def time_and_score(folders: dict[str, Path]) -> dict[str, Any]:
    """One `lmshrink bench --end-to-end` over every folder, interleaved, one thread."""
    result = work_dir() / "bench.json"
    cmd = [
        sys.executable, "-m", "lmshrink", "bench", *map(str, folders.values()),
        "--task", "sst2", "--data-dir", str(glue_dir()), "--max-length", str(MAX_LENGTH),
        "--end-to-end", "--threads", "1", "--speed-examples", str(SPEED_EXAMPLES),
        "--rounds", str(ROUNDS), "--speed-batch-sizes", "1,32", "--no-progress",
        "--json", str(result),
    ]  # fmt: skip
    if run_logged(cmd, work_dir() / "bench-log.txt") != 0:
        raise SystemExit(f"error: the timing failed; see {work_dir() / 'bench-log.txt'}")
    return json.loads(result.read_text())


def rows(folders: dict[str, Path], bench: dict[str, Any]) -> list[dict[str, Any]]:
    by_path = {m["path"]: m for m in bench["models"]}
    table = []
    for name, folder in folders.items():
        m = by_path[str(folder.resolve())]
        table.append(
            {
                "name": name,
                "changes": VARIANTS[name],
                "dev_accuracy": round(100 * m["score"], 2),
                "parameters": m["parameters"],
                "size_bytes": m["size_bytes"],
                "p50_ms": m["latency_ms"]["p50"],
                "p95_ms": m["latency_ms"]["p95"],
                "per_second_b32": m["per_second"]["32"],
            }
        )
    return table


def markdown(table: list[dict[str, Any]], machine: dict[str, Any], seconds: float) -> str:
    base = table[0]
    lines = [
        "# Static students on SST-2 (bench/static_students.py)",
        "",
        f"The shrink search's static student ({BASE}: the mean of 256-wide token vectors "
        "from the teacher's states, a linear head; XtremeDistil's stages on the teacher's "
        "labels of SST-2 train plus one augmented copy of each, then the gold labels) and the "
        "same student with one or two settings changed, trained on the same teacher cache with the "
        "same seed. Dev accuracy of the ONNX fp32 export; latency end to end (raw string in, "
        f"label out), batch 1, p50 over {ROUNDS} rounds of {SPEED_EXAMPLES} dev sentences, "
        f"interleaved, 1 thread. Machine: {machine.get('cpu')}, {machine.get('cores')} cores. "
        f"Date: {today()}.",
        "",
        "| student | changed | dev acc | vs static-256 | params | e2e b=1 p50 ms | p95 ms | "
        "b=32 /s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        changed = ", ".join(f"{k} {v}" for k, v in r["changes"].items()) or "-"
        lines.append(
            f"| {r['name']} | {changed} | {r['dev_accuracy']:.2f} | "
            f"{r['dev_accuracy'] - base['dev_accuracy']:+.2f} | {r['parameters'] / 1e6:.2f}M | "
            f"{r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['per_second_b32']:,.0f} |"
        )
    lines += ["", f"Wall time of this script's last run: {seconds / 60:.0f} min.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default=",".join(VARIANTS), help="variants to train")
    parser.add_argument("--no-timing", action="store_true", help="train only (side by side)")
    args = parser.parse_args(argv)
    names = parse_names(args.rows, list(VARIANTS), "row")
    start = time.perf_counter()
    runs = {name: train(name, VARIANTS[name]) for name in names}
    if args.no_timing:
        return 0
    folders = {name: export(name, run) for name, run in runs.items()}
    bench = time_and_score(folders)
    table = rows(folders, bench)
    machine = machine_info()
    payload = {"date": today(), "machine": machine, "base": BASE, "rows": table, "bench": bench}
    text = markdown(table, machine, time.perf_counter() - start)
    write_results("static_students", payload, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
