"""Int8 with PyTorch and ONNX Runtime: scores and speed of each backend, the saved PyTorch
int8 form, ONNX Runtime's static int8 (predictions that do not depend on their batch, its
calibration on training examples), the choice of the best backend, CPU flags, and the CLI."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import torch  # noqa: E402
from conftest import FILLER  # noqa: E402
from test_export import models  # noqa: E402, F401  (the module-scoped model folders)

from lmshrink.cli import main  # noqa: E402
from lmshrink.compress.int8 import (  # noqa: E402
    agreement,
    batch_invariance,
    calibration_set,
    choose_best,
    onnx_int8_folder,
    outputs_in_order,
    quantize_torch,
    verdict,
)
from lmshrink.compress.onnx import OnnxClassifier, OnnxSettings, export_folder  # noqa: E402
from lmshrink.config import DataConfig  # noqa: E402
from lmshrink.errors import ModelError  # noqa: E402
from lmshrink.measure import machine  # noqa: E402
from lmshrink.quantize import QuantizeConfig, format_table, load_quantized, quantize  # noqa: E402

ALL = ["torch-fp32", "torch-int8", "onnx-fp32", "onnx-int8"]


def quantize_config(models, name, out, **settings) -> QuantizeConfig:  # noqa: F811
    fast = dict(speed_batch_sizes=[1, 8], speed_examples=16, rounds=1, progress=False)
    fast.update(settings)
    return QuantizeConfig(
        model=str(models[name]),
        out=str(out),
        onnx=OnnxSettings(parity_batch_sizes=[1, 7], parity_examples=16),
        data=DataConfig(task="sst2", data_dir=str(models["glue"]), max_length=32),
        **fast,
    )


def dev_batch(folder) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = ["a charming and lovely film", "dull", "the plot was boring and the cast weak"]
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


@pytest.mark.parametrize(
    ("name", "int8_op"), [("teacher", "MatMulInteger"), ("bilstm", "DynamicQuantizeLSTM")]
)
def test_quantize_scores_and_times_every_backend(models, tmp_path, name, int8_op):  # noqa: F811
    out = tmp_path / "int8"
    result = quantize(quantize_config(models, name, out, int8_modes=["dynamic"]))

    backends = result["backends"]
    assert list(backends) == ALL
    for backend, entry in backends.items():
        assert set(entry["metrics"]) == {"accuracy"}, backend
        assert entry["score"] == entry["metrics"]["accuracy"]
        assert entry["size_bytes"] > 0
        assert all(result["speed"]["per_second"][backend][bs] > 0 for bs in ("1", "8"))
    assert result["speed"]["ratio"]["torch-fp32"] == {"1": 1.0, "8": 1.0}
    assert backends["torch-fp32"]["max_abs_diff_to_fp32"] == 0.0
    # The fp32 export is the model; the int8 variants are close to it but really changed.
    assert backends["onnx-fp32"]["max_abs_diff_to_fp32"] < 1e-4
    assert backends["onnx-fp32"]["agreement_with_fp32"] == 1.0
    for backend in ("torch-int8", "onnx-int8"):
        assert 0 < backends[backend]["max_abs_diff_to_fp32"] < 0.5, backend
        assert backends[backend]["agreement_with_fp32"] >= 0.9, backend
    assert result["parity"]["passed"] and set(result["parity"]["by_batch_size"]) == {"1", "7"}

    assert set(result["best"]) == {"1", "8"} and set(result["best"].values()) <= set(ALL)
    assert result["verdict"].startswith(f"{result['best']['1']} is best on this CPU at batch 1")
    assert set(result["cpu"]["int8_flags"]) == set(machine.INT8_FLAGS)
    saved = json.loads((out / "quantize.json").read_text())
    assert saved == json.loads(json.dumps({k: v for k, v in result.items() if k != "out"}))

    ops = {node.op_type for node in onnx.load(out / "onnx-int8" / "model.onnx").graph.node}
    assert int8_op in ops
    assert backends["onnx-int8"]["size_bytes"] < backends["onnx-fp32"]["size_bytes"]
    meta = json.loads((out / "onnx-int8" / "export.json").read_text())
    assert meta["weights"].startswith("int8") and meta["labels"] == ["0", "1"]
    assert (out / "onnx-int8" / "tokenizer.json").is_file()

    # The saved PyTorch int8 model reloads without pickles, quantized, and deterministic.
    from lmshrink.data.tasks import get_task
    from lmshrink.models.loading import load_for_eval

    reloaded = load_quantized(out)  # the --out folder; its torch-int8/ is found
    kinds = {type(m).__module__ for m in reloaded.modules()}
    assert "torch.ao.nn.quantized.dynamic.modules.linear" in kinds
    if name == "bilstm":
        assert "torch.ao.nn.quantized.dynamic.modules.rnn" in kinds
    _, fp32 = load_for_eval(str(models[name]), get_task("sst2"))
    batch = dev_batch(models[name])
    with torch.inference_mode():
        again = quantize_torch(fp32)(**batch).logits
        assert torch.equal(load_quantized(out / "torch-int8")(**batch).logits, again)
        assert not torch.equal(fp32(**batch).logits, again)


# --- static int8: predictions that do not depend on their batch ------------------------


def sst2_rows(glue, split: str = "dev") -> list[tuple[str, int]]:
    """(sentence, label) rows of the tiny task's SST-2 file."""
    lines = (glue / "SST-2" / f"{split}.tsv").read_text().splitlines()[1:]
    return [(text, int(label)) for text, label in (line.split("\t") for line in lines)]


def ragged_dev(src):
    """The tiny dev sentences (all five words, so batches of them hold no padding), each
    lengthened by 0 to 9 filler words, encoded for the model: batches in this order hold
    real padding, as served batches do."""
    from lmshrink.data.batching import encode
    from lmshrink.data.splits import Split

    texts = [(lengthened(text, i),) for i, (text,) in enumerate(src.splits[0].texts)]
    return encode(src.tokenizer, Split("sst2", "dev", "ragged", texts, None), src.data.max_length)


def lengthened(text: str, i: int) -> str:
    return f"{text} {' '.join(FILLER[: (3 * i) % 10])}".strip()


@pytest.fixture(scope="module")
def int8_models(tiny_teacher, distilled_run, tmp_path_factory):
    """For the tiny teacher and the distilled BiLSTM: the model read as quantize reads it,
    its ONNX export, and the export in dynamic and static int8 (calibrated on 64 training
    examples)."""
    from lmshrink.models.sources import read_model

    root = tmp_path_factory.mktemp("int8-modes")
    data = DataConfig(task="sst2", data_dir=str(tiny_teacher["glue"]), max_length=32)
    built = {}
    for name, folder in (("teacher", tiny_teacher["teacher"]), ("bilstm", distilled_run["run"])):
        src = read_model(str(folder), data, seed=0)
        fp32, dynamic, static = (root / name / f for f in ("fp32", "dynamic", "static"))
        export_folder(src, fp32, OnnxSettings(parity_batch_sizes=[4], parity_examples=8))
        onnx_int8_folder(fp32, dynamic)
        onnx_int8_folder(fp32, static, "static", calibration_set(src, 64, seed=0))
        built[name] = {"src": src, "fp32": fp32, "dynamic": dynamic, "static": static}
    return built


@pytest.mark.parametrize("name", ["teacher", "bilstm"])
def test_static_int8_predictions_do_not_depend_on_the_batch(int8_models, name):
    built = int8_models[name]
    src, kind = built["src"], built["src"].task.kind
    enc = ragged_dev(src)
    assert len(set(enc.lengths)) >= 8  # batches in this order are padded
    static = OnnxClassifier.from_folder(built["static"])
    alone = outputs_in_order(static, enc, 1, kind)  # [48, 2]
    for bs in (8, 32):
        together = outputs_in_order(static, enc, bs, kind)
        assert np.array_equal(alone.argmax(axis=1), together.argmax(axis=1)), bs
        assert np.abs(alone - together).max() <= 1e-5, bs
    measured = batch_invariance(static, enc, kind)
    assert measured["changed"] == 0.0 and measured["max_abs_diff"] <= 1e-5
    assert measured["batch_sizes"] == [1, 32] and measured["examples"] == 48

    # Dynamic int8, measured the same way, moves with its batch: the measurement sees it.
    dynamic = batch_invariance(OnnxClassifier.from_folder(built["dynamic"]), enc, kind)
    print(
        f"{name}: dynamic int8 changes {100 * dynamic['changed']:.2f}% of predictions "
        f"between batch 1 and 32 (max |logit difference| {dynamic['max_abs_diff']:.2g})"
    )
    assert dynamic["max_abs_diff"] > 10 * max(measured["max_abs_diff"], 1e-6)

    # What was quantized: weights' MatMul/Gemm/Gather; a BiLSTM's LSTM stays fp32.
    notes = json.loads((built["static"] / "export.json").read_text())["int8"]
    ops = {node.op_type for node in onnx.load(built["static"] / "model.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert not ops & {"DynamicQuantizeLinear", "DynamicQuantizeLSTM", "MatMulInteger"}
    if name == "teacher":  # attention's activation-by-activation MatMuls stay fp32
        assert notes["quantized_nodes"] == {"Gather": 3, "Gemm": 2, "MatMul": 12}
        assert notes["fp32_nodes"] == {"MatMul": 4}
    else:
        assert set(notes["fp32_nodes"]) == {"LSTM"} and "LSTM" in ops
        assert set(notes["quantized_nodes"]) == {"Gather", "Gemm"}


@pytest.mark.parametrize("name", ["teacher", "bilstm"])
def test_static_int8_serves_raw_text_and_keeps_accuracy(int8_models, tiny_teacher, name):
    from lmshrink.measure.end_to_end import OnnxTextServer

    built = int8_models[name]
    rows = sst2_rows(tiny_teacher["glue"])
    texts, labels = [(t,) for t, _ in rows], np.array([label for _, label in rows])
    static, fp32 = OnnxTextServer(built["static"]), OnnxTextServer(built["fp32"])
    assert static.kind == "onnx-int8"
    served, reference = static.predict(texts), fp32.predict(texts)
    accuracy, fp32_accuracy = np.mean(served == labels), np.mean(reference == labels)
    assert fp32_accuracy >= 0.9  # a trained model: a margin against it means something
    assert accuracy >= fp32_accuracy - 2 / 48 and np.mean(served == reference) >= 0.95
    # The server pads each batch to its longest text: alone or together, the same labels.
    ragged = [(lengthened(t, i),) for i, (t,) in enumerate(texts)]
    alone = np.array([static.predict([t])[0] for t in ragged])
    assert np.array_equal(alone, static.predict(ragged))


def test_static_int8_calibrates_on_training_examples_only(int8_models, tmp_path, monkeypatch):
    import lmshrink.compress.int8 as int8
    import lmshrink.data.splits as splits

    src = int8_models["teacher"]["src"]
    glue = Path(src.data.data_dir)
    read, asked, fed = splits.read_split, [], []
    monkeypatch.setattr(
        splits, "read_split", lambda task, split, cfg: asked.append(split) or read(task, split, cfg)
    )

    class Recording(int8._Reader):  # what ONNX Runtime's calibration is fed
        def get_next(self):
            feed = super().get_next()
            if feed is not None:
                fed.append(feed)
            return feed

    monkeypatch.setattr(int8, "_Reader", Recording)
    calibration = calibration_set(src, 24, seed=3)
    onnx_int8_folder(int8_models["teacher"]["fp32"], tmp_path / "static", "static", calibration)

    assert asked == ["train"]
    split = calibration.split
    train = {(text,) for text, _ in sst2_rows(glue, "train")}
    assert split.name == "train" and split.source == str(glue / "SST-2" / "train.tsv")
    assert len(split) == 24 and set(split.texts) <= train
    # Fed: exactly those 24 texts, encoded, in batches of 8 with every graph input.
    assert [len(feed["input_ids"]) for feed in fed] == [8, 8, 8]
    assert all(set(feed) == {"input_ids", "attention_mask", "token_type_ids"} for feed in fed)
    rows = [
        [int(t) for t, m in zip(ids, mask, strict=True) if m]
        for feed in fed
        for ids, mask in zip(feed["input_ids"], feed["attention_mask"], strict=True)
    ]
    assert rows == src.tokenizer([t for (t,) in split.texts])["input_ids"]
    dev_only = {t for t, _ in sst2_rows(glue)} - {t for (t,) in train}
    assert dev_only and not any(src.tokenizer.encode(t) in rows for t in dev_only)
    saved = json.loads((tmp_path / "static" / "export.json").read_text())
    assert saved["weights"].startswith("int8 (") and "24 training examples" in saved["weights"]
    assert saved["int8"]["calibration"] == {
        "method": "MinMax",
        "split": "train",
        "source": str(glue / "SST-2" / "train.tsv"),
        "examples": 24,
        "batch_size": 8,
        "seed": 3,
    }
    assert "parity" not in saved  # that check was of the fp32 graph


def test_model_cards_name_the_int8_mode(int8_models):
    from lmshrink.reporting.cards import how_made

    built = int8_models["teacher"]
    for mode in ("dynamic", "static"):
        row = {"role": "variant", "backend": "onnx-int8", "path": str(built[mode]), "task": "sst2"}
        method = how_made(row, {})[0]
        assert method.startswith(f"- Method: {mode} int8 quantization of the ONNX export of `")


def test_quantize_builds_static_int8_beside_dynamic(models, tmp_path):  # noqa: F811
    out = tmp_path / "int8"
    cfg = quantize_config(models, "teacher", out, calibration_examples=32)
    assert cfg.int8_modes == ["dynamic", "static"]  # the default
    result = quantize(cfg)
    backends = result["backends"]
    assert list(backends) == [*ALL, "onnx-int8-static"]  # one interleaved timing of all five
    assert set(result["speed"]["per_second"]) == set(backends)
    moved = {n: b["batch_invariance"] for n, b in backends.items() if "batch_invariance" in b}
    assert set(moved) == {"onnx-int8", "onnx-int8-static"}
    assert moved["onnx-int8-static"]["changed"] == 0.0
    assert moved["onnx-int8-static"]["max_abs_diff"] <= 1e-5
    assert moved["onnx-int8"]["examples"] == 48 and moved["onnx-int8"]["batch_sizes"] == [1, 32]
    static = backends["onnx-int8-static"]
    assert static["agreement_with_fp32"] >= 0.9 and 0 < static["max_abs_diff_to_fp32"] < 0.5
    assert static["size_bytes"] < backends["onnx-fp32"]["size_bytes"]
    assert {p.name for p in out.iterdir()} >= {"onnx-int8", "onnx-int8-static"}
    notes = json.loads((out / "onnx-int8-static" / "export.json").read_text())["int8"]
    assert notes["mode"] == "static" and notes["calibration"]["examples"] == 32
    dynamic = json.loads((out / "onnx-int8" / "export.json").read_text())["int8"]
    assert dynamic["mode"] == "dynamic"
    table = format_table(result)
    assert "changed b=1 vs b=32" in table.splitlines()[0]
    row = next(line for line in table.splitlines() if line.startswith("onnx-int8-static"))
    assert row.rstrip().endswith("0.00%")
    torch_row = next(line for line in table.splitlines() if line.startswith("torch-int8"))
    assert torch_row.rstrip().endswith("-")


# --- resuming a killed run --------------------------------------------------------------


def kill_int8_build(fp32_folder, folder, *how):
    """A kill while onnx-int8/ is being written: half a folder, then Ctrl-C."""
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"half written")
    raise KeyboardInterrupt


def test_a_killed_quantize_resumes_without_redoing_work(models, tmp_path, monkeypatch):  # noqa: F811
    import lmshrink.measure.speed
    import lmshrink.quantize as q

    # (dynamic int8 only: the steps counted below)
    dynamic = {"int8_modes": ["dynamic"]}
    whole = quantize(quantize_config(models, "teacher", tmp_path / "whole", **dynamic))
    out, work = tmp_path / "int8", tmp_path / "int8.work"
    cfg = quantize_config(models, "teacher", out, **dynamic)
    calls: dict[str, int] = {}

    def count(name):
        real = getattr(q, name)

        def counted(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return real(*args, **kwargs)

        monkeypatch.setattr(q, name, counted)

    # 1. killed while building onnx-int8/: the finished folders stay, --out does not appear
    real_int8 = q.onnx_int8_folder
    monkeypatch.setattr(q, "onnx_int8_folder", kill_int8_build)
    with pytest.raises(KeyboardInterrupt):
        quantize(cfg)
    assert not out.exists()
    kept = ["config.yaml", "lmshrink.log", "onnx-fp32", "torch-int8"]
    assert sorted(p.name for p in work.iterdir()) == [".onnx-int8.partial", *kept]
    files = {"torch-int8": "model.safetensors", "onnx-fp32": "model.onnx"}
    mtimes = {name: (work / name / f).stat().st_mtime_ns for name, f in files.items()}

    # 2. resumed, then killed while timing: every dev score is saved by then
    monkeypatch.setattr(q, "onnx_int8_folder", real_int8)
    for name in ("save_torch_int8", "export_folder", "onnx_int8_folder", "predict_and_score"):
        count(name)
    real_speed = lmshrink.measure.speed.measure_speed

    def killed_speed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lmshrink.measure.speed, "measure_speed", killed_speed)
    cfg.resume = True
    with pytest.raises(KeyboardInterrupt):
        quantize(cfg)
    assert calls == {"onnx_int8_folder": 1, "predict_and_score": 4}  # nothing else rebuilt
    assert not out.exists()
    assert sorted(p.name for p in work.iterdir()) == sorted(
        [*kept, "onnx-int8", "reference.npz", "scores.json"]
    )
    assert list(json.loads((work / "scores.json").read_text())) == ALL

    # 3. resumed again: no variant is built or scored again, all four are timed, and --out
    # appears only after the timing
    timed = []

    def speed(variants, **kwargs):
        assert not out.exists()
        timed.append(list(variants))
        return real_speed(variants, **kwargs)

    monkeypatch.setattr(lmshrink.measure.speed, "measure_speed", speed)
    calls.clear()
    result = quantize(cfg)
    assert calls == {} and timed == [ALL]
    assert not work.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["int8", "whole"]
    assert {name: (out / name / f).stat().st_mtime_ns for name, f in files.items()} == mtimes
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["lmshrink.log", "onnx-fp32", "onnx-int8", "quantize.json", "torch-int8"]
    )
    assert result["backends"] == whole["backends"]  # scores, agreement, sizes: all the same
    saved, reference = (
        json.loads((folder / "quantize.json").read_text()) for folder in (out, tmp_path / "whole")
    )
    timing = ("speed", "best", "verdict")
    assert {k: v for k, v in saved.items() if k not in timing} == {
        k: v for k, v in reference.items() if k not in timing
    }
    assert set(saved["speed"]["per_second"]) == set(ALL)
    log = (out / "lmshrink.log").read_text()
    assert f"resuming {work}: keeping torch-int8, onnx-fp32\n" in log  # all three runs'
    assert f"resuming {work}: keeping torch-int8, onnx-fp32, onnx-int8\n" in log


def test_quantize_resume_on_the_command_line(models, tmp_path, monkeypatch, capsys):  # noqa: F811
    import lmshrink.quantize as q

    out, work = tmp_path / "int8", tmp_path / "int8.work"
    argv = [
        "quantize", str(models["teacher"]), "--task", "sst2", "--data-dir", str(models["glue"]),
        "--max-length", "32", "--parity-examples", "16", "--speed-examples", "8", "--rounds", "1",
        "--speed-batch-sizes", "1", "--int8-modes", "dynamic", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    monkeypatch.setattr(q, "onnx_int8_folder", kill_int8_build)
    assert main(argv) == 130
    capsys.readouterr()
    assert not out.exists() and (work / "onnx-fp32" / "model.onnx").is_file()
    monkeypatch.undo()

    for extra, message in [
        ([], f"{work}: an unfinished run of {out} is kept there; pass --resume to continue it, "),
        (["--resume", "--max-drop", "0.01"], "but max_drop differ from its config.yaml"),
    ]:
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {work}: ") and message in err, err
    assert not out.exists() and (work / "onnx-fp32" / "model.onnx").is_file()

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(q, "write_json", full)  # the disk fills as quantize.json is written
    assert main([*argv, "--resume"]) == 2
    captured = capsys.readouterr()
    assert f"resuming {work}: keeping torch-int8, onnx-fp32\n" in captured.out
    assert captured.err == (
        f"error: {out}: cannot be written (the disk is full); free some disk space or choose "
        "another --out; nothing was written.\n"
    )
    assert not out.exists()  # the work folder keeps every variant and score
    assert {"onnx-int8", "scores.json"} <= {p.name for p in work.iterdir()}
    monkeypatch.undo()

    assert main([*argv, "--resume"]) == 0
    stdout = capsys.readouterr().out
    assert f"resuming {work}: keeping torch-int8, onnx-fp32, onnx-int8\n" in stdout
    assert f"saved {out}" in stdout and "onnx-int8" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"]
    assert main([*argv, "--resume", "--overwrite"]) == 2  # finished: nothing to resume
    assert "no run to resume" in capsys.readouterr().err


def test_quantize_help_lists_its_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["quantize", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    flags = ("--backends", "--max-drop", "--speed-batch-sizes", "--tolerance", "--data-dir")
    for flag in (*flags, "--resume", "--int8-modes", "--calibration-examples"):
        assert flag in out


def test_torch_only_from_the_command_line(models, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "int8"
    base = ["quantize", str(models["teacher"]), "--task", "sst2", "--data-dir", str(models["glue"])]
    fast = ["--speed-examples", "8", "--rounds", "1", "--speed-batch-sizes", "1"]
    argv = [*base, *fast, "--backends", "torch", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "torch-int8" in stdout and "onnx" not in stdout.split("cpu:")[0]
    assert "is best on this CPU at batch 1" in stdout and f"saved {out}" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["lmshrink.log", "quantize.json", "torch-int8"]

    for extra, message in [
        (["--out", str(out)], "already holds another run"),
        (["--backends", "tensorrt", "--out", str(tmp_path / "x")], "--backends tensorrt"),
        (["--speed-batch-sizes", "0", "--out", str(tmp_path / "y")], "--speed-batch-sizes"),
        (["--batch-size", "8", "--out", str(tmp_path / "z")], "--batch-size is now --eval-batch"),
        (["--int8-modes", "qat", "--out", str(tmp_path / "m")], "--int8-modes qat: use one"),
        (
            ["--backends", "torch", "--int8-modes", "static", "--out", str(tmp_path / "s")],
            "static int8 is ONNX Runtime's; add onnx to --backends",
        ),
        (["--calibration-examples", "0", "--out", str(tmp_path / "c")], "--calibration-examples"),
    ]:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"]


def test_load_quantized_refuses_other_folders(models, tmp_path):  # noqa: F811
    with pytest.raises(ModelError, match="not a PyTorch int8 folder"):
        load_quantized(models["teacher"])
    (tmp_path / "quantization.json").write_text(json.dumps({"format": "pickle"}))
    with pytest.raises(ModelError, match="format 'pickle'"):
        load_quantized(tmp_path)


def test_load_quantized_is_public_where_readme_says():
    import lmshrink.compress.int8
    import lmshrink.quantize

    assert lmshrink.quantize.load_quantized is lmshrink.compress.int8.load_quantized


def test_agreement_asks_the_task_kind():
    """Classes agree when the argmax does; regression scores when within 0.05 (the
    regression kind's agreement tolerance), whatever the other columns hold."""
    import numpy as np

    from lmshrink.data.task_kinds import REGRESSION, SEQUENCE_CLASSIFICATION

    ref = np.array([[2.0, 0.0], [0.0, 1.0], [0.3, 0.2], [1.0, 5.0]], dtype=np.float32)
    out = np.array([[2.03, 0.0], [0.0, -1.0], [0.2, 0.3], [1.04, 9.0]], dtype=np.float32)
    assert agreement(ref, out, SEQUENCE_CLASSIFICATION) == 0.5  # rows 0 and 3
    assert agreement(ref, out, REGRESSION) == 0.75  # column 0 within 0.05: all but row 2
    assert REGRESSION.agreement_tolerance == 0.05


# --- choosing the best backend ----------------------------------------------------------


def fake_result(
    speed: dict[str, float], score: dict[str, float], flags: dict[str, bool], slack: float = 0.0
):
    """A quantize result with given batch-1 speeds and dev scores per backend."""
    result = {
        "backends": {name: {"score": score[name]} for name in speed},
        "speed": {
            "batch_sizes": [1],
            "per_second": {name: {"1": v} for name, v in speed.items()},
            "ratio": {name: {"1": v / speed["torch-fp32"]} for name, v in speed.items()},
        },
        "cpu": {"model": "Test CPU", "int8_flags": flags},
    }
    result["best"] = choose_best(result, max_drop=0.005, invariant_slack=slack)
    return result


NO_VNNI = {"avx2": True, "avx512f": False, "avx512_vnni": False, "avx_vnni": False}
VNNI = {**NO_VNNI, "avx512f": True, "avx512_vnni": True}
SAME = dict.fromkeys(ALL, 0.9)


def test_int8_best_when_fastest_and_accurate():
    result = fake_result(
        {"torch-fp32": 10, "torch-int8": 12, "onnx-fp32": 20, "onnx-int8": 40}, SAME, NO_VNNI
    )
    assert result["best"] == {"1": "onnx-int8"}
    text = verdict(result, 0.005)
    assert text.startswith("onnx-int8 is best on this CPU at batch 1: 4.00x the speed")
    assert "fp32 wins" not in text


@pytest.mark.parametrize(
    ("flags", "why"), [(NO_VNNI, "without VNNI or AMX"), (VNNI, "dot-product")]
)
def test_fp32_best_says_so_with_the_cpu_flags(flags, why):
    result = fake_result(
        {"torch-fp32": 10, "torch-int8": 8, "onnx-fp32": 20, "onnx-int8": 15}, SAME, flags
    )
    assert result["best"] == {"1": "onnx-fp32"}
    text = verdict(result, 0.005)
    assert "fp32 wins: int8 did not pay off on this CPU (Test CPU;" in text
    assert f"avx512_vnni {'yes' if flags['avx512_vnni'] else 'no'}" in text and why in text


@pytest.mark.parametrize(
    ("static", "slack", "best"),
    [(36, 0.15, "onnx-int8-static"), (36, 0.0, "onnx-int8"), (30, 0.15, "onnx-int8")],
)
def test_batch_invariant_int8_is_best_when_it_costs_little(static, slack, best):
    # dynamic int8 40/s; static int8 36/s (dynamic 1.11x as fast) or 30/s (1.33x)
    speed = {"torch-fp32": 10, "torch-int8": 12, "onnx-fp32": 20, "onnx-int8": 40}
    result = fake_result(
        {**speed, "onnx-int8-static": static},
        {**SAME, "onnx-int8-static": 0.9},
        NO_VNNI,
        slack,
    )
    assert result["best"] == {"1": best}
    text = verdict(result, 0.005)
    assert text.startswith(f"{best} is best on this CPU at batch 1")
    passed_over = best == "onnx-int8-static"
    assert ("onnx-int8 is 1.11x as fast, but its predictions can change" in text) == passed_over


def test_fp32_within_the_slack_is_best_and_the_verdict_says_why():
    result = fake_result(
        {"torch-fp32": 10, "torch-int8": 12, "onnx-fp32": 20, "onnx-int8": 22}, SAME, VNNI, 0.15
    )
    assert result["best"] == {"1": "onnx-fp32"}
    text = verdict(result, 0.005)
    assert "onnx-int8 is 1.10x as fast, but its predictions can change" in text
    assert "lose more than" not in text and "did not pay off" not in text


def test_a_fast_int8_backend_that_loses_accuracy_is_not_best():
    scores = {**SAME, "onnx-int8": 0.88}  # two points lost; torch-int8 loses 0.4 (allowed)
    scores["torch-int8"] = 0.896
    result = fake_result(
        {"torch-fp32": 10, "torch-int8": 9, "onnx-fp32": 20, "onnx-int8": 40}, scores, NO_VNNI
    )
    assert result["best"] == {"1": "onnx-fp32"}
    assert "faster int8 backends (onnx-int8) lose more than 0.50 points" in verdict(result, 0.005)


# --- CPU flags --------------------------------------------------------------------------


def test_int8_flags_come_from_cpuinfo(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni amx_tile\n")
    real_open = open
    monkeypatch.setattr(
        machine, "open", lambda path, *a, **k: real_open(cpuinfo, *a, **k), raising=False
    )
    assert machine.int8_flags() == {
        "avx2": True,
        "avx512f": True,
        "avx512_vnni": True,
        "avx_vnni": False,
        "amx_tile": True,
        "amx_int8": False,
    }

    def unreadable(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(machine, "open", unreadable, raising=False)
    assert machine.cpu_flags() == set()
    assert not any(machine.int8_flags().values())
