"""The Pareto plot of `lmshrink report`: dev score against speed, one panel per task, with
labels placed so that they stay off each other and off the markers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmshrink.errors import MissingDependencyError

PLOT_FILE = "pareto.png"


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


def plot_pareto(
    rows: list[dict[str, Any]], path: Path, budget_ms: float | None = None
) -> list[str]:
    """Dev score (%) against batch-1 latency (or speed ratio where a task's rows lack one),
    one panel per task, the Pareto front drawn, the teacher a star (a row may name itself the
    reference with `"reference": True`), a model of another tool an orange square (`"peer":
    True`), `budget_ms` a vertical line; returns notes on rows left out. Raises
    MissingDependencyError without matplotlib."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        raise MissingDependencyError(
            "the Pareto plot needs matplotlib; install it with pip install 'lmshrink[plot]' "
            "(the table and model cards were written)."
        ) from None
    from lmshrink.data.ner import is_ner_task

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
        labels, legend = [], set()
        for (x, y), r in zip(points, shown, strict=True):
            teacher = r.get("reference", r["role"] == "teacher" and r["backend"] == "torch-fp32")
            kind = "teacher" if teacher else "peer" if r.get("peer") else "model"
            ax.scatter(
                x,
                y,
                marker={"teacher": "*", "peer": "s"}.get(kind, "o"),
                s=220 if teacher else 60,
                color={"teacher": "tab:red", "peer": "tab:orange"}.get(kind, "tab:blue"),
                zorder=2,
                # one legend entry per kind; plain models need none
                label=kind if kind != "model" and kind not in legend else None,
            )
            legend.add(kind)
            teacher_label = teacher and "teacher" not in r["label"]
            labels.append(f"{r['label']} (teacher)" if teacher_label else r["label"])
        if budget_ms is not None and by_latency:
            ax.axvline(budget_ms, color="tab:green", linestyle=":", label="budget")
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
        ax.set_ylabel(f"{task} dev {'entity F1' if is_ner_task(task) else 'score'} (%)")
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
