"""Callbacks of the training loop: small objects the loop notifies, so that a caller adds
behaviour (a history, a loss record, a simulated kill) without changing the loop.

A callback overrides the hooks it needs; the others do nothing. Hooks receive the phase
being run (`lmshrink.training.loop.Phase`) and its `LoopState`; what a callback keeps in
`state.meta` is written into every checkpoint, so it survives a kill and a resume.
"""

from __future__ import annotations

from typing import Any


class Callback:
    """Base class: every hook does nothing."""

    def on_step_end(self, phase: Any, state: Any) -> None:
        """After a step's update (and its evaluation, if one was due), before its checkpoint."""

    def on_evaluate(self, phase: Any, state: Any, score: float, improved: bool) -> None:
        """After an evaluation: its score, and whether it beat the best so far."""


class RecentLosses(Callback):
    """Keeps the training losses of the last `count` steps in `state.meta[key]`."""

    def __init__(self, count: int = 20, key: str = "recent_losses") -> None:
        self.count, self.key = count, key

    def on_step_end(self, phase: Any, state: Any) -> None:
        losses = state.meta.setdefault(self.key, [])
        losses.append(state.loss)
        del losses[: -self.count]

    def mean(self, state: Any) -> float:
        """The mean of the kept losses (0.0 when no step ran)."""
        losses = state.meta.get(self.key, [])
        return sum(losses) / len(losses) if losses else 0.0


class SimulatedKill(BaseException):
    """Raised by `KillAt`. A BaseException, like the KeyboardInterrupt a kill resembles, so
    that no `except Exception` on the way out treats it as an ordinary error."""


class KillAt(Callback):
    """Stops a run at the end of step `step` of the phase tagged `phase` (any phase when
    None), before that step's checkpoint: what a kill leaves behind. Tests use it to check
    that `--resume` continues to the same result as an uninterrupted run."""

    def __init__(self, step: int, phase: str | None = None) -> None:
        self.step, self.phase = step, phase

    def on_step_end(self, phase: Any, state: Any) -> None:
        if state.step == self.step and self.phase in (None, phase.tag):
            raise SimulatedKill(f"killed at step {state.step} of phase {phase.tag!r}")
