"""End-to-end distillation on tiny models: stages, cache reuse, resume, errors, CLI."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import free_port, make_sentences, tiny_bert_config

from lmshrink.config import DataConfig, from_dict
from lmshrink.distill import DistillConfig, distill
from lmshrink.distillation.stages import StageConfig, validate_stages
from lmshrink.errors import ConfigError, RunFolderError

FAST_STAGES = [
    {
        "name": "representation",
        "data": "transfer",
        "losses": [{"name": "representation"}],
        "epochs": 2,
        "lr": 3e-3,
        "batch_size": 16,
        "unfreeze": "gradual",
    },
    # 6 epochs at 5e-3: the tiny student passes its learning transition on every seed tried.
    {
        "name": "logits",
        "data": "transfer",
        "losses": [{"name": "logit_mse"}],
        "epochs": 6,
        "lr": 5e-3,
        "batch_size": 16,
        "unfreeze": "gradual",
        "patience": 0,
    },
    {
        "name": "labels",
        "data": "labeled",
        "losses": [{"name": "gold_ce"}],
        "epochs": 1,
        "lr": 1e-3,
        "batch_size": 16,
    },
]


@pytest.fixture(scope="module")
def teacher_setup(tiny_teacher):
    """The session's tiny SST-2 teacher, its GLUE folder, and a transfer .txt file."""
    return tiny_teacher["teacher"], tiny_teacher["glue"], tiny_teacher["transfer"]


def make_config(teacher_setup, out, **top):
    teacher, glue, transfer = teacher_setup
    raw = {
        "teacher": str(teacher),
        "out": str(out),
        "progress": False,
        "measure_speed": False,
        "checkpoint_every": 5,
        "data": {"task": "sst2", "data_dir": str(glue), "max_length": 32},
        "transfer": {"files": [str(transfer)], "min_words": 1},
        "student": {"embedding_dim": 16, "hidden_size": 16},
        "stages": FAST_STAGES,
    }
    raw.update(top)
    return from_dict(DistillConfig, raw)


def test_distilled_bilstm_learns_and_loads_the_ecosystem_way(teacher_setup, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import lmshrink  # noqa: F401  (registers the BiLSTM with the Auto classes)

    cfg = make_config(teacher_setup, tmp_path / "run", measure_speed=True)
    report = distill(cfg)
    assert report["dev"]["teacher"]["accuracy"] >= 0.9
    assert report["dev"]["student"]["accuracy"] >= 0.85
    assert report["parameters"]["ratio"] > 1 and report["retention"] > 0.9
    assert set(report["speed"]["ratio"]["student"]) == {"1", "32"}
    assert report["transfer_set"]["train"] == 160 and report["labeled_examples"] == 160
    assert [h["stage"] for h in report["history"]][0] == "representation"
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["dev"] == report["dev"]
    assert "Retention" in (tmp_path / "run" / "report.md").read_text()

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "model")
    assert type(model).__name__ == "BiLSTMForSequenceClassification"
    tok = AutoTokenizer.from_pretrained(tmp_path / "run" / "model")
    batch = tok(["the movie was great", "the plot was awful"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert model(**batch).logits.argmax(-1).tolist() == [1, 0]
    assert "teacher outputs: labelled" in capsys.readouterr().out

    from lmshrink.evaluate import EvaluateConfig, evaluate

    scored = evaluate(
        EvaluateConfig(
            model=str(tmp_path / "run"),
            progress=False,
            data=DataConfig(data_dir=str(teacher_setup[1])),
        )
    )
    assert scored["task"] == "sst2" and scored["metrics"] == report["dev"]["student"]
    assert scored["parameters"] == report["parameters"]["student"]

    cfg2 = make_config(teacher_setup, tmp_path / "run", overwrite=True)
    distill(cfg2)
    assert "teacher outputs: reused the cache" in capsys.readouterr().out


def test_low_resource_mode_keeps_only_n_gold_rows(teacher_setup, tmp_path):
    data = {"task": "sst2", "data_dir": str(teacher_setup[1]), "max_length": 32, "num_labeled": 20}
    report = distill(make_config(teacher_setup, tmp_path / "run", data=data))
    assert report["labeled_examples"] == 20
    assert report["transfer_set"]["train"] == 160  # every train input, labels hidden


def tiny_cli_args(teacher_setup, out):
    """`lmshrink distill` arguments for a fast tiny run (no stages: they come separately)."""
    teacher, glue, transfer = teacher_setup
    return [
        "distill",
        "--task",
        "sst2",
        "--teacher",
        str(teacher),
        "--data-dir",
        str(glue),
        "--transfer",
        str(transfer),
        "--out",
        str(out),
        "--no-progress",
        "--no-measure-speed",
        "--max-length",
        "32",
        "--min-words",
        "1",
        "--embedding-dim",
        "16",
        "--hidden-size",
        "16",
    ]


def test_killed_run_resumes_to_the_same_result(teacher_setup, tmp_path, capsys):
    """Killed inside a stage, and between two stages: --resume ends with the weights and
    dev history of an uninterrupted run."""
    from safetensors.torch import load_file

    from lmshrink.training.callbacks import KillAt, SimulatedKill

    whole = distill(make_config(teacher_setup, tmp_path / "whole", checkpoint_every=4))
    expected = load_file(tmp_path / "whole" / "model" / "model.safetensors")
    cases = [  # (the kill: step, stage; the checkpoint it leaves)
        (KillAt(22, phase="1"), "step-1-0000020"),  # the logits stage, 150 steps
        (KillAt(3, phase="2"), "step-1-0000150"),  # the logits stage is over
    ]
    for i, (kill, left) in enumerate(cases):
        out = tmp_path / f"killed{i}"
        with pytest.raises(SimulatedKill):
            distill(make_config(teacher_setup, out, checkpoint_every=4), callbacks=[kill])
        assert not (out / "model").exists()
        capsys.readouterr()
        resumed = distill(make_config(teacher_setup, out, checkpoint_every=4, resume=True))
        assert f"resuming from {left}" in capsys.readouterr().out
        assert resumed["history"] == whole["history"]
        assert resumed["dev"]["student"] == whole["dev"]["student"]
        got = load_file(out / "model" / "model.safetensors")
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)


def test_resume_refuses_changed_settings_and_missing_runs(teacher_setup, tmp_path):
    with pytest.raises(RunFolderError, match="no run to resume"):
        distill(make_config(teacher_setup, tmp_path / "none", resume=True))
    distill(make_config(teacher_setup, tmp_path / "run"))
    with pytest.raises(RunFolderError, match="seed differ"):
        distill(make_config(teacher_setup, tmp_path / "run", resume=True, seed=3))
    with pytest.raises(RunFolderError, match="already holds another run"):
        distill(make_config(teacher_setup, tmp_path / "run"))


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(
    teacher_setup, tmp_path, monkeypatch
):
    from lmshrink.distillation import losses
    from lmshrink.errors import TrainingError

    real = losses.LogitMSELoss.forward
    calls = []

    def poisoned(self, student_logits, teacher_logits):
        calls.append(1)
        value = real(self, student_logits=student_logits, teacher_logits=teacher_logits)
        return value * float("nan") if len(calls) > 12 else value

    monkeypatch.setattr(losses.LogitMSELoss, "forward", poisoned)
    with pytest.raises(TrainingError, match="loss became nan.*last good checkpoint is kept"):
        distill(make_config(teacher_setup, tmp_path / "run"))
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file()
    assert not (tmp_path / "run" / "model").exists()


def one_loss_stage(name, data, loss):
    from lmshrink.distillation.stages import LossSpec

    return StageConfig(name=name, data=data, losses=[LossSpec(name=loss)])


def test_stage_validation_names_the_stage():
    bad_data = [one_loss_stage("a", "transfer", "gold_ce")]
    with pytest.raises(ConfigError, match=r"stages\[0\] \(a\).*needs gold labels"):
        validate_stages(bad_data)
    with pytest.raises(ConfigError, match="needs teacher outputs"):
        validate_stages([one_loss_stage("b", "labeled", "soft_kl")])
    with pytest.raises(ConfigError, match="unknown loss"):
        validate_stages([one_loss_stage("c", "transfer", "sofkl")])
    with pytest.raises(ConfigError, match="data must be"):
        validate_stages([one_loss_stage("d", "gold", "gold_ce")])


def test_a_stage_keeps_its_own_optimiser_defaults():
    """A stage takes OptimSettings' keys, with the defaults stages always had."""
    stage = from_dict(StageConfig, {"name": "x"})
    assert (stage.epochs, stage.lr, stage.batch_size) == (3.0, 1e-3, 64)
    assert (stage.weight_decay, stage.warmup_ratio) == (0.0, 0.0)
    with pytest.raises(TypeError):
        StageConfig("x", "transfer")  # keyword-only: the optimiser fields come first


def test_default_schedule_is_xtremedistil():
    cfg = DistillConfig(data=DataConfig(task="stsb"))
    assert cfg.stages == []
    from lmshrink.data.task_kinds import REGRESSION, SEQUENCE_CLASSIFICATION
    from lmshrink.distillation.stages import default_stages

    stages = default_stages(REGRESSION)
    assert [s.name for s in stages] == ["representation", "logits", "labels"]
    assert stages[-1].losses[0].name == "gold_mse" and stages[0].unfreeze == "gradual"
    # the schedules of the shipped recipes, the best ones measured
    from lmshrink.data.task_kinds import TOKEN_CLASSIFICATION

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    keys = ("epochs", "lr", "batch_size", "unfreeze", "patience", "eval_every")
    for kind, name in (
        (REGRESSION, "xtremedistil-bilstm"),
        (TOKEN_CLASSIFICATION, "xtremedistil-ner"),
    ):
        recipe = yaml.safe_load((recipes / f"{name}.yaml").read_text())
        for stage, saved in zip(default_stages(kind), recipe["stages"], strict=True):
            defaults = {"unfreeze": "all", "eval_every": 0}
            assert [getattr(stage, k) for k in keys] == [
                saved.get(k, defaults.get(k)) for k in keys
            ]
    assert default_stages(SEQUENCE_CLASSIFICATION)[-1].losses[0].name == "gold_ce"


def test_the_saved_config_is_the_config_the_run_used(teacher_setup, tmp_path):
    """With no stages given, the run fills in the task's default schedule (and the teacher's
    mask token) before it writes config.yaml: loading it back gives exactly the config the
    run used, the one saved with the model, and --resume compares against it."""
    from lmshrink.config import load_yaml, to_dict
    from lmshrink.data.task_kinds import SEQUENCE_CLASSIFICATION
    from lmshrink.distill import _prepare_out, resolve_config
    from lmshrink.distillation.stages import default_stages
    from lmshrink.models.loading import METADATA_FILE

    out = tmp_path / "run"
    small = {"task": "sst2", "data_dir": str(teacher_setup[1]), "max_length": 32}
    cfg = make_config(
        teacher_setup,
        out,
        stages=[],
        data={**small, "max_train_samples": 40},
        transfer={"files": [], "min_words": 1},
    )
    report = distill(cfg)
    assert cfg.stages == []  # the caller's config is left as it was
    saved = to_dict(load_yaml(DistillConfig, out / "config.yaml"))
    used = json.loads((out / "model" / METADATA_FILE).read_text())["config"]
    assert saved == used
    assert saved["stages"] == [to_dict(s) for s in default_stages(SEQUENCE_CLASSIFICATION)]
    assert [s["name"] for s in report["stages"]] == ["representation", "logits", "labels"]
    assert saved["transfer"]["augment"]["mask_token"] == "[MASK]"  # the teacher's own
    again = dataclasses.replace(cfg, resume=True)
    _prepare_out(resolve_config(again, SEQUENCE_CLASSIFICATION, "[MASK]"), out)  # same run
    with pytest.raises(RunFolderError, match="seed differ"):
        changed = dataclasses.replace(again, seed=cfg.seed + 1)
        _prepare_out(resolve_config(changed, SEQUENCE_CLASSIFICATION, "[MASK]"), out)


def test_resolving_a_config_fills_the_stages_and_the_teachers_mask_token():
    from lmshrink.data.task_kinds import REGRESSION
    from lmshrink.distill import resolve_config

    cfg = DistillConfig()
    resolved = resolve_config(cfg, REGRESSION, "<mask>")  # e.g. a RoBERTa teacher
    assert resolved.transfer.augment.mask_token == "<mask>"
    assert [s.name for s in resolved.stages] == ["representation", "logits", "labels"]
    assert resolved.stages[-1].losses[0].name == "gold_mse"
    assert cfg.stages == [] and cfg.transfer.augment.mask_token == "[MASK]"
    assert resolve_config(cfg, REGRESSION, None).transfer.augment.mask_token == "[MASK]"
    cfg.transfer.augment.mask_token = "[BLANK]"  # the user's choice stays
    assert resolve_config(cfg, REGRESSION, "<mask>").transfer.augment.mask_token == "[BLANK]"
    given = [{"name": "only", "data": "labeled", "losses": [{"name": "gold_mse"}]}]
    chosen = from_dict(DistillConfig, {"stages": given})
    assert [s.name for s in resolve_config(chosen, REGRESSION, None).stages] == ["only"]


def test_distill_config_takes_the_shared_run_settings():
    from lmshrink.config import ResumableRunSettings

    assert issubclass(DistillConfig, ResumableRunSettings)
    cfg = from_dict(DistillConfig, {"out": "x", "seed": 3, "threads": 2, "checkpoint_every": 7})
    assert (cfg.out, cfg.seed, cfg.threads, cfg.checkpoint_every) == ("x", 3, 2, 7)


def test_two_cpu_processes_with_accelerate(teacher_setup, tmp_path):
    """`accelerate launch --cpu --num_processes 2 -m lmshrink distill ...` (gloo backend)."""
    pytest.importorskip("accelerate")
    teacher, glue, transfer = teacher_setup
    out = tmp_path / "ddp"
    launch = [
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        "-m",
        "lmshrink",
    ]
    cmd = [
        sys.executable,
        "-m",
        *launch,
        *tiny_cli_args(teacher_setup, out),
        "--shard-size",
        "64",
        "--set",
        "stages=" + json.dumps(FAST_STAGES),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("saved ") == 1  # only the main process saves and reports
    report = json.loads((out / "report.json").read_text())
    assert report["dev"]["student"]["accuracy"] >= 0.85
    shards = sorted(p.name for p in (out / "cache").glob("*/shard-*.safetensors"))
    assert len(shards) == 8  # 399 transfer examples in 7 shards of 64, dev in 1

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import lmshrink  # noqa: F401

    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    with torch.inference_mode():
        logits = model(**tok(["a great film"], return_tensors="pt")).logits
    assert logits.argmax(-1).item() == 1


def test_unknown_student_kind_fails_before_any_work(teacher_setup, tmp_path):
    cfg = make_config(teacher_setup, tmp_path / "run", student={"kind": "gru"})
    with pytest.raises(ConfigError, match="unknown student 'gru'.*bilstm"):
        distill(cfg)
    assert not (tmp_path / "run").exists()


def test_gold_only_schedule_skips_teacher_labelling(teacher_setup, tmp_path, capsys):
    gold_only = [
        {
            "name": "labels",
            "data": "labeled",
            "losses": [{"name": "gold_ce"}],
            "epochs": 8,
            "lr": 5e-3,
            "batch_size": 16,
            "patience": 0,
        }
    ]
    report = distill(make_config(teacher_setup, tmp_path / "run", stages=gold_only))
    assert not (tmp_path / "run" / "cache").exists()
    assert "teacher outputs" not in capsys.readouterr().out
    assert report["dev"]["student"]["accuracy"] >= 0.85


def shipped_recipes(token: bool | None = None):
    """The recipes under recipes/; only those for token tasks (per-word losses) with
    token=True, only the others with token=False."""
    from pathlib import Path

    import yaml

    from lmshrink.distillation.loss_registry import LOSSES, WORD

    def is_token(path):
        stages = yaml.safe_load(path.read_text())["stages"]
        return any(LOSSES.get(s["name"]).level == WORD for st in stages for s in st["losses"])

    paths = sorted((Path(__file__).resolve().parents[1] / "recipes").rglob("*.yaml"))
    return [p for p in paths if token is None or is_token(p) == token]


def test_the_recipes_include_one_for_token_tasks():
    assert [p.stem for p in shipped_recipes(token=True)] == ["xtremedistil-ner"]


@pytest.mark.parametrize("path", shipped_recipes(token=False), ids=lambda p: p.stem)
def test_every_shipped_recipe_runs_on_a_tiny_model(teacher_setup, tmp_path, path):
    """Each sentence-task recipe, shrunk to the 2-layer teacher (sizes, epochs), runs end to
    end (the token-task recipe runs in test_distill_tokens.py)."""
    import yaml

    from lmshrink.config import to_dict

    raw = yaml.safe_load(path.read_text())
    cfg = make_config(teacher_setup, tmp_path / "run")
    base = to_dict(cfg)
    student = {k: v for k, v in raw.get("student", {}).items()}
    if student.get("kind") == "bilstm":
        student.update(embedding_dim=16, hidden_size=16)
    if "layers" in student:
        student["layers"] = 1
    if student.get("kind") == "narrow":
        student.update(hidden_size=16, num_heads=2)  # the tiny teacher has 2 heads
        if "intermediate_size" in student:
            student["intermediate_size"] = 32
    layer_map = raw.get("layer_map", {})
    if layer_map.get("strategy") == "explicit":  # the tiny teacher has 2 layers
        layer_map = {**layer_map, "pairs": [[1, 2]]}
    stages = [{**stage, "epochs": 0.25} for stage in raw["stages"]]
    for stage in stages:
        for loss in stage["losses"]:
            if loss["name"] == "value_relation":
                loss["params"] = {"relation_heads": 2}
    report = distill(
        from_dict(
            DistillConfig, {**base, "student": student, "stages": stages, "layer_map": layer_map}
        )
    )
    assert [h["stage"] for h in report["history"]][-1] == stages[-1]["name"]
    assert 0.0 <= report["dev"]["student"]["accuracy"] <= 1.0


@pytest.mark.parametrize("path", shipped_recipes(), ids=lambda p: p.stem)
def test_every_shipped_recipe_fits_the_packaged_minilm_teacher(path):
    """The recipes as shipped (sizes unchanged) build their student from a teacher of
    MiniLM-L6-H384's shape and pass the layer-wise loss checks that run before labelling
    (head counts, layer map, relation heads). Random weights: only shapes matter here."""
    import yaml
    from transformers import (
        AutoConfig,
        AutoTokenizer,
        BertForSequenceClassification,
        BertForTokenClassification,
    )

    from lmshrink.data.tasks import get_task
    from lmshrink.distillation.layer_map import check_layer_losses
    from lmshrink.distillation.stages import loss_entries
    from lmshrink.models.loading import resolve_model_source, task_head_settings
    from lmshrink.students import STUDENTS, student_settings
    from lmshrink.students.common import is_token_classifier

    cfg = from_dict(DistillConfig, yaml.safe_load(path.read_text()))
    folder = resolve_model_source("packaged:minilm")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    family = STUDENTS.get(cfg.student.kind)
    sentences = [text for text, _ in make_sentences(20, seed=0)]
    if path in shipped_recipes(token=True):  # a CoNLL tagger; its texts are word lists
        task = get_task("conll2003")
        teacher = BertForTokenClassification(
            AutoConfig.from_pretrained(folder, num_labels=task.num_labels)
        )
        texts = [text.split() for text in sentences]
    else:
        task = get_task("sst2")
        teacher = BertForSequenceClassification(AutoConfig.from_pretrained(folder, num_labels=2))
        texts = [(text,) for text in sentences]
    validate_stages(cfg.stages, task.kind)
    head = task_head_settings(task)
    student = family.make(teacher, tokenizer, texts, head, 64, student_settings(cfg.student))
    assert is_token_classifier(student.final_model) == task.kind.token_level
    pairs, _ = check_layer_losses(cfg.layer_map, cfg.stages, student, teacher.config)
    per_token = any(entry.per_token for entry in loss_entries(cfg.stages))
    assert (pairs is not None) == per_token


def test_dev_inputs_are_never_in_the_transfer_set(teacher_setup, tmp_path):
    teacher, glue, _ = teacher_setup
    dev_lines = (glue / "SST-2" / "dev.tsv").read_text().splitlines()[1:11]
    leaky = tmp_path / "leaky.txt"
    leaky.write_text("\n".join(line.split("\t")[0] for line in dev_lines) + "\nfresh words here\n")
    cfg = make_config(
        teacher_setup,
        tmp_path / "run",
        transfer={"files": [str(leaky)], "min_words": 1, "include_train": False},
    )
    report = distill(cfg)
    assert report["transfer_set"]["dev_overlap_dropped"] == len(set(dev_lines))
    assert report["transfer_set"]["total"] == 1


def test_student_settings_of_another_family_are_refused(teacher_setup, tmp_path):
    cfg = make_config(teacher_setup, tmp_path / "run", student={"kind": "layers", "pooling": "max"})
    with pytest.raises(ConfigError, match="pooling do not apply to the layers student"):
        distill(cfg)


def test_per_token_losses_need_a_transformer_student_on_transfer_data(teacher_setup, tmp_path):
    from lmshrink.distillation.stages import LossSpec

    with pytest.raises(ConfigError, match="only 'transfer' stages run"):
        validate_stages([StageConfig(name="h", data="labeled", losses=[LossSpec("hidden_mse")])])
    stages = [{"name": "hidden", "data": "transfer", "losses": [{"name": "hidden_mse"}]}]
    with pytest.raises(ConfigError, match="needs a transformer student reading the teacher's"):
        distill(make_config(teacher_setup, tmp_path / "run", stages=stages))


LOGIT_STAGES = [
    {
        "name": "logits",
        "data": "transfer",
        "losses": [{"name": "soft_kl", "params": {"temperature": 2.0}}],
        "epochs": 3,
        "lr": 5e-3,
        "batch_size": 16,
        "patience": 0,
    },
]


def test_layer_subset_student_is_a_stock_folder(teacher_setup, tmp_path):
    out = tmp_path / "run"
    report = distill(
        make_config(
            teacher_setup, out, stages=LOGIT_STAGES, student={"kind": "layers", "layers": 1}
        )
    )
    assert report["dev"]["student"]["accuracy"] >= 0.85
    code = (
        "import sys, torch; from transformers import AutoModelForSequenceClassification as A,"
        " AutoTokenizer as T; m = A.from_pretrained(sys.argv[1]); t = T.from_pretrained("
        "sys.argv[1]); x = t(['a great film'], return_tensors='pt');"
        " print(type(m).__name__, m.config.num_hidden_layers, 'lmshrink' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out / "model")], capture_output=True, text=True
    )
    assert proc.stdout.split() == ["BertForSequenceClassification", "1", "False"], proc.stderr


def test_pretrained_student_keeps_its_own_tokenizer(teacher_setup, tmp_path):
    from transformers import AutoTokenizer, BertModel, BertTokenizer

    own = tmp_path / "other-bert"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
        {w for s, _ in make_sentences(200, seed=5) for w in s.split()}
    )
    BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(own)
    torch.manual_seed(1)
    BertModel(
        tiny_bert_config(
            vocab_size=len(words),
            hidden_size=24,
            num_hidden_layers=1,
            intermediate_size=48,
            max_position_embeddings=512,
        )
    ).save_pretrained(own)
    out = tmp_path / "run"
    report = distill(
        make_config(
            teacher_setup,
            out,
            stages=LOGIT_STAGES,
            student={"kind": "pretrained", "model": str(own)},
        )
    )
    assert report["dev"]["student"]["accuracy"] >= 0.85
    saved = AutoTokenizer.from_pretrained(out / "model")
    assert len(saved) == len(words)  # the student's vocabulary, not the teacher's


LAYER_STAGES = [
    {
        "name": "intermediate",
        "data": "transfer",
        "losses": [{"name": "hidden_mse"}, {"name": "attention_mse"}],
        "epochs": 0.5,
        "lr": 1e-3,
        "batch_size": 16,
        "patience": 0,
    },
]


def test_layer_wise_stages_read_the_teachers_targets_from_the_cache(
    teacher_setup, tmp_path, capsys
):
    student = {"kind": "layers", "layers": 1}
    layer_map = {"strategy": "uniform"}

    def run(out, **labelling):
        cfg = make_config(
            teacher_setup,
            tmp_path / out,
            stages=LAYER_STAGES,
            student=student,
            layer_map=layer_map,
            labelling=labelling,
        )
        return distill(cfg)["history"][-1]["dev"], capsys.readouterr().out

    cached, log = run("cached")
    assert "teacher layer targets (" in log and ": cached" in log
    folders = [m.parent for m in (tmp_path / "cached" / "cache").glob("*/manifest.json")]
    manifests = [json.loads((f / "manifest.json").read_text())["key"] for f in folders]
    layer_keys = [k["layers"] for k in manifests if "layers" in k]
    # uniform map of 1 student layer onto 2 teacher layers: (1, 2); attentions index layer 2
    assert layer_keys == [{"hidden": [2], "attentions": [1], "values": []}]
    online, log = run("online", layer_cache_gb=0)
    assert "caching is off (labelling.layer_cache_gb = 0); the teacher runs on every" in log
    assert not any(
        "layers" in json.loads(m.read_text())["key"]
        for m in (tmp_path / "online" / "cache").glob("*/manifest.json")
    )
    # fp16 targets train the student to (almost) the same place as the online teacher.
    assert cached == pytest.approx(online, rel=1e-2)
    _, log = run("too-big", layer_cache_gb=1e-6)
    assert "GB would exceed labelling.layer_cache_gb = 1e-06 (raise it to cache them)" in log


def test_a_loss_the_layer_cache_does_not_know_gets_the_online_teacher(
    teacher_setup, tmp_path, capsys, request
):
    from torch import nn

    from lmshrink.distillation.loss_registry import LOSSES, register_loss

    class FirstLayerClsMSE(nn.Module):
        """A user's loss on the teacher's first layer, which hidden_mse's uniform map (1, 2)
        does not read; its entry declares no teacher layers, so the cache cannot hold them."""

        def forward(self, student_hidden_states, teacher_hidden_states):
            return ((student_hidden_states[1][:, 0] - teacher_hidden_states[1][:, 0]) ** 2).mean()

    register_loss("first_cls_mse")(FirstLayerClsMSE)
    request.addfinalizer(lambda: LOSSES.remove("first_cls_mse"))
    stages = [{**LAYER_STAGES[0], "losses": [{"name": "hidden_mse"}, {"name": "first_cls_mse"}]}]
    cfg = make_config(
        teacher_setup,
        tmp_path / "run",
        stages=stages,
        student={"kind": "layers", "layers": 1},
        layer_map={"strategy": "uniform"},
    )
    report = distill(cfg)
    log = capsys.readouterr().out
    assert "not cached (first_cls_mse reads teacher layers the cache does not know)" in log
    assert report["history"][-1]["dev"] < 0  # minus the dev loss: it trained and evaluated


def test_a_custom_file_flag_with_a_named_task_is_an_error(teacher_setup, tmp_path):
    """--dev-file with --task sst2 would be ignored (SST-2 reads its GLUE folder): refused
    before the run folder is made."""
    from lmshrink.errors import ConfigError

    cfg = make_config(teacher_setup, tmp_path / "run")
    cfg.data.dev_file = str(tmp_path / "other.tsv")
    with pytest.raises(ConfigError, match="--dev-file: task sst2 reads its own files"):
        distill(cfg)
    assert not (tmp_path / "run").exists()
