"""`lmshrink quantize`: dynamic int8 with PyTorch and with ONNX Runtime, measured on this CPU.

Dynamic int8 stores weights as int8 and quantizes activations on the fly at each call, so it
needs no calibration data. Whether it is faster than fp32 depends on the CPU (VNNI or AMX
int8 instructions) and on the model's size, so the command measures it instead of assuming
it. Four variants are scored on dev and timed in one process, interleaved
(`bench.measure_speed`):

- `torch-fp32`: the given model, the reference;
- `torch-int8`: `torch.ao.quantization.quantize_dynamic` on every `nn.Linear` and `nn.LSTM`
  (qint8 weights, per tensor);
- `onnx-fp32`: the model exported as `lmshrink export` does (parity-checked);
- `onnx-int8`: `onnxruntime.quantization.quantize_dynamic` on that export (int8 weights of
  MatMul, LSTM and Gather nodes, uint8 activations, per tensor).

The best backend is the fastest at the first timed batch size (1: serving latency) among those
whose dev score is at most `--max-drop` below the reference's; it may well be fp32, and then
the result says so with the CPU's int8-relevant instruction-set flags.

**Saved form of the PyTorch int8 model.** PyTorch's quantized modules keep packed weights
that only `torch.load` (a pickle) restores, and lmshrink never loads a pickle from a user's
folder. So `torch-int8/` holds the fp32 model as a stock `save_pretrained` folder (safetensors)
plus `quantization.json`, and `load_quantized(folder)` quantizes it on load. Dynamic
quantization of weights is a deterministic function of the fp32 weights, so the loaded model
is the one that was measured, bit for bit. The folder's size on disk is fp32's; the results
give the int8 model's serialized size (`size_bytes`) separately. Loading `torch-int8/` with
`from_pretrained` alone gives the fp32 model.

Output folder (`--out`):
  quantize.json   scores, speed, sizes, agreement with fp32, CPU flags, best backend, verdict
  torch-int8/     fp32 model folder + quantization.json (load with `load_quantized`)
  onnx-fp32/      model.onnx + tokenizer + export.json (as `lmshrink export` writes)
  onnx-int8/      model.onnx (int8) + tokenizer + export.json
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from lmshrink.config import DataConfig, option
from lmshrink.data.batching import Encoded, encode
from lmshrink.data.splits import load_eval_splits, resolve_task
from lmshrink.errors import ConfigError, ModelError
from lmshrink.evaluate import split_metrics, with_saved_task
from lmshrink.export import (
    EXPORT_FILE,
    MODEL_FILE,
    OnnxClassifier,
    OnnxSettings,
    check_settings,
    export_folder,
    require_onnx,
    save_serving_files,
    write_json,
)
from lmshrink.measure import metrics
from lmshrink.models.loading import (
    count_parameters,
    load_for_eval,
    resolve_model_source,
    size_on_disk,
)
from lmshrink.runs import check_out, staged_output

BACKENDS = ("torch", "onnx")
QUANT_FILE = "quantization.json"
RESULT_FILE = "quantize.json"
TORCH_FORMAT = "lmshrink-torch-dynamic-int8"
TORCH_MODULES = ("Linear", "LSTM")
REFERENCE = "torch-fp32"


@dataclasses.dataclass
class QuantizeConfig:
    """`lmshrink quantize`: dynamic int8 with PyTorch and ONNX Runtime, scored and timed."""

    model: str = option(
        "", "model folder (or run folder holding model/) to quantize.", positional=True
    )
    out: str = option("", "output folder: torch-int8/, onnx-fp32/, onnx-int8/, quantize.json.")
    overwrite: bool = option(False, "replace --out if it already holds another run.")
    backends: list[str] = option(list(BACKENDS), "int8 backends to build: torch, onnx.")
    max_drop: float = option(
        0.005,
        "a backend can be best only if its dev score is at most this much below fp32 "
        "PyTorch's (0.005: half a point).",
    )
    speed_batch_sizes: list[int] = option(
        [1, 32], "batch sizes timed; the first one decides the best backend."
    )
    speed_examples: int = option(256, "dev examples per timing round at each batch size.")
    rounds: int = option(3, "timing rounds (backends take turns; the median is kept).")
    batch_size: int = option(128, "evaluation batch size.")
    seed: int = option(42, "seed of the --max-eval-samples subset.")
    progress: bool = option(True, "show progress bars.")
    onnx: OnnxSettings = dataclasses.field(default_factory=OnnxSettings)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)


# --- PyTorch ----------------------------------------------------------------------------


def quantize_torch(model: Any, modules: tuple[str, ...] = TORCH_MODULES) -> Any:
    """A dynamic int8 copy of `model` (its `nn.Linear` / `nn.LSTM` weights in qint8); the
    fp32 model is left as it was."""
    import torch
    from torch import nn

    kinds = {getattr(nn, name) for name in modules}
    with warnings.catch_warnings():
        # torch.ao.quantization and quantized tensors are deprecated in favour of torchao,
        # which has no dynamic int8 LSTM; they still work in the torch versions lmshrink
        # supports (< 2.14).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor")
        quantized = torch.ao.quantization.quantize_dynamic(model, kinds, dtype=torch.qint8)
    return quantized.eval()


def save_torch_int8(source: str, model: Any, tokenizer: Any, folder: Path) -> None:
    """The fp32 model folder plus quantization.json, from which `load_quantized` rebuilds
    the int8 model (see the module doc for why no int8 weights are stored)."""
    import torch

    model.save_pretrained(folder)
    save_serving_files(source, tokenizer, folder)
    write_json(
        folder / QUANT_FILE,
        {
            "format": TORCH_FORMAT,
            "modules": list(TORCH_MODULES),
            "dtype": "qint8",
            "engine": torch.backends.quantized.engine,
            "torch": torch.__version__,
            "load": "lmshrink.quantize.load_quantized(folder): the weights here are fp32 and "
            "are quantized on load (deterministic); from_pretrained alone gives fp32.",
        },
    )


def load_quantized(folder: str | Path) -> Any:
    """The PyTorch int8 model of a `torch-int8/` folder that `lmshrink quantize` wrote (or of
    its `--out` folder): the fp32 weights (safetensors) quantized as they were when measured.
    Its tokenizer loads with `AutoTokenizer.from_pretrained(folder)`."""
    from transformers import AutoModelForSequenceClassification

    import lmshrink  # noqa: F401  (registers lmshrink's model classes with the Auto API)

    path = Path(folder)
    if (path / "torch-int8" / QUANT_FILE).is_file():
        path = path / "torch-int8"
    spec_file = path / QUANT_FILE
    if not spec_file.is_file():
        raise ModelError(
            f"{path}: no {QUANT_FILE}, so this is not a PyTorch int8 folder; pass the "
            "torch-int8/ folder that lmshrink quantize wrote."
        )
    spec = json.loads(spec_file.read_text())
    if spec.get("format") != TORCH_FORMAT:
        raise ModelError(
            f"{spec_file}: format {spec.get('format')!r} is not {TORCH_FORMAT!r}; quantize "
            "the model again with lmshrink quantize."
        )
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    return quantize_torch(model, tuple(spec["modules"]))


def serialized_bytes(model: Any) -> int:
    """Bytes of the model's weights as torch serializes them (written to memory only): the
    real int8 size of a dynamically quantized model."""
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


# --- ONNX Runtime -----------------------------------------------------------------------


def quantize_onnx(src: Path, dest: Path) -> None:
    """ONNX Runtime's dynamic int8 quantization of the graph `src` into `dest`."""
    require_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic logs a suggestion to pre-process (shape inference and graph
    # optimisation, which ONNX Runtime already does when it loads the model).
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(src, dest, weight_type=QuantType.QInt8)
    finally:
        logging.disable(previous)


def onnx_int8_folder(fp32_folder: Path, folder: Path) -> None:
    """onnx-int8/: the quantized graph beside the fp32 export's tokenizer and metadata."""
    folder.mkdir(parents=True)
    quantize_onnx(fp32_folder / MODEL_FILE, folder / MODEL_FILE)
    for item in fp32_folder.iterdir():
        if item.name not in (MODEL_FILE, EXPORT_FILE):
            shutil.copy2(item, folder / item.name)
    meta = json.loads((fp32_folder / EXPORT_FILE).read_text())
    del meta["parity"]  # that check was of the fp32 graph; quantize.json compares int8
    meta["weights"] = "int8 (onnxruntime.quantization.quantize_dynamic, QInt8 weights)"
    write_json(folder / EXPORT_FILE, meta)


# --- measuring --------------------------------------------------------------------------


def check_config(cfg: QuantizeConfig) -> None:
    unknown = sorted(set(cfg.backends) - set(BACKENDS))
    if unknown or not cfg.backends:
        raise ConfigError(
            f"--backends {','.join(cfg.backends)}: use one or both of {', '.join(BACKENDS)}."
        )
    if not cfg.speed_batch_sizes or min(cfg.speed_batch_sizes) < 1:
        raise ConfigError(
            f"--speed-batch-sizes must list batch sizes of at least 1, got {cfg.speed_batch_sizes}."
        )
    if cfg.speed_examples < 1 or cfg.rounds < 1 or cfg.batch_size < 1:
        raise ConfigError("--speed-examples, --rounds and --batch-size must be at least 1.")
    if not cfg.max_drop >= 0:
        raise ConfigError(f"--max-drop must be 0 or more, got {cfg.max_drop}.")
    if "onnx" in cfg.backends:
        check_settings(cfg.onnx)
        require_onnx()


def score_variant(
    model: Any, tokenizer: Any, task: Any, splits: list[Any], max_length: int, cfg: QuantizeConfig
) -> tuple[dict[str, float], np.ndarray]:
    """(metrics over the dev split and its companions, outputs [N, C] on the first split)."""
    from lmshrink.training.inference import predict

    scores: dict[str, float] = {}
    first: np.ndarray | None = None
    for split in splits:
        outputs = predict(model, encode(tokenizer, split, max_length), cfg.batch_size, cfg.progress)
        scores.update(split_metrics(task, outputs, split))
        first = outputs if first is None else first
    assert first is not None
    return scores, first


def agreement(reference: np.ndarray, outputs: np.ndarray, is_regression: bool) -> float:
    """Share of dev predictions equal to the reference's (regression: within 0.05)."""
    if is_regression:
        return float(np.mean(np.abs(reference[:, 0] - outputs[:, 0]) <= 0.05))
    return float(np.mean(reference.argmax(axis=1) == outputs.argmax(axis=1)))


def choose_best(result: dict[str, Any], max_drop: float) -> dict[str, str]:
    """The fastest backend at each timed batch size among those within `max_drop` of the
    reference's dev score."""
    floor = result["backends"][REFERENCE]["score"] - max_drop
    eligible = [n for n, b in result["backends"].items() if b["score"] >= floor - 1e-12]
    per_second = result["speed"]["per_second"]
    return {bs: max(eligible, key=lambda n: per_second[n][bs]) for bs in per_second[REFERENCE]}


def verdict(result: dict[str, Any], max_drop: float) -> str:
    """One or two sentences: which backend is best here, and, when fp32 wins, why int8 may
    not pay off on this CPU (its int8 instruction-set flags)."""
    bs = str(result["speed"]["batch_sizes"][0])
    best = result["best"][bs]
    backends = result["backends"]
    ratio = result["speed"]["ratio"][best][bs]
    score, reference = backends[best]["score"], backends[REFERENCE]["score"]
    head = (
        f"{best} is best on this CPU at batch {bs}: {ratio:.2f}x the speed of {REFERENCE}, "
        f"dev score {100 * score:.2f} vs {100 * reference:.2f}."
    )
    if best.endswith("int8"):
        return head
    per_second = result["speed"]["per_second"]
    faster = [
        n for n in backends if n.endswith("int8") and per_second[n][bs] > per_second[best][bs]
    ]
    if faster:
        return (
            f"{head} fp32 wins because the faster int8 backends ({', '.join(faster)}) lose "
            f"more than {100 * max_drop:.2f} points of dev score."
        )
    flags = result["cpu"]["int8_flags"]
    shown = ", ".join(f"{name} {'yes' if has else 'no'}" for name, has in flags.items())
    if flags.get("avx512_vnni") or flags.get("avx_vnni") or flags.get("amx_int8"):
        why = (
            "it has int8 dot-product instructions, so the likely cost is the fixed per-call "
            "work of dynamic quantization (quantizing activations, converting results back), "
            "which matrices of this size do not amortise"
        )
    else:
        why = (
            "without VNNI or AMX, int8 products take multi-instruction AVX2/AVX-512 sequences "
            "and gain little over fp32, while dynamic quantization adds per-call work"
        )
    return (
        f"{head} fp32 wins: int8 did not pay off on this CPU ({result['cpu']['model']}; "
        f"{shown}): {why}."
    )


def quantize(cfg: QuantizeConfig) -> dict[str, Any]:
    """Build the int8 variants of a model, score each on dev, time them interleaved, and
    say which is best on this CPU; writes everything to `cfg.out` (see the module doc)."""
    import torch

    from lmshrink.measure.machine import cpu_model, int8_flags
    from lmshrink.measure.speed import measure_speed

    check_config(cfg)
    out = check_out(cfg.out, cfg.overwrite)
    folder = resolve_model_source(cfg.model)
    data_cfg = with_saved_task(cfg.data, folder)
    task = resolve_task(data_cfg)
    tokenizer, model = load_for_eval(folder, task)
    splits = load_eval_splits(task, "dev", data_cfg, cfg.seed)
    enc: Encoded = encode(tokenizer, splits[0], data_cfg.max_length)

    with staged_output(out) as stage:
        variants: dict[str, Any] = {REFERENCE: model}
        sizes = {REFERENCE: size_on_disk(folder)}
        if "torch" in cfg.backends:
            save_torch_int8(folder, model, tokenizer, stage / "torch-int8")
            variants["torch-int8"] = quantize_torch(model)
            sizes["torch-int8"] = serialized_bytes(variants["torch-int8"])
        export_meta = None
        if "onnx" in cfg.backends:
            export_meta = export_folder(
                folder,
                model,
                tokenizer,
                task,
                enc,
                stage / "onnx-fp32",
                cfg.onnx,
                data_cfg.max_length,
                dev=splits[0].source,
            )
            onnx_int8_folder(stage / "onnx-fp32", stage / "onnx-int8")
            for name in ("onnx-fp32", "onnx-int8"):
                variants[name] = OnnxClassifier.from_folder(stage / name)
                sizes[name] = (stage / name / MODEL_FILE).stat().st_size

        backends: dict[str, dict[str, Any]] = {}
        reference_outputs: np.ndarray | None = None
        for name, variant in variants.items():
            scores, outputs = score_variant(
                variant, tokenizer, task, splits, data_cfg.max_length, cfg
            )
            reference_outputs = outputs if reference_outputs is None else reference_outputs
            backends[name] = {
                "metrics": scores,
                "score": metrics.task_score(scores),
                "agreement_with_fp32": agreement(reference_outputs, outputs, task.is_regression),
                "max_abs_diff_to_fp32": float(np.abs(reference_outputs - outputs).max()),
                "size_bytes": sizes[name],
            }
        speed = measure_speed(
            {name: (variant, enc) for name, variant in variants.items()},
            batch_sizes=tuple(cfg.speed_batch_sizes),
            limit={bs: cfg.speed_examples for bs in cfg.speed_batch_sizes},
            rounds=cfg.rounds,
        )
        result: dict[str, Any] = {
            "model": str(folder),
            "task": task.name,
            "split": "dev",
            "examples": sum(len(s) for s in splits),
            "parameters": count_parameters(model),
            "backends": backends,
            "speed": speed,
            "threads": torch.get_num_threads(),
            "cpu": {
                "model": cpu_model(),
                "int8_flags": int8_flags(),
                "torch_quantized_engine": torch.backends.quantized.engine,
            },
            "parity": export_meta["parity"] if export_meta else None,
            "max_drop": cfg.max_drop,
            "size_note": "size_bytes: weight files on disk; for torch-int8, its int8 state "
            "serialized in memory (its folder stores the fp32 weights, see load_quantized)",
        }
        result["best"] = choose_best(result, cfg.max_drop)
        result["verdict"] = verdict(result, cfg.max_drop)
        write_json(stage / RESULT_FILE, result)
    return {**result, "out": str(out)}


def format_table(result: dict[str, Any]) -> str:
    """The quantize result as an aligned plain-text table and the verdict."""
    sizes = [str(bs) for bs in result["speed"]["batch_sizes"]]
    header = ["backend", "dev score", "agree w/ fp32", *[f"ex/s b={bs}" for bs in sizes], "size"]
    rows = [header]
    for name, b in result["backends"].items():
        speed = [
            f"{result['speed']['per_second'][name][bs]:.0f} "
            f"({result['speed']['ratio'][name][bs]:.2f}x)"
            for bs in sizes
        ]
        rows.append(
            [
                name,
                f"{100 * b['score']:.2f}",
                f"{100 * b['agreement_with_fp32']:.2f}%",
                *speed,
                _size(b["size_bytes"]),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    flags = ", ".join(n for n, has in result["cpu"]["int8_flags"].items() if has) or "none"
    lines.append(
        f"cpu: {result['cpu']['model']} ({result['threads']} threads; int8 flags: {flags})"
    )
    lines.append(result["verdict"])
    return "\n".join(lines)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"
