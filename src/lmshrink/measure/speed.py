"""Measuring CPU inference speed honestly: real texts, dynamic padding, warm-up, and the
models interleaved in one process, so that a ratio between them is fair on a noisy machine."""

from __future__ import annotations

import time
from typing import Any

from lmshrink.data.batching import Encoded
from lmshrink.training.inference import eval_batches

# The format tag of the result files `lmshrink bench --json` writes (`lmshrink report` reads
# them back).
BENCH_FORMAT = "lmshrink-bench"


def run_batches(
    model: Any, enc: Encoded, batch_size: int, limit: int, laps: list[float] | None = None
) -> float:
    """Seconds to predict the first `limit` examples in batches of `batch_size` (in dataset
    order, each padded to its longest example, so that batches hold real padding); when `laps`
    is given, the seconds of each model call are appended to it (for latency percentiles)."""
    import torch

    start = time.perf_counter()
    with torch.inference_mode():
        for _, batch, _ in eval_batches(enc, batch_size, order="dataset", limit=limit):
            called = time.perf_counter()
            model(**batch)
            if laps is not None:
                laps.append(time.perf_counter() - called)
    return time.perf_counter() - start


def measure_speed(
    models: dict[str, tuple[Any, Encoded]],
    batch_sizes: tuple[int, ...] = (1, 32),
    limit: dict[int, int] | None = None,
    rounds: int = 3,
) -> dict[str, Any]:
    """Throughput of each model (examples/s) at each batch size, and ratios to the first.

    `models` maps a name to (model, its encoded inputs). The examples are taken in their
    dataset order (not sorted by length), batches padded to their longest example. Every
    model runs once for warm-up, then the models take turns `rounds` times; the median of
    the rounds is kept. `latency_ms[name][batch size]` gives the p50 and p95 of one call
    (one batch) over every batch of every round: at batch size 1, per-example latency.
    Progress counts the runs (warm-up and rounds; never inside a timed run).
    """
    from lmshrink.measure.interleave import interleave

    limit = limit or {1: 200, 32: 1024}
    for model, _ in models.values():
        model.eval()

    def run(name: str, bs: int, laps: list[float] | None) -> float:
        model, enc = models[name]
        return run_batches(model, enc, bs, limit.get(bs, 256), laps)

    def warm(name: str, bs: int) -> None:
        model, enc = models[name]
        run_batches(model, enc, bs, min(limit.get(bs, 256), 4 * bs))

    def examples(name: str, bs: int) -> int:  # examples actually predicted per round
        return min(limit.get(bs, 256), len(models[name][1]))

    return interleave(list(models), batch_sizes, rounds, run, warm, examples)
