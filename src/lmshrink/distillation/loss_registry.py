"""The registry of distillation losses: each entry says what its loss reads and needs.

A loss is an `nn.Module` whose `forward` takes named tensors as keyword arguments and
returns a scalar. `register_loss` records on the loss's registry entry everything the rest
of the pipeline asks about it, so that adding a loss touches only the file that defines it:

- what it reads: the names of its `forward` parameters, each one of the named tensors the
  distillation loop provides (`INPUTS`: student and teacher logits, the pooled
  representations, gold labels, per-token states and attention masks; for token tasks,
  the same per word);
- so, which kind of task it fits (`level`): a loss on one output per sentence
  (`student_logits`, `labels`, ...) fits sentence tasks, a loss on per-word outputs
  (`student_word_logits`, `word_labels`, ...) token tasks, and a layer-wise loss on
  per-token states both;
- whether it is built with the layer map's (student, teacher) pairs (`needs_pairs`), or with
  the two models' widths for a learned projection (`widths`: "representation" for the
  pooled sentence vectors, "hidden" for the hidden states, "word" for the per-word states
  of token tasks);
- which teacher layers its per-token teacher targets index (`teacher_layers`: "mapped", the
  teacher layers of the pairs, or "embeddings", hidden state 0), so that the layer cache can
  store them once. A loss that reads per-token teacher targets without saying which layers
  gets them from a forward pass of the teacher on every batch;
- a check of the two models' layer shapes that must pass before anything slow starts
  (`check`, called with the loss's params and both `LayerShape`s).

Entries are checked when they are registered, so a loss that reads a tensor the loop does
not provide, or declares a need its constructor cannot take, fails at import.

    @register_loss("soft_kl")
    class SoftKLLoss(nn.Module):
        def forward(self, student_logits, teacher_logits): ...

    build_loss("soft_kl", temperature=2.0)

This module imports no torch: stage checks and configs ask it questions cheaply. The
built-in losses (`lmshrink.distillation.losses`) are imported on the first lookup.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

from lmshrink.errors import ConfigError
from lmshrink.registry import Registry

# Every named tensor a loss may read, and where it comes from. Shapes: B batch, C classes,
# T tokens, W words, L layers, H heads, D widths (s: student, t: teacher).
# Word-level tensors (token tasks) are read at each word's first sub-token (for the student
# from its per-token outputs, at `Encoded.word_starts`), padded to the batch's most words;
# `word_mask` is True at the real words both models saw (never padding, never later
# sub-tokens), and every word-level loss averages over those only.
WORD_INPUTS = {
    "student_word_logits": "student",  # [B, W, C]
    "student_word_states": "student",  # [B, W, Ds]: the student's last hidden state per word
    "teacher_word_logits": "teacher",  # [B, W, C]: from the teacher cache
    "teacher_word_repr": "teacher",  # [B, W, Dt]: the teacher's hidden state per word, cached
    "word_labels": "gold",  # [B, W]: gold tag ids (-100 at padding)
    "word_mask": "words",  # [B, W] bool
}
# The tensors of sentence tasks: one output per example.
SENTENCE_INPUTS = {
    "student_logits",
    "student_repr",
    "teacher_logits",
    "teacher_repr",
    "labels",
}
INPUTS = {
    "student_logits": "student",  # [B, C]
    "student_repr": "student",  # [B, Ds]: the student's sentence vector (pooled, or [CLS])
    "teacher_logits": "teacher",  # [B, C]: from the teacher cache
    "teacher_repr": "teacher",  # [B, Dt]: the teacher's pooled hidden state, cached
    "labels": "gold",  # [B]: class ids (-100: unlabeled) or scores (NaN: unlabeled)
    "student_hidden_states": "student_tokens",  # L_s + 1 of [B, T, Ds], embeddings first
    "student_attentions": "student_tokens",  # L_s of [B, H, T, T]
    "student_values": "student_tokens",  # L_s of [B, T, Ds]
    "teacher_hidden_states": "teacher_tokens",  # L_t + 1 of [B, T, Dt]
    "teacher_attentions": "teacher_tokens",  # L_t of [B, H, T, T]
    "teacher_values": "teacher_tokens",  # L_t of [B, T, Dt]
    "attention_mask": "tokens",  # [B, T]: 1 at real tokens
    **WORD_INPUTS,
}
# The per-token teacher targets, by the kind of layer output they hold.
TARGET_NAMES = {
    "hidden": "teacher_hidden_states",
    "attentions": "teacher_attentions",
    "values": "teacher_values",
}
TEACHER_TOKEN_TARGETS = frozenset(TARGET_NAMES.values())
WIDTHS = ("representation", "hidden", "word")
# `LossEntry.level`: what kind of task a loss fits.
SENTENCE, WORD = "sentence", "word"
TEACHER_LAYERS = ("mapped", "embeddings")


@dataclasses.dataclass(frozen=True)
class LossEntry:
    """A registered loss: its class and what it reads and needs (see the module doc)."""

    name: str
    cls: type
    inputs: tuple[str, ...]
    needs_pairs: bool = False
    widths: str | None = None
    teacher_layers: str | None = None
    check: Callable[[dict[str, Any], Any, Any], None] | None = None

    def _sources(self) -> set[str]:
        return {INPUTS[name] for name in self.inputs}

    @property
    def reads_teacher(self) -> bool:
        """Reads per-example teacher outputs (logits, representation): transfer data only."""
        return "teacher" in self._sources()

    @property
    def reads_labels(self) -> bool:
        """Reads gold labels: labeled data only."""
        return "gold" in self._sources()

    @property
    def per_token(self) -> bool:
        """Compares per-token states of both models: a transformer student that reads the
        teacher's tokens, on transfer data."""
        return bool(self._sources() & {"student_tokens", "teacher_tokens", "tokens"})

    @property
    def level(self) -> str | None:
        """The kind of task it fits: SENTENCE (reads one output per example), WORD (reads
        per-word outputs: token tasks), or None (per-token states only: both)."""
        if set(self.inputs) & set(WORD_INPUTS):
            return WORD
        return SENTENCE if set(self.inputs) & SENTENCE_INPUTS else None

    @property
    def teacher_targets(self) -> tuple[str, ...]:
        """The kinds of per-token teacher targets it reads ("hidden", "attentions", "values")."""
        return tuple(kind for kind, name in TARGET_NAMES.items() if name in self.inputs)

    @property
    def reads_attentions(self) -> bool:
        """Compares attention maps, which only eager attention returns."""
        return bool({"student_attentions", "teacher_attentions"} & set(self.inputs))

    def build(self, **params: Any) -> Any:
        """The loss module with `params`; an unknown or missing parameter raises
        `ConfigError` naming the loss and the parameters it accepts."""
        accepted = _parameters(self.cls)
        accepts = f"it accepts: {', '.join(accepted)}" if accepted else "it takes no parameters"
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ConfigError(
                f"loss {self.name!r} has no parameter {', '.join(map(repr, unknown))}; {accepts}."
            )
        missing = [p for p, required in accepted.items() if required and p not in params]
        if missing:
            raise ConfigError(
                f"loss {self.name!r} needs parameter {', '.join(map(repr, missing))}; {accepts}."
            )
        return self.cls(**params)


LOSSES: Registry[LossEntry] = Registry("loss", builtins="lmshrink.distillation.losses")


def _parameters(cls: type) -> dict[str, bool]:
    """The constructor's keyword parameters -> whether each is required."""
    return {
        p.name: p.default is p.empty
        for p in inspect.signature(cls).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def forward_inputs(cls: type) -> tuple[str, ...]:
    """The named tensors a loss class reads: its `forward` parameters after `self`."""
    params = list(inspect.signature(cls.forward).parameters.values())[1:]
    if any(p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params):
        raise ValueError(f"{cls.__name__}.forward must take named tensors only (no *args).")
    return tuple(p.name for p in params)


def make_entry(
    name: str,
    cls: type,
    *,
    needs_pairs: bool = False,
    widths: str | None = None,
    teacher_layers: str | None = None,
    check: Callable[[dict[str, Any], Any, Any], None] | None = None,
) -> LossEntry:
    """The checked registry entry of loss class `cls`; an entry that cannot work (a tensor
    the loop does not provide, a need the constructor cannot take) raises `ValueError`."""
    inputs = forward_inputs(cls)
    where = f"loss {name!r} ({cls.__name__})"
    unknown = sorted(set(inputs) - set(INPUTS))
    if not inputs or unknown:
        raise ValueError(
            f"{where} reads {', '.join(unknown) or 'nothing'}; a loss reads some of: "
            f"{', '.join(INPUTS)}."
        )
    if set(inputs) & set(WORD_INPUTS) and set(inputs) & SENTENCE_INPUTS:
        raise ValueError(
            f"{where} reads both per-example and per-word tensors; a loss fits one kind of task."
        )
    params = _parameters(cls)
    if widths not in (None, *WIDTHS):
        raise ValueError(f"{where}: widths must be one of {WIDTHS} or None, not {widths!r}.")
    if widths and not {"student_dim", "teacher_dim"} <= set(params):
        raise ValueError(f"{where} declares widths but does not take student_dim, teacher_dim.")
    if needs_pairs and "pairs" not in params:
        raise ValueError(f"{where} declares needs_pairs but does not take pairs.")
    if teacher_layers not in (None, *TEACHER_LAYERS):
        raise ValueError(
            f"{where}: teacher_layers must be one of {TEACHER_LAYERS} or None, "
            f"not {teacher_layers!r}."
        )
    if teacher_layers and not set(inputs) & TEACHER_TOKEN_TARGETS:
        raise ValueError(f"{where} declares teacher_layers but reads no per-token targets.")
    if teacher_layers == "mapped" and not needs_pairs:
        raise ValueError(f"{where} reads the mapped teacher layers, so it needs_pairs.")
    return LossEntry(name, cls, inputs, needs_pairs, widths, teacher_layers, check)


def register_loss(name: str, **needs: Any) -> Callable[[type], type]:
    """A class decorator that registers a loss under `name` with its needs (`make_entry`'s
    keywords) and returns the class unchanged."""
    add = LOSSES.register(name)

    def decorator(cls: type) -> type:
        add(make_entry(name, cls, **needs))
        return cls

    return decorator


def build_loss(name: str, **params: Any) -> Any:
    """Construct the loss registered as `name` with `params` (see `LossEntry.build`)."""
    return LOSSES.get(name).build(**params)


def zero_like_graph(student: Any) -> Any:
    """A scalar 0 that keeps `student` in its graph, so backward() works on an empty batch."""
    return student.sum() * 0.0


def check_same_shape(a_name: str, a: Any, b_name: str, b: Any) -> None:
    """Raise `ValueError` unless tensors `a` and `b` have one shape (broadcasting would
    silently compare every row with every other one)."""
    if a.shape != b.shape:
        raise ValueError(
            f"{a_name} has shape {tuple(a.shape)} but {b_name} has shape {tuple(b.shape)}; "
            "they must match."
        )
