"""The one preamble of the commands that read a model folder: `read_model`."""

from __future__ import annotations

import json

import pytest

from lmshrink.config import DataConfig
from lmshrink.data.batching import encode
from lmshrink.errors import ConfigError, RunFolderError
from lmshrink.models.sources import read_model, with_saved_task


def test_read_model_fills_the_saved_task_and_loads_the_dev_data(tiny_teacher, tmp_path):
    teacher, glue = tiny_teacher["teacher"], tiny_teacher["glue"]
    src = read_model(str(teacher), DataConfig(data_dir=str(glue)), seed=3, out=str(tmp_path / "o"))
    assert src.folder == str(teacher) and src.task.name == "sst2"
    assert src.data.data_dir == str(glue)  # the given folder, not the one saved with the model
    assert src.data.max_length == 32  # saved with the model
    assert [len(s) for s in src.splits] == [48] and src.splits[0].name == "dev"
    assert not src.model.training and src.out == tmp_path / "o"
    assert "enc" not in vars(src)  # encoded on first use only (evaluate never needs it)
    want = encode(src.tokenizer, src.splits[0], 32)
    assert src.enc.features == want.features and src.enc.labels == want.labels
    # --max-eval-samples takes the seeded subset
    data = DataConfig(data_dir=str(glue), max_eval_samples=10)
    assert len(read_model(str(teacher), data, seed=3).splits[0]) == 10


def test_read_model_checks_out_before_loading_anything(tiny_teacher, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "x").write_text("x")
    missing_model = str(tmp_path / "no-model")
    with pytest.raises(RunFolderError, match="already holds another run"):
        read_model(missing_model, DataConfig(), seed=0, out=str(occupied))
    with pytest.raises(ConfigError, match="no output folder given"):
        read_model(missing_model, DataConfig(), seed=0, out="")


def test_with_saved_task_keeps_what_is_given(tiny_teacher):
    teacher = str(tiny_teacher["teacher"])
    given = DataConfig(task="cola", max_length=16)
    assert with_saved_task(given, teacher) is given
    filled = with_saved_task(DataConfig(max_eval_samples=5), teacher)
    assert (filled.task, filled.max_length, filled.max_eval_samples) == ("sst2", 32, 5)


def test_saved_settings_fill_only_what_is_not_given(tiny_teacher, tmp_path):
    """Field by field: a flag wins over the saved value; "given" means different from the
    default, so a default value cannot override a saved one (except by giving --task)."""
    teacher = str(tiny_teacher["teacher"])
    filled = with_saved_task(DataConfig(max_length=16, dev_file="x.tsv"), teacher)
    assert (filled.task, filled.max_length, filled.dev_file) == ("sst2", 16, "x.tsv")
    assert with_saved_task(DataConfig(max_length=128), teacher).max_length == 32  # the limit
    assert with_saved_task(DataConfig(task="sst2"), teacher).max_length == 128
    # a custom model: its files and columns fill in, its labels keep their trained id order
    folder = tmp_path / "m"
    meta = {
        "task": "custom",
        "labels": ["pos", "neg"],
        "config": {
            "data": {
                "task": "custom",
                "train_file": "a.tsv",
                "dev_file": "b.tsv",
                "text_columns": ["text"],
                "labels": [],
                "data_dir": "/elsewhere",
                "max_eval_samples": 7,
                "a_key_of_a_later_version": 1,
            }
        },
    }
    folder.mkdir()
    (folder / "lmshrink.json").write_text(json.dumps(meta))
    merged = with_saved_task(DataConfig(dev_file="mine.tsv", text_columns=["t"]), str(folder))
    assert (merged.train_file, merged.dev_file, merged.text_columns) == ("a.tsv", "mine.tsv", ["t"])
    assert merged.labels == ["pos", "neg"] and merged.data_dir == ""
    assert merged.max_eval_samples == 0
    # a folder whose saved config names no task (prune run without --task) still names one
    (folder / "lmshrink.json").write_text('{"task": "sst2", "config": {"data": {"task": ""}}}')
    assert with_saved_task(DataConfig(), str(folder)).task == "sst2"


def test_a_split_the_task_lacks_fails_before_the_data_is_read(tiny_teacher):
    data = DataConfig(task="custom", dev_file="d.tsv", text_columns=["s"], labels=["0", "1"])
    with pytest.raises(ConfigError, match=r"no split 'test' \(pass --test-file"):
        read_model(str(tiny_teacher["teacher"]), data, seed=0, split="test")
    with pytest.raises(ConfigError, match="no split 'valid'"):
        read_model(str(tiny_teacher["teacher"]), data, seed=0, split="valid")
