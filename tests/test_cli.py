"""The command line: help texts, and the error contract (one line, exit status 2)."""

import os
import subprocess
import sys

import pytest
from conftest import STSB_HEADER, write_tsv

from lmshrink.cli import main


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", ["finetune", "evaluate", "distill", "export", "quantize"])
def test_each_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--task" in out and "--data-dir" in out and "--set KEY=VALUE" in out


def help_flags(command: str, capsys) -> set[str]:
    import re

    with pytest.raises(SystemExit):
        main([command, "--help"])
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", capsys.readouterr().out))


def test_run_settings_flags_where_a_command_uses_them(capsys):
    """--threads on every command that runs a model; --out/--overwrite where a command
    writes a folder; no flag a command would ignore (report runs no model)."""
    for command in ("evaluate", "bench"):
        flags = help_flags(command, capsys)
        assert {"--seed", "--progress", "--threads", "--eval-batch-size"} <= flags, command
        assert not {"--out", "--overwrite", "--batch-size"} & flags, command
    for command in ("export", "quantize"):
        flags = help_flags(command, capsys)
        assert {"--out", "--overwrite", "--seed", "--progress", "--threads"} <= flags, command
    assert "--eval-batch-size" in help_flags("quantize", capsys)
    report = help_flags("report", capsys)
    assert {"--out", "--overwrite", "--bench", "--cards"} <= report
    assert not {"--seed", "--progress", "--threads"} & report


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "finetune" in out and "evaluate" in out


def test_finetune_and_evaluate_from_the_command_line(tiny_encoder, sst2_dir, tmp_path, capsys):
    out = tmp_path / "t"
    code, stdout, err = run(
        [
            "finetune",
            "--task",
            "sst2",
            "--model",
            tiny_encoder,
            "--data-dir",
            sst2_dir,
            "--out",
            out,
            "--epochs",
            "5",
            "--lr",
            "4e-3",
            "--batch-size",
            "16",
            "--no-progress",
            "--set",
            "data.max_length=32",
        ],
        capsys,
    )
    assert code == 0, err
    assert f"saved {out}" in stdout
    code, stdout, err = run(
        ["evaluate", out, "--data-dir", sst2_dir, "--no-progress", "--json", tmp_path / "e.json"],
        capsys,
    )
    assert code == 0, err
    assert "accuracy" in stdout and (tmp_path / "e.json").is_file()


def test_config_file_with_flag_precedence(tiny_encoder, sst2_dir, tmp_path, capsys):
    (tmp_path / "run.yaml").write_text(
        f"model: {tiny_encoder}\ndata: {{task: sst2, data_dir: {sst2_dir}}}\n"
        "progress: false\ntrain: {epochs: 1, lr: 4.0e-3}\n"
    )
    out = tmp_path / "t"
    code, _, err = run(
        ["finetune", "--config", tmp_path / "run.yaml", "--out", out, "--epochs", "2"], capsys
    )
    assert code == 0, err
    saved = (out / "config.yaml").read_text()
    assert "epochs: 2.0" in saved and f"model: {tiny_encoder}" in saved


def _bad_inputs(tiny_encoder, sst2_dir, tmp_path):
    """(name, argv, expected message part) for each bad input of the foundation issue."""
    base = ["finetune", "--model", tiny_encoder, "--out", tmp_path / "o", "--no-progress"]
    data = ["--task", "sst2", "--data-dir", sst2_dir]
    bad_label = write_tsv(
        tmp_path / "bl" / "SST-2" / "train.tsv",
        ["sentence", "label"],
        [["good", "1"], ["bad", "neg"]],
    )
    write_tsv(tmp_path / "bl" / "SST-2" / "dev.tsv", ["sentence", "label"], [["good", "1"]])
    wrong_cols = write_tsv(
        tmp_path / "wc" / "SST-2" / "train.tsv", ["text", "label"], [["good", "1"]]
    )
    empty = write_tsv(tmp_path / "em" / "SST-2" / "train.tsv", ["sentence", "label"], [])
    write_tsv(
        tmp_path / "nn" / "STS-B" / "train.tsv",
        STSB_HEADER,
        [["0", "g", "f", "y", "0", "n", "n", "a", "b", "n/a"]],
    )
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("x")
    mnli_model = tmp_path / "mnli-model"
    from lmshrink.data.tasks import get_task
    from lmshrink.models.loading import load_for_training

    _, m = load_for_training(str(tiny_encoder), get_task("mnli"))
    m.save_pretrained(mnli_model)
    return [
        (
            "missing data folder",
            base + ["--task", "sst2", "--data-dir", tmp_path / "nope"],
            "does not exist",
        ),
        (
            "missing file",
            base + ["--task", "rte", "--data-dir", sst2_dir],
            "RTE/train.tsv: file not found",
        ),
        (
            "wrong columns",
            base + ["--task", "sst2", "--data-dir", wrong_cols.parents[1]],
            "line 1: missing column(s) ['sentence']",
        ),
        (
            "unknown label",
            base + ["--task", "sst2", "--data-dir", bad_label.parents[1]],
            "line 3: label 'neg' is not in the task's label set",
        ),
        (
            "empty split",
            base + ["--task", "sst2", "--data-dir", empty.parents[1]],
            "has no examples",
        ),
        (
            "non-numeric target",
            base + ["--task", "stsb", "--data-dir", tmp_path / "nn"],
            "regression target 'n/a'",
        ),
        (
            "missing model folder",
            ["finetune", "--model", tmp_path / "no-model", "--out", tmp_path / "o"] + data,
            "model folder does not exist",
        ),
        (
            "wrong number of labels",
            ["evaluate", mnli_model] + data,
            "has 3 output(s) but task sst2 needs 2 labels",
        ),
        (
            "out holds another run",
            ["finetune", "--model", tiny_encoder, "--out", occupied] + data,
            "already holds another run",
        ),
        ("unknown task", base + ["--task", "sst3"], "unknown task 'sst3'"),
        ("unknown override", base + data + ["--set", "train.lrr=1"], "unknown config key"),
        ("bad number", base + data + ["--epochs", "two"], "takes a number"),
    ]


def test_every_bad_input_gives_one_clean_error_line(tiny_encoder, sst2_dir, tmp_path, capsys):
    for name, argv, expected in _bad_inputs(tiny_encoder, sst2_dir, tmp_path):
        code, out, err = run(argv, capsys)
        assert code == 2, name
        lines = err.strip().splitlines()
        assert lines[-1].startswith("error: ") and expected in lines[-1], (name, err)
        assert "Traceback" not in err, name
    assert (tmp_path / "occupied" / "keep.txt").read_text() == "x"
    assert not (tmp_path / "o").exists()


def test_error_exit_status_from_a_real_process(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "lmshrink", "evaluate", tmp_path / "missing", "--task", "sst2"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: {tmp_path / 'missing'}: model folder does not exist;"
        " check the path (or run lmshrink finetune to create it)."
    )


def test_import_is_fast_and_light():
    code = "import sys, lmshrink; print('torch' in sys.modules, 'transformers' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "False False"


def test_public_api_names_resolve_and_never_collide_with_submodules():
    import pkgutil

    import lmshrink
    import lmshrink.distill  # noqa: F401  (binds a submodule attribute, as any import does)

    submodules = {m.name for m in pkgutil.iter_modules(lmshrink.__path__)}
    assert not set(lmshrink.__all__) & submodules
    for name in lmshrink.__all__:
        assert getattr(lmshrink, name) is not None, name
    from lmshrink.distill import DistillConfig

    assert lmshrink.DistillConfig is DistillConfig
