"""The `pretrained` student family: any Hugging Face checkpoint, with its own tokenizer.

The student is loaded with `AutoModelForSequenceClassification` (`AutoModelForTokenClassification`
for a token task's teacher), so its `save_pretrained` folder is a stock transformers folder
(DESIGN.md, convention 6). It reads its own tokenizer, which may differ from the teacher's:
each side tokenizes the same text itself, so only per-example teacher outputs (logits, a
pooled vector) can be matched, not per-token ones; a token task's per-word outputs can, as
both models read the same words.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from lmshrink.config import option
from lmshrink.errors import ConfigError, ModelError
from lmshrink.students.common import (
    Student,
    is_token_classifier,
    register_student,
    transformer_layer_groups,
)

if TYPE_CHECKING:
    from torch import nn


@dataclasses.dataclass
class PretrainedSettings:
    """The `pretrained` student's settings (`student:` keys)."""

    model: str = option(
        "", "the student checkpoint (hub id, folder or packaged:minilm).", flag="student_model"
    )


@register_student("pretrained", PretrainedSettings, "any HF checkpoint, its own tokenizer")
def build_pretrained(
    teacher: nn.Module,
    tokenizer: Any,
    texts: list[tuple[str, ...]],
    task_head: dict[str, Any],
    max_length: int,
    settings: PretrainedSettings,
) -> Student:
    """Any Hugging Face checkpoint (folder, hub id or `packaged:minilm`) as the student.

    It is loaded with AutoModelForSequenceClassification (AutoModelForTokenClassification
    when the teacher is a token classifier) and the task's head entries; a head of another
    size (or none) is replaced by a random one, a head of the right size is kept. The
    record's tokenizer is the checkpoint's own. `texts` are unused; `max_length` must fit the
    student's position table.
    """
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    from lmshrink.models.loading import (
        load_config,
        load_tokenizer,
        quiet_transformers,
        resolve_model_source,
    )

    if not settings.model:
        raise ConfigError(
            "student 'pretrained' needs model: a model folder, hub id or packaged:minilm."
        )
    path = resolve_model_source(settings.model)
    config = load_config(path)
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and max_length > positions:
        raise ConfigError(
            f"{path}: the student reads at most {positions} tokens but max_length is "
            f"{max_length}; lower max_length."
        )
    student_tok = load_tokenizer(path, words=is_token_classifier(teacher))
    if student_tok.pad_token_id is None:
        raise ModelError(
            f"{path}: the student's tokenizer has no pad token, so batches cannot be padded; "
            "set tokenizer.pad_token (e.g. to its eos token) and save it into the folder."
        )
    auto = (
        AutoModelForTokenClassification
        if is_token_classifier(teacher)
        else AutoModelForSequenceClassification
    )
    with quiet_transformers():
        student = auto.from_pretrained(path, ignore_mismatched_sizes=True, **task_head)
    if getattr(student.config, "pad_token_id", None) is None:
        student.config.pad_token_id = student_tok.pad_token_id
    student.train()  # as the other builders return it; from_pretrained returns eval mode
    return Student(
        model=student,
        tokenizer=student_tok,
        layer_groups=transformer_layer_groups(student),
        token_states=True,
        teacher_tokenizer=False,
    )
