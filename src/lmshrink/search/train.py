"""Step 2 of the search: train an architecture that can win, export it, score it on dev.

A student family is trained by `lmshrink distill` into `candidates/<name>/run/` (an ordinary
run folder: `--resume` continues it, `lmshrink report` reads it) with the search's shared
teacher cache, so the teacher labels the transfer set once for every candidate. A pruned
teacher is made by `lmshrink prune` into `candidates/<name>/run/` (the pruned model folder
with its prune.json; a killed prune resumes from `run.work/`). The fastText
student learns from the teacher's labels of that same transfer set (read from the cache) plus
the gold labels. Every candidate is scored on dev in the backend it would be served in
(ONNX fp32, dynamic and static int8, fastText), one text at a time as a batch-1 budget serves
it: each int8 graph's own score, not its fp32 parent's, nor its score in batches (dynamic
int8's activation scales depend on the batch).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmshrink.search.candidates import FASTTEXT, Architecture, Candidate, fasttext_settings
from lmshrink.search.recipes import distill_settings, prune_settings

RESULT = "result.json"
SCORE_BATCH = 1  # dev texts per call when a candidate is scored (see `score`)
PRUNE_REPORT = "prune.json"  # lmshrink.prune.REPORT_FILE (a building block imports no command)


def distill_config(
    arch: Architecture, shrink: Any, kind: Any, run: Path, cache: Path
) -> dict[str, Any]:
    """The distill config (as a dict) that trains `arch` into `run` for the search `shrink`
    (its ShrinkConfig) on a task of `kind`: the search's data, transfer set, seed and
    threads, and its shared teacher cache."""
    from lmshrink.config import to_dict

    raw = {
        "teacher": shrink.teacher,
        "out": str(run),
        "seed": shrink.seed,
        "progress": shrink.progress,
        "quiet": shrink.quiet,
        "threads": shrink.threads,
        "resume": (run / "config.yaml").is_file(),
        "overwrite": not (run / "config.yaml").is_file(),
        "measure_speed": False,  # the search times every candidate itself, end to end
        "data": to_dict(shrink.data),
        "transfer": to_dict(shrink.transfer),
        "labelling": {"cache_dir": str(cache)},
        **distill_settings(arch, kind),
    }
    cap = shrink.transformer_transfer_samples
    if arch.family == "layers" and cap:
        # A capped transformer student reads real texts only: augmented copies would take
        # half of its few examples.
        transfer = raw["transfer"]
        mine = transfer["max_transfer_samples"]
        raw["transfer"] = {
            **transfer,
            "max_transfer_samples": mine if 0 < mine <= cap else cap,
            "augment": {**transfer["augment"], "multiplier": 0},
        }
    return raw


def train_student(
    arch: Architecture,
    shrink: Any,
    kind: Any,
    folder: Path,
    cache: Path,
    run_distill: Callable[[dict[str, Any]], Any],
    log: Callable[[str], None],
) -> Path:
    """Distil `arch` with `run_distill` (the distill command, given its config as a dict;
    a run a kill interrupted resumes) and export it; returns the folder holding its ONNX
    backends (`_export`)."""
    run = folder / "run"
    if not (run / "report.json").is_file():
        log(f"  training {arch.name} (lmshrink distill into {run})")
        run_distill(distill_config(arch, shrink, kind, run, cache))
    _export(arch, shrink, run / "model", folder, log)
    return folder


def prune_config(arch: Architecture, shrink: Any, run: Path) -> dict[str, Any]:
    """The prune config (as a dict) that makes `arch` (a pruned teacher) into `run` for the
    search `shrink` (its ShrinkConfig): the teacher, the search's data, seed and threads,
    the target and `recipes.PRUNE`'s schedule; it resumes a prune a kill interrupted (its
    work folder, `run.work/`, holds the config it started with)."""
    from lmshrink.config import to_dict
    from lmshrink.training.checkpoint import work_folder

    resume = (work_folder(run) / "config.yaml").is_file()
    return {
        "model": shrink.teacher,
        "out": str(run),
        "seed": shrink.seed,
        "progress": shrink.progress,
        "quiet": shrink.quiet,
        "threads": shrink.threads,
        "resume": resume,
        "overwrite": not resume,
        "data": to_dict(shrink.data),
        **prune_settings(arch),
    }


def train_pruned(
    arch: Architecture,
    shrink: Any,
    folder: Path,
    run_prune: Callable[[dict[str, Any]], Any],
    log: Callable[[str], None],
) -> Path:
    """Prune the teacher to `arch` with `run_prune` (the prune command, given its config as a
    dict) and export it; returns the folder holding its ONNX backends (`_export`)."""
    run = folder / "run"
    if not (run / PRUNE_REPORT).is_file():
        log(f"  training {arch.name} (lmshrink prune into {run})")
        run_prune(prune_config(arch, shrink, run))
    _export(arch, shrink, run, folder, log)
    return folder


def _export(
    arch: Architecture, shrink: Any, model: Path, folder: Path, log: Callable[[str], None]
) -> None:
    """The trained model folder `model` as onnx-fp32/, onnx-int8/ and onnx-int8-static/
    (calibrated as `lmshrink quantize` calibrates, on the search's seed) under `folder`,
    unless they are there."""
    from lmshrink.models.sources import read_model
    from lmshrink.search.latency import export_model

    if not all((folder / b).is_dir() for b in arch.backends):
        src = read_model(str(model), shrink.data, shrink.seed)
        export_model(src, folder, log, seed=shrink.seed)


def train_fasttext_student(
    arch: Architecture,
    shrink: Any,
    folder: Path,
    transfer: tuple[list[Any], Any],
    labeled: Any,
    label_names: list[str],
    log: Callable[[str], None],
) -> Path:
    """fastText on the teacher's labels of the transfer set (`transfer`: its texts and the
    teacher's logits [N, C]) plus the gold labels of `labeled` (a Split); returns the
    folder."""
    from lmshrink.runs import staged_output
    from lmshrink.search.fasttext_student import (
        FastTextSettings,
        teacher_hard_labels,
        train_fasttext,
    )

    served = folder / "fasttext"
    if served.is_dir():
        return folder
    texts, logits = transfer
    rows = list(texts) + list(labeled.texts)
    labels = list(teacher_hard_labels(logits)) + [int(y) for y in labeled.labels]
    log(f"  training {arch.name} on {len(texts):,} teacher-labelled + {len(labeled):,} gold rows")
    with staged_output(served) as stage:
        settings = fasttext_settings(arch, FastTextSettings)
        train_fasttext(rows, labels, label_names, stage, settings, seed=shrink.seed)
    return folder


def score(candidate: Candidate, folder: Path, task: Any, devs: list[Any], max_length: int) -> dict:
    """The dev metrics of a candidate in its backend, served one text at a time as at batch 1,
    kept in `folder/<backend>.score.json` (a rescored search reads them back)."""
    from lmshrink.measure.metrics import task_score
    from lmshrink.measure.scoring import predict_and_score, split_metrics

    cached = folder / f"{candidate.backend}.score.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    served = folder / candidate.backend
    if candidate.arch.family == FASTTEXT:
        from lmshrink.search.fasttext_student import FastTextServer

        server = FastTextServer.from_folder(served)
        metrics: dict[str, float] = {}
        for split in devs:
            metrics.update(split_metrics(task, server.predict_proba(split.texts), split))
    else:
        from lmshrink.compress.onnx import OnnxClassifier
        from lmshrink.models.loading import load_tokenizer

        session = OnnxClassifier.from_folder(served)
        tokenizer = load_tokenizer(str(served))
        # One sentence at a time, as a batch-1 budget serves it: ONNX Runtime's dynamic int8
        # computes activation scales per batch, so a batched score is not what is served.
        metrics, _ = predict_and_score(session, tokenizer, task, devs, max_length, SCORE_BATCH)
    result = {"metrics": metrics, "score": task_score(metrics)}
    cached.write_text(json.dumps(result, indent=2) + "\n")
    return result
