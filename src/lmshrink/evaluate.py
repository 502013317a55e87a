"""`lmshrink evaluate`: a model's task metric(s) on a split, its parameters and size.

A token model (NER) is scored by entity F1, its headline (for WikiAnn, the mean of the
languages' F1s), with the rest of the picture beside it: entity precision and recall, F1 per
entity type and per language, and how many gold entities each of those counts.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from lmshrink.config import DataConfig, EvalSettings, ProcessSettings, option
from lmshrink.errors import ConfigError
from lmshrink.measure import metrics
from lmshrink.reporting.progress import for_command


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


@for_command
def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Score a model on a split; returns metrics, the GLUE task score, parameters and size."""
    from lmshrink.measure.scoring import predict_and_score, require_labels
    from lmshrink.models.loading import count_parameters, size_on_disk
    from lmshrink.models.sources import read_model
    from lmshrink.runs import apply_threads, write_json_file

    if cfg.json and Path(cfg.json).expanduser().is_dir():
        raise ConfigError(f"--json {cfg.json}: is a folder; pass a file path for the results.")
    apply_threads(cfg.threads)
    src = read_model(cfg.model, cfg.data, cfg.seed, split=cfg.split)
    require_labels(src.task, src.splits)  # an unlabeled split fails here, before inference
    scores, outputs = predict_and_score(
        src.model,
        src.tokenizer,
        src.task,
        src.splits,
        src.data.max_length,
        cfg.eval_batch_size,
        progress=True,  # a bar, lines or none (--quiet): reporting.progress decides
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
    if src.task.kind.token_level:  # one split: token tasks have no companion splits
        result.update(entity_details(src.task, outputs[0], src.splits[0]))
    if cfg.json:
        write_json_file(Path(cfg.json).expanduser(), result)
    return result


def entity_details(task: Any, outputs: list[Any], split: Any) -> dict[str, Any]:
    """A token model's entity scores beyond the headline metric, from its per-word outputs
    (one [W_i, C] array per sentence): `entities` holds entity precision, recall and F1, F1
    per type (`f1_type_PER`) and per language (`f1_lang_de`, and their mean);
    `gold_entities` how many entities the split holds in all, per type and per language
    (a type with a dozen entities has a noisy F1); `words` the words scored."""
    from lmshrink.measure.scoring import entity_counts

    counts = entity_counts(task, outputs, split)  # the gold counts come with the scores
    return {
        "words": split.num_words,
        "entities": counts.metrics(),
        "gold_entities": {
            "all": counts.overall.gold,
            # a type only the model predicted has no gold entity: not listed
            "per_type": {kind: c.gold for kind, c in counts.per_type.items() if c.gold},
            "per_language": {lang: c.gold for lang, c in counts.per_language.items()},
        },
    }


def format_table(result: dict[str, Any]) -> str:
    """The evaluation result as an aligned plain-text table."""
    count = (
        f"{result['examples']} sentences, {result['words']:,} words"
        if "words" in result  # a token task
        else f"{result['examples']} examples"
    )
    rows = [
        ("model", result["model"]),
        ("task", f"{result['task']} ({result['split']}, {count})"),
    ]
    if result.get("files"):
        rows.append((f"{result['split']} data", ", ".join(result["files"])))
    for name, value in result["metrics"].items():
        base = name.removesuffix("_mm")
        title = metrics.METRIC_TITLES.get(base, base) + (" (mismatched)" if name != base else "")
        rows.append((title, f"{100 * value:.2f}"))
    if len(result["metrics"]) > 1:
        rows.append(("task score", f"{100 * result['score']:.2f}"))
    if "entities" in result:
        rows += _entity_rows(result)
    rows.append(("parameters", f"{result['parameters'] / 1e6:.2f}M"))
    rows.append(("size on disk", f"{result['size_bytes'] / 2**20:.1f} MiB"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _entity_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """Table rows of a token model's entity scores that the headline rows do not show:
    precision, recall (and micro F1 when the headline is the language mean), then F1 per
    type and per language with their gold entity counts."""
    gold = result["gold_entities"]
    rows = []
    first = ("entity_f1", "entity_precision", "entity_recall")  # micro scores, then the rest
    names = [n for n in first if n in result["entities"]]
    names += [n for n in result["entities"] if n not in first]
    for name in names:
        value = result["entities"][name]
        if name in result["metrics"]:
            continue
        if name.startswith("f1_type_"):
            kind = name.removeprefix("f1_type_")
            title, count = f"F1 {kind}", gold["per_type"].get(kind, 0)
        elif name.startswith("f1_lang_"):
            lang = name.removeprefix("f1_lang_")
            title, count = f"F1 language {lang}", gold["per_language"].get(lang, 0)
        else:
            title, count = metrics.METRIC_TITLES.get(name, name), None
            if name == "entity_f1":
                count = gold["all"]
        entities = f"  ({count:,} entities)" if count is not None else ""
        rows.append((title, f"{100 * value:.2f}{entities}"))
    return rows
