"""Reading task splits (GLUE folder, dataset hub, custom files), tokenizing, batching.

A split is read into a `Split`: the text fields of each example and its label id (or real
score). Every malformed row raises a `DataError` naming the file, the line and the fix.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmshrink.config import DataConfig
from lmshrink.data.tasks import Task, custom_task, get_task
from lmshrink.errors import ConfigError, DataError, MissingDependencyError

# GLUE's MNLI and QQP have very long fields; the csv module's default limit is too small.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclasses.dataclass
class Split:
    """The examples of one split: `texts[i]` holds one or two strings; `labels[i]` is a label
    id (classification), a float (regression), or the whole list is None (no labels)."""

    task: str
    name: str
    source: str
    texts: list[tuple[str, ...]]
    labels: list[int] | list[float] | None

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        """A short hash of exactly the examples used (text and labels), for metadata."""
        h = hashlib.sha256()
        for i, fields in enumerate(self.texts):
            h.update("\x1f".join(fields).encode())
            h.update(b"\x1e" + (repr(self.labels[i]).encode() if self.labels else b""))
        return h.hexdigest()[:16]

    def subset(self, n: int, seed: int) -> Split:
        """A fixed-seed random subset of `n` rows (in file order), or self if n covers all."""
        if n <= 0 or n >= len(self):
            return self
        keep = sorted(random.Random(seed).sample(range(len(self)), n))
        labels = [self.labels[i] for i in keep] if self.labels is not None else None
        return dataclasses.replace(self, texts=[self.texts[i] for i in keep], labels=labels)


# --- tasks ------------------------------------------------------------------------------


def resolve_task(cfg: DataConfig) -> Task:
    """The `Task` a data config names; for custom tasks, infers the label set if not given."""
    if not cfg.task:
        raise ConfigError("no task given; pass --task (a GLUE name such as sst2, or 'custom').")
    if cfg.task.lower() != "custom":
        return get_task(cfg.task)
    files = {"train": cfg.train_file, "dev": cfg.dev_file, "test": cfg.test_file}
    if not cfg.train_file and not cfg.dev_file:
        raise ConfigError("a custom task needs --train-file and/or --dev-file.")
    if not cfg.text_columns:
        raise ConfigError("a custom task needs --text-columns naming the text column(s).")
    labels = list(cfg.labels)
    if not cfg.regression and not labels:
        labels = _infer_labels(cfg.train_file or cfg.dev_file, cfg.label_column)
    return custom_task("custom", cfg.text_columns, cfg.label_column, labels, cfg.regression, files)


def _infer_labels(path: str, column: str) -> list[str]:
    values = {str(row[column]).strip() for _, row in _read_table(Path(path), [column], True)}
    if len(values) < 2:
        raise DataError(
            f"{path}: column '{column}' holds {len(values)} distinct label(s); a "
            "classification task needs at least 2 (or pass --regression)."
        )
    # Numbers sort numerically so that labels 0..9 keep their natural ids.
    if all(_is_int(v) for v in values):
        return sorted(values, key=int)
    return sorted(values)


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


# --- reading ----------------------------------------------------------------------------


def read_split(task: Task, split: str, cfg: DataConfig) -> Split:
    """Read one split of `task` from the GLUE folder, custom files, or the dataset hub."""
    if split not in task.splits:
        raise ConfigError(
            f"task {task.name} has no split '{split}'; it has {', '.join(task.splits)}."
        )
    source = task.splits[split]
    if task.glue_folder and not cfg.data_dir:
        result = _read_hub(task, split)
    else:
        if task.glue_folder:
            folder = Path(cfg.data_dir) / task.glue_folder
            if not Path(cfg.data_dir).is_dir():
                raise DataError(
                    f"data folder {cfg.data_dir} does not exist; pass --data-dir "
                    "pointing to a GLUE glue_data folder, or leave it out to use "
                    "the dataset hub."
                )
            path = folder / source.filename
        else:
            path = Path(source.filename)
        result = _read_file(task, split, path)
    if not result.texts:
        raise DataError(
            f"{result.source}: the {split} split has no examples; check that the "
            "file holds data rows below its header."
        )
    return result


def _read_file(task: Task, split: str, path: Path) -> Split:
    if not path.is_file():
        hint = "check --data-dir" if task.glue_folder else f"check --{split}-file"
        raise DataError(f"{path}: file not found; {hint}.")
    is_test = split == "test"
    columns = list(task.text_columns) + ([] if is_test else [task.label_column])
    label_ids = {label: i for i, label in enumerate(task.labels)}
    texts: list[tuple[str, ...]] = []
    labels: list[Any] = []
    for line, row in _read_table(path, columns, task.has_header):
        texts.append(tuple(str(row[c]) for c in task.text_columns))
        if is_test:
            continue
        raw = str(row[task.label_column]).strip()
        if task.kind.label_dtype == "float":  # a real-valued target
            try:
                score = float(raw)
            except ValueError:
                score = math.nan
            if not math.isfinite(score):
                raise DataError(
                    f"{path}, line {line}: regression target {raw!r} in column "
                    f"{task.label_column!r} is not a number; fix or remove the row."
                )
            labels.append(score)
        else:
            if raw not in label_ids:
                raise DataError(
                    f"{path}, line {line}: label {raw!r} is not in the task's label "
                    f"set {list(task.labels)}; fix the row, or pass the full label "
                    "set with --labels."
                )
            labels.append(label_ids[raw])
    return Split(task.name, split, str(path), texts, None if is_test else labels)


def _read_table(
    path: Path, columns: list[str | int], has_header: bool
) -> Iterator[tuple[int, dict[str | int, Any]]]:
    """Yield (line number, {column: value}) for each data row of a CSV/TSV/JSONL file."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the path.")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        yield from _read_jsonl(path, columns)
        return
    if suffix not in (".tsv", ".csv", ".txt"):
        raise DataError(f"{path}: unsupported file type '{suffix}'; use .tsv, .csv or .jsonl.")
    delimiter = "," if suffix == ".csv" else "\t"
    # GLUE TSVs hold bare quote characters inside fields, so quoting is off for TSV.
    quoting = csv.QUOTE_MINIMAL if suffix == ".csv" else csv.QUOTE_NONE
    # utf-8-sig drops the byte-order mark that starts MRPC's header.
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        index: dict[str | int, int] = {}
        if has_header:
            header = next(reader, None)
            if header is None:
                return
            header = [h.strip() for h in header]
            missing = [c for c in columns if c not in header]
            if missing:
                raise DataError(
                    f"{path}, line 1: missing column(s) {missing}; the header has "
                    f"{header}. Rename the columns or pass the right names "
                    "(--text-columns / --label-column)."
                )
            index = {c: header.index(c) for c in columns}
        else:
            index = {c: int(c) for c in columns}
        need = max(index.values()) + 1
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) < need:
                raise DataError(
                    f"{path}, line {reader.line_num}: {len(row)} field(s) but at "
                    f"least {need} are needed; check the delimiter and that no "
                    "field holds a stray tab or newline."
                )
            yield reader.line_num, {c: row[i] for c, i in index.items()}


def _read_jsonl(path: Path, columns: list[str | int]) -> Iterator[tuple[int, dict[str | int, Any]]]:
    with path.open(encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}, line {line_no}: not valid JSON ({exc.msg}); each line "
                    "must be one JSON object."
                ) from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}, line {line_no}: expected a JSON object per line.")
            missing = [c for c in columns if c not in obj]
            if missing:
                raise DataError(
                    f"{path}, line {line_no}: missing key(s) {missing}; the object "
                    f"has {sorted(obj)}. Fix the row or pass the right names "
                    "(--text-columns / --label-column)."
                )
            yield line_no, {c: obj[c] for c in columns}


def _read_hub(task: Task, split: str) -> Split:
    """Load a GLUE split with `datasets` (only when no local folder is given)."""
    try:
        import datasets
    except ImportError:
        raise MissingDependencyError(
            f"loading {task.name} from the dataset hub needs the 'datasets' package; install it "
            "with pip install 'lmshrink[hub]', or pass --data-dir with a local glue_data folder."
        ) from None
    hub_split = task.splits[split].hub_split
    source = f"hub:nyu-mll/glue/{task.hub_config}/{hub_split}"
    try:
        ds = datasets.load_dataset("nyu-mll/glue", task.hub_config, split=hub_split)
    except Exception as exc:  # offline, missing cache, hub error: all need the same fix
        raise DataError(
            f"{source}: could not load from the dataset hub "
            f"({type(exc).__name__}); if this machine is offline, pass --data-dir "
            "pointing to a local GLUE glue_data folder."
        ) from None
    texts = list(zip(*(ds[c] for c in task.hub_text_columns), strict=True))
    raw = ds["label"]
    labels: list[Any] | None = list(raw)
    if split == "test" or (task.kind.label_dtype == "long" and all(v < 0 for v in raw)):
        labels = None  # GLUE test labels are hidden (-1)
    return Split(task.name, split, source, [tuple(t) for t in texts], labels)


def load_eval_splits(task: Task, split: str, cfg: DataConfig, seed: int) -> list[Split]:
    """The split to evaluate plus its companions (MNLI dev also reads dev_mismatched)."""
    names = [split] + ([task.companion_splits[split]] if split in task.companion_splits else [])
    return [read_split(task, name, cfg).subset(cfg.max_eval_samples, seed) for name in names]
