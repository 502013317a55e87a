"""Reading task splits (GLUE folder, dataset hub, custom files), tokenizing, batching.

A split is read into a `Split`: the text fields of each example and its label id (or real
score). Every malformed row raises a `DataError` naming the file, the line and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmshrink.config import DataConfig
from lmshrink.data.files import check_file, folder_problem, read_table, shorten
from lmshrink.data.ner import TokenSplit, read_ner_split, resolve_ner_task
from lmshrink.data.tasks import Task, custom_task, get_task
from lmshrink.errors import ConfigError, DataError, MissingDependencyError


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

# Label values that mean "no label" in exported tables (pandas writes "" or "nan"), and
# non-finite numbers: none of them is a class a user means to infer.
_MISSING = frozenset(
    ["", "nan", "none", "null", "na", "n/a", "inf", "-inf", "+inf", "infinity", "-infinity"]
)


def resolve_task(cfg: DataConfig) -> Task:
    """The `Task` a data config names; for custom tasks, infers the label set if not given."""
    if not cfg.task:
        raise ConfigError("no task given; pass --task (a GLUE name such as sst2, or 'custom').")
    if (ner := resolve_ner_task(cfg)) is not None:
        if not cfg.header:
            raise ConfigError(
                f"--no-header applies to custom sentence tasks; {ner.name}'s files are CoNLL "
                "columns or JSONL, so drop --no-header."
            )
        return ner
    if cfg.languages:
        raise ConfigError(
            f"--languages applies to the wikiann task only; drop it for task {cfg.task}."
        )
    if cfg.task.lower() != "custom":
        task = get_task(cfg.task)
        if not cfg.header:
            raise ConfigError(
                f"--no-header applies to custom tasks; {task.name}'s GLUE files are read with "
                "their own layout, so drop --no-header (or use --task custom)."
            )
        return task
    files = {"train": cfg.train_file, "dev": cfg.dev_file, "test": cfg.test_file}
    if not (cfg.train_file or cfg.dev_file or cfg.test_file):
        raise ConfigError("a custom task needs --train-file, --dev-file or --test-file.")
    if not cfg.text_columns:
        raise ConfigError("a custom task needs --text-columns naming the text column(s).")
    text_columns: list[Any] = list(cfg.text_columns)
    label_column: Any = cfg.label_column
    if not cfg.header:
        text_columns, label_column = _column_indices(cfg, files)
    labels = list(cfg.labels)
    if not cfg.regression and not labels:
        split = next(name for name, path in files.items() if path)
        labels = _infer_labels(Path(files[split]), split, text_columns, label_column, cfg.header)
    task = custom_task("custom", text_columns, label_column, labels, cfg.regression, files)
    return task if cfg.header else dataclasses.replace(task, has_header=False)


def _column_indices(cfg: DataConfig, files: dict[str, str]) -> tuple[list[int], int]:
    """--no-header: the text and label columns as indices (counted from 0)."""
    jsonl = [p for p in files.values() if Path(p).suffix.lower() in (".jsonl", ".json")]
    if jsonl:
        raise ConfigError(
            f"{jsonl[0]}: --no-header applies to CSV/TSV files; JSON Lines rows name their "
            "keys, so drop --no-header and pass the key names."
        )

    def index(value: str, flag: str, example: str) -> int:
        if value.strip().isdigit():
            return int(value)
        raise ConfigError(
            f"--no-header reads columns by index, so {flag} takes numbers counted from 0 "
            f"(e.g. {flag} {example}), got {value!r}."
        )

    texts = [index(c, "--text-columns", "0") for c in cfg.text_columns]
    return texts, index(cfg.label_column, "--label-column", "1")


def _infer_labels(
    path: Path, split: str, text_columns: list[Any], column: Any, has_header: bool
) -> list[str]:
    """The sorted label set of a file's label column (all columns checked, so that an error
    names every missing one)."""
    values: set[str] = set()
    rows = _table_rows(path, split, [*text_columns, column], has_header, custom=True)
    for line, row in rows:
        value = str(row[column]).strip()
        if value.lower() in _MISSING:
            raise DataError(
                f"{path}, line {line}: the label {shorten(value)} in column {column!r} is "
                "empty, NaN, infinite or a missing-value marker; fill it in or remove the row "
                "(or, if it is a real label, pass the full label set with --labels)."
            )
        values.add(value)
    if not values:
        raise DataError(
            f"{path}: the {split} file holds no data rows, so its label set cannot be "
            "inferred; add labeled rows below the header."
        )
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


def read_split(task: Task, split: str, cfg: DataConfig) -> Split | TokenSplit:
    """Read one split of `task` from the GLUE folder, custom files, or the dataset hub (a
    token task's split: its sentences as words, from data/ner.py)."""
    if task.kind.token_level:
        return read_ner_split(task, split, cfg)
    if split not in task.splits:
        raise ConfigError(
            f"task {task.name} has no split '{split}'; it has {', '.join(task.splits)}; "
            f"{_split_fix(task, split)}."
        )
    source = task.splits[split]
    if task.glue_folder and not cfg.data_dir:
        result = _read_hub(task, split)
    else:
        if task.glue_folder:
            folder = Path(cfg.data_dir) / task.glue_folder
            what = folder_problem(Path(cfg.data_dir))
            if what:
                raise DataError(
                    f"data folder {cfg.data_dir} {what}; pass --data-dir "
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


def _split_fix(task: Task, split: str) -> str:
    if task.glue_folder or split not in ("train", "dev", "test"):
        return f"use one of {', '.join(task.splits)}"
    if split == "dev":
        return (
            "pass --dev-file with a labeled file to score on (finetune, distill and prune "
            "also keep the weights that score best on it)"
        )
    return f"pass --{split}-file with the file of that split"


def _table_rows(
    path: Path, split: str, columns: list[Any], has_header: bool, custom: bool, **kwargs: Any
) -> Iterator[tuple[int, dict[Any, Any]]]:
    """A task file's rows, with the fixes its errors suggest (custom files: the flags that
    name columns; GLUE files: their header)."""
    if custom:
        hint = f"check --{split}-file"
        names_fix = "pass the right names (--text-columns / --label-column)"
        if any(str(c).isdigit() for c in columns):
            names_fix += ", or pass --no-header to read a file without a header by column index"
        headerless_fix = (
            "if the file has no header row, pass --no-header and name the columns by index "
            "(e.g. --text-columns 0 --label-column 1)"
        )
    else:
        hint = "check --data-dir"
        names_fix = f"use the GLUE file, whose header names {[str(c) for c in columns]}"
        headerless_fix = f"the GLUE file must start with its header row naming {columns}"
    return read_table(
        path,
        columns,
        has_header,
        hint=hint,
        names_fix=names_fix,
        headerless_fix=headerless_fix,
        **kwargs,
    )


def _read_file(task: Task, split: str, path: Path) -> Split:
    check_file(path, "check --data-dir" if task.glue_folder else f"check --{split}-file")
    # A test split may come without labels (GLUE hides them): its label column is optional.
    is_test = split == "test"
    label = task.label_column
    columns = list(task.text_columns) + ([] if is_test else [label])
    label_ids = {name: i for i, name in enumerate(task.labels)}
    texts: list[tuple[str, ...]] = []
    labels: list[Any] = []
    test_labels: list[tuple[int, Any]] = []
    rows = _table_rows(
        path,
        split,
        columns,
        task.has_header,
        custom=not task.glue_folder,
        optional=[label] if is_test else [],
        labels=task.labels,
    )
    for line, row in rows:
        texts.append(tuple(str(row[c]) for c in task.text_columns))
        if is_test:
            test_labels.append((line, row.get(label)))
        else:
            labels.append(_parse_label(path, line, task, row[label], label_ids))
    if is_test:
        return Split(task.name, split, str(path), texts, _test_labels(path, task, test_labels))
    return Split(task.name, split, str(path), texts, labels)


def _parse_label(path: Path, line: int, task: Task, value: Any, label_ids: dict[str, int]) -> Any:
    """A label id (classification) or a finite float (regression) from a file's field."""
    raw = str(value).strip()
    if task.kind.label_dtype == "float":  # a real-valued target
        try:
            score = float(raw)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise DataError(
                f"{path}, line {line}: regression target {shorten(raw)} in column "
                f"{task.label_column!r} is not a number; fix or remove the row."
            )
        return score
    if raw not in label_ids:
        if not raw:
            raise DataError(
                f"{path}, line {line}: the label in column {task.label_column!r} is empty; "
                "fill it in or remove the row."
            )
        raise DataError(
            f"{path}, line {line}: label {shorten(raw)} is not in the task's label "
            f"set {list(task.labels)}; fix the row, or pass the full label set with --labels."
        )
    return label_ids[raw]


def _test_labels(path: Path, task: Task, rows: list[tuple[int, Any]]) -> list[Any] | None:
    """A test split's labels: None when the file has none (no label column, or GLUE's
    hidden labels: every value -1 or empty), else every row's label."""
    given = [(line, str(v).strip()) for line, v in rows if v is not None]
    if not given:
        return None
    if len(given) < len(rows):  # JSON Lines: some objects have the key, some not
        line = next(line for line, v in rows if v is None)
        raise DataError(
            f"{path}, line {line}: no {task.label_column!r} while line {given[0][0]} has one; "
            "give every row its label, or none."
        )
    hidden = {""} if task.kind.label_dtype == "float" else {"", "-1"} - set(task.labels)
    if all(v in hidden for _, v in given):
        return None
    label_ids = {name: i for i, name in enumerate(task.labels)}
    return [_parse_label(path, line, task, v, label_ids) for line, v in given]


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
    # GLUE hides its test labels as -1; a split with real labels keeps them.
    labels: list[Any] | None = None if all(v < 0 for v in raw) else list(raw)
    return Split(task.name, split, source, [tuple(t) for t in texts], labels)


def load_eval_splits(task: Task, split: str, cfg: DataConfig, seed: int) -> list[Split]:
    """The split to evaluate plus its companions (MNLI dev also reads dev_mismatched)."""
    names = [split] + ([task.companion_splits[split]] if split in task.companion_splits else [])
    return [read_split(task, name, cfg).subset(cfg.max_eval_samples, seed) for name in names]
