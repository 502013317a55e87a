"""The teacher's logits on the search's transfer set, for the fastText student.

They are read from (or labelled into) the search's shared teacher cache under the very key a
distill candidate's run uses (same transfer set, built the same way with the same seed, same
default stages), so the teacher labels the transfer set once whichever candidate asks first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def transfer_logits(
    shrink: Any, teacher: Any, devs: list[Any], cache: Path, log: Callable[[str], None]
) -> tuple[list[Any], Any]:
    """(the transfer set's texts, the teacher's logits on them [N, C]) for the search
    `shrink` (its ShrinkConfig) and `teacher` (a ModelSource)."""
    import dataclasses

    from accelerate import Accelerator

    from lmshrink.data.augment import with_mask_token
    from lmshrink.data.splits import read_split
    from lmshrink.data.transfer import build_transfer_set, without_texts
    from lmshrink.distillation.labelling import Labeller, LabellingConfig
    from lmshrink.distillation.stages import default_stages

    task, data = teacher.task, shrink.data
    train = read_split(task, "train", data).subset(data.max_train_samples, shrink.seed)
    # as distill resolves it: augmentation masks with the teacher tokenizer's mask token
    transfer_cfg = dataclasses.replace(
        shrink.transfer,
        augment=with_mask_token(shrink.transfer.augment, teacher.tokenizer.mask_token),
    )
    transfer = build_transfer_set(transfer_cfg, task, train, shrink.seed, progress=False)
    transfer = without_texts(transfer, devs)
    labeller = Labeller(
        teacher=teacher.model,
        tokenizer=teacher.tokenizer,
        teacher_dir=teacher.folder,
        cache_root=cache,
        max_length=data.max_length,
        settings=LabellingConfig(cache_dir=str(cache)),
        stages=default_stages(task.kind),
        accelerator=Accelerator(cpu=True),
        progress=True,  # a bar, lines or none (--quiet): reporting.progress decides
        log=log,
        words=False,
    )
    outputs = labeller.teacher_outputs({"transfer": transfer})
    return list(transfer.texts), outputs["transfer"].logits
