"""Fine-tune the packaged MiniLM-L6-H384 encoder as the teacher of each GLUE task.

    python bench/teachers.py                 # all five tasks, skipping finished ones
    python bench/teachers.py --tasks rte     # just one

The teachers are saved under ~/.cache/lmshrink/bench-runs/teachers/TASK (or
$LMSHRINK_BENCH_RUNS), where the later benchmarks look for them; they are not committed.
Results (dev metrics, wall time, settings, machine) go to bench/results/teachers.{json,md}.
A finished teacher is kept and skipped when the script runs again, and an unfinished one
resumes from its last checkpoint (`lmshrink finetune --resume`, every 200 steps), so the
script can be re-run after a kill.
"""

from __future__ import annotations

import argparse
import json
import sys

from common import RESULTS, glue_dir, teacher_dir, today, write_results

from lmshrink.config import DataConfig, TrainConfig
from lmshrink.finetune import FinetuneConfig, finetune
from lmshrink.measure.machine import machine_info
from lmshrink.models.loading import read_metadata

# Settings per task, chosen for the 2-core CPU budget (no tuning on dev beyond picking the
# best evaluation point of one run). SST-2 sentences are short, so 64 tokens truncate
# almost nothing; the pair tasks keep 128.
SETTINGS = {
    "sst2": dict(epochs=2, lr=5e-5, max_length=64, eval_every=700),
    "cola": dict(epochs=3, lr=5e-5, max_length=64, eval_every=0),
    "mrpc": dict(epochs=4, lr=8e-5, max_length=128, eval_every=0),
    "stsb": dict(epochs=3, lr=8e-5, max_length=128, eval_every=0),
    "rte": dict(epochs=4, lr=8e-5, max_length=128, eval_every=0),
}
BATCH_SIZE = 32
SEED = 42

# Published dev results of MiniLM-L6-H384 (Wang et al. 2020, task-agnostic distilled
# MiniLM fine-tuned per task), for orientation only: different checkpoint, tuned settings.
PUBLISHED = {"sst2": 91.0}


def train_teacher(task: str) -> dict:
    out = teacher_dir(task)
    meta = read_metadata(out)
    if meta:
        print(f"[{task}] kept the finished teacher in {out}", flush=True)
        return meta
    s = SETTINGS[task]
    resume = out.with_name(out.name + ".work").is_dir()  # a killed run's checkpoints
    cfg = FinetuneConfig(
        model="packaged:minilm",
        out=str(out),
        resume=resume,
        checkpoint_every=200,
        data=DataConfig(task=task, data_dir=str(glue_dir()), max_length=s["max_length"]),
        seed=SEED,
        progress=False,
        train=TrainConfig(
            epochs=s["epochs"], lr=s["lr"], batch_size=BATCH_SIZE, eval_every=s["eval_every"]
        ),
    )
    print(f"[{task}] {'resuming' if resume else 'fine-tuning'}: {s}", flush=True)
    meta = finetune(cfg)
    # Record the thread count beside the teacher: benchmarks may share this machine.
    import torch

    (out / "bench_threads.txt").write_text(str(torch.get_num_threads()))
    return meta


def row(task: str, meta: dict) -> dict:
    cfg = meta["config"]
    return {
        "task": task,
        "metrics": meta["dev"],
        "score": meta["score"],
        "train_examples": meta["train_examples"],
        "epochs": cfg["train"]["epochs"],
        "lr": cfg["train"]["lr"],
        "batch_size": cfg["train"]["batch_size"],
        "max_length": cfg["data"]["max_length"],
        "best_epoch": meta["best_epoch"],
        "train_seconds": meta["train_seconds"],
        "parameters": meta["parameters"],
        "published": PUBLISHED.get(task),
        "torch_threads": _threads(task),
    }


def _threads(task: str) -> int | None:
    """Threads the teacher was trained with (SST-2's run predates this record: it used 2)."""
    path = teacher_dir(task) / "bench_threads.txt"
    if path.is_file():
        return int(path.read_text())
    return 2 if task == "sst2" else None


def markdown(rows: list[dict], machine: dict) -> str:
    lines = [
        "# MiniLM-L6-H384 teachers (bench/teachers.py)",
        "",
        f"Packaged `all-MiniLM-L6-v2` encoder fine-tuned on each full GLUE train set; metrics "
        f"on the dev set, best evaluation point of one run (seed {SEED}). Machine: "
        f"{machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}. "
        f"Date: {today()}.",
        "",
        "| task | dev metric(s) | score | epochs | lr | max len | train rows | best epoch "
        "| train time (threads) | published MiniLM-L6 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mets = ", ".join(f"{k} {100 * v:.2f}" for k, v in r["metrics"].items())
        pub = f"{r['published']:.1f}" if r["published"] else "-"
        lines.append(
            f"| {r['task']} | {mets} | {100 * r['score']:.2f} | {r['epochs']:g} "
            f"| {r['lr']:g} | {r['max_length']} | {r['train_examples']:,} "
            f"| {r['best_epoch']:g} | {r['train_seconds'] / 60:.1f} min ({r['torch_threads']}) "
            f"| {pub} |"
        )
    return "\n".join(lines) + "\n"


def _committed_rows() -> list[dict]:
    path = RESULTS / "teachers.json"
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument(
        "--tasks", default=",".join(SETTINGS), help="comma-separated tasks (default: all five)"
    )
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    machine = machine_info()
    for task in tasks:
        train_teacher(task)
        # Rewrite the results after every teacher, from every finished teacher on disk; a
        # task whose teacher is not on this machine keeps its committed row.
        kept = {r["task"]: r for r in _committed_rows()}
        for t in SETTINGS:
            if read_metadata(teacher_dir(t)):
                kept[t] = row(t, read_metadata(teacher_dir(t)))
        rows = [kept[t] for t in SETTINGS if t in kept]
        write_results(
            "teachers",
            {
                "date": today(),
                "machine": machine,
                "seed": SEED,
                "batch_size": BATCH_SIZE,
                "settings": SETTINGS,
                "rows": rows,
            },
            markdown(rows, machine),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
