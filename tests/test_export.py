"""ONNX export: every model kind, parity with PyTorch, the failure path, the CLI, and the
README's serving example run without lmshrink."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from conftest import make_sentences, tiny_finetune_config, write_tsv  # noqa: E402

from lmshrink.cli import main  # noqa: E402
from lmshrink.compress.onnx import (  # noqa: E402
    OnnxClassifier,
    OnnxSettings,
    ParityError,
    check_parity,
    export_onnx,
)
from lmshrink.config import DataConfig  # noqa: E402
from lmshrink.data.task_kinds import REGRESSION, SEQUENCE_CLASSIFICATION  # noqa: E402
from lmshrink.errors import ConfigError  # noqa: E402
from lmshrink.export import ExportConfig, export  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"


def glue_folder(root: Path) -> Path:
    """SST-2 (train 160, dev 48) and an RTE dev set of 24 sentence pairs."""
    glue = root / "glue"
    for split, n, seed in (("train", 160, 1), ("dev", 48, 2)):
        rows = [list(r) for r in make_sentences(n, seed=seed)]
        write_tsv(glue / "SST-2" / f"{split}.tsv", ["sentence", "label"], rows)
    firsts, seconds = make_sentences(24, seed=3), make_sentences(24, seed=4)
    pairs = [
        [str(i), a, b, "entailment" if int(la) == int(lb) else "not_entailment"]
        for i, ((a, la), (b, lb)) in enumerate(zip(firsts, seconds, strict=True))
    ]
    write_tsv(glue / "RTE" / "dev.tsv", ["index", "sentence1", "sentence2", "label"], pairs)
    return glue


@pytest.fixture(scope="module")
def models(tiny_encoder, tmp_path_factory) -> dict[str, Path]:
    """Model folders of every kind lmshrink makes, on the toy sentiment task: a fine-tuned
    BERT teacher, a BiLSTM student, a layer-subset student, and a DistilBERT classifier
    (no token_type_ids). Student weights are drawn at random with a fixed seed and a
    large spread, so that logits are far from zero and a wrong graph shows."""
    from transformers import (
        AutoTokenizer,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    from lmshrink.compress.pruning import prune_to
    from lmshrink.data.tasks import get_task
    from lmshrink.finetune import finetune
    from lmshrink.models.loading import load_for_eval, task_head_settings
    from lmshrink.students.bilstm import BiLSTMSettings, build_bilstm
    from lmshrink.students.layers import LayerSubsetSettings, build_layer_subset

    root = tmp_path_factory.mktemp("export")
    glue = glue_folder(root)
    finetune(tiny_finetune_config(tiny_encoder, glue, root / "teacher", epochs=5))
    task = get_task("sst2")
    head = task_head_settings(task)
    tokenizer, teacher = load_for_eval(str(root / "teacher"), task)
    texts = [(s,) for s, _ in make_sentences(160, seed=1)]

    torch.manual_seed(0)
    shape = BiLSTMSettings(embedding_dim=16, hidden_size=12, num_layers=2)
    bilstm = build_bilstm(teacher, tokenizer, texts, head, 32, shape).model
    layers = build_layer_subset(teacher, tokenizer, texts, head, 32, LayerSubsetSettings(1)).model
    distil = DistilBertForSequenceClassification(
        DistilBertConfig(
            vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2, hidden_dim=64, **head
        )
    )
    with torch.no_grad():
        for name, param in bilstm.named_parameters():
            if name != "embeddings.weight":  # keep the teacher-derived word vectors
                param.normal_(0.0, 0.5)
        for param in distil.parameters():
            param.normal_(0.0, 0.3)
    # A pruned teacher with uneven layers: one head and 22 FFN neurons left in layer 0, no
    # attention and 5 neurons in layer 1.
    pruned = prune_to(teacher, {0: [1], 1: []}, {0: list(range(0, 64, 3)), 1: [0, 5, 9, 40, 63]})
    folders = {"teacher": root / "teacher"}
    models = (("bilstm", bilstm), ("layers", layers), ("distilbert", distil), ("pruned", pruned))
    for name, model in models:
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        folders[name] = root / name
    # A DistilBERT tokenizer writes no token_type_ids (the model has no segments).
    AutoTokenizer.from_pretrained(
        root / "teacher", model_input_names=["input_ids", "attention_mask"]
    ).save_pretrained(root / "distilbert")
    folders["glue"] = glue
    return folders


def export_config(models, name: str, out: Path, task: str = "sst2", **onnx) -> ExportConfig:
    settings = {"parity_batch_sizes": [1, 5, 16], **onnx}
    return ExportConfig(
        model=str(models[name]),
        out=str(out),
        onnx=OnnxSettings(**settings),
        data=DataConfig(task=task, data_dir=str(models["glue"]), max_length=32),
    )


def torch_logits(folder: Path, texts: list, task: str = "sst2") -> torch.Tensor:
    """The PyTorch model's logits for `texts` (strings or pairs), one right-padded batch."""
    from lmshrink.data.tasks import get_task
    from lmshrink.models.loading import load_for_eval

    tokenizer, model = load_for_eval(str(folder), get_task(task))
    pairs = isinstance(texts[0], tuple)
    firsts = [t[0] for t in texts] if pairs else texts
    seconds = [t[1] for t in texts] if pairs else None
    batch = tokenizer(
        firsts, seconds, padding=True, truncation=True, max_length=32, return_tensors="pt"
    )
    with torch.inference_mode():
        return model(**batch).logits


# --- export and parity ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "task", "inputs"),
    [
        ("teacher", "sst2", ["input_ids", "attention_mask", "token_type_ids"]),
        ("bilstm", "sst2", ["input_ids", "attention_mask", "token_type_ids"]),
        ("bilstm", "rte", ["input_ids", "attention_mask", "token_type_ids"]),
        ("layers", "sst2", ["input_ids", "attention_mask", "token_type_ids"]),
        ("distilbert", "sst2", ["input_ids", "attention_mask"]),
        ("pruned", "sst2", ["input_ids", "attention_mask", "token_type_ids"]),
    ],
)
def test_export_matches_pytorch_on_dev(models, tmp_path, name, task, inputs):
    out = tmp_path / "onnx"
    result = export(export_config(models, name, out, task=task))

    parity = result["parity"]
    dev_size = 24 if task == "rte" else 48
    assert parity["passed"] and parity["tolerance"] == 1e-3
    assert parity["max_abs_diff"] < 1e-4  # fp32 on both sides: rounding only
    assert parity["agreement"] == 1.0
    assert set(parity["by_batch_size"]) == {"1", "5", "16"}
    assert all(b["examples"] == dev_size for b in parity["by_batch_size"].values())

    saved = json.loads((out / "export.json").read_text())
    assert saved["parity"] == parity and saved["inputs"] == inputs
    assert saved["opset"] == 17 and saved["labels"] == (
        ["entailment", "not_entailment"] if task == "rte" else ["0", "1"]
    )
    assert (out / "tokenizer.json").is_file()
    assert (out / "lmshrink.json").is_file() == (name == "teacher")
    graph = onnx.load(out / "model.onnx").graph
    assert [i.name for i in graph.input] == inputs
    for tensor in graph.input:  # batch and sequence axes are symbolic
        dims = tensor.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "sequence"]
    assert [o.name for o in graph.output] == ["logits"]

    # Independently of the parity code: plain onnxruntime on a fresh padded batch.
    if task == "rte":
        texts = [("he sat on the mat", "a dog sat"), ("yes", "the cat is not on the mat")]
    else:
        texts = ["a", "the film was great and the cast was lovely", "dull", "boring plot"]
    want = torch_logits(models[name], texts, task)
    assert want.abs().max() > 0.1  # logits large enough for the comparison to mean something
    got = OnnxClassifier(out / "model.onnx")(**_batch(models[name], texts)).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def _batch(folder: Path, texts: list) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    pairs = isinstance(texts[0], tuple)
    firsts = [t[0] for t in texts] if pairs else texts
    seconds = [t[1] for t in texts] if pairs else None
    return dict(tokenizer(firsts, seconds, padding=True, return_tensors="pt"))


def test_bilstm_onnx_prediction_does_not_depend_on_padding(models, tmp_path):
    """Exported from an *unpadded* example, the BiLSTM still runs each row for its own length
    (ONNX LSTM sequence_lens): a row alone equals the same row in a padded batch. A graph
    traced through the unpadded fast path would run the reverse LSTM over the padding."""
    from transformers import AutoTokenizer

    from lmshrink.data.tasks import get_task
    from lmshrink.models.loading import load_for_eval

    tokenizer, model = load_for_eval(str(models["bilstm"]), get_task("sst2"))
    alone = dict(tokenizer(["the movie was great"], return_tensors="pt"))
    export_onnx(model, alone, tmp_path / "model.onnx")
    assert "LSTM" in {n.op_type for n in onnx.load(tmp_path / "model.onnx").graph.node}
    session = OnnxClassifier(tmp_path / "model.onnx")

    texts = ["the movie was great", "a dull and boring plot and the acting was very weak", "it"]
    tok = AutoTokenizer.from_pretrained(models["bilstm"])
    padded = session(**dict(tok(texts, padding=True, return_tensors="pt"))).logits
    for row, text in enumerate(texts):
        single = session(**dict(tok([text], return_tensors="pt"))).logits
        torch.testing.assert_close(single[0], padded[row], rtol=0, atol=1e-5)
    with torch.inference_mode():
        want = model(**dict(tok(texts, padding=True, return_tensors="pt"))).logits
    torch.testing.assert_close(padded, want, rtol=0, atol=1e-5)


def test_a_corrupted_onnx_weight_fails_parity_and_writes_nothing(
    models, tmp_path, monkeypatch, capsys
):
    """The real export path, with one weight of the written graph changed: the parity check
    must catch it, and --out must not appear."""
    import lmshrink.compress.onnx as export_module

    real_export = export_module.export_onnx

    def export_then_corrupt(model, example, path, opset=17):
        real_export(model, example, path, opset)
        graph = onnx.load(path)
        weight = next(t for t in graph.graph.initializer if t.name.endswith("classifier.weight"))
        flipped = -onnx.numpy_helper.to_array(weight)  # logits change sign
        weight.CopyFrom(onnx.numpy_helper.from_array(flipped, weight.name))
        onnx.save(graph, path)

    monkeypatch.setattr(export_module, "export_onnx", export_then_corrupt)
    out = tmp_path / "onnx"
    with pytest.raises(ParityError, match=r"differ from PyTorch's by up to .* past --tolerance"):
        export(export_config(models, "teacher", out))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind

    argv = ["export", models["teacher"], "--task", "sst2", "--data-dir", models["glue"]]
    assert main([str(a) for a in [*argv, "--out", out]]) == 2
    err = capsys.readouterr().err
    assert f"error: {models['teacher']}: the ONNX export's logits" in err
    assert "nothing was written" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_parity_reports_the_difference_it_sees(models, tmp_path):
    """check_parity's numbers are those of the graph: an exact copy passes, a shifted
    classifier bias gives that shift as the max difference."""
    from lmshrink.compress.onnx import example_batch, onnx_input_names
    from lmshrink.data.batching import encode
    from lmshrink.data.splits import read_split
    from lmshrink.data.tasks import get_task
    from lmshrink.models.loading import load_for_eval

    task = get_task("sst2")
    tokenizer, model = load_for_eval(str(models["teacher"]), task)
    split = read_split(task, "dev", DataConfig(task="sst2", data_dir=str(models["glue"])))
    enc = encode(tokenizer, split, 32)
    path = tmp_path / "model.onnx"
    export_onnx(model, example_batch(enc, onnx_input_names(model, tokenizer)), path)
    ok = check_parity(model, OnnxClassifier(path), enc, [4], 0, 1e-3, SEQUENCE_CLASSIFICATION)
    assert ok["passed"] and ok["by_batch_size"]["4"]["examples"] == 48

    graph = onnx.load(path)
    bias = next(t for t in graph.graph.initializer if t.name.endswith("classifier.bias"))
    shifted = onnx.numpy_helper.to_array(bias) + np.array([0.25, 0.0], dtype=np.float32)
    bias.CopyFrom(onnx.numpy_helper.from_array(shifted, bias.name))
    onnx.save(graph, path)
    bad = check_parity(model, OnnxClassifier(path), enc, [1, 4], 0, 1e-3, SEQUENCE_CLASSIFICATION)
    assert not bad["passed"]
    assert bad["max_abs_diff"] == pytest.approx(0.25, abs=1e-4)
    assert bad["worst"]["batch_size"] in (1, 4)


class Scores:
    """A stand-in model (PyTorch or ONNX side) whose score is the first token id of each row
    plus `shift`; it records the batches it is given."""

    def __init__(self, shift: float = 0.0) -> None:
        self.shift, self.batches = shift, []

    def eval(self):
        return self

    def __call__(self, input_ids, attention_mask, **_):
        import types

        self.batches.append(input_ids.tolist())
        return types.SimpleNamespace(logits=input_ids[:, :1].float() + self.shift)  # [b, 1]


def test_regression_parity_counts_scores_within_the_tolerance_as_identical():
    """Regression (the task kind's `same_prediction`): a score is identical within the
    tolerance; batches follow the dev order, padded to each batch's longest row."""
    from lmshrink.data.batching import Encoded

    rows = [[5, 1], [7], [2, 3, 4], [9]]
    enc = Encoded({"input_ids": rows}, [0.5, 1.0, 2.0, 3.0], 0)
    reference, shifted = Scores(), Scores(shift=0.004)
    ok = check_parity(reference, shifted, enc, [3], 0, 0.005, REGRESSION)
    assert ok["passed"] and ok["agreement"] == 1.0
    assert ok["max_abs_diff"] == pytest.approx(0.004, abs=1e-6)
    # dev order, not sorted by length; the last batch holds the rest
    assert reference.batches == [[[5, 1, 0], [7, 0, 0], [2, 3, 4]], [[9]]]
    bad = check_parity(Scores(), Scores(shift=0.004), enc, [3], 2, 0.003, REGRESSION)
    assert not bad["passed"] and bad["agreement"] == 0.0
    assert bad["by_batch_size"]["3"]["examples"] == 2  # parity_examples takes the first rows


@pytest.mark.parametrize(
    "onnx_settings",
    [{"tolerance": -1.0}, {"opset": 9}, {"parity_batch_sizes": [0]}],
)
def test_bad_export_settings_are_refused_before_work(models, tmp_path, onnx_settings):
    with pytest.raises(ConfigError):
        export(export_config(models, "teacher", tmp_path / "o", **onnx_settings))
    assert not (tmp_path / "o").exists()


# --- command line -----------------------------------------------------------------------


def test_export_help_lists_its_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--format", "--out", "--tolerance", "--opset", "--parity-batch-sizes", "--task"):
        assert flag in out


def test_export_command_line(models, tmp_path, capsys):
    base = ["export", str(models["bilstm"]), "--task", "sst2", "--data-dir", str(models["glue"])]
    out = tmp_path / "onnx"
    assert main([*base, "--format", "onnx", "--out", str(out), "--parity-examples", "16"]) == 0
    stdout = capsys.readouterr().out
    assert f"saved {out}/model.onnx" in stdout and "100.00% identical predictions" in stdout
    before = (out / "model.onnx").read_bytes()

    cases = [
        (["--out", str(out)], "already holds another run"),  # no clobbering
        (["--format", "tflite", "--out", str(tmp_path / "x")], "--format 'tflite'"),
        (["--tolerance", "-1", "--out", str(tmp_path / "y")], "--tolerance"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err
    missing = ["export", str(tmp_path / "nope"), "--task", "sst2", "--out", str(tmp_path / "z")]
    assert main(missing) == 2
    assert "does not exist" in capsys.readouterr().err
    assert (out / "model.onnx").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


# --- serving without lmshrink -----------------------------------------------------------


def readme_snippet() -> str:
    text = README.read_text()
    match = re.search(
        r"<!-- serve-example -->\s*```python\n(.*?)```\s*<!-- /serve-example -->", text, re.S
    )
    assert match, "README.md lost its <!-- serve-example --> block"
    return match.group(1)


# Prepended to the snippet: any attempt to import lmshrink (directly or through another
# package) fails, so the snippet can only pass if it needs no lmshrink.
BLOCK_LMSHRINK = """
import sys
class _NoLmshrink:
    def find_spec(self, name, path=None, target=None):
        if name == "lmshrink" or name.startswith("lmshrink."):
            raise ImportError("lmshrink is blocked: a served model must not need it")
sys.meta_path.insert(0, _NoLmshrink())
"""

CHECK_IMPORTS = """
assert "lmshrink" not in sys.modules
assert "torch" not in sys.modules, "serving pulled in torch"
"""


def test_readme_serving_example_runs_without_lmshrink(models, tmp_path):
    blocked = subprocess.run(
        [sys.executable, "-c", BLOCK_LMSHRINK + "import lmshrink"], capture_output=True, text=True
    )
    assert blocked.returncode != 0 and "lmshrink is blocked" in blocked.stderr

    out = tmp_path / "served"
    export(export_config(models, "teacher", out))
    snippet = readme_snippet()
    assert snippet.count('"runs/sst2-bilstm/onnx"') == 1
    code = BLOCK_LMSHRINK + snippet.replace('"runs/sst2-bilstm/onnx"', repr(str(out)))
    code += CHECK_IMPORTS
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert run.returncode == 0, run.stderr
    lines = [line.split("\t") for line in run.stdout.strip().splitlines()]
    texts = [text for _, text in lines]
    predicted = [label for label, _ in lines]
    assert len(texts) == 2
    want = torch_logits(models["teacher"], texts).argmax(-1).tolist()
    assert predicted == [str(i) for i in want]
    assert predicted == ["1", "0"]  # the trained toy teacher reads the sentiment words


def test_saved_tokenizer_alone_encodes_as_transformers_does(models, tmp_path):
    """The README's tokenizer setup (tokenizers + export.json) gives the ids, masks and
    segments that lmshrink's own encoding gives, for single sentences and pairs."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    out = tmp_path / "served"
    export(export_config(models, "teacher", out, parity_batch_sizes=[8], parity_examples=8))
    meta = json.loads((out / "export.json").read_text())["tokenizer"]
    plain = Tokenizer.from_file(str(out / "tokenizer.json"))
    plain.enable_truncation(meta["max_length"])
    plain.enable_padding(pad_id=meta["pad_token_id"], pad_token=meta["pad_token"])
    hf = AutoTokenizer.from_pretrained(models["teacher"])
    long = " ".join(["very"] * 40)
    singles = ["a charming film", "it", long]
    pairs = [("he sat on the mat", "a dog"), ("yes", long)]
    for texts in (singles, pairs):
        got = plain.encode_batch(texts)
        firsts = [t[0] for t in texts] if texts is pairs else texts
        seconds = [t[1] for t in texts] if texts is pairs else None
        want = hf(firsts, seconds, padding=True, truncation=True, max_length=32)
        assert [e.ids for e in got] == want["input_ids"]
        assert [e.attention_mask for e in got] == want["attention_mask"]
        assert [e.type_ids for e in got] == want["token_type_ids"]
