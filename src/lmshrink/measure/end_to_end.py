"""End-to-end latency of served models: raw strings in, labels out, tokenization included.

`measure.speed` times a model on batches encoded beforehand (model-only). A server pays more:
it tokenizes each request, turns the encodings into arrays and reads labels from the logits.
At a small student's size (a fraction of a millisecond per call) that glue is a large share
of what a user waits for, so a ratio between a teacher and a student measured model-only
overstates what serving gains. Here every call is timed from the raw strings to the labels.

`OnnxTextServer` serves a folder `lmshrink export` (or `lmshrink quantize`: onnx-fp32/,
onnx-int8/) wrote with exactly what a production server without lmshrink, torch or
transformers has: `tokenizers` (tokenizer.json), `onnxruntime` and numpy, as README's
"Serving without lmshrink" does. `time_end_to_end` times any `TextServer`s interleaved and
returns `measure_speed`'s result layout.

This module imports no torch: a server is measured as it would run in production.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lmshrink.data.task_kinds import IGNORE_INDEX, REGRESSION, TOKEN_CLASSIFICATION
from lmshrink.data.word_shapes import PAD as SHAPE_PAD
from lmshrink.data.word_shapes import word_shape_ids
from lmshrink.data.words import split_words
from lmshrink.errors import ConfigError, MissingDependencyError, ModelError

# The files of a folder `lmshrink export` writes (as in `lmshrink.compress.onnx`, which this
# module does not import: it pulls in the PyTorch side of export).
MODEL_FILE = "model.onnx"
EXPORT_FILE = "export.json"
TOKENIZER_FILE = "tokenizer.json"
OUTPUT_NAME = "logits"
# Graph input -> the field of a `tokenizers.Encoding` that holds it.
ENCODING_FIELDS = {
    "input_ids": "ids",
    "attention_mask": "attention_mask",
    "token_type_ids": "type_ids",
}
WORD_SHAPES_INPUT = "word_shape_ids"

Predictions = np.ndarray | list[np.ndarray]


@runtime_checkable
class TextServer(Protocol):
    """A served model: raw texts in, predictions out.

    `predict(texts)`: `texts[i]` is one example, a tuple of one string (or two: a sentence
    pair). Returns label ids [B] (int64) for classification, scores [B] (float32) for
    regression, and for a token classifier a list of B arrays, one tag id per word of the
    text (words as `lmshrink.data.words.split_words` cuts it). `name` says which model it
    is; `kind` how it is served (e.g. "onnx-fp32", "onnx-int8").
    """

    name: str
    kind: str

    def predict(self, texts: Sequence[tuple[str, ...]]) -> Predictions: ...


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError(
            "serving an ONNX folder needs the package onnxruntime; install it with pip "
            "install 'lmshrink[onnx]'."
        ) from None
    return onnxruntime


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise MissingDependencyError(
            "serving an ONNX folder needs the package tokenizers; install it with pip install "
            "tokenizers."
        ) from None
    return tokenizers


class OnnxTextServer:
    """A folder written by `lmshrink export` or `lmshrink quantize` (onnx-fp32/, onnx-int8/),
    served the way a production server without lmshrink does it: `tokenizers` reads
    tokenizer.json (truncation to export.json's max_length, right padding to the longest
    text of each batch with its pad id; pairs encoded as pairs), ONNX Runtime runs model.onnx
    on the CPU (`threads` intra-op threads, 0: ONNX Runtime's default; one inter-op thread),
    and numpy reads the labels.

    Only the graph's own inputs are fed (token_type_ids when the graph takes them). A token
    classifier's text is cut into words by lmshrink's rule (`split_words`), encoded as
    pre-split words (with each word's shape id when the graph reads `word_shape_ids`), and
    each word's tag read at its first sub-token; a word without a token (cut off by
    truncation, or made only of characters the tokenizer deletes) gets the tag "O" (as
    README's serving example reads it, and lmshrink's own scoring: `predict_words`).
    """

    def __init__(self, folder: str | Path, threads: int = 1, name: str = "") -> None:
        if threads < 0:
            raise ConfigError(f"threads must be 0 (ONNX Runtime's default) or more, got {threads}.")
        self.folder = Path(folder).expanduser()
        self.name = name or str(folder)
        meta = self._read_metadata()
        self.meta = meta
        self.kind = "onnx-int8" if str(meta.get("weights", "")).startswith("int8") else "onnx-fp32"
        self.task_kind = str(meta.get("task_kind", ""))
        self.regression = (
            self.task_kind == REGRESSION.name or meta.get("problem_type") == REGRESSION.problem_type
        )
        self.token_level = self.task_kind == TOKEN_CLASSIFICATION.name or "words" in meta
        labels = [str(label) for label in meta.get("labels", [])]
        self.outside = labels.index("O") if "O" in labels else IGNORE_INDEX
        self.tokenizer = self._load_tokenizer(meta.get("tokenizer") or {})
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(
                str(self.folder / MODEL_FILE), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's own error types (InvalidGraph, Fail, ...)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelError(
                f"{self.folder / MODEL_FILE}: ONNX Runtime cannot load this file ({first}); "
                "export the model again with lmshrink export."
            ) from None
        self.threads = threads
        self.inputs = [i.name for i in self.session.get_inputs()]
        known = {*ENCODING_FIELDS, WORD_SHAPES_INPUT}
        unknown = [n for n in self.inputs if n not in known]
        if unknown or "input_ids" not in self.inputs:
            raise ModelError(
                f"{self.folder / MODEL_FILE}: the graph takes inputs {self.inputs}; a text "
                f"server makes only {sorted(known)} (input_ids among them); export the model "
                "with lmshrink export."
            )
        if WORD_SHAPES_INPUT in self.inputs and not self.token_level:
            raise ModelError(
                f"{self.folder}: the graph reads word_shape_ids but export.json does not say "
                "it is a token classifier; export the model again with lmshrink export."
            )

    def _read_metadata(self) -> dict[str, Any]:
        if not self.folder.is_dir():
            raise ModelError(
                f"{self.folder}: not a folder; pass an ONNX folder written by lmshrink export."
            )
        for needed in (MODEL_FILE, EXPORT_FILE):
            if not (self.folder / needed).is_file():
                raise ModelError(
                    f"{self.folder}: has no {needed}, so it is not an ONNX folder; export the "
                    f"model with lmshrink export {self.folder} --out <folder>."
                )
        try:
            meta = json.loads((self.folder / EXPORT_FILE).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(
                f"{self.folder / EXPORT_FILE}: not valid JSON ({exc}); export the model again "
                "with lmshrink export."
            ) from None
        if not isinstance(meta, dict):
            raise ModelError(
                f"{self.folder / EXPORT_FILE}: not an export.json written by lmshrink export; "
                "export the model again."
            )
        return meta

    def _load_tokenizer(self, settings: dict[str, Any]) -> Any:
        """tokenizer.json, truncating to max_length and padding right to each batch's longest
        text with the pad id export.json names."""
        path = self.folder / TOKENIZER_FILE
        if not path.is_file():
            raise ModelError(
                f"{self.folder}: has no {TOKENIZER_FILE} (the file of a fast tokenizer), which "
                "a server without transformers reads; export a model whose tokenizer is a fast "
                "one (AutoTokenizer.from_pretrained(..., use_fast=True))."
            )
        tokenizer = _tokenizers().Tokenizer.from_file(str(path))
        max_length = settings.get("max_length")
        if max_length:
            tokenizer.enable_truncation(int(max_length))
        else:
            tokenizer.no_truncation()
        pad_id = settings.get("pad_token_id")
        pad_id = 0 if pad_id is None else int(pad_id)
        pad_token = settings.get("pad_token") or tokenizer.id_to_token(pad_id) or "[PAD]"
        tokenizer.enable_padding(direction="right", pad_id=pad_id, pad_token=pad_token)
        return tokenizer

    def predict(self, texts: Sequence[tuple[str, ...]]) -> Predictions:
        """Labels of raw texts (see `TextServer`): ids [B], scores [B], or per-word tag ids."""
        if not texts:
            return (
                []
                if self.token_level
                else np.zeros(0, dtype=np.float32 if self.regression else np.int64)
            )
        if self.token_level:
            return self._predict_words(texts)
        inputs = [_example(t) for t in texts]
        encodings = self.tokenizer.encode_batch(inputs)
        feeds = {
            name: np.array([getattr(e, ENCODING_FIELDS[name]) for e in encodings], dtype=np.int64)
            for name in self.inputs
        }
        (logits,) = self.session.run([OUTPUT_NAME], feeds)  # [B, C]
        return logits[:, 0] if self.regression else logits.argmax(axis=1)

    def _predict_words(self, texts: Sequence[tuple[str, ...]]) -> list[np.ndarray]:
        words = []
        for t in texts:
            text = _example(t)
            if not isinstance(text, str):
                raise ConfigError(
                    f"{self.folder}: a token classifier reads one text per example, got a pair."
                )
            words.append(split_words(text))
        encodings = self.tokenizer.encode_batch(words, is_pretokenized=True)
        feeds = {
            name: np.array([getattr(e, ENCODING_FIELDS[name]) for e in encodings], dtype=np.int64)
            for name in self.inputs
            if name in ENCODING_FIELDS
        }
        if WORD_SHAPES_INPUT in self.inputs:  # each sub-token gets its word's shape, else 0
            rows = []
            for e, ws in zip(encodings, words, strict=True):
                shapes = word_shape_ids(ws)
                rows.append([SHAPE_PAD if w is None else shapes[w] for w in e.word_ids])
            feeds[WORD_SHAPES_INPUT] = np.array(rows, dtype=np.int64)
        (logits,) = self.session.run([OUTPUT_NAME], feeds)  # [B, T, C]
        tags = logits.argmax(axis=-1)  # [B, T]
        out = []
        for row, (e, ws) in enumerate(zip(encodings, words, strict=True)):
            first: dict[int, int] = {}  # word -> position of its first sub-token
            for position, w in enumerate(e.word_ids):
                if w is not None and w not in first:
                    first[w] = position
            out.append(
                np.array(
                    [tags[row, first[w]] if w in first else self.outside for w in range(len(ws))],
                    dtype=np.int64,
                )
            )
        return out


def _example(fields: tuple[str, ...] | str) -> str | tuple[str, str]:
    """One example as `tokenizers` takes it: a string, or a (first, second) pair."""
    if isinstance(fields, str):
        return fields
    if len(fields) == 1:
        return fields[0]
    if len(fields) == 2:
        return (fields[0], fields[1])
    raise ConfigError(f"an example holds one text or a pair of texts, got {len(fields)} texts.")


# --- timing -----------------------------------------------------------------------------


def _run(
    server: TextServer, batches: list[list[tuple[str, ...]]], laps: list[float] | None
) -> float:
    """Seconds to serve every batch in turn; each call's seconds appended to `laps`."""
    start = time.perf_counter()
    for batch in batches:
        called = time.perf_counter()
        out = server.predict(batch)
        if laps is not None:
            laps.append(time.perf_counter() - called)
        if len(out) != len(batch):
            raise ModelError(
                f"{server.name}: returned {len(out)} predictions for {len(batch)} texts."
            )
    return time.perf_counter() - start


def time_end_to_end(
    servers: dict[str, TextServer],
    texts: list[tuple[str, ...]],
    batch_sizes: tuple[int, ...] = (1, 32),
    limit: dict[int, int] | None = None,
    rounds: int = 3,
) -> dict[str, Any]:
    """Throughput (examples/s) and per-call latency of each server, raw strings to labels,
    and ratios to the first server: `measure_speed`'s result layout.

    At each batch size the first `limit[bs]` texts (default 200 at 1, 1024 at 32, else 256)
    are served in dataset order (not sorted by length, so batches hold real padding), in
    batches of `bs`; every server serves the very same batches. Each server first runs once
    over min(limit, 4 x bs) texts (warm-up), then the servers take turns `rounds` times and
    the median round is kept. `latency_ms[name][bs]` holds the p50 and p95 of one call (one
    batch: tokenizing, the model, reading the labels) over every call of every round.
    Progress counts the runs (warm-up and rounds; never inside a timed run).
    """
    from lmshrink.measure.interleave import interleave

    if not servers:
        raise ValueError("time_end_to_end needs at least one server.")
    if not texts:
        raise ValueError("time_end_to_end needs at least one text.")
    if rounds < 1 or not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"rounds and batch sizes must be at least 1, got {rounds}, {batch_sizes}.")
    limit = limit or {1: 200, 32: 1024}
    served = {bs: min(limit.get(bs, 256), len(texts)) for bs in batch_sizes}
    batches = {
        bs: [list(texts[i : min(i + bs, n)]) for i in range(0, n, bs)] for bs, n in served.items()
    }

    def run(name: str, bs: int, laps: list[float] | None) -> float:
        return _run(servers[name], batches[bs], laps)

    def warm(name: str, bs: int) -> None:
        _run(servers[name], batches[bs][: -(-min(served[bs], 4 * bs) // bs)], None)

    return interleave(list(servers), batch_sizes, rounds, run, warm, lambda name, bs: served[bs])
