"""Which student layer learns from which teacher layer, checked before training starts.

Layer-wise losses (hidden states, attentions, value relations) compare a student layer with
a teacher layer. A layer map is a list of (student, teacher) pairs in Hugging Face
`hidden_states` numbering: index 0 is the embedding output and index i the output of
transformer layer i, so a model with L layers has indices 0..L.

Three strategies make the map from the two depths S <= T:

- `uniform` (DistilBERT, TinyBERT): student layer i learns from teacher layer i * T // S,
  so the layers spread evenly and the last student layer meets the last teacher layer
  (S=3, T=6: (1, 2), (2, 4), (3, 6)).
- `last_k` (MiniLM-style top layers): student layer i learns from teacher layer T - S + i,
  the teacher's last S layers (S=3, T=6: (1, 4), (2, 5), (3, 6)).
- `explicit`: the pairs given by the user.

`include_embeddings` adds (0, 0), TinyBERT's embedding-layer pair. A map that cannot work
(an index past a model's depth, a student layer mapped twice, a student deeper than its
teacher under `uniform` or `last_k`, attention heads that do not match) raises `ConfigError`
before any training, in one sentence that shows both models' layer counts and sizes.
`check_layer_losses` runs these checks for a run's stages, before the teacher labels anything.

This module imports no torch, so configs and checks stay cheap.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lmshrink.config import option
from lmshrink.distillation.loss_registry import LOSSES
from lmshrink.errors import ConfigError

STRATEGIES = ("uniform", "last_k", "explicit")


@dataclasses.dataclass
class LayerMapConfig:
    """How student layers are paired with teacher layers for layer-wise losses."""

    strategy: str = option(
        "uniform",
        "uniform (student layer i -> teacher layer i*T//S), last_k (the teacher's last S "
        "layers) or explicit (the pairs below).",
    )
    pairs: list[list[int]] = option(
        [],
        "explicit strategy: [student_layer, teacher_layer] pairs, 1-based transformer layers "
        "(0: the embedding output), e.g. [[1, 2], [2, 4], [3, 6]].",
    )
    include_embeddings: bool = option(
        False, "also match the embedding outputs, pair (0, 0) (TinyBERT's embedding loss)."
    )


@dataclasses.dataclass(frozen=True)
class LayerShape:
    """The sizes of a transformer that decide whether a layer map can work."""

    num_layers: int
    hidden_size: int
    num_heads: int

    @classmethod
    def from_config(cls, config: Any) -> LayerShape:
        """Read the shape from a Hugging Face model config (BERT, RoBERTa, DistilBERT...)."""
        try:
            return cls(
                num_layers=int(config.num_hidden_layers),
                hidden_size=int(config.hidden_size),
                num_heads=int(config.num_attention_heads),
            )
        except AttributeError as exc:
            raise ConfigError(
                f"the model config {type(config).__name__} has no {exc.name!r}; layer-wise "
                "losses need a transformer with num_hidden_layers, hidden_size and "
                "num_attention_heads."
            ) from None

    def describe(self) -> str:
        """'3 layers (hidden 256, 4 heads)', the words every error message uses."""
        return f"{self.num_layers} layers (hidden {self.hidden_size}, {self.num_heads} heads)"


def _both(student: LayerShape, teacher: LayerShape) -> str:
    return f"the student has {student.describe()}, the teacher {teacher.describe()}"


def _strategy(cfg: LayerMapConfig) -> str:
    if cfg.strategy not in STRATEGIES:
        raise ConfigError(
            f"layer map strategy {cfg.strategy!r} is unknown; use one of: {', '.join(STRATEGIES)}."
        )
    return cfg.strategy


def _explicit_pairs(
    raw: list[Any], student: LayerShape, teacher: LayerShape
) -> list[tuple[int, int]]:
    """The user's pairs as int tuples, or a ConfigError naming the malformed one."""
    if not raw:
        raise ConfigError(
            f"layer map strategy 'explicit' needs pairs and got none: {_both(student, teacher)}; "
            "give pairs such as [[1, 2], [2, 4], [3, 6]]."
        )
    pairs = []
    for pair in raw:
        ok = (
            isinstance(pair, (list, tuple))
            and len(pair) == 2
            and all(isinstance(i, int) and not isinstance(i, bool) for i in pair)
        )
        if not ok:
            raise ConfigError(
                f"layer pair {pair!r} is malformed: {_both(student, teacher)}; write each pair "
                "as [student_layer, teacher_layer], two whole numbers."
            )
        pairs.append((pair[0], pair[1]))
    return pairs


def map_layers(
    cfg: LayerMapConfig, student: LayerShape, teacher: LayerShape
) -> list[tuple[int, int]]:
    """The checked (student, teacher) hidden-state index pairs that `cfg` describes.

    Indices follow `hidden_states` numbering (0: embedding output, i: layer i). The pairs
    come sorted by student layer (so (0, 0), added by `include_embeddings`, is first). Raises
    `ConfigError` when the map cannot work for these two models (see `validate_layer_map`).
    """
    strategy = _strategy(cfg)
    s, t = student.num_layers, teacher.num_layers
    if strategy == "explicit":
        pairs = _explicit_pairs(cfg.pairs, student, teacher)
    else:
        if s < 1 or t < 1:
            raise ConfigError(
                f"layer map {strategy!r} needs at least one layer on each side, but "
                f"{_both(student, teacher)}."
            )
        if s > t:
            raise ConfigError(
                f"layer map {strategy!r} cannot pair a deeper student with a shallower teacher: "
                f"{_both(student, teacher)}; use a student with at most {t} layers or "
                "strategy 'explicit'."
            )
        if strategy == "uniform":
            pairs = [(i, i * t // s) for i in range(1, s + 1)]
        else:  # last_k
            pairs = [(i, t - s + i) for i in range(1, s + 1)]
    if cfg.include_embeddings and (0, 0) not in pairs:
        pairs = [(0, 0), *pairs]
    validate_layer_map(pairs, student, teacher)
    return sorted(pairs)


def validate_layer_map(
    pairs: list[tuple[int, int]], student: LayerShape, teacher: LayerShape
) -> None:
    """Raise `ConfigError` unless every pair indexes both models and no student layer repeats.

    A student layer mapped to two teacher layers would be pulled two ways by one loss; an
    index past a model's depth would fail mid-training. Each message is one sentence with
    both models' layer counts and sizes.
    """
    if not pairs:
        raise ConfigError(f"the layer map is empty; {_both(student, teacher)}.")
    seen: dict[int, tuple[int, int]] = {}
    for pair in pairs:
        s, t = pair
        if not (0 <= s <= student.num_layers and 0 <= t <= teacher.num_layers):
            raise ConfigError(
                f"layer pair {tuple(pair)} is out of range: {_both(student, teacher)}; use "
                f"student layers 0-{student.num_layers} and teacher layers "
                f"0-{teacher.num_layers}."
            )
        if s in seen:
            raise ConfigError(
                f"student layer {s} is mapped twice, in pairs {seen[s]} and {tuple(pair)}: "
                f"{_both(student, teacher)}; map each student layer to one teacher layer."
            )
        seen[s] = (s, t)


def attention_compatible(student: LayerShape, teacher: LayerShape) -> bool:
    """Whether per-head attention losses (attention_kl, attention_mse) can compare the two.

    They compare head h of the student with head h of the teacher, so the head counts must
    be equal; the hidden sizes may differ (attention maps are T x T per head).
    """
    return student.num_heads == teacher.num_heads


def check_attention_heads(student: LayerShape, teacher: LayerShape) -> None:
    """Raise `ConfigError` unless `attention_compatible(student, teacher)`."""
    if not attention_compatible(student, teacher):
        raise ConfigError(
            f"attention losses compare head by head, but {_both(student, teacher)}; give the "
            f"student {teacher.num_heads} heads or use value_relation and hidden_mse instead."
        )


def relation_compatible(student: LayerShape, teacher: LayerShape, relation_heads: int) -> bool:
    """Whether value_relation can split both models' value vectors into `relation_heads`.

    MiniLM's relations are T x T, so the widths may differ; each width must divide evenly.
    """
    return (
        relation_heads >= 1
        and student.hidden_size % relation_heads == 0
        and teacher.hidden_size % relation_heads == 0
    )


def check_relation_heads(student: LayerShape, teacher: LayerShape, relation_heads: int) -> None:
    """Raise `ConfigError` unless `relation_compatible(student, teacher, relation_heads)`."""
    if not relation_compatible(student, teacher, relation_heads):
        raise ConfigError(
            f"value_relation cannot split the value vectors into {relation_heads} relation "
            f"heads: {_both(student, teacher)}; choose relation_heads dividing both "
            f"{student.hidden_size} and {teacher.hidden_size}."
        )


def check_layer_losses(
    cfg: LayerMapConfig, stages: list[Any], student: Any, teacher_config: Any
) -> tuple[list[tuple[int, int]] | None, bool]:
    """For stages with per-token losses: check that the student (a
    `lmshrink.students.Student`) and the teacher fit them, and map the layers.

    Returns (the layer pairs, or None when no loss compares per-token states; whether
    attention maps are compared, which needs eager attention on both models). Each loss's
    own shape check (head counts, relation heads) runs here, from its registry entry.
    """
    specs = [(LOSSES.get(spec.name), spec) for stage in stages for spec in stage.losses]
    per_token = [(entry, spec) for entry, spec in specs if entry.per_token]
    if not per_token:
        return None, False
    if not student.compares_tokens:
        names = sorted({entry.name for entry, _ in per_token})
        raise ConfigError(
            f"loss(es) {', '.join(names)} compare per-token states, which needs a "
            "transformer student reading the teacher's tokenizer (--student "
            "layers or narrow)."
        )
    student_shape = LayerShape.from_config(student.model.config)
    teacher_shape = LayerShape.from_config(teacher_config)
    pairs = map_layers(cfg, student_shape, teacher_shape)
    for entry, spec in per_token:
        if entry.check is not None:
            entry.check(spec.params, student_shape, teacher_shape)
    return pairs, any(entry.reads_attentions for entry, _ in per_token)
