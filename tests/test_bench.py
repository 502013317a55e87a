"""`lmshrink bench`: models of every kind timed and scored side by side, ratios to the first,
and the errors for folders it cannot bench."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmshrink.cli import main
from lmshrink.config import DataConfig

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
    assert result["timing"] == "model-only" and "timing: model-only" in stdout
    assert result["reference"] == str(teacher) and result["threads"] >= 1
    assert result["cpu"]["model"] and isinstance(result["cpu"]["flags"], list)
    t, s, o = result["models"]
    assert [m["kind"] for m in result["models"]] == ["torch-fp32", "torch-fp32", "onnx-fp32"]
    for m in result["models"]:
        timed = result["speed"]["latency_ms"][m["name"]]["1"]
        assert timed["calls"] == 12 * 2  # 12 examples at batch size 1, 2 rounds
        assert m["latency_ms"] == {"p50": timed["p50"], "p95": timed["p95"]}
        assert m["per_second"] == result["speed"]["per_second"][m["name"]]
        assert set(m["per_second"]) == {"1", "32"}
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
    from lmshrink.compress.int8 import load_quantized, save_torch_int8
    from lmshrink.data.batching import encode
    from lmshrink.data.splits import read_split
    from lmshrink.data.tasks import get_task
    from lmshrink.measure.scoring import split_metrics
    from lmshrink.models.loading import load_for_eval
    from lmshrink.training.inference import predict

    teacher = str(distilled_run["teacher"])
    tokenizer, model = load_for_eval(teacher, get_task("sst2"))
    save_torch_int8(teacher, model, tokenizer, tmp_path / "torch-int8")
    out = tmp_path / "b.json"
    argv = ["bench", teacher, tmp_path / "torch-int8", "--data-dir", distilled_run["glue"]]
    code, _, err = run([*argv, "--json", out, "--speed-batch-sizes", "1", *SPEED], capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    fp32, int8 = result["models"]
    assert int8["kind"] == "torch-int8" and int8["parameters"] == fp32["parameters"]
    assert int8["disk_bytes"] == fp32["disk_bytes"]  # the folder stores fp32 weights
    assert int8["size_bytes"] != int8["disk_bytes"]  # the int8 state, serialized
    assert result["speed"]["latency_ms"][int8["name"]]["1"]["calls"] == 12 * 2
    assert set(int8["per_second"]) == {"1"}  # --speed-batch-sizes 1
    # The int8 model was scored as served: its dev predictions are those of load_quantized.
    split = read_split(get_task("sst2"), "dev", DataConfig(data_dir=str(distilled_run["glue"])))
    # (in bench's batches: dynamic int8 quantizes each batch's activations as a whole)
    outputs = predict(load_quantized(tmp_path / "torch-int8"), encode(tokenizer, split, 32), 128)
    assert int8["metrics"] == split_metrics(get_task("sst2"), outputs, split)


def test_bench_help_takes_several_models(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "MODELS [MODELS ...]" in out and "--speed-examples" in out and "--json" in out
    assert "--speed-batch-sizes" in out and "--eval-batch-size" in out and "--threads" in out
    assert "--batch-size " not in out and "--out" not in out  # renamed; bench writes no folder


def test_bench_old_flags_name_their_new_ones(distilled_run, capsys):
    teacher = distilled_run["teacher"]
    renamed = (("--batch-sizes", "--speed-batch-sizes"), ("--batch-size", "--eval-batch-size"))
    for old, new in renamed:
        code, out, err = run(["bench", teacher, old, "1"], capsys)
        assert code == 2, old
        assert err == f"error: {old} is now {new}; rename it (the value is the same).\n"
        assert "Traceback" not in err and out == ""


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


def test_a_json_path_that_is_a_folder_fails_before_any_model_loads(tmp_path):
    from lmshrink.bench import BenchConfig
    from lmshrink.errors import ConfigError

    with pytest.raises(ConfigError, match="is a folder; pass a file path"):
        BenchConfig(models=["anything"], json=str(tmp_path)).check()


# --- --end-to-end -----------------------------------------------------------------------


def test_bench_end_to_end_refuses_a_folder_that_is_not_onnx(distilled_run, onnx_student, capsys):
    teacher, glue = distilled_run["teacher"], distilled_run["glue"]
    argv = ["bench", onnx_student, teacher, "--end-to-end", "--data-dir", glue, *SPEED]
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert (
        err.startswith(f"error: {teacher}: is a torch-fp32 model folder") and "Traceback" not in err
    )
    assert f"lmshrink export {teacher} --out" in err and err.count("\n") == 1


def test_bench_end_to_end_serves_raw_dev_texts(
    distilled_run, onnx_student, tmp_path, capsys, monkeypatch
):
    """Each ONNX folder is served from the raw dev strings (in dev order, every model the same
    texts) by `OnnxTextServer`; scores are those of the model-only bench."""
    from lmshrink.compress.int8 import onnx_int8_folder
    from lmshrink.data.splits import read_split
    from lmshrink.data.tasks import get_task
    from lmshrink.measure.end_to_end import OnnxTextServer

    glue = distilled_run["glue"]
    int8 = tmp_path / "onnx-int8"
    onnx_int8_folder(onnx_student, int8)
    calls: dict[str, list[list[tuple[str, ...]]]] = {}
    served = OnnxTextServer.predict

    def spy(self, texts):
        calls.setdefault(self.name, []).append(list(texts))
        return served(self, texts)

    monkeypatch.setattr(OnnxTextServer, "predict", spy)
    out = tmp_path / "e2e.json"
    argv = ["bench", onnx_student, int8, "--end-to-end", "--data-dir", glue, "--json", out]
    code, stdout, err = run([*argv, *SPEED], capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["timing"] == "end-to-end" and "timing: end-to-end" in stdout
    assert [m["kind"] for m in result["models"]] == ["onnx-fp32", "onnx-int8"]
    texts = read_split(get_task("sst2"), "dev", DataConfig(data_dir=str(glue))).texts
    # batch size 1: warm-up on 4 texts, then 2 rounds of the first 12; batch size 32: one
    # batch of those 12, for the warm-up and each round
    ones = [[t] for t in texts[:4] + texts[:12] * 2]
    assert calls[str(onnx_student)] == calls[str(int8)] == ones + [texts[:12]] * 3
    for m in result["models"]:
        timed = result["speed"]["latency_ms"][m["name"]]
        assert timed["1"]["calls"] == 12 * 2 and timed["32"]["calls"] == 2
        assert m["latency_ms"] == {"p50": timed["1"]["p50"], "p95": timed["1"]["p95"]}
    monkeypatch.undo()
    code, _, err = run(["bench", onnx_student, "--data-dir", glue, "--json", out, *SPEED], capsys)
    assert code == 0, err
    assert json.loads(out.read_text())["models"][0]["metrics"] == result["models"][0]["metrics"]


def test_end_to_end_serves_a_token_task_its_sentences_as_raw_text():
    from lmshrink.bench import _raw_texts
    from lmshrink.data.ner import TokenSplit
    from lmshrink.data.splits import Split

    words = TokenSplit("wikiann", "dev", "dev.tsv", [["Paris", "is", "nice", "."]], [[5, 0, 0, 0]])
    assert _raw_texts(words) == [("Paris is nice .",)]
    pairs = Split("rte", "dev", "dev.tsv", [("a", "b"), ("c", "d")], [0, 1])
    assert _raw_texts(pairs) == [("a", "b"), ("c", "d")]
