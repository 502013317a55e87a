"""Numbers and tables as text for the terminal and Markdown: one way to write a size, a
parameter count and an aligned table across the commands."""

from __future__ import annotations


def human_count(n: int) -> str:
    """A parameter count as 12.3M or 4.9K."""
    return f"{n / 1e6:.2f}M" if n >= 100_000 else f"{n / 1e3:.1f}K"


def human_size(n: int) -> str:
    """Bytes as MiB or KiB."""
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def metric_label(name: str) -> str:
    """A metric's name as report tables and model cards show it: a token task's entity
    metrics by their title ("entity F1", "entity F1 (mean over languages)"), GLUE metrics by
    their key ("accuracy", "mcc"), as they always were."""
    from lmshrink.measure.metrics import METRIC_TITLES

    return METRIC_TITLES.get(name, name) if name.startswith("entity_") else name


def aligned(rows: list[list[str]]) -> list[str]:
    """Rows of cells (the first row the header) as lines whose columns line up, two spaces
    apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
