"""`lmshrink evaluate`: a model's task metric(s) on a split, its parameters and size."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

from lmshrink.config import DataConfig, EvalSettings, ProcessSettings, option
from lmshrink.errors import ConfigError
from lmshrink.measure import metrics


@dataclasses.dataclass
class EvaluateConfig(EvalSettings, ProcessSettings):
    """`lmshrink evaluate`: score a fine-tuned model on a task split."""

    # Keys of earlier versions, and where their setting lives now.
    RENAMED: typing.ClassVar[dict[str, str]] = {"batch_size": "eval_batch_size"}

    model: str = option(
        "", "model folder (or run folder holding model/) to evaluate.", positional=True
    )
    split: str = option(
        "dev",
        "split to score: dev (MNLI's also scores dev_mismatched), test or train; any split "
        "whose file holds labels (custom task: --dev-file, --test-file, --train-file).",
    )
    json: str = option("", "also write the results to this JSON file.")
    data: DataConfig = dataclasses.field(default_factory=DataConfig)


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Score a model on a split; returns metrics, the GLUE task score, parameters and size."""
    from lmshrink.measure.scoring import require_labels, score_model
    from lmshrink.models.loading import count_parameters, size_on_disk
    from lmshrink.models.sources import read_model
    from lmshrink.runs import apply_threads

    if cfg.json and Path(cfg.json).expanduser().is_dir():
        raise ConfigError(f"--json {cfg.json}: is a folder; pass a file path for the results.")
    apply_threads(cfg.threads)
    src = read_model(cfg.model, cfg.data, cfg.seed, split=cfg.split)
    require_labels(src.task, src.splits)  # an unlabeled split fails here, before inference
    scores = score_model(
        src.model,
        src.tokenizer,
        src.task,
        src.splits,
        src.data.max_length,
        cfg.eval_batch_size,
        cfg.progress,
    )
    result = {
        "model": str(src.folder),
        "task": src.task.name,
        "split": cfg.split,
        "examples": sum(len(s) for s in src.splits),
        "files": [s.source for s in src.splits],  # what was scored, e.g. a --dev-file
        "metrics": scores,
        "score": metrics.task_score(scores),
        "parameters": count_parameters(src.model),
        "size_bytes": size_on_disk(src.folder),
    }
    if cfg.json:
        write_json_file(Path(cfg.json).expanduser(), result)
    return result


def write_json_file(path: Path, result: dict[str, Any]) -> None:
    """Write `--json` atomically; a path that cannot be written is an error naming the fix."""
    from lmshrink.runs import write_text_atomic

    try:
        if path.is_dir():
            raise IsADirectoryError(21, "is a folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(result, indent=2) + "\n")
    except OSError as exc:
        raise ConfigError(
            f"--json {path}: cannot be written ({exc.strerror or exc}); pass a file path in a "
            "writable folder."
        ) from None


def format_table(result: dict[str, Any]) -> str:
    """The evaluation result as an aligned plain-text table."""
    rows = [
        ("model", result["model"]),
        ("task", f"{result['task']} ({result['split']}, {result['examples']} examples)"),
    ]
    if result.get("files"):
        rows.append((f"{result['split']} data", ", ".join(result["files"])))
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
