"""The fastText student: one text rule, deterministic training, label ids in and out, and
one-line errors."""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fasttext")

from lmshrink.errors import (  # noqa: E402
    ConfigError,
    DataError,
    LmshrinkError,
    MissingDependencyError,
    ModelError,
    TrainingError,
)
from lmshrink.search import fasttext_student as fs  # noqa: E402
from lmshrink.search.fasttext_student import (  # noqa: E402
    FastTextServer,
    FastTextSettings,
    preprocess,
    require_fasttext,
    teacher_hard_labels,
    train_fasttext,
)

FILLER = (  # noqa: SIM905 (a word list reads best as words)
    "the a movie film plot actors story was is it this that and with very quite rather "
    "scenes ending music cast director script"
).split()
KEYS = {0: "bad", 1: "good", 2: "okay"}
NAMES = ["negative", "positive"]
# Small and fast: a 10k-bucket, 10-dimensional model trains in well under a second.
SMALL = FastTextSettings(dim=10, bucket=10_000, epoch=10, lr=0.5)


def toy(n: int = 300, labels: tuple[int, ...] = (0, 1, 1), seed: int = 0):
    """Sentences of 6 to 10 words; each holds the key word of its label ("good" for 1).
    Label 1 is twice as frequent as 0, so fastText's own label order (by count) is the
    reverse of the id order, and a mapping that trusted it would swap the labels."""
    rng = random.Random(seed)
    texts, ids = [], []
    for i in range(n):
        label = labels[i % len(labels)]
        words = rng.choices(FILLER, k=rng.randint(5, 9))
        words.insert(rng.randint(0, len(words)), KEYS[label])
        texts.append((" ".join(words),))
        ids.append(label)
    return texts, ids


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fasttext") / "student"
    texts, labels = toy()
    metadata = train_fasttext(texts, labels, NAMES, folder, SMALL, seed=3)
    return folder, metadata


# --- preprocess ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        (("Hello, World!",), "hello , world !"),
        (("GREAT movie",), "great movie"),
        (("don't stop...",), "don ' t stop . . ."),
        (("a\tb\nc\r\n  d\x0be",), "a b c d e"),  # fastText reads one example a line
        (("a\x00b\x07c",), "a b c"),  # control characters only separate
        (("Café NAÏVE 3.5%",), "café naïve 3 . 5 %"),
        (("__label__1 x__sep__y",), "_ _ label _ _ 1 x _ _ sep _ _ y"),  # never a label
        (("It's GOOD.", "Bad?"), "it ' s good . __sep__ bad ?"),
        (("", "x"), " __sep__ x"),
        (("",), ""),
        ("Plain string", "plain string"),  # a str is one text
    ],
)
def test_preprocess_rule(fields, line):
    assert preprocess(fields) == line


def test_the_rule_written_down_reproduces_preprocess():
    # A server without lmshrink: only `re` and the folder's metadata.
    rule = json.loads(json.dumps(fs.PREPROCESSING))
    example = rule["example"]
    assert preprocess(tuple(example["input"])) == example["output"]

    def server_side(fields):
        texts = [" ".join(re.findall(rule["token_regex"], t.lower())) for t in fields]
        return f" {rule['separator']} ".join(texts)

    for fields in [("Don't\tstop!", "It's GREAT."), ("x_y — «z» 😀\nw",), ("İSTANBUL",)]:
        assert server_side(fields) == preprocess(fields)


# --- training and serving ----------------------------------------------------------------


def test_one_thread_training_is_deterministic(tmp_path, trained):
    first, _ = trained
    texts, labels = toy()
    # Another model trained in between must not change the next one (fastText leaves most
    # of its input matrix uninitialized; see _train_in_subprocess).
    other = FastTextSettings(dim=20, bucket=5_000, epoch=3, lr=0.3)
    train_fasttext(texts, labels, NAMES, tmp_path / "other", other, seed=3)
    train_fasttext(texts, labels, NAMES, tmp_path / "again", SMALL, seed=3)
    assert (tmp_path / "again" / "model.bin").read_bytes() == (first / "model.bin").read_bytes()
    probe, _ = toy(40, seed=9)
    a = FastTextServer.from_folder(first).predict_proba(probe)
    b = FastTextServer.from_folder(tmp_path / "again").predict_proba(probe)
    np.testing.assert_array_equal(a, b)
    # ... and the seed is used: another seed gives another model (fastText seeds 0 and 1
    # are the same, so 3 and 5).
    train_fasttext(texts, labels, NAMES, tmp_path / "seed5", SMALL, seed=5)
    assert (tmp_path / "seed5" / "model.bin").read_bytes() != (first / "model.bin").read_bytes()


def test_labels_come_back_as_ids_in_label_order(trained):
    folder, _ = trained
    server = FastTextServer.from_folder(folder)
    # fastText ranks label 1 first (it is the more frequent); ids must not follow that.
    assert server.model.get_labels()[0] == "__label__1"
    texts = [("a good movie with a good cast",), ("a bad film and a bad script",)]
    predicted = server.predict(texts)
    assert predicted.dtype == np.int64 and predicted.shape == (2,)
    assert [NAMES[i] for i in predicted] == ["positive", "negative"]
    proba = server.predict_proba(texts)
    assert proba.shape == (2, 2)
    assert proba[0, 1] > 0.9 and proba[1, 0] > 0.9


def test_predict_is_the_argmax_of_predict_proba_and_rows_sum_to_one(trained):
    server = FastTextServer.from_folder(trained[0])
    probe, gold = toy(60, seed=11)
    probe += [("",), ("unknown words only",), ("good bad",)]
    proba = server.predict_proba(probe)
    assert (proba >= 0).all()
    # fastText's +1e-5 per label taken off again: the rows of a softmax sum to 1.
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=5e-6)
    np.testing.assert_array_equal(server.predict(probe), proba.argmax(axis=1))
    assert (server.predict(probe[:60]) == np.array(gold)).mean() == 1.0
    assert server.predict([]).shape == (0,)
    assert server.predict_proba([]).shape == (0, 2)


def test_a_label_never_seen_in_training_gets_probability_zero(tmp_path):
    texts, labels = toy(labels=(0, 2, 2))  # label 1 ("positive") never appears
    names = ["negative", "positive", "neutral"]
    train_fasttext(texts, labels, names, tmp_path, SMALL)
    server = FastTextServer.from_folder(tmp_path)
    proba = server.predict_proba([("an okay film",), ("a bad film",)])
    assert proba.shape == (2, 3)
    assert (proba[:, 1] == 0).all()
    assert server.predict([("an okay film",), ("a bad film",)]).tolist() == [2, 0]


def test_folder_round_trip_and_metadata(trained):
    folder, metadata = trained
    assert sorted(p.name for p in folder.iterdir()) == ["fasttext.json", "model.bin"]
    saved = json.loads((folder / "fasttext.json").read_text())
    assert saved == metadata
    assert saved["format"] == fs.FORMAT
    assert saved["labels"] == NAMES
    assert saved["train_rows"] == 300 and saved["fields"] == 1 and saved["seed"] == 3
    assert saved["settings"] == {
        "dim": 10,
        "word_ngrams": 2,
        "epoch": 10,
        "lr": 0.5,
        "min_count": 1,
        "bucket": 10_000,
        "loss": "softmax",
    }
    assert saved["preprocessing"]["token_regex"] == fs.TOKEN_PATTERN
    assert saved["model_bytes"] == (folder / "model.bin").stat().st_size
    assert "0.9.2" in saved["fasttext_version"]
    server = FastTextServer.from_folder(str(folder))
    assert server.label_names == NAMES and server.fields == 1


def test_sentence_pairs_train_and_serve(tmp_path):
    texts, labels = toy()
    pairs = [(text, "and the second text") for (text,) in texts]
    metadata = train_fasttext(pairs, labels, NAMES, tmp_path, SMALL)
    assert metadata["fields"] == 2
    server = FastTextServer.from_folder(tmp_path)
    assert server.predict([("a good film", "more"), ("a bad film", "more")]).tolist() == [1, 0]
    with pytest.raises(DataError, match="reads 2"):
        server.predict([("only one text",)])


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("texts", "labels", "message"),
    [
        ([], [], "no rows"),
        ([("a",), ("b",)], [0], "2 texts but 1 labels"),
        ([("a",), ("b",)], [0, 2], "label id 2"),
        ([("a",), ("b",)], [0, -1], "label id -1"),
        ([("a",), ("b",)], [0, True], "label id True"),
        ([("a",), ("b",)], [0, 0.5], "label id 0.5"),
        ([("a",), ("b", "c")], [0, 1], "row 1"),
        ([("a",), (None,)], [0, 1], "row 1"),
    ],
)
def test_bad_training_inputs_are_one_line_config_errors(tmp_path, texts, labels, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        train_fasttext(texts, labels, NAMES, tmp_path / "out", SMALL)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"loss": "ns-typo"}, "loss"),
        ({"bucket": 0}, "bucket"),  # with word bigrams fastText would divide by zero
        ({"lr": 0.0}, "lr"),
        ({"dim": 0}, "dim"),
    ],
)
def test_bad_settings_are_refused_before_training(tmp_path, changes, message):
    settings = FastTextSettings(**{**SMALL.__dict__, **changes})
    with pytest.raises(ConfigError, match=message):
        train_fasttext(*toy(30), NAMES, tmp_path / "out", settings)
    assert not (tmp_path / "out").exists()


def test_words_only_model_needs_no_buckets(tmp_path):
    settings = FastTextSettings(**{**SMALL.__dict__, "word_ngrams": 1, "bucket": 0})
    train_fasttext(*toy(), NAMES, tmp_path, settings)
    assert FastTextServer.from_folder(tmp_path).predict([("so good",)]).tolist() == [1]


def test_divergence_is_a_training_error_that_suggests_a_lower_lr(tmp_path):
    settings = FastTextSettings(**{**SMALL.__dict__, "lr": 100.0})
    with pytest.raises(TrainingError, match="lower its lr") as error:
        train_fasttext(*toy(), NAMES, tmp_path / "out", settings)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()  # no empty folder, no training file left


def test_another_fasttext_failure_is_a_one_line_error(tmp_path):
    request = {
        "path": str(Path(require_fasttext().__file__).resolve().parents[1]),
        "out": str(tmp_path / "model.bin"),
        "args": {"input": str(tmp_path / "missing.txt"), "verbose": 0},
    }
    with pytest.raises(LmshrinkError, match="fastText could not train") as error:
        fs._train_in_subprocess(request, lr=0.1)
    assert not isinstance(error.value, TrainingError)
    assert "\n" not in str(error.value)


def test_a_folder_without_the_model_files_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="missing model.bin and fasttext.json"):
        FastTextServer.from_folder(tmp_path)


def test_a_damaged_or_foreign_folder_is_a_model_error(tmp_path, trained):
    source, metadata = trained
    folder = tmp_path / "copy"
    folder.mkdir()
    data = (source / "model.bin").read_bytes()
    (folder / "fasttext.json").write_text(json.dumps(metadata))
    (folder / "model.bin").write_bytes(data[: len(data) // 2])  # fastText would load this
    with pytest.raises(ModelError, match="truncated"):
        FastTextServer.from_folder(folder)
    (folder / "model.bin").write_bytes(data)
    (folder / "fasttext.json").write_text(json.dumps({**metadata, "format": "other/1"}))
    with pytest.raises(ModelError, match="format 'other/1'"):
        FastTextServer.from_folder(folder)
    (folder / "fasttext.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        FastTextServer.from_folder(folder)


def test_require_fasttext_names_the_package_to_install(monkeypatch):
    assert require_fasttext() is sys.modules["fasttext"]
    monkeypatch.setitem(sys.modules, "fasttext", None)  # makes `import fasttext` fail
    with pytest.raises(MissingDependencyError, match="pip install fasttext-numpy2-wheel"):
        require_fasttext()


# --- teacher labels ----------------------------------------------------------------------


def test_teacher_hard_labels_take_the_argmax():
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 1.0, 0.0], [0.5, 0.5, 0.2]], dtype=np.float32)
    assert teacher_hard_labels(logits) == [1, 0, 0]  # a tie goes to the first label


def test_teacher_hard_labels_read_torch_tensors():
    torch = pytest.importorskip("torch")
    logits = torch.tensor([[0.0, 1.0], [2.0, -2.0]], requires_grad=True)
    assert teacher_hard_labels(logits) == [1, 0]


@pytest.mark.parametrize(
    ("logits", "error"),
    [
        (np.zeros(4), ConfigError),  # not [N, C]
        (np.zeros((4, 1)), ConfigError),  # regression
        (np.array([[0.0, 1.0], [np.nan, 0.0]]), DataError),
    ],
)
def test_teacher_hard_labels_refuse_what_is_not_classification(logits, error):
    with pytest.raises(error):
        teacher_hard_labels(logits)
