"""SIGTERM and Ctrl-C during training: the step ends, a checkpoint is written, the run stops
with one line (exit status 143 / 130 from the CLI), and --resume ends with the weights of an
uninterrupted run. A second signal aborts at once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import make_sentences, tiny_finetune_config, write_tsv
from torch import nn

from lmshrink.cli import main
from lmshrink.config import OptimSettings
from lmshrink.errors import Interrupted
from lmshrink.training.callbacks import Callback
from lmshrink.training.checkpoint import latest_checkpoint
from lmshrink.training.loop import Phase, ShuffleStream, run

ROWS, BATCH = 32, 8  # 4 steps per epoch


def make_phase(tmp_path, **overrides) -> Phase:
    """A tiny regression net whose result depends on torch's RNG (dropout), 3 epochs."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 1))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(ROWS, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])

    def step(model, idx):
        return nn.functional.mse_loss(model(x[idx]).squeeze(-1), y[idx]), {}

    settings = dict(
        name="tiny",
        model=net,
        step=step,
        batches=ShuffleStream([1] * ROWS, BATCH, seed=0).epochs(),
        steps_per_epoch=ROWS // BATCH,
        total_steps=3 * ROWS // BATCH,
        optim=OptimSettings(lr=0.05),
        checkpoints=tmp_path / "checkpoints",
        checkpoint_every=2,
    )
    settings.update(overrides)
    return Phase(**settings)


def weights(phase: Phase) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in phase.model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


SIGNALS = pytest.mark.parametrize(
    "signum, name, status",
    [(signal.SIGTERM, "SIGTERM", 143), (signal.SIGINT, "SIGINT", 130)],
    ids=["SIGTERM", "SIGINT"],
)


class SignalAt(Callback):
    """Sends `signum` to this process at the end of step `step` (as `kill` would)."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_step_end(self, phase, state):
        if state.step == self.step:
            os.kill(os.getpid(), self.signum)


@SIGNALS
def test_a_signal_ends_the_step_writes_a_checkpoint_and_resume_ends_the_same(
    tmp_path, signum, name, status
):
    whole = make_phase(tmp_path / "whole")
    run(whole)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    phase = make_phase(tmp_path / "stopped")
    with pytest.raises(Interrupted) as stop:
        run(phase, [SignalAt(3, signum)])
    assert str(stop.value) == (
        f"stopped by {name} at step 3; the run resumes from this point with --resume"
    )
    assert stop.value.exit_code == status
    assert {s: signal.getsignal(s) for s in before} == before  # the handlers are back
    checkpoint = latest_checkpoint(tmp_path / "stopped" / "checkpoints")
    assert checkpoint.name == "step-0000003"  # off the every-2-steps grid: the stop's own
    resumed = make_phase(tmp_path / "stopped")
    state = run(resumed, resume_from=checkpoint)
    assert state.done and state.step == 12
    assert same(weights(resumed), weights(whole))


def test_a_signal_in_the_last_step_ends_the_phase_first(tmp_path):
    phase = make_phase(tmp_path)
    with pytest.raises(Interrupted, match="stopped by SIGTERM at step 12; the run resumes"):
        run(phase, [SignalAt(12, signal.SIGTERM)])
    checkpoint = latest_checkpoint(tmp_path / "checkpoints")
    resumed = make_phase(tmp_path)
    assert run(resumed, resume_from=checkpoint).done  # nothing left to train
    assert same(weights(resumed), weights(phase))


def test_a_second_signal_while_saving_aborts_at_once(tmp_path, monkeypatch):
    import lmshrink.training.checkpoint as checkpoint

    real, saves = checkpoint.save_checkpoint, []

    def save_and_signal(folder, step, *args):
        saves.append(step)
        if step == "0000003":  # the stop's checkpoint: Ctrl-C again while it is written
            os.kill(os.getpid(), signal.SIGINT)
        return real(folder, step, *args)

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_and_signal)
    with pytest.raises(Interrupted) as stop:
        run(make_phase(tmp_path), [SignalAt(3, signal.SIGINT)])
    assert str(stop.value) == (
        "stopped by a second SIGINT, before a checkpoint of this point was complete; the run "
        "resumes from its last complete checkpoint with --resume"
    )
    assert stop.value.exit_code == 130
    assert saves == ["0000002", "0000003"]
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-0000002"


def test_a_loop_outside_the_main_thread_leaves_the_handlers_alone(tmp_path):
    before, seen, states = signal.getsignal(signal.SIGTERM), [], []

    class Look(Callback):
        def on_step_end(self, phase, state):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=lambda: states.append(run(make_phase(tmp_path), [Look()])))
    thread.start()
    thread.join()
    assert states and states[0].done and set(seen) == {before}


# --- the command line: a real process, killed from outside ---------------------------------

# Runs the CLI with every training step slowed, so that the test can signal it mid-run.
SLOW_CLI = """
import sys, time
from lmshrink.training import callbacks, loop

class Slow(callbacks.Callback):
    def on_step_end(self, phase, state):
        time.sleep(0.25)

real = loop.run
loop.run = lambda phase, cbs=(), resume_from=None: real(phase, [*cbs, Slow()], resume_from)
from lmshrink.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def uninterrupted(tiny_encoder, tmp_path_factory):
    """The data, and the model of an uninterrupted tiny finetune (2 epochs of 10 steps)."""
    from lmshrink.finetune import finetune

    root = tmp_path_factory.mktemp("signals")
    glue = root / "glue"
    for split, n, seed in (("train", 160, 1), ("dev", 48, 2)):
        rows = [list(r) for r in make_sentences(n, seed=seed)]
        write_tsv(glue / "SST-2" / f"{split}.tsv", ["sentence", "label"], rows)
    cfg = tiny_finetune_config(tiny_encoder, glue, root / "whole", epochs=2)
    cfg.threads = 1  # as the processes below
    finetune(cfg)
    return glue, root / "whole"


@SIGNALS
def test_a_killed_finetune_exits_with_the_signal_status_and_resumes_to_the_same_model(
    tiny_encoder, uninterrupted, tmp_path, signum, name, status
):
    from safetensors.torch import load_file

    glue, whole = uninterrupted
    out = tmp_path / "killed"
    args = [
        "finetune", "--model", tiny_encoder, "--task", "sst2", "--data-dir", glue,
        "--max-length", 32, "--epochs", 2, "--batch-size", 16, "--lr", 4e-3,
        "--eval-batch-size", 32, "--seed", 42, "--threads", 1, "--no-progress",
        "--checkpoint-every", 2, "--out", out,
    ]  # fmt: skip
    args = [str(a) for a in args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    script = tmp_path / "slow_cli.py"
    script.write_text(SLOW_CLI)
    proc = subprocess.Popen(
        [sys.executable, script, *args], stderr=subprocess.PIPE, text=True, env=env
    )
    latest = tmp_path / "killed.work" / "checkpoints" / "latest"
    deadline = time.monotonic() + 60
    while not latest.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signum)  # after its first checkpoint (step 2 of 20)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    stopped = re.fullmatch(
        rf"stopped by {name} at step (\d+); the run resumes from this point with --resume",
        err.strip().splitlines()[-1],
    )
    assert stopped, err
    step = int(stopped.group(1))
    assert 2 <= step < 20
    assert latest.read_text() == f"step-{step:07d}"
    assert not out.exists() and not (tmp_path / "killed.lock").exists()

    assert main([*args, "--resume"]) == 0  # in this process: one start less
    assert not (tmp_path / "killed.work").exists() and not (tmp_path / "killed.lock").exists()
    a, b = (load_file(folder / "model.safetensors") for folder in (whole, out))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
