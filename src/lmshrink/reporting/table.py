"""The Markdown table of `lmshrink report`: task, model, metric, retention, size, speed."""

from __future__ import annotations

from typing import Any

from lmshrink.reporting.run_report import GOLD_ONLY
from lmshrink.reporting.text import human_count, human_size, metric_label


def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One Markdown table of every row: task, model, metric, retention, size, speed."""
    lines = [
        "| task | model | kind | dev metric | retention | parameters | size | "
        "b=1 p50 ms | speedup b=1 | throughput b=32 | vs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        metric = (
            ", ".join(f"{metric_label(k)} {100 * v:.2f}" for k, v in r["metrics"].items()) or "n/a"
        )
        speed = r["speed"] or {}
        per_second = speed.get("per_second", {})
        b1 = speed.get("latency_p50") or per_second.get("1")
        params = human_count(r["parameters"]) if r["parameters"] is not None else "n/a"
        kind = r["kind"] + (f" ({r['method']})" if r.get("method") == GOLD_ONLY else "")
        lines.append(
            f"| {r['task']} | {r['label']} | {kind} | {metric} | "
            f"{_fmt(r['retention'] and 100 * r['retention'], '.1f', '%')} | {params} | "
            f"{human_size(r['size_bytes']) if r['size_bytes'] is not None else 'n/a'} | "
            f"{_fmt((r['latency_ms'] or {}).get('p50'), '.2f')} | {_fmt(b1, '.2f', 'x')} | "
            f"{_fmt(per_second.get('32'), '.2f', 'x')} | {speed.get('vs', '')} |"
        )
    return "\n".join(lines) + "\n"
