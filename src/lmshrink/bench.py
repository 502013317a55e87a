"""Measuring CPU inference speed honestly: real texts, dynamic padding, warm-up, and the
models interleaved in one process, so that a ratio between them is fair on a noisy machine.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from lmshrink.data import Encoded, collate


def _run_batches(model: Any, enc: Encoded, batch_size: int, limit: int) -> float:
    """Seconds to predict the first `limit` examples in batches of `batch_size`."""
    import torch

    n = min(limit, len(enc))
    start = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, n, batch_size):
            batch = collate(enc, list(range(lo, min(n, lo + batch_size))))
            batch.pop("labels", None)
            model(**batch)
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
    the rounds is kept.
    """
    limit = limit or {1: 200, 32: 1024}
    for model, _ in models.values():
        model.eval()
    result: dict[str, Any] = {
        "batch_sizes": list(batch_sizes),
        "rounds": rounds,
        "examples": {},
        "per_second": {},
        "ratio": {},
    }
    for bs in batch_sizes:
        n = limit.get(bs, 256)
        for model, enc in models.values():  # warm-up
            _run_batches(model, enc, bs, min(n, 4 * bs))
        times: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(rounds):
            for name, (model, enc) in models.items():
                times[name].append(_run_batches(model, enc, bs, n))
        first = next(iter(models))
        result["examples"][str(bs)] = min(n, len(next(iter(models.values()))[1]))
        for name in models:
            median = statistics.median(times[name])
            result["per_second"].setdefault(name, {})[str(bs)] = n / median
            result["ratio"].setdefault(name, {})[str(bs)] = statistics.median(times[first]) / median
    return result
