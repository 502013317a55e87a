"""The student and a stage's weighted losses as one module.

Wrapping both in one `nn.Module` lets `accelerate` (DDP) synchronise the gradients of the
student and of loss parameters (projections) in one backward pass. Losses read named
tensors; this module produces the ones a stage's losses need:

- `student_logits` [B, C], `student_repr` [B, D] (BiLSTM: pooled state; transformer: the
  last layer's [CLS] state), and the cached teacher targets `teacher_logits`,
  `teacher_repr`, and gold `labels`;
- per-token states for layer-wise losses, from both models on the same batch (which needs
  a student that reads the teacher's tokenizer): `*_hidden_states` (embeddings first,
  [B, T, H] each), `*_attentions` ([B, heads, T, T] each), `*_values` ([B, T, H] each),
  and `attention_mask` [B, T]. They come from the teacher's cached targets
  (`lmshrink.distillation.layer_cache`) when the batch brings them, else from a forward pass of the
  teacher on the batch, without gradient.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from lmshrink.distillation.layer_cache import TEACHER_TOKEN_TARGETS
from lmshrink.distillation.losses import build_loss

# Losses whose construction needs the layer pairs, or the two models' widths.
NEEDS_PAIRS = {"hidden_mse", "attention_kl", "attention_mse", "value_relation"}
NEEDS_WIDTHS = {"hidden_mse", "embedding_mse", "representation"}


class Objective(nn.Module):
    """forward(batch, targets) -> (weighted total loss, {loss name: value})."""

    def __init__(
        self,
        student: nn.Module,
        specs: list[Any],
        teacher: nn.Module | None = None,
        teacher_repr_dim: int = 0,
        pairs: list[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__()
        self.student = student
        # A list keeps the teacher out of this module's parameters (it is never trained,
        # and DDP must not wrap it).
        self._teacher = [teacher]
        self.losses = nn.ModuleList()
        self.names = [s.name for s in specs]
        self.weights = [s.weight for s in specs]
        for spec in specs:
            params = dict(spec.params)
            if spec.name == "representation":
                params.update(student_dim=pooled_size(student), teacher_dim=teacher_repr_dim)
            elif spec.name in NEEDS_WIDTHS:
                params.update(
                    student_dim=student.config.hidden_size, teacher_dim=teacher.config.hidden_size
                )
            if spec.name in NEEDS_PAIRS:
                params["pairs"] = pairs
            self.losses.append(build_loss(spec.name, **params))

    @property
    def needs(self) -> set[str]:
        """Every named tensor the stage's losses read."""
        return {name for loss in self.losses for name in loss.inputs}

    def forward(
        self, batch: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        named = {**targets, **self._run(self.student, "student", batch)}
        # Per-token teacher targets not in `targets` (from the layer cache) come from a
        # forward pass of the teacher on this batch.
        if (self.needs & TEACHER_TOKEN_TARGETS) - targets.keys():
            with torch.no_grad():
                online = self._run(self._teacher[0], "teacher", batch)
            for key, value in online.items():
                named.setdefault(key, value)  # cached targets (the chosen repr) come first
        named["attention_mask"] = batch["attention_mask"]
        total = named["student_logits"].new_zeros(())
        parts = {}
        for name, weight, loss_fn in zip(self.names, self.weights, self.losses, strict=True):
            value = loss_fn(**{k: named[k] for k in loss_fn.inputs})  # scalar
            parts[name] = value.detach()
            total = total + weight * value
        return total, parts

    def _run(self, model: nn.Module, side: str, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """One model's forward, returning the named tensors of `side` that losses read."""
        from lmshrink.distillation.probes import capture_values

        needs = self.needs
        if model.config.model_type == "lmshrink_bilstm":
            out = model(**batch)
            return {"student_logits": out.logits, "student_repr": out.pooled}
        hidden = f"{side}_hidden_states" in needs or (side == "student" and "student_repr" in needs)
        kwargs = {
            "output_hidden_states": hidden,
            "output_attentions": f"{side}_attentions" in needs,
        }
        values = capture_values(model) if f"{side}_values" in needs else contextlib.nullcontext()
        with values as captured:
            out = model(**batch, **kwargs)
        named: dict[str, Any] = {f"{side}_logits": out.logits}
        if hidden:
            named[f"{side}_hidden_states"] = out.hidden_states
            named[f"{side}_repr"] = out.hidden_states[-1][:, 0]  # [B, H]: the [CLS] state
        if kwargs["output_attentions"]:
            named[f"{side}_attentions"] = out.attentions
        if captured is not None:
            named[f"{side}_values"] = list(captured)
        return named


def pooled_size(student: nn.Module) -> int:
    """Size of the student's sentence vector: 2 x hidden for the BiLSTM, hidden otherwise."""
    config = student.config
    return 2 * config.hidden_size if config.model_type == "lmshrink_bilstm" else config.hidden_size


def prepare_for_attention_losses(model: nn.Module) -> None:
    """Eager attention (the fused kernels return no attention maps) and, for the student, no
    dropout on attention probabilities (it would distort the maps that are matched)."""
    model.set_attn_implementation("eager")
    for name, module in model.named_modules():
        if name.endswith("attention.self") and isinstance(
            getattr(module, "dropout", None), nn.Dropout
        ):
            module.dropout.p = 0.0
    model.config.attention_probs_dropout_prob = 0.0
