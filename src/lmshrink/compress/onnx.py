"""ONNX export of a classifier, and its parity check against PyTorch.

Every model lmshrink makes exports the same way: stock Hugging Face BERT-family classifiers
(teachers; layer-subset, narrow, pretrained and Theseus students) and the BiLSTM student.
The graph takes `input_ids`, `attention_mask` and, when the model reads them,
`token_type_ids` (all int64 `[batch, sequence]`, both axes dynamic, right-padded) and
returns `logits [batch, labels]`; a token classifier (NER) returns `logits [batch, sequence,
labels]`, one row per sub-token, of which a server reads each word's first sub-token.

**Exporter.** `torch.onnx.export(..., dynamo=False)`, the TorchScript tracer. torch 2.13
defaults to the dynamo exporter, which needs `onnxscript` and captures the model with
`torch.export`; the BiLSTM's packed sequences have data-dependent shapes that `torch.export`
does not capture. The tracer turns `pack_padded_sequence` around an `nn.LSTM` into one ONNX
`LSTM` node with a `sequence_lens` input, so ONNX Runtime runs each direction over each row's
own tokens (the reverse direction starts at the row's last real token): an exported BiLSTM
keeps the padding invariance of the PyTorch one, with no extra graph for the reversal. One
path then serves every model kind, and needs only `onnx` and `onnxruntime`.

**Opset 17** (`ONNX_OPSET`): the first opset with `LayerNormalization` as one operator
(instead of seven elementwise ones, which ONNX Runtime would have to fuse back), above the 14
that scaled-dot-product attention needs, and below the tracer's maximum (20). Runtimes from
ONNX Runtime 1.13 (2022) on run it, and ONNX Runtime's int8 quantizer accepts it as is.

**Parity.** The exported graph is run by ONNX Runtime on the same dev batches as the PyTorch
model (batches in dev order, so they hold real padding; several batch sizes); the largest
|logit difference| and the share of identical predictions are written to `export.json`. Past
`--tolerance` the export fails with `ParityError` (and `lmshrink export` writes nothing).
A token classifier is compared where its predictions are read, per word: the logits at each
word's first sub-token (word masks leave out later sub-tokens, special tokens and padding),
and the share of words given the same tag.

A folder `export_folder` writes is self-contained: `model.onnx`, the tokenizer
(`tokenizer.json` and its config), the model's `lmshrink.json` when it has one, and
`export.json` (inputs, labels, tokenizer settings, versions, parity). README's "Serving
without lmshrink" loads it with `onnxruntime` and `tokenizers` alone.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import types
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmshrink.compress.token_serving import token_serving_notes, write_rule_files
from lmshrink.config import option
from lmshrink.data.batching import Encoded, collate
from lmshrink.data.task_kinds import TaskKind
from lmshrink.errors import ConfigError, LmshrinkError, MissingDependencyError, ModelError
from lmshrink.models.loading import METADATA_FILE
from lmshrink.training.inference import eval_batches

if TYPE_CHECKING:
    from lmshrink.models.sources import ModelSource

ONNX_OPSET = 17
# The TorchScript exporter's range: 14 for attention, 20 is its maximum.
MIN_OPSET, MAX_OPSET = 14, 20
MODEL_FILE = "model.onnx"
EXPORT_FILE = "export.json"
OUTPUT_NAME = "logits"
# Inputs beyond the tokenizer's that a model may read (the BiLSTM token student's word-shape
# ids); each becomes a graph input when the model's forward takes it and the encoding has it.
EXTRA_INPUTS = ("word_shape_ids",)


class ParityError(LmshrinkError):
    """ONNX Runtime's outputs differ from PyTorch's past the tolerance."""


@dataclasses.dataclass
class OnnxSettings:
    """How a model is exported to ONNX and checked against PyTorch."""

    opset: int = option(ONNX_OPSET, f"ONNX opset version ({MIN_OPSET} to {MAX_OPSET}).")
    tolerance: float = option(
        1e-3,
        "largest |logit difference| between PyTorch and ONNX Runtime (fp32) accepted on dev; "
        "past it the export fails.",
    )
    parity_batch_sizes: list[int] = option(
        [1, 8, 32],
        "batch sizes of the parity check (batches keep the dev order, so they hold real padding).",
    )
    parity_examples: int = option(256, "dev examples compared at each batch size (0: all).")


# --- dependencies and settings ----------------------------------------------------------


def require_onnx() -> tuple[Any, Any]:
    """(onnx, onnxruntime), or a MissingDependencyError that says how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise MissingDependencyError(
            "ONNX export and ONNX Runtime quantization need the packages onnx and "
            "onnxruntime; install them with pip install 'lmshrink[onnx]'."
        ) from None
    return onnx, onnxruntime


def check_settings(settings: OnnxSettings) -> None:
    """Refuse settings that cannot work, before any model is loaded."""
    if not MIN_OPSET <= settings.opset <= MAX_OPSET:
        raise ConfigError(
            f"--opset {settings.opset} is outside the supported {MIN_OPSET} to {MAX_OPSET}; "
            f"use the default {ONNX_OPSET}."
        )
    if not settings.tolerance >= 0:  # also refuses NaN
        raise ConfigError(f"--tolerance must be 0 or more, got {settings.tolerance}.")
    if not settings.parity_batch_sizes or min(settings.parity_batch_sizes) < 1:
        raise ConfigError(
            f"--parity-batch-sizes must list batch sizes of at least 1, got "
            f"{settings.parity_batch_sizes}."
        )


# --- export -----------------------------------------------------------------------------


def onnx_input_names(model: Any, tokenizer: Any, features: Iterable[str] = ()) -> list[str]:
    """The graph's inputs: input_ids and attention_mask, plus token_type_ids when the model
    takes them, the tokenizer writes them and the model has segment embeddings, plus each
    of `EXTRA_INPUTS` that the model takes and the encoding's `features` hold."""
    import inspect

    names = ["input_ids", "attention_mask"]
    params = inspect.signature(model.forward).parameters
    writes = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
    has_segments = getattr(model.config, "type_vocab_size", 1) != 0
    if "token_type_ids" in params and writes and has_segments:
        names.append("token_type_ids")
    names += [name for name in EXTRA_INPUTS if name in params and name in set(features)]
    return names


def example_batch(enc: Encoded, names: list[str]) -> dict[str, Any]:
    """Two right-padded rows to trace with: the longest dev example and its first half.

    The padding makes the tracer record the general path (attention masking, the BiLSTM's
    packed sequences) rather than a shortcut for unpadded batches.
    """
    import torch

    lengths = enc.lengths  # computed once: packed rows rebuild the list on each read
    longest = max(range(len(enc)), key=lengths.__getitem__)
    half = max(1, lengths[longest] // 2)
    features = {k: [rows[longest], rows[longest][:half]] for k, rows in enc.features.items()}
    batch = collate(Encoded(features, None, enc.pad_token_id), [0, 1])
    return {n: batch[n] if n in batch else torch.zeros_like(batch["input_ids"]) for n in names}


def export_onnx(
    model: Any, example: dict[str, Any], path: str | Path, opset: int = ONNX_OPSET
) -> None:
    """Trace `model` on `example` (named int64 tensors [B, T]) and write the ONNX graph to
    `path`: those inputs, output `logits [B, C]` (a token classifier's: `[B, T, C]`), batch
    and sequence axes dynamic."""
    import torch

    names = list(example)

    class LogitsOnly(torch.nn.Module):
        """The model with positional inputs and only its logits as output (HF models and
        the BiLSTM return output objects; the exporter needs plain tensors)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs, strict=True))).logits

    wrapper = LogitsOnly().eval()
    with torch.no_grad():  # per sub-token logits [B, T, C] (token classifiers) or [B, C]
        per_token = wrapper(*(example[n] for n in names)).dim() == 3
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes[OUTPUT_NAME] = {0: "batch", 1: "sequence"} if per_token else {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        # The exporter warns that the TorchScript path is deprecated (it is the one that
        # handles packed LSTMs), and the tracer about Python-side checks it freezes; the
        # parity check is what tells whether the graph is right.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # Two general cautions that do not apply here: the attention mask's advanced indexing
        # uses no negative indices, and the LSTMs' initial states are built from the dynamic
        # batch size (parity runs several batch sizes).
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size")
        try:
            torch.onnx.export(
                wrapper,
                tuple(example[n] for n in names),
                str(path),
                dynamo=False,
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
                opset_version=opset,
            )
        except RuntimeError as exc:  # torch.onnx.OnnxExporterError and tracing errors
            raise ModelError(
                f"{type(model).__name__} could not be exported to ONNX opset {opset} "
                f"({type(exc).__name__}: {_first_line(exc)}); try another --opset, or "
                "report it with the model's config.json."
            ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class OnnxClassifier:
    """An ONNX Runtime session behind the part of a PyTorch classifier's interface that
    lmshrink's loops use (`model(**batch).logits`, `eval()`, `train(False)`, `training`).

    So `training.inference.predict`, `measure.speed.measure_speed` and the parity check run
    ONNX Runtime on the very batches they give PyTorch models (all three batch through
    `training.inference.eval_batches`: same padding, same timing code), interleaved in one
    process. The session uses as many intra-op threads as torch does, so
    a speed ratio compares like with like.
    """

    training = False

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import torch

        _, ort = require_onnx()
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: ONNX file not found; export it with lmshrink export.")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's own error types (InvalidGraph, Fail, ...)
            raise ModelError(
                f"{self.path}: ONNX Runtime cannot load this file "
                f"({_first_line(exc)}); export the model again with lmshrink export."
            ) from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.threads = options.intra_op_num_threads

    @property
    def reads_word_shapes(self) -> bool:
        """Whether the graph takes `word_shape_ids` (an exported BiLSTM tagger with word
        shapes), so that its inputs are encoded with `encode(..., word_shapes=True)`, as the
        PyTorch model's are."""
        return "word_shape_ids" in self.input_names

    @classmethod
    def from_folder(cls, folder: str | Path, threads: int | None = None) -> OnnxClassifier:
        """The session of `folder/model.onnx` (a folder `lmshrink export` wrote)."""
        return cls(Path(folder) / MODEL_FILE, threads)

    def eval(self) -> OnnxClassifier:
        return self

    def train(self, mode: bool = True) -> OnnxClassifier:
        if mode:
            raise TypeError("an ONNX Runtime session cannot be trained.")
        return self

    def __call__(self, input_ids: Any, attention_mask: Any = None, **inputs: Any) -> Any:
        """input_ids, attention_mask, token_type_ids: int64 tensors [B, T] (right-padded);
        returns an object whose `logits` is a float32 tensor [B, C] ([B, T, C] for a token
        classifier). A graph input the batch lacks is filled as a tokenizer would: mask all
        ones, token types all zeros."""
        import torch

        given = {"input_ids": input_ids, "attention_mask": attention_mask, **inputs}
        feeds = {}
        for name in self.input_names:
            value = given.get(name)
            if value is None:
                value = torch.ones_like(input_ids) if name == "attention_mask" else None
                value = torch.zeros_like(input_ids) if value is None else value
            feeds[name] = value.numpy().astype(np.int64, copy=False)
        (logits,) = self.session.run([OUTPUT_NAME], feeds)
        return types.SimpleNamespace(logits=torch.from_numpy(logits))


# --- parity -----------------------------------------------------------------------------


def pad_words(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-word outputs of sentences (one [W_i, C] array each) as one array [N, W, C],
    zero-padded to the longest sentence, and its word mask [N, W] (True on real words)."""
    width = max((len(r) for r in rows), default=0)
    classes = rows[0].shape[-1] if rows else 0
    out = np.zeros((len(rows), width, classes), dtype=np.float32)
    mask = np.zeros((len(rows), width), dtype=bool)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
        mask[i, : len(row)] = True
    return out, mask


def check_parity(
    model: Any,
    onnx_model: OnnxClassifier,
    enc: Encoded,
    batch_sizes: list[int],
    max_examples: int,
    tolerance: float,
    kind: TaskKind,
    progress: bool = False,
) -> dict[str, Any]:
    """Compare PyTorch's and ONNX Runtime's logits on the same dev batches.

    For each batch size, the first `max_examples` examples (0: all) are batched in dev order
    and padded to each batch's longest example, as served batches are. A prediction is
    identical when the task kind says so (`kind.same_prediction`: the same class; for
    regression, scores within `tolerance`). Returns max |difference|, the share of identical
    predictions, where the largest difference occurred, and the same per batch size; `passed`
    says whether the largest difference is within `tolerance`. A NaN counts as an infinite
    difference.

    A token-level kind (NER; `enc` from `encode_words`) is compared per word, where its
    predictions are read: the logits at each word's first sub-token (`enc.word_starts`),
    under a word mask; the share of identical predictions is then over words, and `words`
    says how many were compared.
    """
    import torch

    model.eval()
    limit = None if max_examples <= 0 else max_examples
    n = len(enc) if limit is None else min(limit, len(enc))
    by_batch: dict[str, dict[str, Any]] = {}
    worst = {"max_abs_diff": -1.0, "batch_size": None, "example": None}
    agree_total = compared = 0
    for bs in batch_sizes:
        ref_rows, got_rows = [], []
        batches = eval_batches(
            enc, bs, order="dataset", limit=limit, progress=progress, desc=f"parity b={bs}"
        )
        for indices, batch, _ in batches:
            with torch.inference_mode():
                ref_out = model(**batch).logits.float().numpy()  # [b, C] or [b, T, C]
            got_out = onnx_model(**batch).logits.numpy()
            if kind.token_level:  # each sentence's words, read at their first sub-token
                assert enc.word_starts is not None, "a token task's encoding has word_starts"
                starts = [enc.word_starts[i] for i in indices]
                ref_rows += [ref_out[r, pos] for r, pos in enumerate(starts)]  # [W_i, C]
                got_rows += [got_out[r, pos] for r, pos in enumerate(starts)]
            else:
                ref_rows.append(ref_out)  # [b, C]
                got_rows.append(got_out)
        mask = None
        if kind.token_level:
            (ref, mask), (got, _) = pad_words(ref_rows), pad_words(got_rows)  # [n, W, C]
        else:
            ref, got = np.concatenate(ref_rows), np.concatenate(got_rows)  # [n, C]
        diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
        diff[~np.isfinite(diff)] = np.inf
        if mask is not None:
            diff[~mask] = 0.0  # padding words: nothing is read there
        per_row = diff.reshape(len(diff), -1).max(axis=1, initial=0.0)  # [n]
        agree = kind.same_prediction(ref, got, tolerance, mask)  # [n], or [words]
        row = int(per_row.argmax())
        by_batch[str(bs)] = {
            "examples": n,
            "max_abs_diff": float(per_row[row]),
            "agreement": float(agree.mean()) if agree.size else 1.0,
        }
        if mask is not None:
            by_batch[str(bs)]["words"] = int(agree.size)
        if per_row[row] > worst["max_abs_diff"]:
            worst = {"max_abs_diff": float(per_row[row]), "batch_size": bs, "example": row}
        agree_total += int(agree.sum())
        compared += int(agree.size)
    result = {
        "split": "dev",
        "tolerance": tolerance,
        "passed": bool(worst["max_abs_diff"] <= tolerance),
        "max_abs_diff": worst["max_abs_diff"],
        "agreement": agree_total / compared if compared else 1.0,
        "worst": {"batch_size": worst["batch_size"], "example": worst["example"]},
        "by_batch_size": by_batch,
    }
    if kind.token_level:
        result["compared"] = "words: the logits at each word's first sub-token"
        result["words"] = compared // len(batch_sizes)  # the dev words, at each batch size
    return result


def raise_on_mismatch(parity: dict[str, Any], source: str, dev: str) -> None:
    """ParityError naming the model, the worst batch and dev example, and the fix."""
    if parity["passed"]:
        return
    worst = parity["worst"]
    unit = "word predictions" if "words" in parity else "predictions"
    raise ParityError(
        f"{source}: the ONNX export's logits (ONNX Runtime) differ from PyTorch's by up to "
        f"{parity['max_abs_diff']:.3g} (batch size {worst['batch_size']}, example "
        f"{worst['example']} of {dev}), past --tolerance {parity['tolerance']:g}; "
        f"{100 * parity['agreement']:.2f}% of {unit} are identical. The export is not "
        "trustworthy, so nothing was written; report it with the model's config.json, or "
        "raise --tolerance if this difference is acceptable."
    )


# --- the output folder ------------------------------------------------------------------


def save_serving_files(source: str, tokenizer: Any, folder: Path) -> None:
    """The tokenizer, and the model's lmshrink.json when it has one, beside model.onnx."""
    tokenizer.save_pretrained(folder)
    metadata = Path(source) / METADATA_FILE
    if metadata.is_file():
        shutil.copy2(metadata, folder / METADATA_FILE)


def serving_metadata(
    src: ModelSource, inputs: list[str], opset: int, folder: Path
) -> dict[str, Any]:
    """What a server needs besides the graph (inputs, labels, tokenizer settings; for a token
    classifier, how words are split, encoded and read), and where the file came from."""
    import onnx
    import onnxruntime
    import torch

    from lmshrink import __version__

    task, tokenizer = src.task, src.tokenizer
    num_labels = src.model.config.num_labels
    meta = {
        "format": "onnx",
        "file": MODEL_FILE,
        "weights": "fp32",
        "opset": opset,
        "exporter": "torch.onnx.export (TorchScript tracer, dynamo=False)",
        "source": str(src.folder),
        "model_type": src.model.config.model_type,
        "task": task.name,
        "task_kind": task.kind.name,
        "inputs": inputs,
        "output": (
            f"{OUTPUT_NAME} [batch, sequence, {num_labels}]"
            if task.kind.token_level
            else f"{OUTPUT_NAME} [batch, {num_labels}]"
        ),
        "problem_type": task.kind.problem_type,
        # the logits' columns in id order: the order lmshrink scores and trains with
        "labels": task.kind.output_names(task.labels),
        "tokenizer": {
            "file": "tokenizer.json" if (folder / "tokenizer.json").is_file() else None,
            "max_length": src.data.max_length,
            "pad_token": tokenizer.pad_token,
            "pad_token_id": tokenizer.pad_token_id,
            "padding_side": "right",
        },
        "versions": {
            "lmshrink": __version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }
    if task.kind.token_level:
        meta["words"] = token_serving_notes("word_shape_ids" in inputs)
    return meta


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def export_folder(
    src: ModelSource, folder: Path, settings: OnnxSettings, progress: bool = False
) -> dict[str, Any]:
    """Export the model of `src` into `folder` (model.onnx, tokenizer, lmshrink.json,
    export.json), check parity on its encoded dev split, and return export.json's content.

    Raises ParityError past the tolerance; the caller writes into a staging folder, so a
    failed export leaves nothing behind.
    """
    folder.mkdir(parents=True, exist_ok=True)
    model = src.model.eval()
    example = example_batch(src.enc, onnx_input_names(model, src.tokenizer, src.enc.features))
    export_onnx(model, example, folder / MODEL_FILE, settings.opset)
    session = OnnxClassifier(folder / MODEL_FILE)
    parity = check_parity(
        model,
        session,
        src.enc,
        settings.parity_batch_sizes,
        settings.parity_examples,
        settings.tolerance,
        src.task.kind,
        progress,
    )
    raise_on_mismatch(parity, src.folder, src.splits[0].source)
    save_serving_files(src.folder, src.tokenizer, folder)
    if src.task.kind.token_level:  # split_words.py (and word_shapes.py) for servers
        write_rule_files(folder, shapes="word_shape_ids" in session.input_names)
    meta = serving_metadata(src, session.input_names, settings.opset, folder)
    meta["parity"] = parity
    write_json(folder / EXPORT_FILE, meta)
    return meta


def onnx_parameters(path: Path) -> int:
    """Elements of every initializer of an ONNX graph: its weights (int8 graphs: the int8
    weights plus their scales and zero points)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(int(np.prod(t.dims)) for t in graph.initializer)
