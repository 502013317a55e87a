import json
import random

import numpy as np
import pytest
from conftest import STSB_HEADER, write_tsv

from lmshrink.config import DataConfig
from lmshrink.data.batching import bucketed_batches, bucketed_index_arrays, collate, encode
from lmshrink.data.splits import load_eval_splits, read_split, resolve_task
from lmshrink.data.tasks import get_task
from lmshrink.errors import ConfigError, DataError, MissingDependencyError

REAL_COUNTS = {  # (task, split): rows, from the data README
    ("sst2", "train"): 67349,
    ("sst2", "dev"): 872,
    ("cola", "train"): 8551,
    ("cola", "dev"): 1043,
    ("mrpc", "train"): 3668,
    ("mrpc", "dev"): 408,
    ("rte", "train"): 2490,
    ("rte", "dev"): 277,
    ("stsb", "train"): 5749,
    ("stsb", "dev"): 1500,
    ("qnli", "dev"): 5463,
}


@pytest.mark.parametrize(("task", "split"), list(REAL_COUNTS))
def test_real_glue_files_read_completely(shared_glue, task, split):
    s = read_split(get_task(task), split, DataConfig(task=task, data_dir=str(shared_glue)))
    assert len(s) == REAL_COUNTS[(task, split)]
    assert len(s.labels) == len(s)
    assert all(len(t) == (2 if get_task(task).is_pair else 1) for t in s.texts)


def test_real_cola_without_header_and_mrpc_with_bom(shared_glue):
    cfg = DataConfig(data_dir=str(shared_glue))
    cola = read_split(get_task("cola"), "dev", cfg)
    assert cola.texts[0] == ("The sailors rode the breeze clear of the rocks.",)
    assert cola.labels[0] == 1 and set(cola.labels) == {0, 1}
    mrpc = read_split(get_task("mrpc"), "dev", cfg)
    assert mrpc.labels[:2] == [1, 0]
    assert mrpc.texts[0][1].startswith('"The foodservice pie business')  # bare quote kept
    stsb = read_split(get_task("stsb"), "dev", cfg)
    assert stsb.labels[0] == 5.0 and all(0 <= y <= 5 for y in stsb.labels)
    rte = read_split(get_task("rte"), "train", cfg)
    assert rte.labels[0] == 1  # not_entailment


def test_mnli_and_qqp_from_made_files(tmp_path):
    mnli_header = [
        "index",
        "promptID",
        "pairID",
        "genre",
        "sentence1_binary_parse",
        "sentence2_binary_parse",
        "sentence1_parse",
        "sentence2_parse",
        "sentence1",
        "sentence2",
        "label1",
        "gold_label",
    ]
    row = [
        "0",
        "1",
        "1e",
        "fiction",
        "(",
        "(",
        "(",
        "(",
        "A cat sat.",
        "A cat is here.",
        "entailment",
    ]
    for name, label in (("dev_matched.tsv", "neutral"), ("dev_mismatched.tsv", "contradiction")):
        write_tsv(tmp_path / "MNLI" / name, mnli_header, [row + [label]])
    cfg = DataConfig(task="mnli", data_dir=str(tmp_path))
    matched, mismatched = load_eval_splits(get_task("mnli"), "dev", cfg, seed=0)
    assert (matched.name, matched.labels) == ("dev", [1])
    assert (mismatched.name, mismatched.labels) == ("dev_mismatched", [2])
    write_tsv(
        tmp_path / "QQP" / "train.tsv",
        ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
        [["0", "1", "2", "How?", "Why?", "0"], ["1", "3", "4", "Who?", "Who?", "1"]],
    )
    qqp = read_split(get_task("qqp"), "train", DataConfig(data_dir=str(tmp_path)))
    assert qqp.texts == [("How?", "Why?"), ("Who?", "Who?")] and qqp.labels == [0, 1]


def _sst2(tmp_path, rows, header=("sentence", "label")):
    write_tsv(tmp_path / "SST-2" / "train.tsv", list(header) if header else None, rows)
    return DataConfig(task="sst2", data_dir=str(tmp_path))


def test_missing_data_folder_and_file(tmp_path):
    with pytest.raises(DataError, match="does not exist.*--data-dir"):
        read_split(get_task("sst2"), "train", DataConfig(data_dir=str(tmp_path / "nope")))
    with pytest.raises(DataError, match=r"SST-2/train\.tsv: file not found"):
        read_split(get_task("sst2"), "train", DataConfig(data_dir=str(tmp_path)))


def test_missing_column_names_the_header(tmp_path):
    cfg = _sst2(tmp_path, [["good", "1"]], header=("text", "label"))
    with pytest.raises(DataError, match=r"train\.tsv, line 1: missing column\(s\) \['sentence'\]"):
        read_split(get_task("sst2"), "train", cfg)


def test_unknown_label_names_file_and_line(tmp_path):
    cfg = _sst2(tmp_path, [["good", "1"], ["bad", "0"], ["meh", "2"]])
    with pytest.raises(DataError, match=r"train\.tsv, line 4: label '2' is not in"):
        read_split(get_task("sst2"), "train", cfg)


def test_short_row_names_the_line(tmp_path):
    cfg = _sst2(tmp_path, [["good", "1"], ["no label here"]])
    with pytest.raises(DataError, match=r"line 3: 1 field\(s\) but at least 2"):
        read_split(get_task("sst2"), "train", cfg)


def test_empty_split(tmp_path):
    cfg = _sst2(tmp_path, [])
    with pytest.raises(DataError, match="train split has no examples"):
        read_split(get_task("sst2"), "train", cfg)


def test_non_numeric_regression_target(tmp_path):
    write_tsv(
        tmp_path / "STS-B" / "train.tsv",
        STSB_HEADER,
        [
            ["0", "g", "f", "y", "0", "n", "n", "a", "b", "4.2"],
            ["1", "g", "f", "y", "1", "n", "n", "a", "b", "high"],
        ],
    )
    with pytest.raises(DataError, match="line 3: regression target 'high'"):
        read_split(get_task("stsb"), "train", DataConfig(data_dir=str(tmp_path)))


def test_custom_csv_jsonl_and_label_inference(tmp_path):
    (tmp_path / "train.csv").write_text('text,y\n"good, really",pos\nbad,neg\nfine,pos\n')
    lines = [{"text": "ok", "y": "pos"}, {"text": "no", "y": "neg"}]
    (tmp_path / "dev.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    cfg = DataConfig(
        task="custom",
        train_file=str(tmp_path / "train.csv"),
        dev_file=str(tmp_path / "dev.jsonl"),
        text_columns=["text"],
        label_column="y",
    )
    task = resolve_task(cfg)
    assert task.labels == ("neg", "pos")
    train = read_split(task, "train", cfg)
    assert train.texts[0] == ("good, really",) and train.labels == [1, 0, 1]
    assert read_split(task, "dev", cfg).labels == [1, 0]


def test_custom_regression_and_bad_jsonl(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"a": "x", "b": "y", "s": 0.5}\n{"a": "x"\n')
    cfg = DataConfig(
        task="custom",
        train_file=str(tmp_path / "train.jsonl"),
        text_columns=["a", "b"],
        label_column="s",
        regression=True,
    )
    with pytest.raises(DataError, match="train.jsonl, line 2: not valid JSON"):
        read_split(resolve_task(cfg), "train", cfg)


def test_custom_task_needs_files_and_columns():
    with pytest.raises(ConfigError, match="--train-file"):
        resolve_task(DataConfig(task="custom"))
    with pytest.raises(ConfigError, match="--text-columns"):
        resolve_task(DataConfig(task="custom", train_file="x.csv"))
    with pytest.raises(ConfigError, match="no task given"):
        resolve_task(DataConfig())


def test_subset_is_fixed_by_seed(sst2_dir):
    split = read_split(get_task("sst2"), "train", DataConfig(data_dir=str(sst2_dir)))
    a, b, c = split.subset(10, seed=1), split.subset(10, seed=1), split.subset(10, seed=2)
    assert len(a) == 10 and a.texts == b.texts and a.texts != c.texts
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert split.subset(0, seed=1) is split


def test_hub_path_gives_a_clear_error_offline():
    cfg = DataConfig(task="sst2")  # no --data-dir: the hub path, offline in tests
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="lmshrink\\[hub\\]"):
            read_split(get_task("sst2"), "train", cfg)
    else:
        with pytest.raises(DataError, match="hub:nyu-mll/glue/sst2/train.*--data-dir"):
            read_split(get_task("sst2"), "train", cfg)


def test_bucketed_batches_cover_every_index_once_with_similar_lengths():
    rng = random.Random(0)
    lengths = [rng.randint(1, 100) for _ in range(1000)]
    batches = bucketed_batches(lengths, 16, random.Random(1), bucket_batches=10)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert spread / len(batches) < 15  # unbucketed random batches spread ~90 tokens
    assert bucketed_batches(lengths, 16, random.Random(1), 10) == batches  # seeded
    eval_batches = bucketed_batches(lengths, 16, None)
    assert [lengths[i] for b in eval_batches for i in b] == sorted(lengths)


def _list_bucketed_batches(lengths, batch_size, rng, bucket_batches=50):
    """The batches as lists of Python ints once gave them (what runs were trained on)."""
    order = list(range(len(lengths)))
    if rng is None:
        return [
            chunk
            for order in [sorted(order, key=lambda i: lengths[i])]
            for chunk in (order[i : i + batch_size] for i in range(0, len(order), batch_size))
        ]
    rng.shuffle(order)
    window, batches = batch_size * bucket_batches, []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


@pytest.mark.parametrize("n", [0, 1, 7, 3000])
def test_index_arrays_give_the_batches_python_lists_gave(n):
    # the arrays (8 bytes an index) must not change a seeded run's order
    rng = random.Random(n)
    lengths = [rng.randint(1, 64) for _ in range(n)]  # many ties: the sort must be stable
    for seed in (None, 5):
        want = _list_bucketed_batches(lengths, 32, seed and random.Random(seed), 4)
        got = bucketed_index_arrays(lengths, 32, seed and random.Random(seed), 4)
        assert all(a.dtype == np.int64 for a in got)
        assert [a.tolist() for a in got] == want
        assert bucketed_batches(lengths, 32, seed and random.Random(seed), 4) == want


def test_encode_pairs_and_collate_pads(tiny_encoder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    from lmshrink.data.splits import Split

    split = Split("rte", "dev", "x", [("the cat sat", "a dog"), ("yes", "no")], [0, 1])
    enc = encode(tok, split, max_length=32)
    assert enc.lengths == [8, 5]  # [CLS] the cat sat [SEP] a dog [SEP]; [CLS] yes [SEP] no [SEP]
    assert enc.features["token_type_ids"][1] == [0, 0, 0, 1, 1]
    batch = collate(enc, [0, 1])
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"].tolist()[1] == [1] * 5 + [0] * 3
    assert batch["input_ids"][1, 5:].tolist() == [tok.pad_token_id] * 3
    assert batch["labels"].tolist() == [0, 1]


def test_label_dtype_follows_the_task_kind(tmp_path, sst2_dir):
    """Regression targets are read as floats even when they look like integers ("3"), and
    batch as float tensors; class labels batch as long tensors (the kind's label_dtype)."""
    import torch

    from lmshrink.data.batching import Encoded

    rows = [["0", "g", "f", "y", "0", "n", "n", "a", "b", score] for score in ("3", "4.5")]
    write_tsv(tmp_path / "STS-B" / "dev.tsv", STSB_HEADER, rows)
    stsb = read_split(get_task("stsb"), "dev", DataConfig(data_dir=str(tmp_path)))
    assert get_task("stsb").kind.label_dtype == "float" and stsb.labels == [3.0, 4.5]
    assert all(isinstance(y, float) for y in stsb.labels)
    sst2 = read_split(get_task("sst2"), "dev", DataConfig(data_dir=str(sst2_dir)))
    for split, dtype in ((stsb, torch.float), (sst2, torch.long)):
        enc = Encoded({"input_ids": [[1, 2]] * len(split)}, split.labels, 0)
        assert collate(enc, [0, 1])["labels"].dtype == dtype


# --- headerless files, labeled test splits, a missing dev split -------------------------


def _custom(tmp_path, path, split="train", **data):
    """Read one split of a custom task from `path` (labels inferred from a train file)."""
    cfg = DataConfig(task="custom", **{f"{split}_file": str(path)}, **data)
    if split != "train":
        cfg.train_file = str(write_tsv(tmp_path / "train.tsv", ["text", "label"], GOOD_ROWS))
    cfg.text_columns = cfg.text_columns or ["text"]
    return read_split(resolve_task(cfg), split, cfg)


GOOD_ROWS = [["a good film", "pos"], ["a dull film", "neg"]]


def test_headerless_files_are_read_by_column_index(tmp_path):
    path = tmp_path / "u.tsv"
    path.write_text("src1\ta good film\tpos\nsrc2\ta dull film\tneg\n")
    split = _custom(tmp_path, path, text_columns=["1"], label_column="2", header=False)
    assert split.texts == [("a good film",), ("a dull film",)] and split.labels == [1, 0]
    # Without a header the first row sets the width; a ragged row names both lines.
    path.write_text("s\ta good film\tpos\ns\ta\tdull film\tneg\n")
    with pytest.raises(DataError, match=r"u\.tsv, line 2: 4 field\(s\) but line 1 has 3"):
        _custom(tmp_path, path, text_columns=["1"], label_column="2", header=False)


@pytest.mark.parametrize(
    ("columns", "label", "flag"),
    [(["0"], "label", "--label-column"), (["text"], "1", "--text-columns")],
)
def test_no_header_needs_column_indices(tmp_path, columns, label, flag):
    path = write_tsv(tmp_path / "u.tsv", None, GOOD_ROWS)
    with pytest.raises(ConfigError, match=f"--no-header reads columns by index, so {flag}"):
        _custom(tmp_path, path, text_columns=columns, label_column=label, header=False)


def test_no_header_refuses_jsonl_and_glue_tasks(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_text('{"text": "a", "label": "pos"}\n')
    with pytest.raises(ConfigError, match=r"u\.jsonl: --no-header applies to CSV/TSV files"):
        _custom(tmp_path, path, text_columns=["0"], label_column="1", header=False)
    with pytest.raises(ConfigError, match="--no-header applies to custom tasks"):
        resolve_task(DataConfig(task="sst2", header=False))


def test_indices_with_a_header_point_to_no_header(tmp_path):
    path = write_tsv(tmp_path / "u.tsv", ["text", "label"], GOOD_ROWS)
    with pytest.raises(DataError, match=r"missing column\(s\) \['0', '1'\]") as err:
        _custom(tmp_path, path, text_columns=["0"], label_column="1")
    assert "pass --no-header to read a file without a header by column index" in str(err.value)


def test_a_header_that_looks_like_data_is_named_with_every_missing_column(tmp_path):
    """A first line whose fields recur below it (or hold numbers, sentences or known labels)
    is said to look like data, with the --no-header fix; all missing columns are named."""
    path = write_tsv(tmp_path / "u.tsv", None, [["good", "pos"], ["bad", "neg"], ["ok", "pos"]])
    with pytest.raises(DataError) as err:
        _custom(tmp_path, path)
    assert str(err.value) == (
        f"{path}, line 1: missing column(s) ['text', 'label'], and the first line "
        "['good', 'pos'] looks like data, not a header; if the file has no header row, pass "
        "--no-header and name the columns by index (e.g. --text-columns 0 --label-column 1)."
    )
    path = write_tsv(tmp_path / "u.tsv", ["review", "stars"], GOOD_ROWS)  # a real header
    with pytest.raises(DataError, match=r"the header has \['review', 'stars'\]") as err:
        _custom(tmp_path, path)
    assert "looks like data" not in str(err.value)
    # A GLUE file without its header: the fix is the header, not --no-header.
    cfg = _sst2(tmp_path, [["a good film", "1"], ["a dull film", "0"]], header=None)
    with pytest.raises(DataError, match="must start with its header row") as err:
        read_split(get_task("sst2"), "train", cfg)
    assert "--no-header" not in str(err.value)


def test_a_labeled_test_file_keeps_its_labels(tmp_path):
    path = tmp_path / "test.tsv"
    path.write_text("text\tlabel\nnice\tpos\nawful\tneg\n")
    assert _custom(tmp_path, path, split="test").labels == [1, 0]
    path.write_text("text\nnice\nawful\n")  # no label column: an unlabeled test split
    assert _custom(tmp_path, path, split="test").labels is None
    path.write_text("text\tlabel\nnice\t-1\nawful\t-1\n")  # GLUE's hidden labels
    assert _custom(tmp_path, path, split="test").labels is None
    path.write_text("text\tlabel\nnice\tpos\nawful\tmaybe\n")
    with pytest.raises(DataError, match=r"test\.tsv, line 3: label 'maybe' is not in"):
        _custom(tmp_path, path, split="test")
    jsonl = tmp_path / "test.jsonl"
    jsonl.write_text('{"text": "a", "label": "pos"}\n{"text": "b"}\n')
    with pytest.raises(DataError, match="line 2: no 'label' while line 1 has one"):
        _custom(tmp_path, jsonl, split="test")


def test_a_test_file_alone_is_a_task(tmp_path):
    """evaluate --split test needs no train or dev file: the labels come from the test file
    (or --labels)."""
    path = write_tsv(tmp_path / "test.tsv", ["text", "label"], GOOD_ROWS)
    cfg = DataConfig(task="custom", test_file=str(path), text_columns=["text"])
    task = resolve_task(cfg)
    assert task.labels == ("neg", "pos") and list(task.splits) == ["test"]
    assert read_split(task, "test", cfg).labels == [1, 0]


def test_glue_test_labels_are_hidden_or_kept(tmp_path):
    cfg = DataConfig(data_dir=str(tmp_path))
    write_tsv(tmp_path / "SST-2" / "test.tsv", ["index", "sentence"], [["0", "nice"]])
    assert read_split(get_task("sst2"), "test", cfg).labels is None
    write_tsv(tmp_path / "SST-2" / "test.tsv", ["sentence", "label"], [["a", "1"], ["b", "0"]])
    assert read_split(get_task("sst2"), "test", cfg).labels == [1, 0]


@pytest.mark.parametrize(("labels", "expected"), [([-1, -1], None), ([1, 0], [1, 0])])
def test_hub_test_labels_are_hidden_only_when_glue_hides_them(monkeypatch, labels, expected):
    import sys
    import types

    table = {"sentence": ["nice", "awful"], "label": labels}
    fake = types.SimpleNamespace(load_dataset=lambda *args, **kwargs: table)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    split = read_split(get_task("sst2"), "test", DataConfig(task="sst2"))
    assert split.texts == [("nice",), ("awful",)] and split.labels == expected


def test_a_missing_split_names_the_flag_that_gives_it(tmp_path):
    path = write_tsv(tmp_path / "train.tsv", ["text", "label"], GOOD_ROWS)
    cfg = DataConfig(task="custom", train_file=str(path), text_columns=["text"])
    with pytest.raises(ConfigError, match="has no split 'dev'; it has train; pass --dev-file"):
        read_split(resolve_task(cfg), "dev", cfg)
    with pytest.raises(ConfigError, match="has no split 'test'; it has train; pass --test-file"):
        read_split(resolve_task(cfg), "test", cfg)
    with pytest.raises(ConfigError, match="no split 'validation'.*use one of train, dev, test"):
        read_split(get_task("sst2"), "validation", cfg)


def test_valid_files_read_the_same_in_any_encoding_and_line_end(tmp_path):
    """A UTF-8 or UTF-16 byte-order mark and CRLF or CR line ends change nothing."""
    text = "sentence\tlabel\na good film\t1\na dull film\t0\n"
    expected = None
    for content in (
        text.encode(),
        b"\xef\xbb\xbf" + text.encode(),
        text.encode("utf-16"),
        text.replace("\n", "\r\n").encode(),
        text.replace("\n", "\r").encode(),
    ):
        (tmp_path / "SST-2").mkdir(exist_ok=True)
        (tmp_path / "SST-2" / "train.tsv").write_bytes(content)
        split = read_split(get_task("sst2"), "train", DataConfig(data_dir=str(tmp_path)))
        expected = expected or (split.texts, split.labels)
        assert (
            (split.texts, split.labels)
            == expected
            == ([("a good film",), ("a dull film",)], [1, 0])
        )


def test_a_ragged_row_is_an_error_not_a_shifted_label(tmp_path):
    """A stray tab inside a text used to shift the label column silently."""
    cfg = _sst2(tmp_path, [["a good film", "1"], ["a\tdull film", "0"]])
    with pytest.raises(DataError, match=r"line 3: 3 field\(s\) but the header has 2.*stray tab"):
        read_split(get_task("sst2"), "train", cfg)


def test_a_latin1_file_names_line_byte_and_the_conversion(tmp_path):
    (tmp_path / "SST-2").mkdir()
    path = tmp_path / "SST-2" / "train.tsv"
    path.write_bytes("sentence\tlabel\nok\t1\ncaf\xe9\t0\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        read_split(get_task("sst2"), "train", DataConfig(data_dir=str(tmp_path)))
    assert str(err.value) == (
        f"{path}: not valid UTF-8 text at line 3, byte 23 (0xE9); convert the file to UTF-8, "
        "e.g. for a Latin-1 or Windows-1252 file: iconv -f cp1252 -t utf-8 train.tsv > "
        "train.utf8.tsv."
    )
