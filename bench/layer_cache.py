"""What caching the teacher's per-token targets saves in a layer-wise (TinyBERT) stage.

    python bench/layer_cache.py                  # MRPC, all 3,668 train rows, 2 rounds
    python bench/layer_cache.py --task sst2 --rows 4096

The 3-layer student of bench/glue_students.py runs the intermediate stage of
recipes/tinybert.yaml (embedding, hidden-state and attention-score MSE) for one epoch over
the task's train inputs (--rows: a fixed-seed subset), once with the teacher's targets from
the fp16 layer cache (`labelling.layer_cache_gb` = 4) and once with the teacher running on
every batch (`layer_cache_gb` = 0), alternating, in fresh run folders. Reported: the
training time of each (the whole stage loop, including the dev evaluation that ends the
epoch, where the teacher runs online in both, so a short epoch understates the difference:
the default takes all of MRPC's train rows), their ratio, and what labelling the layer
targets cost once.
Results: bench/results/layer_cache.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from common import glue_dir, runs_dir, teacher_dir, today, write_results
from glue_students import INTERMEDIATE, STUDENTS, TINYBERT

from lmshrink.config import from_dict
from lmshrink.distill import DistillConfig, distill
from lmshrink.measure.machine import machine_info
from lmshrink.models.loading import read_metadata

SEED = 42


def run_once(task: str, rows: int, cached: bool, round_index: int) -> dict:
    name = f"{task}-{'cached' if cached else 'online'}-{round_index}"
    cfg = from_dict(
        DistillConfig,
        {
            "teacher": str(teacher_dir(task)),
            "out": str(runs_dir() / "layer_cache" / name),
            "overwrite": True,
            "seed": SEED,
            "progress": False,
            "measure_speed": False,
            "data": {
                "task": task,
                "data_dir": str(glue_dir()),
                "max_length": read_metadata(teacher_dir(task))["config"]["data"]["max_length"],
                "max_train_samples": rows,
            },
            "student": STUDENTS["3L"]["config"],
            "layer_map": TINYBERT["layer_map"],
            "labelling": {"layer_cache_gb": 4.0 if cached else 0.0},
            "stages": [{**INTERMEDIATE, "epochs": 1}],
        },
    )
    report = distill(cfg)
    return {
        "cached": cached,
        "round": round_index,
        "train_rows": report["labeled_examples"],
        "training_seconds": report["training_seconds"],
        "labelling_seconds": report["labelling_seconds"],
        "dev_minus_loss": report["history"][-1]["dev"],
    }


def markdown(payload: dict) -> str:
    m = payload["machine"]
    s = payload["summary"]
    lines = [
        "# Layer-wise stage with and without the teacher's cached targets (bench/layer_cache.py)",
        "",
        f"Task {payload['task']}, {payload['train_rows']:,} train rows (one epoch, batch "
        f"{INTERMEDIATE['batch_size']}), 3L student, the intermediate stage of "
        "recipes/tinybert.yaml; cached (fp16 layer targets) and online (teacher on every "
        f"batch) runs alternate, {payload['rounds']} rounds each. {m['cpu']} ({m['cores']} "
        f"cores), torch {m['torch']}, {payload['torch_threads']} thread(s); other work may "
        f"have shared the cores. Date: {payload['date']}.",
        "",
        "| teacher targets | training s (median) | labelling s (median) | dev loss |",
        "|---|---|---|---|",
    ]
    for key in ("cached", "online"):
        lines.append(
            f"| {key} | {s[key]['training_seconds']:.1f} | {s[key]['labelling_seconds']:.1f} "
            f"| {-s[key]['dev_minus_loss']:.4f} |"
        )
    lines += [
        "",
        f"The stage trains **{s['speedup']:.2f}x** faster on cached targets; labelling them "
        f"once cost {s['layer_labelling_seconds']:.1f} s more than labelling logits alone.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--rows", type=int, default=0, help="train rows (one epoch; 0: all)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    runs = []
    for round_index in range(args.rounds):
        for cached in (True, False):
            runs.append(run_once(args.task, args.rows, cached, round_index))
            print(runs[-1], flush=True)
    summary: dict = {}
    for key, cached in (("cached", True), ("online", False)):
        mine = [r for r in runs if r["cached"] == cached]
        summary[key] = {
            k: statistics.median(r[k] for r in mine)
            for k in ("training_seconds", "labelling_seconds", "dev_minus_loss")
        }
    summary["speedup"] = (
        summary["online"]["training_seconds"] / summary["cached"]["training_seconds"]
    )
    summary["layer_labelling_seconds"] = (
        summary["cached"]["labelling_seconds"] - summary["online"]["labelling_seconds"]
    )
    import torch

    payload = {
        "date": today(),
        "machine": machine_info(),
        "torch_threads": torch.get_num_threads(),
        "task": args.task,
        "train_rows": runs[0]["train_rows"],
        "rounds": args.rounds,
        "stage": {**INTERMEDIATE, "epochs": 1},
        "runs": runs,
        "summary": summary,
    }
    write_results("layer_cache", payload, markdown(payload))
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
