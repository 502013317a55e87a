"""The `layers` student family: a subset of the teacher's layers (DistilBERT's initialisation).

The student is a stock transformers model of the teacher's class (`*ForSequenceClassification`,
or `*ForTokenClassification` for a token task's teacher, with the teacher's per-token head),
so its `save_pretrained` folder loads with the matching Auto class without importing
lmshrink (DESIGN.md, convention 6). It reads the teacher's token ids.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING, Any

from lmshrink.config import option
from lmshrink.errors import ConfigError
from lmshrink.students.common import (
    Student,
    apply_task_head,
    check_teacher,
    find_layer_list,
    register_student,
    transformer_layer_groups,
    uniform_layer_ids,
)

if TYPE_CHECKING:
    from torch import nn

# Layers a `layers` student keeps when neither `layers` nor `layer_ids` is given.
DEFAULT_LAYERS = 3


@dataclasses.dataclass
class LayerSubsetSettings:
    """The `layers` student's settings (`student:` keys)."""

    layers: int | None = option(
        None,
        f"number of the teacher's layers kept (default {DEFAULT_LAYERS}, or as many as layer_ids).",
        flag="student_layers",
    )
    layer_ids: list[int] = option(
        [],
        "which teacher layers to keep (0-based); default: a uniform choice ending with the last.",
    )


def _choose_layers(total: int, layers: int | None, layer_ids: list[int] | None) -> list[int]:
    if layer_ids is not None:
        ids = list(layer_ids)
        if not ids or any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
            raise ConfigError(
                f"layer_ids must be a non-empty list of layer numbers, got {layer_ids!r}."
            )
        bad = [i for i in ids if not 0 <= i < total]
        if bad:
            raise ConfigError(
                f"layer_ids {bad} out of range: the teacher has {total} layers, numbered 0 to "
                f"{total - 1}."
            )
        if ids != sorted(set(ids)):
            raise ConfigError(
                f"layer_ids must be increasing without repeats (the kept layers stay in the "
                f"teacher's order), got {ids}."
            )
        if layers is not None and layers != len(ids):
            raise ConfigError(
                f"layers={layers} disagrees with layer_ids {ids} ({len(ids)} layers); give one."
            )
        return ids
    count = DEFAULT_LAYERS if layers is None else layers
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= total:
        raise ConfigError(
            f"layers={count!r} out of range: the teacher has {total} layers, so a student "
            f"keeps 1 to {total} of them."
        )
    return uniform_layer_ids(total, count)


@register_student("layers", LayerSubsetSettings, "a subset of the teacher's layers")
def build_layer_subset(
    teacher: nn.Module,
    tokenizer: Any,
    texts: list[tuple[str, ...]],
    task_head: dict[str, Any],
    max_length: int,
    settings: LayerSubsetSettings,
) -> Student:
    """A copy of the teacher that keeps only some of its layers.

    The student has the teacher's class and config with `num_hidden_layers = k`; it keeps
    the teacher's layers `settings.layer_ids` (0-based, increasing) or, by default,
    `settings.layers` (default 3) evenly spaced ones ending with the last
    (`uniform_layer_ids`). Every other tensor (embeddings, pooler, classifier) is the
    teacher's, so all weights are copied and none is random. The config's head entries are
    set from `task_head`; the teacher's classifier must already have that many outputs.
    `texts` and `max_length` are unused. Works for any model whose layer stack
    `find_layer_list` finds.
    """
    check_teacher(teacher, task_head)
    prefix, teacher_layers = find_layer_list(teacher)
    ids = _choose_layers(len(teacher_layers), settings.layers, settings.layer_ids or None)
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(ids)
    apply_task_head(config, task_head)
    student = type(teacher)(config)

    position = {teacher_id: j for j, teacher_id in enumerate(ids)}
    weights = {}
    for key, value in teacher.state_dict().items():
        if key.startswith(prefix + "."):
            index, rest = key[len(prefix) + 1 :].split(".", 1)
            if int(index) not in position:
                continue
            key = f"{prefix}.{position[int(index)]}.{rest}"
        weights[key] = value
    student.load_state_dict(weights)  # strict: every student tensor comes from the teacher
    return Student(
        model=student,
        tokenizer=tokenizer,
        layer_groups=transformer_layer_groups(student),
        token_states=True,
        teacher_tokenizer=True,
        teacher_layers=ids,
    )
