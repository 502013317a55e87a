"""Scoring a model on labelled splits with the task's official metrics (evaluate, finetune,
prune, quantize, bench, the distill trainer and its report all score this way)."""

from __future__ import annotations

from typing import Any

import numpy as np

from lmshrink.data.batching import encode
from lmshrink.data.ner import TokenSplit
from lmshrink.data.splits import Split
from lmshrink.data.tag_schemes import OUTSIDE
from lmshrink.data.tasks import METRIC_SUFFIX, Task
from lmshrink.errors import DataError
from lmshrink.measure import metrics
from lmshrink.measure.entities import EntityScores, scores_from_ids
from lmshrink.training.inference import predict, predict_words


def outside_id(task: Task) -> int:
    """The id of a token task's O tag (0 where the task has none)."""
    return task.labels.index(OUTSIDE) if OUTSIDE in task.labels else 0


def require_labels(task: Task, splits: list[Split]) -> None:
    """Refuse, before any inference, a split that holds no labels: a DataError naming the
    split, its file and the fix (GLUE hides its test labels; a custom file lacks the label
    column)."""
    for split in splits:
        if split.labels is not None:
            continue
        if task.glue_folder:
            fix = (
                f"GLUE does not publish {task.name}'s {split.name} labels, so score --split "
                "dev, or a labeled file of your own as a custom task (--task custom "
                "--dev-file FILE --text-columns ...)"
            )
        else:
            fix = (
                f"add the label column {task.label_column!r} to that file (or name its label "
                "column with --label-column), or score --split dev"
            )
        raise DataError(
            f"{split.source}: the {split.name} split has no labels, so it cannot be scored; {fix}."
        )


def split_metrics(
    task: Task, outputs: np.ndarray | list[np.ndarray], split: Split | TokenSplit
) -> dict[str, float]:
    """Official metrics of model outputs [N, C] on a labelled split (metric names get the
    split's suffix: MNLI's mismatched dev gives accuracy_mm). Token tasks: outputs are one
    array [W_i, C] per sentence (`training.inference.predict_words`), scored by entity F1
    (the task's headline metric; `entity_breakdown` gives the rest)."""
    require_labels(task, [split])
    if task.kind.token_level:
        scores = entity_breakdown(task, outputs, split)
        return {name: scores[name] for name in task.metrics}
    preds = task.kind.predictions(outputs)  # [N]
    suffix = METRIC_SUFFIX.get(split.name, "")
    return {
        f"{k}{suffix}": v for k, v in metrics.compute(task.metrics, preds, split.labels).items()
    }


def entity_counts(task: Task, outputs: list[np.ndarray], split: TokenSplit) -> EntityScores:
    """The entity counts (correct, predicted, gold; overall, per type, per language) of a
    token model's per-word outputs, one [W_i, C] array per sentence."""
    preds = [task.kind.predictions(words[None])[0] for words in outputs]  # [W_i] each
    return scores_from_ids(preds, split.labels, task.labels, split.languages)


def entity_breakdown(task: Task, outputs: list[np.ndarray], split: TokenSplit) -> dict[str, float]:
    """Every entity-level score of a token model's per-word outputs: precision, recall, F1,
    F1 per entity type and, for a multilingual task, per language and their mean."""
    return entity_counts(task, outputs, split).metrics()


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
    require_labels(task, splits)  # before minutes of inference, not after
    scores: dict[str, float] = {}
    outputs = []
    for split in splits:
        # a BiLSTM tagger with word shapes (and its ONNX export) reads word_shape_ids too
        shapes = bool(getattr(model, "reads_word_shapes", False))
        enc = encode(tokenizer, split, max_length, word_shapes=shapes)
        desc = f"eval {split.name}"
        if task.kind.token_level:  # a word without sub-tokens is predicted O
            out = predict_words(model, enc, batch_size, progress, desc, outside_id(task))
        else:
            out = predict(model, enc, batch_size, progress, desc)
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
