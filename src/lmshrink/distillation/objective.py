"""The student and a stage's weighted losses as one module.

Wrapping both in one `nn.Module` lets `accelerate` (DDP) synchronise the gradients of the
student and of loss parameters (projections) in one backward pass. Losses read named
tensors; this module produces the ones a stage's losses need:

- `student_logits` [B, C], `student_repr` [B, D] (a student whose output carries its own
  `pooled` sentence vector, the BiLSTM: that vector; a transformer: the last layer's [CLS]
  state), and the cached teacher targets `teacher_logits`, `teacher_repr`, and gold `labels`;
- per-token states for layer-wise losses, from both models on the same batch (which needs
  a student that reads the teacher's tokenizer): `*_hidden_states` (embeddings first,
  [B, T, H] each), `*_attentions` ([B, heads, T, T] each), `*_values` ([B, T, H] each),
  and `attention_mask` [B, T]. They come from the teacher's cached targets
  (`lmshrink.distillation.layer_cache`) when the batch brings them, else from a forward pass of the
  teacher on the batch, without gradient;
- for token tasks, the word-level tensors (`loss_registry.WORD_INPUTS`): the student's
  `student_word_logits` [B, W, C] and `student_word_states` [B, W, Ds] (its last hidden
  state) gathered at each word's first sub-token, and `word_labels` [B, W] from the gold
  per-token labels, all at the positions `word_index` [B, W] of the targets; the targets
  bring `word_mask` [B, W] and the cached `teacher_word_logits`, `teacher_word_repr`.

What each loss reads and needs at construction (layer pairs, the two models' widths) comes
from its registry entry (`lmshrink.distillation.loss_registry`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from lmshrink.distillation.loss_registry import LOSSES, TEACHER_TOKEN_TARGETS


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
        self.inputs: list[tuple[str, ...]] = []  # per loss, the named tensors it reads
        for spec in specs:
            entry = LOSSES.get(spec.name)
            params = dict(spec.params)
            if entry.widths == "representation":
                params.update(student_dim=pooled_size(student), teacher_dim=teacher_repr_dim)
            elif entry.widths == "hidden":
                params.update(
                    student_dim=student.config.hidden_size, teacher_dim=teacher.config.hidden_size
                )
            elif entry.widths == "word":
                params.update(student_dim=word_state_size(student), teacher_dim=teacher_repr_dim)
            if entry.needs_pairs:
                params["pairs"] = pairs
            self.losses.append(entry.build(**params))
            self.inputs.append(entry.inputs)

    @property
    def needs(self) -> set[str]:
        """Every named tensor the stage's losses read."""
        return {name for inputs in self.inputs for name in inputs}

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
        if "word_index" in targets:  # a token task: read the student at each word
            self._word_tensors(named, targets["word_index"], targets["word_mask"])
        total = named["student_logits"].new_zeros(())
        parts = {}
        losses = zip(self.names, self.weights, self.losses, self.inputs, strict=True)
        for name, weight, loss_fn, inputs in losses:
            value = loss_fn(**{k: named[k] for k in inputs})  # scalar
            parts[name] = value.detach()
            total = total + weight * value
        return total, parts

    def _word_tensors(self, named: dict[str, Any], index: torch.Tensor, mask: torch.Tensor) -> None:
        """Add the word-level tensors the losses read, gathered at `index` [B, W]."""
        from lmshrink.data.task_kinds import IGNORE_INDEX

        needs = self.needs
        if "student_word_logits" in needs:
            named["student_word_logits"] = gather_words(named["student_logits"], index)
        if "student_word_states" in needs:
            named["student_word_states"] = gather_words(named["student_token_states"], index)
        if "word_labels" in needs:
            labels = gather_words(named["labels"], index)  # [B, W]
            named["word_labels"] = labels.masked_fill(~mask.bool(), IGNORE_INDEX)

    def _run(self, model: nn.Module, side: str, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """One model's forward, returning the named tensors of `side` that losses read."""
        from lmshrink.distillation.probes import capture_values

        needs = self.needs
        word_states = side == "student" and "student_word_states" in needs
        hidden = (
            f"{side}_hidden_states" in needs
            or (side == "student" and "student_repr" in needs)
            or word_states
        )
        kwargs = {
            "output_hidden_states": hidden,
            "output_attentions": f"{side}_attentions" in needs,
        }
        values = capture_values(model) if f"{side}_values" in needs else contextlib.nullcontext()
        with values as captured:
            out = model(**batch, **kwargs)
        named: dict[str, Any] = {f"{side}_logits": out.logits}
        pooled = getattr(out, "pooled", None)
        if pooled is not None:  # a student that pools its own sentence vector (the BiLSTM)
            named[f"{side}_repr"] = pooled  # [B, D]
        elif hidden:
            named[f"{side}_hidden_states"] = out.hidden_states
            named[f"{side}_repr"] = out.hidden_states[-1][:, 0]  # [B, H]: the [CLS] state
        if kwargs["output_attentions"]:
            named[f"{side}_attentions"] = out.attentions
        if captured is not None:
            named[f"{side}_values"] = list(captured)
        if word_states:  # [B, T, Ds], read at the words by `_word_tensors`
            named["student_token_states"] = out.hidden_states[-1]
        return named


def pooled_size(student: nn.Module) -> int:
    """Size of the student's sentence vector `student_repr`: the `pooled_size` its config
    declares (the BiLSTM's, 2 x hidden), else the hidden size (a transformer's [CLS] state)."""
    config = student.config
    return getattr(config, "pooled_size", config.hidden_size)


def word_state_size(student: nn.Module) -> int:
    """Width of the student's per-word state `student_word_states` (its last hidden state):
    the `pooled_size` its config declares (a BiLSTM's, both directions: 2 x hidden), else
    the hidden size (a transformer's)."""
    return pooled_size(student)


def gather_words(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`values` [B, T, ...] read at token positions `index` [B, W] -> [B, W, ...]."""
    if values.dim() == 2:
        return values.gather(1, index)
    expanded = index.reshape(*index.shape, *([1] * (values.dim() - 2)))
    return values.gather(1, expanded.expand(-1, -1, *values.shape[2:]))


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
