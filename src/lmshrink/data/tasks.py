"""The GLUE task table and custom tasks.

A `Task` says where each split lives in a GLUE `glue_data` folder and on the dataset hub,
which columns hold the text(s) and the label, the label set (or that it is regression),
and the official metric(s).
"""

from __future__ import annotations

import dataclasses

from lmshrink.data.task_kinds import REGRESSION, SEQUENCE_CLASSIFICATION, TaskKind
from lmshrink.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class SplitSource:
    """Where one split lives: a file in the task's GLUE folder and a hub split name."""

    filename: str
    hub_split: str


@dataclasses.dataclass(frozen=True)
class Task:
    """One classification or regression task.

    `text_columns` and `label_column` are header names, or column indices for files without
    a header (CoLA). `labels` lists the label strings as they appear in the files, in id
    order; the hub's integer labels use the same order. Empty `labels` means regression.
    """

    name: str
    text_columns: tuple[str | int, ...]
    label_column: str | int
    labels: tuple[str, ...]
    metrics: tuple[str, ...]
    glue_folder: str = ""
    hub_config: str = ""
    has_header: bool = True
    splits: dict[str, SplitSource] = dataclasses.field(default_factory=dict)
    # Extra splits evaluated together with "dev" (MNLI's mismatched dev set); their metric
    # names get the split's suffix (accuracy_mm).
    companion_splits: dict[str, str] = dataclasses.field(default_factory=dict)
    hub_text_columns: tuple[str, ...] = ()

    @property
    def kind(self) -> TaskKind:
        """What the task predicts; the one place that decides it (see task_kinds)."""
        return REGRESSION if not self.labels else SEQUENCE_CLASSIFICATION

    @property
    def num_labels(self) -> int:
        """Outputs of the task's head (1 for regression: the score)."""
        return len(self.kind.output_names(self.labels))

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2


def _glue_splits(dev: str = "dev.tsv", hub_dev: str = "validation") -> dict[str, SplitSource]:
    return {
        "train": SplitSource("train.tsv", "train"),
        "dev": SplitSource(dev, hub_dev),
        "test": SplitSource("test.tsv", "test"),
    }


BINARY = ("0", "1")
ENTAILMENT = ("entailment", "not_entailment")

GLUE_TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task(
            "cola",
            (3,),
            1,
            BINARY,
            ("mcc",),
            "CoLA",
            "cola",
            has_header=False,
            splits=_glue_splits(),
            hub_text_columns=("sentence",),
        ),
        Task(
            "sst2",
            ("sentence",),
            "label",
            BINARY,
            ("accuracy",),
            "SST-2",
            "sst2",
            splits=_glue_splits(),
            hub_text_columns=("sentence",),
        ),
        Task(
            "mrpc",
            ("#1 String", "#2 String"),
            "Quality",
            BINARY,
            ("f1", "accuracy"),
            "MRPC",
            "mrpc",
            splits=_glue_splits(),
            hub_text_columns=("sentence1", "sentence2"),
        ),
        Task(
            "stsb",
            ("sentence1", "sentence2"),
            "score",
            (),
            ("pearson", "spearman"),
            "STS-B",
            "stsb",
            splits=_glue_splits(),
            hub_text_columns=("sentence1", "sentence2"),
        ),
        Task(
            "qqp",
            ("question1", "question2"),
            "is_duplicate",
            BINARY,
            ("f1", "accuracy"),
            "QQP",
            "qqp",
            splits=_glue_splits(),
            hub_text_columns=("question1", "question2"),
        ),
        Task(
            "mnli",
            ("sentence1", "sentence2"),
            "gold_label",
            ("entailment", "neutral", "contradiction"),
            ("accuracy",),
            "MNLI",
            "mnli",
            splits={
                "train": SplitSource("train.tsv", "train"),
                "dev": SplitSource("dev_matched.tsv", "validation_matched"),
                "dev_mismatched": SplitSource("dev_mismatched.tsv", "validation_mismatched"),
                "test": SplitSource("test_matched.tsv", "test_matched"),
            },
            companion_splits={"dev": "dev_mismatched"},
            hub_text_columns=("premise", "hypothesis"),
        ),
        Task(
            "qnli",
            ("question", "sentence"),
            "label",
            ENTAILMENT,
            ("accuracy",),
            "QNLI",
            "qnli",
            splits=_glue_splits(),
            hub_text_columns=("question", "sentence"),
        ),
        Task(
            "rte",
            ("sentence1", "sentence2"),
            "label",
            ENTAILMENT,
            ("accuracy",),
            "RTE",
            "rte",
            splits=_glue_splits(),
            hub_text_columns=("sentence1", "sentence2"),
        ),
        Task(
            "wnli",
            ("sentence1", "sentence2"),
            "label",
            BINARY,
            ("accuracy",),
            "WNLI",
            "wnli",
            splits=_glue_splits(),
            hub_text_columns=("sentence1", "sentence2"),
        ),
    ]
}

# Common spellings users type for GLUE tasks.
_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli"}

METRIC_SUFFIX = {"dev_mismatched": "_mm"}


def get_task(name: str) -> Task:
    """The GLUE task called `name` (case-insensitive)."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in GLUE_TASKS:
        known = ", ".join(GLUE_TASKS)
        raise ConfigError(
            f"unknown task '{name}'; use one of {known}, or 'custom' with "
            "--train-file, --dev-file, --text-columns and --label-column."
        )
    return GLUE_TASKS[key]


def custom_task(
    name: str,
    text_columns: list[str],
    label_column: str,
    labels: list[str],
    regression: bool,
    files: dict[str, str],
) -> Task:
    """A task read from the user's own CSV, TSV or JSONL files."""
    if not 1 <= len(text_columns) <= 2:
        raise ConfigError(
            "a custom task needs one or two --text-columns (e.g. "
            "--text-columns sentence or --text-columns premise,hypothesis)."
        )
    if regression and labels:
        raise ConfigError(
            "--regression and --labels exclude each other: a regression task has no label set."
        )
    splits = {split: SplitSource(path, "") for split, path in files.items() if path}
    return Task(
        name,
        tuple(text_columns),
        label_column,
        tuple(labels),
        ("pearson", "spearman") if regression else ("accuracy", "f1_macro"),
        splits=splits,
    )
