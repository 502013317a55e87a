"""Serving SST-2 on a CPU: the teacher and the best students, in PyTorch and ONNX Runtime,
fp32, dynamic int8 and (ONNX) static int8, timed side by side in one process.

    python bench/deploy.py                 # quantize what is missing, then time everything
    python bench/deploy.py --threads 2

It runs the product's own commands on the benchmark models: `lmshrink quantize` on each
(torch-int8, onnx-fp32, onnx-int8 and onnx-int8-static variants, parity-checked, each scored
on dev; the int8 ONNX ones with their batch invariance: the share of dev predictions that
change between batch 1 and batches of 32), then one
`lmshrink bench` over every model and variant (ratios against the eager fp32 teacher), then
`lmshrink report` for the Pareto plot. The models:

- teacher: MiniLM-L6 fine-tuned by bench/teachers.py;
- bilstm: the BiLSTM row of bench/sst2_transfer.py with the best SST-2 dev accuracy (full
  labels setting);
- transformer: the SST-2 row of bench/glue_students.py with the best dev score, if any ran;
- pruned: the SST-2 row of bench/pruning.py with the best dev score, if any ran.

Where one of those benchmarks has not run on this machine, its model is the best trained
candidate of that family in bench/shrink.py's SST-2 search (BiLSTM, layer-subset
transformer, pruned teacher), which shrink.md describes; deploy.md names every model's
folder.

"Best" is chosen on dev, the only split with labels. Quantized variants are kept under
~/.cache/lmshrink/bench-runs/deploy/NAME (reused when run again); the timing runs every time.
Results: bench/results/deploy.{json,md} and deploy.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from common import RESULTS, glue_dir, runs_dir, teacher_dir, today, write_results

from lmshrink.bench import BenchConfig, bench
from lmshrink.config import DataConfig
from lmshrink.measure.machine import machine_info
from lmshrink.models.loading import read_metadata
from lmshrink.quantize import RESULT_FILE, QuantizeConfig, quantize
from lmshrink.report import PLOT_FILE, ReportConfig
from lmshrink.report import report as report_runs

TASK = "sst2"
MAX_LENGTH = 64
VARIANTS = ("torch-int8", "onnx-fp32", "onnx-int8", "onnx-int8-static")
INT8_MODES = ["dynamic", "static"]  # ONNX Runtime's: onnx-int8/ and onnx-int8-static/
# Targets of the deployment issue.
BILSTM_VS_TEACHER = 30.0  # int8 ONNX BiLSTM vs eager teacher, batch 1
BILSTM_MAX_DROP = 0.005  # accuracy the int8 ONNX BiLSTM may lose to its fp32 self
TEACHER_INT8_SPEEDUP = 2.0  # int8 ONNX teacher vs eager teacher
PLOT_NAME = "deploy.png"


def deploy_dir() -> Path:
    return runs_dir() / "deploy"


def data_config() -> DataConfig:
    return DataConfig(task=TASK, data_dir=str(glue_dir()), max_length=MAX_LENGTH)


def best_run(folder: Path, prefix: str = "") -> Path | None:
    """The finished run under `folder` (name starting with `prefix`) with the best dev
    score in its report.json (distill reports or prune reports), or None."""
    best, best_score = None, float("-inf")
    for report in sorted(folder.glob(f"{prefix}*/report.json")) + sorted(
        folder.glob(f"{prefix}*/prune.json")
    ):
        data = json.loads(report.read_text())
        score = dev_score(data)
        if score is not None and score > best_score:
            best, best_score = report.parent, score
    return best


def dev_score(report: dict) -> float | None:
    """The student's dev score of a distill report (report.json), or the pruned model's of
    a prune report (prune.json)."""
    score = report.get("score") or {}
    return score.get("student", score.get("pruned"))


def candidates() -> dict[str, Path]:
    """The models to serve, by name (see the module doc); the teacher must exist."""
    teacher = teacher_dir(TASK)
    if not read_metadata(teacher):
        raise SystemExit(f"error: no SST-2 teacher in {teacher}; run bench/teachers.py first.")
    found = {"teacher": teacher}
    searches = {
        "bilstm": (runs_dir() / "sst2_transfer", "full-"),
        "transformer": (runs_dir() / "glue_students" / TASK, ""),
        "pruned": (runs_dir() / "pruning", f"{TASK}-"),
    }
    # what bench/shrink.py's search trained, when the benchmark above did not run here
    shrink_families = {"bilstm": "bilstm", "transformer": "layers", "pruned": "pruned"}
    for name, (folder, prefix) in searches.items():
        run = best_run(folder, prefix) if folder.is_dir() else None
        if run is None:
            run = best_search_candidate(shrink_families[name])
        if run is not None:
            found[name] = run / "model" if (run / "model").is_dir() else run
    return found


def best_search_candidate(family: str) -> Path | None:
    """The run folder of the trained `family` candidate of bench/shrink.py's SST-2 search
    (candidates/<name>/run/) with the best dev score, or None."""
    folder = runs_dir() / "shrink" / TASK / "candidates"
    return best_run(folder, f"{family}-*/run") if folder.is_dir() else None


def quantized(name: str, model: Path) -> dict:
    """`lmshrink quantize` on `model` into deploy/NAME, reused when it was made from the same
    model; returns its quantize.json."""
    out = deploy_dir() / name
    result_file = out / RESULT_FILE
    if result_file.is_file():
        result = json.loads(result_file.read_text())
        same = Path(result["model"]).resolve() == model.resolve()
        if same and set(VARIANTS) <= set(result["backends"]):  # made before static int8: again
            print(f"[{name}] kept the quantized variants in {out}", flush=True)
            return result
    print(f"[{name}] quantizing {model}", flush=True)
    return quantize(
        QuantizeConfig(
            model=str(model),
            out=str(out),
            overwrite=True,
            progress=False,
            int8_modes=INT8_MODES,
            data=data_config(),
        )
    )


def invariance(quantize_results: dict[str, dict]) -> dict[str, dict]:
    """Each model's int8 ONNX variants' batch invariance (from its quantize.json)."""
    return {
        name: {
            v: b["batch_invariance"] for v, b in q["backends"].items() if "batch_invariance" in b
        }
        for name, q in quantize_results.items()
    }


def markdown(
    result: dict, sources: dict[str, Path], checks: list[str], threads: int, moved: dict
) -> str:
    """deploy.md: the timing table, the int8 modes compared (`moved`: `invariance`), targets."""
    models = {m["name"]: m for m in result["models"]}
    lines = [
        "# Serving SST-2 on a CPU (bench/deploy.py)",
        "",
        f"One `lmshrink bench` run over every model and variant, interleaved in one process, "
        f"{threads} thread(s) for PyTorch and ONNX Runtime alike, {result['cpu']['model']}; "
        f"dev texts in dev order, dynamic padding, {result['settings']['speed_examples']} "
        f"examples per round, median of {result['settings']['rounds']} rounds. Ratios are "
        "against the teacher in PyTorch eager fp32 (>1 is faster / smaller). Int8 is dynamic "
        "(weights int8, activation scales computed per call over the batch), except "
        "onnx-int8-static (activation scales calibrated once on training examples). "
        f"Date: {result['date'][:10]}.",
        "",
        "| model | backend | dev acc | vs its fp32 | b=1 p50 ms | speedup b=1 (p50) "
        "| speedup b=32 | params | size |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in sources:
        fp32 = models[name]["score"]
        for variant in ("", *VARIANTS):
            m = models.get(f"{name}/{variant}" if variant else name)
            if m is None:
                continue
            ratio = m["ratio"]
            lines.append(
                f"| {name} | {variant or m['kind']} | {100 * m['score']:.2f} "
                f"| {100 * (m['score'] - fp32):+.2f} | {m['latency_ms']['p50']:.2f} "
                f"| {ratio['latency_p50']:.1f}x | {ratio['per_second']['32']:.1f}x "
                f"| {m['parameters'] / 1e6:.2f}M | {m['size_bytes'] / 2**20:.1f} MiB |"
            )
    lines += [
        "",
        "Int8 ONNX, dynamic against static: a served prediction should not depend on the "
        "sentences batched with it. Changed: the share of dev predictions at batch 1 that "
        "differ inside batches of 32 (dev order, real padding); max diff: the largest |logit "
        "difference| between the two.",
        "",
        "| model | int8 | dev acc | changed b=1 vs b=32 | max diff | b=1 p50 ms | speedup b=32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in sources:
        for variant, entry in moved.get(name, {}).items():
            m = models.get(f"{name}/{variant}")
            if m is None:
                continue
            lines.append(
                f"| {name} | {variant} | {100 * m['score']:.2f} | {100 * entry['changed']:.2f}% "
                f"| {entry['max_abs_diff']:.2g} | {m['latency_ms']['p50']:.2f} "
                f"| {m['ratio']['per_second']['32']:.1f}x |"
            )
    lines += ["", "Models:"]
    lines += [f"- {name}: `{path}`" for name, path in sources.items()]
    lines += ["", "Targets:", *[f"- {check}" for check in checks], "", f"![Pareto]({PLOT_NAME})"]
    return "\n".join(lines) + "\n"


def target_checks(result: dict) -> list[str]:
    """One line per target of the issue: the number reached and whether it meets it."""
    models = {m["name"]: m for m in result["models"]}
    checks = []
    bilstm, bilstm_int8 = models.get("bilstm"), models.get("bilstm/onnx-int8")
    if bilstm and bilstm_int8:
        speed = bilstm_int8["ratio"]["latency_p50"]
        drop = bilstm["score"] - bilstm_int8["score"]
        met = speed >= BILSTM_VS_TEACHER and drop <= BILSTM_MAX_DROP
        checks.append(
            f"int8 ONNX BiLSTM >= {BILSTM_VS_TEACHER:.0f}x faster than the eager teacher at "
            f"batch 1, losing <= {100 * BILSTM_MAX_DROP:.1f} points to its fp32 self: "
            f"{speed:.1f}x, dev accuracy {100 * -drop:+.2f} points against fp32 -> "
            f"{'met' if met else 'NOT met'}"
        )
    teacher_int8 = models.get("teacher/onnx-int8")
    if teacher_int8:
        speed = teacher_int8["ratio"]["latency_p50"]
        checks.append(
            f"int8 ONNX teacher >= {TEACHER_INT8_SPEEDUP:.0f}x faster than the eager teacher "
            f"at batch 1: {speed:.2f}x (batch 32: {teacher_int8['ratio']['per_second']['32']:.2f}x)"
            f" -> {'met' if speed >= TEACHER_INT8_SPEEDUP else 'NOT met'}"
        )
    return checks


def rewrite_from_json() -> None:
    """Write deploy.md again from deploy.json (after a change to the text), without timing."""
    saved = json.loads((RESULTS / "deploy.json").read_text())
    sources = {name: Path(path) for name, path in saved["models"].items()}
    saved["targets"] = target_checks(saved["bench"])
    moved = {name: q.get("batch_invariance", {}) for name, q in saved["quantize"].items()}
    write_results(
        "deploy",
        saved,
        markdown(saved["bench"], sources, saved["targets"], saved["threads"], moved),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--speed-examples", type=int, default=256)
    parser.add_argument(
        "--rewrite", action="store_true", help="only write deploy.md again from deploy.json"
    )
    args = parser.parse_args(argv)
    if args.rewrite:
        rewrite_from_json()
        return 0

    sources = candidates()
    quantize_results = {name: quantized(name, path) for name, path in sources.items()}
    # The bench names each model by its argument (a path); map them back to short names.
    short: dict[str, str] = {}
    for name, path in sources.items():
        short[str(path)] = name
        for variant in VARIANTS:
            if (deploy_dir() / name / variant).is_dir():
                short[str(deploy_dir() / name / variant)] = f"{name}/{variant}"
    bench_file = deploy_dir() / "bench.json"
    result = bench(
        BenchConfig(
            models=list(short),
            json=str(bench_file),
            threads=args.threads,
            rounds=args.rounds,
            speed_examples=args.speed_examples,
            data=data_config(),
        )
    )
    for m in result["models"]:
        m["name"] = short[m["name"]]
    checks = target_checks(result)
    moved = invariance(quantize_results)
    # `lmshrink report` draws the Pareto plot (dev accuracy against batch-1 latency) from the
    # run folders and the bench file.
    runs = [str(p.parent if p.name == "model" else p) for p in sources.values()]
    report_runs(
        ReportConfig(
            runs=runs, bench=[str(bench_file)], out=str(deploy_dir() / "report"), overwrite=True
        )
    )
    write_results(
        "deploy",
        {
            "date": today(),
            "machine": machine_info(),
            "threads": args.threads,
            "models": {name: str(path) for name, path in sources.items()},
            "quantize": {
                name: {
                    "best": q["best"],
                    "verdict": q["verdict"],
                    "parity": q["parity"],
                    "batch_invariance": moved[name],
                }
                for name, q in quantize_results.items()
            },
            "bench": result,
            "targets": checks,
        },
        markdown(result, sources, checks, args.threads, moved),
    )
    shutil.copyfile(deploy_dir() / "report" / PLOT_FILE, RESULTS / PLOT_NAME)
    print("\n".join(checks), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
