"""Distillation stages as data: each stage's examples, weighted losses, optimiser settings,
unfreezing and early stopping, checked before anything slow starts."""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

from lmshrink.config import OptimSettings, option
from lmshrink.distillation.loss_registry import LOSSES, SENTENCE, WORD, LossEntry
from lmshrink.errors import ConfigError

_OPTIM = {f.name: f for f in dataclasses.fields(OptimSettings)}


def _stage_default(name: str, value: Any) -> Any:
    """OptimSettings' field `name` (its help) with a stage's own default."""
    return dataclasses.field(default=value, metadata=_OPTIM[name].metadata)


@dataclasses.dataclass
class LossSpec:
    """One weighted loss of a stage."""

    name: str = option("", "loss name (see lmshrink.distillation.loss_registry.LOSSES).")
    weight: float = option(1.0, "weight of this loss in the stage's sum.")
    params: dict[str, Any] = option({}, "loss parameters, e.g. {temperature: 2.0}.")


# Keyword-only: the inherited optimiser fields come first, so a positional call would
# silently fill the wrong ones.
@dataclasses.dataclass(kw_only=True)
class StageConfig(OptimSettings):
    """One distillation stage: its examples and losses, and its optimiser settings (the
    keys of OptimSettings, with a stage's own defaults)."""

    epochs: float = _stage_default("epochs", 3.0)
    batch_size: int = _stage_default("batch_size", 64)
    lr: float = _stage_default("lr", 1e-3)
    weight_decay: float = _stage_default("weight_decay", 0.0)
    warmup_ratio: float = _stage_default("warmup_ratio", 0.0)
    name: str = option("", "stage name (for logs and the report).")
    data: str = option(
        "transfer",
        "examples: 'transfer' (teacher-labelled transfer set) or "
        "'labeled' (gold-labelled training rows).",
    )
    losses: list[LossSpec] = option([], "the losses of this stage.")
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


def default_stages(kind: Any) -> list[StageConfig]:
    """XtremeDistil for a task of `kind` (a `lmshrink.data.task_kinds.TaskKind`):
    representation, then logits, then the kind's gold-label loss. A token task (NER) runs
    the same schedule word by word: the teacher's hidden state at each word, its logits at
    each word, then the gold tags.

    The epochs and rates are those of recipes/xtremedistil-bilstm.yaml (sentences) and
    recipes/xtremedistil-ner.yaml (words), the schedules behind bench/results/sst2_transfer
    and ner: a run without a recipe gets the best settings measured, in about a third of
    the epochs the first defaults (4, 6 and 3 at lr 1e-3) took.
    """
    token = kind.token_level
    batch = 64 if token else 128
    return [
        StageConfig(
            name="representation",
            data="transfer",
            losses=[LossSpec("token_representation" if token else "representation")],
            epochs=2.0,
            lr=2e-3,
            batch_size=batch,
            unfreeze="gradual",
            patience=2,
        ),
        StageConfig(
            name="logits",
            data="transfer",
            losses=[LossSpec("token_logit_mse" if token else "logit_mse")],
            epochs=4.0,
            lr=2e-3,
            batch_size=batch,
            unfreeze="gradual",
            patience=0,  # no early stop: dev dips while the rate is high; the best is kept
            eval_every=0 if token else 700,
        ),
        StageConfig(
            name="labels",
            data="labeled",
            losses=[LossSpec(kind.gold_loss)],
            epochs=2.0,
            lr=5e-4 if token else 2e-4,
            batch_size=32,
            patience=1,
        ),
    ]


def loss_entries(stages: list[StageConfig], data: str | None = None) -> list[LossEntry]:
    """The registry entries of the stages' losses (only of stages on `data`, if given), in
    order; an unknown loss name raises `ConfigError`."""
    return [
        LOSSES.get(spec.name)
        for stage in stages
        if data is None or stage.data == data
        for spec in stage.losses
    ]


def validate_stages(stages: list[StageConfig], kind: Any = None) -> None:
    """Check names and the data each loss needs before anything slow starts; with the task's
    `kind` (a `TaskKind`), also that each loss fits it: per-example losses for sentence
    tasks, per-word ones for token tasks (layer-wise losses fit both)."""

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
            entry = LOSSES.get(spec.name)
            if kind is not None:
                _check_level(where, entry, kind)
            if stage.data == "labeled" and entry.per_token:
                raise ConfigError(
                    f"{where}: loss {spec.name!r} compares per-token states with "
                    "the teacher, which only 'transfer' stages run."
                )
            if stage.data == "labeled" and entry.reads_teacher:
                raise ConfigError(
                    f"{where}: loss {spec.name!r} needs teacher outputs, which "
                    "only 'transfer' stages have."
                )
            if stage.data == "transfer" and entry.reads_labels:
                raise ConfigError(
                    f"{where}: loss {spec.name!r} needs gold labels, which only "
                    "'labeled' stages have."
                )


def _check_level(where: str, entry: LossEntry, kind: Any) -> None:
    """A `ConfigError` for a loss of the other kind of task, naming the losses that fit."""
    wanted = WORD if kind.token_level else SENTENCE
    if entry.level in (None, wanted):
        return
    fitting = sorted(e.name for _, e in LOSSES.items() if e.level == wanted)
    if kind.token_level:
        what = "reads one output per sentence, but the task is token classification (NER)"
    else:
        what = f"reads one output per word (token tasks), but the task is {kind.name}"
    raise ConfigError(
        f"{where}: loss {entry.name!r} {what}; use one of {', '.join(fitting)} (or a "
        "layer-wise loss)."
    )


def unfreeze_plan(student: Any, stage: StageConfig, uses_logits: bool) -> list[list[Any]]:
    """Parameter groups, top first, in the order gradual unfreezing releases them.

    `student` is a `lmshrink.students.Student` (its `layer_groups`) or, as the stage loop
    passes it until it holds the record, the student model itself."""
    from lmshrink.students import Student, layer_groups_of

    own = student.layer_groups if isinstance(student, Student) else layer_groups_of(student)
    groups = list(reversed(own))
    if not uses_logits:  # the classifier gets no gradient from representation losses
        groups = [g for g in groups if g[0] != "classifier"]
    return [[p for m in mods for p in m.parameters()] for _, mods in groups]


def frozen_params(plan: list[list[Any]], stage: StageConfig, epoch: int) -> list[Any]:
    if stage.unfreeze == "all":
        return []
    return [p for group in plan[epoch + 1 :] for p in group]


def epoch_batches(
    lengths: list[int], stage: StageConfig, seed: int, stage_index: int, epoch: int, world: int
) -> list[list[Any]]:
    """Per step, one index batch (an int64 array) per process; the same on every process
    for a seed."""
    from lmshrink.data.batching import bucketed_index_arrays

    rng = random.Random(f"{seed}/{stage_index}/{epoch}")
    batches = bucketed_index_arrays(lengths, stage.batch_size, rng)
    steps = len(batches) // world or 1
    return [batches[s * world : (s + 1) * world] for s in range(steps)]


def stage_steps(n_examples: int, stage: StageConfig, world: int) -> tuple[int, int]:
    """(steps per epoch, total steps) of a stage."""
    per_epoch = max(1, math.ceil(n_examples / stage.batch_size) // world)
    return per_epoch, max(1, math.ceil(stage.epochs * per_epoch))
