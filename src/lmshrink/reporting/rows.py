"""The rows of `lmshrink report`: one per model, read from the folders and bench files given.

- distill run folders (`report.json` + `model/`): the student, and its teacher;
- model folders lmshrink made (`lmshrink.json`): teachers from `lmshrink finetune`, students;
- bench results (from `lmshrink bench --json`): latency and speed ratios of the models above,
  and rows for the ONNX and int8 variants that only a bench measured.

A speed ratio is always one measured in a single process against the row's teacher: from a
bench file holding both, else from the distill run's own interleaved measurement.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmshrink.errors import ConfigError, ModelError


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot be read as JSON ({exc}); write it again.") from None


def label_of(path: Path) -> str:
    """A short name for a model folder: its run's name for `run/model`, else the folder's."""
    return path.parent.name if path.name == "model" else path.name


def _row(path: Path, **fields: Any) -> dict[str, Any]:
    row = {
        "label": label_of(path),
        "path": str(path.resolve()),
        "task": "",
        "role": "student",
        "kind": "",
        "method": None,  # a student's: "distilled" or "gold labels only" (run_report)
        "backend": "torch-fp32",
        "metrics": {},
        "score": None,
        "retention": None,
        "parameters": None,
        "size_bytes": None,
        "teacher": None,
        "latency_ms": None,
        "speed": None,
        "run": None,
    }
    row.update(fields)
    return row


def rows_from_run(run: Path) -> list[dict[str, Any]]:
    """The student of a distill run folder, and its teacher as the run measured it."""
    from lmshrink.models.loading import read_metadata
    from lmshrink.reporting.run_report import report_method

    report = read_json(run / "report.json")
    model = Path(report.get("model_dir") or run / "model")
    if not (model / "config.json").is_file():
        model = run / "model"  # the run folder was moved since
    teacher = Path(report["teacher"])
    speed = report.get("speed", {}).get("ratio", {})
    student = _row(
        model,
        label=run.name,
        task=report["task"],
        kind=read_metadata(model).get("kind", f"student-{report['student_kind']}"),
        method=report_method(report),
        metrics=report["dev"]["student"],
        score=report["score"]["student"],
        retention=report.get("retention"),
        parameters=report["parameters"]["student"],
        size_bytes=report.get("size_bytes", {}).get("student"),
        teacher=str(teacher.resolve()),
        run=str(run.resolve()),
    )
    if "student" in speed:
        student["speed"] = {"vs": label_of(teacher), "source": "distill run", **_ratios(speed)}
    derived = _row(
        teacher,
        task=report["task"],
        role="teacher",
        kind="teacher",
        metrics=report["dev"]["teacher"],
        score=report["score"]["teacher"],
        retention=1.0,
        parameters=report["parameters"]["teacher"],
        size_bytes=report.get("size_bytes", {}).get("teacher"),
    )
    derived["derived"] = True  # replaced by the teacher's own folder when that is given
    return [student, derived]


def _ratios(speed: dict[str, Any]) -> dict[str, Any]:
    """Speed ratios of a distill report's student ({batch size: x})."""
    return {"per_second": dict(speed["student"]), "latency_p50": None}


def rows_from_model(folder: Path) -> list[dict[str, Any]]:
    """A model folder lmshrink made (lmshrink.json): a teacher, or a student."""
    from lmshrink.models.loading import count_parameters, read_metadata, size_on_disk

    meta = read_metadata(folder)
    kind = meta.get("kind", "")
    if kind.startswith("student") and (folder.parent / "report.json").is_file():
        return rows_from_run(folder.parent)
    parameters = meta.get("parameters")
    if parameters is None:
        import transformers

        import lmshrink  # noqa: F401  (registers lmshrink's model classes)

        config = read_json(folder / "config.json")
        token = any(a.endswith("ForTokenClassification") for a in config.get("architectures") or [])
        auto = "AutoModelForTokenClassification" if token else "AutoModelForSequenceClassification"
        parameters = count_parameters(getattr(transformers, auto).from_pretrained(folder))
    teacher = meta.get("teacher")
    method = None
    if kind.startswith("student"):  # a student whose run folder is gone: its metadata says
        from lmshrink.reporting.run_report import report_method

        method = meta.get("method") or report_method(meta.get("config", {}))
    return [
        _row(
            folder,
            task=meta.get("task", ""),
            role="teacher" if kind == "teacher" else "student",
            kind=kind or "model",
            method=method,
            metrics=meta.get("dev", {}),
            score=meta.get("score"),
            retention=1.0 if kind == "teacher" else None,
            parameters=parameters,
            size_bytes=size_on_disk(folder),
            teacher=str(Path(teacher).resolve()) if teacher else None,
        )
    ]


def rows_from_arg(arg: str) -> list[dict[str, Any]]:
    """The rows of one RUN argument, or an error saying what the folder is not."""
    from lmshrink.compress.int8 import QUANT_FILE, RESULT_FILE
    from lmshrink.compress.onnx import MODEL_FILE
    from lmshrink.models.loading import METADATA_FILE

    path = Path(arg).expanduser()
    if not path.exists():
        raise ModelError(f"{path}: folder does not exist; pass run or model folders.")
    if not path.is_dir():
        raise ModelError(
            f"{path}: is a file, not a run folder; pass bench results with --bench {path}."
        )
    if (path / "report.json").is_file():
        return rows_from_run(path)
    if any((path / name).is_file() for name in (MODEL_FILE, QUANT_FILE, RESULT_FILE)):
        raise ModelError(
            f"{path}: is an ONNX or int8 folder, whose numbers come from lmshrink bench; bench "
            "it with its teacher (lmshrink bench TEACHER ... --json FILE) and pass --bench FILE."
        )
    for folder in (path, path / "model"):
        if (folder / METADATA_FILE).is_file() and (folder / "config.json").is_file():
            return rows_from_model(folder)
    raise ModelError(
        f"{path}: neither a distill run folder (report.json) nor a model folder made by "
        "lmshrink (lmshrink.json); pass folders written by lmshrink finetune or distill."
    )


def merge_rows(groups: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per model folder, in the order given; a teacher read from its own folder wins
    over the copy a distill report holds."""
    rows: dict[str, dict[str, Any]] = {}
    for group in groups:
        for row in group:
            old = rows.get(row["path"])
            if old is None or (old.get("derived") and not row.get("derived")):
                rows[row["path"]] = row
    return list(rows.values())


def relink_moved_teachers(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop the teacher copy of a distill report whose teacher folder no longer exists (the
    runs were moved since) when exactly one teacher given by its own folder has the same task
    and dev score, and point the students at that folder instead."""
    kept = []
    for row in rows:
        moved = row.get("derived") and not Path(row["path"]).exists()
        same = [
            r
            for r in rows
            if r["role"] == "teacher"
            and not r.get("derived")
            and r["task"] == row["task"]
            and r["score"] == row["score"]
        ]
        if moved and len(same) == 1:
            for student in rows:
                if student["teacher"] == row["path"]:
                    student["teacher"] = same[0]["path"]
                    if (student["speed"] or {}).get("vs") == label_of(Path(row["path"])):
                        student["speed"]["vs"] = label_of(Path(same[0]["path"]))
            continue
        kept.append(row)
    return kept


# --- bench results ----------------------------------------------------------------------


def apply_bench(rows: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """Add a bench file's latencies and speed ratios to `rows`, and rows for the models only
    the bench measured (ONNX and int8 variants). Ratios are against the row's teacher when the
    bench timed it, else against the bench's first model."""
    from lmshrink.measure.speed import BENCH_FORMAT
    from lmshrink.models.loading import read_metadata

    if not path.is_file():
        raise ConfigError(f"{path}: bench result file does not exist; check --bench.")
    result = read_json(path)
    if result.get("format") != BENCH_FORMAT:
        raise ConfigError(f"{path}: not a result of lmshrink bench --json; check --bench.")
    by_path = {r["path"]: r for r in rows}
    timed = {m["path"]: m for m in result["models"]}
    for m in result["models"]:
        row = by_path.get(m["path"])
        if row is None:
            meta = read_metadata(m["path"])
            row = _row(
                Path(m["path"]),
                label="/".join(Path(m["path"]).parts[-2:]),
                task=result["task"],
                role="variant",
                kind=m["kind"],
                backend=m["kind"],
                metrics=m["metrics"],
                score=m["score"],
                parameters=m["parameters"],
                size_bytes=m["size_bytes"],
                teacher=_variant_teacher(m, meta, rows, result["task"]),
            )
            rows.append(row)
            by_path[row["path"]] = row
        row["latency_ms"] = m["latency_ms"]
        ref = timed.get(row["teacher"] or "") or (m if row["role"] == "teacher" else None)
        ref = ref or result["models"][0]
        row["speed"] = {
            "vs": label_of(Path(ref["path"])),
            "source": str(path),
            "latency_p50": (
                ref["latency_ms"]["p50"] / m["latency_ms"]["p50"] if m["latency_ms"] else None
            ),
            "per_second": {
                bs: v / ref["per_second"][bs]
                for bs, v in m["per_second"].items()
                if bs in ref["per_second"]
            },
        }
    return rows


def _variant_teacher(
    m: dict[str, Any], meta: dict[str, Any], rows: list[dict[str, Any]], task: str
) -> str | None:
    """The teacher of an ONNX or int8 variant: its source's teacher (from the copied
    lmshrink.json), the source itself for a teacher's variant, else the task's only teacher."""
    if meta.get("teacher"):
        return str(Path(meta["teacher"]).resolve())
    export = Path(m["path"]) / "export.json"
    if meta.get("kind") == "teacher" and export.is_file():
        return str(Path(json.loads(export.read_text())["source"]).resolve())
    teachers = [r["path"] for r in rows if r["role"] == "teacher" and r["task"] == task]
    return teachers[0] if len(teachers) == 1 else None


def fill_retention(rows: list[dict[str, Any]]) -> None:
    """Retention (score / its teacher's score) where no run measured it."""
    by_path = {r["path"]: r for r in rows}
    for row in rows:
        if row["retention"] is not None or row["score"] is None:
            continue
        teacher = by_path.get(row["teacher"] or "")
        if teacher and teacher["score"]:
            row["retention"] = row["score"] / teacher["score"]


def read_rows(runs: list[str], bench_files: list[str]) -> list[dict[str, Any]]:
    """Every row of a report: one per model folder of `runs` (in that order), then the bench
    files' latencies and speed ratios, and retention where no run measured it."""
    rows = relink_moved_teachers(merge_rows([rows_from_arg(arg) for arg in runs]))
    for bench_file in bench_files:
        rows = apply_bench(rows, Path(bench_file).expanduser())
    fill_retention(rows)
    for row in rows:
        row.pop("derived", None)
    return rows
