"""The model a command reads, and what it was made for: the one preamble of the commands that
take a model folder (export, quantize, evaluate, prune; bench uses its parts).

Each of them checks `--out`, resolves the model argument (a model folder, a run folder
holding model/, a hub id), fills the data settings the user did not give from those saved
with the model (`with_saved_task`), loads the task, the model with its tokenizer and the
split(s), and encodes the first split for that tokenizer. `read_model` does these steps once,
in that order, and hands back one `ModelSource` record.

It lives in models/ because its subject is a model folder; it reads data through data/,
which never imports models/, so the dependency points one way.
"""

from __future__ import annotations

import dataclasses
import functools
import shlex
from pathlib import Path
from typing import Any

from lmshrink.config import DataConfig
from lmshrink.data.batching import Encoded, encode
from lmshrink.data.splits import Split, load_eval_splits, resolve_task
from lmshrink.data.tasks import CUSTOM_NER, GLUE_TASKS, Task, canonical_name
from lmshrink.errors import ConfigError
from lmshrink.models.loading import load_for_eval, read_metadata, resolve_model_source
from lmshrink.runs import check_out

# Settings of the run that made a model that say nothing about the task itself: where the
# data were on that machine, and the subsets that run used.
NOT_INHERITED = ("data_dir", "max_train_samples", "max_eval_samples")

# The data settings that only a custom task reads (a GLUE task knows its files and columns).
CUSTOM_ONLY = (
    "train_file",
    "dev_file",
    "test_file",
    "text_columns",
    "label_column",
    "labels",
    "regression",
)


@dataclasses.dataclass
class ModelSource:
    """A model read from its folder, with the task and data it is scored on."""

    folder: str  # the resolved model folder (or hub id)
    data: DataConfig  # the data settings: the user's, the saved ones filling the rest
    task: Task
    tokenizer: Any
    model: Any  # in eval mode
    splits: list[Split]  # the split asked for and its companions (MNLI dev: + mismatched)
    out: Path | None = None  # the checked output folder, when the command writes one

    @functools.cached_property
    def enc(self) -> Encoded:
        """The first split encoded with the model's tokenizer (made on first use), with
        word-shape ids for a model that reads them (the BiLSTM tagger with word shapes)."""
        shapes = bool(getattr(self.model, "reads_word_shapes", False))
        return encode(self.tokenizer, self.splits[0], self.data.max_length, word_shapes=shapes)


def read_model(
    model: str,
    data: DataConfig,
    seed: int,
    *,
    split: str = "dev",
    out: str | None = None,
    overwrite: bool = False,
) -> ModelSource:
    """Read `model` and the task data it is scored on; with `out` (a command's `--out`, even
    empty), that folder is checked first, before any work; the split is checked before the
    model is loaded."""
    checked = None if out is None else check_out(out, overwrite)
    folder = resolve_model_source(model)
    merged = with_saved_task(data, folder)
    check_custom_settings(data, merged, folder)
    task = resolve_task(merged)
    check_split(task, split)
    tokenizer, loaded = load_for_eval(folder, task)
    splits = load_eval_splits(task, split, merged, seed)
    return ModelSource(folder, merged, task, tokenizer, loaded, splits, checked)


def given_fields(data: DataConfig) -> set[str]:
    """The data settings the user gave: those that differ from a fresh `DataConfig()`.

    A config does not record where a value came from, so a value equal to its default counts
    as not given: `--max-length 128` (the default) cannot override a saved 64, except by
    giving `--task` too, which turns the saved settings off (see `with_saved_task`).
    """
    default = DataConfig()
    return {
        f.name
        for f in dataclasses.fields(DataConfig)
        if getattr(data, f.name) != getattr(default, f.name)
    }


def with_saved_task(data: DataConfig, folder: str) -> DataConfig:
    """The user's data settings, with those not given filled from the ones saved with the
    model (its lmshrink.json), field by field: every flag, `--config` and `--set` value wins.

    "Given" means different from the default (`given_fields`). With `--task`, nothing is
    taken from the model: the user describes the data in full, which is also the way to force
    a default value over a saved one. Where the data were on the saving machine and its
    subsets (`NOT_INHERITED`) are never taken. A custom task with no `--labels` gets the
    label set the model was trained with, in its id order, so that ids mean the same classes.
    """
    if data.task:
        return data
    meta = read_metadata(folder)
    saved = dict(meta.get("config", {}).get("data", {}))
    if not saved.get("task") and meta.get("task", "custom") != "custom":
        # A model folder whose config kept no task (a run given none) still names its task.
        saved = {"task": meta["task"]}
    if not saved.get("task"):
        return data
    given = given_fields(data)
    names = {f.name for f in dataclasses.fields(DataConfig)}
    fill = {
        k: v for k, v in saved.items() if k in names and k not in NOT_INHERITED and k not in given
    }
    merged = dataclasses.replace(data, **fill)
    is_custom = merged.task.lower() == "custom"
    if is_custom and not merged.labels and not merged.regression and meta.get("labels"):
        merged = dataclasses.replace(merged, labels=[str(v) for v in meta["labels"]])
    return merged


def check_custom_settings(given: DataConfig, merged: DataConfig, folder: str) -> None:
    """Refuse custom-task settings the user gave (`--dev-file`, ...) for a named task (GLUE,
    NER), which reads its own files and would silently ignore them; for a GLUE task the fix
    names the custom task that reads the file as this model's task does."""
    if not merged.task or canonical_name(merged.task) in ("custom", CUSTOM_NER):
        return
    ignored = sorted(given_fields(given) & set(CUSTOM_ONLY))
    if not ignored:
        return
    flags = ", ".join("--" + name.replace("_", "-") for name in ignored)
    task = GLUE_TASKS.get(merged.task.lower())
    how = ""
    if task is not None and all(isinstance(c, str) for c in task.text_columns):
        labels = f"--labels {','.join(task.labels)}" if task.labels else "--regression"
        how = (
            f" --text-columns {shlex.quote(','.join(map(str, task.text_columns)))} "
            f"--label-column {shlex.quote(str(task.label_column))} {labels}"
        )
    made_for = f"{folder} was made for task {merged.task}, which" if not given.task else ""
    raise ConfigError(
        f"{flags}: {made_for or f'task {merged.task}'} reads its own files from --data-dir, "
        f"so these settings would be ignored; to use your file(s), pass --task custom{how} "
        "with them."
    )


def check_split(task: Task, split: str) -> None:
    """Refuse a split the task does not have, before any model is loaded, with the fix."""
    if split in task.splits:
        return
    have = ", ".join(task.splits)
    fix = f"use --split with one of {have}"
    if task.name == "custom" and split in ("train", "dev", "test"):
        fix = f"pass --{split}-file with a labeled file to score it, or {fix}"
    raise ConfigError(f"task {task.name} has no split '{split}' ({fix}).")
