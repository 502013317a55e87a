"""Int8: PyTorch's dynamic, ONNX Runtime's dynamic and static, the saved form of a PyTorch
int8 model, how much a prediction depends on its batch, and the best backend on this CPU.

Dynamic int8 stores weights as int8 and quantizes activations on the fly at each call, so it
needs no calibration data. Whether it is faster than fp32 depends on the CPU (VNNI or AMX
int8 instructions) and on the model's size, so `lmshrink quantize` measures it instead of
assuming it; `choose_best` and `verdict` read that measurement.

- `quantize_torch`: `torch.ao.quantization.quantize_dynamic` on every `nn.Linear` and
  `nn.LSTM` (qint8 weights, per tensor);
- `quantize_onnx`: `onnxruntime.quantization.quantize_dynamic` on an fp32 export (int8
  weights of MatMul, LSTM and Gather nodes, uint8 activations, per tensor);
- `quantize_onnx_static`: `onnxruntime.quantization.quantize_static` (below).

**Why a static mode.** Dynamic int8 picks each activation tensor's scale from that tensor's
range at each call, and the tensor holds the whole batch: a sentence's logits, and at times
its class, change with the sentences it is batched with (`batch_invariance` measures it).
Static int8 fixes every activation scale once, from training examples (`Calibration`: the
model's own encoded inputs, never dev), so each row is quantized alone and a prediction is the
same alone or in any batch (up to the summation order of the fp32 ops, which varies with the
padded length; on the tests' models the logits are identical). The choices, following
`quantize_static`'s guidance for CPUs: QDQ format (ONNX Runtime's CPU kernels are optimised
for it since 1.11; in one trial on a MiniLM-shaped graph QOperator was no faster and less
exact); weights QInt8 per channel (one scale per output column: in that trial as fast as per
tensor, with a third less logit error); activations QUInt8, one MinMax-calibrated scale per
tensor; 7-bit weights (`reduce_range`) only on x86 without VNNI or AMX, where u8 x s8
products can saturate. Only nodes that read weights are
quantized: MatMul and Gemm with a weight matrix (their outputs stay fp32, so bias, GELU,
softmax and LayerNorm run in fp32, as in dynamic mode) and Gather of an embedding table.
Attention's activation-by-activation MatMuls stay fp32 (dynamic mode leaves them too).
ONNX Runtime has no static int8 LSTM, and its DynamicQuantizeLSTM computes activation scales
per call (which would undo the point), so a BiLSTM's LSTM nodes stay fp32: static int8
quantizes its embeddings and classifier only.

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

import collections
import contextlib
import dataclasses
import io
import json
import logging
import platform
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmshrink.compress.onnx import (
    EXPORT_FILE,
    MODEL_FILE,
    pad_words,
    require_onnx,
    save_serving_files,
    write_json,
)
from lmshrink.data.batching import Encoded, encode
from lmshrink.data.task_kinds import TaskKind
from lmshrink.errors import ConfigError, ModelError
from lmshrink.training.inference import eval_batches

if TYPE_CHECKING:
    from lmshrink.data.tasks import Task
    from lmshrink.models.sources import ModelSource

BACKENDS = ("torch", "onnx")
QUANT_FILE = "quantization.json"  # in a torch-int8/ folder: how to rebuild the int8 model
RESULT_FILE = "quantize.json"  # in the folder `lmshrink quantize` writes: its measurements
TORCH_FORMAT = "lmshrink-torch-dynamic-int8"
TORCH_MODULES = ("Linear", "LSTM")
REFERENCE = "torch-fp32"
INT8_MODES = ("dynamic", "static")  # ONNX Runtime's, each in its own variant folder:
ONNX_INT8_FOLDERS = {"dynamic": "onnx-int8", "static": "onnx-int8-static"}
CALIBRATION_BATCH = 8  # training examples per calibration batch (padded to the longest)
CALIBRATION_EXAMPLES = 256  # training examples static int8 is calibrated on by default
INVARIANCE_BATCH = 32  # predictions alone are compared with those inside batches of this size
# Node types whose weights static int8 quantizes (MatMul and Gemm: with a weight matrix;
# Gather: of an embedding table); other compute (LSTM, activation MatMuls) stays fp32.
STATIC_OPS = ("MatMul", "Gemm", "Gather")


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

    with _quiet_quantizer():
        quantize_dynamic(src, dest, weight_type=QuantType.QInt8)


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """ONNX Runtime's quantizers log a suggestion to pre-process the graph (shape inference
    and graph optimisation, which ONNX Runtime already does when it loads the model)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


@dataclasses.dataclass
class Calibration:
    """The examples whose activations set static int8's scales: training examples of the
    model's task (never dev), encoded as the model reads them (`calibration_set`)."""

    split: Any  # the Split or TokenSplit they come from: `name` "train", `source` its file(s)
    enc: Encoded
    seed: int  # the seed that drew them from the training split
    batch_size: int = CALIBRATION_BATCH

    def batches(self, names: list[str]) -> Iterator[dict[str, np.ndarray]]:
        """The graph's inputs `names` (int64 [b, T]) for each batch of `batch_size` examples
        in the split's order, right-padded to each batch's longest, as served batches are;
        an input the encoding lacks is filled as `OnnxClassifier` fills it (token types 0)."""
        for _, batch, _ in eval_batches(self.enc, self.batch_size, order="dataset"):
            ids = batch["input_ids"]
            yield {n: (batch[n] if n in batch else ids * 0).numpy().astype(np.int64) for n in names}


def calibration_set(src: ModelSource, examples: int, seed: int) -> Calibration:
    """`examples` training examples of the task of `src` (a fixed-seed random subset, in file
    order; all of them if fewer), encoded with its tokenizer and max length; a ConfigError
    when the task has no training split."""
    from lmshrink.data.splits import read_split

    check_calibration_split(src.task)
    split = read_split(src.task, "train", src.data).subset(examples, seed)
    shapes = bool(getattr(src.model, "reads_word_shapes", False))
    enc = encode(src.tokenizer, split, src.data.max_length, word_shapes=shapes)
    return Calibration(split, enc, seed)


def check_calibration_split(task: Task) -> None:
    """A ConfigError unless `task` has a training split to calibrate static int8 on."""
    if "train" not in task.splits:
        raise ConfigError(
            f"static int8 sets its activation scales on training examples, and task "
            f"{task.name} has no train split; pass --train-file, or build only "
            "--int8-modes dynamic."
        )


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol (`get_next`: a feed, then None) over an
    iterator of feeds (a duck type, so that onnxruntime is imported only where used)."""

    def __init__(self, feeds: Iterator[dict[str, np.ndarray]]) -> None:
        self._feeds = feeds

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def reduced_range() -> bool:
    """Whether static int8 should use 7-bit weights on this CPU: on x86 without VNNI or AMX,
    whose u8 x s8 multiply-adds (VPMADDUBSW) can saturate (`quantize_static`'s guidance)."""
    from lmshrink.measure.machine import int8_flags

    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
    flags = int8_flags()
    return x86 and not (flags["avx512_vnni"] or flags["avx_vnni"] or flags["amx_int8"])


def quantize_onnx_static(src: Path, dest: Path, calibration: Calibration) -> dict[str, Any]:
    """ONNX Runtime's static int8 quantization of the graph `src` into `dest` (the settings
    and why: the module doc), its activation scales calibrated on `calibration`; returns
    what was done, for export.json."""
    onnx, _ = require_onnx()
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    model = onnx.load(str(src))
    graph = model.graph
    weights = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    for i, node in enumerate(graph.node):  # nodes are chosen by name
        node.name = node.name or f"{node.op_type}_{i}"
    chosen = [n for n in graph.node if _reads_weights(n, weights)]
    names = {n.name for n in chosen}
    compute = ("MatMul", "Gemm", "LSTM", "GRU", "RNN")  # what stays fp32, for export.json
    kept = collections.Counter(
        n.op_type for n in graph.node if n.op_type in compute and n.name not in names
    )
    initializers = {t.name for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    reduce_range = reduced_range()
    with _quiet_quantizer():
        quantize_static(
            model,
            dest,
            _Reader(calibration.batches(inputs)),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(STATIC_OPS),
            nodes_to_quantize=sorted(names),
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]},
        )
    split = calibration.split
    return {
        "mode": "static",
        "quantizer": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        "weights": "QInt8, per channel" + (" (7-bit: reduce_range)" if reduce_range else ""),
        "activations": "QUInt8, one scale per tensor, fixed by calibration",
        "quantized_nodes": dict(sorted(collections.Counter(n.op_type for n in chosen).items())),
        "fp32_nodes": dict(sorted(kept.items())),
        "calibration": {
            "method": "MinMax",
            "split": split.name,
            "source": split.source,
            "examples": len(split),
            "batch_size": calibration.batch_size,
            "seed": calibration.seed,
        },
    }


def _reads_weights(node: Any, weights: set[str]) -> bool:
    """Whether static int8 quantizes `node`: a MatMul or Gemm whose second input is an fp32
    weight matrix, or a Gather from an fp32 table (not a shape, nor two activations)."""
    if node.op_type in ("MatMul", "Gemm"):
        return len(node.input) > 1 and node.input[1] in weights
    return node.op_type == "Gather" and node.input[0] in weights


DYNAMIC_NOTES = {
    "mode": "dynamic",
    "quantizer": "onnxruntime.quantization.quantize_dynamic",
    "weights": "QInt8, per tensor",
    "activations": "uint8, one scale per tensor computed at each call (over the whole batch)",
}


def onnx_int8_folder(
    fp32_folder: Path, folder: Path, mode: str = "dynamic", calibration: Calibration | None = None
) -> None:
    """onnx-int8/ (dynamic) or onnx-int8-static/ (`calibration` needed): the quantized graph
    beside the fp32 export's tokenizer and metadata; export.json says how it was quantized
    (`int8`) and, for static mode, on which examples it was calibrated."""
    if mode not in INT8_MODES or (mode == "static" and calibration is None):
        raise ValueError(f"mode must be one of {INT8_MODES} (static with a calibration)")
    folder.mkdir(parents=True)
    if calibration is None:
        quantize_onnx(fp32_folder / MODEL_FILE, folder / MODEL_FILE)
        notes = dict(DYNAMIC_NOTES)
        how = "quantize_dynamic, QInt8 weights"
    else:
        notes = quantize_onnx_static(fp32_folder / MODEL_FILE, folder / MODEL_FILE, calibration)
        how = (
            "quantize_static, QDQ, per-channel QInt8 weights, QUInt8 activations calibrated on "
            f"{len(calibration.split)} training examples"
        )
    for item in fp32_folder.iterdir():
        if item.name not in (MODEL_FILE, EXPORT_FILE):
            shutil.copy2(item, folder / item.name)
    meta = json.loads((fp32_folder / EXPORT_FILE).read_text())
    del meta["parity"]  # that check was of the fp32 graph; quantize.json compares int8
    meta["weights"] = f"int8 (onnxruntime.quantization.{how})"  # servers read the "int8"
    meta["int8"] = notes
    write_json(folder / EXPORT_FILE, meta)


# --- comparing outputs -----------------------------------------------------------------


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


# --- batch invariance -------------------------------------------------------------------


def outputs_in_order(
    model: Any, enc: Encoded, batch_size: int, kind: TaskKind, progress: bool = False
) -> Outputs:
    """A model's outputs on every example of `enc`, in batches of `batch_size` taken in the
    split's order (so padded to each batch's longest, as served batches are): [N, C], or a
    token task's [W_i, C] per sentence (read at each word's first sub-token)."""
    import torch

    rows: list[np.ndarray] = []
    batches = eval_batches(
        enc, batch_size, order="dataset", progress=progress, desc=f"b={batch_size}"
    )
    with torch.inference_mode():
        for indices, batch, _ in batches:
            out = model(**batch).logits.float().numpy()  # [b, C] or [b, T, C]
            if kind.token_level:
                assert enc.word_starts is not None, "a token task's encoding has word_starts"
                rows += [out[r, enc.word_starts[i]] for r, i in enumerate(indices)]
            else:
                rows.append(out)
    return rows if kind.token_level else np.concatenate(rows)


def batch_invariance(
    model: Any,
    enc: Encoded,
    kind: TaskKind,
    batch_size: int = INVARIANCE_BATCH,
    progress: bool = False,
) -> dict[str, Any]:
    """How much a model's predictions depend on the company they keep: every example of
    `enc` predicted alone (batch 1) and inside batches of `batch_size` in the split's order
    (real padding, real neighbours). `changed`: the share of predictions that differ (as the
    task kind counts them, per word for a token task); `max_abs_diff`: the largest |logit
    difference|. A model whose rows are computed independently of each other gives 0 and
    (up to fp32 summation order) 0."""
    alone = outputs_in_order(model, enc, 1, kind, progress)
    together = outputs_in_order(model, enc, batch_size, kind, progress)
    return {
        "batch_sizes": [1, batch_size],
        "examples": len(enc),
        "changed": 1.0 - agreement(alone, together, kind),
        "max_abs_diff": max_abs_diff(alone, together),
    }


# --- choosing a backend ---------------------------------------------------------------


# Backends whose activation scales are computed at each call over the whole batch: a
# prediction can change with the other examples of its batch.
BATCH_DEPENDENT = ("torch-int8", "onnx-int8")


def choose_best(
    result: dict[str, Any], max_drop: float, invariant_slack: float = 0.0
) -> dict[str, str]:
    """The fastest backend at each timed batch size among those within `max_drop` of the
    reference's dev score, except that a batch-invariant one (fp32, static int8) is chosen
    over a faster batch-dependent one (dynamic int8) that is at most `invariant_slack`
    faster (0.15: up to 15% more examples per second)."""
    eligible = _eligible(result, max_drop)
    per_second = result["speed"]["per_second"]
    best = {}
    for bs in per_second[REFERENCE]:
        fastest = max(eligible, key=lambda n: per_second[n][bs])
        steady = [n for n in eligible if n not in BATCH_DEPENDENT]  # fp32 is always there
        if fastest in BATCH_DEPENDENT and steady:
            alternative = max(steady, key=lambda n: per_second[n][bs])
            if per_second[alternative][bs] * (1 + invariant_slack) >= per_second[fastest][bs]:
                fastest = alternative
        best[bs] = fastest
    return best


def _eligible(result: dict[str, Any], max_drop: float) -> list[str]:
    """The backends whose dev score is at most `max_drop` below the reference's."""
    floor = result["backends"][REFERENCE]["score"] - max_drop
    return [n for n, b in result["backends"].items() if b["score"] >= floor - 1e-12]


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
    per_second = result["speed"]["per_second"]
    passed = [  # faster, within max_drop, but batch-dependent: passed over for this one
        n
        for n in _eligible(result, max_drop)
        if n in BATCH_DEPENDENT and per_second[n][bs] > per_second[best][bs]
    ]
    if passed:
        n = max(passed, key=lambda name: per_second[name][bs])
        head += (
            f" {n} is {per_second[n][bs] / per_second[best][bs]:.2f}x as fast, but its "
            "predictions can change with the other examples of a batch; a batch-invariant "
            "backend within --invariant-slack of it is preferred."
        )
    if passed or "int8" in best:  # onnx-int8, onnx-int8-static, torch-int8
        return head
    faster = [n for n in backends if "int8" in n and per_second[n][bs] > per_second[best][bs]]
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
