"""`lmshrink evaluate`: a model's task metric(s) on a split, its parameters and size."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from lmshrink.config import DataConfig, option
from lmshrink.data.batching import encode
from lmshrink.data.splits import Split, load_eval_splits, resolve_task
from lmshrink.data.tasks import METRIC_SUFFIX, Task
from lmshrink.errors import DataError
from lmshrink.measure import metrics
from lmshrink.models.loading import (
    count_parameters,
    load_for_eval,
    read_metadata,
    resolve_model_source,
    size_on_disk,
)
from lmshrink.training.inference import predict


@dataclasses.dataclass
class EvaluateConfig:
    """`lmshrink evaluate`: score a fine-tuned model on a task split."""

    model: str = option(
        "", "model folder (or run folder holding model/) to evaluate.", positional=True
    )
    split: str = option("dev", "split to evaluate (dev; MNLI dev also scores dev_mismatched).")
    json: str = option("", "also write the results to this JSON file.")
    batch_size: int = option(128, "evaluation batch size.")
    seed: int = option(42, "seed of the --max-eval-samples subset.")
    progress: bool = option(True, "show progress bars.")
    data: DataConfig = dataclasses.field(default_factory=DataConfig)


def split_metrics(task: Task, outputs: np.ndarray, split: Split) -> dict[str, float]:
    """Official metrics of model outputs [N, C] on a labelled split."""
    if split.labels is None:
        raise DataError(
            f"{split.source}: the {split.name} split has no labels, so it cannot "
            "be scored; evaluate on dev."
        )
    preds = outputs[:, 0] if task.is_regression else outputs.argmax(axis=1)
    suffix = METRIC_SUFFIX.get(split.name, "")
    return {
        f"{k}{suffix}": v for k, v in metrics.compute(task.metrics, preds, split.labels).items()
    }


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
    result: dict[str, float] = {}
    for split in splits:
        outputs = predict(
            model,
            encode(tokenizer, split, max_length),
            batch_size,
            progress,
            desc=f"eval {split.name}",
        )
        result.update(split_metrics(task, outputs, split))
    return result


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Score a model on a split; returns metrics, the GLUE task score, parameters and size."""
    folder = resolve_model_source(cfg.model)
    data_cfg = with_saved_task(cfg.data, folder)
    task = resolve_task(data_cfg)
    tokenizer, model = load_for_eval(folder, task)
    splits = load_eval_splits(task, cfg.split, data_cfg, cfg.seed)
    scores = score_model(
        model, tokenizer, task, splits, data_cfg.max_length, cfg.batch_size, cfg.progress
    )
    result = {
        "model": str(folder),
        "task": task.name,
        "split": cfg.split,
        "examples": sum(len(s) for s in splits),
        "metrics": scores,
        "score": metrics.task_score(scores),
        "parameters": count_parameters(model),
        "size_bytes": size_on_disk(folder),
    }
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def with_saved_task(data: DataConfig, folder: str) -> DataConfig:
    """Fill the task (and custom-task settings) from the model's metadata when not given."""
    if data.task:
        return data
    saved = read_metadata(folder).get("config", {}).get("data", {})
    if not saved.get("task"):
        return data
    keep = {
        k: v
        for k, v in saved.items()
        if k not in ("data_dir", "max_train_samples", "max_eval_samples")
    }
    return dataclasses.replace(data, **keep)


def format_table(result: dict[str, Any]) -> str:
    """The evaluation result as an aligned plain-text table."""
    rows = [
        ("model", result["model"]),
        ("task", f"{result['task']} ({result['split']}, {result['examples']} examples)"),
    ]
    for name, value in result["metrics"].items():
        base = name.removesuffix("_mm")
        title = metrics.METRIC_TITLES.get(base, base) + (" (mismatched)" if name != base else "")
        rows.append((title, f"{100 * value:.2f}"))
    if len(result["metrics"]) > 1:
        rows.append(("task score", f"{100 * result['score']:.2f}"))
    rows.append(("parameters", f"{result['parameters'] / 1e6:.2f}M"))
    rows.append(("size on disk", f"{result['size_bytes'] / 2**20:.1f} MiB"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
