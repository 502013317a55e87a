import json

import pytest
import torch
from conftest import tiny_finetune_config

from lmshrink.config import DataConfig, load_yaml
from lmshrink.errors import RunFolderError, TrainingError
from lmshrink.finetune import FinetuneConfig, finetune
from lmshrink.training.callbacks import Callback, KillAt, SimulatedKill


class StepLog(Callback):
    """The steps a run trained."""

    def __init__(self):
        self.steps = []

    def on_step_end(self, phase, state):
        self.steps.append(state.step)


def test_finetune_writes_a_stock_hf_folder_that_learned(tiny_encoder, sst2_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "teacher"
    meta = finetune(tiny_finetune_config(tiny_encoder, sst2_dir, out, epochs=5))
    assert meta["dev"]["accuracy"] >= 0.85  # one sentiment word decides the label
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3, 4, 5]
    best = max(meta["history"], key=lambda h: h["score"])  # the first of the best
    assert (meta["best_epoch"], meta["best_step"]) == (best["epoch"], best["step"])
    assert meta["dev"] == best["dev"] and meta["score"] == best["score"]
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "0", 1: "1"}
    assert model.config.label2id == {"0": 0, "1": 1}
    AutoTokenizer.from_pretrained(out)
    saved = json.loads((out / "lmshrink.json").read_text())
    assert saved["task"] == "sst2" and saved["metrics"] == ["accuracy"]
    assert set(saved["data_fingerprint"]) == {"train", "dev"}
    assert load_yaml(FinetuneConfig, out / "config.yaml").train.epochs == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".teacher")]
    assert not (tmp_path / "teacher.work").exists()  # the checkpoints go with the run
    # The saved weights are the best evaluation's: scored again, they give its metrics.
    from lmshrink.evaluate import EvaluateConfig, evaluate

    scored = evaluate(
        EvaluateConfig(model=str(out), progress=False, data=DataConfig(data_dir=str(sst2_dir)))
    )
    assert scored["metrics"] == best["dev"]


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
    with pytest.raises(
        TrainingError, match="loss became nan at step 1; no checkpoint was written yet; lower --lr"
    ):
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


def test_killed_finetune_resumes_to_the_same_model(tiny_encoder, sst2_dir, tmp_path):
    from safetensors.torch import load_file

    settings = dict(epochs=2, eval_every=6)  # 10 steps per epoch: dev at 6, 10, 12, 18, 20
    whole = finetune(tiny_finetune_config(tiny_encoder, sst2_dir, tmp_path / "whole", **settings))
    cfg = tiny_finetune_config(tiny_encoder, sst2_dir, tmp_path / "killed", **settings)
    cfg.checkpoint_every = 4
    with pytest.raises(SimulatedKill):
        finetune(cfg, callbacks=[KillAt(15)])
    work = tmp_path / "killed.work"
    assert not (tmp_path / "killed").exists()  # no half-written model
    assert (work / "checkpoints" / "latest").read_text() == "step-0000012"
    with pytest.raises(RunFolderError, match="unfinished run .* pass --resume"):
        finetune(cfg)
    cfg.resume = True
    steps = StepLog()
    resumed = finetune(cfg, callbacks=[steps])
    assert steps.steps == list(range(13, 21))  # it went on from the checkpoint
    assert not work.exists()

    def without_times(meta):
        history = [{k: v for k, v in h.items() if k != "seconds"} for h in meta["history"]]
        return history, meta["dev"], meta["best_step"]

    assert [h["step"] for h in resumed["history"]] == [6, 10, 12, 18, 20]
    assert without_times(resumed) == without_times(whole)
    a, b = (load_file(tmp_path / d / "model.safetensors") for d in ("whole", "killed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_finetune_resume_refuses_changed_settings_and_missing_runs(
    tiny_encoder, sst2_dir, tmp_path
):
    cfg = tiny_finetune_config(tiny_encoder, sst2_dir, tmp_path / "t", epochs=1)
    cfg.resume = True
    with pytest.raises(RunFolderError, match="no run to resume"):
        finetune(cfg)
    cfg.resume, cfg.checkpoint_every = False, 3
    with pytest.raises(SimulatedKill):
        finetune(cfg, callbacks=[KillAt(5)])
    changed = tiny_finetune_config(
        tiny_encoder, sst2_dir, tmp_path / "t", seed=3, epochs=1, lr=1e-3
    )
    changed.resume, changed.checkpoint_every, changed.progress = True, 3, True
    with pytest.raises(RunFolderError, match=r"but seed, train\.lr differ from its config.yaml"):
        finetune(changed)
    cfg.overwrite = True  # starts again, discarding the unfinished run
    finetune(cfg)
    assert (tmp_path / "t" / "config.json").is_file() and not (tmp_path / "t.work").exists()


def test_a_custom_file_flag_with_a_named_task_is_an_error_not_ignored(
    tiny_encoder, sst2_dir, tmp_path
):
    """--dev-file with --task sst2 would be silently ignored (SST-2 reads its GLUE folder)."""
    from lmshrink.errors import ConfigError

    cfg = tiny_finetune_config(tiny_encoder, sst2_dir, tmp_path / "t")
    cfg.data.dev_file = str(tmp_path / "other.tsv")
    with pytest.raises(
        ConfigError, match="--dev-file: task sst2 reads its own files.*--task custom"
    ):
        finetune(cfg)
    assert not (tmp_path / "t").exists() and not (tmp_path / "t.work").exists()
