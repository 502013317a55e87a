import csv
import json
import os
import re
import time
from pathlib import Path

import pytest

from lmshrink.data.augment import AugmentConfig
from lmshrink.data.splits import Split
from lmshrink.data.tasks import custom_task, get_task
from lmshrink.data.transfer import (
    TransferConfig,
    TransferSet,
    build_transfer_set,
    clean_text,
    read_unlabeled,
    split_into_sentences,
)
from lmshrink.errors import ConfigError, DataError

IMDB = Path(
    os.environ.get(
        "LMSHRINK_TRANSFER_FILE",
        Path(__file__).resolve().parents[3] / "shared" / "data" / "transfer" / "imdb_unsup_10k.txt",
    )
)

SST2 = get_task("sst2")
PAIR = custom_task("custom", ["premise", "hypothesis"], "label", ["no", "yes"], False, {})


def write_lines(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def write_table(path: Path, header: list[str], rows: list[list[str]]) -> str:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(header, r, strict=True))) + "\n" for r in rows))
        return str(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="," if path.suffix == ".csv" else "\t")
        writer.writerows([header, *rows])
    return str(path)


def train_split(texts: list[tuple[str, ...]]) -> Split:
    return Split("sst2", "train", "train.tsv", texts, [0] * len(texts))


def build(files=(), train=None, seed=0, task=SST2, **kwargs):
    cfg = TransferConfig(files=[str(f) for f in files], **kwargs)
    return build_transfer_set(cfg, task, train, seed, progress=False)


# --- clean_text -------------------------------------------------------------------------


def test_clean_text_removes_markup_and_entities_and_collapses_whitespace():
    raw = "  Great film.<br /><br />The <i>best</i> of&nbsp;1999 &amp; &#233;t&eacute;<BR>end  "
    assert clean_text(raw) == "Great film. The best of 1999 & été end"
    assert clean_text('<p class="x">One</p>\t<a href="/y">two</a>\n') == "One two"


def test_clean_text_keeps_angle_brackets_that_are_not_html():
    assert clean_text("I <3 it, <sighs> and < SPOILERS > ahead") == (
        "I <3 it, <sighs> and < SPOILERS > ahead"
    )
    assert clean_text("a<bt>b") == "a<bt>b"  # a typo, not a tag name


# --- split_into_sentences ---------------------------------------------------------------


def test_split_into_sentences_basic_boundaries():
    text = 'It was fine. Was it? Yes! "Really." (He left.) 2001 was better... The end'
    assert split_into_sentences(text) == [
        "It was fine.",
        "Was it?",
        "Yes!",
        '"Really."',
        "(He left.)",
        "2001 was better...",
        "The end",
    ]


def test_split_into_sentences_keeps_abbreviations_and_initials():
    text = (
        "Mr. Smith met Dr. Jones in the U.S. Army. Films, e.g. Alien, scare me. "
        "J. R. R. Tolkien wrote it. It cost 3.5 million. See it vs. That one."
    )
    assert split_into_sentences(text) == [
        "Mr. Smith met Dr. Jones in the U.S. Army.",
        "Films, e.g. Alien, scare me.",
        "J. R. R. Tolkien wrote it.",
        "It cost 3.5 million.",
        "See it vs. That one.",
    ]


def test_split_into_sentences_needs_space_and_capital_after_the_end():
    assert split_into_sentences("it ends. but goes on.And on") == ["it ends. but goes on.And on"]
    assert split_into_sentences("   ") == []


# --- read_unlabeled ---------------------------------------------------------------------


def test_read_txt_one_text_per_line_skipping_blank_lines(tmp_path):
    path = write_lines(tmp_path / "u.txt", ["first text", "", "  second <br /> text  ", ""])
    assert read_unlabeled(path, [], is_pair=False) == [("first text",), ("second <br /> text",)]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_read_tables_single_and_pair(tmp_path, suffix):
    header = ["id", "premise", "hypothesis"]
    rows = [["1", "a cat sat", "a cat, sitting"], ["2", "dogs bark", "dogs are loud"]]
    path = write_table(tmp_path / f"u{suffix}", header, rows)
    assert read_unlabeled(path, ["hypothesis"], is_pair=False) == [
        ("a cat, sitting",),
        ("dogs are loud",),
    ]
    pairs = read_unlabeled(path, ["premise", "hypothesis"], is_pair=True)
    assert pairs == [("a cat sat", "a cat, sitting"), ("dogs bark", "dogs are loud")]


def test_read_missing_file_names_it_and_the_option(tmp_path):
    path = str(tmp_path / "nope.txt")
    with pytest.raises(DataError, match=re.escape(f"{path}: file not found; check --transfer.")):
        read_unlabeled(path, [], is_pair=False)


@pytest.mark.parametrize(
    ("name", "content", "fix"),
    [
        ("blank.txt", "\n  \n\n", "it needs one text per line"),
        ("header.csv", "text\n", "it needs data rows with column(s) ['text']"),
        ("none.jsonl", "", "it needs data rows with column(s) ['text']"),
    ],
)
def test_read_empty_file_names_it(tmp_path, name, content, fix):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=re.escape(f"{path}: the transfer file holds no texts")):
        read_unlabeled(str(path), ["text"], is_pair=False)
    with pytest.raises(DataError, match=re.escape(fix)):
        read_unlabeled(str(path), ["text"], is_pair=False)


def test_read_txt_for_a_pair_task_is_an_error(tmp_path):
    path = write_lines(tmp_path / "u.txt", ["one text"])
    with pytest.raises(DataError, match=re.escape(f"{path}: a pair task")) as err:
        read_unlabeled(path, [], is_pair=True)
    assert "use a CSV, TSV or JSONL file with two text columns" in str(err.value)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_read_missing_column_names_file_and_option(tmp_path, suffix):
    path = write_table(tmp_path / f"u{suffix}", ["review"], [["some text here"]])
    with pytest.raises(DataError, match=re.escape(f"{path}, line 1: missing transfer column")):
        read_unlabeled(path, ["text"], is_pair=False)
    with pytest.raises(DataError, match="--columns"):
        read_unlabeled(path, ["text"], is_pair=False)


def test_read_wrong_number_of_columns(tmp_path):
    path = write_table(tmp_path / "u.csv", ["a", "b"], [["x y z", "u v w"]])
    with pytest.raises(ConfigError, match=re.escape(f"{path}: 1 transfer column(s) given")):
        read_unlabeled(path, ["a"], is_pair=True)
    with pytest.raises(ConfigError, match="name 1 with --columns"):
        read_unlabeled(path, ["a", "b"], is_pair=False)


def test_read_unsupported_type_and_bad_encoding(tmp_path):
    parquet = tmp_path / "u.parquet"
    parquet.write_bytes(b"PAR1")
    with pytest.raises(DataError, match=re.escape(f"{parquet}: unsupported transfer file type")):
        read_unlabeled(str(parquet), [], is_pair=False)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\u00e9 is fine\n".encode("latin-1"))
    with pytest.raises(DataError, match=re.escape(f"{latin}: not valid UTF-8")) as err:
        read_unlabeled(str(latin), [], is_pair=False)
    assert "convert the file to UTF-8" in str(err.value)


def test_read_txt_with_a_bom_in_any_encoding_and_line_end(tmp_path):
    """UTF-8 and UTF-16 byte-order marks are read (the mark names the encoding); CRLF and
    CR-only line ends split lines like LF."""
    texts = ["first text here", "second text here"]
    for content in ("\n".join(texts), "\r\n".join(texts), "\r".join(texts)):
        for encoding in ("utf-8", "utf-8-sig", "utf-16"):  # the last two write a mark
            path = tmp_path / "u.txt"
            path.write_bytes(content.encode(encoding))
            assert read_unlabeled(str(path), [], is_pair=False) == [(t,) for t in texts]


def test_read_a_folder_a_binary_or_a_compressed_file(tmp_path):
    folder = tmp_path / "texts.txt"
    folder.mkdir()
    with pytest.raises(DataError, match=re.escape(f"{folder}: is a folder, not a file")):
        read_unlabeled(str(folder), [], is_pair=False)
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"ok line\n\x00\x01\x02")
    with pytest.raises(DataError, match=re.escape(f"{binary}, line 2: holds a NUL byte")):
        read_unlabeled(str(binary), [], is_pair=False)
    gz = tmp_path / "u.txt"
    gz.write_bytes(b"\x1f\x8b\x08\x00")
    with pytest.raises(DataError, match="gzip-compressed file, not a text file; decompress"):
        read_unlabeled(str(gz), [], is_pair=False)


@pytest.mark.parametrize(
    ("suffix", "row", "message"),
    [
        (".tsv", "3\ta stray\ttab\n", "line 4: 3 field(s) but the header has 2"),
        (".csv", '3,"never closed\n', "line 4: a quoted field opened on line 4 is never closed"),
    ],
)
def test_read_a_malformed_table_row_names_its_line(tmp_path, suffix, row, message):
    """A stray tab no longer shifts a text into the wrong column, and an open quote no
    longer swallows the rest of the file into one text."""
    path = tmp_path / f"u{suffix}"
    write_table(path, ["id", "text"], [["1", "one text here"], ["2", "two texts here"]])
    with path.open("a", encoding="utf-8") as f:
        f.write(row)
    with pytest.raises(DataError, match=re.escape(f"{path}, {message}")):
        read_unlabeled(str(path), ["text"], is_pair=False)


# --- build_transfer_set -----------------------------------------------------------------


def test_train_inputs_then_cleaned_file_texts_with_counts(tmp_path):
    train = train_split([("a good film",), ("a bad film",)])
    path = write_lines(
        tmp_path / "u.txt",
        [
            "A fine<br /><br />movie &amp; cast",
            "a good film",  # duplicate of a train input
            "too short",  # 2 words < min_words 3
            "A  fine movie & cast",  # duplicate after cleaning
            "A FINE MOVIE & CAST",  # case differs: kept
            "<br />",  # empty after cleaning
        ],
    )
    ts = build([path], train)
    assert ts.texts == [
        ("a good film",),
        ("a bad film",),
        ("A fine movie & cast",),
        ("A FINE MOVIE & CAST",),
    ]
    assert ts.counts == {
        "train": 2,
        path: 4,
        "too_short_dropped": 2,
        "augmented": 0,
        "duplicates_dropped": 2,
        "subset_dropped": 0,
        "total": 4,
    }


def test_train_inputs_are_taken_as_given_and_not_length_filtered(tmp_path):
    train = train_split([("ok <br /> yes",), ("short",)])
    ts = build(train=train, min_words=1, max_words=1)
    assert ts.texts == [("ok <br /> yes",), ("short",)]


def test_include_train_off_or_no_train_split(tmp_path):
    train = train_split([("a good film",)])
    path = write_lines(tmp_path / "u.txt", ["one two three"])
    assert build([path], train, include_train=False).texts == [("one two three",)]
    assert build([path], None).counts["train"] == 0


def test_options_off_keep_markup_and_duplicates(tmp_path):
    path = write_lines(tmp_path / "u.txt", ["x <b>y</b> z", "x <b>y</b> z", "a b"])
    ts = build([path], clean_markup=False, dedup=False, min_words=0)
    assert ts.texts == [("x <b>y</b> z",), ("x <b>y</b> z",), ("a b",)]
    assert ts.counts["duplicates_dropped"] == 0


def test_max_words_cuts_long_texts(tmp_path):
    path = write_lines(tmp_path / "u.txt", ["w1 w2 w3 w4 w5 w6", "v1 v2 v3"])
    ts = build([path], max_words=4)
    assert ts.texts == [("w1 w2 w3 w4",), ("v1 v2 v3",)]


def test_split_sentences_uses_markup_and_line_breaks_as_boundaries(tmp_path):
    path = write_table(
        tmp_path / "u.csv",
        ["sentence"],
        [
            [
                "Good film. I liked the cast a lot.<br /><br />No full stop here<br />Dr. No is"
                " here too"
            ],
            ["First line of it\nsecond line of it"],
        ],
    )
    ts = build([path], split_sentences=True)
    assert ts.texts == [
        ("I liked the cast a lot.",),
        ("No full stop here",),
        ("Dr. No is here too",),
        ("First line of it",),
        ("second line of it",),
    ]
    assert ts.counts["too_short_dropped"] == 1  # "Good film."


def test_pair_task_from_a_table_with_train_pairs(tmp_path):
    train = Split("custom", "train", "t.csv", [("a cat sat here", "a cat is here")], [1])
    path = write_table(
        tmp_path / "u.jsonl",
        ["premise", "hypothesis", "label"],
        [
            ["dogs bark all night", "dogs are <i>loud</i>", "x"],
            ["a cat sat here", "a cat is here", "y"],  # duplicate of the train pair
            ["two words", "but this is long enough", "z"],  # one field too short
        ],
    )
    ts = build([path], train, task=PAIR)
    assert ts.texts == [
        ("a cat sat here", "a cat is here"),
        ("dogs bark all night", "dogs are loud"),
    ]
    assert ts.counts["duplicates_dropped"] == 1 and ts.counts["too_short_dropped"] == 1


def test_columns_option_overrides_the_task_columns(tmp_path):
    path = write_table(tmp_path / "u.tsv", ["review", "sentence"], [["the real text", "no no no"]])
    assert build([path], columns=["review"]).texts == [("the real text",)]
    assert build([path]).texts == [("no no no",)]  # sst2's own column name


def test_task_with_unnamed_columns_needs_columns_for_tables(tmp_path):
    cola = get_task("cola")  # reads column 3 of headerless files
    path = write_table(tmp_path / "u.csv", ["text"], [["some unlabeled text"]])
    with pytest.raises(ConfigError, match=re.escape(f"{path}: task cola")) as err:
        build([path], task=cola)
    assert "pass them with --columns" in str(err.value)
    assert build([path], task=cola, columns=["text"]).texts == [("some unlabeled text",)]
    txt = write_lines(tmp_path / "u.txt", ["a txt file needs no columns"])
    assert len(build([txt], task=cola)) == 1


def test_augmented_copies_follow_originals_and_are_deduplicated(tmp_path):
    path = write_lines(tmp_path / "u.txt", [f"text number {i} with some words" for i in range(20)])
    none = AugmentConfig(multiplier=2, p_mask=0.0, p_ngram=0.0)
    ts = build([path], augment=none)  # every copy equals its source
    assert len(ts) == 20
    assert ts.counts["augmented"] == 40 and ts.counts["duplicates_dropped"] == 40

    masked = AugmentConfig(multiplier=2, p_mask=0.5, p_ngram=0.0)
    ts = build([path], augment=masked)
    originals = [(f"text number {i} with some words",) for i in range(20)]
    assert ts.texts[:20] == originals
    copies = ts.texts[20:]
    assert copies and all("[MASK]" in t for (t,) in copies)
    assert len(set(ts.texts)) == len(ts.texts)
    c = ts.counts
    assert c["augmented"] == 40 and c["total"] == 60 - c["duplicates_dropped"] == len(ts)


def test_max_transfer_samples_is_an_ordered_fixed_seed_subset(tmp_path):
    path = write_lines(tmp_path / "u.txt", [f"unlabeled text {i} here" for i in range(100)])
    full = build([path])
    sub = build([path], max_transfer_samples=10, seed=7)
    assert len(sub) == 10 and sub.counts["subset_dropped"] == 90 and sub.counts["total"] == 10
    positions = [full.texts.index(t) for t in sub.texts]
    assert positions == sorted(positions)
    assert sub.texts == build([path], max_transfer_samples=10, seed=7).texts
    assert sub.texts != build([path], max_transfer_samples=10, seed=8).texts
    assert build([path], max_transfer_samples=500).texts == full.texts


def test_build_is_deterministic_and_fingerprint_follows_the_texts(tmp_path):
    path = write_lines(tmp_path / "u.txt", [f"some review number {i} was good" for i in range(30)])
    aug = AugmentConfig(multiplier=2, p_mask=0.2, p_ngram=0.3, p_swap=0.1)
    a = build([path], augment=aug, seed=1)
    b = build([path], augment=aug, seed=1)
    assert a.texts == b.texts and a.fingerprint() == b.fingerprint()
    assert len(a.fingerprint()) == 16
    assert build([path], augment=aug, seed=2).fingerprint() != a.fingerprint()
    reordered = TransferSet(list(reversed(a.texts)), a.counts)
    assert reordered.fingerprint() != a.fingerprint()
    # Field boundaries count: ("a b",) and ("a", "b") differ.
    assert TransferSet([("a b",)], {}).fingerprint() != TransferSet([("a", "b")], {}).fingerprint()


def test_empty_transfer_set_says_which_inputs_were_empty(tmp_path):
    path = write_lines(tmp_path / "u.txt", ["tiny", "also tiny"])
    with pytest.raises(DataError, match="transfer set for task sst2 is empty") as err:
        build([path], include_train=False)
    message = str(err.value)
    assert "include_train is off" in message
    assert f"{path} kept no texts (2 shorter than 3 words)" in message
    assert "--transfer" in message and "lower min_words" in message
    with pytest.raises(DataError, match="no train split was given; no transfer files"):
        build([], None)
    with pytest.raises(DataError, match="the train split train.tsv holds no examples"):
        build([], train_split([]))


def test_missing_transfer_file_is_reported_by_build(tmp_path):
    with pytest.raises(DataError, match="file not found; check --transfer"):
        build([tmp_path / "missing.txt"])


@pytest.mark.parametrize(
    ("kwargs", "task", "fix"),
    [
        (dict(split_sentences=True), PAIR, "--no-split-sentences"),
        (dict(min_words=-1), SST2, "min_words (--min-words) must be 0 or more"),
        (dict(max_transfer_samples=-5), SST2, "max_transfer_samples"),
        (dict(max_words=2, min_words=3), SST2, "raise --max-words"),
        (dict(augment=AugmentConfig(p_mask=2.0)), SST2, "p_mask (--p-mask)"),
    ],
)
def test_invalid_settings_are_config_errors(tmp_path, kwargs, task, fix):
    path = write_lines(tmp_path / "u.txt", ["one two three"])
    with pytest.raises(ConfigError, match=re.escape(fix)):
        build([path], task=task, **kwargs)


# --- real data --------------------------------------------------------------------------


@pytest.fixture
def imdb_file() -> Path:
    if not IMDB.is_file():
        pytest.skip(f"IMDB transfer file not found at {IMDB} (set LMSHRINK_TRANSFER_FILE)")
    return IMDB


def test_real_imdb_reviews_cleaned_and_split_into_sentences(imdb_file):
    lines = sum(1 for line in imdb_file.open(encoding="utf-8") if line.strip())
    whole = build([imdb_file], include_train=False)
    assert whole.counts[str(imdb_file)] == lines
    start = time.perf_counter()
    sentences = build([imdb_file], include_train=False, split_sentences=True)
    print(f"IMDB transfer set with sentence splitting: {time.perf_counter() - start:.2f} s")
    assert len(sentences) > 5 * lines
    assert not any("<br" in t.lower() or "&amp;" in t for (t,) in sentences.texts)
    assert all(len(t.split()) >= 3 for (t,) in sentences.texts)
    assert len(set(sentences.texts)) == len(sentences)
    sub = build([imdb_file], include_train=False, split_sentences=True, max_transfer_samples=1000)
    assert len(sub) == 1000 and set(sub.texts) <= set(sentences.texts)


def test_without_texts_drops_what_the_dev_splits_hold_and_counts_it():
    from lmshrink.data.transfer import without_texts

    transfer = TransferSet(
        [("a film",), ("dev text",), ("another",), ("dev text",), ("pair", "dev")],
        {"train": 5, "total": 5},
    )
    devs = [
        Split("t", "dev", "", [("dev text",)], None),
        Split("t", "m", "", [("pair", "dev")], None),
    ]
    kept = without_texts(transfer, devs)
    assert kept.texts == [("a film",), ("another",)]
    assert kept.counts == {"train": 5, "total": 2, "dev_overlap_dropped": 3}
    assert transfer.counts["total"] == 5  # the given set is left as it was


# --- token tasks: word lists -------------------------------------------------------------

CONLL = get_task("conll2003")


def token_train(sentences: list[list[str]]):
    from lmshrink.data.ner import TokenSplit

    return TokenSplit(
        "conll2003", "train", "train.tsv", sentences, [[0] * len(s) for s in sentences]
    )


def test_a_token_tasks_transfer_set_is_word_lists(tmp_path):
    """Train sentences keep their words (tags hidden); file lines are split by split_words;
    min_words and max_words count those words; duplicates are whole word lists."""
    from lmshrink.data.transfer import WordTransferSet

    train = token_train([["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"]])
    path = write_lines(
        tmp_path / "u.txt",
        [
            "Germany's <b>representative</b> said: \"We don't know.\"",
            "EU rejects German call.",  # the same words as a train sentence
            "Hi!",  # 2 words < min_words 3
            "",
            "The U.S. team (Mr. Smith) won 3.5 points in 1996.",
        ],
    )
    ts = build([path], train, task=CONLL, max_words=12)
    assert isinstance(ts, WordTransferSet) and len(ts) == 4
    assert ts.words == [
        ("EU", "rejects", "German", "call", "."),
        ("Peter", "Blackburn"),  # train sentences are not length-filtered
        ("Germany", "'s", "representative", "said", ":", '"', "We", "do", "n't", "know", ".", '"'),
        ("The", "U.S.", "team", "(", "Mr.", "Smith", ")", "won", "3.5", "points", "in", "1996"),
    ]
    assert ts.counts == {
        "train": 2,
        path: 3,
        "too_short_dropped": 1,
        "augmented": 0,
        "duplicates_dropped": 1,
        "subset_dropped": 0,
        "total": 4,
    }
    split = ts.split("conll2003")
    # the split reads the set's packed sentences in place: rows come back as tuples
    assert split.words[0] == ("EU", "rejects", "German", "call", ".") and split.labels is None
    assert ts.fingerprint() == build([path], train, task=CONLL, max_words=12).fingerprint()
    assert ts.fingerprint() != build([path], train, task=CONLL).fingerprint()


def test_a_token_tasks_augmented_copies_and_dev_overlap_are_word_lists(tmp_path):
    from lmshrink.data.ner import TokenSplit
    from lmshrink.data.transfer import without_texts

    train = token_train([["a", "b", "c", "d"], ["e", "f", "g", "h"]])
    augment = AugmentConfig(multiplier=2, p_mask=0.5, p_ngram=0.0, mask_token="[MASK]")
    ts = build(train=train, task=CONLL, augment=augment)
    assert ts.counts["augmented"] == 4 and len(ts) == 2 + 4 - ts.counts["duplicates_dropped"]
    assert all(len(w) == 4 for w in ts.words)  # masking keeps every word slot
    assert any("[MASK]" in w for w in ts.words[2:])
    dev = TokenSplit("conll2003", "dev", "dev.tsv", [["e", "f", "g", "h"]], None)
    kept = without_texts(ts, [dev])
    assert ("e", "f", "g", "h") not in kept.words and kept.counts["dev_overlap_dropped"] == 1


def test_a_token_task_reads_txt_files_only(tmp_path):
    table = write_table(tmp_path / "u.csv", ["sentence"], [["a b c"]])
    with pytest.raises(DataError, match=r"u.csv: a token task reads unlabeled text from .txt"):
        build([table], task=CONLL)
    with pytest.raises(ConfigError, match="leave out --columns"):
        build([write_lines(tmp_path / "u.txt", ["a b c"])], task=CONLL, columns=["sentence"])
