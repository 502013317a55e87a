"""Behaviour check across refactors: quick fixed-seed runs of every training command.

Runs, through the command line only (so the same script measures the code before and after a
restructuring), on small SST-2 and MRPC subsets with one thread:
finetune (SST-2 and MRPC teachers), the BiLSTM recipe's stages (shortened), a 2-layer
layer-wise (TinyBERT-style) distillation, pruning with recovery, and int8 quantization. Each
run's dev metrics are recorded under a label (e.g. `before`, `after`), so two labels can be
compared row by row:

    python bench/regression.py --label before
    python bench/regression.py --label after     # then read bench/results/regression.md

Finished rows are kept and skipped when the script runs again (`--redo` reruns a label).
Run folders go to $LMSHRINK_BENCH_RUNS/regression/LABEL (see bench/common.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from common import RESULTS as RESULTS_DIR
from common import ROOT, glue_dir, runs_dir

RESULTS = RESULTS_DIR / "regression.json"
REPORT = RESULTS_DIR / "regression.md"


# Small, fixed-seed subsets: the whole script takes about ten minutes on one core.
SST2 = ["--task", "sst2", "--max-train-samples", "1000", "--max-eval-samples", "300"]
MRPC = ["--task", "mrpc", "--max-train-samples", "600", "--max-eval-samples", "200"]
SHORT = ["--max-length", "48", "--no-progress"]


def bilstm_config(folder: Path) -> Path:
    """The BiLSTM recipe's student and stages, each stage 2 epochs in batches of 32 (the small
    subset would give a handful of steps at the recipe's batch size)."""
    recipe = yaml.safe_load((ROOT / "recipes" / "xtremedistil-bilstm.yaml").read_text())
    for stage in recipe["stages"]:
        stage.update(epochs=2, batch_size=32)
        stage.pop("eval_every", None)
    path = folder / "bilstm.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def layerwise_config(folder: Path) -> Path:
    """TinyBERT's losses on a 2-layer student made of teacher layers, one epoch per stage."""
    recipe = yaml.safe_load((ROOT / "recipes" / "tinybert.yaml").read_text())
    recipe["student"] = {"kind": "layers", "layers": 2}
    for stage in recipe["stages"]:
        stage["epochs"] = 1
    path = folder / "layerwise.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def rows(folder: Path, data: str) -> list[tuple[str, list[str], str]]:
    """(name, lmshrink arguments, result file relative to the run folder)."""
    sst2_teacher, mrpc_teacher = folder / "teacher-sst2", folder / "teacher-mrpc"
    finetune = ["finetune", "--model", "packaged:minilm", "--epochs", "3", "--lr", "1e-4"]
    finetune += ["--data-dir", data]
    return [
        (
            "finetune-sst2",
            [*finetune, *SST2, *SHORT, "--out", str(sst2_teacher)],
            "lmshrink.json",
        ),
        (
            "finetune-mrpc",
            [*finetune, *MRPC, *SHORT, "--out", str(mrpc_teacher)],
            "lmshrink.json",
        ),
        (
            "distill-bilstm-sst2",
            [
                "distill",
                "--config",
                str(bilstm_config(folder)),
                "--teacher",
                str(sst2_teacher),
                "--data-dir",
                data,
                *SST2,
                *SHORT,
                "--no-measure-speed",
                "--out",
                str(folder / "bilstm-sst2"),
            ],
            "report.json",
        ),
        (
            "distill-layerwise-2l-mrpc",
            [
                "distill",
                "--config",
                str(layerwise_config(folder)),
                "--teacher",
                str(mrpc_teacher),
                "--data-dir",
                data,
                *MRPC,
                *SHORT,
                "--no-measure-speed",
                "--out",
                str(folder / "layerwise-mrpc"),
            ],
            "report.json",
        ),
        (
            "prune-mrpc",
            [
                "prune",
                str(mrpc_teacher),
                "--target-params",
                "0.5",
                "--steps",
                "2",
                "--recovery-steps",
                "15",
                "--importance-examples",
                "128",
                "--speed-examples",
                "32",
                "--rounds",
                "1",
                "--data-dir",
                data,
                *MRPC,
                *SHORT,
                "--out",
                str(folder / "pruned-mrpc"),
            ],
            "prune.json",
        ),
        (
            "quantize-sst2",
            [
                "quantize",
                str(sst2_teacher),
                "--speed-examples",
                "32",
                "--rounds",
                "1",
                "--data-dir",
                data,
                *SST2,
                *SHORT,
                "--out",
                str(folder / "quantized-sst2"),
            ],
            "quantize.json",
        ),
    ]


def dev_numbers(name: str, result: dict[str, Any]) -> dict[str, float]:
    """The dev metric(s) a row is compared on, as percentages rounded to 2 decimals."""

    def pct(scores: dict[str, float]) -> dict[str, float]:
        return {k: round(100 * v, 2) for k, v in scores.items()}

    if name.startswith("finetune"):
        return pct(result["dev"])
    if name.startswith("distill"):
        return pct(result["dev"]["student"])
    if name.startswith("prune"):
        return pct(result["dev"]["pruned"])
    # quantize: the task score of each backend
    return {name: round(100 * b["score"], 2) for name, b in result["backends"].items()}


def run_row(name: str, args: list[str], out: Path, result_file: str) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lmshrink", *args, "--overwrite"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"error: {name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads((out / result_file).read_text())
    return {"dev": dev_numbers(name, result), "seconds": round(seconds, 1)}


def markdown(payload: dict[str, Any]) -> str:
    labels = list(payload["labels"])
    names = list(dict.fromkeys(n for lab in labels for n in payload["labels"][lab]["rows"]))
    lines = [
        "# Regression check: the same quick runs before and after a change",
        "",
        "Fixed-seed runs on small SST-2/MRPC subsets, one thread (`bench/regression.py`). "
        "Dev metrics in percent; wall time in seconds, taken while other work shared the "
        "machine (not a speed comparison).",
        "",
        "| row | " + " | ".join(labels) + " | same |",
        "|---|" + "---|" * (len(labels) + 1),
    ]
    for name in names:
        cells = []
        for lab in labels:
            row = payload["labels"][lab]["rows"].get(name)
            cells.append(
                ", ".join(f"{k} {v:.2f}" for k, v in row["dev"].items()) + f" ({row['seconds']} s)"
                if row
                else "-"
            )
        devs = [
            payload["labels"][lab]["rows"][name]["dev"]
            for lab in labels
            if name in payload["labels"][lab]["rows"]
        ]
        same = "yes" if len(devs) == len(labels) and all(d == devs[0] for d in devs) else "no"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {same} |")
    lines += ["", "Runs:"]
    for lab in labels:
        info = payload["labels"][lab]
        lines.append(f"- `{lab}`: commit {info['commit']}, {info['date']}, {info['machine']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="name of this run, e.g. before or after")
    parser.add_argument("--redo", action="store_true", help="rerun the label's finished rows")
    args = parser.parse_args()
    data = str(glue_dir())
    folder = runs_dir() / "regression" / args.label
    if args.redo:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    payload = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"labels": {}}
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    entry = payload["labels"].setdefault(args.label, {"rows": {}})
    if args.redo:
        entry["rows"] = {}
    entry.update(
        commit=commit,
        date=dt.date.today().isoformat(),
        machine=f"{platform.machine()}, {os.cpu_count()} cores, 1 thread",
    )
    for name, cmd, result_file in rows(folder, data):
        if name in entry["rows"]:
            print(f"{name}: kept from an earlier run", flush=True)
            continue
        out = Path(cmd[cmd.index("--out") + 1])
        entry["rows"][name] = run_row(name, cmd, out, result_file)
        print(f"{name}: {entry['rows'][name]}", flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
        REPORT.write_text(markdown(payload))


if __name__ == "__main__":
    main()
