"""The GLUE task table, the NER tasks and custom tasks.

A `Task` says where each split lives in a GLUE `glue_data` folder and on the dataset hub,
which columns hold the text(s) and the label, the label set (or that it is regression),
and the official metric(s). NER tasks (token classification: one tag per word) name their
folder under --data-dir instead, and their labels are IOB2 tags (see data/ner.py).
"""

from __future__ import annotations

import dataclasses

from lmshrink.data.task_kinds import (
    REGRESSION,
    SEQUENCE_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
    TaskKind,
)
from lmshrink.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class SplitSource:
    """Where one split lives: a file in the task's GLUE folder and a hub split name."""

    filename: str
    hub_split: str


@dataclasses.dataclass(frozen=True)
class Task:
    """One classification, regression or token-classification task.

    `text_columns` and `label_column` are header names, or column indices for files without
    a header (CoLA). `labels` lists the label strings as they appear in the files, in id
    order; the hub's integer labels use the same order. Empty `labels` means regression.
    A token-level task (NER) has no text or label columns: its files hold one word and its
    tag per line, `labels` are the IOB2 tags in id order, and `data_folder` is its folder
    under --data-dir (WikiAnn: one subfolder per language in `languages`).
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
    token_level: bool = False  # one label per word (NER) instead of one per example
    data_folder: str = ""  # token-level tasks: the folder under --data-dir
    languages: tuple[str, ...] = ()  # WikiAnn: the languages mixed in the task

    @property
    def kind(self) -> TaskKind:
        """What the task predicts; the one place that decides it (see task_kinds)."""
        if self.token_level:
            return TOKEN_CLASSIFICATION
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

# --- NER (token classification) -------------------------------------------------------

# The tag sets in the id order of the Hugging Face `conll2003` and `wikiann` datasets, so
# that models fine-tuned on those keep their heads.
CONLL2003_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
WIKIANN_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
# Token-level metrics (measure/entities.py): entity-level micro F1 (CoNLL); for a
# multilingual task, the mean of the per-language F1s, so each language counts the same.
ENTITY_METRICS = ("entity_f1",)
LANGUAGE_MEAN_METRICS = ("entity_f1_lang_mean",)


def _ner_splits() -> dict[str, SplitSource]:
    return {s: SplitSource(f"{s}.tsv", "") for s in ("train", "dev", "test")}


CONLL2003 = Task(
    "conll2003",
    (),
    "",
    CONLL2003_TAGS,
    ENTITY_METRICS,
    splits=_ner_splits(),
    token_level=True,
    data_folder="conll2003",
)
CUSTOM_NER = "custom-ner"
NER_TASK_NAMES = ("conll2003", "wikiann", CUSTOM_NER)


def wikiann_task(languages: list[str] | tuple[str, ...]) -> Task:
    """WikiAnn (PAN-X, Rahimi splits) in one or several languages, mixed in one task."""
    codes = [code.strip().lower() for code in languages if code.strip()]
    if not codes:
        raise ConfigError(
            "the wikiann task needs --languages, e.g. --languages en or --languages en,de,fr."
        )
    twice = sorted({c for c in codes if codes.count(c) > 1})
    if twice:
        raise ConfigError(f"--languages lists {', '.join(twice)} twice; name each language once.")
    return Task(
        "wikiann",
        (),
        "",
        WIKIANN_TAGS,
        LANGUAGE_MEAN_METRICS,
        splits=_ner_splits(),
        token_level=True,
        data_folder="wikiann",
        languages=tuple(codes),
    )


def custom_ner_task(labels: list[str] | tuple[str, ...], files: dict[str, str]) -> Task:
    """An NER task read from the user's own CoNLL column or JSONL files; `labels` is its
    IOB2 tag set in id order (data/ner.py infers it from the training file)."""
    splits = {split: SplitSource(path, "") for split, path in files.items() if path}
    return Task(CUSTOM_NER, (), "", tuple(labels), ENTITY_METRICS, splits=splits, token_level=True)


# --- finding a task by name ---------------------------------------------------------------

# Common spellings users type for GLUE and NER tasks.
_ALIASES = {
    "sst-2": "sst2",
    "sts-b": "stsb",
    "mnli-m": "mnli",
    "conll-2003": "conll2003",
    "conll03": "conll2003",
    "panx": "wikiann",
    "pan-x": "wikiann",
    "custom_ner": CUSTOM_NER,
}

METRIC_SUFFIX = {"dev_mismatched": "_mm"}


def canonical_name(name: str) -> str:
    """A task name as lmshrink spells it (lower case, aliases resolved)."""
    return _ALIASES.get(name.lower(), name.lower())


def get_task(name: str, languages: list[str] | tuple[str, ...] = ()) -> Task:
    """The GLUE or NER task called `name` (case-insensitive); `languages` only for wikiann.
    (custom and custom-ner tasks are built from the data config, in data/splits.py and
    data/ner.py.)"""
    key = canonical_name(name)
    if key == "conll2003":
        return CONLL2003
    if key == "wikiann":
        return wikiann_task(languages)
    if key not in GLUE_TASKS:
        known = ", ".join([*GLUE_TASKS, "conll2003", "wikiann"])
        raise ConfigError(
            f"unknown task '{name}'; use one of {known}, 'custom' with "
            "--train-file, --dev-file, --text-columns and --label-column, or 'custom-ner' "
            "with --train-file and --dev-file."
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
