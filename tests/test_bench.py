"""`lmshrink bench`: models of every kind timed and scored side by side, ratios to the first,
and the errors for folders it cannot bench."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmshrink.cli import main
from lmshrink.config import DataConfig
from lmshrink.data.batching import Encoded
from lmshrink.measure.speed import measure_speed

SPEED = ["--speed-examples", "12", "--rounds", "2", "--max-length", "32"]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def onnx_student(distilled_run, tmp_path_factory) -> Path:
    """The distilled BiLSTM student exported to ONNX (fp32)."""
    pytest.importorskip("onnxruntime")
    from lmshrink.export import ExportConfig, export

    out = tmp_path_factory.mktemp("bench") / "onnx"
    data = DataConfig(data_dir=str(distilled_run["glue"]), max_length=32)
    export(ExportConfig(model=str(distilled_run["run"]), out=str(out), data=data))
    return out


def evaluated(folder: Path, glue: Path) -> dict:
    from lmshrink.evaluate import EvaluateConfig, evaluate

    data = DataConfig(data_dir=str(glue), max_length=32)
    return evaluate(EvaluateConfig(model=str(folder), progress=False, data=data))


def test_bench_teacher_student_and_onnx(distilled_run, onnx_student, tmp_path, capsys):
    teacher, student, glue = distilled_run["teacher"], distilled_run["run"], distilled_run["glue"]
    out = tmp_path / "bench.json"
    argv = ["bench", teacher, student, onnx_student, "--data-dir", glue, "--json", out, *SPEED]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["task"] == "sst2" and result["examples"] == 48  # task from the teacher
    assert result["reference"] == str(teacher) and result["threads"] >= 1
    assert result["cpu"]["model"] and isinstance(result["cpu"]["flags"], list)
    t, s, o = result["models"]
    assert [m["kind"] for m in result["models"]] == ["torch-fp32", "torch-fp32", "onnx-fp32"]
    for m in result["models"]:
        assert 0 < m["latency_ms"]["p50"] <= m["latency_ms"]["p95"]
        assert set(m["per_second"]) == {"1", "32"} and m["per_second"]["32"] > 0
        assert result["speed"]["latency_ms"][m["name"]]["1"]["calls"] == 12 * 2
    assert t["ratio"]["latency_p50"] == 1.0 and t["ratio"]["per_second"] == {"1": 1.0, "32": 1.0}
    assert s["ratio"]["latency_p50"] == pytest.approx(
        t["latency_ms"]["p50"] / s["latency_ms"]["p50"]
    )
    assert s["ratio"]["parameters"] == pytest.approx(t["parameters"] / s["parameters"])
    # The dev metric, parameters and size are the ones lmshrink evaluate gives.
    for entry, folder in ((t, teacher), (s, student)):
        scored = evaluated(folder, glue)
        assert entry["metrics"] == scored["metrics"] and entry["score"] == scored["score"]
        assert entry["parameters"] == scored["parameters"]
        assert entry["size_bytes"] == scored["size_bytes"]
    assert s["path"] == str((student / "model").resolve())
    # ONNX: same predictions as the student it was exported from; weights counted from the graph.
    assert o["metrics"] == s["metrics"]
    assert o["parameters_source"] == "onnx initializers"
    assert s["parameters"] <= o["parameters"] < 2 * s["parameters"]
    assert "ratios (x) against" in stdout and "onnx-fp32" in stdout
    assert f"wrote {out}" in stdout


def test_bench_torch_int8_folder(distilled_run, tmp_path, capsys):
    from lmshrink.data.tasks import get_task
    from lmshrink.models.loading import load_for_eval
    from lmshrink.quantize import save_torch_int8

    teacher = str(distilled_run["teacher"])
    tokenizer, model = load_for_eval(teacher, get_task("sst2"))
    save_torch_int8(teacher, model, tokenizer, tmp_path / "torch-int8")
    out = tmp_path / "b.json"
    argv = ["bench", teacher, tmp_path / "torch-int8", "--data-dir", distilled_run["glue"]]
    code, _, err = run([*argv, "--json", out, "--batch-sizes", "1", *SPEED], capsys)
    assert code == 0, err
    fp32, int8 = json.loads(out.read_text())["models"]
    assert int8["kind"] == "torch-int8" and int8["parameters"] == fp32["parameters"]
    assert int8["disk_bytes"] == fp32["disk_bytes"]  # the folder stores fp32 weights
    assert int8["size_bytes"] != int8["disk_bytes"]  # the int8 state, serialized
    assert 0 < int8["latency_ms"]["p50"] <= int8["latency_ms"]["p95"]


def test_measure_speed_counts_latency_per_call_and_real_examples():
    import torch

    calls = []

    class Model:
        def eval(self):
            return self

        def __call__(self, input_ids, attention_mask):
            calls.append(input_ids.shape)
            return torch.zeros(input_ids.shape[0], 2)

    features = {"input_ids": [[1, 2, 3]] * 5, "attention_mask": [[1, 1, 1]] * 5}
    enc = Encoded(features, None, 0)
    result = measure_speed({"a": (Model(), enc), "b": (Model(), enc)}, (1, 4), {1: 3, 4: 50}, 2)
    latency = result["latency_ms"]
    assert latency["a"]["1"]["calls"] == 3 * 2  # 3 examples, 2 rounds
    assert latency["b"]["4"]["calls"] == 2 * 2  # 5 examples (limit 50) in batches of 4
    assert latency["a"]["1"]["p50"] <= latency["a"]["1"]["p95"]
    assert result["examples"] == {"1": 3, "4": 5} and result["ratio"]["a"] == {"1": 1.0, "4": 1.0}
    assert set(result) >= {"batch_sizes", "rounds", "examples", "per_second", "ratio"}


def test_bench_help_takes_several_models(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "MODELS [MODELS ...]" in out and "--speed-examples" in out and "--json" in out


def test_bench_refuses_what_it_cannot_bench(distilled_run, tmp_path, capsys):
    glue = distilled_run["glue"]
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("x")
    quantized = tmp_path / "quantized"
    (quantized / "onnx-int8").mkdir(parents=True)
    (quantized / "quantize.json").write_text("{}")
    cases = [
        (tmp_path / "missing", "model folder does not exist"),
        (stray, "neither a model folder (config.json), a run folder (model/)"),
        (quantized, "is the output of lmshrink quantize"),
    ]
    for folder, expected in cases:
        argv = ["bench", distilled_run["teacher"], folder, "--data-dir", glue, *SPEED]
        code, out, err = run(argv, capsys)
        assert code == 2, folder
        assert err.startswith(f"error: {folder}: ") and expected in err, err
        assert "Traceback" not in err and out == ""
    code, _, err = run(["bench", distilled_run["teacher"], "--task", "cola", *SPEED], capsys)
    assert code == 2 and "made for task sst2, not cola" in err
