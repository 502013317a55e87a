"""The one preamble of the commands that read a model folder: `read_model`."""

from __future__ import annotations

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
