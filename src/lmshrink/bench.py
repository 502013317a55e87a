"""Measuring CPU inference speed honestly: real texts, dynamic padding, warm-up, and the
models interleaved in one process, so that a ratio between them is fair on a noisy machine.

`lmshrink bench` (`bench`) compares any mix of model folders on the task's dev texts: a Hugging
Face or distill-run folder (PyTorch eager, fp32), a `torch-int8/` folder from `lmshrink
quantize` (PyTorch dynamic int8) and an ONNX folder from `lmshrink export` or `quantize`
(ONNX Runtime, fp32 or int8 as written). Each model reads the texts through its own tokenizer.
The result holds batch-1 latency (p50, p95 per example), throughput at each batch size, the dev
metric, parameters, size, thread count, the CPU and its flags, and ratios to the first model.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from lmshrink.config import DataConfig, option
from lmshrink.errors import ConfigError, ModelError
from lmshrink.measure.speed import measure_speed

BENCH_FORMAT = "lmshrink-bench"


# --- lmshrink bench ---------------------------------------------------------------------


@dataclasses.dataclass
class BenchConfig:
    """`lmshrink bench`: time and score models side by side on the dev set, interleaved."""

    models: list[str] = option(
        [],
        "model folders to compare, the first being the reference of the ratios: a model or "
        "distill run folder (PyTorch fp32), a torch-int8/ folder (lmshrink quantize), an ONNX "
        "folder (lmshrink export or quantize).",
        positional=True,
    )
    json: str = option("", "also write every number to this JSON file.")
    batch_sizes: list[int] = option(
        [1, 32], "batch sizes timed (latency percentiles come from batch size 1)."
    )
    speed_examples: int = option(256, "dev examples per timing round at each batch size.")
    rounds: int = option(3, "timing rounds (models take turns; the median is kept).")
    threads: int = option(0, "intra-op threads for PyTorch and ONNX Runtime (0: torch's default).")
    batch_size: int = option(128, "evaluation batch size (the dev metric).")
    seed: int = option(42, "seed of the --max-eval-samples subset.")
    progress: bool = option(False, "show progress bars while scoring.")
    data: DataConfig = dataclasses.field(default_factory=DataConfig)


@dataclasses.dataclass
class BenchModel:
    """One model to bench: where it is, how it runs, and what it costs to store."""

    name: str
    path: str
    kind: str  # torch-fp32, torch-int8, onnx-fp32, onnx-int8
    model: Any
    tokenizer: Any
    parameters: int
    parameters_source: str
    size_bytes: int  # the weights as served (torch-int8: its int8 state serialized)
    disk_bytes: int  # weight files in the folder


def model_kind(arg: str) -> tuple[str, str]:
    """(kind, folder) of a model argument: "onnx", "torch-int8" or "torch-fp32" (a model
    folder, or a run folder holding model/); a clear error for anything else."""
    from lmshrink.export import MODEL_FILE
    from lmshrink.models.loading import resolve_model_source
    from lmshrink.quantize import QUANT_FILE, RESULT_FILE

    path = Path(arg).expanduser()
    if not path.exists():
        raise ModelError(
            f"{path}: model folder does not exist; pass a folder written by lmshrink "
            "finetune, distill, export or quantize."
        )
    if not path.is_dir():
        raise ModelError(f"{path}: is a file, not a model folder; pass the folder holding it.")
    if (path / MODEL_FILE).is_file():
        return "onnx", str(path)
    if (path / QUANT_FILE).is_file():
        return "torch-int8", str(path)
    if (path / RESULT_FILE).is_file():
        inside = ", ".join(str(p) for p in sorted(path.iterdir()) if p.is_dir())
        raise ModelError(
            f"{path}: is the output of lmshrink quantize, which holds several models; pass "
            f"the ones to bench: {inside}."
        )
    try:
        return "torch-fp32", resolve_model_source(str(path))
    except ModelError:
        raise ModelError(
            f"{path}: neither a model folder (config.json), a run folder (model/), an ONNX "
            f"folder (model.onnx) nor a torch-int8 folder (quantization.json); pass a folder "
            "written by lmshrink finetune, distill, export or quantize."
        ) from None


def saved_task(folder: str) -> str:
    """The task a model folder was made for (lmshrink.json, or export.json for ONNX), or ""."""
    from lmshrink.export import EXPORT_FILE
    from lmshrink.models.loading import read_metadata

    task = read_metadata(folder).get("task", "")
    export = Path(folder) / EXPORT_FILE
    if not task and export.is_file():
        task = json.loads(export.read_text()).get("task", "")
    return task


def resolve_bench_data(cfg: BenchConfig, folders: list[str]) -> DataConfig:
    """The data settings: --task if given, else the first model's saved task (with its
    custom-task settings); every model that names its task must name the same one."""
    from lmshrink.evaluate import with_saved_task

    data = cfg.data
    for folder in folders:
        if data.task:
            break
        data = with_saved_task(data, folder)
        if not data.task and saved_task(folder):
            data = dataclasses.replace(data, task=saved_task(folder))
    if not data.task:
        raise ConfigError("no task given and none saved with the models; pass --task.")
    for folder in folders:
        made_for = saved_task(folder)
        if made_for and made_for != data.task:
            raise ConfigError(
                f"{folder}: this model was made for task {made_for}, not {data.task}; bench "
                "models of one task together."
            )
    return data


def onnx_parameters(path: Path) -> int:
    """Elements of every initializer of an ONNX graph: its weights (int8 graphs: the int8
    weights plus their scales and zero points)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(int(np.prod(t.dims)) for t in graph.initializer)


def load_bench_model(name: str, kind: str, folder: str, task: Any) -> BenchModel:
    """Load one model to bench the way it is served (see `model_kind` for the kinds)."""
    from lmshrink.export import EXPORT_FILE, MODEL_FILE, OnnxClassifier
    from lmshrink.models.loading import (
        count_parameters,
        load_for_eval,
        load_tokenizer,
        size_on_disk,
    )
    from lmshrink.quantize import load_quantized, serialized_bytes

    disk = size_on_disk(folder)
    if kind == "onnx":
        meta = json.loads((Path(folder) / EXPORT_FILE).read_text())
        labels = meta.get("labels", [])
        if labels and len(labels) != task.num_labels:
            raise ModelError(
                f"{folder}: the ONNX model has {len(labels)} output(s) but task {task.name} "
                f"needs {task.num_labels}; bench it with the task it was exported for."
            )
        weights = "int8" if str(meta.get("weights", "")).startswith("int8") else "fp32"
        return BenchModel(
            name,
            folder,
            f"onnx-{weights}",
            OnnxClassifier.from_folder(folder),
            load_tokenizer(folder),
            onnx_parameters(Path(folder) / MODEL_FILE),
            "onnx initializers",
            disk,
            disk,
        )
    tokenizer, model = load_for_eval(folder, task)  # also checks the head against the task
    parameters = count_parameters(model)
    if kind == "torch-int8":
        model = load_quantized(folder)
        return BenchModel(
            name,
            folder,
            kind,
            model,
            tokenizer,
            parameters,
            "torch (before int8)",
            serialized_bytes(model),
            disk,
        )
    return BenchModel(name, folder, kind, model, tokenizer, parameters, "torch", disk, disk)


def check_bench_config(cfg: BenchConfig) -> None:
    if not cfg.models:
        raise ConfigError("no models given; pass one or more model folders.")
    if not cfg.batch_sizes or min(cfg.batch_sizes) < 1:
        raise ConfigError(f"--batch-sizes must list sizes of at least 1, got {cfg.batch_sizes}.")
    if cfg.speed_examples < 1 or cfg.rounds < 1 or cfg.batch_size < 1 or cfg.threads < 0:
        raise ConfigError(
            "--speed-examples, --rounds and --batch-size must be at least 1, --threads 0 or more."
        )


def unique_names(args: list[str]) -> list[str]:
    """The arguments as given, made unique (a model given twice gets #2)."""
    names: list[str] = []
    for arg in args:
        name, k = arg, 2
        while name in names:
            name, k = f"{arg}#{k}", k + 1
        names.append(name)
    return names


def bench(cfg: BenchConfig) -> dict[str, Any]:
    """Score every model on dev and time them interleaved in this process; returns (and with
    `--json` writes) the models' numbers, ratios to the first model, and the machine."""
    import torch

    from lmshrink import __version__
    from lmshrink.data.batching import encode
    from lmshrink.data.splits import load_eval_splits, resolve_task
    from lmshrink.evaluate import score_model
    from lmshrink.measure import metrics
    from lmshrink.measure.machine import cpu_flags, int8_flags, machine_info

    check_bench_config(cfg)
    kinds = [model_kind(arg) for arg in cfg.models]  # every argument checked before loading
    if any(kind == "onnx" for kind, _ in kinds):
        from lmshrink.export import require_onnx

        require_onnx()
    data = resolve_bench_data(cfg, [folder for _, folder in kinds])
    task = resolve_task(data)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    names = unique_names(cfg.models)
    loaded = [
        load_bench_model(name, kind, folder, task)
        for name, (kind, folder) in zip(names, kinds, strict=True)
    ]
    splits = load_eval_splits(task, "dev", data, cfg.seed)
    entries = []
    for m in loaded:
        scores = score_model(
            m.model, m.tokenizer, task, splits, data.max_length, cfg.batch_size, cfg.progress
        )
        entries.append({"scores": scores, "score": metrics.task_score(scores)})
    speed = measure_speed(
        {m.name: (m.model, encode(m.tokenizer, splits[0], data.max_length)) for m in loaded},
        batch_sizes=tuple(cfg.batch_sizes),
        limit={bs: cfg.speed_examples for bs in cfg.batch_sizes},
        rounds=cfg.rounds,
    )
    first = loaded[0].name
    models = []
    for m, entry in zip(loaded, entries, strict=True):
        latency = speed["latency_ms"][m.name].get("1")
        ref_latency = speed["latency_ms"][first].get("1")
        ref = models[0] if models else {"parameters": m.parameters, "size_bytes": m.size_bytes}
        ref_score = models[0]["score"] if models else entry["score"]
        models.append(
            {
                "name": m.name,
                "path": str(Path(m.path).resolve()),
                "kind": m.kind,
                "metrics": entry["scores"],
                "score": entry["score"],
                "parameters": m.parameters,
                "parameters_source": m.parameters_source,
                "size_bytes": m.size_bytes,
                "disk_bytes": m.disk_bytes,
                "latency_ms": {"p50": latency["p50"], "p95": latency["p95"]} if latency else None,
                "per_second": speed["per_second"][m.name],
                "ratio": {
                    "latency_p50": ref_latency["p50"] / latency["p50"] if latency else None,
                    "per_second": speed["ratio"][m.name],
                    "parameters": ref["parameters"] / max(1, m.parameters),
                    "size": ref["size_bytes"] / max(1, m.size_bytes),
                    "score": entry["score"] / ref_score if ref_score else None,
                },
            }
        )
    flags = int8_flags()
    result = {
        "format": BENCH_FORMAT,
        "lmshrink_version": __version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "task": task.name,
        "split": "dev",
        "dev": splits[0].source,
        "examples": sum(len(s) for s in splits),
        "reference": first,
        "settings": {
            "batch_sizes": list(cfg.batch_sizes),
            "speed_examples": cfg.speed_examples,
            "rounds": cfg.rounds,
            "max_length": data.max_length,
            "padding": "dynamic (each batch padded to its longest example), dev order",
        },
        "threads": torch.get_num_threads(),
        "cpu": {"model": machine_info()["cpu"], "int8_flags": flags, "flags": sorted(cpu_flags())},
        "machine": machine_info(),
        "models": models,
        "speed": speed,
    }
    if cfg.json:
        from lmshrink.runs import write_text_atomic

        out = Path(cfg.json).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    return result


def format_table(result: dict[str, Any]) -> str:
    """The bench result as an aligned plain-text table, with the machine below it."""
    sizes = [str(bs) for bs in result["settings"]["batch_sizes"]]
    header = ["model", "kind", "dev score", "b=1 p50 ms", "b=1 p95 ms"]
    header += [f"ex/s b={bs}" for bs in sizes] + ["params", "size"]
    rows = [header]
    for m in result["models"]:
        lat, ratio = m["latency_ms"], m["ratio"]
        cells = [m["name"], m["kind"], f"{100 * m['score']:.2f}"]
        if lat:
            cells += [f"{lat['p50']:.2f} ({ratio['latency_p50']:.2f}x)", f"{lat['p95']:.2f}"]
        else:
            cells += ["n/a", "n/a"]
        cells += [f"{m['per_second'][bs]:.0f} ({ratio['per_second'][bs]:.2f}x)" for bs in sizes]
        cells += [
            f"{human_count(m['parameters'])} ({ratio['parameters']:.1f}x)",
            f"{human_size(m['size_bytes'])} ({ratio['size']:.1f}x)",
        ]
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    flags = ", ".join(n for n, has in result["cpu"]["int8_flags"].items() if has) or "none"
    lines += [
        f"ratios (x) against {result['reference']}: speed (>1 is faster), parameters and size "
        "(>1 is smaller); latency is per example at batch size 1.",
        f"{result['task']} dev, {result['examples']} examples; cpu: {result['cpu']['model']} "
        f"({result['threads']} threads; int8 flags: {flags})",
    ]
    return "\n".join(lines)


def human_count(n: int) -> str:
    """A parameter count as 12.3M or 4.9K."""
    return f"{n / 1e6:.2f}M" if n >= 100_000 else f"{n / 1e3:.1f}K"


def human_size(n: int) -> str:
    """Bytes as MiB or KiB."""
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"
