"""End-to-end distillation of a token-classification (NER) teacher on tiny models: the
per-word transfer set and cache, the default word-level stages, entity F1 in the report,
kill and resume, layer-wise losses on a token task, the NER recipe through the CLI."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import FILLER

from lmshrink.config import from_dict
from lmshrink.distill import DistillConfig, distill
from lmshrink.errors import ConfigError

# Entity words are not in the tiny vocabulary, so they split into letters: their first
# sub-token tells the tiny teacher what they are.
PERSONS = ["bob", "ann", "tom", "eve"]
PLACES = ["paris", "rome", "oslo", "lima"]


def ner_sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """(words, IOB2 tags): four filler words with a person (sometimes two words) and a place
    each put in with probability 0.7."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words, tags = rng.sample(FILLER, 4), ["O"] * 4
        for kind, names in (("PER", PERSONS), ("LOC", PLACES)):
            if rng.random() < 0.7:
                size = 2 if kind == "PER" and rng.random() < 0.4 else 1
                at = rng.randint(0, len(words))
                words[at:at] = [rng.choice(names) for _ in range(size)]
                tags[at:at] = [f"B-{kind}"] + [f"I-{kind}"] * (size - 1)
        rows.append((words, tags))
    return rows


def write_conll_folder(
    data_dir: Path, train: int, dev: int, sentences: Callable[..., Any] | None = None
) -> Path:
    """DATA_DIR/conll2003/{train,dev}.tsv of made-up sentences (word, tab, tag; a blank line
    between sentences) from `sentences(n, seed)` (default: `ner_sentences`); returns
    DATA_DIR."""
    sentences = sentences or ner_sentences
    folder = data_dir / "conll2003"
    folder.mkdir(parents=True)
    for split, n, seed in (("train", train, 1), ("dev", dev, 2)):
        lines = []
        for words, tags in sentences(n, seed):
            lines += [f"{w}\t{t}" for w, t in zip(words, tags, strict=True)] + [""]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data_dir


@pytest.fixture(scope="module")
def ner_setup(tiny_encoder, tmp_path_factory):
    """A tiny CoNLL-2003 teacher fine-tuned on 120 made-up sentences (about two seconds),
    its data folder (dev: 40 sentences) and a .txt transfer file of 60 sentences written as
    text, with punctuation."""
    from lmshrink.config import DataConfig, TrainConfig
    from lmshrink.finetune import FinetuneConfig, finetune

    root = tmp_path_factory.mktemp("ner")
    write_conll_folder(root / "data", train=120, dev=40)
    transfer = root / "unlabeled.txt"
    transfer.write_text("".join(" ".join(w).capitalize() + ".\n" for w, _ in ner_sentences(60, 9)))
    finetune(
        FinetuneConfig(
            model=str(tiny_encoder),
            out=str(root / "teacher"),
            seed=42,
            progress=False,
            data=DataConfig(task="conll2003", data_dir=str(root / "data"), max_length=32),
            train=TrainConfig(epochs=12, batch_size=16, lr=4e-3, eval_batch_size=64),
        )
    )
    return {"teacher": root / "teacher", "data": root / "data", "transfer": transfer}


def quick_token_stages() -> list[dict]:
    """The default token-task schedule (its stages, losses and unfreezing), shortened."""
    from lmshrink.config import to_dict
    from lmshrink.data.task_kinds import TOKEN_CLASSIFICATION
    from lmshrink.distillation.stages import default_stages

    stages = [to_dict(stage) for stage in default_stages(TOKEN_CLASSIFICATION)]
    for stage, epochs in zip(stages, (1, 3, 1), strict=True):
        stage.update(epochs=epochs, lr=5e-3, batch_size=32)
    return stages


def token_config(setup, out, **top) -> DistillConfig:
    raw = {
        "teacher": str(setup["teacher"]),
        "out": str(out),
        "progress": False,
        "measure_speed": False,
        "checkpoint_every": 4,
        "data": {"task": "conll2003", "data_dir": str(setup["data"]), "max_length": 32},
        "transfer": {"files": [str(setup["transfer"])], "min_words": 1},
        "student": {"kind": "layers", "layers": 1},
        "stages": quick_token_stages(),
    }
    raw.update(top)
    return from_dict(DistillConfig, raw)


@pytest.fixture(scope="module")
def whole_run(ner_setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("token-run") / "run"
    return distill(token_config(ner_setup, out, measure_speed=True)), out


def test_default_token_stages_are_xtremedistil_word_by_word():
    from lmshrink.data.task_kinds import TOKEN_CLASSIFICATION
    from lmshrink.distillation.stages import default_stages

    stages = default_stages(TOKEN_CLASSIFICATION)
    assert [(s.name, s.data, [loss.name for loss in s.losses]) for s in stages] == [
        ("representation", "transfer", ["token_representation"]),
        ("logits", "transfer", ["token_logit_mse"]),
        ("labels", "labeled", ["token_gold_ce"]),
    ]
    assert [s.unfreeze for s in stages] == ["gradual", "gradual", "all"]


def test_stages_refuse_losses_of_the_other_kind_of_task():
    from lmshrink.data.task_kinds import SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION
    from lmshrink.distillation.stages import LossSpec, StageConfig, validate_stages

    def stage(loss, data="transfer"):
        return [StageConfig(name="s", data=data, losses=[LossSpec(loss)])]

    with pytest.raises(ConfigError, match=r"loss 'logit_mse' reads one output per sentence.*"):
        validate_stages(stage("logit_mse"), TOKEN_CLASSIFICATION)
    with pytest.raises(ConfigError, match=r"use one of token_gold_ce, token_logit_mse"):
        validate_stages(stage("gold_ce", "labeled"), TOKEN_CLASSIFICATION)
    with pytest.raises(ConfigError, match=r"'token_soft_kl' reads one output per word"):
        validate_stages(stage("token_soft_kl"), SEQUENCE_CLASSIFICATION)
    with pytest.raises(ConfigError, match="needs gold labels"):
        validate_stages(stage("token_gold_ce"), TOKEN_CLASSIFICATION)
    for loss in ("hidden_mse", "attention_kl", "token_soft_kl"):  # layer-wise losses fit both
        validate_stages(stage(loss), TOKEN_CLASSIFICATION)


def test_a_token_teacher_distils_into_a_token_student(ner_setup, whole_run):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    report, out = whole_run
    dev = report["dev"]
    assert set(dev["teacher"]) == set(dev["student"]) == {"entity_f1"}
    assert dev["teacher"]["entity_f1"] >= 0.7
    assert report["retention"] >= 0.8
    assert report["retention"] == pytest.approx(
        dev["student"]["entity_f1"] / dev["teacher"]["entity_f1"]
    )
    assert {"f1_type_PER", "f1_type_LOC"} <= set(report["entities"]["student"])
    assert report["transfer_set"]["train"] == 120 and report["transfer_set"]["total"] == 180
    assert [h["stage"] for h in report["history"]][0] == "representation"
    assert set(report["speed"]["ratio"]["student"]) == {"1", "32"}
    md = (out / "report.md").read_text()
    assert "| dev entity F1 |" in md and "| dev F1 PER |" in md
    assert "Retention (student entity F1 / teacher entity F1)" in md
    assert "Transfer set: 180 sentences" in md

    model = AutoModelForTokenClassification.from_pretrained(out / "model")
    assert type(model).__name__ == "BertForTokenClassification"
    assert model.config.num_hidden_layers == 1 and model.config.num_labels == 9
    tok = AutoTokenizer.from_pretrained(out / "model")
    batch = tok([["the", "bob", "sat"]], is_split_into_words=True, return_tensors="pt")
    with torch.inference_mode():
        assert model(**batch).logits.shape == (1, batch["input_ids"].shape[1], 9)

    # The teacher labelled the transfer set and dev per word, ragged, once.
    manifests = [json.loads(m.read_text()) for m in (out / "cache").glob("*/manifest.json")]
    assert sorted(m["num_examples"] for m in manifests) == [40, 180]
    assert all(m["key"]["level"] == "word" for m in manifests)
    assert all(m["key"]["repr"] == [-1, "first_subtoken"] for m in manifests)


def test_a_killed_token_run_resumes_to_the_same_result(ner_setup, whole_run, tmp_path, capsys):
    from safetensors.torch import load_file

    from lmshrink.training.callbacks import KillAt, SimulatedKill

    whole, whole_out = whole_run
    expected = load_file(whole_out / "model" / "model.safetensors")
    out = tmp_path / "killed"
    with pytest.raises(SimulatedKill):
        distill(token_config(ner_setup, out), callbacks=[KillAt(10, phase="1")])
    assert not (out / "model").exists()
    capsys.readouterr()
    resumed = distill(token_config(ner_setup, out, resume=True))
    assert "resuming from step-1-0000008" in capsys.readouterr().out
    assert resumed["history"] == whole["history"]
    assert resumed["dev"]["student"] == whole["dev"]["student"]
    got = load_file(out / "model" / "model.safetensors")
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)


LAYER_STAGES = [
    {
        "name": "layer-wise",
        "data": "transfer",
        "losses": [
            {"name": "hidden_mse"},
            {"name": "attention_mse"},
            {"name": "token_soft_kl", "params": {"temperature": 2.0}},
        ],
        "epochs": 1,
        "lr": 3e-3,
        "batch_size": 32,
    },
]


def test_layer_wise_losses_on_a_token_task_read_cached_targets(ner_setup, tmp_path, capsys):
    """Per-token hidden-state and attention losses work on a token task as on sentences: the
    teacher's layer targets are cached on the words' encoding, and train the student to
    the same place as the teacher run online."""

    def run(name, **labelling):
        cfg = token_config(
            ner_setup,
            tmp_path / name,
            stages=LAYER_STAGES,
            layer_map={"strategy": "uniform"},
            labelling=labelling,
        )
        return distill(cfg)["history"][-1]["dev"], capsys.readouterr().out

    cached, log = run("cached")
    assert "teacher layer targets (" in log and ": cached" in log
    online, log = run("online", layer_cache_gb=0)
    assert "the teacher runs on every batch instead" in log
    assert 0.0 <= cached <= 1.0  # an entity F1: the stage trains the tagger
    assert cached == pytest.approx(online, abs=0.05)


def test_the_ner_recipe_runs_through_the_cli(ner_setup, tmp_path):
    """recipes/xtremedistil-ner.yaml (a BiLSTM tagger with word shapes), shrunk to the tiny
    teacher, runs from `lmshrink distill --config ... --task conll2003 --transfer ...`."""
    import yaml

    from lmshrink.cli import main

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "xtremedistil-ner.yaml"
    raw = yaml.safe_load(recipe.read_text())
    assert raw["student"]["kind"] == "bilstm"
    raw["student"].update(embedding_dim=16, hidden_size=16, shape_dim=4)
    raw["stages"] = [{**stage, "epochs": 0.5, "batch_size": 32} for stage in raw["stages"]]
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(raw))
    code = main(
        [
            "distill",
            "--config",
            str(config),
            "--task",
            "conll2003",
            "--teacher",
            str(ner_setup["teacher"]),
            "--transfer",
            str(ner_setup["transfer"]),
            "--data-dir",
            str(ner_setup["data"]),
            "--out",
            str(tmp_path / "run"),
            "--max-length",
            "32",
            "--min-words",
            "1",
            "--no-progress",
            "--no-measure-speed",
        ]
    )
    assert code in (0, None)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["student_kind"] == "bilstm" and "entity_f1" in report["dev"]["student"]
    assert [h["stage"] for h in report["history"]][-1] == "labels"
