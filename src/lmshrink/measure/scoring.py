"""Scoring a model on labelled splits with the task's official metrics (evaluate, finetune,
prune, quantize, bench, the distill trainer and its report all score this way)."""

from __future__ import annotations

from typing import Any

import numpy as np

from lmshrink.data.batching import encode
from lmshrink.data.splits import Split
from lmshrink.data.tasks import METRIC_SUFFIX, Task
from lmshrink.errors import DataError
from lmshrink.measure import metrics
from lmshrink.training.inference import predict


def split_metrics(task: Task, outputs: np.ndarray, split: Split) -> dict[str, float]:
    """Official metrics of model outputs [N, C] on a labelled split (metric names get the
    split's suffix: MNLI's mismatched dev gives accuracy_mm)."""
    if split.labels is None:
        raise DataError(
            f"{split.source}: the {split.name} split has no labels, so it cannot "
            "be scored; evaluate on dev."
        )
    preds = task.kind.predictions(outputs)  # [N]
    suffix = METRIC_SUFFIX.get(split.name, "")
    return {
        f"{k}{suffix}": v for k, v in metrics.compute(task.metrics, preds, split.labels).items()
    }


def predict_and_score(
    model: Any,
    tokenizer: Any,
    task: Task,
    splits: list[Split],
    max_length: int,
    batch_size: int,
    progress: bool = False,
) -> tuple[dict[str, float], list[np.ndarray]]:
    """(metrics over a split and its companions, e.g. MNLI matched + mismatched; the model's
    outputs [N, C] on each split), each split encoded with `tokenizer`."""
    scores: dict[str, float] = {}
    outputs = []
    for split in splits:
        enc = encode(tokenizer, split, max_length)
        out = predict(model, enc, batch_size, progress, desc=f"eval {split.name}")
        scores.update(split_metrics(task, out, split))
        outputs.append(out)
    return scores, outputs


def score_model(
    model: Any,
    tokenizer: Any,
    task: Task,
    splits: list[Split],
    max_length: int,
    batch_size: int,
    progress: bool = False,
) -> dict[str, float]:
    """Metrics over a split and its companions (e.g. MNLI matched + mismatched)."""
    return predict_and_score(model, tokenizer, task, splits, max_length, batch_size, progress)[0]
