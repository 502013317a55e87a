"""Deploying token models (NER): evaluate's entity scores, ONNX export with a per-word parity
check, int8, bench, report and model cards, and the README's NER serving example run
without lmshrink.

One tiny BERT token classifier is fine-tuned once, on made-up WikiAnn folders in two
languages, where entity words are learnable: "he" is B-PER and "she" right after it I-PER,
"cat"/"dog" B-ORG, "mat" B-LOC.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import torch  # noqa: E402
from test_export import BLOCK_LMSHRINK, CHECK_IMPORTS  # noqa: E402

from lmshrink.cli import main  # noqa: E402
from lmshrink.config import DataConfig  # noqa: E402
from lmshrink.data.task_kinds import TOKEN_CLASSIFICATION  # noqa: E402
from lmshrink.data.tasks import WIKIANN_TAGS  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"
LANGUAGES = ["en", "de"]
FILLER = ["the", "a", "movie", "was", "is", "very", "and", "it", "on", "sat", "good", "bad"]


def make_sentences(n: int, seed: int, noise: float = 0.0) -> list[list[tuple[str, str]]]:
    """Sentences of (word, IOB2 tag); with `noise`, that share of the O and B- tags is
    changed (O to B-LOC, B-X to O), so that a model that learned the rule misses some
    entities and finds others that are not there."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        sentence: list[tuple[str, str]] = []
        for _ in range(rng.randint(3, 8)):
            r = rng.random()
            if r < 0.15:
                sentence.append(("he", "B-PER"))
                if rng.random() < 0.5:
                    sentence.append(("she", "I-PER"))
            elif r < 0.25:
                sentence.append((rng.choice(["cat", "dog"]), "B-ORG"))
            elif r < 0.32:
                sentence.append(("mat", "B-LOC"))
            else:
                sentence.append((rng.choice(FILLER), "O"))
        for i, (word, tag) in enumerate(sentence):
            if tag[0] in "OB" and rng.random() < noise:
                sentence[i] = (word, "B-LOC" if tag == "O" else "O")
        out.append(sentence)
    return out


def write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [line for s in sentences for line in [*(f"{w}\t{t}" for w, t in s), ""]]
    path.write_text("\n".join(lines) + "\n")


def data_config(ner: dict[str, Path], **extra) -> DataConfig:
    settings = dict(task="wikiann", languages=LANGUAGES, data_dir=str(ner["data"]), max_length=32)
    return DataConfig(**{**settings, **extra})


@pytest.fixture(scope="module")
def ner(tiny_encoder, tmp_path_factory) -> dict[str, Path]:
    """A fine-tuned tiny token classifier (wikiann en+de) and its ONNX export."""
    from lmshrink.config import TrainConfig
    from lmshrink.export import ExportConfig, export
    from lmshrink.finetune import FinetuneConfig, finetune

    root = tmp_path_factory.mktemp("ner")
    for i, lang in enumerate(LANGUAGES):
        write_conll(root / "data" / "wikiann" / lang / "train.tsv", make_sentences(120, 1 + i))
        dev = make_sentences(24, 10 + i, noise=0.1)
        write_conll(root / "data" / "wikiann" / lang / "dev.tsv", dev)
    folders = {"data": root / "data", "teacher": root / "teacher", "onnx": root / "onnx"}
    train = TrainConfig(epochs=4, batch_size=16, lr=4e-3, eval_batch_size=32)
    cfg = FinetuneConfig(
        model=str(tiny_encoder),
        out=str(folders["teacher"]),
        progress=False,
        data=data_config(folders),
        train=train,
    )
    finetune(cfg)
    export(
        ExportConfig(
            model=str(folders["teacher"]),
            out=str(folders["onnx"]),
            progress=False,
            data=DataConfig(data_dir=str(folders["data"])),
        )
    )
    return folders


@pytest.fixture(scope="module")
def tagger(ner, tmp_path_factory) -> dict[str, Path]:
    """A BiLSTM tagger that reads word shapes (random weights, the teacher's tokenizer and
    labels), and its ONNX export."""
    from lmshrink.export import ExportConfig, export
    from lmshrink.models.bilstm import BiLSTMConfig, BiLSTMForTokenClassification
    from lmshrink.models.loading import load_tokenizer

    root = tmp_path_factory.mktemp("tagger")
    tokenizer = load_tokenizer(str(ner["teacher"]))
    head = TOKEN_CLASSIFICATION.head_settings(WIKIANN_TAGS)
    torch.manual_seed(0)
    settings = dict(embedding_dim=16, hidden_size=8, shape_dim=4, **head)
    config = BiLSTMConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **settings
    )
    model = BiLSTMForTokenClassification(config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.5)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    cfg = ExportConfig(
        model=str(root / "model"), out=str(root / "onnx"), progress=False, data=data_config(ner)
    )
    export(cfg)
    return {"model": root / "model", "onnx": root / "onnx"}


def own_predictions(folder: Path, words: list[list[str]], max_length: int = 32) -> list[list[str]]:
    """The tags lmshrink's own PyTorch path gives each word (read at first sub-tokens)."""
    from lmshrink.data.batching import encode_words
    from lmshrink.data.tasks import get_task
    from lmshrink.models.loading import load_for_eval
    from lmshrink.training.inference import predict_words

    tokenizer, model = load_for_eval(str(folder), get_task("wikiann", LANGUAGES))
    shapes = bool(getattr(model, "reads_word_shapes", False))  # the BiLSTM tagger's
    enc, _ = encode_words(tokenizer, words, None, max_length, word_shapes=shapes)
    return [[WIKIANN_TAGS[i] for i in out.argmax(-1)] for out in predict_words(model, enc, 8)]


def dev_split(ner):
    from lmshrink.data.ner import read_ner_split
    from lmshrink.data.tasks import get_task

    return read_ner_split(get_task("wikiann", LANGUAGES), "dev", data_config(ner))


# --- evaluate ---------------------------------------------------------------------------


def test_evaluate_gives_entity_f1_with_precision_recall_per_type_and_language(ner, tmp_path):
    from lmshrink.evaluate import EvaluateConfig, evaluate, format_table
    from lmshrink.measure.entities import entity_scores

    out = tmp_path / "eval.json"
    data = DataConfig(data_dir=str(ner["data"]))
    cfg = EvaluateConfig(model=str(ner["teacher"]), json=str(out), progress=False, data=data)
    result = evaluate(cfg)
    split = dev_split(ner)
    gold = [[WIKIANN_TAGS[i] for i in row] for row in split.labels]
    want = entity_scores(gold, own_predictions(ner["teacher"], split.words), split.languages)

    # the headline is the task's metric (WikiAnn: the mean over languages), the score its mean
    assert result["metrics"] == {"entity_f1_lang_mean": pytest.approx(want.language_mean_f1)}
    assert result["score"] == pytest.approx(want.language_mean_f1)
    # the model learned the rule; the noisy dev tags make precision and recall differ
    assert 0.5 < want.overall.f1 < 0.95
    assert abs(want.overall.precision - want.overall.recall) > 0.01
    entities = result["entities"]
    assert entities["entity_f1"] == pytest.approx(want.overall.f1)
    assert entities["entity_precision"] == pytest.approx(want.overall.precision)
    assert entities["entity_recall"] == pytest.approx(want.overall.recall)
    for kind in ("PER", "ORG", "LOC"):
        assert entities[f"f1_type_{kind}"] == pytest.approx(want.per_type[kind].f1)
    for lang in LANGUAGES:
        assert entities[f"f1_lang_{lang}"] == pytest.approx(want.per_language[lang].f1)
    b_tags = [t for row in gold for t in row if t.startswith("B-")]
    assert result["gold_entities"]["all"] == len(b_tags)
    assert result["gold_entities"]["per_type"]["PER"] == b_tags.count("B-PER")
    assert sum(result["gold_entities"]["per_language"].values()) == len(b_tags)
    assert result["examples"] == 48 and result["words"] == split.num_words
    assert json.loads(out.read_text()) == result

    table = format_table(result)
    assert f"48 sentences, {split.num_words} words" in table
    assert re.search(
        rf"entity F1 \(mean over languages\)\s+{100 * want.language_mean_f1:.2f}", table
    )
    per = result["gold_entities"]["per_type"]["PER"]
    assert re.search(rf"F1 PER\s+{100 * want.per_type['PER'].f1:.2f}  \({per} entities\)", table)
    assert re.search(r"F1 language de\s+\d+\.\d\d  \(\d+ entities\)", table)
    assert "entity precision" in table and "entity recall" in table

    # one language as a custom-ner task: the headline is entity F1, no language rows
    dev = ner["data"] / "wikiann" / "en" / "dev.tsv"
    data = DataConfig(task="custom-ner", dev_file=str(dev), labels=list(WIKIANN_TAGS))
    custom = evaluate(EvaluateConfig(model=str(ner["teacher"]), progress=False, data=data))
    assert list(custom["metrics"]) == ["entity_f1"]
    assert custom["entities"]["entity_f1"] == custom["metrics"]["entity_f1"]
    assert not any(k.startswith("f1_lang_") for k in custom["entities"])
    assert "F1 language" not in format_table(custom)


# --- export -----------------------------------------------------------------------------


def test_export_writes_per_token_logits_and_checks_parity_per_word(ner):
    from lmshrink.export import format_summary

    meta = json.loads((ner["onnx"] / "export.json").read_text())
    split = dev_split(ner)
    parity = meta["parity"]
    assert parity["passed"] and parity["max_abs_diff"] < 1e-4 and parity["agreement"] == 1.0
    assert parity["words"] == split.num_words  # every dev word, none cut at 32 tokens
    for size in parity["by_batch_size"].values():
        assert size["examples"] == 48 and size["words"] == split.num_words
    assert meta["task_kind"] == "token_classification"
    assert meta["output"] == "logits [batch, sequence, 7]"
    assert meta["labels"] == list(WIKIANN_TAGS)
    words = meta["words"]
    assert words["is_split_into_words"] is True and words["read_at"] == "first_subtoken"
    assert words["tag_scheme"] == "IOB2" and "split_words.py" in words["split_file"]
    assert "split at whitespace" in words["split_rule"]
    summary = format_summary({**meta, "out": str(ner["onnx"])})
    assert f"over {split.num_words:,} words" in summary
    assert "100.00% identical word predictions" in summary

    graph = onnx.load(ner["onnx"] / "model.onnx").graph
    (output,) = graph.output
    dims = output.type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", "sequence", 7]

    # Independently of the parity code: a fresh padded batch of words, every real position.
    from lmshrink.compress.onnx import OnnxClassifier
    from lmshrink.data.tasks import get_task
    from lmshrink.models.loading import load_for_eval

    tokenizer, model = load_for_eval(str(ner["teacher"]), get_task("wikiann", LANGUAGES))
    sentences = [["he", "she", "sat", "on", "the", "mat"], ["dog"], ["a", "cat", "and", "he"]]
    batch = dict(tokenizer(sentences, is_split_into_words=True, padding=True, return_tensors="pt"))
    with torch.inference_mode():
        want = model(**batch).logits  # [3, T, 7]
    got = OnnxClassifier(ner["onnx"] / "model.onnx")(**batch).logits
    real = batch["attention_mask"].bool()
    assert want.abs().max() > 0.5
    torch.testing.assert_close(got[real], want[real], rtol=0, atol=1e-4)


class PerToken:
    """A stand-in token model: logits [b, T, 3] with the class-0 logit = the token id, plus
    `shift` at positions `where` picks (a function of the position and the token id)."""

    def __init__(self, shift: float = 0.0, where=lambda pos, tok: False) -> None:
        self.shift, self.where = shift, where

    def eval(self):
        return self

    def __call__(self, input_ids, attention_mask, **_):
        import types

        logits = torch.zeros(*input_ids.shape, 3)
        logits[..., 0] = input_ids.float()
        for (b, t), tok in np.ndenumerate(input_ids.numpy()):
            if self.where(t, tok):
                logits[b, t, 1] += self.shift
        return types.SimpleNamespace(logits=logits)


def test_token_parity_compares_first_sub_tokens_only():
    """Differences at later sub-tokens, special tokens or padding are not read by a server,
    so they do not count; a difference at a word's first sub-token does, and its word
    counts as tagged differently when the tag changes."""
    from lmshrink.compress.onnx import check_parity
    from lmshrink.data.batching import Encoded

    # [CLS]=1 w0 w0' w1 [SEP]=2 ; [CLS] w0 [SEP]: word starts at positions 1, 3 and 1
    rows = [[1, 5, 6, 7, 2], [1, 8, 2]]
    enc = Encoded({"input_ids": rows}, None, 0, word_starts=[[1, 3], [1]])
    elsewhere = PerToken(100.0, where=lambda pos, tok: pos not in (1, 3) or tok in (0, 6))
    ok = check_parity(PerToken(), elsewhere, enc, [1, 2], 0, 1e-3, TOKEN_CLASSIFICATION)
    assert ok["passed"] and ok["max_abs_diff"] == 0.0 and ok["agreement"] == 1.0
    assert ok["words"] == 3 and ok["by_batch_size"]["2"]["words"] == 3

    # word 1 of row 0 (token 7): class 1 gains 9, past the class-0 logit 7, so its tag flips
    flip = PerToken(9.0, where=lambda pos, tok: tok == 7)
    bad = check_parity(PerToken(), flip, enc, [2], 0, 1e-3, TOKEN_CLASSIFICATION)
    assert not bad["passed"] and bad["max_abs_diff"] == pytest.approx(9.0)
    assert bad["agreement"] == pytest.approx(2 / 3)
    assert bad["worst"] == {"batch_size": 2, "example": 0}


def test_a_bilstm_tagger_reading_word_shapes_exports_and_benches_with_them(ner, tagger):
    """The graph takes word_shape_ids as a fourth input; export.json says how they are made
    and word_shapes.py comes along; scoring and timing feed them to PyTorch and ONNX alike."""
    from lmshrink.bench import BenchConfig, bench

    meta = json.loads((tagger["onnx"] / "export.json").read_text())
    assert meta["inputs"] == ["input_ids", "attention_mask", "token_type_ids", "word_shape_ids"]
    assert "word_shapes.py" in meta["words"]["word_shapes"]
    assert meta["parity"]["passed"] and meta["parity"]["agreement"] == 1.0
    assert (tagger["onnx"] / "word_shapes.py").is_file()
    assert not (ner["onnx"] / "word_shapes.py").exists()  # the teacher reads no shapes

    cfg = BenchConfig(
        models=[str(tagger["model"]), str(tagger["onnx"])],
        speed_batch_sizes=[1, 8],
        speed_examples=8,
        rounds=1,
        progress=False,
        data=data_config(ner),
    )
    torch_row, onnx_row = bench(cfg)["models"]
    assert torch_row["kind"] == "torch-fp32" and onnx_row["kind"] == "onnx-fp32"
    assert onnx_row["metrics"] == torch_row["metrics"]


def test_model_card_snippets_feed_a_bilstm_tagger_its_word_shapes(tagger, capsys):
    """The cards' loading code of a tagger that reads word shapes runs, and prints the tags
    lmshrink gives each word (PyTorch and ONNX)."""
    from lmshrink.reporting.cards import EXAMPLE_WORDS, loading_snippet

    want = own_predictions(tagger["model"], [EXAMPLE_WORDS], max_length=128)[0]
    assert len(set(want)) > 1  # the random tagger does not give every word one tag
    for backend, folder in (("torch-fp32", tagger["model"]), ("onnx-fp32", tagger["onnx"])):
        snippet = loading_snippet({"path": str(folder), "backend": backend, "task": "wikiann"})
        assert "word_shape" in snippet
        exec(compile(snippet, "card", "exec"), {})
        printed = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
        assert printed == [[w, t] for w, t in zip(EXAMPLE_WORDS, want, strict=True)]


# --- quantize, bench, report ------------------------------------------------------------


@pytest.fixture(scope="module")
def quantized(ner, tmp_path_factory) -> dict:
    from lmshrink.quantize import QuantizeConfig, quantize

    out = tmp_path_factory.mktemp("q") / "q"
    cfg = QuantizeConfig(
        model=str(ner["teacher"]),
        out=str(out),
        progress=False,
        speed_batch_sizes=[1, 8],
        speed_examples=8,
        rounds=1,
        int8_modes=["dynamic", "static"],
        calibration_examples=32,
        data=DataConfig(data_dir=str(ner["data"])),
    )
    return quantize(cfg)


def test_quantize_scores_int8_token_models_by_entity_f1_and_word_agreement(ner, quantized):
    from lmshrink.quantize import format_table, load_quantized

    out = Path(quantized["out"])
    split = dev_split(ner)
    backends = quantized["backends"]
    onnx_int8 = {"onnx-int8", "onnx-int8-static"}
    assert set(backends) == {"torch-fp32", "torch-int8", "onnx-fp32", *onnx_int8}
    for b in backends.values():
        assert list(b["metrics"]) == ["entity_f1_lang_mean"]
        assert 0.0 <= b["agreement_with_fp32"] <= 1.0
    assert backends["onnx-fp32"]["max_abs_diff_to_fp32"] < 1e-4
    assert backends["onnx-fp32"]["score"] == backends["torch-fp32"]["score"]
    assert quantized["words"] == split.num_words and quantized["parity"]["words"] > 0
    # Static int8 calibrates on training sentences; its tags do not depend on the batch.
    moved = {n: b["batch_invariance"] for n, b in backends.items() if "batch_invariance" in b}
    assert set(moved) == onnx_int8 and moved["onnx-int8-static"]["changed"] == 0.0
    assert moved["onnx-int8-static"]["max_abs_diff"] <= 1e-5
    assert moved["onnx-int8-static"]["examples"] == len(split)
    calibration = json.loads((out / "onnx-int8-static" / "export.json").read_text())["int8"]
    assert calibration["calibration"]["split"] == "train"
    assert calibration["calibration"]["examples"] == 32

    # torch-int8 loads back as a token classifier, and its agreement is per word
    model = load_quantized(out)
    assert type(model).__name__.endswith("ForTokenClassification")
    spec = json.loads((out / "torch-int8" / "quantization.json").read_text())
    assert spec["auto_model"] == "AutoModelForTokenClassification"
    from lmshrink.data.batching import encode
    from lmshrink.models.loading import load_tokenizer
    from lmshrink.training.inference import predict_words

    enc = encode(load_tokenizer(str(ner["teacher"])), split, 32)
    fp32 = own_predictions(ner["teacher"], split.words)
    int8 = [[WIKIANN_TAGS[i] for i in o.argmax(-1)] for o in predict_words(model, enc, 8)]
    same = [a == b for x, y in zip(fp32, int8, strict=True) for a, b in zip(x, y, strict=True)]
    assert backends["torch-int8"]["agreement_with_fp32"] == pytest.approx(np.mean(same))

    table = format_table(quantized)
    assert "dev entity F1" in table and "words agree w/ fp32" in table
    assert f"48 sentences, {split.num_words} words" in table


@pytest.fixture(scope="module")
def bench_result(ner, quantized, tmp_path_factory) -> tuple[dict, Path]:
    from lmshrink.bench import BenchConfig, bench

    path = tmp_path_factory.mktemp("b") / "bench.json"
    models = [str(ner["teacher"]), str(ner["onnx"]), str(Path(quantized["out"]) / "torch-int8")]
    data = DataConfig(data_dir=str(ner["data"]))
    cfg = BenchConfig(
        models=models,
        json=str(path),
        speed_batch_sizes=[1, 8],
        speed_examples=8,
        rounds=1,
        progress=False,
        data=data,
    )
    return bench(cfg), path


def test_bench_times_token_models_on_words_and_scores_entity_f1(ner, bench_result):
    from lmshrink.bench import format_table

    result, _ = bench_result
    split = dev_split(ner)
    teacher, onnx_model, int8 = result["models"]
    assert [m["kind"] for m in result["models"]] == ["torch-fp32", "onnx-fp32", "torch-int8"]
    assert list(teacher["metrics"]) == ["entity_f1_lang_mean"]
    assert onnx_model["score"] == teacher["score"]  # parity-checked: the same tags
    saved = json.loads((ner["teacher"] / "lmshrink.json").read_text())
    assert teacher["score"] == pytest.approx(saved["score"])  # as finetune scored dev
    assert result["words"] == split.num_words and "is_split_into_words" in result["inputs"]
    assert all(m["per_second"]["1"] > 0 for m in result["models"])
    table = format_table(result)
    assert "dev entity F1" in table and "sent/s b=8" in table
    assert f"48 sentences, {split.num_words} words" in table


def test_report_shows_entity_f1_and_cards_tag_words(ner, bench_result, tmp_path, capsys):
    _, bench_file = bench_result
    out = tmp_path / "report"
    code = main(["report", str(ner["teacher"]), "--bench", str(bench_file), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    md = (out / "report.md").read_text()
    saved = json.loads((ner["teacher"] / "lmshrink.json").read_text())
    metric = f"entity F1 (mean over languages) {100 * saved['score']:.2f}"
    assert f"| wikiann | teacher | teacher | {metric} |" in md

    from lmshrink.reporting.cards import EXAMPLE_WORDS

    # the cards' snippets do not truncate; the tiny tokenizer spells these words by letters
    want = own_predictions(ner["teacher"], [EXAMPLE_WORDS], max_length=128)[0]
    for folder in (ner["teacher"], ner["onnx"]):
        card = (folder / "README.md").read_text()
        assert "named-entity tagger (one IOB2 tag per word)" in card
        assert "| dev entity F1 (mean over languages) |" in card
        snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
        exec(compile(snippet, "card", "exec"), {})
        printed = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
        assert printed == [[w, t] for w, t in zip(EXAMPLE_WORDS, want, strict=True)]
    assert "AutoModelForTokenClassification" in (ner["teacher"] / "README.md").read_text()


# --- serving without lmshrink -----------------------------------------------------------

# Spaces, punctuation, a clitic, capitals (word shapes), a word of two sub-tokens ("hex"), and
# words of characters the tokenizer deletes (a zero-width space, a soft hyphen), read as O.
TEXTS = [
    "  he she sat on the mat, and he met the cat.",
    "He's on the (Mat)!",
    "DOG, hex",
    "he \u200b she sat on the \xad mat",
]


def readme_ner_snippet() -> str:
    text = README.read_text()
    match = re.search(
        r"<!-- serve-ner-example -->\s*```python\n(.*?)```\s*<!-- /serve-ner-example -->",
        text,
        re.S,
    )
    assert match, "README.md lost its <!-- serve-ner-example --> block"
    return match.group(1)


def expected_entities(folder: Path, texts: list[str]) -> list[list[str]]:
    """What the snippet should print: lmshrink's split, the PyTorch model's tags at first
    sub-tokens, IOB2 spans (lmshrink's reading), as character offsets into each text."""
    from lmshrink.data.tag_schemes import tag_spans
    from lmshrink.data.words import split_words

    words = [split_words(text) for text in texts]
    lines = []
    tagged = zip(texts, words, own_predictions(folder, words), strict=True)
    for n, (text, ws, tags) in enumerate(tagged):
        offsets, end = [], 0
        for w in ws:
            start = text.index(w, end)
            end = start + len(w)
            offsets.append((start, end))
        for a, b, kind in tag_spans(tags):
            start, end = offsets[a][0], offsets[b - 1][1]
            lines.append([str(n), str(start), str(end), kind, text[start:end]])
    return lines


@pytest.mark.parametrize("which", ["teacher", "tagger"])
def test_readme_ner_serving_example_prints_the_models_entities_without_lmshrink(ner, tagger, which):
    """The snippet exactly as README has it (folder and texts replaced), lmshrink blocked:
    on the fine-tuned teacher, and on a BiLSTM tagger whose graph also reads word shapes."""
    model, served = (ner["teacher"], ner["onnx"]) if which == "teacher" else tagger.values()
    snippet = readme_ner_snippet()
    assert snippet.count('"runs/ner-bilstm/onnx"') == 1
    code = snippet.replace('"runs/ner-bilstm/onnx"', repr(str(served)))
    # (a function, not a template: the texts' repr holds backslashes, e.g. "\\u200b")
    code, n = re.subn(r"^texts = \[.*\]$", lambda _: f"texts = {TEXTS!r}", code, flags=re.M)
    assert n == 1, "the snippet's texts are no longer one `texts = [...]` line"
    run = subprocess.run(
        [sys.executable, "-c", BLOCK_LMSHRINK + code + CHECK_IMPORTS],
        capture_output=True,
        text=True,
        cwd=served.parent,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    printed = [line.split("\t") for line in run.stdout.strip().splitlines()]
    assert printed == expected_entities(model, TEXTS)
    for n, start, end, _, surface in printed:
        assert TEXTS[int(n)][int(start) : int(end)] == surface
    assert {row[0] for row in printed} == {"0", "1", "2", "3"}  # entities in every text
    if which == "teacher":  # what the teacher learned: not vacuous
        assert ["0", "2", "8", "PER", "he she"] in printed  # a two-word entity
        assert ["2", "5", "8", "PER", "hex"] in printed  # tagged at "he", its first sub-token


def test_tokenizers_alone_encode_words_as_lmshrink_does(ner):
    """The snippet's encoding (tokenizers, pre-split words, export.json's settings) gives
    the ids and word starts of lmshrink's own `encode_words`."""
    from tokenizers import Tokenizer

    from lmshrink.data.batching import encode_words
    from lmshrink.models.loading import load_tokenizer

    meta = json.loads((ner["onnx"] / "export.json").read_text())["tokenizer"]
    plain = Tokenizer.from_file(str(ner["onnx"] / "tokenizer.json"))
    plain.enable_truncation(meta["max_length"])
    words = [["he", "she", "sat"], ["a", "catalogue", "mat", "."], ["dog"] * 40]
    got = plain.encode_batch(words, is_pretokenized=True)
    want, cut = encode_words(load_tokenizer(str(ner["teacher"])), words, None, 32)
    assert cut == 10  # 40 words of one token each, 30 kept between [CLS] and [SEP]
    assert [e.ids for e in got] == want.features["input_ids"]
    starts = [
        [p for p, w in enumerate(e.word_ids) if w is not None and w != (e.word_ids[p - 1])]
        for e in got
    ]
    assert starts == want.word_starts
