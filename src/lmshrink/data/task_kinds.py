"""What kind of prediction a task asks for, and everything that follows from it.

Heads, losses, metrics, batching and export ask `task.kind` (one of the `TaskKind`s below)
instead of testing `is_regression` on their own, so a new kind of task is added here, with
its answers, and not in a dozen `if`s.

Shapes: a sequence-level model outputs [N, C] per split (one row per example); a token-level
one (NER) outputs [N, W, C], one row per word, padded to W words, with a word mask [N, W]
that is True on real words. Labels of padding and of a word's later sub-tokens are
`IGNORE_INDEX`, the value PyTorch's cross-entropy and Hugging Face's token heads skip.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

IGNORE_INDEX = -100


@dataclasses.dataclass(frozen=True)
class TaskKind:
    """One kind of task and its answers to the questions the pipeline asks of it."""

    name: str
    # transformers' `config.problem_type` of the model's head
    problem_type: str
    # distillation losses (names in lmshrink.distillation.losses) that fit the kind
    gold_loss: str  # on gold labels
    logit_loss: str  # on the teacher's outputs, used where no recipe chooses (prune recovery)
    # whether labels are class ids (long) or real values (float)
    label_dtype: str
    # largest |difference| of two models' outputs that still counts as the same prediction
    agreement_tolerance: float | None = None
    # one label per word (outputs [N, W, C]) instead of one per example (outputs [N, C])
    token_level: bool = False
    # the transformers Auto class whose head fits the kind
    auto_model: str = "AutoModelForSequenceClassification"

    @property
    def is_regression(self) -> bool:
        return self.label_dtype == "float"

    def predictions(self, outputs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Model outputs [N, C] -> predictions [N]: class ids, or the score in column 0.
        Token level: outputs [N, W, C] -> tag ids [N, W], `IGNORE_INDEX` where the word mask
        [N, W] (default: every position is a word) is False."""
        if self.token_level:
            preds = outputs.argmax(axis=-1)  # [N, W]
            if mask is not None:
                preds = np.where(np.asarray(mask, dtype=bool), preds, IGNORE_INDEX)
            return preds
        return outputs[:, 0] if self.is_regression else outputs.argmax(axis=1)

    def same_prediction(
        self,
        a: np.ndarray,
        b: np.ndarray,
        tolerance: float | None = None,
        mask: np.ndarray | None = None,
    ) -> np.ndarray:
        """Per row of two models' outputs [N, C]: whether they predict the same (a class, or a
        score within `tolerance`, default the kind's own). Token level: per real word of
        outputs [N, W, C] under the word mask [N, W], flattened to [M] (M real words), so
        that its mean is the share of words tagged alike."""
        if self.token_level:
            same = a.argmax(axis=-1) == b.argmax(axis=-1)  # [N, W]
            return same[np.asarray(mask, dtype=bool)] if mask is not None else same.reshape(-1)
        if self.is_regression:
            limit = self.agreement_tolerance if tolerance is None else tolerance
            return np.abs(a[:, 0].astype(np.float64) - b[:, 0].astype(np.float64)) <= limit
        return a.argmax(axis=1) == b.argmax(axis=1)

    def head_settings(self, labels: tuple[str, ...]) -> dict[str, Any]:
        """Config entries of the model head: number of outputs, label names, problem type."""
        names = ("score",) if self.is_regression else labels
        return {
            "num_labels": len(names),
            "problem_type": self.problem_type,
            "id2label": dict(enumerate(names)),
            "label2id": {name: i for i, name in enumerate(names)},
        }

    def describe_outputs(self, labels: tuple[str, ...]) -> str:
        """What a model's head must output for a task of this kind (for error messages)."""
        if self.token_level:
            return f"{len(labels)} labels per word"
        return "a regression output" if self.is_regression else f"{len(labels)} labels"

    def output_names(self, labels: tuple[str, ...]) -> list[str]:
        """What each output column means (for exported models' metadata)."""
        return ["score"] if self.is_regression else [str(label) for label in labels]


SEQUENCE_CLASSIFICATION = TaskKind(
    name="sequence_classification",
    problem_type="single_label_classification",
    gold_loss="gold_ce",
    logit_loss="soft_kl",
    label_dtype="long",
)
REGRESSION = TaskKind(
    name="regression",
    problem_type="regression",
    gold_loss="gold_mse",
    logit_loss="score_mse",
    label_dtype="float",
    agreement_tolerance=0.05,
)
# One IOB2 tag per word (NER). Transformers' token heads ignore `problem_type` (their loss
# is always cross-entropy over the words); it is set for the config's sake. The two loss
# names are those the token-level losses will be registered under: cross-entropy with the
# gold tags and KL to the teacher's per-word distribution, each averaged over real words.
TOKEN_CLASSIFICATION = TaskKind(
    name="token_classification",
    problem_type="single_label_classification",
    gold_loss="token_gold_ce",
    logit_loss="token_soft_kl",
    label_dtype="long",
    token_level=True,
    auto_model="AutoModelForTokenClassification",
)
KINDS = {kind.name: kind for kind in (SEQUENCE_CLASSIFICATION, REGRESSION, TOKEN_CLASSIFICATION)}
