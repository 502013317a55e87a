"""Dynamic int8: PyTorch's and ONNX Runtime's, the saved form of a PyTorch int8 model, and
the choice of the best backend on this CPU.

Dynamic int8 stores weights as int8 and quantizes activations on the fly at each call, so it
needs no calibration data. Whether it is faster than fp32 depends on the CPU (VNNI or AMX
int8 instructions) and on the model's size, so `lmshrink quantize` measures it instead of
assuming it; `choose_best` and `verdict` read that measurement.

- `quantize_torch`: `torch.ao.quantization.quantize_dynamic` on every `nn.Linear` and
  `nn.LSTM` (qint8 weights, per tensor);
- `quantize_onnx`: `onnxruntime.quantization.quantize_dynamic` on an fp32 export (int8
  weights of MatMul, LSTM and Gather nodes, uint8 activations, per tensor).

**Saved form of the PyTorch int8 model.** PyTorch's quantized modules keep packed weights
that only `torch.load` (a pickle) restores, and lmshrink never loads a pickle from a user's
folder. So `torch-int8/` holds the fp32 model as a stock `save_pretrained` folder (safetensors)
plus `quantization.json`, and `load_quantized(folder)` quantizes it on load. Dynamic
quantization of weights is a deterministic function of the fp32 weights, so the loaded model
is the one that was measured, bit for bit. The folder's size on disk is fp32's; the results
give the int8 model's serialized size (`size_bytes`) separately. Loading `torch-int8/` with
`from_pretrained` alone gives the fp32 model.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from lmshrink.compress.onnx import (
    EXPORT_FILE,
    MODEL_FILE,
    pad_words,
    require_onnx,
    save_serving_files,
    write_json,
)
from lmshrink.data.task_kinds import TaskKind
from lmshrink.errors import ModelError

BACKENDS = ("torch", "onnx")
QUANT_FILE = "quantization.json"  # in a torch-int8/ folder: how to rebuild the int8 model
RESULT_FILE = "quantize.json"  # in the folder `lmshrink quantize` writes: its measurements
TORCH_FORMAT = "lmshrink-torch-dynamic-int8"
TORCH_MODULES = ("Linear", "LSTM")
REFERENCE = "torch-fp32"


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


def save_torch_int8(
    source: str,
    model: Any,
    tokenizer: Any,
    folder: Path,
    auto_model: str = "AutoModelForSequenceClassification",
) -> None:
    """The fp32 model folder plus quantization.json, from which `load_quantized` rebuilds
    the int8 model (see the module doc for why no int8 weights are stored); `auto_model` is
    the transformers Auto class that loads it (the task kind's: sequence or token
    classification)."""
    import torch

    model.save_pretrained(folder)
    save_serving_files(source, tokenizer, folder)
    write_json(
        folder / QUANT_FILE,
        {
            "format": TORCH_FORMAT,
            "auto_model": auto_model,
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
    its `--out` folder): the fp32 weights (safetensors) quantized as they were when measured,
    a sentence or a token classifier as it was saved. Its tokenizer loads with
    `AutoTokenizer.from_pretrained(folder)`."""
    import transformers

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
    # Folders written before token models could be quantized name no class: sentence ones.
    auto = spec.get("auto_model", "AutoModelForSequenceClassification")
    if auto not in ("AutoModelForSequenceClassification", "AutoModelForTokenClassification"):
        raise ModelError(
            f"{spec_file}: auto_model {auto!r} is not a classifier lmshrink makes; quantize "
            "the model again with lmshrink quantize."
        )
    model = getattr(transformers, auto).from_pretrained(path).eval()
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


# --- choosing a backend ---------------------------------------------------------------


Outputs = np.ndarray | list[np.ndarray]  # [N, C]; a token task's: one [W_i, C] per sentence


def agreement(reference: Outputs, outputs: Outputs, kind: TaskKind) -> float:
    """Share of dev predictions [N, C] equal to the reference's, as the task kind counts them
    (the same class; regression: scores within its agreement tolerance, 0.05). A token task's
    outputs (one [W_i, C] array per sentence) agree per word: the share of words tagged
    alike (`kind.same_prediction` under the word mask)."""
    if kind.token_level:
        (ref, mask), (out, _) = pad_words(list(reference)), pad_words(list(outputs))
        same = kind.same_prediction(ref, out, mask=mask)  # [words]
        return float(same.mean()) if same.size else 1.0
    return float(np.mean(kind.same_prediction(reference, outputs)))


def max_abs_diff(reference: Outputs, outputs: Outputs) -> float:
    """The largest |difference| between two models' outputs on the same examples (a token
    task's: over every word of every sentence)."""
    if isinstance(reference, np.ndarray):
        return float(np.abs(reference - outputs).max())
    pairs = zip(reference, outputs, strict=True)
    return max((float(np.abs(a - b).max(initial=0.0)) for a, b in pairs), default=0.0)


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
