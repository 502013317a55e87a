"""NER data: tag schemes, CoNLL column and JSONL readers with their one-line errors, the NER
tasks, `TokenSplit`, and the real CoNLL-2003 and WikiAnn files (counts from their README)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from lmshrink.config import DataConfig
from lmshrink.data.ner import (
    TokenSplit,
    infer_ner_labels,
    is_ner_task,
    read_ner_split,
    read_tagged_file,
    resolve_ner_task,
    tag_names,
)
from lmshrink.data.splits import Split
from lmshrink.data.tag_schemes import (
    check_iob2_labels,
    iob2_labels,
    label_types,
    parse_tag,
    tag_spans,
    to_iob2,
)
from lmshrink.data.task_kinds import TOKEN_CLASSIFICATION
from lmshrink.data.tasks import CONLL2003_TAGS, WIKIANN_TAGS, get_task
from lmshrink.errors import ConfigError, DataError

# --- tag schemes ----------------------------------------------------------------------------


def test_iob1_iob2_and_bioes_read_as_the_same_iob2_tags():
    # "EU rejects German call to boycott British lamb ." with one ORG, two MISC; the two
    # adjacent PERs at the end are separate entities.
    iob2 = ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "B-PER", "I-PER", "B-PER"]
    iob1 = ["I-ORG", "O", "I-MISC", "O", "O", "O", "I-MISC", "O", "I-PER", "I-PER", "B-PER"]
    bioes = ["S-ORG", "O", "S-MISC", "O", "O", "O", "S-MISC", "O", "B-PER", "E-PER", "S-PER"]
    assert to_iob2(iob1) == iob2
    assert to_iob2(bioes) == iob2
    assert to_iob2(iob2) == iob2
    assert tag_spans(iob2) == [(0, 1, "ORG"), (2, 3, "MISC"), (6, 7, "MISC"), (8, 10, "PER")] + [
        (10, 11, "PER")
    ]


def test_lenient_reading_of_ill_formed_sequences():
    # I- after O starts an entity; a type change inside a run starts a new one; a BIOES
    # E- without its B- is a one-word entity; an entity may end the sentence.
    assert to_iob2(["O", "I-LOC", "I-LOC"]) == ["O", "B-LOC", "I-LOC"]
    assert to_iob2(["B-PER", "I-ORG", "I-ORG"]) == ["B-PER", "B-ORG", "I-ORG"]
    assert to_iob2(["O", "E-PER", "I-PER"]) == ["O", "B-PER", "B-PER"]
    assert to_iob2(["B-LOC", "I-LOC", "E-LOC", "I-LOC"]) == ["B-LOC", "I-LOC", "I-LOC", "B-LOC"]
    assert tag_spans(["O", "B-X", "I-X"]) == [(1, 3, "X")]
    assert tag_spans([]) == [] and to_iob2([]) == []


def test_parse_tag_and_label_sets():
    assert parse_tag("O") == ("O", "")
    assert parse_tag("B-WORK-OF-ART") == ("B", "WORK-OF-ART")
    for bad in ["B", "B-", "X-PER", "PER", "o", "B_PER", "B- PER", ""]:
        with pytest.raises(ValueError):
            parse_tag(bad)
    assert iob2_labels(["PER", "LOC", "PER"]) == ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
    assert label_types(CONLL2003_TAGS) == ["PER", "ORG", "LOC", "MISC"]
    assert check_iob2_labels(CONLL2003_TAGS) is None
    assert "no O label" in check_iob2_labels(["B-PER", "I-PER"])
    assert "'B-PER' but not 'I-PER'" in check_iob2_labels(["O", "B-PER"])
    assert "BIOES" in check_iob2_labels(["O", "S-PER"])
    assert "twice" in check_iob2_labels(["O", "O"])
    assert "no entity type" in check_iob2_labels(["O"])


# --- readers ------------------------------------------------------------------------------


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_conll_column_file_with_docstart_extra_columns_and_iob1(tmp_path):
    # Space-separated, 4 columns as in the original eng.train (token POS chunk NER), IOB1
    # tags, -DOCSTART- lines, CRLF line ends and no blank line at the end.
    text = (
        "-DOCSTART- -X- -X- O\r\n\r\n"
        "EU NNP B-NP I-ORG\r\nrejects VBZ B-VP O\r\nGerman JJ B-NP I-MISC\r\n\r\n"
        "-DOCSTART- -X- -X- O\r\n"
        "Peter NNP B-NP I-PER\r\nBlackburn NNP I-NP I-PER"
    )
    tagged = read_tagged_file(write(tmp_path / "train.conll", text))
    assert tagged.words == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
    assert tagged.tags == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]
    assert [tagged.line_of(0, 2), tagged.line_of(1, 0), tagged.line_of(1, 1)] == [5, 8, 9]


def test_tab_file_keeps_tokens_with_spaces_and_one_column_is_unlabeled(tmp_path):
    tagged = read_tagged_file(write(tmp_path / "a.tsv", "New York\tB-LOC\nis\tO\n\n"))
    assert tagged.words == [["New York", "is"]] and tagged.tags == [["B-LOC", "O"]]
    plain = read_tagged_file(write(tmp_path / "b.txt", "EU\nrejects\n\nGerman\n"))
    assert plain.words == [["EU", "rejects"], ["German"]] and plain.tags is None


def test_jsonl_file_bioes_and_unlabeled(tmp_path):
    rows = [
        {"tokens": ["Peter", "Blackburn", "spoke"], "tags": ["B-PER", "E-PER", "O"]},
        {"tokens": ["Paris"], "tags": ["S-LOC"], "id": 7},
    ]
    path = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    tagged = read_tagged_file(path)
    assert tagged.words == [["Peter", "Blackburn", "spoke"], ["Paris"]]
    assert tagged.tags == [["B-PER", "I-PER", "O"], ["B-LOC"]]
    assert tagged.line_of(1, 0) == 2
    unlabeled = write(tmp_path / "u.jsonl", '{"tokens": ["a", "b"]}\n')
    assert read_tagged_file(unlabeled).tags is None


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("cols.tsv", "EU\tNNP\tB-ORG\nrejects\tO\n", r"cols.tsv, line 2: 2 column\(s\) but line 1"),
        ("ws.txt", "EU B-ORG\n\nNew York B-LOC\n", r"ws.txt, line 3: 3 column.*a token may not"),
        ("tag.conll", "EU B-ORG\nrejects 0\n", r"tag.conll, line 2: tag '0' is not O or B-"),
        ("last.tsv", "B-ORG\tEU\n", r"last.tsv, line 1: tag 'EU'.*the tag is the last column"),
        ("empty.tsv", "", r"empty.tsv: no sentences"),
        ("blank.conll", "\n\n-DOCSTART- O\n\n", r"blank.conll: no sentences"),
        ("tok.tsv", "EU\tB-ORG\n\tO\n", r"tok.tsv, line 2: the token is empty"),
        ("utf.tsv", b"EU\tB-ORG\ncaf\xe9\tO\n", r"utf.tsv: not valid UTF-8 text at line 2"),
        ("d.jsonl", '{"tokens": ["a", "b"], "tags": ["O"]}\n', r"line 1: 2 tokens but 1 tags"),
        ("j.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["b"]}\n', r"line 2: this obj"),
        ("k.jsonl", '{"tokens": ["a"], "tags": ["B-X"]}\n\n[1]\n', r"k.jsonl, line 3: expected"),
        ("e.jsonl", '{"tokens": ["a"], "tags": ["Q"]}\n', r"e.jsonl, line 1: tag 'Q'"),
        ("t.jsonl", '{"tokens": ["a", ""], "tags": ["O", "O"]}\n', r"line 1: token 1 is ''"),
        ("x.jsonl", '{"tokens": ["a"]\n', r"x.jsonl, line 1: not valid JSON"),
        ("data.csv", "a,O\n", r"data.csv: unsupported NER file type '.csv'"),
    ],
)
def test_bad_files_name_the_file_and_line(tmp_path, name, content, message):
    with pytest.raises(DataError, match=message) as info:
        read_tagged_file(write(tmp_path / name, content))
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope.tsv: file not found; check --dev-file"):
        read_tagged_file(tmp_path / "nope.tsv", "check --dev-file")


# --- TokenSplit -------------------------------------------------------------------------------


def test_token_split_subset_and_fingerprint_mirror_split():
    words = [[f"w{i}", "x"] for i in range(20)]
    labels = [[i % 3, 0] for i in range(20)]
    langs = ["en" if i % 2 else "de" for i in range(20)]
    split = TokenSplit("wikiann", "train", "mem", words, labels, langs)
    sub = split.subset(5, seed=3)
    # the same rows Split.subset picks for the same n and seed
    plain = Split("t", "train", "mem", [(str(i),) for i in range(20)], list(range(20)))
    keep = [int(t[0]) for t in plain.subset(5, seed=3).texts]
    assert sub.words == [words[i] for i in keep] and sub.labels == [labels[i] for i in keep]
    assert sub.languages == [langs[i] for i in keep] and len(sub) == 5 and sub.num_words == 10
    assert split.subset(0, 1) is split and split.subset(20, 1) is split
    fp = split.fingerprint()
    assert len(fp) == 16 and fp == TokenSplit("x", "dev", "y", words, labels, langs).fingerprint()
    relabelled = [[1, 1]] + labels[1:]
    assert TokenSplit("a", "b", "c", words, relabelled, langs).fingerprint() != fp
    assert TokenSplit("a", "b", "c", words, labels, ["en"] * 20).fingerprint() != fp
    assert TokenSplit("a", "b", "c", words, None).fingerprint() != fp
    assert tag_names([0, 2, -100], ("O", "B-X", "I-X")) == ["O", "I-X", "O"]


# --- tasks ----------------------------------------------------------------------------------


def test_ner_tasks_are_token_classification():
    assert is_ner_task("CoNLL-2003") and is_ner_task("custom-ner") and not is_ner_task("sst2")
    assert resolve_ner_task(DataConfig(task="sst2")) is None
    assert resolve_ner_task(DataConfig(task="custom")) is None
    conll = resolve_ner_task(DataConfig(task="conll2003"))
    assert conll.kind is TOKEN_CLASSIFICATION and conll.num_labels == 9
    assert conll.labels == CONLL2003_TAGS and conll.metrics == ("entity_f1",)
    wiki = resolve_ner_task(DataConfig(task="wikiann"), ["EN", "de"])
    assert wiki.languages == ("en", "de") and wiki.labels == WIKIANN_TAGS
    assert wiki.metrics == ("entity_f1_lang_mean",) and wiki.kind is TOKEN_CLASSIFICATION
    with pytest.raises(ConfigError, match="wikiann task needs --languages"):
        resolve_ner_task(DataConfig(task="wikiann"), [])
    with pytest.raises(ConfigError, match="lists en twice"):
        resolve_ner_task(DataConfig(task="wikiann"), ["en", "de", "en"])
    with pytest.raises(ConfigError, match="--languages applies to the wikiann task only"):
        resolve_ner_task(DataConfig(task="conll2003"), ["en"])
    assert get_task("conll03") is conll and get_task("PAN-X", ["hi"]).languages == ("hi",)
    with pytest.raises(ConfigError, match=r"unknown task 'ner'; .*conll2003, wikiann.*custom-ner"):
        get_task("ner")


def test_custom_ner_infers_or_checks_the_label_set(tmp_path):
    train = write(tmp_path / "train.conll", "EU\tS-ORG\nin\tO\nParis\tS-LOC\n\n")
    dev = write(tmp_path / "dev.jsonl", json.dumps({"tokens": ["x", "y"], "tags": ["O", "I-PER"]}))
    cfg = DataConfig(task="custom-ner", train_file=str(train), dev_file=str(dev))
    task = resolve_ner_task(cfg)
    assert task.labels == ("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG")
    assert task.kind is TOKEN_CLASSIFICATION and set(task.splits) == {"train", "dev"}
    got = read_ner_split(task, "train", cfg)
    assert got.words == [["EU", "in", "Paris"]] and got.labels == [[3, 0, 1]]
    assert got.languages is None and got.source == str(train)
    with pytest.raises(DataError, match=r"dev.jsonl, line 1: entity type 'PER' is not .*--labels"):
        read_ner_split(task, "dev", cfg)
    given = resolve_ner_task(
        DataConfig(task="custom-ner", dev_file=str(dev), labels=["O", "B-PER", "I-PER"])
    )
    assert read_ner_split(given, "dev", cfg).labels == [[0, 1]]  # I- after O read as B-
    with pytest.raises(ConfigError, match="not an IOB2 label set: it has 'B-PER' but not"):
        resolve_ner_task(DataConfig(task="custom-ner", dev_file=str(dev), labels=["O", "B-PER"]))
    with pytest.raises(ConfigError, match="needs --train-file and/or --dev-file"):
        resolve_ner_task(DataConfig(task="custom-ner"))
    with pytest.raises(ConfigError, match="leave out --regression and --text-columns"):
        resolve_ner_task(DataConfig(task="custom-ner", dev_file=str(dev), regression=True))
    with pytest.raises(ConfigError, match="custom-ner has no split 'test'"):
        read_ner_split(task, "test", cfg)


def test_label_inference_needs_entities(tmp_path):
    only_o = write(tmp_path / "o.tsv", "a\tO\nb\tO\n\n")
    with pytest.raises(DataError, match=r"o.tsv: every tag is O"):
        infer_ner_labels(only_o)
    untagged = write(tmp_path / "u.txt", "a\nb\n")
    with pytest.raises(DataError, match=r"u.txt: the file has no tags"):
        infer_ner_labels(untagged)


def test_ner_folders_are_checked(tmp_path):
    conll = resolve_ner_task(DataConfig(task="conll2003"))
    with pytest.raises(ConfigError, match="pass --data-dir with the folder holding conll2003/"):
        read_ner_split(conll, "train", DataConfig(task="conll2003"))
    with pytest.raises(DataError, match="no conll2003/ folder here"):
        read_ner_split(conll, "train", DataConfig(task="conll2003", data_dir=str(tmp_path)))
    # --data-dir may also be the task's folder itself
    write((tmp_path / "conll2003").mkdir() or tmp_path / "conll2003" / "dev.tsv", "EU\tB-ORG\n")
    direct = DataConfig(task="conll2003", data_dir=str(tmp_path / "conll2003"))
    assert read_ner_split(conll, "dev", direct).labels == [[3]]
    (tmp_path / "wikiann" / "en").mkdir(parents=True)
    write(tmp_path / "wikiann" / "en" / "dev.tsv", "Berlin\tB-LOC\n\nxx\tO\n")
    wiki = resolve_ner_task(DataConfig(task="wikiann"), ["en", "fr"])
    with pytest.raises(DataError, match=r"fr/dev.tsv: file not found; the languages in .* are en"):
        read_ner_split(wiki, "dev", DataConfig(task="wikiann", data_dir=str(tmp_path)))


# --- the real files -------------------------------------------------------------------------


def entity_counts(split: TokenSplit, labels: tuple[str, ...]) -> Counter:
    return Counter(kind for row in split.labels for _, _, kind in tag_spans(tag_names(row, labels)))


def test_real_conll2003_counts(shared_ner):
    cfg = DataConfig(task="conll2003", data_dir=str(shared_ner))
    task = resolve_ner_task(cfg)
    expected = {  # sentences, tokens, PER, ORG, LOC, MISC (the data README)
        "train": (14041, 203621, 6600, 6321, 7140, 3438),
        "dev": (3250, 51362, 1842, 1341, 1837, 922),
        "test": (3453, 46435, 1617, 1661, 1668, 702),
    }
    for name, (sentences, tokens, *entities) in expected.items():
        split = read_ner_split(task, name, cfg)
        assert (len(split), split.num_words) == (sentences, tokens)
        counts = entity_counts(split, task.labels)
        assert [counts[t] for t in ("PER", "ORG", "LOC", "MISC")] == entities
    assert split.languages is None and split.source.endswith("conll2003/test.tsv")


def test_real_wikiann_dev_in_two_languages(shared_ner):
    cfg = DataConfig(task="wikiann", data_dir=str(shared_ner))
    task = resolve_ner_task(cfg, ["en", "zh"])
    split = read_ner_split(task, "dev", cfg)
    assert Counter(split.languages) == {"en": 10000, "zh": 10000}
    assert split.languages[:1] == ["en"] and split.languages[-1] == "zh"
    words = Counter()
    for lang, sentence in zip(split.languages, split.words, strict=True):
        words[lang] += len(sentence)
    assert words == {"en": 80536, "zh": 213682}
    half = len(split) // 2
    english = TokenSplit("w", "dev", "", split.words[:half], split.labels[:half])
    chinese = TokenSplit("w", "dev", "", split.words[half:], split.labels[half:])
    counts = entity_counts(english, task.labels)
    assert [counts[t] for t in ("PER", "ORG", "LOC")] == [4635, 4677, 4834]
    # The README counts zh's B- tags (3,845 / 3,950 / 4,222); its 476 I- tags after O start
    # entities of their own here, as in seqeval and conlleval.
    counts = entity_counts(chinese, task.labels)
    assert [counts[t] for t in ("PER", "ORG", "LOC")] == [3916, 4263, 4314]
    assert sum(counts.values()) == 3845 + 3950 + 4222 + 476
