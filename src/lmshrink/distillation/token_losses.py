"""The per-word losses of token tasks (NER): gold tags, the teacher's per-word distribution
and logits, and its per-word hidden state.

They read word-level named tensors (`lmshrink.distillation.loss_registry.WORD_INPUTS`):
each model's output at every word's first sub-token, padded to the batch's most words W,
and `word_mask [B, W]`, True at the real words. Every loss here averages over the real
words only: padding and a word's later sub-tokens never count, so a long sentence weighs
as many words as it has, and a batch of short ones is not diluted by its padding. With no
real word in the batch a loss returns a zero connected to the student's graph.

Shapes: B batch, W words, C tags, Ds and Dt the student's and the teacher's widths.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lmshrink.data.task_kinds import IGNORE_INDEX
from lmshrink.distillation.loss_registry import check_same_shape, register_loss, zero_like_graph
from lmshrink.distillation.projection import ProjectedComparison
from lmshrink.distillation.soft_targets import soft_kl
from lmshrink.errors import ConfigError


def _check_mask(name: str, values: torch.Tensor, word_mask: torch.Tensor) -> None:
    """`word_mask` must be [B, W] of `values` [B, W, ...] (a mask of another shape would
    broadcast, or select the wrong words)."""
    if word_mask.shape != values.shape[:2]:
        raise ValueError(
            f"word_mask has shape {tuple(word_mask.shape)} but {name} has {tuple(values.shape)}; "
            "the mask must be [B, W] of the word tensors."
        )


def check_temperature(name: str, temperature: object) -> float:
    """A positive finite temperature, or a `ConfigError` naming the loss."""
    valid = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
    if not valid or not math.isfinite(temperature) or temperature <= 0:
        raise ConfigError(f"{name} temperature must be a positive number, got {temperature!r}.")
    return float(temperature)


@register_loss("token_gold_ce")
class TokenGoldCrossEntropyLoss(nn.Module):
    """Cross-entropy against the gold tag of every real word, averaged over those words.

    Words outside `word_mask`, or tagged -100 (`IGNORE_INDEX`), are left out."""

    def forward(
        self, student_word_logits: torch.Tensor, word_labels: torch.Tensor, word_mask: torch.Tensor
    ) -> torch.Tensor:
        """student_word_logits [B, W, C], word_labels [B, W] long, word_mask [B, W] -> scalar."""
        _check_mask("student_word_logits", student_word_logits, word_mask)
        check_same_shape("word_labels", word_labels, "word_mask", word_mask)
        keep = word_mask.bool() & (word_labels != IGNORE_INDEX)  # [B, W]
        if not bool(keep.any()):
            return zero_like_graph(student_word_logits)
        return F.cross_entropy(student_word_logits[keep], word_labels[keep])  # mean over words


def _real_words(
    student_word_logits: torch.Tensor, teacher_word_logits: torch.Tensor, word_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The two models' logits [N, C] at the N real words (the teacher's in float32), after
    checking the shapes; None when the batch holds no real word."""
    check_same_shape(
        "student_word_logits", student_word_logits, "teacher_word_logits", teacher_word_logits
    )
    _check_mask("student_word_logits", student_word_logits, word_mask)
    keep = word_mask.bool()
    if not bool(keep.any()):
        return None
    return student_word_logits[keep], teacher_word_logits[keep].float()


@register_loss("token_soft_kl")
class TokenSoftKLLoss(nn.Module):
    """KL(softmax(t/T) || softmax(s/T)) * T^2 per word, summed over the tags and averaged
    over the real words: the student matches the teacher's distribution over tags at every
    word (the sentence task's `soft_kl`, word by word)."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = check_temperature("token_soft_kl", temperature)

    def forward(
        self,
        student_word_logits: torch.Tensor,
        teacher_word_logits: torch.Tensor,
        word_mask: torch.Tensor,
    ) -> torch.Tensor:
        """student_word_logits [B, W, C], teacher_word_logits [B, W, C], word_mask [B, W]
        -> scalar."""
        words = _real_words(student_word_logits, teacher_word_logits, word_mask)
        if words is None:
            return zero_like_graph(student_word_logits)
        return soft_kl(*words, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


@register_loss("token_logit_mse")
class TokenLogitMSELoss(nn.Module):
    """Mean squared error between the student's and the teacher's logits at every real word,
    averaged over those words and the tags (XtremeDistil's logit stage, word by word)."""

    def forward(
        self,
        student_word_logits: torch.Tensor,
        teacher_word_logits: torch.Tensor,
        word_mask: torch.Tensor,
    ) -> torch.Tensor:
        """student_word_logits [B, W, C], teacher_word_logits [B, W, C], word_mask [B, W]
        -> scalar."""
        words = _real_words(student_word_logits, teacher_word_logits, word_mask)
        if words is None:
            return zero_like_graph(student_word_logits)
        return F.mse_loss(*words)


@register_loss("token_representation", widths="word")
class TokenRepresentationLoss(ProjectedComparison):
    """Match the teacher's hidden state at every real word through a learned projection.

    XtremeDistil's first stage for token tasks: the student's state at each word [Ds] is
    projected to the teacher's width Dt and compared with the teacher's state at that word
    (its first sub-token) by MSE, the mean over real words and the Dt coordinates. MSE is
    the default, as for the sentence `representation` loss, because it asks for the
    teacher's state itself, scale included, which is what the teacher's tagger reads;
    `kind: cosine` (the mean of 1 - cosine similarity over real words) ignores the scale.

    This loss HAS PARAMETERS (the projection), trained with the student and not saved.
    """

    loss_name: ClassVar[str] = "token_representation"

    def forward(
        self,
        student_word_states: torch.Tensor,
        teacher_word_repr: torch.Tensor,
        word_mask: torch.Tensor,
    ) -> torch.Tensor:
        """student_word_states [B, W, Ds], teacher_word_repr [B, W, Dt], word_mask [B, W]
        -> scalar."""
        _check_mask("student_word_states", student_word_states, word_mask)
        keep = word_mask.bool()
        if not bool(keep.any()):
            return zero_like_graph(student_word_states) + zero_like_graph(self.projection.weight)
        student = student_word_states[keep]  # [N, Ds]
        teacher = teacher_word_repr[keep].to(student.dtype)  # [N, Dt]
        return self.compare(student, teacher, ("student_word_states", "teacher_word_repr"))
