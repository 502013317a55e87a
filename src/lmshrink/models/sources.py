"""The model a command reads, and what it was made for: the one preamble of the commands that
take a model folder (export, quantize, evaluate, prune; bench uses its parts).

Each of them checks `--out`, resolves the model argument (a model folder, a run folder
holding model/, a hub id), fills the task from the metadata saved with the model when no
`--task` is given, loads the task, the model with its tokenizer and the dev split(s), and
encodes the dev split for that tokenizer. `read_model` does these steps once, in that order,
and hands back one `ModelSource` record.

It lives in models/ because its subject is a model folder; it reads data through data/,
which never imports models/, so the dependency points one way.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from lmshrink.config import DataConfig
from lmshrink.data.batching import Encoded, encode
from lmshrink.data.splits import Split, load_eval_splits, resolve_task
from lmshrink.data.tasks import Task
from lmshrink.models.loading import load_for_eval, read_metadata, resolve_model_source
from lmshrink.runs import check_out

# Settings of the run that made a model that say nothing about the task itself: where the
# data were on that machine, and the subsets that run used.
NOT_INHERITED = ("data_dir", "max_train_samples", "max_eval_samples")


@dataclasses.dataclass
class ModelSource:
    """A model read from its folder, with the task and dev data it is scored on."""

    folder: str  # the resolved model folder (or hub id)
    data: DataConfig  # the data settings, the saved task filled in
    task: Task
    tokenizer: Any
    model: Any  # in eval mode
    splits: list[Split]  # the split asked for and its companions (MNLI dev: + mismatched)
    out: Path | None = None  # the checked output folder, when the command writes one

    @functools.cached_property
    def enc(self) -> Encoded:
        """The first split encoded with the model's tokenizer (made on first use)."""
        return encode(self.tokenizer, self.splits[0], self.data.max_length)


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
    empty), that folder is checked first, before any work."""
    checked = None if out is None else check_out(out, overwrite)
    folder = resolve_model_source(model)
    data = with_saved_task(data, folder)
    task = resolve_task(data)
    tokenizer, loaded = load_for_eval(folder, task)
    splits = load_eval_splits(task, split, data, seed)
    return ModelSource(folder, data, task, tokenizer, loaded, splits, checked)


def with_saved_task(data: DataConfig, folder: str) -> DataConfig:
    """Fill the task (and custom-task settings) from the model's metadata when not given."""
    if data.task:
        return data
    saved = read_metadata(folder).get("config", {}).get("data", {})
    if not saved.get("task"):
        return data
    keep = {k: v for k, v in saved.items() if k not in NOT_INHERITED}
    return dataclasses.replace(data, **keep)
