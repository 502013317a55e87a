import json

import pytest
import torch
from conftest import tiny_finetune_config

from lmshrink.config import FinetuneConfig, load_yaml
from lmshrink.errors import RunFolderError
from lmshrink.finetune import TrainingError, finetune


def test_finetune_writes_a_stock_hf_folder_that_learned(tiny_encoder, sst2_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "teacher"
    meta = finetune(tiny_finetune_config(tiny_encoder, sst2_dir, out, epochs=5))
    assert meta["dev"]["accuracy"] >= 0.85  # one sentiment word decides the label
    assert len(meta["history"]) == 5 and meta["best_epoch"] in (1, 2, 3, 4, 5)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "0", 1: "1"}
    assert model.config.label2id == {"0": 0, "1": 1}
    AutoTokenizer.from_pretrained(out)
    saved = json.loads((out / "lmshrink.json").read_text())
    assert saved["task"] == "sst2" and saved["metrics"] == ["accuracy"]
    assert set(saved["data_fingerprint"]) == {"train", "dev"}
    assert load_yaml(FinetuneConfig, out / "config.yaml").train.epochs == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".teacher")]


def test_same_config_and_seed_give_same_metrics(tiny_encoder, sst2_dir, tmp_path):
    runs = [
        finetune(
            tiny_finetune_config(
                tiny_encoder, sst2_dir, tmp_path / f"r{i}", epochs=1, max_grad_norm=1.0
            )
        )
        for i in range(2)
    ]
    assert runs[0]["history"] == [
        {**h, "seconds": runs[0]["history"][j]["seconds"]} for j, h in enumerate(runs[1]["history"])
    ]
    from safetensors.torch import load_file

    a, b = (load_file(tmp_path / f"r{i}" / "model.safetensors") for i in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = finetune(
        tiny_finetune_config(tiny_encoder, sst2_dir, tmp_path / "r3", epochs=1, seed=7)
    )
    c = load_file(tmp_path / "r3" / "model.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert other["data_fingerprint"]["train"] == runs[0]["data_fingerprint"]["train"]


def test_out_holding_another_run_is_refused_unless_overwrite(tiny_encoder, sst2_dir, tmp_path):
    out = tmp_path / "teacher"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    cfg = tiny_finetune_config(tiny_encoder, sst2_dir, out, epochs=1)
    with pytest.raises(RunFolderError, match="already holds another run.*--overwrite"):
        finetune(cfg)
    assert (out / "precious.txt").read_text() == "keep me"
    cfg.overwrite = True
    finetune(cfg)
    assert (out / "config.json").is_file() and not (out / "precious.txt").exists()


def test_nan_loss_stops_with_a_clear_error_and_writes_nothing(
    tiny_encoder, sst2_dir, tmp_path, monkeypatch
):
    out = tmp_path / "teacher"
    monkeypatch.setattr(
        torch.nn.CrossEntropyLoss,
        "forward",
        lambda self, logits, labels: logits.sum() * float("nan"),
    )
    with pytest.raises(TrainingError, match="loss became nan at step 1; lower --lr"):
        finetune(tiny_finetune_config(tiny_encoder, sst2_dir, out))
    assert not out.exists() and list(tmp_path.iterdir()) == [sst2_dir.parent / "glue"]


def test_regression_task_trains(tiny_encoder, tmp_path):
    from conftest import STSB_HEADER, make_sentences, write_tsv

    for split, seed in (("train", 1), ("dev", 2)):
        rows = [
            [str(i), "g", "f", "y", str(i), "n", "n", s, s, f"{4.0 * int(y) + 0.5:.1f}"]
            for i, (s, y) in enumerate(make_sentences(160 if split == "train" else 48, seed))
        ]
        write_tsv(tmp_path / "glue" / "STS-B" / f"{split}.tsv", STSB_HEADER, rows)
    cfg = tiny_finetune_config(tiny_encoder, tmp_path / "glue", tmp_path / "sts", epochs=6)
    cfg.data.task = "stsb"
    meta = finetune(cfg)
    assert set(meta["dev"]) == {"pearson", "spearman"} and meta["dev"]["pearson"] > 0.5


def test_num_labeled_trains_on_the_same_rows_distill_keeps(tiny_encoder, sst2_dir, tmp_path):
    from lmshrink.config import DataConfig
    from lmshrink.data.splits import read_split
    from lmshrink.data.tasks import get_task

    cfg = tiny_finetune_config(tiny_encoder, sst2_dir, tmp_path / "t", epochs=1)
    cfg.data.num_labeled = 20
    meta = finetune(cfg)
    assert meta["train_examples"] == 20
    # distill selects its gold rows as train.subset(num_labeled, seed): the same rows
    train = read_split(get_task("sst2"), "train", DataConfig(data_dir=str(sst2_dir)))
    assert meta["data_fingerprint"]["train"] == train.subset(20, cfg.seed).fingerprint()
