"""Distillation stages as data: each stage's examples, weighted losses, optimiser settings,
unfreezing and early stopping, checked before anything slow starts."""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

from lmshrink.config import option
from lmshrink.errors import ConfigError


@dataclasses.dataclass
class LossSpec:
    """One weighted loss of a stage."""

    name: str = option("", "loss name (see lmshrink.distillation.losses.LOSSES).")
    weight: float = option(1.0, "weight of this loss in the stage's sum.")
    params: dict[str, Any] = option({}, "loss parameters, e.g. {temperature: 2.0}.")


@dataclasses.dataclass
class StageConfig:
    """One distillation stage."""

    name: str = option("", "stage name (for logs and the report).")
    data: str = option(
        "transfer",
        "examples: 'transfer' (teacher-labelled transfer set) or "
        "'labeled' (gold-labelled training rows).",
    )
    losses: list[LossSpec] = option([], "the losses of this stage.")
    epochs: float = option(3.0, "passes over the stage's examples (at most).")
    lr: float = option(1e-3, "peak learning rate (AdamW).")
    batch_size: int = option(64, "batch size (per process).")
    weight_decay: float = option(0.0, "AdamW weight decay.")
    warmup_ratio: float = option(0.0, "share of the stage's steps with linear warmup.")
    unfreeze: str = option(
        "all",
        "'all' trains every layer; 'gradual' starts with the top "
        "layer group and unfreezes one more group each epoch.",
    )
    patience: int = option(
        2,
        "stop the stage after this many evaluations without dev improvement (0: never stop early).",
    )
    eval_every: int = option(0, "evaluate every N steps (0: once per epoch).")


def default_stages(is_regression: bool) -> list[StageConfig]:
    """XtremeDistil: representation, then logits, then gold labels."""
    gold = "gold_mse" if is_regression else "gold_ce"
    return [
        StageConfig(
            "representation",
            "transfer",
            [LossSpec("representation")],
            epochs=4,
            lr=1e-3,
            unfreeze="gradual",
        ),
        StageConfig(
            "logits", "transfer", [LossSpec("logit_mse")], epochs=6, lr=1e-3, unfreeze="gradual"
        ),
        StageConfig("labels", "labeled", [LossSpec(gold)], epochs=3, lr=2e-4, batch_size=32),
    ]


TEACHER_INPUTS = {"teacher_logits", "teacher_repr"}
PER_TOKEN = {
    "student_hidden_states",
    "teacher_hidden_states",
    "student_attentions",
    "teacher_attentions",
    "student_values",
    "teacher_values",
    "attention_mask",
}
LOOP_INPUTS = {"student_logits", "student_repr", "labels"} | TEACHER_INPUTS | PER_TOKEN


def validate_stages(stages: list[StageConfig]) -> None:
    """Check names and the data each loss needs before anything slow starts."""

    if not stages:
        raise ConfigError("the run has no stages; give at least one under 'stages'.")
    for i, stage in enumerate(stages):
        where = f"stages[{i}] ({stage.name or 'unnamed'})"
        if stage.data not in ("transfer", "labeled"):
            raise ConfigError(f"{where}: data must be 'transfer' or 'labeled', not {stage.data!r}.")
        if stage.unfreeze not in ("all", "gradual"):
            raise ConfigError(f"{where}: unfreeze must be 'all' or 'gradual'.")
        if not stage.losses:
            raise ConfigError(f"{where}: a stage needs at least one loss.")
        for spec in stage.losses:
            inputs = spec_inputs(spec)
            if inputs - LOOP_INPUTS:
                raise ConfigError(
                    f"{where}: loss {spec.name!r} reads {', '.join(sorted(inputs - LOOP_INPUTS))}, "
                    "which the distillation loop does not provide."
                )
            if stage.data == "labeled" and inputs & PER_TOKEN:
                raise ConfigError(
                    f"{where}: loss {spec.name!r} compares per-token states with "
                    "the teacher, which only 'transfer' stages run."
                )
            if stage.data == "labeled" and inputs & TEACHER_INPUTS:
                raise ConfigError(
                    f"{where}: loss {spec.name!r} needs teacher outputs, which "
                    "only 'transfer' stages have."
                )
            if stage.data == "transfer" and "labels" in inputs:
                raise ConfigError(
                    f"{where}: loss {spec.name!r} needs gold labels, which only "
                    "'labeled' stages have."
                )


def unfreeze_plan(student: Any, stage: StageConfig, uses_logits: bool) -> list[list[Any]]:
    """Parameter groups, top first, in the order gradual unfreezing releases them."""
    from lmshrink.students import transformer_layer_groups

    own = getattr(student, "unfreeze_groups", None) or getattr(student, "layer_groups", None)
    groups = list(reversed(own() if own else transformer_layer_groups(student)))
    if not uses_logits:  # the classifier gets no gradient from representation losses
        groups = [g for g in groups if g[0] != "classifier"]
    return [[p for m in mods for p in m.parameters()] for _, mods in groups]


def frozen_params(plan: list[list[Any]], stage: StageConfig, epoch: int) -> list[Any]:
    if stage.unfreeze == "all":
        return []
    return [p for group in plan[epoch + 1 :] for p in group]


def epoch_batches(
    lengths: list[int], stage: StageConfig, seed: int, stage_index: int, epoch: int, world: int
) -> list[list[list[int]]]:
    """Per step, one index batch per process; the same on every process for a seed."""
    from lmshrink.data.batching import bucketed_batches

    rng = random.Random(f"{seed}/{stage_index}/{epoch}")
    batches = bucketed_batches(lengths, stage.batch_size, rng)
    steps = len(batches) // world or 1
    return [batches[s * world : (s + 1) * world] for s in range(steps)]


def stage_steps(n_examples: int, stage: StageConfig, world: int) -> tuple[int, int]:
    """(steps per epoch, total steps) of a stage."""
    per_epoch = max(1, math.ceil(n_examples / stage.batch_size) // world)
    return per_epoch, max(1, math.ceil(stage.epochs * per_epoch))


def spec_inputs(spec: LossSpec) -> set[str]:
    from lmshrink.distillation.losses import LOSSES

    return set(LOSSES.get(spec.name).inputs)


def loss_inputs(stage: StageConfig) -> set[str]:
    return {name for spec in stage.losses for name in spec_inputs(spec)}
