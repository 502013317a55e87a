"""The peers of the `lmshrink shrink` benchmark: what practitioners use instead of lmshrink,
trained, scored and timed in one process of the peers venv (bench/peers_env.py).

    PEERS_PY bench/shrink_peers.py --glue-dir DIR --task sst2|mrpc --minilm MINILM_FOLDER \
        --work WORKDIR --out RESULT.json [--time NAME=ONNX_FOLDER ...] \
        [--speed-examples 200] [--rounds 5] [--train-samples 0]

PEERS_PY is the peers venv's python, never lmshrink's: Model2Vec's distill extra needs
transformers<5.4. bench/shrink.py runs it; it can be run by hand the same way.

A pair task's two texts are joined into one input for both peers (neither takes pairs): for
fastText with " __sep__ " between its preprocessed texts, for Model2Vec with a space.
Scores are the task's GLUE score (SST-2: accuracy; MRPC: the mean of F1 and accuracy, as
`lmshrink shrink` scores its candidates), in %.

- **fastText** ("what a practitioner trains"): supervised fastText on the gold train labels
  only. Lowercasing and splitting punctuation off are the only preprocessing. Settings are
  chosen on a fixed 90/10 split of TRAIN (never dev) over a small grid (epoch x lr x
  wordNgrams, dim 100, fastText's other defaults), then the model is retrained on all of train
  with them. Kept in WORK/fasttext-peer/ (model.bin, settings.json).
- **Model2Vec**: `model2vec.distill.distill` of the packaged MiniLM folder (pca_dims 256),
  then `StaticModelForClassification.from_static_model(...).fit(texts, labels)` with
  Model2Vec's defaults, saved as its numpy inference pipeline (`to_pipeline()`), which is
  what it serves. Kept in WORK/model2vec/.

A kept model is reused only when it was trained on the same rows (same file, row count and
--train-samples); otherwise it is trained again. Each peer and each `--time NAME=FOLDER`
(an lmshrink ONNX folder: model.onnx, tokenizer.json, export.json) is scored on the GLUE dev
set one text at a time (as the batch-1 budgets serve it) and timed end to end, interleaved, by
`lmshrink.measure.end_to_end.time_end_to_end`:
batch 1 over the first --speed-examples dev texts, batch 32 over the first 4x as many.
Servers are listed ONNX folders first (in the order given), then fasttext and model2vec;
`time_end_to_end`'s ratios are to the first. Every library runs on one thread.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import random
import re
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

# One thread for every library, set before numpy, torch, onnxruntime or tokenizers load.
for _var in (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "RAYON_NUM_THREADS",
):
    os.environ[_var] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TQDM_DISABLE"] = "1"  # Model2Vec's per-step bars would flood a long run's log
# lmshrink is installed here only for its ONNX server; its Auto-class registration, which
# importing transformers (Model2Vec's) sets off, does not apply to this venv's transformers.
warnings.filterwarnings("ignore", message="lmshrink could not register model classes")

import numpy as np  # noqa: E402
from peers_env import DISTRIBUTIONS  # noqa: E402

from lmshrink.data.tasks import get_task  # noqa: E402
from lmshrink.measure.end_to_end import OnnxTextServer, time_end_to_end  # noqa: E402
from lmshrink.measure.metrics import compute, task_score  # noqa: E402
from lmshrink.runs import write_text_atomic  # noqa: E402

# The GLUE tasks whose files this script reads (lmshrink's Task gives their folder, columns
# and metrics): a header row, and labels that are the ids 0..C-1.
TASKS = ("sst2", "mrpc")
PAIR_SEPARATOR = "__sep__"  # between a pair's texts in a fastText line
SEED = 42
# fastText: the grid searched on the 90/10 split of train; dim and the rest fixed.
FT_GRID = {"epoch": (5, 10, 25), "lr": (0.1, 0.5), "wordNgrams": (1, 2)}
FT_FIXED = {"dim": 100}
FT_HELDOUT = 0.1
FT_LABEL = "__label__"
FT_DIR = "fasttext-peer"
M2V_DIR = "model2vec"
M2V_PCA_DIMS = 256
SETTINGS_FILE = "settings.json"
PEERS = ("fasttext", "model2vec")
# Dev texts per call when scoring: one, as the batch-1 budgets serve them (dynamic int8's
# activation scales depend on the batch; lmshrink shrink scores its candidates the same way).
EVAL_BATCH = 1

_PUNCT = re.compile(r"([^\w\s])")
_SPACE = re.compile(r"\s+")


def preprocess(text: str) -> str:
    """fastText's input line: lowercased, each punctuation mark a token of its own."""
    return _SPACE.sub(" ", _PUNCT.sub(r" \1 ", text.lower())).strip()


def fasttext_line(fields: tuple[str, ...]) -> str:
    """One example as the fastText peer reads it: each text preprocessed, a pair's joined by
    the separator token ("_" is a word character, so preprocessing never splits it)."""
    return f" {PAIR_SEPARATOR} ".join(preprocess(text) for text in fields)


# --- data ---------------------------------------------------------------------------------


def read_split(
    path: Path, text_columns: tuple[str, ...], label_column: str
) -> tuple[list[tuple[str, ...]], list[int]]:
    """Inputs (one tuple of texts per row) and integer labels of a GLUE TSV with a header row
    (csv module, quoting off; MRPC's header starts with a byte-order mark)."""
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; pass --glue-dir, the GLUE glue_data folder.")
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, body = rows[0], [r for r in rows[1:] if r]
    try:
        columns, y = [header.index(c) for c in text_columns], header.index(label_column)
    except ValueError:
        raise SystemExit(
            f"error: {path}: header {header} lacks the columns {text_columns!r}, {label_column!r}."
        ) from None
    texts, labels = [], []
    for number, row in enumerate(body, start=2):
        try:
            texts.append(tuple(row[c] for c in columns))
            labels.append(int(row[y]))
        except (IndexError, ValueError):
            raise SystemExit(f"error: {path}, line {number}: cannot read {row!r}.") from None
    return texts, labels


def subsample(
    texts: list[tuple[str, ...]], labels: list[int], n: int
) -> tuple[list[tuple[str, ...]], list[int], list[int] | None]:
    """A fixed-seed random subset of n rows (in file order); n = 0 or >= len: all rows."""
    if n <= 0 or n >= len(texts):
        return texts, labels, None
    keep = sorted(random.Random(SEED).sample(range(len(texts)), n))
    return [texts[i] for i in keep], [labels[i] for i in keep], keep


def task_metrics(task: str, predicted: Sequence[int], gold: Sequence[int]) -> dict[str, float]:
    """The task's GLUE metrics in % and `score`, their mean, as lmshrink scores its
    candidates (`lmshrink.measure.metrics`)."""
    metrics = compute(get_task(task).metrics, predicted, gold)
    return {**{k: 100 * v for k, v in metrics.items()}, "score": 100 * task_score(metrics)}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def kept_settings(folder: Path, data: dict[str, Any], label: str) -> dict[str, Any] | None:
    """The settings of a finished peer in `folder` trained on `data`, else None (and why)."""
    path = folder / SETTINGS_FILE
    if not path.is_file():
        return None
    settings = json.loads(path.read_text())
    if settings.get("train_data") != data:
        print(f"[{label}] the kept model was trained on other rows; training again", flush=True)
        return None
    print(f"[{label}] kept the trained model in {folder}", flush=True)
    return settings


def fresh(folder: Path) -> Path:
    """An empty temporary folder beside `folder`, renamed onto it by `publish` (those that
    killed runs left are removed)."""
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, folder: Path, settings: dict[str, Any]) -> None:
    """Write settings.json last, then put `tmp` in place of `folder`: a killed run leaves no
    folder that looks finished."""
    write_text_atomic(tmp / SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


# --- fastText -----------------------------------------------------------------------------


def _ft_write(path: Path, texts: Sequence[tuple[str, ...]], labels: Sequence[int]) -> None:
    lines = [f"{FT_LABEL}{y} {fasttext_line(t)}\n" for t, y in zip(texts, labels, strict=True)]
    path.write_text("".join(lines), encoding="utf-8")


def _ft_train(path: Path, params: dict[str, Any]) -> Any:
    import fasttext

    return fasttext.train_supervised(
        input=str(path), **params, **FT_FIXED, thread=1, seed=0, verbose=0
    )


def _ft_labels(model: Any, texts: Sequence[tuple[str, ...]]) -> np.ndarray:
    labels, _ = model.predict([fasttext_line(t) for t in texts])
    return np.array([int(ls[0][len(FT_LABEL) :]) for ls in labels], dtype=np.int64)


def train_fasttext(
    work: Path, task: str, texts: list[tuple[str, ...]], labels: list[int], data: dict[str, Any]
) -> dict[str, Any]:
    """The fastText peer's folder (trained unless kept) and its settings."""
    folder = work / FT_DIR
    settings = kept_settings(folder, data, "fasttext")
    if settings is not None:
        return settings
    tmp = fresh(folder)
    order = list(range(len(texts)))
    random.Random(SEED).shuffle(order)
    cut = int(round(len(order) * (1 - FT_HELDOUT)))
    fit, held = order[:cut], order[cut:]
    _ft_write(tmp / "grid-train.txt", [texts[i] for i in fit], [labels[i] for i in fit])
    held_texts, held_labels = [texts[i] for i in held], [labels[i] for i in held]
    grid: list[dict[str, Any]] = []
    start = time.perf_counter()
    for epoch in FT_GRID["epoch"]:
        for lr in FT_GRID["lr"]:
            for ngrams in FT_GRID["wordNgrams"]:
                params = {"epoch": epoch, "lr": lr, "wordNgrams": ngrams}
                try:
                    model = _ft_train(tmp / "grid-train.txt", params)
                except RuntimeError as exc:  # fastText's "Encountered NaN" at a high lr
                    grid.append({**params, "heldout_score": None, "error": str(exc)})
                    print(f"[fasttext] {params}: failed ({exc}); left out", flush=True)
                    continue
                held_score = task_metrics(task, _ft_labels(model, held_texts), held_labels)["score"]
                del model
                grid.append({**params, "heldout_score": held_score})
                print(f"[fasttext] {params}: {held_score:.2f} on 10% of train", flush=True)
    grid_seconds = time.perf_counter() - start
    finished = [g for g in grid if g["heldout_score"] is not None]
    if not finished:
        raise SystemExit(f"error: fastText failed at every grid setting: {grid}")
    best = max(finished, key=lambda g: g["heldout_score"])  # first of equals: grid order
    chosen = {k: best[k] for k in FT_GRID}
    _ft_write(tmp / "train.txt", texts, labels)
    start = time.perf_counter()
    model = _ft_train(tmp / "train.txt", chosen)
    train_seconds = time.perf_counter() - start
    model.save_model(str(tmp / "model.bin"))
    for name in ("grid-train.txt", "train.txt"):
        (tmp / name).unlink()
    settings = {
        "chosen": {**chosen, **FT_FIXED},
        "other_settings": "fastText train_supervised defaults (minCount 1, loss softmax, "
        "bucket 2000000 when wordNgrams > 1), thread 1, seed 0",
        "preprocessing": "lowercase; each non-word, non-space character split off as a token "
        f"(re.sub({_PUNCT.pattern!r}, r' \\1 ', text.lower()), whitespace collapsed); a "
        f"pair's texts joined by ' {PAIR_SEPARATOR} '",
        "selection": f"the task's score on a fixed-seed {FT_HELDOUT:.0%} split of train "
        f"(seed {SEED})",
        "grid": grid,
        "grid_seconds": grid_seconds,
        "train_seconds": train_seconds,
        "train_data": data,
        "fasttext_version": _version("fasttext-numpy2-wheel"),
    }
    publish(tmp, folder, settings)
    print(f"[fasttext] chose {chosen}; retrained on all train in {train_seconds:.1f} s", flush=True)
    return settings


class FastTextServer:
    """The fastText peer served as fastText serves: its preprocessing, then `predict`
    (single-threaded in fastText)."""

    kind = "fasttext"

    def __init__(self, folder: Path, name: str = "fasttext") -> None:
        import fasttext

        self.name = name
        self.model = fasttext.load_model(str(folder / "model.bin"))

    def predict(self, texts: Sequence[tuple[str, ...]]) -> np.ndarray:
        return _ft_labels(self.model, texts)


# --- Model2Vec ----------------------------------------------------------------------------


def _torch_one_thread() -> None:
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # already set, or parallel work has started
        torch.set_num_interop_threads(1)


def model2vec_text(fields: tuple[str, ...]) -> str:
    """One example as the Model2Vec peer reads it: a pair's texts joined by a space."""
    return " ".join(fields)


def train_model2vec(
    work: Path,
    minilm: Path,
    texts: list[tuple[str, ...]],
    labels: list[int],
    data: dict[str, Any],
) -> dict[str, Any]:
    """The Model2Vec peer's folder (distilled and fitted unless kept) and its settings."""
    folder = work / M2V_DIR
    settings = kept_settings(folder, data, "model2vec")
    if settings is not None:
        return settings
    _torch_one_thread()
    from model2vec.distill import distill
    from model2vec.train import StaticModelForClassification

    tmp = fresh(folder)
    print(f"[model2vec] distilling {minilm} (pca_dims {M2V_PCA_DIMS})", flush=True)
    start = time.perf_counter()
    static = distill(model_name=str(minilm), pca_dims=M2V_PCA_DIMS)
    distill_seconds = time.perf_counter() - start
    print(f"[model2vec] distilled in {distill_seconds:.1f} s; fitting the classifier", flush=True)
    start = time.perf_counter()
    classifier = StaticModelForClassification.from_static_model(model=static)
    classifier.fit([model2vec_text(t) for t in texts], labels, device="cpu")
    fit_seconds = time.perf_counter() - start
    classifier.to_pipeline().save_pretrained(str(tmp))
    settings = {
        "base": str(minilm),
        "distill": {"pca_dims": M2V_PCA_DIMS, "other_settings": "model2vec.distill defaults"},
        "classifier": {
            "n_layers": classifier.n_layers,
            "hidden_dim": classifier.hidden_dim,
            "fit": "StaticModelForClassification.fit defaults (early stopping on a 10% split "
            "of the train rows it is given), on the CPU",
        },
        "served_as": "StaticModelPipeline (numpy), the folder to_pipeline().save_pretrained writes",
        "distill_seconds": distill_seconds,
        "fit_seconds": fit_seconds,
        "train_seconds": distill_seconds + fit_seconds,
        "train_data": data,
        "model2vec_version": _version("model2vec"),
    }
    publish(tmp, folder, settings)
    print(f"[model2vec] fitted in {fit_seconds:.1f} s", flush=True)
    return settings


class Model2VecServer:
    """The Model2Vec classifier as Model2Vec serves it: its numpy pipeline's `predict` on the
    raw strings (no multiprocessing)."""

    kind = "model2vec"

    def __init__(self, folder: Path, name: str = "model2vec") -> None:
        from model2vec.inference import StaticModelPipeline

        self.name = name
        self.pipeline = StaticModelPipeline.from_pretrained(str(folder))

    def predict(self, texts: Sequence[tuple[str, ...]]) -> np.ndarray:
        out = self.pipeline.predict([model2vec_text(t) for t in texts], use_multiprocessing=False)
        return np.asarray(out).astype(np.int64)


# --- scoring and timing -------------------------------------------------------------------


def score(
    task: str, server: Any, texts: list[tuple[str, ...]], labels: list[int]
) -> dict[str, float]:
    """Dev metrics (%, `task_metrics`) of a server, served EVAL_BATCH inputs at a time."""
    predicted: list[int] = []
    for i in range(0, len(texts), EVAL_BATCH):
        predicted.extend(int(p) for p in server.predict(texts[i : i + EVAL_BATCH]))
    return task_metrics(task, predicted, labels)


def _version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def parse_time(values: list[str]) -> dict[str, Path]:
    folders: dict[str, Path] = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"error: --time takes NAME=ONNX_FOLDER, got {value!r}.")
        if name in folders or name in PEERS:
            raise SystemExit(f"error: --time name {name!r} is taken; choose another.")
        folders[name] = Path(folder).expanduser()
    return folders


def lmshrink_server(name: str, folder: Path) -> Any:
    """An lmshrink model folder as it would be served: an ONNX folder by ONNX Runtime, a
    fastText student (lmshrink shrink's, with fasttext.json) by fastText through
    lmshrink's own server (its text rule included in the timing)."""
    if (folder / "fasttext.json").is_file():
        from lmshrink.search.fasttext_student import FastTextServer as StudentServer

        server = StudentServer.from_folder(folder)
        server.name, server.kind = name, "fasttext"
        return server
    return OnnxTextServer(folder, threads=1, name=name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue-dir", type=Path, required=True, help="GLUE glue_data folder.")
    parser.add_argument("--task", default="sst2", choices=TASKS)
    parser.add_argument("--minilm", type=Path, required=True, help="packaged MiniLM folder")
    parser.add_argument("--work", type=Path, required=True, help="where the peers are kept")
    parser.add_argument("--out", type=Path, required=True, help="the result JSON file")
    parser.add_argument(
        "--time", action="append", default=[], metavar="NAME=ONNX_FOLDER", help="repeatable"
    )
    parser.add_argument("--speed-examples", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--train-samples", type=int, default=0, help="0: all train rows")
    args = parser.parse_args(argv)
    folders = parse_time(args.time)
    if not (args.minilm / "config.json").is_file():
        raise SystemExit(f"error: {args.minilm} is not a model folder (it has no config.json).")
    if args.speed_examples < 1 or args.rounds < 1:
        raise SystemExit("error: --speed-examples and --rounds must be at least 1.")

    task = get_task(args.task)
    sub, text_cols, label_col = task.glue_folder, task.text_columns, task.label_column
    train_file = args.glue_dir / sub / "train.tsv"
    train_texts, train_labels = read_split(train_file, text_cols, label_col)
    all_rows = len(train_texts)
    train_texts, train_labels, _ = subsample(train_texts, train_labels, args.train_samples)
    dev_texts, dev_labels = read_split(args.glue_dir / sub / "dev.tsv", text_cols, label_col)
    data = {
        "file": str(train_file.resolve()),
        "file_rows": all_rows,
        "rows": len(train_texts),
        "train_samples": args.train_samples,
        "seed": SEED,
    }
    print(f"[peers] {args.task}: {len(train_texts)} train rows, {len(dev_texts)} dev", flush=True)
    args.work.mkdir(parents=True, exist_ok=True)

    trained = {
        "fasttext": train_fasttext(args.work, args.task, train_texts, train_labels, data),
        "model2vec": train_model2vec(args.work, args.minilm, train_texts, train_labels, data),
    }
    servers: dict[str, Any] = {
        name: lmshrink_server(name, folder) for name, folder in folders.items()
    }
    servers["fasttext"] = FastTextServer(args.work / FT_DIR)
    servers["model2vec"] = Model2VecServer(args.work / M2V_DIR)

    peers: dict[str, Any] = {}
    for name in PEERS:
        metrics = score(args.task, servers[name], dev_texts, dev_labels)
        folder = args.work / (FT_DIR if name == "fasttext" else M2V_DIR)
        peers[name] = {
            "dev_score": metrics["score"],
            "dev_metrics": metrics,
            "settings": trained[name],
            "train_seconds": trained[name]["train_seconds"],
            "size_bytes": folder_bytes(folder) - (folder / SETTINGS_FILE).stat().st_size,
        }
        print(f"[{name}] dev {metrics}", flush=True)
    scored: dict[str, Any] = {}
    for name, folder in folders.items():
        metrics = score(args.task, servers[name], dev_texts, dev_labels)
        scored[name] = {
            "folder": str(folder),
            "dev_score": metrics["score"],
            "dev_metrics": metrics,
            "size_bytes": sum(
                (folder / f).stat().st_size
                for f in ("model.onnx", "model.bin")
                if (folder / f).is_file()
            ),
        }
        print(f"[{name}] dev {metrics}", flush=True)

    n = args.speed_examples
    print(f"[peers] timing {', '.join(servers)}: batch 1 x {n}, batch 32 x {4 * n}", flush=True)
    timing = time_end_to_end(servers, dev_texts, (1, 32), {1: n, 32: 4 * n}, args.rounds)
    for name in servers:
        lat = timing["latency_ms"][name]
        print(
            f"[{name}] p50 {lat['1']['p50']:.3f} ms at batch 1, {lat['32']['p50']:.3f} ms at "
            f"batch 32; {timing['per_second'][name]['32']:.0f} examples/s at batch 32",
            flush=True,
        )
    result = {
        "task": args.task,
        "metrics": list(task.metrics),
        "dev_examples": len(dev_texts),
        "train_rows": len(train_texts),
        "peers": peers,
        "folders": scored,
        "timing": timing,
        "versions": {key: _version(dist) for key, dist in DISTRIBUTIONS.items()},
        "threads": 1,
        "settings": {
            "speed_examples": n,
            "rounds": args.rounds,
            "train_samples": args.train_samples,
            "minilm": str(args.minilm),
            "work": str(args.work),
        },
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(f"[peers] wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
