"""fastText as a student, for latency budgets that no ONNX model meets.

fastText's supervised classifier (a bag of word and word-bigram embeddings, averaged, then
one linear layer) answers in about 10 microseconds a sentence on one core, under 20 with this
module's preprocessing and label mapping (SST-2 dev, batch 1), faster than any transformer or
BiLSTM, so `lmshrink shrink` offers it for the tightest budgets. lmshrink
trains it the distillation way: on the TEACHER's labels of the whole (augmented) transfer set
plus the gold labels of the labeled train rows (the caller builds that list), and serves it
with fastText itself, no PyTorch involved.

**Text.** One rule, `preprocess`, makes the line fastText reads, in training and serving
alike; it is written into the model folder's `fasttext.json` (`preprocessing`: the steps in
words and the token regex), so a server without lmshrink reproduces it with Python's `re`.

**Labels.** Each label is written as `__label__<id>` (its id, not its name: names may hold
spaces); `fasttext.json` holds the names in id order. Sequence classification only: fastText
has no regression loss, and the caller does not offer it for regression tasks.

**Folder.** `model.bin` (fastText's own format) and `fasttext.json` (format tag, labels,
preprocessing, settings, training rows, seed, size and SHA-256 of `model.bin`, fastText
version). fastText is an optional dependency, imported only inside the functions that need
it; training runs in a child process (`_train_in_subprocess` says why).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmshrink.config import option
from lmshrink.errors import (
    ConfigError,
    DataError,
    LmshrinkError,
    MissingDependencyError,
    ModelError,
    TrainingError,
)
from lmshrink.runs import write_text_atomic

FORMAT = "lmshrink-fasttext/1"
MODEL_FILE = "model.bin"
METADATA_FILE = "fasttext.json"
LABEL_PREFIX = "__label__"  # fastText's default label prefix
SEPARATOR = "__sep__"  # joins the two texts of a pair; `preprocess` never makes it from text
LOSSES = ("softmax", "hs", "ova")
# fastText adds 1e-5 to each probability before taking its log (`std_log`), so the values it
# returns are p + 1e-5; `predict_proba` takes it off again.
_FASTTEXT_SMOOTHING = 1e-5

# A token: a run of letters and digits, or one character that is none of those, whitespace, a
# control character or a lone surrogate (punctuation, symbols, emoji, and "_", which Python
# counts as a word character: splitting it off keeps user text from ever forming fastText's
# label prefix `__label__` or the separator `__sep__`).
TOKEN_PATTERN = r"[^\W_]+|[^\w\s\x00-\x1f\x7f-\x9f\ud800-\udfff]|_"
_TOKEN = re.compile(TOKEN_PATTERN)
PREPROCESSING = {
    "steps": [
        "lowercase each text with Python's str.lower()",
        "take its tokens with re.findall(token_regex, text): runs of letters and digits, and "
        "every other character alone, except whitespace and control characters, which are "
        "dropped (so tabs and newlines never reach fastText, which reads one example a line)",
        "join the tokens with one space",
        "join the texts of a pair with ' __sep__ ' (separator between spaces)",
    ],
    "token_regex": TOKEN_PATTERN,
    "separator": SEPARATOR,
    "example": {
        "input": ["Don't\tstop!", "It's GREAT."],
        "output": "don ' t stop ! __sep__ it ' s great .",
    },
}


def require_fasttext() -> Any:
    """The `fasttext` module, or a MissingDependencyError that says how to install it.

    The package to install is `fasttext-numpy2-wheel` (import name `fasttext`), a build of
    fastText 0.9.2 for numpy 2: `fasttext-wheel` 0.9.2 fails at predict under numpy 2 (it
    calls `np.array(probs, copy=False)`, which numpy 2 refuses)."""
    try:
        import fasttext
    except ImportError:
        raise MissingDependencyError(
            "the fastText student needs the package fasttext; install it with "
            "pip install fasttext-numpy2-wheel (not fasttext-wheel, whose 0.9.2 fails at "
            "predict under numpy 2)."
        ) from None
    return fasttext


def preprocess(fields: tuple[str, ...]) -> str:
    """The one line fastText reads for an example, in training and serving alike.

    Lowercase; runs of letters and digits are tokens, and each other character is a token of
    its own (punctuation split off: "great!" -> "great !", "don't" -> "don ' t"); whitespace
    of any kind (tabs, newlines) and control characters only separate tokens; tokens are
    joined with one space. The texts of a pair are joined with " __sep__ ". The rule is
    `PREPROCESSING`, written into each model folder's `fasttext.json`. A plain string is
    read as one text."""
    if isinstance(fields, str):
        fields = (fields,)
    return f" {SEPARATOR} ".join(" ".join(_TOKEN.findall(text.lower())) for text in fields)


@dataclasses.dataclass
class FastTextSettings:
    """fastText's training settings (the names of `fasttext.train_supervised` in brackets).

    The defaults were chosen on SST-2 (see the comment below the class): word bigrams and
    enough hash buckets matter, the rest barely does, so the dimension is small to keep the
    model file small."""

    dim: int = option(25, "size of the word vectors (dim).", min=1)
    word_ngrams: int = option(
        2, "longest word n-gram used as a feature; 1: words only (wordNgrams).", min=1
    )
    epoch: int = option(5, "passes over the training lines (epoch).", min=1)
    lr: float = option(
        0.1,
        "learning rate (lr); lower it if training stops with 'Encountered NaN'.",
        min=0.0,
    )
    min_count: int = option(1, "leave out words seen fewer times than this (minCount).", min=1)
    bucket: int = option(
        200_000,
        "hash buckets for word n-grams (bucket); the model file holds (words + bucket) x dim "
        "floats, used or not: 200,000 x 25 x 4 bytes = 20 MB.",
        min=0,
    )
    loss: str = option(
        "softmax", f"loss: {', '.join(LOSSES)} (loss); softmax gives probabilities summing to 1."
    )


# How the defaults were chosen. SST-2 train split 90/10 with a fixed seed: fit on 60,615 rows,
# accuracy on the other 6,734 (held-out train; dev was never used to choose, its accuracy is
# shown for information), 1 thread, mean of fastText seeds 1, 2, 3 (their spread <= 0.0006;
# 0 and 1 are the same seed in fastText). SST-2 train holds phrases of the same sentences, so
# held-out accuracy runs high, and differences under ~0.003 are noise.
#   dim  ngrams  bucket  lr    epoch  held-out  dev     model
#   50   2       200k    0.5   5      0.9249    0.8085  43 MB
#   50   2       200k    0.25  5      0.9256    0.8081  43 MB
#   50   2       200k    0.1   5      0.9275    0.8085  43 MB
#   50   2       200k    0.1   10     0.9267    0.8157  43 MB
#   50   2       200k    0.05  10     0.9287    0.8108  43 MB
#   50   2       200k    0.5   10     0.9240    0.8127  43 MB
#   50   1       -       0.5   5      0.9057    0.8180  3 MB   (words only: -2 points)
#   50   3       200k    0.5   5      0.9255    0.8054  43 MB
#   50   2       100k    0.1   5      0.9230    0.8184  23 MB  (too few buckets: -0.5 point)
#   50   2       500k    0.1   5      0.9277    0.8234  103 MB
#   100  2       200k    0.1   5      0.9273    0.8081  86 MB
#   100  2       2M      0.5   10     0.9275    0.8219  806 MB (fastText's own bucket default)
#   10   2       200k    0.1   5      0.9264    0.8089  9 MB
#   10   2       1M      0.1   10     0.9288    0.8177  41 MB
#   25   2       400k    0.1   5      0.9277    0.8203  42 MB
#   25   2       200k    0.1   5      0.9272    0.8077  22 MB  <- chosen
# Loss ova 0.9274, hs 0.9270 and min_count 2 0.9268 (at dim 50, lr 0.1) changed nothing.
# lr 0.1 (fastText's own default) was the best at 5 epochs; lower lr needs more epochs.


def check_settings(settings: FastTextSettings) -> None:
    """Refuse settings fastText would crash on or ignore, before anything is written."""
    if settings.loss not in LOSSES:
        raise ConfigError(f"fastText loss {settings.loss!r} is unknown; use one of {LOSSES}.")
    for name in ("dim", "word_ngrams", "epoch", "min_count"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"fastText {name} must be 1 or more, got {getattr(settings, name)}.")
    if not settings.lr > 0:  # also refuses NaN
        raise ConfigError(f"fastText lr must be above 0, got {settings.lr}.")
    if settings.bucket < 0 or (settings.word_ngrams > 1 and settings.bucket < 1):
        # fastText hashes n-grams modulo bucket: 0 buckets with n-grams would divide by zero.
        raise ConfigError(
            f"fastText bucket must be 1 or more when word_ngrams > 1, got {settings.bucket}."
        )


def teacher_hard_labels(logits: Any) -> list[int]:
    """The teacher's label of each row: the argmax of its logits `[N, C]` (numpy array or
    torch tensor; the first label wins a tie).

    Hard labels because fastText's softmax loss learns one label per line: given several
    `__label__`s, it picks one of them at random on each pass, as if they were equally
    likely, so the teacher's probabilities cannot be written on one line. A soft-label
    alternative would repeat each row with labels in proportion to those probabilities; it
    multiplies the training file, and lmshrink takes the argmax instead."""
    if hasattr(logits, "detach"):  # a torch tensor, without importing torch
        logits = logits.detach().float().cpu().numpy()
    array = np.asarray(logits)
    if array.ndim != 2 or array.shape[1] < 2:
        raise ConfigError(
            f"teacher logits must be [rows, labels] with 2 or more labels, got shape "
            f"{list(array.shape)}; the fastText student is for classification tasks."
        )
    if not np.isfinite(array).all():
        row = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise DataError(f"teacher logits of row {row} are NaN or infinite; relabel the data.")
    return array.argmax(axis=1).tolist()


def _check_inputs(
    texts: Sequence[tuple[str, ...]], labels: Sequence[int], label_names: Sequence[str]
) -> int:
    """Validate the training rows; return their number of texts (1, or 2 for pairs)."""
    if not texts:
        raise ConfigError("no rows to train the fastText student on; the transfer set is empty.")
    if len(texts) != len(labels):
        raise ConfigError(f"{len(texts)} texts but {len(labels)} labels; give one label per text.")
    if len(label_names) < 2:
        raise ConfigError(f"the fastText student needs 2 or more labels, got {len(label_names)}.")
    fields = 1 if isinstance(texts[0], str) else len(texts[0])
    for row, (text, label) in enumerate(zip(texts, labels, strict=True)):
        parts = (text,) if isinstance(text, str) else text
        if len(parts) != fields or not all(isinstance(part, str) for part in parts):
            raise ConfigError(
                f"row {row} is {text!r:.60}; every row must be a tuple of {fields} string(s), "
                "as row 0 is."
            )
        if (
            isinstance(label, bool)
            or not isinstance(label, numbers.Integral)
            or not 0 <= label < len(label_names)
        ):
            raise ConfigError(
                f"row {row}: label id {label!r} is not one of 0 to {len(label_names) - 1} "
                "(ids into label_names)."
            )
    return fields


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fasttext_version() -> str:
    """The installed distribution that provides `fasttext`, with its version."""
    from importlib import metadata

    names = metadata.packages_distributions().get("fasttext", [])
    return ", ".join(f"{name} {metadata.version(name)}" for name in names) or "unknown"


# The child process that trains: it reads its request (where fasttext is installed, the
# train_supervised arguments, where to save) as JSON on stdin.
_TRAIN_CHILD = """\
import json, sys
request = json.load(sys.stdin)
sys.path.insert(0, request["path"])
import fasttext
try:
    model = fasttext.train_supervised(**request["args"])
except (RuntimeError, ValueError) as exc:
    sys.stderr.write(f"fasttext-error: {exc}\\n")
    sys.exit(3)
model.save_model(request["out"])
"""


def _train_in_subprocess(request: dict[str, Any], lr: float) -> None:
    """Run `fasttext.train_supervised` in a fresh Python process whose allocator zeroes
    memory, and turn its failures into one-line errors.

    Why: fastText 0.9.2 (`DenseMatrix::uniform`) fills only `thread` tenths of the input
    matrix with random values and leaves the rest UNINITIALIZED. Where that memory is fresh
    from the OS it is zero; where the allocator hands back memory freed earlier in the
    process (a previous fastText model, tensors), training starts from garbage: the same
    data, settings and seed give another model, or fail with "Encountered NaN" (seen on SST-2
    on the second training in one process). `MALLOC_PERTURB_=255` makes glibc's malloc zero
    every block it hands out, so the rest is always zero, and a child process keeps both the
    allocator setting and any crash of fastText's C++ (an abort, a signal) away from the
    caller. (Other C libraries ignore the variable; there the fresh process, whose large
    blocks come zeroed from the OS, is what is left.) The cost is the start of a Python
    process, about 0.2 s."""
    env = {**os.environ, "MALLOC_PERTURB_": "255"}
    proc = subprocess.run(
        [sys.executable, "-c", _TRAIN_CHILD],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode == 0:
        return
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    message = lines[-1].removeprefix("fasttext-error: ") if lines else ""
    if "nan" in message.lower():
        raise TrainingError(
            f"fastText training diverged ({message}); lower its lr (now {lr}, e.g. to "
            f"{lr / 5:g}) or give it more rows."
        )
    if proc.returncode < 0:
        message = f"stopped by signal {-proc.returncode}"
    raise LmshrinkError(f"fastText could not train ({message or f'exit {proc.returncode}'}).")


def train_fasttext(
    texts: list[tuple[str, ...]],
    labels: list[int],
    label_names: list[str],
    folder: Path,
    settings: FastTextSettings,
    seed: int = 0,
    threads: int = 1,
) -> dict:
    """Train fastText on `texts` (one tuple of 1 or 2 strings a row) and their label ids
    (into `label_names`), save `folder/model.bin` and `folder/fasttext.json`, and return the
    metadata written.

    With one thread, training is deterministic (same data, settings and seed: same
    `model.bin`, byte for byte); more threads train faster, but their updates race
    (Hogwild), so results vary a little. fastText's seeds 0 and 1 are the same seed (its
    `std::minstd_rand` turns 0 into 1).
    The training file is written inside `folder` and removed afterwards; the two model files
    are each replaced atomically, `fasttext.json` last."""
    ft = require_fasttext()
    check_settings(settings)
    fields = _check_inputs(texts, labels, label_names)
    if threads < 1:
        raise ConfigError(f"fastText threads must be 1 or more, got {threads}.")
    if not 0 <= seed < 2**31:  # a C int in fastText
        raise ConfigError(f"fastText seed must be between 0 and {2**31 - 1}, got {seed}.")
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    handle, train_file = tempfile.mkstemp(prefix=".fasttext-train-", suffix=".txt", dir=folder)
    model_tmp = folder / f".{MODEL_FILE}.tmp-{os.getpid()}"
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as out:
            for text, label in zip(texts, labels, strict=True):
                out.write(f"{LABEL_PREFIX}{int(label)} {preprocess(text)}\n")
        request = {
            "path": str(Path(ft.__file__).resolve().parents[1]),  # where fasttext is installed
            "out": str(model_tmp),
            "args": {
                "input": train_file,
                "dim": settings.dim,
                "wordNgrams": settings.word_ngrams,
                "epoch": settings.epoch,
                "lr": settings.lr,
                "minCount": settings.min_count,
                "bucket": settings.bucket,
                "loss": settings.loss,
                "thread": threads,
                "seed": seed,
                "verbose": 0,
            },
        }
        start = time.perf_counter()
        _train_in_subprocess(request, settings.lr)
        seconds = time.perf_counter() - start
        digest = _sha256(model_tmp)
        os.replace(model_tmp, folder / MODEL_FILE)
    except BaseException:
        Path(train_file).unlink(missing_ok=True)
        model_tmp.unlink(missing_ok=True)
        if created and not any(folder.iterdir()):
            folder.rmdir()  # leave no empty folder behind a failed training
        raise
    Path(train_file).unlink(missing_ok=True)
    metadata = {
        "format": FORMAT,
        "labels": list(label_names),
        "label_prefix": LABEL_PREFIX,
        "fields": fields,
        "preprocessing": PREPROCESSING,
        "settings": dataclasses.asdict(settings),
        "seed": seed,
        "threads": threads,
        "train_rows": len(texts),
        "train_seconds": round(seconds, 3),
        "model_bytes": (folder / MODEL_FILE).stat().st_size,
        "model_sha256": digest,
        "fasttext_version": _fasttext_version(),
    }
    write_text_atomic(folder / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")
    return metadata


class FastTextServer:
    """A trained fastText student, served by fastText: texts in, label ids or probabilities
    out, with the preprocessing it was trained with."""

    def __init__(self, model: Any, metadata: dict[str, Any], folder: Path | None = None):
        self.model = model
        self.metadata = metadata
        self.folder = folder
        self.label_names: list[str] = list(metadata["labels"])
        self.fields: int = int(metadata.get("fields", 1))
        prefix = metadata.get("label_prefix", LABEL_PREFIX)
        # fastText's label strings -> column; labels never seen in training have no string.
        self._columns = {f"{prefix}{i}": i for i in range(len(self.label_names))}
        unknown = set(model.get_labels()) - set(self._columns)
        if unknown:
            raise ModelError(
                f"{folder}: {MODEL_FILE} predicts labels {sorted(unknown)} that "
                f"{METADATA_FILE} does not list; the two files come from different trainings."
            )

    @classmethod
    def from_folder(cls, folder: str | Path) -> FastTextServer:
        """Load `folder/model.bin` and `folder/fasttext.json` as `train_fasttext` wrote them."""
        folder = Path(folder)
        missing = [name for name in (MODEL_FILE, METADATA_FILE) if not (folder / name).is_file()]
        if missing:
            raise ModelError(
                f"{folder}: no fastText student here (missing {' and '.join(missing)}); "
                "give the folder that train_fasttext wrote."
            )
        try:
            metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelError(f"{folder / METADATA_FILE}: not valid JSON ({exc}).") from None
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
            found = metadata.get("format") if isinstance(metadata, dict) else None
            raise ModelError(
                f"{folder / METADATA_FILE}: format {found!r} is not {FORMAT!r}; "
                "train the student again with this version of lmshrink."
            )
        labels = metadata.get("labels")
        if not isinstance(labels, list) or len(labels) < 2:
            raise ModelError(f"{folder / METADATA_FILE}: 'labels' must list 2 or more names.")
        ft = require_fasttext()
        model_path = folder / MODEL_FILE
        if model_path.stat().st_size != metadata.get("model_bytes") or _sha256(
            model_path
        ) != metadata.get("model_sha256"):
            # fastText reads a truncated file without complaint, into garbage weights.
            raise ModelError(
                f"{model_path}: does not match {METADATA_FILE} (size or checksum); it is "
                "truncated or from another training; train the student again."
            )
        try:
            model = ft.load_model(str(model_path))
        except (RuntimeError, ValueError, MemoryError) as exc:
            raise ModelError(
                f"{model_path}: fastText cannot load it ({exc}); train the student again."
            ) from None
        return cls(model, metadata, folder)

    def _lines(self, texts: Sequence[tuple[str, ...]]) -> list[str]:
        lines = []
        for row, text in enumerate(texts):
            fields = 1 if isinstance(text, str) else len(text)
            if fields != self.fields:
                raise DataError(
                    f"row {row} has {fields} texts; this fastText student reads {self.fields}."
                )
            lines.append(preprocess(text))
        return lines

    def predict_proba(self, texts: Sequence[tuple[str, ...]]) -> np.ndarray:
        """Probabilities `[B, C]` in label-id order (a label fastText never saw in training
        gets 0). fastText returns each row's labels sorted by probability: asked for all of
        them (k=-1), they are put back in id order here."""
        lines = self._lines(texts)
        out = np.zeros((len(lines), len(self.label_names)), dtype=np.float32)  # [B, C]
        if not lines:
            return out
        row_labels, row_probs = self.model.predict(lines, k=-1, threshold=0.0)
        for row, (names, probs) in enumerate(zip(row_labels, row_probs, strict=True)):
            out[row, [self._columns[name] for name in names]] = probs
        return np.clip(out - _FASTTEXT_SMOOTHING, 0.0, 1.0)

    def predict(self, texts: Sequence[tuple[str, ...]]) -> np.ndarray:
        """Label ids `[B]` (int64): the argmax of `predict_proba` (the lowest id wins a tie)."""
        return self.predict_proba(texts).argmax(axis=1).astype(np.int64)
