"""Progress a person can read: flushed lines in a file or pipe, a tqdm bar on a terminal,
nothing with --quiet, and every line in the run folder's lmshrink.log."""

from __future__ import annotations

import io
import re
import sys

import pytest
from conftest import tiny_finetune_config

from lmshrink.reporting import progress
from lmshrink.reporting.progress import (
    INTERVAL_ENV,
    LOG_FILE,
    Progress,
    info,
    log_to,
    session,
    track,
    warn,
)

LINE = re.compile(r"^\[finetune sst2\] \d+/10 steps \(\d+\.\d%\)")


class Pipe(io.StringIO):
    """A stdout that is not a terminal and remembers which lines were flushed: the last
    complete line at each flush."""

    def __init__(self, tty: bool = False) -> None:
        super().__init__()
        self.tty, self.flushed = tty, set()

    def isatty(self) -> bool:
        return self.tty

    def flush(self) -> None:
        text = self.getvalue()
        if text.endswith("\n"):
            self.flushed.add(text.splitlines()[-1])
        super().flush()


@pytest.fixture
def every_update(monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "0")


def finetune_cli(encoder, data_dir, out, *extra):
    from lmshrink.cli import main

    argv = ["finetune", "--task", "sst2", "--model", str(encoder), "--data-dir", str(data_dir)]
    argv += ["--out", str(out), "--epochs", "1", "--batch-size", "16", "--lr", "4e-3"]
    return main([*argv, "--set", "data.max_length=32", *extra])


def test_a_finetune_into_a_pipe_prints_flushed_lines_and_logs_them(
    tiny_encoder, sst2_dir, tmp_path, monkeypatch, capsys, every_update
):
    pipe = Pipe()
    monkeypatch.setattr(sys, "stdout", pipe)
    assert finetune_cli(tiny_encoder, sst2_dir, tmp_path / "t") == 0
    printed, err = pipe.getvalue(), capsys.readouterr().err
    assert "\r" not in printed and "\r" not in err  # no bar redraws, ours or transformers'
    lines = [line for line in printed.splitlines() if LINE.match(line)]
    # 10 steps: the start line, one per step (interval 0) before the last, the end line
    assert lines[0] == "[finetune sst2] 0/10 steps (0.0%)"
    assert len(lines) == 11
    assert re.search(r", [\d.,]+ steps/s, eta [\dhms.]+, loss \d\.\d{4}$", lines[5])
    assert "10/10 steps (100.0%)" in lines[-1] and "done in" in lines[-1]
    assert set(lines) <= pipe.flushed  # each line flushed as it was written
    assert "step 10 (epoch 1.0): dev accuracy" in printed  # an info line
    # The log moved with the finished run; the work folder is gone.
    assert not (tmp_path / "t.work").exists()
    logged = (tmp_path / "t" / LOG_FILE).read_text().splitlines()
    stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
    assert all(re.match(stamp, line) for line in logged)
    texts = [re.sub(stamp, "", line) for line in logged]
    assert [t for t in texts if LINE.match(t)] == lines
    assert any(t.startswith("step 10 (epoch 1.0): dev accuracy") for t in texts)
    assert texts[-1].startswith(f"saved {tmp_path / 't'} (dev accuracy")  # the result too


def test_quiet_prints_only_the_result_and_still_logs(
    tiny_encoder, sst2_dir, tmp_path, capsys, every_update
):
    assert finetune_cli(tiny_encoder, sst2_dir, tmp_path / "q", "--quiet") == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1
    assert captured.out.startswith(f"saved {tmp_path / 'q'} (dev accuracy")
    assert "\r" not in captured.err
    logged = (tmp_path / "q" / LOG_FILE).read_text()
    assert "[finetune sst2] 10/10 steps (100.0%)" in logged and "dev accuracy" in logged


def test_the_api_takes_quiet_too(tiny_encoder, sst2_dir, tmp_path, capsys, every_update):
    from lmshrink.finetune import finetune

    cfg = tiny_finetune_config(tiny_encoder, sst2_dir, tmp_path / "a", epochs=1)
    cfg.quiet = True
    finetune(cfg)
    assert capsys.readouterr().out == ""
    assert "[finetune sst2] 0/" in (tmp_path / "a" / LOG_FILE).read_text()


def test_a_terminal_gets_a_tqdm_bar_and_no_progress_gets_lines(monkeypatch, every_update):
    out, err = Pipe(tty=True), Pipe(tty=True)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    with session():
        shown = Progress(3, "stage logits", "steps")
        assert shown.bar is not None
        for _ in range(3):
            shown.update()
        info("an info line")  # above the bar
        shown.close()
    assert "\r" in err.getvalue() and "stage logits" in err.getvalue()
    assert out.getvalue() == "an info line\n"  # no progress lines beside a bar
    # --no-progress: plain lines, even on a terminal
    with session(bars=False):
        assert list(track(range(2), "reading", unit="texts")) == [0, 1]
    lines = out.getvalue().splitlines()[1:]
    assert len(lines) == 3 and lines[0] == "[reading] 0/2 texts (0.0%)"
    assert lines[1].startswith("[reading] 1/2 texts (50.0%), ")
    assert lines[2].startswith("[reading] 2/2 texts (100.0%), ") and "done in" in lines[2]


def test_lines_wait_for_the_interval_and_quick_transient_steps_print_nothing(monkeypatch, capsys):
    monkeypatch.setenv(INTERVAL_ENV, "30")
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    with session():
        quick = list(track(range(50), "eval dev", unit="batches", transient=True))
        shown = Progress(5678, "stage logits", "steps")
        for _ in range(100):  # 10 steps every 0.5 s, for 50 s
            clock[0] += 0.5
            shown.update(10)
        shown.close()
    assert len(quick) == 50  # a quick transient step: no line at all
    # the start, one line once 30 s have passed, and the end
    assert capsys.readouterr().out.splitlines() == [
        "[stage logits] 0/5,678 steps (0.0%)",
        "[stage logits] 600/5,678 steps (10.6%), 20.0 steps/s, eta 4m14s",
        "[stage logits] 1,000/5,678 steps (17.6%), 20.0 steps/s, done in 50s",
    ]


def test_line_format(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    shown = Progress(5678, "stage logits", "batches", show=False)
    clock[0] = 1234 / 45.2
    shown.update(1234)
    shown.set_postfix({"loss": 0.41234})
    assert shown.line() == (
        "[stage logits] 1,234/5,678 batches (21.7%), 45.2 batches/s, eta 1m38s, loss 0.4123"
    )
    assert progress.duration(7325) == "2h02m" and progress.duration(3.24) == "3.2s"


def test_lines_before_the_log_opens_are_kept_and_nested_sessions_log_to_both(tmp_path, capsys):
    with session(quiet=True):
        info("before the log")
        warn("a warning")  # printed even when quiet
        log_to(tmp_path / "outer" / LOG_FILE)
        with session():
            log_to(tmp_path / "inner" / LOG_FILE)
            info("inside")
    captured = capsys.readouterr()
    assert captured.out == "inside\n" and captured.err == "warning: a warning\n"
    outer = (tmp_path / "outer" / LOG_FILE).read_text()
    assert outer.index("before the log") < outer.index("warning: a warning")
    assert outer.index("warning: a warning") < outer.index("inside")
    assert "inside" in (tmp_path / "inner" / LOG_FILE).read_text()
    assert "before the log" not in (tmp_path / "inner" / LOG_FILE).read_text()


def test_every_command_that_runs_a_model_takes_quiet(capsys):
    from lmshrink.cli import main

    commands = ["finetune", "distill", "prune", "quantize", "export", "shrink"]
    for command in [*commands, "evaluate", "bench"]:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--quiet" in capsys.readouterr().out, command
