"""What the search trains, in which order, and which candidate wins.

Pure functions over the architectures and the search's saved state (`shrink.json`), so the
rules are tested without training anything.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmshrink.search.candidates import (
    FAMILY_ORDER,
    FASTTEXT,
    PRUNED,
    TEACHER,
    Architecture,
    Candidate,
    architectures,
)


def usable_architectures(
    specs: list[str], task: Any, log: Callable[[str], None], teacher: Any = None
) -> list:
    """The architectures of `specs` (or the default grid) that can serve `task`. fastText
    labels classes and is an optional package: the default grid drops it, with a note, for a
    regression task or when fasttext is not installed; a grid that names it raises why.
    Likewise the pruned candidates when `teacher` (its model) is not a BERT-family
    classifier that `lmshrink prune` can prune."""
    from lmshrink.errors import ConfigError, LmshrinkError

    archs = architectures(specs, task.kind.token_level)
    if teacher is not None and any(a.family == PRUNED for a in archs):
        from lmshrink.compress.pruning import check_prunable

        try:
            check_prunable(teacher, "the teacher")
        except ConfigError as exc:
            if any(s.strip().startswith(PRUNED) for s in specs):
                raise ConfigError(f"--candidates pruned: {exc}") from None
            log(f"  no pruned candidate: {exc}")
            archs = [a for a in archs if a.family != PRUNED]
    if not any(a.family == FASTTEXT for a in archs):
        return archs
    named = any(s.strip().startswith(FASTTEXT) for s in specs)
    try:
        if task.kind.problem_type == "regression":
            raise ConfigError(
                "--candidates: fastText labels classes, and this task is a regression; drop "
                "the fasttext candidate."
            )
        from lmshrink.search.fasttext_student import require_fasttext

        require_fasttext()
    except LmshrinkError as exc:
        if named:
            raise
        log(f"  no fastText candidate: {exc}")
        return [a for a in archs if a.family != FASTTEXT]
    return archs


def candidate_named(archs: list[Architecture], name: str) -> Candidate:
    for arch in archs:
        for backend in arch.backends:
            if f"{arch.name}/{backend}" == name:
                return Candidate(arch, backend)
    raise KeyError(name)


def fitting(latency: dict[str, dict[str, float]], budget_ms: float) -> set[str]:
    """Candidates whose batch-1 median end-to-end latency is within the budget."""
    return {name for name, numbers in latency.items() if numbers["p50_ms"] <= budget_ms}


def training_order(
    archs: list[Architecture], fitting: set[str], per_family: int, max_candidates: int
) -> list[Architecture]:
    """The student architectures to train, most likely winner first (the teacher, which
    needs no training, is not among them).

    An architecture is worth training only if one of its backends fits. Within a family, the
    larger is the more accurate (as far as bench/results show), so the `per_family` largest
    that fit are kept; families come in FAMILY_ORDER. `max_candidates` (0: none) caps them.
    """
    chosen: list[Architecture] = []
    for family in FAMILY_ORDER[1:]:
        members = [
            a
            for a in archs
            if a.family == family and any(f"{a.name}/{b}" in fitting for b in a.backends)
        ]
        members.sort(key=lambda a: -a.size)
        chosen += members[:per_family]
    return chosen[:max_candidates] if max_candidates else chosen


def rows(
    archs: list[Architecture], state: dict[str, Any], budget_ms: float, min_retention: float
) -> list[dict[str, Any]]:
    """One row per timed candidate: latency, dev score and retention (when trained), whether
    it fits the budget and the retention. The teacher's reference score is its ONNX fp32
    graph's (identical to PyTorch's by the export's parity check)."""
    reference = None
    for name, scored in state["scores"].items():
        if name == f"{TEACHER}/onnx-fp32":
            reference = scored["score"]
    table = []
    for arch in archs:
        for backend in arch.backends:
            name = f"{arch.name}/{backend}"
            timing = state["latency"].get(name)
            if timing is None:
                continue
            scored = state["scores"].get(name)
            row: dict[str, Any] = {
                "name": name,
                "family": arch.family,
                "architecture": arch.spec,
                "backend": backend,
                **timing,
                "fits_budget": timing["p50_ms"] <= budget_ms,
                "score": scored["score"] if scored else None,
                "metrics": scored["metrics"] if scored else None,
                "folder": scored.get("folder") if scored else None,
            }
            ok = scored is not None and reference
            row["retention"] = scored["score"] / reference if ok else None
            row["eligible"] = bool(ok and row["fits_budget"] and row["retention"] >= min_retention)
            table.append(row)
    return table


def winner(table: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The eligible candidate with the best dev score (ties: the faster)."""
    eligible = [r for r in table if r["eligible"]]
    if not eligible:
        return None
    return max(eligible, key=lambda r: (r["score"], -r["p50_ms"]))


def why_nothing_fits(
    table: list[dict[str, Any]], budget_ms: float, min_retention: float, out: Path
) -> str:
    """The one-line error when no candidate wins: the best reached, and what to change."""
    fast = [r for r in table if r["fits_budget"]]
    scored = [r for r in fast if r["score"] is not None and r["retention"] is not None]
    if not fast:
        quickest = min(table, key=lambda r: r["p50_ms"])
        return (
            f"no candidate answers within {budget_ms:g} ms on this CPU; the fastest is "
            f"{quickest['name']} at {quickest['p50_ms']:.3f} ms: raise --budget-ms (see "
            f"{out / 'report.md'})."
        )
    if not scored:
        return (
            f"no candidate within {budget_ms:g} ms was trained (see --max-candidates and "
            f"--time-budget); rerun with --resume and a larger bound (see {out / 'report.md'})."
        )
    best = max(scored, key=lambda r: r["score"])
    return (
        f"no candidate within {budget_ms:g} ms keeps {100 * min_retention:.1f}% of the "
        f"teacher's dev score; the best is {best['name']} with {100 * best['retention']:.1f}%: "
        f"raise --budget-ms or lower --min-retention (see {out / 'report.md'})."
    )
