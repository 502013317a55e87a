"""What a person reads while a command runs: progress, info lines, warnings, and the run's log.

Every loop that can run long goes through `Progress` (or `track`), so that progress reads the
same everywhere:

- on a terminal (stdout and stderr both), a tqdm bar on stderr, as before;
- anywhere else (stdout a file or a pipe, or `--no-progress`), plain flushed lines on stdout,
  one when a step starts, then at most one every 30 s (`LMSHRINK_PROGRESS_SECONDS` changes
  the interval; 0: a line at every update), and one at the end:
  `[stage 2 logits] 1,234/5,678 steps (21.7%), 45.2 steps/s, eta 1m38s, loss 0.4123`;
- with `--quiet`, nothing (warnings and errors still print).

A transient step (scoring dev, a parity check: `transient=True`) prints no start line and
only shows up in lines once it has run for an interval.

A command runs inside a `session` (the `for_command` decorator opens one from its config's
`quiet` and `progress`); `log_to(path)` then appends every info line, warning and progress
line (never a bar redraw) to the run's log file, one flushed, time-stamped line at a time,
so the log survives a crash. Lines said before the log is opened are kept and written first.
Sessions nest (shrink runs distill): a line goes to the logs of every open session.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

LOG_FILE = "lmshrink.log"
INTERVAL_ENV = "LMSHRINK_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0
_MAX_PENDING = 1000  # lines kept for a log not opened yet

T = TypeVar("T")


@dataclasses.dataclass
class _Session:
    quiet: bool = False  # no progress and no info lines on the console
    bars: bool = True  # tqdm bars where stdout and stderr are terminals (else lines)
    logs: list[IO[str]] = dataclasses.field(default_factory=list)
    pending: list[str] = dataclasses.field(default_factory=list)


_DEFAULT = _Session()  # outside any command: bars on a terminal, lines elsewhere, no log
_SESSIONS: list[_Session] = []
_OPEN_BARS = [0]  # tqdm bars open now: console lines then go through tqdm.write


def _current() -> _Session:
    return _SESSIONS[-1] if _SESSIONS else _DEFAULT


@contextlib.contextmanager
def session(quiet: bool = False, bars: bool = True) -> Iterator[None]:
    """Console settings for what runs inside (a command): `quiet` prints no progress and no
    info lines; `bars=False` prints progress as plain lines even on a terminal."""
    current = _Session(quiet=quiet, bars=bars)
    _SESSIONS.append(current)
    # Hugging Face's own bars (loading and saving weights) are unreadable in a file or pipe.
    hf_bars_off = (quiet or not bars or not _terminal()) and _hf_bars(False)
    try:
        yield
    finally:
        if hf_bars_off:
            _hf_bars(True)
        _SESSIONS.remove(current)
        for log in current.logs:
            log.close()


def _hf_bars(on: bool) -> bool:
    """Turn transformers' (and the hub's) progress bars on or off; returns whether they were
    on before (when off, they are left off)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    was_on = hf_logging.is_progress_bar_enabled()
    if on and not was_on:
        hf_logging.enable_progress_bar()
    elif not on and was_on:
        hf_logging.disable_progress_bar()
    return was_on


F = TypeVar("F", bound=Callable[..., Any])


def for_command(function: F) -> F:
    """Run a command function `function(cfg, ...)` in a `session` set by its config's `quiet`
    and `progress` (a config without them: the defaults)."""

    @functools.wraps(function)
    def wrapper(cfg: Any, *args: Any, **kwargs: Any) -> Any:
        from lmshrink import __version__

        quiet, bars = getattr(cfg, "quiet", False), getattr(cfg, "progress", True)
        with session(quiet=quiet, bars=bars):
            _log(f"lmshrink {__version__}: {function.__name__} started")
            try:
                return function(cfg, *args, **kwargs)
            except BaseException as exc:
                _log(f"stopped: {type(exc).__name__}: {exc}")
                raise

    return wrapper  # type: ignore[return-value]


def log_to(path: str | Path) -> Path:
    """Append this session's lines to the log file `path` from now on (the lines said so far
    in the session first); returns the path. Outside a session, nothing is logged."""
    path = Path(path)
    current = _current()
    if current is _DEFAULT or any(Path(log.name) == path for log in current.logs):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    log = path.open("a", encoding="utf-8", buffering=1)  # line-buffered: flushed per line
    for line in current.pending:
        log.write(line)
    log.flush()
    current.pending.clear()
    current.logs.append(log)
    return path


def move_log(src: Path, dst: Path) -> None:
    """Move the log of folder `src` into folder `dst` (on the same file system: an open log
    goes on writing into the moved file), e.g. from a work folder into the finished run."""
    if (src / LOG_FILE).is_file():
        os.replace(src / LOG_FILE, dst / LOG_FILE)


def _log(message: str) -> None:
    """Append `message` (one or more lines) to the open logs, time-stamped."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    text = "".join(f"{stamp} {line}\n" for line in message.splitlines() or [""])
    for s in _SESSIONS:
        if s.logs:
            for log in s.logs:
                # best effort: a full disk fails the run's own writes, not its log lines
                with contextlib.suppress(OSError, ValueError):
                    log.write(text)
                    log.flush()
        elif len(s.pending) < _MAX_PENDING:
            s.pending.append(text)


def _console(message: str, file: Any = None) -> None:
    stream = file or sys.stdout
    if _OPEN_BARS[0]:
        from tqdm.auto import tqdm

        tqdm.write(message, file=stream)  # above the bars, which are redrawn below
    else:
        print(message, file=stream)
    stream.flush()


def info(message: str) -> None:
    """An info line: on stdout unless the session is quiet, and in the run's log."""
    if not _current().quiet:
        _console(message)
    _log(message)


def warn(message: str) -> None:
    """A warning: on stderr, even when quiet, and in the run's log ("warning: " is added)."""
    message = f"warning: {message}"
    _console(message, sys.stderr)
    _log(message)


def result(text: str, folder: str | Path | None = None) -> None:
    """A command's result (its summary, or its table) on stdout, even when quiet; appended to
    `folder`'s log when the run folder has one."""
    print(text, flush=True)
    if folder:
        log = Path(folder).expanduser() / LOG_FILE
        if log.is_file():
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            with contextlib.suppress(OSError), log.open("a", encoding="utf-8") as f:
                f.write("".join(f"{stamp} {line}\n" for line in text.splitlines()))


def interval() -> float:
    """Seconds between progress lines: `LMSHRINK_PROGRESS_SECONDS`, else 30."""
    raw = os.environ.get(INTERVAL_ENV, "")
    try:
        return max(0.0, float(raw)) if raw.strip() else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL


def _terminal() -> bool:
    return all(getattr(s, "isatty", lambda: False)() for s in (sys.stdout, sys.stderr))


class Progress:
    """The progress of one step: `update(n)` as work is done, `close()` at the end.

    `total` units of `unit` (None: unknown), starting at `initial` (a resumed run).
    `show=False` shows nothing (another process shows it, or the caller asked for silence)."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str = "it",
        *,
        initial: int = 0,
        show: bool = True,
        transient: bool = False,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self.initial = initial
        self.transient, self.closed = transient, False
        self.postfix: dict[str, Any] = {}
        self.interval = interval()
        self.started = self.last = time.monotonic()
        self.printed = False  # a line was written (console or log)
        # shown: on the console (bar or lines) unless quiet, and in the logs either way
        self.shown = show
        self.bar: Any = None
        if not show:
            return
        current = _current()
        if not current.quiet and current.bars and _terminal():
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, initial=initial, desc=desc, leave=not transient, mininterval=1.0
            )
            _OPEN_BARS[0] += 1
        if not transient:
            self._line()

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.shown:
            return
        if self.bar is not None:
            self.bar.update(n)
        now = time.monotonic()
        if now - self.last >= self.interval and (self.total is None or self.n < self.total):
            self._line()

    def set_postfix(self, values: dict[str, Any]) -> None:
        """Values shown after the counts (e.g. the loss), formatted when shown."""
        self.postfix = values
        if self.bar is not None:
            self.bar.set_postfix({k: _number(v) for k, v in values.items()}, refresh=False)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
            _OPEN_BARS[0] -= 1
        if self.shown and (not self.transient or self.printed):
            self._line(end=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def line(self, end: bool = False) -> str:
        """The progress line as it stands: counts, share, rate, eta (or time taken at the
        end) and the postfix values."""
        elapsed = time.monotonic() - self.started
        done = self.n - self.initial
        if self.total is not None:
            share = 100 * self.n / self.total if self.total else 100.0
            parts = [f"[{self.desc}] {self.n:,}/{self.total:,} {self.unit} ({share:.1f}%)"]
        else:
            parts = [f"[{self.desc}] {self.n:,} {self.unit}"]
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        if rate is not None:
            parts.append(f"{_rate(rate)} {self.unit}/s")
        if end:
            parts.append(f"done in {duration(elapsed)}")
        elif rate is not None and self.total is not None and self.n < self.total:
            parts.append(f"eta {duration((self.total - self.n) / rate)}")
        parts += [f"{k} {_number(v)}" for k, v in self.postfix.items()]
        return ", ".join(parts)

    def _line(self, end: bool = False) -> None:
        self.last, self.printed = time.monotonic(), True
        text = self.line(end)
        if self.bar is None and not _current().quiet:
            _console(text)
        _log(text)


def track(
    items: Iterable[T],
    desc: str,
    *,
    total: int | None = None,
    unit: str = "it",
    show: bool = True,
    transient: bool = False,
) -> Iterator[T]:
    """`items`, one at a time, with a `Progress` of one unit per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    progress = Progress(total, desc, unit, show=show, transient=transient)
    try:
        for item in items:
            yield item
            progress.update(1)
    finally:
        progress.close()


def duration(seconds: float) -> str:
    """Seconds as 0.4s, 42s, 1m38s or 2h05m."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _rate(rate: float) -> str:
    if rate >= 100:
        return f"{rate:,.0f}"
    return f"{rate:.1f}" if rate >= 10 else f"{rate:.2f}"


def _number(value: Any) -> str:
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return str(value)
