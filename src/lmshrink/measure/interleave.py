"""The one timing protocol of `measure.speed` (models on encoded batches) and
`measure.end_to_end` (servers on raw strings): every model warms up, then the models take
turns for several rounds, so that a slow spell of a shared machine hits them all alike; the
median round gives throughput and the ratio to the first model, and every timed call goes
into the latency percentiles. No torch here: end-to-end timing runs without it."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import numpy as np


def interleave(
    names: list[str],
    batch_sizes: tuple[int, ...],
    rounds: int,
    run: Callable[[str, int, list[float] | None], float],
    warm: Callable[[str, int], Any],
    examples: Callable[[str, int], int],
) -> dict[str, Any]:
    """Time every model of `names` at each batch size.

    `run(name, bs, laps)` makes one timed pass and returns its seconds (each call's seconds
    appended to `laps`); `warm(name, bs)` is the untimed warm-up pass; `examples(name, bs)`
    is how many examples one pass serves. Returns batch_sizes, rounds, examples (of the first
    model), per_second, ratio (to the first model) and latency_ms[name][bs] = {p50, p95,
    calls, round_p50}, keyed by str(bs); round_p50 is the p50 of each round's calls alone,
    in round order (how much the machine's speed moved while it timed). Progress counts the
    passes (never inside a timed one)."""
    from lmshrink.reporting.progress import Progress

    result: dict[str, Any] = {
        "batch_sizes": list(batch_sizes),
        "rounds": rounds,
        "examples": {},
        "per_second": {},
        "ratio": {},
        "latency_ms": {},
    }
    first = names[0]
    shown = Progress(len(batch_sizes) * len(names) * (1 + rounds), "timing", "runs")
    for bs in batch_sizes:
        for name in names:
            warm(name, bs)
            shown.update()
        times: dict[str, list[float]] = {name: [] for name in names}
        laps: dict[str, list[float]] = {name: [] for name in names}
        round_p50: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(rounds):
            for name in names:
                before = len(laps[name])
                times[name].append(run(name, bs, laps[name]))
                this_round = 1000 * np.asarray(laps[name][before:])
                round_p50[name].append(float(np.percentile(this_round, 50)))
                shown.update()
        key = str(bs)
        result["examples"][key] = examples(first, bs)
        for name in names:
            median = statistics.median(times[name])
            result["per_second"].setdefault(name, {})[key] = examples(name, bs) / median
            result["ratio"].setdefault(name, {})[key] = statistics.median(times[first]) / median
            ms = 1000 * np.asarray(laps[name])
            result["latency_ms"].setdefault(name, {})[key] = {
                "p50": float(np.percentile(ms, 50)),
                "p95": float(np.percentile(ms, 95)),
                "calls": int(ms.size),
                "round_p50": round_p50[name],
            }
    shown.close()
    return result
