"""End-to-end serving and timing: an exported folder served from raw strings with tokenizers
and ONNX Runtime alone predicts what lmshrink's PyTorch path predicts (sentences, pairs,
regression scores, per-word tags, int8 graphs), and the timing of servers: what is called,
in which order, and the numbers computed from a clock the test controls."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from conftest import STSB_HEADER, make_sentences, tiny_bert_config, write_tsv  # noqa: E402

from lmshrink.config import DataConfig  # noqa: E402
from lmshrink.errors import ConfigError, ModelError  # noqa: E402
from lmshrink.measure import end_to_end  # noqa: E402
from lmshrink.measure.end_to_end import OnnxTextServer, TextServer, time_end_to_end  # noqa: E402

MAX_LENGTH = 32
# Longer than MAX_LENGTH tokens: truncation is part of what is pinned.
LONG = " ".join(["the film was very good and the plot was dull"] * 5)
SPEED_KEYS = {"batch_sizes", "rounds", "examples", "per_second", "ratio", "latency_ms"}


def export_folder(model: Path, out: Path, data: DataConfig) -> Path:
    from lmshrink.compress.onnx import OnnxSettings
    from lmshrink.export import ExportConfig, export

    settings = OnnxSettings(parity_batch_sizes=[8], parity_examples=16)
    export(ExportConfig(model=str(model), out=str(out), progress=False, onnx=settings, data=data))
    return out


def random_classifier(tokenizer_folder: Path, out: Path, task_name: str, spread: float) -> Path:
    """A tiny BERT with the task's head and random weights of a large spread (so that its
    outputs vary from text to text and a wrong input shows), saved with the tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    from lmshrink.data.tasks import get_task
    from lmshrink.models.loading import load_tokenizer

    task = get_task(task_name, ["en"] if task_name == "wikiann" else ())
    tokenizer = load_tokenizer(str(tokenizer_folder))
    config = tiny_bert_config(vocab_size=len(tokenizer), **task.kind.head_settings(task.labels))
    auto = AutoModelForTokenClassification if task.kind.token_level else None
    torch.manual_seed(0)
    model = (auto or AutoModelForSequenceClassification).from_config(config)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:  # weight matrices; biases and layer norms keep their init
                param.normal_(0.0, spread)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def pair_rows(n: int, seed: int) -> list[tuple[str, str]]:
    firsts, seconds = make_sentences(n, seed), make_sentences(n, seed + 1)
    rows = [(a, b) for (a, _), (b, _) in zip(firsts, seconds, strict=True)]
    return rows + [(LONG, "a dull film"), ("it", LONG)]  # truncated as pairs are


@pytest.fixture(scope="module")
def folders(tiny_teacher, tmp_path_factory) -> dict[str, Path]:
    """Exported folders: the tiny SST-2 teacher (fp32 and int8), a random RTE pair classifier
    and a random STS-B regressor (pairs), with their GLUE folder."""
    from lmshrink.compress.int8 import onnx_int8_folder

    root = tmp_path_factory.mktemp("end-to-end")
    glue = root / "glue"
    pairs = pair_rows(22, seed=5)
    rte = [[str(i), a, b, "entailment"] for i, (a, b) in enumerate(pairs)]
    write_tsv(glue / "RTE" / "dev.tsv", ["index", "sentence1", "sentence2", "label"], rte)
    stsb = [
        [str(i), "x", "x", "2012", "0", "x", "x", a, b, f"{i % 5}.0"]
        for i, (a, b) in enumerate(pairs)
    ]
    write_tsv(glue / "STS-B" / "dev.tsv", STSB_HEADER, stsb)
    teacher = tiny_teacher["teacher"]
    out = {"glue": glue, "sst2_glue": tiny_teacher["glue"], "teacher": teacher}
    data = DataConfig(data_dir=str(tiny_teacher["glue"]), max_length=MAX_LENGTH)
    out["sst2"] = export_folder(teacher, root / "sst2", data)
    onnx_int8_folder(out["sst2"], root / "sst2-int8")
    out["sst2-int8"] = root / "sst2-int8"
    for task, spread in (("rte", 0.5), ("stsb", 0.5)):
        model = random_classifier(teacher, root / f"{task}-model", task, spread)
        out[f"{task}-model"] = model
        data = DataConfig(task=task, data_dir=str(glue), max_length=MAX_LENGTH)
        out[task] = export_folder(model, root / task, data)
    return out


def pytorch_outputs(folder: Path, task_name: str, glue: Path, batch_size: int):
    """What `lmshrink evaluate` computes for the dev split: its texts and the PyTorch model's
    predictions (class ids, or scores) in dev order."""
    from lmshrink.data.batching import encode
    from lmshrink.data.splits import read_split
    from lmshrink.data.tasks import get_task
    from lmshrink.models.loading import load_for_eval
    from lmshrink.training.inference import predict

    task = get_task(task_name)
    split = read_split(task, "dev", DataConfig(data_dir=str(glue)))
    tokenizer, model = load_for_eval(str(folder), task)
    outputs = predict(model, encode(tokenizer, split, MAX_LENGTH), batch_size)
    return split.texts, task.kind.predictions(outputs)


def served(server: TextServer, texts: list, batch_size: int) -> np.ndarray:
    parts = [server.predict(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    return np.concatenate(parts)


# --- serving ----------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 8])
def test_served_labels_equal_pytorch_predictions(folders, batch_size):
    texts, want = pytorch_outputs(folders["teacher"], "sst2", folders["sst2_glue"], 8)
    server = OnnxTextServer(folders["sst2"])
    assert isinstance(server, TextServer) and server.kind == "onnx-fp32"
    got = served(server, texts, batch_size)
    assert got.dtype == np.int64 and got.shape == (48,)
    assert set(want.tolist()) == {0, 1}  # the trained teacher reads the sentiment words
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("batch_size", [1, 8])
def test_pairs_are_encoded_as_pairs(folders, batch_size):
    texts, want = pytorch_outputs(folders["rte-model"], "rte", folders["glue"], 8)
    assert len(texts[0]) == 2 and len(texts) == 24
    assert set(want.tolist()) == {0, 1}  # outputs vary, so a wrong encoding shows
    got = served(OnnxTextServer(folders["rte"]), texts, batch_size)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("batch_size", [1, 8])
def test_regression_returns_the_score(folders, batch_size):
    texts, want = pytorch_outputs(folders["stsb-model"], "stsb", folders["glue"], 8)
    got = served(OnnxTextServer(folders["stsb"]), texts, batch_size)
    assert got.dtype == np.float32 and got.shape == (24,)
    assert np.ptp(want) > 0.1  # scores differ from pair to pair
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_an_int8_folder_is_served_like_its_graph(folders):
    """onnx-int8/ (lmshrink quantize) has the same layout: served from raw strings, its
    labels are those of its graph run on lmshrink's own encoding of the same batches."""
    from lmshrink.compress.onnx import OnnxClassifier
    from lmshrink.data.batching import encode
    from lmshrink.data.splits import read_split
    from lmshrink.data.tasks import get_task
    from lmshrink.models.loading import load_tokenizer
    from lmshrink.training.inference import eval_batches

    task = get_task("sst2")
    split = read_split(task, "dev", DataConfig(data_dir=str(folders["sst2_glue"])))
    server = OnnxTextServer(folders["sst2-int8"], name="int8")
    assert server.kind == "onnx-int8" and server.name == "int8"
    graph = OnnxClassifier.from_folder(folders["sst2-int8"], threads=1)
    enc = encode(load_tokenizer(str(folders["sst2-int8"])), split, MAX_LENGTH)
    for bs in (1, 8):
        want = np.concatenate(
            [
                graph(**batch).logits.numpy().argmax(1)
                for _, batch, _ in eval_batches(enc, bs, order="dataset")
            ]
        )
        np.testing.assert_array_equal(served(server, split.texts, bs), want)


def test_serving_needs_no_torch(folders):
    """A server is measured as it runs in production: importing this module and serving
    load neither torch nor transformers."""
    code = (
        "import sys\n"
        "from lmshrink.measure.end_to_end import OnnxTextServer\n"
        f"server = OnnxTextServer({str(folders['rte'])!r})\n"
        "print(server.predict([('a good film', 'a dull plot'), ('it', 'was')]).tolist())\n"
        "assert 'torch' not in sys.modules, 'serving imported torch'\n"
        "assert 'transformers' not in sys.modules, 'serving imported transformers'\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert len(eval(run.stdout)) == 2


def test_folders_that_cannot_be_served_say_why(folders, tmp_path):
    with pytest.raises(ModelError, match=r"has no model\.onnx.*lmshrink export"):
        OnnxTextServer(folders["teacher"])
    with pytest.raises(ModelError, match="not a folder"):
        OnnxTextServer(tmp_path / "missing")
    server = OnnxTextServer(folders["sst2"])
    with pytest.raises(ConfigError, match="one text or a pair of texts, got 3"):
        server.predict([("a", "b", "c")])
    assert server.predict([]).shape == (0,)
    # a plain string is one text, not a tuple of characters
    assert server.predict(["a good film"]).tolist() == server.predict([("a good film",)]).tolist()


# --- token classification ---------------------------------------------------------------

NER_WORDS = ["he", "she", "Paris", "EU", "the", "cat", "sat", "on", "mat", "3rd", "dog", "."]


@pytest.fixture(scope="module")
def ner_folders(tiny_teacher, tmp_path_factory) -> dict[str, Path]:
    """A random BERT token classifier and a random BiLSTM tagger that reads word shapes,
    exported on a made-up WikiAnn (en) dev set."""
    import random

    import torch

    from lmshrink.data.task_kinds import TOKEN_CLASSIFICATION
    from lmshrink.data.tasks import WIKIANN_TAGS
    from lmshrink.models.bilstm import BiLSTMConfig, BiLSTMForTokenClassification
    from lmshrink.models.loading import load_tokenizer

    root = tmp_path_factory.mktemp("end-to-end-ner")
    rng = random.Random(3)
    lines = []
    for _ in range(20):
        words = [rng.choice(NER_WORDS) for _ in range(rng.randint(2, 9))]
        lines += [f"{w}\t{rng.choice(WIKIANN_TAGS)}" for w in words] + [""]
    dev = root / "data" / "wikiann" / "en" / "dev.tsv"
    dev.parent.mkdir(parents=True)
    dev.write_text("\n".join(lines) + "\n")
    data = DataConfig(
        task="wikiann", languages=["en"], data_dir=str(root / "data"), max_length=MAX_LENGTH
    )
    teacher = tiny_teacher["teacher"]
    bert = random_classifier(teacher, root / "bert", "wikiann", 0.5)
    tokenizer = load_tokenizer(str(teacher))
    head = TOKEN_CLASSIFICATION.head_settings(WIKIANN_TAGS)
    config = BiLSTMConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        embedding_dim=16,
        hidden_size=8,
        shape_dim=4,
        **head,
    )
    torch.manual_seed(0)
    tagger = BiLSTMForTokenClassification(config)
    with torch.no_grad():
        for param in tagger.parameters():
            param.normal_(0.0, 0.5)
    tagger.save_pretrained(root / "tagger")
    tokenizer.save_pretrained(root / "tagger")
    return {
        "bert": bert,
        "bert-onnx": export_folder(bert, root / "bert-onnx", data),
        "tagger": root / "tagger",
        "tagger-onnx": export_folder(root / "tagger", root / "tagger-onnx", data),
    }


@pytest.mark.parametrize("name", ["bert", "tagger"])
def test_token_server_tags_each_word_at_its_first_subtoken(ner_folders, name):
    from lmshrink.data.batching import encode_words
    from lmshrink.data.tasks import WIKIANN_TAGS, get_task
    from lmshrink.data.words import split_words
    from lmshrink.models.loading import load_for_eval
    from lmshrink.training.inference import predict_words

    texts = [
        ("He met the EU in Paris.",),
        ("the cat sat on the mat",),
        ("she's 3rd (dog) -- Paris's cat!",),
        ("EU " * 40,),  # past MAX_LENGTH tokens: words cut off read as O
        ("",),
    ]
    words = [split_words(t) for (t,) in texts]
    tokenizer, model = load_for_eval(str(ner_folders[name]), get_task("wikiann", ["en"]))
    shapes = bool(getattr(model, "reads_word_shapes", False))
    assert shapes == (name == "tagger")
    enc, _ = encode_words(tokenizer, words, None, MAX_LENGTH, word_shapes=shapes)
    want = [out.argmax(-1) for out in predict_words(model, enc, 8)]
    server = OnnxTextServer(ner_folders[f"{name}-onnx"])
    assert ("word_shape_ids" in server.inputs) == shapes
    outside = WIKIANN_TAGS.index("O")
    for bs in (1, 8):
        got = [row for i in range(0, len(texts), bs) for row in server.predict(texts[i : i + bs])]
        assert [len(g) for g in got] == [len(w) for w in words]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g[: len(w)], w)
            assert (g[len(w) :] == outside).all()
    assert len(want[3]) < len(words[3])  # truncation did cut words
    assert len({int(t) for w in want for t in w}) > 2  # tags vary, so a misread shows


# --- timing -----------------------------------------------------------------------------


class Clock:
    """A perf_counter that only moves when a fake server is called."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CostServer:
    """Costs `ms_per_char` per character of its texts, on the test's clock; records calls."""

    kind = "fake"

    def __init__(self, name: str, clock: Clock, ms_per_char: float, log: list | None = None):
        self.name, self.clock, self.ms, self.calls = name, clock, ms_per_char, []
        self.log = [] if log is None else log  # server names in call order

    def predict(self, texts):
        self.calls.append([t[0] for t in texts])
        self.log.append(self.name)
        self.clock.now += self.ms * sum(len(t[0]) for t in texts) / 1000
        return np.zeros(len(texts), dtype=np.int64)


TEXTS = [("ccc",), ("a",), ("dd",), ("bbbb",), ("ee",)]  # neither sorted by length nor name


def test_timing_comes_from_the_recorded_calls(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(end_to_end.time, "perf_counter", clock)
    a, b = CostServer("a", clock, 1.0), CostServer("b", clock, 3.0)
    result = time_end_to_end({"a": a, "b": b}, TEXTS, (1, 2), {1: 4, 2: 50}, rounds=3)
    assert set(result) == SPEED_KEYS
    assert result["batch_sizes"] == [1, 2] and result["rounds"] == 3
    laps = np.array([3, 1, 2, 4] * 3, dtype=float)  # batch size 1: one call per text
    lat = result["latency_ms"]["a"]["1"]
    assert lat == {
        "p50": pytest.approx(np.percentile(laps, 50)),
        "p95": pytest.approx(np.percentile(laps, 95)),
        "calls": 12,
        "round_p50": [pytest.approx(np.percentile([3, 1, 2, 4], 50))] * 3,
    }
    assert result["latency_ms"]["b"]["1"]["p50"] == pytest.approx(3 * np.percentile(laps, 50))
    assert result["per_second"]["a"]["1"] == pytest.approx(400.0)  # 4 texts in 10 ms
    assert result["ratio"]["a"] == {"1": 1.0, "2": 1.0}
    assert result["ratio"]["b"]["1"] == pytest.approx(1 / 3)
    assert result["examples"] == {"1": 4, "2": 5}  # limit 50 > the 5 texts
    assert result["per_second"]["b"]["2"] == pytest.approx(5 / (3 * 12 / 1000))
    assert result["latency_ms"]["a"]["2"]["calls"] == 3 * 3


def test_every_server_serves_the_same_texts_in_dataset_order(monkeypatch):
    clock, log = Clock(), []
    monkeypatch.setattr(end_to_end.time, "perf_counter", clock)
    a, b = CostServer("a", clock, 1.0, log), CostServer("b", clock, 2.0, log)
    time_end_to_end({"a": a, "b": b}, TEXTS, (1, 2), {1: 5, 2: 5}, rounds=2)
    texts = [[t] for (t,) in TEXTS]
    pairs = [["ccc", "a"], ["dd", "bbbb"], ["ee"]]
    # warm-up over min(limit, 4 x batch size) texts, then every text of each round in order
    assert a.calls == b.calls == [*texts[:4], *texts, *texts, *pairs, *pairs, *pairs]
    # each server warms up, then they take turns round by round
    at_1 = ["a"] * 4 + ["b"] * 4 + (["a"] * 5 + ["b"] * 5) * 2
    at_2 = ["a"] * 3 + ["b"] * 3 + (["a"] * 3 + ["b"] * 3) * 2
    assert log == at_1 + at_2


def test_a_server_that_loses_predictions_is_refused():
    class Lossy:
        name, kind = "lossy", "fake"

        def predict(self, texts):
            return np.zeros(len(texts) - 1)

    with pytest.raises(ModelError, match="lossy: returned 1 predictions for 2 texts"):
        time_end_to_end({"lossy": Lossy()}, TEXTS, (2,), rounds=1)
    with pytest.raises(ValueError, match="at least one text"):
        time_end_to_end({"lossy": Lossy()}, [], (2,))


def test_real_servers_are_timed_on_the_dev_texts(folders):
    """Two served folders timed for real: the layout, and as many calls as batches (no time
    is asserted)."""
    from lmshrink.data.splits import read_split
    from lmshrink.data.tasks import get_task

    split = read_split(get_task("sst2"), "dev", DataConfig(data_dir=str(folders["sst2_glue"])))
    servers = {
        "fp32": OnnxTextServer(folders["sst2"]),
        "int8": OnnxTextServer(folders["sst2-int8"]),
    }
    result = time_end_to_end(servers, split.texts, (1, 8), {1: 10, 8: 20}, rounds=2)
    assert set(result) == SPEED_KEYS and result["examples"] == {"1": 10, "8": 20}
    for name in servers:
        assert result["latency_ms"][name]["1"]["calls"] == 10 * 2
        assert result["latency_ms"][name]["8"]["calls"] == 3 * 2  # 8 + 8 + 4 texts
        assert all(v > 0 for v in result["per_second"][name].values())
    assert result["ratio"]["fp32"] == {"1": 1.0, "8": 1.0}
