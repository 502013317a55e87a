"""The hostile-input corpus: every reader of user input, fed malformed files and values.

Each case either reads correctly (a byte-order mark, CRLF or CR line ends, UTF-16 with its
byte-order mark, blank lines, a 10 MB line: the expected rows are given) or ends with one
`LmshrinkError` whose one-line message names the file, the line where there is one, and
the fix. Any other exception is a test failure: no input may give a traceback. Encodings
are not guessed: a Latin-1 file is an error saying so, with the `iconv` command that
converts it (see lmshrink.data.files). The readers are called in-process; a representative
subset goes through `lmshrink.cli.main` to check the `error: ...` line and exit status 2.
Property-based cases (hypothesis, fixed seed) add arbitrary bytes, round trips of arbitrary
texts, and arbitrary YAML and `--set` values. NER files (custom-ner CoNLL columns and JSONL, a
conll2003 folder, a token task's transfer text) get the same corpus, and a round trip of
random words with valid IOB2 tags.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
from pathlib import Path

import pytest
from conftest import write_tsv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmshrink.cli import main
from lmshrink.config import DataConfig, apply_overrides, load_yaml
from lmshrink.data.ner import tag_names
from lmshrink.data.splits import read_split, resolve_task
from lmshrink.data.tasks import get_task
from lmshrink.data.transfer import read_sentences, read_unlabeled
from lmshrink.errors import ConfigError, LmshrinkError
from lmshrink.finetune import FinetuneConfig

HEADER = ["text", "label"]
GOOD = [["a good film", "pos"], ["a dull film", "neg"]]
BIG = "word " * 2_000_000  # a 10 MB line
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same cases on every run
    database=None,  # no example database: a failure is reproduced by the fixed seed
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def render(fmt: str, header: list[str], rows: list[list[str]], newline: str = "\n") -> str:
    """A well-formed table in `fmt` (csv, tsv or jsonl)."""
    if fmt == "jsonl":
        # Non-ASCII characters stay as they are (not \u escapes), as most writers leave them.
        objects = (dict(zip(header, r, strict=True)) for r in rows)
        return "".join(json.dumps(o, ensure_ascii=False) + newline for o in objects)
    if fmt == "csv":
        out = io.StringIO()
        for row in [header, *rows]:
            # Python 3.11's writer leaves a lone "\r" unquoted when the line end is "\n",
            # and an unquoted "\r" ends a line (old Mac files): quote such fields, as
            # writers that mean to keep them do (Python 3.12's quotes them itself).
            breaks = any("\r" in f or "\n" in f for f in row)
            quoting = csv.QUOTE_ALL if breaks else csv.QUOTE_MINIMAL
            csv.writer(out, lineterminator=newline, quoting=quoting).writerow(row)
        return out.getvalue()
    return "".join("\t".join(r) + newline for r in [header, *rows])


def expect_error(call, path, *fragments: str) -> str:
    """Run `call`; it must raise an LmshrinkError (anything else fails the test) with a
    one-line message naming `path` and holding every fragment."""
    with pytest.raises(LmshrinkError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def read_custom(path: Path, split: str = "train", **data):
    """Read a custom task's split the way finetune and evaluate do (labels inferred)."""
    settings_ = {"text_columns": ["text"], "label_column": "label", **data}
    cfg = DataConfig(task="custom", **{f"{split}_file": str(path)}, **settings_)
    if split == "test":
        cfg.train_file = str(path.parent / "train.tsv")
        write_tsv(path.parent / "train.tsv", HEADER, GOOD)
    return read_split(resolve_task(cfg), split, cfg)


# --- custom task files: CSV, TSV, JSONL ---------------------------------------------------


def _readable_cases(fmt: str) -> dict[str, tuple[bytes, list[tuple[str, str]]]]:
    """Inputs that must read correctly: (file bytes, expected (text, label) rows)."""
    good = render(fmt, HEADER, GOOD)
    expected = [(t, y) for t, y in GOOD]
    cases = {
        "utf8_bom": (codecs.BOM_UTF8 + good.encode(), expected),
        "crlf": (render(fmt, HEADER, GOOD, "\r\n").encode(), expected),
        "cr_only": (render(fmt, HEADER, GOOD, "\r").encode(), expected),
        "utf16_bom": (good.encode("utf-16"), expected),
        "utf16_be_bom": (codecs.BOM_UTF16_BE + good.encode("utf-16-be"), expected),
        "blank_lines": (("\n" + good.replace("\n", "\n\n")).encode(), expected),
        "no_final_newline": (good.rstrip("\n").encode(), expected),
        "ten_mb_line": (render(fmt, HEADER, [[BIG, "pos"], GOOD[1]]).encode(), [(BIG, "pos")]),
    }
    if fmt != "jsonl":
        padded = good.replace("text", " text ", 1)  # header names are stripped
        cases["padded_header"] = (padded.encode(), expected)
    if fmt == "tsv":  # quoting is off in TSV (GLUE's files hold bare quotes)
        cases["bare_quote"] = (
            b'text\tlabel\n"a good film\tpos\nbad\tneg\n',
            [('"a good film', "pos")],
        )
    return cases


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_custom_files_that_must_read_correctly(tmp_path, fmt):
    for name, (content, expected) in _readable_cases(fmt).items():
        path = tmp_path / f"{name}.{fmt}"
        path.write_bytes(content)
        split = read_custom(path)
        labels = {"neg": 0, "pos": 1}
        got = [(t[0], y) for t, y in zip(split.texts, split.labels, strict=True)]
        assert got[: len(expected)] == [(t, labels[y]) for t, y in expected], name
        assert len(split) == 2, name


def _error_cases(fmt: str) -> dict[str, tuple[bytes, tuple[str, ...]]]:
    """Inputs that must end in one error: (file bytes, fragments of the message)."""
    good = render(fmt, HEADER, GOOD)
    sep = {"csv": ",", "tsv": "\t"}.get(fmt, "")

    def line(row: int) -> str:  # the file line of data row `row` (JSON Lines: no header)
        return f"line {row + (fmt != 'jsonl')}"

    cases: dict[str, tuple[bytes, tuple[str, ...]]] = {
        "latin1": (
            render(fmt, HEADER, [["café", "pos"], ["bad", "neg"]]).encode("latin-1"),
            (f"not valid UTF-8 text at {line(1)}", "0xE9", "iconv -f cp1252 -t utf-8"),
        ),
        "stray_byte": (
            good.encode().replace(b"dull", b"du\xffll"),
            (f"not valid UTF-8 text at {line(2)}", "0xFF", "convert the file to UTF-8"),
        ),
        "utf16_without_bom": (good.encode("utf-16-le"), ("line 1: holds a NUL byte", "UTF-16")),
        "binary": (bytes(range(256)) * 4, ("line 1: holds a NUL byte", "binary file")),
        "gzip": (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", ("gzip-compressed", "gunzip")),
        "empty_file": (b"", ("holds no data rows", "add labeled rows")),
        "blank_only": (b"\n\n  \n", ("holds no data rows",)),
        "nan_label": (
            render(fmt, HEADER, [["a", "pos"], ["b", "nan"]]).encode(),
            (line(2), "NaN", "fill it in or remove the row"),
        ),
        "inf_label": (
            render(fmt, HEADER, [["a", "pos"], ["b", "inf"]]).encode(),
            (line(2), "infinite"),
        ),
        "empty_label": (
            render(fmt, HEADER, [["a", "pos"], ["b", ""], ["c", "neg"]]).encode(),
            (line(2), "empty"),
        ),
        "one_label": (render(fmt, HEADER, [["a", "pos"]]).encode(), ("needs at least 2",)),
    }
    if fmt == "jsonl":
        cases |= {
            "missing_key": (
                good.encode() + b'{"text": "x"}\n',
                ("line 3: missing key(s) ['label']", "--label-column"),
            ),
            "duplicate_key": (
                b'{"text": "a", "text": "b", "label": "pos"}\n',
                ("line 1: key 'text' appears twice",),
            ),
            "unclosed_quote": (b'{"text": "a, "label": "pos"}\n', ("line 1: not valid JSON",)),
            "json_array": (
                ("[" + good.replace("\n", ",\n").rstrip(",\n") + "]\n").encode(),
                ("line 1", "JSON array", "one object per line"),
            ),
            "null_text": (b'{"text": null, "label": "pos"}\n', ("line 1", "holds null")),
            "huge_number": (
                b'{"text": "a", "label": ' + b"1" * 5000 + b"}\n",
                ("line 1: not valid JSON (a number too long to read)",),
            ),
            "not_an_object": (b'["a", "pos"]\n', ("line 1: expected a JSON object",)),
        }
        return cases
    cases |= {
        "header_only": ((sep.join(HEADER) + "\n").encode(), ("holds no data rows",)),
        "more_fields": (
            good.encode() + f"a{sep}stray text{sep}pos\n".encode(),
            ("line 4: 3 field(s) but the header has 2",),
        ),
        "fewer_fields": (
            good.encode() + b"only a text\n",
            ("line 4: 1 field(s) but at least 2 are needed",),
        ),
        "duplicate_column": (
            render(fmt, ["text", "text", "label"], [["a", "b", "pos"]]).encode(),
            ("line 1: column(s) ['text'] appear more than once", "rename the copies"),
        ),
        "missing_columns": (
            render(fmt, ["sentence", "y"], GOOD).encode(),
            ("line 1: missing column(s) ['text', 'label']", "--text-columns / --label-column"),
        ),
        "no_header": (
            "".join(sep.join(r) + "\n" for r in GOOD).encode(),
            ("line 1: missing column(s) ['text', 'label']", "looks like data", "--no-header"),
        ),
    }
    if fmt == "tsv":
        cases["stray_tab_in_text"] = (
            good.encode() + b"a\tshifted text\tneg\n",
            ("line 4: 3 field(s) but the header has 2", "stray tab"),
        )
    if fmt == "csv":
        cases["unclosed_quote"] = (
            good.encode() + b'"never closed,pos\nmore,neg\n',
            ("line 4: a quoted field opened on line 4 is never closed",),
        )
        cases["text_after_quote"] = (
            good.encode() + b'"quoted" then text,pos\n',
            ("line 4: text follows a closing quote",),
        )
        cases["unquoted_comma"] = (
            good.encode() + b"a, b and c,pos\n",
            ("line 4: 3 field(s) but the header has 2", "quote each field that holds a comma"),
        )
    return cases


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_custom_files_that_must_fail_with_one_line(tmp_path, fmt):
    for name, (content, fragments) in _error_cases(fmt).items():
        path = tmp_path / f"{name}.{fmt}"
        path.write_bytes(content)
        expect_error(lambda p=path: read_custom(p), path, *fragments)


def test_custom_paths_that_are_not_files(tmp_path):
    folder = tmp_path / "a_folder.tsv"
    folder.mkdir()
    expect_error(lambda: read_custom(folder), folder, "is a folder, not a file", "--train-file")
    missing = tmp_path / "missing.csv"
    expect_error(lambda: read_custom(missing), missing, "file not found", "--train-file")
    long_name = tmp_path / ("x" * 300 + ".tsv")
    expect_error(lambda: read_custom(long_name), "x" * 50, "not a usable path")
    xlsx = tmp_path / "train.xlsx"
    xlsx.write_bytes(b"PK\x03\x04")
    expect_error(lambda: read_custom(xlsx), xlsx, "unsupported file type '.xlsx'")


def test_regression_scores_nan_inf_and_empty(tmp_path):
    for bad in ("nan", "inf", "-Infinity", "", "high"):
        path = tmp_path / "scores.tsv"
        path.write_text(f"text\tscore\na\t0.5\nb\t{bad}\n")
        expect_error(
            lambda p=path: read_custom(p, label_column="score", regression=True),
            path,
            "line 3: regression target",
            "is not a number",
        )
    path.write_text("text\tscore\r\na\t0.5\r\nb\t4\r\n")
    split = read_custom(path, label_column="score", regression=True)
    assert split.labels == [0.5, 4.0]


def test_given_label_set_checks_every_row(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\na,pos\nb,neutral\n")
    expect_error(
        lambda: read_custom(path, labels=["neg", "pos"]),
        path,
        "line 3: label 'neutral' is not in the task's label set ['neg', 'pos']",
    )
    # A missing-value marker is a label when the user says so.
    path.write_text("text,label\na,pos\nb,NA\n")
    assert read_custom(path, labels=["NA", "pos"]).labels == [1, 0]


# --- GLUE folders ------------------------------------------------------------------------


def test_glue_folder_inputs(tmp_path):
    sst2 = tmp_path / "glue" / "SST-2"
    sst2.mkdir(parents=True)
    cfg = DataConfig(data_dir=str(tmp_path / "glue"))
    train = sst2 / "train.tsv"

    def read():
        return read_split(get_task("sst2"), "train", cfg)

    good = "sentence\tlabel\na good film\t1\na dull film\t0\n"
    for content in (
        codecs.BOM_UTF8 + good.encode(),
        good.replace("\n", "\r\n").encode(),
        good.encode("utf-16"),
    ):
        train.write_bytes(content)
        assert read().labels == [1, 0] and read().texts[0] == ("a good film",)
    bad = {
        good.replace("good", "caf\xe9").encode("latin-1"): ("not valid UTF-8 text at line 2",),
        good.encode() + b"a\tstray tab\t1\n": ("line 4: 3 field(s) but the header has 2",),
        b"a good film\t1\na dull film\t0\n": ("looks like data", "must start with its header"),
        good.encode() + b"a film\tnan\n": ("line 4: label 'nan' is not in",),
        good.encode() + b"a film\t\n": ("line 4: the label in column 'label' is empty",),
    }
    for content, fragments in bad.items():
        train.write_bytes(content)
        expect_error(read, train, *fragments)
    train.unlink()
    train.mkdir()
    expect_error(read, train, "is a folder, not a file", "--data-dir")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    expect_error(
        lambda: read_split(get_task("sst2"), "train", DataConfig(data_dir=str(not_a_folder))),
        not_a_folder,
        "is a file, not a folder",
    )


# --- transfer files ----------------------------------------------------------------------


def test_transfer_txt_inputs(tmp_path):
    texts = ["one good text", "two more words"]
    readable = {
        "bom": codecs.BOM_UTF8 + "\n".join(texts).encode(),
        "crlf": "\r\n".join(texts).encode() + b"\r\n",
        "cr": "\r".join(texts).encode(),
        "utf16": "\n".join(texts).encode("utf-16"),
        "blank": ("\n\n" + "\n \n".join(texts) + "\n\n").encode(),
    }
    for name, content in readable.items():
        path = tmp_path / f"{name}.txt"
        path.write_bytes(content)
        assert read_unlabeled(str(path), [], is_pair=False) == [(t,) for t in texts], name
    path = tmp_path / "big.txt"
    path.write_text(BIG + "\nsmall one here\n")
    assert read_unlabeled(str(path), [], is_pair=False) == [(BIG.strip(),), ("small one here",)]
    failing = {
        "latin1": ("one\ncaf\xe9\n".encode("latin-1"), ("not valid UTF-8 text at line 2",)),
        "binary": (bytes(range(256)), ("line 1: holds a NUL byte",)),
        "empty": (b"", ("holds no texts", "one text per line")),
        "gzip": (b"\x1f\x8b\x08\x00", ("gzip-compressed",)),
    }
    for name, (content, fragments) in failing.items():
        path = tmp_path / f"{name}.txt"
        path.write_bytes(content)
        expect_error(lambda p=path: read_unlabeled(str(p), [], is_pair=False), path, *fragments)
    folder = tmp_path / "folder.txt"
    folder.mkdir()
    expect_error(
        lambda: read_unlabeled(str(folder), [], is_pair=False),
        folder,
        "is a folder, not a file; check --transfer",
    )


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_transfer_table_inputs(tmp_path, fmt):
    header, rows = ["id", "text"], [["1", "one good text"], ["2", "two more words"]]
    good = render(fmt, header, rows)
    for content in (codecs.BOM_UTF8 + good.encode(), good.replace("\n", "\r\n").encode()):
        path = tmp_path / f"u.{fmt}"
        path.write_bytes(content)
        assert read_unlabeled(str(path), ["text"], is_pair=False) == [(r[1],) for r in rows]
    failing = {
        "latin1": (good.replace("good", "caf\xe9").encode("latin-1"), ("not valid UTF-8",)),
        "missing": (render(fmt, ["id", "review"], rows).encode(), ("missing transfer column",)),
        "empty": (b"", ("holds no texts",)),
    }
    if fmt == "jsonl":
        failing["bad_json"] = (good.encode() + b"{oops\n", ("line 3: not valid JSON",))
        failing["huge_number"] = (b'{"text": ' + b"9" * 5000 + b"}\n", ("line 1: not valid",))
    else:
        sep = "," if fmt == "csv" else "\t"
        failing["ragged"] = (
            good.encode() + f"3{sep}a{sep}b\n".encode(),
            ("line 4: 3 field(s) but the header has 2",),
        )
    if fmt == "csv":
        failing["unclosed"] = (good.encode() + b'3,"open\n', ("never closed",))
    for name, (content, fragments) in failing.items():
        path = tmp_path / f"{name}.{fmt}"
        path.write_bytes(content)
        expect_error(
            lambda p=path: read_unlabeled(str(p), ["text"], is_pair=False), path, *fragments
        )


# --- NER files: custom-ner CoNLL and JSONL files, a conll2003 folder -------------------------

NER_GOOD = [
    [("EU", "B-ORG"), ("rejects", "O"), ("German", "B-MISC")],
    [("Peter", "B-PER"), ("Blackburn", "I-PER")],
]
NER_FORMATS = ["conll", "tsv", "jsonl"]  # CoNLL columns split by a space, by a tab; JSONL
BIG_WORD = "x" * 10_000_000  # a 10 MB line (a word holds no whitespace)


def render_ner(fmt: str, sentences: list[list[tuple[str, str]]], newline: str = "\n") -> str:
    """A well-formed NER file: CoNLL columns (word and tag, a blank line after each
    sentence) or JSON Lines (one object with tokens and tags per sentence)."""
    if fmt == "jsonl":
        objects = ({"tokens": [w for w, _ in s], "tags": [t for _, t in s]} for s in sentences)
        return "".join(json.dumps(o, ensure_ascii=False) + newline for o in objects)
    sep = "\t" if fmt == "tsv" else " "
    return "".join("".join(f"{w}{sep}{t}{newline}" for w, t in s) + newline for s in sentences)


def read_custom_ner(path: Path, **data) -> list[list[tuple[str, str]]]:
    """A custom-ner train file read as finetune reads it (label set inferred from it), back
    as (word, IOB2 tag) pairs."""
    cfg = DataConfig(task="custom-ner", train_file=str(path), **data)
    task = resolve_task(cfg)
    split = read_split(task, "train", cfg)
    return [
        list(zip(words, tag_names(ids, task.labels), strict=True))
        for words, ids in zip(split.words, split.labels, strict=True)
    ]


def _ner_readable_cases(fmt: str) -> dict[str, tuple[bytes, list[list[tuple[str, str]]]]]:
    """NER inputs that must read correctly: (file bytes, expected sentences)."""
    good = render_ner(fmt, NER_GOOD)
    big = [[(BIG_WORD, "B-ORG"), *NER_GOOD[0][1:]], NER_GOOD[1]]
    # JSON Lines: blank lines between any two lines; CoNLL: between sentences only (a blank
    # line ends a sentence there)
    blank = good.replace("\n", "\n \n") if fmt == "jsonl" else good.replace("\n\n", "\n\n \n")
    cases = {
        "utf8_bom": (codecs.BOM_UTF8 + good.encode(), NER_GOOD),
        "crlf": (render_ner(fmt, NER_GOOD, "\r\n").encode(), NER_GOOD),
        "cr_only": (render_ner(fmt, NER_GOOD, "\r").encode(), NER_GOOD),
        "utf16_bom": (good.encode("utf-16"), NER_GOOD),
        "utf16_be_bom": (codecs.BOM_UTF16_BE + good.encode("utf-16-be"), NER_GOOD),
        "utf32_bom": (good.encode("utf-32"), NER_GOOD),
        "blank_lines": (("\n \n" + blank + "\n").encode(), NER_GOOD),
        "no_final_newline": (good.rstrip("\n").encode(), NER_GOOD),
        "ten_mb_line": (render_ner(fmt, big).encode(), big),
    }
    if fmt != "jsonl":
        sep = "\t" if fmt == "tsv" else " "
        docstart = f"-DOCSTART-{sep}O\n\n"
        cases["docstart"] = ((docstart + good + docstart).encode(), NER_GOOD)
        cases["trailing_space"] = (good.replace("\n", "  \n").encode(), NER_GOOD)
        iob1 = good.replace("B-ORG", "I-ORG").replace("B-PER", "I-PER")
        cases["iob1"] = (iob1.encode(), NER_GOOD)
    return cases


@pytest.mark.parametrize("fmt", NER_FORMATS)
def test_ner_files_that_must_read_correctly(tmp_path, fmt):
    suffix = ".jsonl" if fmt == "jsonl" else f".{fmt}"
    for name, (content, expected) in _ner_readable_cases(fmt).items():
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(content)
        assert read_custom_ner(path) == expected, name


def _ner_error_cases(fmt: str) -> dict[str, tuple[bytes, tuple[str, ...]]]:
    """NER inputs that must end in one error: (file bytes, fragments of the message)."""
    good = render_ner(fmt, NER_GOOD)
    after = 2 if fmt == "jsonl" else 7  # the last line of `good`
    cases: dict[str, tuple[bytes, tuple[str, ...]]] = {
        "latin1": (
            render_ner(fmt, [NER_GOOD[0], [("café", "O")]]).encode("latin-1"),
            (f"not valid UTF-8 text at line {2 if fmt == 'jsonl' else 5}", "0xE9", "iconv"),
        ),
        "stray_byte": (
            good.encode().replace(b"rejects", b"rej\xffects"),
            (f"not valid UTF-8 text at line {1 if fmt == 'jsonl' else 2}", "0xFF"),
        ),
        "utf16_without_bom": (good.encode("utf-16-le"), ("line 1: holds a NUL byte", "UTF-16")),
        "binary": (bytes(range(256)) * 4, ("line 1: holds a NUL byte", "binary file")),
        "gzip": (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", ("gzip-compressed", "gunzip")),
        "zip": (b"PK\x03\x04\x14\x00", ("zip archive",)),
        "empty_file": (b"", ("no sentences",)),
        "blank_only": (b"\n\n  \r\n\r", ("no sentences",)),
        "all_o": (render_ner(fmt, [[("a", "O")]]).encode(), ("every tag is O", "--labels")),
    }
    if fmt == "jsonl":
        cases |= {
            "not_json": (good.encode() + b"{oops\n", (f"line {after + 1}: not valid JSON",)),
            "json_array": (
                ("[" + good.replace("\n", ",\n").rstrip(",\n") + "]\n").encode(),
                ("line 1: not valid JSON",),
            ),
            "deep": (b"[" * 100_000 + b"\n", ("line 1: not valid JSON (nested too deeply)",)),
            "huge_number": (
                b'{"tokens": ["a"], "tags": ["O"], "id": ' + b"1" * 5000 + b"}\n",
                ("line 1: not valid JSON (a number too long to read)",),
            ),
            "not_an_object": (b"[1]\n", ("line 1: expected an object with a non-empty 'tokens'",)),
            "null_tokens": (b'{"tokens": null}\n', ("line 1: expected an object",)),
            "blank_token": (
                b'{"tokens": ["a", " "], "tags": ["O", "O"]}\n',
                ("line 1: token 1 is ' '",),
            ),
            "fewer_tags": (
                b'{"tokens": ["a", "b"], "tags": ["B-X"]}\n',
                ("line 1: 2 tokens but 1 tags",),
            ),
            "tags_not_a_list": (
                b'{"tokens": ["a"], "tags": "B-X"}\n',
                ("line 1: 1 tokens but no list of tags",),
            ),
            "null_tag": (b'{"tokens": ["a"], "tags": [null]}\n', ("line 1: tag 'None'",)),
            "tags_then_none": (
                good.encode() + b'{"tokens": ["a"]}\n',
                (f"line {after + 1}: this object has no 'tags'",),
            ),
            "long_bad_tag": (
                b'{"tokens": ["a"], "tags": ["' + b"Q" * 100_000 + b'"]}\n',
                ("line 1: tag 'QQQ", "...Q'"),
            ),
        }
        return cases
    sep = "\t" if fmt == "tsv" else " "
    cases |= {
        "header_only": (f"token{sep}tag\n".encode(), ("line 1: tag 'tag' is not O or B-",)),
        "docstart_only": (f"-DOCSTART-{sep}O\n\n".encode(), ("no sentences",)),
        "more_columns": (
            good.encode() + f"a{sep}NN{sep}O\n".encode(),
            (f"line {after + 1}: 3 column(s) but line 1 has 2",),
        ),
        "fewer_columns": (good.encode() + b"alone\n", (f"line {after + 1}: 1 column(s)",)),
        "bad_tag": (good.encode() + f"a{sep}B_PER\n".encode(), (f"line {after + 1}: tag 'B_PER'",)),
        "tag_first": (f"B-ORG{sep}EU\n".encode(), ("line 1: tag 'EU'", "the last column")),
    }
    if fmt == "conll":
        cases["word_with_space"] = (
            good.encode() + b"New York B-LOC\n",
            (f"line {after + 1}: 3 column(s)", "a token may not hold a space"),
        )
    else:
        cases["empty_token"] = (
            good.encode() + b"\tO\n",
            (f"line {after + 1}: the token is empty",),
        )
    return cases


@pytest.mark.parametrize("fmt", NER_FORMATS)
def test_ner_files_that_must_fail_with_one_line(tmp_path, fmt):
    suffix = ".jsonl" if fmt == "jsonl" else f".{fmt}"
    for name, (content, fragments) in _ner_error_cases(fmt).items():
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(content)
        message = expect_error(lambda p=path: read_custom_ner(p), path, *fragments)
        assert len(message) < 1000, (name, len(message))  # a 100 kB field is not quoted whole


def test_ner_paths_that_are_not_files(tmp_path):
    folder = tmp_path / "train.conll"
    folder.mkdir()
    expect_error(lambda: read_custom_ner(folder), folder, "is a folder, not a file", "--train-file")
    missing = tmp_path / "missing.jsonl"
    expect_error(lambda: read_custom_ner(missing), missing, "file not found", "--train-file")
    long_name = tmp_path / ("x" * 300 + ".conll")
    expect_error(lambda: read_custom_ner(long_name), "x" * 50, "not a usable path")
    table = tmp_path / "train.csv"
    table.write_text("EU,B-ORG\n")
    expect_error(lambda: read_custom_ner(table), table, "unsupported NER file type '.csv'")


def test_conll2003_folder_inputs(tmp_path):
    folder = tmp_path / "ner" / "conll2003"
    folder.mkdir(parents=True)
    train = folder / "train.tsv"

    def read(data_dir: Path = tmp_path / "ner"):
        task = get_task("conll2003")
        split = read_split(task, "train", DataConfig(data_dir=str(data_dir)))
        return [
            list(zip(words, tag_names(ids, task.labels), strict=True))
            for words, ids in zip(split.words, split.labels, strict=True)
        ]

    good = render_ner("tsv", NER_GOOD)
    for content in (
        codecs.BOM_UTF8 + good.encode(),
        good.replace("\n", "\r\n").encode(),
        good.encode("utf-16"),
        ("-DOCSTART- -X- -X- O\n\n" + good.replace("\t", " NNP B-NP ")).encode(),
    ):
        train.write_bytes(content)
        assert read() == NER_GOOD and read(folder) == NER_GOOD
    bad = {
        good.replace("German", "Gérman").encode("latin-1"): ("not valid UTF-8 text at line 3",),
        good.encode() + b"Paris\tS-LOC\tx\n": ("line 8: 3 column(s) but line 1 has 2",),
        good.encode() + b"Paris\tB-CITY\n": ("line 8: entity type 'CITY' is not in the task",),
        b"\x1f\x8b\x08\x00": ("gzip-compressed",),
        b"": ("no sentences",),
    }
    for content, fragments in bad.items():
        train.write_bytes(content)
        expect_error(read, train, *fragments)
    train.unlink()
    train.mkdir()
    expect_error(read, train, "is a folder, not a file", "--data-dir")
    train.rmdir()
    expect_error(read, train, "file not found", "--data-dir")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    expect_error(lambda: read(not_a_folder), not_a_folder, "is a file, not a folder", "--data-dir")
    expect_error(lambda: read(tmp_path / "nowhere"), "nowhere", "does not exist", "--data-dir")
    expect_error(lambda: read(tmp_path), tmp_path, "no conll2003/ folder here")


def test_cli_bad_ner_inputs_give_one_error_line(tmp_path, capsys):
    """finetune reads its data before it loads a model, so no model is needed here."""
    dev = tmp_path / "dev.conll"
    dev.write_text(render_ner("conll", NER_GOOD))

    def finetune(*data) -> list:
        out = ["finetune", "--model", tmp_path / "no-model", "--out", tmp_path / "out"]
        return [*out, *data]

    latin = tmp_path / "latin.conll"
    latin.write_bytes(render_ner("conll", [NER_GOOD[0], [("café", "O")]]).encode("latin-1"))
    ragged = tmp_path / "ragged.jsonl"
    ragged.write_text('{"tokens": ["a", "b"], "tags": ["B-X"]}\n')
    packed = tmp_path / "train.conll"
    packed.write_bytes(b"\x1f\x8b\x08\x00")
    (tmp_path / "dir.conll").mkdir()
    glue_like = tmp_path / "data" / "conll2003"
    glue_like.mkdir(parents=True)
    (glue_like / "train.tsv").write_bytes(b"EU\tB-ORG\n\x00\x01\n")
    custom = ["--task", "custom-ner", "--dev-file", dev, "--train-file"]
    cases = [
        (finetune(*custom, latin), (f"{latin}: not valid UTF-8 text at line 5", "iconv")),
        (finetune(*custom, ragged), (f"{ragged}, line 1: 2 tokens but 1 tags",)),
        (finetune(*custom, packed), ("gzip-compressed",)),
        (
            finetune(*custom, tmp_path / "dir.conll"),
            ("is a folder, not a file; check --train-file",),
        ),
        (
            finetune("--task", "conll2003", "--data-dir", tmp_path / "data"),
            ("train.tsv, line 2: holds a NUL byte",),
        ),
    ]
    for argv, fragments in cases:
        code, _, err = run_cli(argv, capsys)
        assert_clean_error(code, err, *fragments)
    assert not (tmp_path / "out").exists()


def test_token_task_transfer_txt_inputs(tmp_path):
    """A token task's unlabeled .txt transfer file (one sentence per line) is read as a
    sentence task's is (lmshrink.data.files), then split into words."""
    lines = ["EU rejects German call .", "Peter Blackburn"]
    readable = {
        "bom": codecs.BOM_UTF8 + "\n".join(lines).encode(),
        "cr": "\r".join(lines).encode(),
        "utf16": "\r\n".join(lines).encode("utf-16"),
    }
    for name, content in readable.items():
        path = tmp_path / f"{name}.txt"
        path.write_bytes(content)
        assert read_sentences(str(path)) == lines, name
    failing = {
        "latin1.txt": ("EU\ncaf\xe9\n".encode("latin-1"), "not valid UTF-8 text at line 2"),
        "binary.txt": (bytes(range(256)), "line 1: holds a NUL byte"),
        "empty.txt": (b"\n \n", "holds no texts"),
        "words.conll": (b"EU B-ORG\n", "a token task reads unlabeled text from .txt files"),
    }
    for name, (content, fragment) in failing.items():
        path = tmp_path / name
        path.write_bytes(content)
        expect_error(lambda p=path: read_sentences(str(p)), path, fragment)
    (tmp_path / "folder.txt").mkdir()
    expect_error(lambda: read_sentences(str(tmp_path / "folder.txt")), "folder.txt", "is a folder")


_NER_TOKENS = [
    b"EU",
    b"B-ORG",
    b"I-PER",
    b"O",
    b"Q",
    b"-DOCSTART-",
    b"\t",
    b" ",
    b"\n",
    b"\r\n",
    b"\r",
    b'"',
    b"[",
    b"{",
    b'{"tokens": ["a", "b"], "tags": ["B-X", "I-X"]}\n',
    b'{"tokens": ["a"]}\n',
    b"\x00",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    "é".encode("latin-1"),
    "é".encode(),
]
_NER_BYTES = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(_NER_TOKENS), max_size=40).map(b"".join),
)


@SETTINGS
@given(content=_NER_BYTES, suffix=st.sampled_from([".conll", ".tsv", ".jsonl"]))
def test_any_bytes_as_an_ner_file_read_or_fail_cleanly(scratch, content, suffix):
    path = scratch / f"ner{suffix}"
    path.write_bytes(content)
    try:
        sentences = read_custom_ner(path)
    except LmshrinkError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc), str(exc)
        return
    assert sentences and all(sentence for sentence in sentences)


# A word of a CoNLL file: no whitespace (it separates columns and lines), no NUL (binary), no
# surrogate (not encodable), no byte-order mark (dropped where it opens a file), and not the
# document marker (its lines are skipped).
_WORD = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00\ufeff").filter(
        lambda c: not c.isspace()
    ),
    min_size=1,
    max_size=8,
).filter(lambda w: w != "-DOCSTART-")
# A run of words outside any entity, or one entity of a type (its words B-, I-, I-, ...).
_SEGMENT = st.tuples(
    st.sampled_from(["O", "PER", "LOC", "ORG"]), st.lists(_WORD, min_size=1, max_size=3)
)


def _tagged(segments: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
    """One sentence of (word, IOB2 tag) from its segments."""
    return [
        (word, "O" if kind == "O" else f"{'I' if j else 'B'}-{kind}")
        for kind, words in segments
        for j, word in enumerate(words)
    ]


@SETTINGS
@given(
    sentences=st.lists(
        st.lists(_SEGMENT, min_size=1, max_size=4).map(_tagged), min_size=1, max_size=5
    ),
    fmt=st.sampled_from(NER_FORMATS),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_any_ner_sentences_written_properly_read_back_exactly(
    scratch, sentences, fmt, encoding, newline
):
    """Words (no whitespace inside) with valid IOB2 tags, written as CoNLL columns or JSON
    Lines in any supported encoding and line end, come back unchanged."""
    path = scratch / ("round_trip.jsonl" if fmt == "jsonl" else f"round_trip.{fmt}")
    path.write_bytes(render_ner(fmt, sentences, newline).encode(encoding))
    labels = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert read_custom_ner(path, labels=labels) == sentences


# --- YAML configs and --set values -------------------------------------------------------

YAML_READABLE = {
    "bom": (codecs.BOM_UTF8 + b"data:\n  task: sst2\n", "sst2"),
    "crlf": (b"data:\r\n  task: sst2\r\n", "sst2"),
    "utf16": ("data:\n  task: sst2\n".encode("utf-16"), "sst2"),
    "empty": (b"", ""),
    "empty_section": (b"data:\n", ""),
}

YAML_FAILING = {
    "latin1": ("data:\n  task: caf\xe9\n".encode("latin-1"), "not valid UTF-8 text at line 2"),
    "binary": (bytes(range(256)), "NUL byte"),
    "tab_indent": (b"data:\n\ttask: sst2\n", "not valid YAML at line 2, column 1"),
    "unclosed": (b"train: {lr: [1, 2\n", "not valid YAML"),
    "list": (b"- a\n- b\n", "must be a mapping of key: value lines"),
    "scalar": (b"sst2\n", "must be a mapping"),
    "duplicate_key": (b"seed: 1\nseed: 2\n", "key 'seed' is given twice"),
    "nested_duplicate": (b"data:\n  task: a\n  task: b\n", "line 3"),
    "nan": (b"train:\n  lr: .nan\n", "'train.lr' takes a finite number"),
    "inf": (b"train:\n  epochs: .inf\n", "'train.epochs' takes a finite number"),
    "huge_int": (b"seed: 1e400\n", "'seed' takes a whole number"),
    "seed_range": (b"seed: -1\n", "'seed' takes a value from 0 to 4294967295"),
    "bad_date": (b"data:\n  task: 2020-13-45\n", "not valid YAML"),
    "yes_no": (b"data:\n  labels: [yes, no]\n", "quote it"),
    "null_text": (b"out:\n", "'out' has no value"),
    "section_scalar": (b"data: 0\n", "section 'data' must be a mapping"),
    "unknown": (b"trian: {}\n", "unknown config key 'trian'"),
    "deep": (b"[" * 3000, "not valid YAML"),
    "unhashable": (b"? [a, b]\n: c\n", "not valid YAML"),
}


def test_yaml_configs(tmp_path):
    for name, (content, task) in YAML_READABLE.items():
        path = tmp_path / f"{name}.yaml"
        path.write_bytes(content)
        assert load_yaml(FinetuneConfig, path).data.task == task, name
    for name, (content, fragment) in YAML_FAILING.items():
        path = tmp_path / f"{name}.yaml"
        path.write_bytes(content)
        expect_error(lambda p=path: load_yaml(FinetuneConfig, p), path, fragment)
    expect_error(lambda: load_yaml(FinetuneConfig, tmp_path), tmp_path, "is a folder")


SET_READABLE = {
    "data.task=yes": ("data", "task", "yes"),  # text stays text: YAML would say True
    "data.label_column=on": ("data", "label_column", "on"),
    "data.labels=yes,no": ("data", "labels", ["yes", "no"]),
    "data.labels=['yes', 'no']": ("data", "labels", ["yes", "no"]),
    "data.text_columns=[a, b]": ("data", "text_columns", ["a", "b"]),
    "out=": (None, "out", ""),
    "train.lr=1e-4": ("train", "lr", 1e-4),
}

SET_FAILING = {
    "train.lr=nan": "takes a finite number",
    "train.lr=[": "is not valid YAML",
    "train.lr=: x": "is not valid YAML",
    "seed=1e400": "takes a whole number",
    "seed=99999999999": "takes a value from 0 to",
    "threads=-2": "takes a value of 0 or more",
    "data.labels=[yes, no]": "quote it",
    "train.lr={a: 1}": "takes a number",
    "data=1": "is a section",
    "train.lr": "key=value",
    "=3": "unknown config key ''",
}


def test_set_values():
    for item, (section, key, value) in SET_READABLE.items():
        cfg = FinetuneConfig()
        apply_overrides(cfg, [item])
        target = getattr(cfg, section) if section else cfg
        assert getattr(target, key) == value, item
    for item, fragment in SET_FAILING.items():
        with pytest.raises(ConfigError) as err:
            apply_overrides(FinetuneConfig(), [item])
        assert fragment in str(err.value) and "\n" not in str(err.value), item


# --- property-based: arbitrary bytes, round trips, YAML and --set text --------------------

_TOKENS = [
    b"text",
    b"label",
    b"pos",
    b"neg",
    b"a good film",
    b",",
    b"\t",
    b"\n",
    b"\r\n",
    b"\r",
    b'"',
    b"{",
    b"}",
    b":",
    b"[",
    b"nan",
    b" ",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    "é".encode("latin-1"),
    "é".encode(),
    b'{"text": "x", "label": "pos"}\n',
]
_BYTES = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(_TOKENS), max_size=40).map(b"".join),
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """One folder for the property-based cases (each example overwrites its file)."""
    return tmp_path_factory.mktemp("hostile")


@SETTINGS
@given(content=_BYTES, suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]), test=st.booleans())
def test_any_bytes_as_a_task_file_read_or_fail_cleanly(scratch, content, suffix, test):
    path = scratch / f"given{suffix}"
    path.write_bytes(content)
    try:
        split = read_custom(path, split="test" if test else "train")
    except LmshrinkError as exc:
        assert "\n" not in str(exc) and str(path.parent) in str(exc), str(exc)
        return
    assert split.labels is None or len(split.labels) == len(split.texts)


@SETTINGS
@given(content=_BYTES, suffix=st.sampled_from([".txt", ".csv", ".tsv", ".jsonl"]))
def test_any_bytes_as_a_transfer_file_read_or_fail_cleanly(scratch, content, suffix):
    path = scratch / f"u{suffix}"
    path.write_bytes(content)
    try:
        texts = read_unlabeled(str(path), ["text"], is_pair=False)
    except LmshrinkError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc), str(exc)
        return
    assert texts and all(isinstance(t, str) for (t,) in texts)


# Texts a table can hold: no NUL (binary) and no surrogates (not encodable).
_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))


@SETTINGS
@given(
    rows=st.lists(st.tuples(_TEXT, st.sampled_from(["pos", "neg"])), min_size=1, max_size=8),
    fmt=st.sampled_from(["csv", "tsv", "jsonl"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_any_texts_written_properly_read_back_exactly(scratch, rows, fmt, encoding, newline):
    """What csv.writer, a clean TSV or json.dumps writes comes back unchanged, in any
    supported encoding and line end (TSV cannot hold tabs or line breaks in a text)."""
    if fmt == "tsv":
        rows = [(t.replace("\t", " ").replace("\n", " ").replace("\r", " "), y) for t, y in rows]
    path = scratch / f"round_trip.{fmt}"
    path.write_bytes(render(fmt, HEADER, [list(r) for r in rows], newline).encode(encoding))
    split = read_custom(path, labels=["neg", "pos"])
    assert split.texts == [(t,) for t, _ in rows]
    assert split.labels == [{"neg": 0, "pos": 1}[y] for _, y in rows]


@SETTINGS
@given(text=st.text(max_size=200))
def test_any_yaml_text_loads_or_fails_cleanly(scratch, text):
    path = scratch / "c.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_yaml(FinetuneConfig, path)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc), str(exc)


_KEY_TYPES = {
    "train.lr": float,
    "train.epochs": float,
    "seed": int,
    "threads": int,
    "data.task": str,
    "data.labels": list,
    "data.header": bool,
}


@SETTINGS
@given(key=st.sampled_from(sorted(_KEY_TYPES)), value=st.text(max_size=40))
def test_any_set_value_applies_or_fails_cleanly(key, value):
    """A --set value is set with the key's type (a float finite), or refused in one line."""
    cfg = FinetuneConfig()
    try:
        apply_overrides(cfg, [f"{key}={value}"])
    except ConfigError as exc:
        assert "\n" not in str(exc), str(exc)
        return
    section, _, name = key.rpartition(".")
    got = getattr(getattr(cfg, section) if section else cfg, name)
    assert isinstance(got, _KEY_TYPES[key]), (key, value, got)
    if isinstance(got, float):
        assert math.isfinite(got)
    if isinstance(got, list):
        assert all(isinstance(v, str) for v in got)


# --- through the command line: one error line, exit status 2 ----------------------------


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err
    for fragment in fragments:
        assert fragment in last, (fragment, last)


def test_cli_bad_inputs_give_one_error_line(tmp_path, capsys):
    """finetune reads its data before it loads a model, so no model is needed here."""
    dev = tmp_path / "dev.tsv"
    write_tsv(dev, HEADER, GOOD)

    def finetune(train: Path, *extra) -> list:
        return [
            "finetune",
            "--model",
            tmp_path / "no-model",
            "--out",
            tmp_path / "out",
            "--task",
            "custom",
            "--train-file",
            train,
            "--dev-file",
            dev,
            "--text-columns",
            "text",
            *extra,
        ]

    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9,pos\nbad,neg\n".encode("latin-1"))
    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("text\tlabel\ngood\tpos\nstray\ttab\tneg\n")
    headerless = tmp_path / "headerless.tsv"
    headerless.write_text("good\tpos\nbad\tneg\nfine\tpos\n")
    config = tmp_path / "dup.yaml"
    config.write_text("seed: 1\nseed: 2\n")
    (tmp_path / "dir").mkdir()
    no_dev = finetune(dev)
    del no_dev[no_dev.index("--dev-file") : no_dev.index("--dev-file") + 2]
    cases = [
        (finetune(latin), (f"{latin}: not valid UTF-8 text at line 2", "iconv")),
        (finetune(ragged), (f"{ragged}, line 3: 3 field(s) but the header has 2",)),
        (finetune(headerless), ("looks like data", "--no-header")),
        (finetune(tmp_path / "dir"), ("is a folder, not a file; check --train-file",)),
        (finetune(latin, "--no-header"), ("--no-header reads columns by index",)),
        (finetune(latin, "--config", config), ("key 'seed' is given twice",)),
        (finetune(latin, "--set", "train.lr=nan"), ("'train.lr' takes a finite number",)),
        (finetune(latin, "--set", "data.labels=[yes, no]"), ("quote it",)),
        (no_dev, ("has no split 'dev'", "pass --dev-file")),
    ]
    for argv, fragments in cases:
        code, _, err = run_cli(argv, capsys)
        assert_clean_error(code, err, *fragments)
    assert not (tmp_path / "out").exists()


def test_cli_distill_with_a_bad_transfer_file(tiny_teacher, tmp_path, capsys):
    latin = tmp_path / "unlabeled.txt"
    latin.write_bytes("one good text\ncaf\xe9 au lait\n".encode("latin-1"))
    argv = [
        "distill",
        "--teacher",
        tiny_teacher["teacher"],
        "--out",
        tmp_path / "run",
        "--task",
        "sst2",
        "--data-dir",
        tiny_teacher["glue"],
        "--transfer",
        latin,
        "--no-progress",
    ]
    code, _, err = run_cli(argv, capsys)
    assert_clean_error(code, err, f"{latin}: not valid UTF-8 text at line 2")


def test_cli_evaluate_scores_a_labeled_headerless_test_file(tiny_teacher, tmp_path, capsys):
    """A custom test file with labels is scored (its labels are kept), read by column
    index without a header."""
    rows = [
        line.split("\t")
        for line in (tiny_teacher["glue"] / "SST-2" / "dev.tsv").read_text().splitlines()[1:]
    ]
    test = tmp_path / "test.tsv"
    test.write_text("".join(f"id{i}\t{s}\t{y}\n" for i, (s, y) in enumerate(rows)))
    argv = [
        "evaluate",
        tiny_teacher["teacher"],
        "--task",
        "custom",
        "--no-header",
        "--train-file",
        test,
        "--test-file",
        test,
        "--text-columns",
        "1",
        "--label-column",
        "2",
        "--labels",
        "0,1",
        "--split",
        "test",
        "--no-progress",
        "--json",
        tmp_path / "result.json",
    ]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["split"] == "test" and result["examples"] == len(rows)
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0
