"""Speed measurement: what is timed (every call, on dataset-order batches with real padding),
and the numbers computed from the times, checked against a clock the test controls."""

from __future__ import annotations

import time
import types

import numpy as np
import pytest

from lmshrink.data.batching import Encoded
from lmshrink.measure import speed

# Five examples of different lengths, in dataset order.
ROWS = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10], [11, 12]]


class Clock:
    """A perf_counter that only moves when a fake model is called."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CostModel:
    """A model whose call takes `ms_per_token` per padded token, on the test's clock; it
    records the input ids of each call."""

    def __init__(self, clock: Clock, ms_per_token: float) -> None:
        self.clock, self.ms, self.calls = clock, ms_per_token, []

    def eval(self):
        return self

    def __call__(self, input_ids, attention_mask):
        self.calls.append(input_ids.tolist())
        self.clock.now += self.ms * input_ids.numel() / 1000
        return types.SimpleNamespace(logits=np.zeros((input_ids.shape[0], 2)))


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(speed.time, "perf_counter", clock)
    return clock


def test_latency_and_throughput_come_from_the_recorded_calls(clock):
    enc = Encoded({"input_ids": ROWS}, None, 0)
    a, b = CostModel(clock, 1.0), CostModel(clock, 3.0)
    result = speed.measure_speed({"a": (a, enc), "b": (b, enc)}, (1, 2), {1: 4, 2: 50}, rounds=3)

    # Batch size 1, the first 4 examples: one call per example, its length in ms (model a).
    laps_a = np.array([3, 1, 2, 4] * 3, dtype=float)
    lat = result["latency_ms"]["a"]["1"]
    assert lat["calls"] == 12
    assert lat["p50"] == pytest.approx(np.percentile(laps_a, 50))
    assert lat["p95"] == pytest.approx(np.percentile(laps_a, 95))
    assert result["latency_ms"]["b"]["1"]["p95"] == pytest.approx(3 * np.percentile(laps_a, 95))
    # 4 examples in 10 ms per round: 400 examples/s; b costs 3x as much, so its ratio is 1/3.
    assert result["per_second"]["a"]["1"] == pytest.approx(400.0)
    assert result["ratio"]["b"]["1"] == pytest.approx(1 / 3)
    # Batch size 2 over all 5 examples (limit 50): padded batches of widths 3, 4, 2.
    assert result["examples"] == {"1": 4, "2": 5}
    assert result["per_second"]["a"]["2"] == pytest.approx(5 / ((2 * 3 + 2 * 4 + 1 * 2) / 1000))
    # Each round calls in dataset order, each batch padded to its longest row (after a
    # warm-up pass over min(limit, 4 x batch size) examples).
    assert a.calls[4:8] == [[[1, 2, 3]], [[4]], [[5, 6]], [[7, 8, 9, 10]]]  # b=1, round 1
    one_round = [[[1, 2, 3], [4, 0, 0]], [[5, 6, 0, 0], [7, 8, 9, 10]], [[11, 12]]]
    assert a.calls[-3:] == one_round and a.calls[-6:-3] == one_round  # b=2, rounds 2 and 3


def test_a_model_made_slower_is_measured_slower():
    """Real time: the same model with a 4 ms pause per call loses at both batch sizes, and its
    batch-1 latency is longer by about the pause."""
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(16, 8)

        def forward(self, input_ids, attention_mask):
            return types.SimpleNamespace(logits=self.embed(input_ids).mean(1))

    class Paused(Tiny):
        def forward(self, input_ids, attention_mask):
            time.sleep(0.004)
            return super().forward(input_ids, attention_mask)

    enc = Encoded({"input_ids": ROWS * 2}, None, 0)
    result = speed.measure_speed(
        {"fast": (Tiny(), enc), "slow": (Paused(), enc)}, (1, 4), {1: 10, 4: 10}, rounds=3
    )
    assert result["ratio"]["slow"]["1"] < 0.5 and result["ratio"]["slow"]["4"] < 1.0
    slow, fast = result["latency_ms"]["slow"]["1"], result["latency_ms"]["fast"]["1"]
    assert slow["p50"] >= fast["p50"] + 3.5
