"""Layer-wise distillation losses (TinyBERT, MiniLM): hidden states, attention maps and
value relations of mapped student and teacher layers, compared token by token.

Shapes: T is the sequence length (the same tokens for student and teacher), L the number of
transformer layers, Hs and Ht the attention heads, Ds and Dt the hidden sizes.

A layer-wise loss is built with `pairs`, the (student, teacher) layer pairs from
`lmshrink.distillation.layer_map.map_layers`, in Hugging Face `hidden_states` numbering: 0 is
the embedding output, i the output of transformer layer i. Hidden states come as the model
returns them (L + 1 tensors, embedding output first); attentions and value vectors have
one tensor per transformer layer, so layer i is at position i - 1 there.

`attention_mask [B, T]` (1: a real token, 0: padding) keeps padding out of every
token-level loss: padded tokens are neither compared nor attended to, so the loss of a
sequence does not depend on how much padding its batch adds.

Each loss's registry entry says which teacher layers it reads ("mapped": the teacher layers
of its pairs; "embeddings": hidden state 0), so the layer cache can store exactly those, and
checks the two models' head counts or widths before training (`check`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lmshrink.distillation.layer_map import LayerShape, check_attention_heads, check_relation_heads
from lmshrink.distillation.loss_registry import register_loss, zero_like_graph
from lmshrink.errors import ConfigError

# The smallest positive float32: a student probability that underflowed to exactly 0 is read
# as this before its log is taken, so KL stays finite.
_TINY = torch.finfo(torch.float32).tiny


def _check_pairs(loss: str, pairs: Any) -> tuple[tuple[int, int], ...]:
    """`pairs` as a tuple of (student, teacher) int tuples, or a ConfigError naming the loss."""
    out: list[tuple[int, int]] = []
    ok = isinstance(pairs, (list, tuple)) and len(pairs) > 0
    for pair in pairs if ok else ():
        if not (
            isinstance(pair, (list, tuple))
            and len(pair) == 2
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in pair)
        ):
            ok = False
            break
        out.append((int(pair[0]), int(pair[1])))
    if not ok:
        raise ConfigError(
            f"{loss} pairs must be a non-empty list of [student_layer, teacher_layer] pairs of "
            f"whole numbers >= 0 (see lmshrink.distillation.layer_map.map_layers), got {pairs!r}."
        )
    return tuple(out)


def _transformer_pairs(loss: str, pairs: Any) -> tuple[tuple[int, int], ...]:
    """Pairs for losses on attention or value vectors, which the embedding output lacks.

    The pair (0, 0), which `include_embeddings` adds to a layer map, is left out, so one map
    can serve every loss of a stage; a pair joining the embedding output to a transformer
    layer is a mistake and raises `ConfigError`.
    """
    out = []
    for s, t in _check_pairs(loss, pairs):
        if (s, t) == (0, 0):
            continue
        if s == 0 or t == 0:
            raise ConfigError(
                f"{loss} pair ({s}, {t}) joins the embedding output to a transformer layer, "
                "but the embedding output has no attention or value vectors; use layers 1 and up."
            )
        out.append((s, t))
    if not out:
        raise ConfigError(
            f"{loss} needs at least one pair of transformer layers (1 and up), got {pairs!r}."
        )
    return tuple(out)


def _entry(
    name: str, tensors: Sequence[torch.Tensor] | None, position: int, hint: str
) -> torch.Tensor:
    """tensors[position], or a ValueError that says how to obtain the missing tensor."""
    if not tensors:
        raise ValueError(f"{name} is empty; {hint}.")
    if not 0 <= position < len(tensors):
        raise ValueError(
            f"{name} has {len(tensors)} entries, so it has none at position {position}; check "
            f"the layer pairs against the model's depth ({hint})."
        )
    return tensors[position]


def _valid_tokens(attention_mask: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """attention_mask [B, T] -> bool [B, T], True at real tokens."""
    if tuple(attention_mask.shape) != (batch, length):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}, but the compared tensors "
            f"have batch {batch} and length {length}; it must be [B, T] = ({batch}, {length})."
        )
    return attention_mask != 0


def _masked_row_kl(
    teacher_logp: torch.Tensor, student_logp: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Mean over heads, real query rows and batch of KL(teacher row || student row).

    teacher_logp, student_logp [B, H, T, T] log-probabilities over keys (last dim);
    valid [B, T] bool. Padded keys are left out of each row's sum and padded query rows out
    of the mean. With no real token at all the result is a zero connected to the graph.
    """
    key_valid = valid[:, None, None, :]  # [B, 1, 1, T]
    # where() before the subtraction: padded entries may hold -inf or garbage.
    log_t = torch.where(key_valid, teacher_logp, 0.0)  # [B, H, T, T]
    log_s = torch.where(key_valid, student_logp, 0.0)  # [B, H, T, T]
    p_t = torch.where(key_valid, log_t.exp(), 0.0)  # [B, H, T, T]
    row_kl = (p_t * (log_t - log_s)).sum(dim=-1)  # [B, H, T]
    rows = row_kl.transpose(1, 2)[valid]  # [N, H], N real query rows in the batch
    if rows.numel() == 0:
        return zero_like_graph(student_logp)
    return rows.mean()


def _same_heads(params: dict[str, Any], student: LayerShape, teacher: LayerShape) -> None:
    """Attention losses compare head h with head h: the head counts must be equal."""
    check_attention_heads(student, teacher)


def _relation_heads_divide(
    params: dict[str, Any], student: LayerShape, teacher: LayerShape
) -> None:
    """value_relation splits both models' value vectors into `relation_heads` heads."""
    check_relation_heads(student, teacher, int(params.get("relation_heads", 0)))


HIDDEN_HINT = "call the model with output_hidden_states=True"
ATTENTION_HINT = (
    "load the model with attn_implementation='eager' and call it with output_attentions=True "
    "(the default 'sdpa' attention returns no attentions)"
)
VALUES_HINT = (
    "collect them during the forward with lmshrink.distillation.probes.capture_values(model)"
)


@register_loss("hidden_mse", needs_pairs=True, widths="hidden", teacher_layers="mapped")
class HiddenStateMSELoss(nn.Module):
    """TinyBERT's hidden-state loss: MSE between mapped student and teacher layer outputs.

    For each (student, teacher) pair, the student's hidden states [B, T, Ds] pass through a
    learned projection to the teacher's width Dt (one `nn.Linear` per pair, as the layers
    hold different features; none when Ds == Dt), then the squared error is averaged over
    the real (unpadded) tokens and the Dt features. The loss is the mean over the pairs.

    With Ds != Dt this loss HAS PARAMETERS: the training loop must add `loss.parameters()`
    to the optimiser and move the loss to the student's device. The projections are only
    needed for training and are not part of the saved student.
    """

    loss_name: ClassVar[str] = "hidden_mse"  # for messages (embedding_mse shares __init__)

    def __init__(self, student_dim: int, teacher_dim: int, pairs: Sequence[Sequence[int]]) -> None:
        super().__init__()
        name = self.loss_name
        for arg, dim in (("student_dim", student_dim), ("teacher_dim", teacher_dim)):
            if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
                raise ConfigError(f"{name} {arg} must be a positive whole number, got {dim!r}.")
        self.student_dim = student_dim
        self.teacher_dim = teacher_dim
        self.pairs = _check_pairs(name, pairs)
        self.projections: nn.ModuleList | None = None
        if student_dim != teacher_dim:
            self.projections = nn.ModuleList(
                nn.Linear(student_dim, teacher_dim) for _ in self.pairs
            )

    def forward(
        self,
        student_hidden_states: Sequence[torch.Tensor],
        teacher_hidden_states: Sequence[torch.Tensor],
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """student_hidden_states: L_s + 1 tensors [B, T, Ds]; teacher_hidden_states: L_t + 1
        tensors [B, T, Dt]; attention_mask [B, T] -> scalar."""
        per_pair = []
        for k, (s, t) in enumerate(self.pairs):
            student = _entry("student_hidden_states", student_hidden_states, s, HIDDEN_HINT)
            teacher = _entry("teacher_hidden_states", teacher_hidden_states, t, HIDDEN_HINT)
            if student.shape[:2] != teacher.shape[:2]:
                raise ValueError(
                    f"student_hidden_states[{s}] has shape {tuple(student.shape)} but "
                    f"teacher_hidden_states[{t}] has shape {tuple(teacher.shape)}; batch and "
                    "length must match (both models must see the same tokens)."
                )
            if student.shape[-1] != self.student_dim or teacher.shape[-1] != self.teacher_dim:
                raise ValueError(
                    f"student_hidden_states[{s}] has width {student.shape[-1]} and "
                    f"teacher_hidden_states[{t}] width {teacher.shape[-1]}, but the loss was "
                    f"built with student_dim {self.student_dim} and teacher_dim "
                    f"{self.teacher_dim}."
                )
            valid = _valid_tokens(attention_mask, *student.shape[:2])  # [B, T] bool
            if not bool(valid.any()):
                per_pair.append(zero_like_graph(student))
                continue
            x = student[valid]  # [N, Ds], N real tokens in the batch
            if self.projections is not None:
                x = self.projections[k](x)  # [N, Dt]
            y = teacher[valid].to(x.dtype)  # [N, Dt]
            per_pair.append(F.mse_loss(x, y, reduction="mean"))
        return torch.stack(per_pair).mean()

    def extra_repr(self) -> str:
        return f"student_dim={self.student_dim}, teacher_dim={self.teacher_dim}, pairs={self.pairs}"


@register_loss("embedding_mse", widths="hidden", teacher_layers="embeddings")
class EmbeddingMSELoss(HiddenStateMSELoss):
    """TinyBERT's embedding-layer loss: `hidden_mse` on the embedding outputs only, pair (0, 0).

    Same inputs as `hidden_mse` (the full hidden-state tuples); the student's embedding
    output is projected to the teacher's width when the widths differ.
    """

    loss_name: ClassVar[str] = "embedding_mse"

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__(student_dim, teacher_dim, pairs=[(0, 0)])

    def extra_repr(self) -> str:
        return f"student_dim={self.student_dim}, teacher_dim={self.teacher_dim}"


class _AttentionLoss(nn.Module):
    """What attention_kl and attention_mse share: inputs, pairs and the shape checks."""

    loss_name: ClassVar[str] = ""

    def __init__(self, pairs: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.pairs = _transformer_pairs(self.loss_name, pairs)

    def _maps(
        self,
        student_attentions: Sequence[torch.Tensor],
        teacher_attentions: Sequence[torch.Tensor],
        s: int,
        t: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention maps of pair (s, t), both [B, H, T, T] float32, shape-checked."""
        student = _entry("student_attentions", student_attentions, s - 1, ATTENTION_HINT)
        teacher = _entry("teacher_attentions", teacher_attentions, t - 1, ATTENTION_HINT)
        if student.shape != teacher.shape:
            raise ValueError(
                f"student attention of layer {s} has shape {tuple(student.shape)} but teacher "
                f"attention of layer {t} has shape {tuple(teacher.shape)}; [B, H, T, T] must "
                "match (attention losses compare head by head, so the head counts must be "
                "equal)."
            )
        return student.float(), teacher.float()

    def extra_repr(self) -> str:
        return f"pairs={self.pairs}"


@register_loss("attention_kl", needs_pairs=True, teacher_layers="mapped", check=_same_heads)
class AttentionKLLoss(_AttentionLoss):
    """MiniLM's self-attention distribution transfer: KL(teacher attention || student attention).

    For each mapped pair of transformer layers, each head's attention row (one query's
    distribution over keys) of the teacher is compared with the same head's row of the
    student by KL(teacher || student), summed over the real keys and averaged over the
    heads, the real query rows and the batch; the loss is the mean over the pairs. The
    inputs are attention PROBABILITIES, as Hugging Face models return them. Head h is
    compared with head h, so both models need the same number of heads (checked before
    training by `lmshrink.distillation.layer_map.check_attention_heads`, and again here).

    The student's attentions must be dropout-free: in training mode a Hugging Face model
    returns its attention after dropout (zeroed entries, rows summing to 1/(1-p)), so set
    `attention_probs_dropout_prob=0` on the student when using this loss.
    """

    loss_name: ClassVar[str] = "attention_kl"

    def forward(
        self,
        student_attentions: Sequence[torch.Tensor],
        teacher_attentions: Sequence[torch.Tensor],
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """student_attentions: L_s tensors [B, H, T, T]; teacher_attentions: L_t tensors
        [B, H, T, T] (probabilities over the last dim); attention_mask [B, T] -> scalar."""
        per_pair = []
        for s, t in self.pairs:
            student, teacher = self._maps(student_attentions, teacher_attentions, s, t)
            valid = _valid_tokens(attention_mask, student.shape[0], student.shape[-1])
            # A student probability that underflowed to 0 would give log 0 = -inf.
            student_logp = student.clamp_min(_TINY).log()  # [B, H, T, T]
            teacher_logp = teacher.clamp_min(_TINY).log()  # [B, H, T, T]; p log p -> 0 at 0
            per_pair.append(_masked_row_kl(teacher_logp, student_logp, valid))
        return torch.stack(per_pair).mean()


@register_loss("attention_mse", needs_pairs=True, teacher_layers="mapped", check=_same_heads)
class AttentionMSELoss(_AttentionLoss):
    """TinyBERT's attention loss, on what Hugging Face models return: probabilities.

    TinyBERT takes the MSE between the student's and the teacher's attention SCORES
    (q.k / sqrt(d), before the softmax). Models return softmax(scores) instead, and a
    softmax forgets a constant added to a row, so the scores can only be recovered up to
    that constant: log p_ij = z_ij - logsumexp_j(z_i.). This loss therefore compares
    row-centred log-probabilities,

        a_ij = log(p_ij + floor) - mean over real keys k of log(p_ik + floor),

    which equal the row-centred scores z_ij - mean_k z_ik exactly when floor = 0: it is
    TinyBERT's score MSE with each row's (unknowable) shift removed. The small `floor`
    keeps keys that both models ignore (p ~ 0, or 0 after an fp16 cache) from dominating
    with huge negative logs, and keeps a gradient where the student's probability is 0.
    The squared difference of a_ij is averaged over heads, real query rows i, real keys j
    and the batch, then over the pairs. Needs equal head counts and dropout-free student
    attentions, like `attention_kl`.
    """

    loss_name: ClassVar[str] = "attention_mse"

    def __init__(self, pairs: Sequence[Sequence[int]], floor: float = 1e-6) -> None:
        super().__init__(pairs)
        if not (isinstance(floor, (int, float)) and math.isfinite(floor) and 0 < floor < 1):
            raise ConfigError(f"attention_mse floor must be in (0, 1), got {floor!r}.")
        self.floor = float(floor)

    def _centred_logs(self, attention: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        """attention [B, H, T, T], key_valid [B, 1, 1, T] -> row-centred logs [B, H, T, T]."""
        logs = torch.where(key_valid, (attention.clamp_min(0.0) + self.floor).log(), 0.0)
        real_keys = key_valid.sum(dim=-1, keepdim=True).clamp_min(1)  # [B, 1, 1, 1]
        row_mean = logs.sum(dim=-1, keepdim=True) / real_keys  # [B, H, T, 1]
        return torch.where(key_valid, logs - row_mean, 0.0)

    def forward(
        self,
        student_attentions: Sequence[torch.Tensor],
        teacher_attentions: Sequence[torch.Tensor],
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """student_attentions: L_s tensors [B, H, T, T]; teacher_attentions: L_t tensors
        [B, H, T, T] (probabilities over the last dim); attention_mask [B, T] -> scalar."""
        per_pair = []
        for s, t in self.pairs:
            student, teacher = self._maps(student_attentions, teacher_attentions, s, t)
            heads = student.shape[1]
            valid = _valid_tokens(attention_mask, student.shape[0], student.shape[-1])
            key_valid = valid[:, None, None, :]  # [B, 1, 1, T]
            diff = self._centred_logs(student, key_valid) - self._centred_logs(
                teacher, key_valid
            )  # [B, H, T, T], 0 at padded keys
            squares = (diff * diff).sum(dim=-1)  # [B, H, T], summed over real keys
            rows = squares.transpose(1, 2)[valid]  # [N, H], real query rows
            # Each real query row has as many real keys as its sequence has real tokens.
            keys_per_row = valid.sum(dim=1, keepdim=True).expand_as(valid)[valid]  # [N]
            count = keys_per_row.sum() * heads
            if count == 0:
                per_pair.append(zero_like_graph(student))
                continue
            per_pair.append(rows.sum() / count)
        return torch.stack(per_pair).mean()

    def extra_repr(self) -> str:
        return f"pairs={self.pairs}, floor={self.floor}"


@register_loss(
    "value_relation", needs_pairs=True, teacher_layers="mapped", check=_relation_heads_divide
)
class ValueRelationLoss(nn.Module):
    """MiniLM's value-relation transfer: KL between teacher and student value relations.

    For each mapped pair of layers, both models' value vectors (the self-attention value
    projection's output, [B, T, D]) are split into `relation_heads` heads of width
    d = D / relation_heads, and each head's relation is softmax(V V^T / sqrt(d)) over the
    real keys, a [T, T] matrix. As the relations are T x T, the widths and head counts of
    the two models may differ; only `relation_heads` must divide both widths (MiniLMv2's
    multi-head relations; checked before training by
    `lmshrink.distillation.layer_map.check_relation_heads`). The loss is
    KL(teacher row || student row),
    summed over the real keys and averaged over the relation heads, the real query rows
    and the batch, then over the pairs. Get the value vectors with
    `lmshrink.distillation.probes.capture_values`.
    """

    def __init__(self, pairs: Sequence[Sequence[int]], relation_heads: int) -> None:
        super().__init__()
        if (
            isinstance(relation_heads, bool)
            or not isinstance(relation_heads, int)
            or (relation_heads <= 0)
        ):
            raise ConfigError(
                f"value_relation relation_heads must be a positive whole number, "
                f"got {relation_heads!r}."
            )
        self.pairs = _transformer_pairs("value_relation", pairs)
        self.relation_heads = relation_heads

    def _log_relation(self, name: str, values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """values [B, T, D], valid [B, T] -> log relations [B, R, T, T] over the real keys."""
        batch, length, width = values.shape
        r = self.relation_heads
        if width % r:
            raise ValueError(
                f"{name} have width {width}, which {r} relation heads do not divide; choose "
                "relation_heads dividing both models' widths."
            )
        heads = values.float().view(batch, length, r, width // r).transpose(1, 2)  # [B,R,T,d]
        scores = heads @ heads.transpose(-1, -2) / math.sqrt(width // r)  # [B, R, T, T]
        scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))  # padded keys
        # A padded query row of an all-padding sequence is all -inf; it is never used, but
        # a finite row keeps log_softmax free of NaN.
        scores = scores.masked_fill(~valid.any(dim=1)[:, None, None, None], 0.0)
        return F.log_softmax(scores, dim=-1)  # [B, R, T, T]

    def forward(
        self,
        student_values: Sequence[torch.Tensor],
        teacher_values: Sequence[torch.Tensor],
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """student_values: L_s tensors [B, T, Ds]; teacher_values: L_t tensors [B, T, Dt];
        attention_mask [B, T] -> scalar."""
        per_pair = []
        for s, t in self.pairs:
            student = _entry("student_values", student_values, s - 1, VALUES_HINT)
            teacher = _entry("teacher_values", teacher_values, t - 1, VALUES_HINT)
            if student.dim() != 3 or teacher.dim() != 3 or student.shape[:2] != teacher.shape[:2]:
                raise ValueError(
                    f"student values of layer {s} have shape {tuple(student.shape)} and teacher "
                    f"values of layer {t} {tuple(teacher.shape)}; both must be [B, T, D] with "
                    "the same batch and length."
                )
            valid = _valid_tokens(attention_mask, *student.shape[:2])  # [B, T] bool
            student_logp = self._log_relation(f"student values of layer {s}", student, valid)
            teacher_logp = self._log_relation(f"teacher values of layer {t}", teacher, valid)
            per_pair.append(_masked_row_kl(teacher_logp, student_logp, valid))
        return torch.stack(per_pair).mean()

    def extra_repr(self) -> str:
        return f"pairs={self.pairs}, relation_heads={self.relation_heads}"
