"""The `theseus` student family: BERT-of-Theseus (Xu et al., 2020), compressing a teacher by
progressive module replacing.

The *successor* is a k-layer copy of the teacher (`build_layer_subset`): successor layer j
starts from a teacher layer and stands in for a group of L / k consecutive teacher layers,
which run in its place (frozen) with a probability that falls to 0 as training goes on. The
training-time model is `lmshrink.models.theseus.TheseusModel`; the model scored and saved is
the successor, a stock `*ForSequenceClassification` model.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING, Any

from lmshrink.config import option
from lmshrink.errors import ConfigError
from lmshrink.students.common import (
    Student,
    check_teacher,
    find_layer_list,
    positive_int,
    register_student,
)
from lmshrink.students.layers import LayerSubsetSettings, build_layer_subset

if TYPE_CHECKING:
    from torch import nn

    from lmshrink.models.theseus import TheseusModel


@dataclasses.dataclass
class TheseusSettings:
    """The `theseus` student's settings (`student:` keys)."""

    layers: int = option(
        3, "number of successor layers; must divide the teacher's.", flag="student_layers"
    )
    replace_start: float = option(
        0.3,
        "probability of replacing a teacher layer group at the first step; it rises linearly to 1.",
    )
    replace_steps: int = option(
        1000,
        "training steps until every group is replaced; later steps train the student alone.",
    )


def _check_mixed_path(model: TheseusModel) -> None:
    """Refuse a teacher family whose forward the mixed path does not reproduce.

    `forward_groups` re-composes the model from its parts (embeddings, layers, head); for
    the families it knows (BERT, MiniLM, RoBERTa) that equals the stock forward. Checked
    on a tiny padded batch, in eval mode: with every group replaced, the mixed path must
    give the successor's own logits.
    """
    import torch

    successor = model.successor
    device = next(successor.parameters()).device
    vocab = model.config.vocab_size
    input_ids = torch.arange(12, device=device).view(2, 6) % (vocab - 1) + 1  # [2, 6]
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 4:] = 0  # one padded row, so the mask is exercised
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            want = successor(**inputs).logits  # [2, C]
            got = model.forward_groups([True] * model.num_groups, **inputs).logits
        same = torch.allclose(got, want, rtol=1e-4, atol=1e-5)
    except Exception as exc:  # a family whose modules take other arguments
        raise ConfigError(
            f"student 'theseus' does not support {type(successor).__name__} ({exc}); it "
            "supports BERT-style encoders (BERT, MiniLM, RoBERTa)."
        ) from exc
    finally:
        model.train(was_training)
    if not same:
        raise ConfigError(
            f"student 'theseus' does not support {type(successor).__name__}: its forward is "
            "not embeddings -> layers -> head; it supports BERT-style encoders (BERT, "
            "MiniLM, RoBERTa)."
        )


@register_student("theseus", TheseusSettings, "BERT-of-Theseus progressive module replacing")
def build_theseus(
    teacher: nn.Module,
    tokenizer: Any,
    texts: list[tuple[str, ...]],
    task_head: dict[str, Any],
    max_length: int,
    settings: TheseusSettings,
    *,
    seed: int | None = None,
) -> Student:
    """A BERT-of-Theseus student: the teacher as a frozen predecessor and a k-layer successor.

    `settings.layers` (k) must divide the teacher's L layers: predecessor group j is its
    layers j*L/k ... (j+1)*L/k - 1, and successor layer j starts as a copy of the group's
    last layer (`build_layer_subset`'s uniform choice); the successor's embeddings, pooler
    and classifier are copies of the teacher's. A group is replaced with probability rising
    linearly from `replace_start` (in [0, 1]) at the first training step to 1 at step
    `replace_steps`; after that the successor trains alone. `seed` seeds the replacement
    draws; None draws it from torch's generator, which the run has seeded with its own
    seed (the same on every process). `texts` and `max_length` are unused.
    """
    import torch

    from lmshrink.models.theseus import TheseusModel

    check_teacher(teacher, task_head)
    _, teacher_layers = find_layer_list(teacher)
    total = len(teacher_layers)
    k = positive_int("layers", settings.layers)
    if total % k:
        divisors = [d for d in range(1, total + 1) if total % d == 0]
        raise ConfigError(
            f"student 'theseus' replaces equal groups of consecutive teacher layers, but the "
            f"teacher's {total} layers do not split into layers={k} groups; give layers as "
            f"one of {', '.join(map(str, divisors))}."
        )
    replace_start = settings.replace_start
    if isinstance(replace_start, bool) or not isinstance(replace_start, (int, float)):
        raise ConfigError(f"replace_start must be a number in [0, 1], got {replace_start!r}.")
    if not 0.0 <= replace_start <= 1.0:
        raise ConfigError(f"replace_start must be in [0, 1], got {replace_start}.")
    replace_steps = positive_int("replace_steps", settings.replace_steps)
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}.")

    built = build_layer_subset(
        teacher, tokenizer, texts, task_head, max_length, LayerSubsetSettings(layers=k)
    )
    successor = built.model
    # One deepcopy of both, so the copied layers read the copied config (attention kind).
    config, predecessor = copy.deepcopy((teacher.config, teacher_layers))
    predecessor.to(next(successor.parameters()).device)
    model = TheseusModel(
        successor,
        predecessor,
        config,
        float(replace_start),
        replace_steps,
        seed,
        layer_path=find_layer_list(successor)[0],
        layer_groups=built.layer_groups,
    )
    _check_mixed_path(model)
    return Student(
        model=model.train(),
        tokenizer=tokenizer,
        layer_groups=built.layer_groups,
        token_states=True,
        teacher_tokenizer=True,
        teacher_layers=built.teacher_layers,
        final=successor,
    )
