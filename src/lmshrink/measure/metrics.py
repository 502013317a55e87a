"""GLUE metrics: accuracy, F1, Matthews correlation, Pearson and Spearman correlation.

Plain numpy, so that evaluation needs neither scipy nor scikit-learn. A task's score is
the unweighted mean of its official metrics, as in the GLUE benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def accuracy(preds: Sequence[int], labels: Sequence[int]) -> float:
    p, y = np.asarray(preds), np.asarray(labels)
    return float((p == y).mean())


def f1_binary(preds: Sequence[int], labels: Sequence[int], positive: int = 1) -> float:
    """F1 of the positive class (GLUE's MRPC and QQP convention)."""
    p, y = np.asarray(preds) == positive, np.asarray(labels) == positive
    tp = float(np.sum(p & y))
    denom = float(np.sum(p) + np.sum(y))
    return 2 * tp / denom if denom else 0.0


def f1_macro(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes present in preds or labels."""
    classes = np.union1d(np.asarray(preds), np.asarray(labels))
    return float(np.mean([f1_binary(preds, labels, int(c)) for c in classes]))


def matthews(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation coefficient (multi-class form; 0 when undefined)."""
    p, y = np.asarray(preds), np.asarray(labels)
    classes = np.union1d(p, y)
    conf = np.array(
        [[np.sum((y == a) & (p == b)) for b in classes] for a in classes], dtype=np.float64
    )
    t, pk = conf.sum(axis=1), conf.sum(axis=0)
    c, s = np.trace(conf), conf.sum()
    denom = math.sqrt(s * s - float(pk @ pk)) * math.sqrt(s * s - float(t @ t))
    return float((c * s - float(t @ pk)) / denom) if denom else 0.0


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / denom) if denom else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return pearson(_ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64)))


METRICS = {
    "accuracy": accuracy,
    "f1": f1_binary,
    "f1_macro": f1_macro,
    "mcc": matthews,
    "pearson": pearson,
    "spearman": spearman,
}

# Printed names of the metrics, for tables.
METRIC_TITLES = {
    "accuracy": "accuracy",
    "f1": "F1",
    "f1_macro": "macro F1",
    "mcc": "Matthews corr.",
    "pearson": "Pearson",
    "spearman": "Spearman",
    # token classification (measure/entities.py; computed there, from tags, not by compute)
    "entity_f1": "entity F1",
    "entity_precision": "entity precision",
    "entity_recall": "entity recall",
    "entity_f1_lang_mean": "entity F1 (mean over languages)",
}


def compute(metric_names: Sequence[str], preds: Sequence, labels: Sequence) -> dict[str, float]:
    """Each named metric of predictions against labels."""
    return {name: METRICS[name](preds, labels) for name in metric_names}


def task_score(metrics: dict[str, float]) -> float:
    """The GLUE task score: the unweighted mean of the task's official metrics."""
    return float(np.mean(list(metrics.values())))
