"""`lmshrink report`: many runs in one table, one Pareto plot, and a model card per model.

`report.py` writes the report of a single distill run as it ends; this module reads finished
folders afterwards and puts them side by side:

- distill run folders (`report.json` + `model/`): the student, and its teacher;
- model folders lmshrink made (`lmshrink.json`): teachers from `lmshrink finetune`, students;
- bench results (`--bench FILE`, from `lmshrink bench --json`): latency and speed ratios of the
  models above, and rows for the ONNX and int8 variants that only a bench measured.

A speed ratio is always one measured in a single process against the row's teacher: from a
bench file holding both, else from the distill run's own interleaved measurement. Outputs in
`--out` (written together, atomically): `report.md` (the table, the plot, notes),
`report.json` (every row), `pareto.png` (dev score against batch-1 latency, or against the
speed ratio where latencies are missing; the teacher is a star). Each model folder gets a
`README.md` model card, unless it holds a README that lmshrink did not write.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from lmshrink.config import option
from lmshrink.errors import ConfigError, MissingDependencyError, ModelError

CARD_MARKER = "<!-- model card written by lmshrink report; it is rewritten on each report -->"
PLOT_FILE = "pareto.png"


@dataclasses.dataclass
class ReportConfig:
    """`lmshrink report`: gather runs into one table, a Pareto plot and model cards."""

    runs: list[str] = option(
        [],
        "distill run folders (report.json) and model folders lmshrink made (lmshrink.json), "
        "e.g. runs/*.",
        positional=True,
    )
    out: str = option("", "output folder: report.md, report.json, pareto.png.")
    bench: list[str] = option(
        [], "result files of lmshrink bench --json, whose latencies and speeds join the table."
    )
    cards: bool = option(True, "write a model card (README.md) into each model folder.")
    overwrite: bool = option(False, "replace --out if it already holds another report.")


# --- reading folders --------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
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

    report = _read_json(run / "report.json")
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
        from transformers import AutoModelForSequenceClassification

        import lmshrink  # noqa: F401  (registers lmshrink's model classes)

        parameters = count_parameters(AutoModelForSequenceClassification.from_pretrained(folder))
    teacher = meta.get("teacher")
    return [
        _row(
            folder,
            task=meta.get("task", ""),
            role="teacher" if kind == "teacher" else "student",
            kind=kind or "model",
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
    from lmshrink.export import MODEL_FILE
    from lmshrink.models.loading import METADATA_FILE
    from lmshrink.quantize import QUANT_FILE, RESULT_FILE

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
    from lmshrink.bench import BENCH_FORMAT
    from lmshrink.models.loading import read_metadata

    if not path.is_file():
        raise ConfigError(f"{path}: bench result file does not exist; check --bench.")
    result = _read_json(path)
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


# --- the table and the plot -------------------------------------------------------------


def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One Markdown table of every row: task, model, metric, retention, size, speed."""
    from lmshrink.bench import human_count, human_size

    lines = [
        "| task | model | kind | dev metric | retention | parameters | size | "
        "b=1 p50 ms | speedup b=1 | throughput b=32 | vs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        metric = ", ".join(f"{k} {100 * v:.2f}" for k, v in r["metrics"].items()) or "n/a"
        speed = r["speed"] or {}
        per_second = speed.get("per_second", {})
        b1 = speed.get("latency_p50") or per_second.get("1")
        params = human_count(r["parameters"]) if r["parameters"] is not None else "n/a"
        lines.append(
            f"| {r['task']} | {r['label']} | {r['kind']} | {metric} | "
            f"{_fmt(r['retention'] and 100 * r['retention'], '.1f', '%')} | {params} | "
            f"{human_size(r['size_bytes']) if r['size_bytes'] is not None else 'n/a'} | "
            f"{_fmt((r['latency_ms'] or {}).get('p50'), '.2f')} | {_fmt(b1, '.2f', 'x')} | "
            f"{_fmt(per_second.get('32'), '.2f', 'x')} | {speed.get('vs', '')} |"
        )
    return "\n".join(lines) + "\n"


def pareto_front(points: list[tuple[float, float]], lower_is_better: bool) -> list[int]:
    """Indices of the points no other point beats on both x and y (higher y is better;
    x is a cost when `lower_is_better`, else a gain), in order of x."""
    order = sorted(range(len(points)), key=lambda i: points[i][0], reverse=not lower_is_better)
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(rows: list[dict[str, Any]], path: Path) -> list[str]:
    """Dev score (%) against batch-1 latency (or speed ratio where a task's rows lack one),
    one panel per task, the Pareto front drawn, the teacher a star; returns notes on rows
    left out. Raises MissingDependencyError without matplotlib."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        raise MissingDependencyError(
            "the Pareto plot needs matplotlib; install it with pip install 'lmshrink[plot]' "
            "(the table and model cards were written)."
        ) from None
    tasks = sorted({r["task"] for r in rows if r["score"] is not None})
    fig = Figure(figsize=(6.4 * max(1, len(tasks)), 4.8), layout="constrained")
    axes = fig.subplots(1, max(1, len(tasks)), squeeze=False)[0]
    notes = []
    for ax, task in zip(axes, tasks, strict=False):
        group = [r for r in rows if r["task"] == task and r["score"] is not None]
        by_latency = all(r["latency_ms"] for r in group)
        points, shown = [], []
        for r in group:
            speed = r["speed"] or {}
            x = (
                r["latency_ms"]["p50"]
                if by_latency
                else speed.get("latency_p50") or speed.get("per_second", {}).get("1")
            )
            if x is None and r["role"] == "teacher":
                x = 1.0  # the reference of every ratio
            if x is None:
                notes.append(f"{task}: {r['label']} has no speed measurement; not plotted.")
                continue
            points.append((float(x), 100 * r["score"]))
            shown.append(r)
        front = pareto_front(points, lower_is_better=by_latency)
        ax.plot(
            [points[i][0] for i in front],
            [points[i][1] for i in front],
            color="0.6",
            linestyle="--",
            zorder=1,
            label="Pareto front",
        )
        labels = []
        for (x, y), r in zip(points, shown, strict=True):
            teacher = r["role"] == "teacher" and r["backend"] == "torch-fp32"
            ax.scatter(
                x,
                y,
                marker="*" if teacher else "o",
                s=220 if teacher else 60,
                color="tab:red" if teacher else "tab:blue",
                zorder=2,
                label="teacher" if teacher else None,
            )
            teacher_label = teacher and "teacher" not in r["label"]
            labels.append(f"{r['label']} (teacher)" if teacher_label else r["label"])
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(x=0.3, y=0.15)  # room for the labels
        ax.autoscale_view()
        offsets = label_offsets(ax, points, labels)
        for (x, y), text, offset in zip(points, labels, offsets, strict=True):
            ax.annotate(
                text,
                (x, y),
                xytext=offset,
                textcoords="offset points",
                ha="left" if offset[0] >= 0 else "right",
                fontsize=8,
                # a leader line, so that a label moved aside still points at its marker
                arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6, "shrinkB": 4},
            )
        ax.set_xlabel(
            "batch-1 latency, p50 (ms, log scale; left is faster)"
            if by_latency
            else "speed vs teacher at batch 1 (x, log scale; right is faster)"
        )
        ax.set_ylabel(f"{task} dev score (%)")
        ax.set_title(f"{task}: quality against speed")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best", fontsize=9)
    fig.savefig(path, dpi=120)
    return notes


# Where a point's label may go, in points from the point: right/left, above/below, further.
LABEL_OFFSETS = [
    (6, 5),
    (6, -11),
    (-6, 5),
    (-6, -11),
    (6, 18),
    (6, -24),
    (-6, 18),
    (-6, -24),
    (0, 30),
    (0, -36),
]


def label_offsets(
    ax: Any, points: list[tuple[float, float]], labels: list[str]
) -> list[tuple[int, int]]:
    """A label offset per point that keeps labels off each other and off the markers,
    chosen greedily (from the leftmost point) among LABEL_OFFSETS by estimated text boxes
    in display space; the least-overlapping place when none is free."""
    scale = ax.figure.dpi / 72  # points -> pixels
    char_w, text_h = 4.8 * scale, 9 * scale  # an 8-point font, roughly
    xy = ax.transData.transform(points) if points else []
    markers = [(px - 5, py - 5, px + 5, py + 5) for px, py in xy]
    placed: list[tuple[float, float, float, float]] = []
    chosen = [LABEL_OFFSETS[0]] * len(points)
    for i in sorted(range(len(points)), key=lambda k: (xy[k][0], xy[k][1])):
        px, py = xy[i]
        width = char_w * len(labels[i])
        others = placed + [m for j, m in enumerate(markers) if j != i]
        costs = []
        for dx, dy in LABEL_OFFSETS:
            x0 = px + dx * scale - (width if dx < 0 else 0)
            box = (x0, py + dy * scale, x0 + width, py + dy * scale + text_h)
            cost = sum(_overlap(box, other) for other in others)
            # A label nearer another marker than its own would be read as that one's.
            own = _distance(box, xy[i])
            if any(_distance(box, xy[j]) < own for j in range(len(points)) if j != i):
                cost += 1e6
            costs.append((cost, box, (dx, dy)))
        _, box, offset = min(costs, key=lambda c: c[0])  # the first of equal costs
        chosen[i] = offset
        placed.append(box)
    return chosen


def _distance(box: tuple[float, ...], point: Any) -> float:
    """Distance from a point to the nearest point of a box (x0, y0, x1, y1)."""
    dx = max(box[0] - point[0], 0.0, point[0] - box[2])
    dy = max(box[1] - point[1], 0.0, point[1] - box[3])
    return float((dx * dx + dy * dy) ** 0.5)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Area shared by two boxes (x0, y0, x1, y1)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


# --- model cards ------------------------------------------------------------------------


def loading_snippet(row: dict[str, Any]) -> str:
    """Python code that loads the row's model and classifies a sentence."""
    folder = row["path"]
    if row["backend"].startswith("onnx"):
        return (
            "import numpy as np\nimport onnxruntime as ort\n"
            "from transformers import AutoTokenizer\n\n"
            f'folder = "{folder}"\n'
            'session = ort.InferenceSession(f"{folder}/model.onnx", '
            'providers=["CPUExecutionProvider"])\n'
            "tokenizer = AutoTokenizer.from_pretrained(folder)\n"
            'enc = tokenizer(["a gripping, funny film"], return_tensors="np")\n'
            "feeds = {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()}\n"
            '(logits,) = session.run(["logits"], feeds)  # [batch, labels]\n'
        )
    config = (
        _read_json(Path(folder) / "config.json") if (Path(folder) / "config.json").is_file() else {}
    )
    needs_lmshrink = not _stock_model_type(config.get("model_type", ""))
    lines = [
        "import torch",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
    ]
    if row["backend"] == "torch-int8":
        lines.append("from lmshrink.quantize import load_quantized  # int8 weights made on load")
    elif needs_lmshrink:
        lines.append(
            f"import lmshrink  # registers the {config.get('model_type')} model class with the "
            "Auto API"
        )
    load = (
        "load_quantized(folder)"
        if row["backend"] == "torch-int8"
        else "AutoModelForSequenceClassification.from_pretrained(folder).eval()"
    )
    lines += [
        "",
        f'folder = "{folder}"',
        f"model = {load}",
        "tokenizer = AutoTokenizer.from_pretrained(folder)",
        'batch = tokenizer(["a gripping, funny film"], return_tensors="pt")',
        "with torch.inference_mode():",
        "    label_id = model(**batch).logits.argmax(-1).item()",
        "print(model.config.id2label[label_id])",
    ]
    return "\n".join(lines) + "\n"


def _stock_model_type(model_type: str) -> bool:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return model_type in CONFIG_MAPPING_NAMES


def how_made(row: dict[str, Any], by_path: dict[str, dict[str, Any]]) -> list[str]:
    """Bullet lines: method, teacher, data, stages (from the run's report and metadata)."""
    from lmshrink.models.loading import read_metadata

    meta = read_metadata(row["path"])
    config = meta.get("config", {})
    data = config.get("data", {})
    data_line = (
        f"- Data: task {row['task']}"
        + (f" from `{data['data_dir']}`" if data.get("data_dir") else "")
        + (f", max length {data['max_length']}" if data.get("max_length") else "")
        + "."
    )
    if row["role"] == "teacher":
        train = config.get("train", {})
        return [
            f"- Method: fine-tuned from `{meta.get('base_model', '?')}` with lmshrink finetune "
            f"({meta.get('train_examples', '?')} training examples, best dev at epoch "
            f"{meta.get('best_epoch', '?')} of {train.get('epochs', '?')}, lr "
            f"{train.get('lr', '?')}, batch {train.get('batch_size', '?')}).",
            data_line,
        ]
    if row["role"] == "variant":
        how = "ONNX export" if row["backend"].startswith("onnx") else "PyTorch model"
        int8 = "dynamic int8 quantization of the " if row["backend"].endswith("int8") else ""
        export = Path(row["path"]) / "export.json"
        source = json.loads(export.read_text()).get("source") if export.is_file() else None
        of = f"`{source}`" if source else f"an lmshrink {meta.get('kind', 'model')}"
        return [f"- Method: {int8}{how} of {of}.", data_line]
    lines = [
        f"- Method: distilled with lmshrink distill ({row['kind']}).",
        f"- Teacher: `{row['teacher']}`"
        + (f" ({by_path[row['teacher']]['label']})." if row["teacher"] in by_path else "."),
        data_line,
    ]
    if row["run"]:
        report = _read_json(Path(row["run"]) / "report.json")
        counts = report.get("transfer_set", {})
        lines.append(
            f"- Transfer set: {counts.get('total', 0):,} examples labelled by the teacher; "
            f"gold-labelled rows: {report.get('labeled_examples', 0):,}."
        )
        for stage in report.get("stages", []):
            losses = ", ".join(loss["name"] for loss in stage["losses"])
            lines.append(f"- Stage {stage['name']}: {stage['data']} data, losses {losses}.")
    return lines


def model_card(row: dict[str, Any], by_path: dict[str, dict[str, Any]]) -> str:
    """README.md of a model folder: what it is, how it was made, its numbers, how to load."""
    from lmshrink.bench import human_size

    what = {"teacher": "teacher", "variant": f"{row['backend']} model"}.get(row["role"], "student")
    numbers = [f"| dev {k} | {100 * v:.2f} |" for k, v in row["metrics"].items()]
    if row["retention"] is not None:
        numbers.append(f"| retention (score / teacher's) | {100 * row['retention']:.1f}% |")
    if row["parameters"] is not None:
        numbers.append(f"| parameters | {row['parameters']:,} |")
    if row["size_bytes"] is not None:
        numbers.append(f"| size of weights | {human_size(row['size_bytes'])} |")
    if row["latency_ms"]:
        numbers.append(
            f"| batch-1 latency p50 / p95 | {row['latency_ms']['p50']:.2f} / "
            f"{row['latency_ms']['p95']:.2f} ms |"
        )
    speed = row["speed"] or {}
    if speed.get("latency_p50"):
        numbers.append(
            f"| batch-1 latency speedup vs {speed['vs']} | {speed['latency_p50']:.2f}x |"
        )
    for bs, ratio in speed.get("per_second", {}).items():
        numbers.append(f"| CPU throughput vs {speed['vs']}, batch {bs} | {ratio:.2f}x |")
    return "\n".join(
        [
            CARD_MARKER,
            f"# {row['label']}: {row['task']} {what} ({row['kind']})",
            "",
            f"A {row['task']} text classifier made with lmshrink: the {what} of this comparison.",
            "",
            "## How it was made",
            "",
            *how_made(row, by_path),
            "",
            "## Numbers",
            "",
            "| | |",
            "|---|---|",
            *numbers,
            "",
            "## How to load it",
            "",
            "```python",
            loading_snippet(row).rstrip("\n"),
            "```",
            "",
        ]
    )


def write_cards(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """A model card in each row's folder (atomically); a README.md that lmshrink did not
    write is kept. Returns (written, kept) paths."""
    from lmshrink.runs import write_text_atomic

    by_path = {r["path"]: r for r in rows}
    written, kept = [], []
    for row in rows:
        folder = Path(row["path"])
        if not folder.is_dir():
            continue
        card = folder / "README.md"
        if card.is_file() and not card.read_text().startswith(CARD_MARKER):
            kept.append(str(card))
            continue
        write_text_atomic(card, model_card(row, by_path))
        written.append(str(card))
    return written, kept


# --- the command ------------------------------------------------------------------------


def gather(cfg: ReportConfig) -> dict[str, Any]:
    """Read the runs and bench files, write report.md, report.json and pareto.png into
    `cfg.out` and a model card into each model folder; returns what was written."""
    from lmshrink.runs import check_out, staged_output

    if not cfg.runs:
        raise ConfigError("no runs given; pass run or model folders.")
    out = check_out(cfg.out, cfg.overwrite)
    rows = relink_moved_teachers(merge_rows([rows_from_arg(arg) for arg in cfg.runs]))
    for bench_file in cfg.bench:
        rows = apply_bench(rows, Path(bench_file).expanduser())
    fill_retention(rows)
    for row in rows:
        row.pop("derived", None)
    cards, kept = write_cards(rows) if cfg.cards else ([], [])
    notes = [f"{card}: kept (not written by lmshrink); no model card written." for card in kept]
    missing: MissingDependencyError | None = None
    with staged_output(out) as stage:
        try:
            notes += plot_pareto(rows, stage / PLOT_FILE)
        except MissingDependencyError as exc:
            missing = exc
        table = markdown_table(rows)
        plotted = (stage / PLOT_FILE).is_file()
        md = ["# lmshrink report", "", table]
        if plotted:
            md += [f"![dev score against speed]({PLOT_FILE})", ""]
        md += [
            "Retention: dev score / the teacher's. Speed: ratio to the model in column `vs`, "
            "measured in one process (bench, else the distill run); >1 is faster.",
            *[f"- {note}" for note in notes],
        ]
        (stage / "report.md").write_text("\n".join(md) + "\n")
        result = {
            "rows": rows,
            "bench": list(cfg.bench),
            "cards": cards,
            "notes": notes,
            "plot": str(out / PLOT_FILE) if plotted else None,
        }
        (stage / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    if missing is not None:
        raise missing
    return {**result, "out": str(out), "table": table}


def format_summary(result: dict[str, Any]) -> str:
    """The table and the files written, for the terminal."""
    lines = [result["table"].rstrip("\n"), *result["notes"]]
    lines.append(
        f"saved {result['out']}/report.md, report.json"
        + (f" and {PLOT_FILE}" if result["plot"] else "")
        + (f"; model cards: {len(result['cards'])}" if result["cards"] else "")
    )
    return "\n".join(lines)
