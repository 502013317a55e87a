"""`lmshrink report`: many runs in one table, one Pareto plot, and a model card per model.

`reporting/run_report.py` writes the report of a single distill run as it ends; this command
reads finished folders afterwards and puts them side by side (which folders it reads, and how
speed ratios are chosen: `lmshrink.reporting.rows`). Outputs in `--out` (written together,
atomically): `report.md` (the table, the plot, notes), `report.json` (every row),
`pareto.png` (dev score against batch-1 latency, or against the speed ratio where latencies
are missing; the teacher is a star). Each model folder gets a `README.md` model card, unless
it holds a README that lmshrink did not write.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from lmshrink.config import OutputSettings, option
from lmshrink.errors import ConfigError, MissingDependencyError
from lmshrink.reporting.plot import PLOT_FILE


@dataclasses.dataclass
class ReportConfig(OutputSettings):
    """`lmshrink report`: gather runs into one table, a Pareto plot and model cards.
    `--out` receives report.md, report.json and pareto.png."""

    runs: list[str] = option(
        [],
        "distill run folders (report.json) and model folders lmshrink made (lmshrink.json), "
        "e.g. runs/*.",
        positional=True,
    )
    bench: list[str] = option(
        [], "result files of lmshrink bench --json, whose latencies and speeds join the table."
    )
    cards: bool = option(True, "write a model card (README.md) into each model folder.")


def report(cfg: ReportConfig) -> dict[str, Any]:
    """Read the runs and bench files, write report.md, report.json and pareto.png into
    `cfg.out` and a model card into each model folder; returns what was written."""
    from lmshrink.reporting.cards import write_cards
    from lmshrink.reporting.plot import plot_pareto
    from lmshrink.reporting.rows import read_rows
    from lmshrink.reporting.table import markdown_table
    from lmshrink.runs import check_out, staged_output

    if not cfg.runs:
        raise ConfigError("no runs given; pass run or model folders.")
    out = check_out(cfg.out, cfg.overwrite)
    rows = read_rows(cfg.runs, cfg.bench)
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
