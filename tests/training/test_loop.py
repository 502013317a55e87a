"""The one training loop on a tiny regression net (48 rows): it learns, evaluates on its grid,
stops on NaN keeping the last good checkpoint, stops early, ends with the best weights, and
resumes after a kill to the same weights as an uninterrupted run."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from torch import nn

from lmshrink.config import OptimSettings
from lmshrink.data.batching import bucketed_batches
from lmshrink.errors import TrainingError
from lmshrink.training.callbacks import Callback, KillAt, RecentLosses, SimulatedKill
from lmshrink.training.checkpoint import latest_checkpoint, load_checkpoint
from lmshrink.training.loop import Phase, ShuffleStream, run

ROWS, BATCH = 48, 8  # 6 steps per epoch


def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(ROWS + 16, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.5
    return x[:ROWS], y[:ROWS], x[ROWS:], y[ROWS:]  # train, dev


def make_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    # Dropout makes the result depend on torch's RNG, which a resume must restore.
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 1))


def dev_loss(net: nn.Module) -> float:
    _, _, x, y = data()
    was_training = net.training
    net.eval()
    with torch.no_grad():
        loss = nn.functional.mse_loss(net(x).squeeze(-1), y).item()
    net.train(was_training)
    return loss


def make_phase(tmp_path, net: nn.Module | None = None, epochs: int = 5, **overrides) -> Phase:
    net = net if net is not None else make_net()
    x, y, _, _ = data()

    def step(model, idx):
        loss = nn.functional.mse_loss(model(x[idx]).squeeze(-1), y[idx])
        return loss, {"mse": loss.detach()}

    def evaluate(state) -> float:
        score = -dev_loss(net)
        state.meta["history"].append({"step": state.step, "score": score})
        return score

    settings = dict(
        name="tiny",
        model=net,
        step=step,
        batches=ShuffleStream([1] * ROWS, BATCH, seed=0).epochs(),
        steps_per_epoch=ROWS // BATCH,
        total_steps=epochs * ROWS // BATCH,
        optim=OptimSettings(lr=0.05, weight_decay=0.01, warmup_ratio=0.1),
        max_grad_norm=5.0,
        evaluate=evaluate,
        checkpoints=tmp_path / "checkpoints",
        checkpoint_every=4,
        best_path=tmp_path / "best.safetensors",
        meta={"history": []},
    )
    settings.update(overrides)
    return Phase(**settings)


def weights(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Snapshots(Callback):
    """The weights at every evaluation, and whether the best file was on disk then."""

    def __init__(self, net):
        self.net, self.at, self.best_on_disk = net, [], []

    def on_evaluate(self, phase, state, score, improved):
        self.at.append(weights(self.net))
        self.best_on_disk.append(phase.best_path.is_file())


def test_the_loop_learns_and_evaluates_once_per_epoch(tmp_path):
    phase = make_phase(tmp_path)
    before = dev_loss(phase.model)
    losses = RecentLosses(6)
    state = run(phase, [losses])
    assert state.done and state.step == 30
    assert [h["step"] for h in state.meta["history"]] == [6, 12, 18, 24, 30]
    assert dev_loss(phase.model) < 0.1 * before
    assert len(state.meta["recent_losses"]) == 6 and losses.mean(state) < 0.2 * before
    # the end of the phase is a checkpoint; the best weights file is gone
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-0000030"
    assert not (tmp_path / "best.safetensors").exists()


def test_evaluation_on_a_step_grid_and_at_epoch_ends(tmp_path):
    state = run(make_phase(tmp_path, epochs=2, eval_every=4))
    assert [h["step"] for h in state.meta["history"]] == [4, 6, 8, 12]


def test_nan_loss_stops_and_names_the_last_good_checkpoint(tmp_path):
    phase = make_phase(tmp_path, checkpoint_every=3)
    real, calls = phase.step, []

    def poisoned(model, idx):
        calls.append(1)
        loss, parts = real(model, idx)
        return (loss * float("nan"), parts) if len(calls) == 7 else (loss, parts)

    phase.step = poisoned
    with pytest.raises(TrainingError) as error:
        run(phase)
    kept = tmp_path / "checkpoints" / "step-0000006"
    assert str(error.value) == (
        f"tiny: loss became nan at step 7; the last good checkpoint is kept: {kept}; "
        "lower the learning rate and start again, or check the data."
    )
    assert latest_checkpoint(tmp_path / "checkpoints") == kept
    saved, _, state = load_checkpoint(kept)
    assert state["step"] == 6 and not state["done"]
    assert same(saved, weights(phase.model))  # the poisoned step changed nothing

    phase = make_phase(tmp_path / "first", step=lambda m, i: (torch.tensor(float("inf")), {}))
    with pytest.raises(TrainingError, match="loss became inf at step 1; no checkpoint was written"):
        run(phase)


def test_patience_stops_early_and_the_best_evaluation_wins(tmp_path):
    scores = iter([1.0, 3.0, 2.0, 2.5, 9.0])
    phase = make_phase(tmp_path, epochs=10, patience=2, evaluate=lambda state: next(scores))
    snaps = Snapshots(phase.model)
    state = run(phase, [snaps])
    assert state.step == 4 * 6 and state.done  # two evaluations without improvement
    assert (state.best, state.bad_evals) == (3.0, 2)
    assert len(snaps.at) == 4 and not same(snaps.at[1], snaps.at[3])
    assert same(weights(phase.model), snaps.at[1])  # the weights of the best evaluation
    assert snaps.best_on_disk == [True] * 4  # on disk while training, gone at the end
    assert not (tmp_path / "best.safetensors").exists()


def test_a_score_to_beat_keeps_the_start_weights(tmp_path):
    phase = make_phase(tmp_path, epochs=2, initial_best=0.0)  # -dev loss never reaches 0
    start = weights(phase.model)
    state = run(phase)
    assert state.best == 0.0 and state.bad_evals == 2
    assert same(weights(phase.model), start)


def test_frozen_parameters_wait_for_their_epoch(tmp_path):
    net = make_net()
    first = list(net[0].parameters())
    start = weights(net)
    at_epoch_end = []

    class Record(Callback):
        def on_step_end(self, phase, state):
            if state.step % 6 == 0:
                at_epoch_end.append(weights(net))

    run(make_phase(tmp_path, net, epochs=2, frozen=lambda e: first if e == 0 else []), [Record()])
    assert torch.equal(at_epoch_end[0]["0.weight"], start["0.weight"])
    assert not torch.equal(at_epoch_end[0]["3.weight"], start["3.weight"])
    assert not torch.equal(at_epoch_end[1]["0.weight"], start["0.weight"])


def test_resume_after_a_kill_is_bit_identical(tmp_path):
    whole = make_phase(tmp_path / "whole", epochs=4, eval_every=5)
    whole_state = run(whole)

    killed = make_phase(tmp_path / "killed", epochs=4, eval_every=5)
    with pytest.raises(SimulatedKill):
        run(killed, [KillAt(14)])
    last = latest_checkpoint(tmp_path / "killed" / "checkpoints")
    assert last.name == "step-0000012"  # the kill came before step 14's successor checkpoint
    assert (tmp_path / "killed" / "best.safetensors").is_file()

    # A fresh process: other initial weights and RNG state, all replaced by the checkpoint.
    torch.manual_seed(123)
    resumed = make_phase(tmp_path / "killed", make_net(seed=7), epochs=4, eval_every=5)
    state = run(resumed, resume_from=last)
    assert same(weights(resumed.model), weights(whole.model))
    plain = dataclasses.asdict(whole_state)
    assert {**dataclasses.asdict(state), "seconds": 0} == {**plain, "seconds": 0}
    assert [h["step"] for h in state.meta["history"]] == [5, 6, 10, 12, 15, 18, 20, 24]


def test_resuming_a_finished_phase_gives_back_its_weights_and_rng(tmp_path):
    phase = make_phase(tmp_path, epochs=1)
    run(phase)
    rng_after = torch.get_rng_state()
    torch.manual_seed(5)
    again = make_phase(tmp_path, make_net(seed=3), epochs=1)
    state = run(again, resume_from=latest_checkpoint(tmp_path / "checkpoints"))
    assert state.done and state.step == 6
    assert same(weights(again.model), weights(phase.model))
    assert torch.equal(torch.get_rng_state(), rng_after)


def test_shuffle_stream_replays_the_draws_of_one_generator():
    lengths = [random.Random(i).randint(3, 30) for i in range(100)]
    rng = random.Random(42)
    expected = [bucketed_batches(lengths, 16, rng) for _ in range(4)]
    stream = ShuffleStream(lengths, 16, seed=42)
    assert [stream.draw(n) for n in (0, 1, 2, 3)] == expected
    assert stream.draw(1) == expected[1] and stream.draw(3) == expected[3]  # replayed
    assert stream.epochs(first=2)(1) == [[batch] for batch in expected[3]]
    assert stream.per_epoch() == 7


def test_a_phase_that_evaluates_needs_somewhere_for_its_best_weights(tmp_path):
    with pytest.raises(ValueError, match="best_path"):
        run(make_phase(tmp_path, best_path=None))
