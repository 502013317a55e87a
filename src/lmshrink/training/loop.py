"""The one training loop: fine-tuning, every distillation stage and pruning recovery run on it.

A caller describes a `Phase` (what is trained, the batches of each epoch, how one batch
becomes a loss, the optimiser settings, how to evaluate, where checkpoints go) and calls
`run(phase, callbacks, resume_from)`. The loop owns what every training run shares:

- AdamW with linear warmup and decay (`training.optim.build_optimizer`), gradient clipping;
- a NaN or infinite loss stops the run with a `TrainingError` that names the last good
  checkpoint, which is kept;
- evaluation at the end of each epoch and every `eval_every` steps, early stopping after
  `patience` evaluations without improvement, and the best evaluation's weights, written
  atomically to `best_path` (so that they survive a kill) and loaded back at the end;
- atomic checkpoints every `checkpoint_every` steps and at the end of the phase
  (`training.checkpoint`), and resuming from one: weights, optimiser, schedule, torch RNG
  and the loop's own state, so that a resumed run ends with the same weights as an
  uninterrupted one;
- `accelerate` (one process or many): each step holds one batch per process; without an
  accelerator the loop runs in one process without it;
- SIGTERM, SIGINT: the step ends, a checkpoint, `Interrupted` (`training.signals`);
- gradual unfreezing through the `frozen` hook (epoch -> parameters whose gradient is
  dropped), and its progress (`reporting.progress`: a bar on a terminal, lines elsewhere).

Behaviour that differs between callers comes in as hooks on the phase and as callbacks
(`training.callbacks`), never as subclasses of the loop.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lmshrink.config import OptimSettings
from lmshrink.errors import TrainingError
from lmshrink.training.callbacks import Callback

# (the prepared model, this process's batch of the step) -> (loss, {part name: value})
StepFn = Callable[[Any, Any], tuple[Any, dict[str, Any]]]


@dataclasses.dataclass
class LoopState:
    """Where a phase is; saved in every checkpoint (`meta`: the caller's own JSON data)."""

    step: int = 0
    best: float = -math.inf
    bad_evals: int = 0
    done: bool = False
    loss: float = math.nan  # of the last step
    seconds: float = 0.0  # training time so far, across resumes
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(kw_only=True)
class Phase:
    """One run of the loop: what it trains, on what, how, and where its state lives."""

    name: str  # progress bar and error messages
    model: Any  # the torch module trained; its state_dict is what checkpoints hold
    step: StepFn
    batches: Callable[[int], Sequence[Sequence[Any]]]  # epoch -> per step, one batch per process
    steps_per_epoch: int
    total_steps: int
    optim: OptimSettings  # lr, weight_decay, warmup_ratio
    max_grad_norm: float = 0.0  # 0: no clipping
    evaluate: Callable[[LoopState], float] | None = None  # higher is better
    eval_every: int = 0  # also evaluate every N steps (0: at epoch ends only)
    patience: int = 0  # stop after N evaluations without improvement (0: never)
    frozen: Callable[[int], list[Any]] | None = None  # epoch -> parameters not updated
    checkpoints: Path | None = None  # folder of checkpoints (None: none written)
    checkpoint_every: int = 0  # steps between checkpoints (0: only at the end)
    tag: str = ""  # checkpoint names: step-{tag}-{step:07d}
    best_path: Path | None = None  # the best evaluation's weights (needed with `evaluate`)
    initial_best: float = -math.inf  # a score to beat: the start weights are kept otherwise
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    progress: bool = False
    accelerator: Any = None  # accelerate.Accelerator, or None for one process without it
    nan_hint: str = "lower the learning rate and start again, or check the data"


def run(
    phase: Phase, callbacks: Sequence[Callback] = (), resume_from: Path | None = None
) -> LoopState:
    """Train `phase.model` to the end of the phase (or resume it from a checkpoint folder)
    and return the final state; the model holds the best evaluation's weights, or the last
    ones when the phase does not evaluate (a signal: `Interrupted`, `training.signals`)."""
    from lmshrink.training.signals import StopOnSignal

    with StopOnSignal() as stop:
        state = _run(phase, callbacks, resume_from, stop)
    stop.raise_if_asked(state.step, saved=phase.checkpoints is not None)
    return state


def _run(
    phase: Phase, callbacks: Sequence[Callback], resume_from: Path | None, stop: Any
) -> LoopState:
    import torch

    from lmshrink.reporting.progress import Progress
    from lmshrink.training.checkpoint import save_weights
    from lmshrink.training.optim import build_optimizer

    acc = phase.accelerator or SingleProcess()
    model, total, per_epoch = phase.model, phase.total_steps, phase.steps_per_epoch
    if phase.evaluate is not None and phase.best_path is None:
        raise ValueError(f"{phase.name}: a phase that evaluates needs a best_path")
    optimizer, scheduler = build_optimizer(model, phase.optim, total)
    state = LoopState(best=phase.initial_best, meta=phase.meta)
    if resume_from is not None:
        state = _restore(resume_from, model, optimizer, scheduler)
        if state.done:  # a finished phase: its final weights and RNG state are back
            return state
    elif phase.best_path is not None and acc.is_main_process:
        if state.best > -math.inf:  # the start weights are the ones to beat
            save_weights(phase.best_path, model.state_dict())
        else:  # a leftover of an earlier phase must not come back at the end
            phase.best_path.unlink(missing_ok=True)
    wrapped, optimizer = acc.prepare(model, optimizer)
    keep = _Keeper(phase, acc, model, optimizer, scheduler)

    bar = Progress(
        total,
        phase.name,
        "steps",
        initial=state.step,
        show=phase.progress and acc.is_local_main_process,
    )
    started, before = time.perf_counter(), state.seconds

    def clock() -> None:
        state.seconds = before + time.perf_counter() - started

    wrapped.train()
    while state.step < total and not state.done:
        epoch, offset = divmod(state.step, per_epoch)
        frozen = phase.frozen(epoch) if phase.frozen is not None else []
        for per_process in phase.batches(epoch)[offset:per_epoch]:
            loss, parts = phase.step(wrapped, per_process[acc.process_index])
            if not torch.isfinite(loss):
                raise _diverged(phase, state, float(loss.item()))
            acc.backward(loss)
            for param in frozen:  # frozen groups: no gradient, so AdamW leaves them alone
                param.grad = None
            if phase.max_grad_norm > 0:
                acc.clip_grad_norm_(model.parameters(), phase.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.loss = loss.item()
            bar.set_postfix(parts)  # the loss parts, on the bar and the progress lines
            bar.update(1)
            end_of_epoch = state.step % per_epoch == 0 or state.step == total
            grid = phase.eval_every and state.step % phase.eval_every == 0
            if phase.evaluate is not None and (end_of_epoch or grid):
                clock()
                keep.evaluate(state, callbacks)
            for callback in callbacks:
                callback.on_step_end(phase, state)
            if state.done or state.step == total:
                break
            if stop.asked or phase.checkpoint_every and state.step % phase.checkpoint_every == 0:
                clock()
                keep.checkpoint(state)
            stop.raise_if_asked(state.step, saved=phase.checkpoints is not None)
    bar.close()
    clock()
    if phase.best_path is not None and phase.best_path.is_file():
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(phase.best_path)))  # end with the best weights
    state.done = True
    keep.checkpoint(state)
    if phase.best_path is not None and acc.is_main_process:
        phase.best_path.unlink(missing_ok=True)
    return state


class _Keeper:
    """What the loop writes: checkpoints and the best weights (main process only)."""

    def __init__(self, phase: Phase, acc: Any, model: Any, optimizer: Any, scheduler: Any):
        self.phase, self.acc, self.model = phase, acc, model
        self.optimizer, self.scheduler = optimizer, scheduler

    def checkpoint(self, state: LoopState) -> None:
        from lmshrink.training.checkpoint import save_checkpoint

        phase = self.phase
        if phase.checkpoints is None:
            return
        if self.acc.is_main_process:
            name = f"{phase.tag}-{state.step:07d}" if phase.tag else f"{state.step:07d}"
            weights = self.model.state_dict()
            saved = dataclasses.asdict(state)
            save_checkpoint(phase.checkpoints, name, weights, self.optimizer, self.scheduler, saved)
        self.acc.wait_for_everyone()

    def evaluate(self, state: LoopState, callbacks: Sequence[Callback]) -> None:
        from lmshrink.training.checkpoint import save_weights

        phase = self.phase
        assert phase.evaluate is not None and phase.best_path is not None
        score = phase.evaluate(state)
        improved = score > state.best
        if improved:
            state.best, state.bad_evals = score, 0
            if self.acc.is_main_process:
                save_weights(phase.best_path, self.model.state_dict())
            self.acc.wait_for_everyone()
        else:
            state.bad_evals += 1
            if phase.patience and state.bad_evals >= phase.patience:
                state.done = True
        for callback in callbacks:
            callback.on_evaluate(phase, state, score, improved)


def _restore(path: Path, model: Any, optimizer: Any, scheduler: Any) -> LoopState:
    import torch

    from lmshrink.training.checkpoint import load_checkpoint

    weights, optim, saved = load_checkpoint(path)
    model.load_state_dict(weights)
    optimizer.load_state_dict(optim["optimizer"])
    scheduler.load_state_dict(optim["scheduler"])
    torch.set_rng_state(optim["torch_rng"])
    return LoopState(**saved)


def _diverged(phase: Phase, state: LoopState, value: float) -> TrainingError:
    from lmshrink.training.checkpoint import latest_checkpoint

    latest = latest_checkpoint(phase.checkpoints) if phase.checkpoints is not None else None
    kept = (
        f"the last good checkpoint is kept: {latest}"
        if latest is not None
        else "no checkpoint was written yet"
    )
    return TrainingError(
        f"{phase.name}: loss became {value} at step {state.step + 1}; {kept}; {phase.nan_hint}."
    )


class SingleProcess:
    """What the loop asks of an `accelerate.Accelerator`, for one process without it."""

    process_index, num_processes = 0, 1
    is_main_process = is_local_main_process = True

    def prepare(self, *objects: Any) -> tuple[Any, ...]:
        return objects

    def backward(self, loss: Any) -> None:
        loss.backward()

    def clip_grad_norm_(self, parameters: Any, max_norm: float) -> Any:
        import torch

        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    def wait_for_everyone(self) -> None:
        pass


class ShuffleStream:
    """Epoch orders drawn one after another from one `random.Random(seed)` (length-bucketed
    batches, `data.batching.bucketed_batches`), as fine-tuning and pruning recovery have
    always drawn them. `draw(n)` is the n-th draw (0-based); an earlier one replays the
    stream from the seed, so a resumed run gets the orders of an uninterrupted one."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self._rng, self._drawn, self._last = random.Random(seed), 0, []

    def draw(self, n: int) -> list[list[int]]:
        from lmshrink.data.batching import bucketed_batches

        if n < self._drawn - 1:
            self._rng, self._drawn = random.Random(self.seed), 0
        while self._drawn <= n:
            self._last = bucketed_batches(self.lengths, self.batch_size, self._rng)
            self._drawn += 1
        return self._last

    def epochs(self, first: int = 0) -> Callable[[int], list[list[list[int]]]]:
        """A one-process `Phase.batches`: epoch e gets draw `first + e`."""
        return lambda epoch: [[batch] for batch in self.draw(first + epoch)]

    def per_epoch(self) -> int:
        """Batches in one draw."""
        return max(1, math.ceil(len(self.lengths) / self.batch_size))
