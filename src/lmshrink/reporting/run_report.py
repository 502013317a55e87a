"""The end of a distillation run: final scores, sizes, speed, the saved model and reports.

`report.json` holds every number; `report.md` shows them for a person: teacher vs student
dev metric, retention (student score / teacher score), parameters, size on disk, CPU speed
ratio at batch 1 and 32 measured in one process, and the time spent labelling and training.
A token task (NER) is scored by entity F1, with F1 per entity type beside it (`entities`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lmshrink import __version__
from lmshrink.measure import metrics
from lmshrink.runs import write_text_atomic

# How a student learnt, as report.json, report.md, lmshrink.json and the model cards say it.
DISTILLED = "distilled"
GOLD_ONLY = "gold labels only"


def training_method(stage_data: Iterable[str]) -> str:
    """GOLD_ONLY when every stage trains on the gold-labelled rows ('labeled'): stage
    validation refuses losses that read teacher outputs there, so no teacher output taught the
    student and calling it distilled would be wrong; else DISTILLED."""
    data = list(stage_data)
    return GOLD_ONLY if data and all(d == "labeled" for d in data) else DISTILLED


@dataclasses.dataclass(kw_only=True)
class FinishedRun:
    """What a distillation run hands to its end: the two models, the data, what happened."""

    cfg: Any  # lmshrink.distill.DistillConfig, as the run used it
    paths: dict[str, Path]  # the run folder's paths ("model", ...)
    task: Any  # lmshrink.data.tasks.Task
    teacher: Any
    teacher_tokenizer: Any
    teacher_dir: str
    student: Any  # lmshrink.students.Student, trained
    transfer_counts: dict[str, int]  # lmshrink.data.transfer.TransferSet.counts
    labeled_examples: int
    devs: list[Any]  # the dev splits both models are scored on
    history: list[dict[str, Any]]  # the stages' dev evaluations
    timings: dict[str, float]  # labelling_seconds, training_seconds


def finish_run(run: FinishedRun, acc: Any) -> dict[str, Any]:
    """Score both models on the dev splits, save the student (the main process), write
    report.json and report.md; returns the report."""
    from lmshrink.config import to_dict
    from lmshrink.data.batching import encode
    from lmshrink.measure.machine import machine_info
    from lmshrink.measure.scoring import entity_breakdown, predict_and_score
    from lmshrink.measure.speed import measure_speed
    from lmshrink.models.loading import METADATA_FILE, count_parameters, size_on_disk
    from lmshrink.runs import staged_output
    from lmshrink.students.common import reads_word_shapes

    acc.wait_for_everyone()
    cfg, paths, task, devs = run.cfg, run.paths, run.task, run.devs
    # The trained model to save (e.g. Theseus: the successor alone).
    student = acc.unwrap_model(run.student.final_model).cpu().eval()
    teacher = run.teacher.cpu().eval()
    length = cfg.data.max_length
    # Each model reads the dev texts through its own tokenizer.
    tokenizers = {"teacher": run.teacher_tokenizer, "student": run.student.tokenizer}
    models = {"teacher": teacher, "student": student}
    scores, outputs = {}, {}
    for name, model in models.items():
        scores[name], outputs[name] = predict_and_score(
            model, tokenizers[name], task, devs, length, cfg.eval_batch_size, acc.is_main_process
        )
    summary = {name: metrics.task_score(s) for name, s in scores.items()}
    params = {"teacher": count_parameters(teacher), "student": count_parameters(student)}
    report: dict[str, Any] = {
        "lmshrink_version": __version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "task": task.name,
        "teacher": run.teacher_dir,
        "student_kind": cfg.student.kind,
        "method": training_method(s.data for s in cfg.stages),
        "split": "dev",
        "dev": scores,
        "score": summary,
        "retention": summary["student"] / summary["teacher"] if summary["teacher"] else None,
        "parameters": {**params, "ratio": params["teacher"] / params["student"]},
        "student_vocabulary": student.config.vocab_size,
        "transfer_set": run.transfer_counts,
        "labeled_examples": run.labeled_examples,
        "stages": [
            {
                "name": s.name,
                "data": s.data,
                "losses": [dataclasses.asdict(spec) for spec in s.losses],
            }
            for s in cfg.stages
        ],
        "history": run.history,
        **{k: round(v, 1) for k, v in run.timings.items()},
        "machine": machine_info(),
    }
    if task.kind.token_level:  # one dev split: token tasks have no companion splits
        report["entities"] = {
            name: entity_breakdown(task, outputs[name][0], devs[0]) for name in models
        }
    if not acc.is_main_process:
        return report
    if cfg.measure_speed:
        report["speed"] = measure_speed(
            {
                name: (
                    models[name],
                    encode(tokenizers[name], devs[0], length, reads_word_shapes(models[name])),
                )
                for name in models
            }
        )
    meta = {
        "lmshrink_version": __version__,
        "kind": f"student-{cfg.student.kind}",
        "method": report["method"],
        "task": task.name,
        "metrics": list(task.metrics),
        "labels": list(task.labels),  # the head's ids, for commands that read this model
        "dev": scores["student"],
        "score": summary["student"],
        "teacher": run.teacher_dir,
        "config": to_dict(cfg),
    }
    with staged_output(paths["model"]) as stage:
        student.save_pretrained(stage)
        run.student.tokenizer.save_pretrained(stage)
        (stage / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    report["size_bytes"] = {
        "teacher": size_on_disk(run.teacher_dir),
        "student": size_on_disk(paths["model"]),
    }
    out = paths["model"].parent
    report["model_dir"] = str(paths["model"])
    write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / "report.md", markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    """A short human-readable summary of a run's report."""
    from lmshrink.reporting.text import metric_label

    t, s = report["dev"]["teacher"], report["dev"]["student"]
    gold_only = report_method(report) == GOLD_ONLY
    how = (
        f"trained on gold labels only (no teacher outputs), compared with `{report['teacher']}`"
        if gold_only
        else f"distilled from `{report['teacher']}`"
    )
    lines = [
        f"# {report['task']}: {report['student_kind']} student {how}",
        "",
        "| | teacher | student |",
        "|---|---|---|",
    ]
    split = report.get("split", "dev")
    for name in t:
        lines.append(
            f"| {split} {metric_label(name)} | {100 * t[name]:.2f} | {100 * s[name]:.2f} |"
        )
    entities = report.get("entities")
    if entities:  # a token task: F1 per entity type
        te, se = entities["teacher"], entities["student"]
        for key in (k for k in te if k.startswith("f1_type_")):
            kind = key[len("f1_type_") :]
            lines.append(
                f"| {split} F1 {kind} | {100 * te[key]:.2f} | {100 * se.get(key, 0.0):.2f} |"
            )
    p = report["parameters"]
    lines.append(
        f"| parameters | {p['teacher'] / 1e6:.2f}M | {p['student'] / 1e6:.2f}M "
        f"({p['ratio']:.1f}x fewer) |"
    )
    if "size_bytes" in report:
        sz = report["size_bytes"]
        lines.append(
            f"| size on disk | {sz['teacher'] / 2**20:.1f} MiB | {sz['student'] / 2**20:.1f} MiB |"
        )
    if "speed" in report:
        for bs, ratio in report["speed"]["ratio"]["student"].items():
            lines.append(f"| CPU speed, batch {bs} | 1x | {ratio:.1f}x faster |")
    retention = report["retention"]
    # A token task's score is its entity F1 (WikiAnn: the mean over languages).
    score = metric_label(next(iter(t))) if entities else "score"
    lines += [
        "",
        f"Retention (student {score} / teacher {score}): **{100 * retention:.1f}%**."
        if retention is not None
        else "",
        (
            "Teacher outputs: none used (every stage trains on the gold-labeled rows)"
            if gold_only
            else f"Transfer set: {report['transfer_set'].get('total', 0):,} "
            + ("sentences" if entities else "examples")
        )
        + f"; gold-labeled {'sentences' if entities else 'rows'}: "
        + f"{report['labeled_examples']:,}; student vocabulary: "
        f"{report['student_vocabulary']:,} tokens.",
        f"Time: labelling {report.get('labelling_seconds', 0):.0f} s, training "
        f"{report.get('training_seconds', 0):.0f} s, on {report['machine']['cpu']} "
        f"({report['machine']['torch_threads']} threads).",
    ]
    return "\n".join(lines) + "\n"


def report_method(report: dict[str, Any]) -> str:
    """A distill report's method; reports written before it was recorded get it from their
    stages."""
    if report.get("method"):
        return str(report["method"])
    return training_method(stage.get("data", "transfer") for stage in report.get("stages", []))
