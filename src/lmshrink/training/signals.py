"""Stopping a training run cleanly on SIGTERM or SIGINT (Ctrl-C).

While the loop runs (`training.loop.run`), `StopOnSignal` replaces the handlers of both
signals: the first one only asks the loop to stop; the loop finishes the current step (and
its evaluation), writes a checkpoint as it writes the periodic ones (atomically) and raises
`Interrupted`, which the CLI prints as one line before exiting with 128 + the signal's number
(143, 130). A second signal aborts at once, wherever the loop is (the checkpoint being written
is left incomplete and the previous one stays in force). The previous handlers come back when
the loop ends, so outside training a signal does what it did before (Ctrl-C: the
KeyboardInterrupt the CLI reports). Handlers can only be set in the main thread; a loop run in
another thread keeps the process's handlers.

Several processes (`accelerate launch`): each process handles the signal it receives, on its
own. Launchers forward a signal to every process, but two processes may see it at different
steps, and writing a checkpoint waits for all of them; a stop that does not reach every
process at the same step can then hang until the launcher kills the group. Stopping several
processes cleanly would need them to agree on the step (one all-reduce per step); it is not
done.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from lmshrink.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal:
    """A context manager: while it is entered (in the main thread), SIGTERM and SIGINT set
    `signum` instead of stopping the process; `raise_if_asked` turns that into `Interrupted`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def asked(self) -> bool:
        """Whether a signal asked the loop to stop."""
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            return
        raise Interrupted(
            f"stopped by a second {signal.Signals(signum).name}, before a checkpoint of this "
            "point was complete; the run resumes from its last complete checkpoint with "
            "--resume",
            signum,
        )

    def raise_if_asked(self, step: int, saved: bool) -> None:
        """Raise `Interrupted` if a signal came; `saved`: a checkpoint of `step` was written."""
        if self.signum is None:
            return
        name = signal.Signals(self.signum).name
        then = (
            "the run resumes from this point with --resume"
            if saved
            else "this run writes no checkpoints: start it again"
        )
        raise Interrupted(f"stopped by {name} at step {step}; {then}", self.signum)
