"""Token-classification (NER) teachers whose tokenizer is not WordPiece: a SentencePiece-style
Unigram (XLM-R) and a byte-level BPE (RoBERTa), both trained here on made-up text, with tiny
random models. Words must be read at their first sub-token, whatever marks a word's start
(XLM-R's "▁", RoBERTa's "Ġ"), through encode_words, finetune, evaluate, ONNX export and a
BiLSTM distillation."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from test_distill_tokens import write_conll_folder

from lmshrink.data.task_kinds import IGNORE_INDEX, TOKEN_CLASSIFICATION
from lmshrink.data.tasks import CONLL2003_TAGS, get_task

KINDS = ("sentencepiece", "bpe")
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-R's ids 0-4

# O words: made of a few syllables, so that the tokenizers learn pieces of them and cut the
# rarer ones into several pieces.
SYLLABLES = ["ka", "lo", "mi", "ne", "ra", "to", "su", "vi", "de", "ba"]
# Entity words with non-ASCII letters (Latin accents, ß, Cyrillic), and CJK place names
# written as WikiAnn's Chinese is: one character per word.
PERSONS = ["Renée", "Jürgen", "Пётр", "Zoë"]
PLACES = ["Zürich", "Straßburg", "Москва", "Ålesund"]
CJK_PLACES = [["東", "京"], ["北", "京"], ["大", "阪"]]


def lexicon(seed: int = 0) -> list[str]:
    """The O words: one to three syllables each."""
    rng = random.Random(seed)
    return sorted({"".join(rng.choices(SYLLABLES, k=rng.randint(1, 3))) for _ in range(120)})


def ner_sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """(words, IOB2 tags): four O words with a person, a place and a CJK place each put in
    with probability 0.6."""
    rng = random.Random(seed)
    words_o = lexicon()
    rows = []
    for _ in range(n):
        words, tags = rng.sample(words_o, 4), ["O"] * 4
        for kind, names in (("PER", PERSONS), ("LOC", PLACES), ("LOC", CJK_PLACES)):
            if rng.random() < 0.6:
                name = rng.choice(names)
                name = name if isinstance(name, list) else [name]
                at = rng.randint(0, len(words))
                words[at:at] = name
                tags[at:at] = [f"B-{kind}"] + [f"I-{kind}"] * (len(name) - 1)
        rows.append((words, tags))
    return rows


def training_text() -> list[str]:
    """What the tokenizers learn their pieces from: a few hundred sentences, and compounds of
    most names (Unigram training finds a piece only in a substring of several distinct
    words), so that a name is most often one piece, as in a real vocabulary; Straßburg and
    Москва are not, so that their first sub-token is a bare "▁" in the Unigram vocabulary."""
    rng = random.Random(5)
    names = [n for n in PERSONS + PLACES if n not in ("Straßburg", "Москва")]
    compounds = [" ".join(n + rng.choice(SYLLABLES) for n in names) for _ in range(3)]
    return [" ".join(words) + " ." for words, _ in ner_sentences(300, seed=100)] + compounds


def bytes_to_unicode() -> dict[int, str]:
    """Byte-level BPE's printable stand-in for each byte (GPT-2's table): printable Latin-1
    bytes stand for themselves, the others are shifted past 255."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    table, shift = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shift)
            shift += 1
    return table


BYTE_OF = {c: b for b, c in bytes_to_unicode().items()}


def piece_bytes(tokenizer, token_id: int) -> bytes:
    """The text bytes one token stands for, its word-start mark ("▁" or "Ġ") as a space."""
    token = tokenizer.convert_ids_to_tokens(token_id)
    if "ByteLevel" in tokenizer.backend_tokenizer.to_str():
        return bytes(BYTE_OF[c] for c in token)
    return token.replace("▁", " ").encode()


def save_tiny_tagger(config_class: type, model_class: type, tokenizer: Any, folder: Path) -> Path:
    """A random 2-layer, hidden-32 token classifier of `model_class` over `tokenizer`'s
    vocabulary (conll2003's tags), saved with the tokenizer into `folder`."""
    import torch

    torch.manual_seed(0)
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **TOKEN_CLASSIFICATION.head_settings(CONLL2003_TAGS),
    )
    model_class(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_sentencepiece(folder: Path) -> Path:
    """A tiny XLM-R token classifier with a Unigram tokenizer trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification, XLMRobertaTokenizer

    backend = Tokenizer(models.Unigram())
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=300, special_tokens=SPECIALS, unk_token="<unk>", show_progress=False
    )
    backend.train_from_iterator(training_text(), trainer)
    tokenizer = XLMRobertaTokenizer(tokenizer_object=backend)
    return save_tiny_tagger(XLMRobertaConfig, XLMRobertaForTokenClassification, tokenizer, folder)


def build_bpe(folder: Path) -> Path:
    """A tiny RoBERTa token classifier with a byte-level BPE tokenizer trained here, saved as
    roberta-base's is: with add_prefix_space=False, which pre-split words cannot use."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import RobertaConfig, RobertaForTokenClassification, RobertaTokenizer

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(training_text(), trainer)
    model = json.loads(backend.to_str())["model"]
    tokenizer = RobertaTokenizer(
        vocab=model["vocab"],
        merges=[tuple(m) for m in model["merges"]],
        add_prefix_space=False,
    )
    return save_tiny_tagger(RobertaConfig, RobertaForTokenClassification, tokenizer, folder)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """{kind: model folder} of the two tiny random token classifiers (conll2003's 9 tags)."""
    root = tmp_path_factory.mktemp("tokenizers")
    return {
        "sentencepiece": build_sentencepiece(root / "xlmr"),
        "bpe": build_bpe(root / "roberta"),
    }


def load(folder: Path):
    """The tokenizer as lmshrink loads it for a token task."""
    from lmshrink.models.loading import load_tokenizer

    return load_tokenizer(str(folder), words=True)


# --- encode_words ---------------------------------------------------------------------------


def word_pieces(tokenizer, word: str) -> list[int]:
    """The ids of one word encoded on its own (no special tokens): the oracle."""
    return tokenizer.backend_tokenizer.encode(word, add_special_tokens=False).ids


SENTENCE = ["Renée", "kalomi", "Straßburg", "Москва", "東", "京", "debavi", "Zoë", "ka", "."]


def first_positions(word_ids: list[int | None]) -> list[int]:
    """The position of each word's first sub-token, from a tokenizer's word ids."""
    return [t for t, w in enumerate(word_ids) if w is not None and (t == 0 or word_ids[t - 1] != w)]


@pytest.mark.parametrize("kind", KINDS)
def test_tags_land_on_each_words_first_sub_token(models, kind):
    from lmshrink.data.batching import encode_words

    tokenizer = load(models[kind])
    # byte-level BPE also reads letters it never saw, byte by byte: "Ł" is two pieces
    sentence = SENTENCE + (["Łódź"] if kind == "bpe" else [])
    tags = list(range(1, len(sentence) + 1))
    enc, cut = encode_words(tokenizer, [sentence], [tags], max_length=64)
    ids, labels, starts = enc.features["input_ids"][0], enc.labels[0], enc.word_starts[0]
    pieces = [word_pieces(tokenizer, w) for w in sentence]
    assert cut == 0
    assert any(len(p) >= 3 for p in pieces) and any(len(p) == 1 for p in pieces)
    # <s> word pieces ... </s>, each word's pieces where the oracle puts them
    expected_starts = [1 + sum(len(p) for p in pieces[:j]) for j in range(len(sentence))]
    assert starts == expected_starts
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert len(ids) == 2 + sum(len(p) for p in pieces)
    for j, word in enumerate(sentence):
        span = ids[starts[j] : starts[j] + len(pieces[j])]
        assert span == pieces[j]
        # the word's pieces spell " word" (its start mark, then the word), and the first
        # sub-token is where the word begins
        text = b"".join(piece_bytes(tokenizer, i) for i in span)
        assert text == (" " + word).encode(), (word, tokenizer.convert_ids_to_tokens(span))
        first = piece_bytes(tokenizer, span[0])
        assert first.startswith(b" ") and text.startswith(first)
    # the tag on each first sub-token, IGNORE_INDEX on the rest and on the special tokens
    expected = [IGNORE_INDEX] * len(ids)
    for j, pos in enumerate(starts):
        expected[pos] = tags[j]
    assert labels == expected


@pytest.mark.parametrize("kind", KINDS)
def test_truncation_counts_the_words_it_cuts(models, kind, capsys):
    from lmshrink.data.batching import encode
    from lmshrink.data.ner import TokenSplit

    tokenizer = load(models[kind])
    pieces = [word_pieces(tokenizer, w) for w in SENTENCE]
    # Cut inside a word of several pieces (past the first two words, so that words are kept
    # and cut): its first piece stays, so the word is kept; the words after it are cut.
    j = next(j for j, p in enumerate(pieces) if len(p) >= 2 and j >= 2)
    start = 1 + sum(len(p) for p in pieces[:j])
    max_length = start + 2  # <s> ... the word's first piece, </s>
    split = TokenSplit("conll2003", "dev", "dev.tsv", [SENTENCE, ["ka"]], [[0] * 10, [0]])
    enc = encode(tokenizer, split, max_length)
    assert enc.word_starts[0] == [1 + sum(len(p) for p in pieces[:k]) for k in range(j + 1)]
    assert enc.lengths[0] == max_length
    assert enc.features["input_ids"][0][start:] == [pieces[j][0], tokenizer.eos_token_id]
    assert enc.word_starts[1] == [1]
    cut = len(SENTENCE) - (j + 1)
    assert f"{cut:,} of 11 words are past --max-length {max_length}" in capsys.readouterr().err


# --- finetune, evaluate, export, distill ----------------------------------------------------


@pytest.fixture(scope="module")
def ner_data(tmp_path_factory) -> dict[str, Path]:
    """A conll2003 folder (train 120, dev 40 sentences) and a transfer file of 60 sentences
    written as text."""
    root = tmp_path_factory.mktemp("ner-data")
    write_conll_folder(root / "data", train=120, dev=40, sentences=ner_sentences)
    transfer = root / "unlabeled.txt"
    text = "".join(" ".join(w) + ".\n" for w, _ in ner_sentences(60, 9))
    transfer.write_text(text, encoding="utf-8")
    return {"data": root / "data", "transfer": transfer}


def data_config(ner_data, **extra):
    from lmshrink.config import DataConfig

    return DataConfig(task="conll2003", data_dir=str(ner_data["data"]), max_length=32, **extra)


@pytest.fixture(scope="module")
def teachers(models, ner_data, tmp_path_factory) -> dict[str, dict]:
    """Each tokenizer's model fine-tuned on the conll2003 folder: {kind: finetune's result,
    with `folder`}."""
    from lmshrink.config import TrainConfig
    from lmshrink.finetune import FinetuneConfig, finetune

    root = tmp_path_factory.mktemp("teachers")
    out = {}
    for kind in KINDS:
        cfg = FinetuneConfig(
            model=str(models[kind]),
            out=str(root / kind),
            seed=42,
            progress=False,
            data=data_config(ner_data),
            train=TrainConfig(epochs=10, batch_size=16, lr=4e-3, eval_batch_size=64),
        )
        out[kind] = {**finetune(cfg), "folder": root / kind}
    return out


def dev_words() -> list[list[str]]:
    """The words of the dev sentences ner_data writes."""
    return [words for words, _ in ner_sentences(40, 2)]


# The dev entity F1 each fine-tuned teacher reaches at least. The Unigram teacher's is lower:
# Straßburg, Москва and the CJK characters begin with a bare "▁", the same first sub-token for
# all of them, so the tiny model must tell them apart from the next token (about 0.6).
F1_FLOOR = {"sentencepiece": 0.5, "bpe": 0.9}
MODEL_TYPES = {"sentencepiece": "xlm-roberta", "bpe": "roberta"}


@pytest.mark.parametrize("kind", KINDS)
def test_finetune_evaluate_and_export(teachers, ner_data, kind, tmp_path):
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from lmshrink.data.batching import collate, encode_words
    from lmshrink.evaluate import EvaluateConfig, evaluate
    from lmshrink.export import ExportConfig, export
    from lmshrink.models.loading import load_for_eval
    from lmshrink.training.inference import predict_words

    teacher = teachers[kind]["folder"]
    data = data_config(ner_data)
    result = evaluate(EvaluateConfig(model=str(teacher), progress=False, data=data))
    f1 = result["metrics"]["entity_f1"]
    assert f1 >= F1_FLOOR[kind]
    assert f1 == pytest.approx(teachers[kind]["dev"]["entity_f1"])  # the weights finetune kept
    assert result["words"] == sum(len(w) for w in dev_words())  # every dev word read

    out = tmp_path / "onnx"
    meta = export(ExportConfig(model=str(teacher), out=str(out), progress=False, data=data))
    parity = meta["parity"]
    assert parity["passed"] and parity["words"] == result["words"]
    assert meta["model_type"] == MODEL_TYPES[kind]
    assert meta["inputs"] == ["input_ids", "attention_mask"]

    # Served as export.json says, with `tokenizers` and ONNX Runtime alone: the same ids as
    # lmshrink's encoding, and the same tag for every word as the PyTorch model.
    words = dev_words()[:8]
    tokenizer, model = load_for_eval(str(teacher), get_task("conll2003"))
    enc, _ = encode_words(tokenizer, words, None, 32)
    served = Tokenizer.from_file(str(out / "tokenizer.json"))
    encodings = served.encode_batch(words, is_pretokenized=True)
    assert [e.ids for e in encodings] == enc.features["input_ids"]
    batch = collate(enc, list(range(len(words))))
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {name: batch[name].numpy() for name in meta["inputs"]}
    (logits,) = session.run(["logits"], feeds)  # [B, T, C]
    expected = predict_words(model, enc, 8)
    for row, (encoding, want) in enumerate(zip(encodings, expected, strict=True)):
        firsts = first_positions(encoding.word_ids)
        assert len(firsts) == len(words[row])
        np.testing.assert_array_equal(logits[row, firsts].argmax(-1), want.argmax(-1))


def test_byte_level_bpe_reads_pre_split_words_with_a_space_before_each(models, teachers, tmp_path):
    """Regression: roberta-base's tokenizer is saved with add_prefix_space=False, and
    transformers 5 then encodes pre-split words without the space that marks a word's start
    (it used to refuse them): "ka ka" became the ids of "kaka". lmshrink loads a tokenizer that
    will read words with add_prefix_space=True, and the fine-tuned folder keeps it."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from lmshrink.data.tasks import get_task as task_named
    from lmshrink.errors import ModelError
    from lmshrink.models.loading import (
        glues_words,
        load_for_eval,
        load_for_training,
        load_tokenizer,
    )

    folder = str(models["bpe"])
    words = [["kalomi", "ka", "Zürich"]]

    def first_tokens(tokenizer) -> list[str]:
        enc = tokenizer(words, is_split_into_words=True)
        ids = enc["input_ids"][0]
        return tokenizer.convert_ids_to_tokens([ids[t] for t in first_positions(enc.word_ids(0))])

    plain = AutoTokenizer.from_pretrained(folder)
    assert glues_words(plain) and not first_tokens(plain)[1].startswith("Ġ")  # the premise
    conll = task_named("conll2003")
    for tokenizer in (
        load_for_training(folder, conll)[0],
        load_for_eval(str(teachers["bpe"]["folder"]), conll)[0],
        AutoTokenizer.from_pretrained(teachers["bpe"]["folder"]),  # as finetune saved it
    ):
        assert not glues_words(tokenizer)
        assert all(t.startswith("Ġ") for t in first_tokens(tokenizer))
    # a sentence task keeps the tokenizer as it was saved (texts, not pre-split words)
    assert glues_words(load_for_training(folder, task_named("sst2"))[0])
    assert not glues_words(load(models["sentencepiece"]))

    # A generic tokenizer class keeps the pre-tokenizer of its tokenizer.json whatever
    # add_prefix_space says: refused with the fix, rather than glued.
    backend = Tokenizer.from_file(str(models["bpe"] / "tokenizer.json"))
    generic = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>")
    generic.save_pretrained(tmp_path / "generic")
    assert glues_words(load_tokenizer(str(tmp_path / "generic")))  # texts: loaded as saved
    with pytest.raises(ModelError, match=r"save the tokenizer with add_prefix_space=True"):
        load_tokenizer(str(tmp_path / "generic"), words=True)


def test_a_bilstm_tagger_distils_from_the_sentencepiece_teacher(teachers, ner_data, tmp_path):
    import torch
    from test_distill_tokens import quick_token_stages
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from lmshrink.config import from_dict
    from lmshrink.data.batching import encode_words
    from lmshrink.distill import DistillConfig, distill
    from lmshrink.training.inference import predict_words

    teacher = teachers["sentencepiece"]
    raw = {
        "teacher": str(teacher["folder"]),
        "out": str(tmp_path / "run"),
        "progress": False,
        "measure_speed": False,
        "data": {"task": "conll2003", "data_dir": str(ner_data["data"]), "max_length": 32},
        "transfer": {"files": [str(ner_data["transfer"])], "min_words": 1},
        "student": {"kind": "bilstm", "embedding_dim": 8, "hidden_size": 8},
        "stages": quick_token_stages(),
    }
    report = distill(from_dict(DistillConfig, raw))
    assert report["student_kind"] == "bilstm"
    assert report["dev"]["teacher"]["entity_f1"] == pytest.approx(teacher["dev"]["entity_f1"])
    assert "entity_f1" in report["dev"]["student"]  # a few steps: it completes, no more
    assert [h["stage"] for h in report["history"]][-1] == "labels"
    cache = tmp_path / "run" / "cache"
    manifests = [json.loads(m.read_text()) for m in cache.glob("*/manifest.json")]
    assert sorted(m["num_examples"] for m in manifests) == [40, 180]  # dev; train + transfer

    folder = tmp_path / "run" / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert type(tokenizer).__name__ == "XLMRobertaTokenizer"
    student = AutoModelForTokenClassification.from_pretrained(folder)
    assert type(student).__name__ == "BiLSTMForTokenClassification"
    # Every teacher id of the training words has a row of its own, "▁" included.
    train = [words for words, _ in ner_sentences(120, 1)]
    enc, _ = encode_words(tokenizer, train, None, 32)
    seen = torch.tensor(sorted({i for row in enc.features["input_ids"] for i in row}))
    assert tokenizer.convert_tokens_to_ids("▁") in seen.tolist()
    assert (student.token_map[seen] != student.config.unk_row).all()
    dev, _ = encode_words(tokenizer, dev_words(), None, 32, word_shapes=True)
    outputs = predict_words(student, dev, 16)
    assert [o.shape for o in outputs] == [(len(w), 9) for w in dev_words()]
