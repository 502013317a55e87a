import json

import pytest
from conftest import write_tsv

from lmshrink.config import DataConfig
from lmshrink.data.tasks import get_task
from lmshrink.errors import ConfigError
from lmshrink.evaluate import EvaluateConfig, evaluate, format_table


@pytest.fixture
def trained(tiny_teacher):
    """The session's tiny teacher (trained on the same rows as `sst2_dir` holds)."""
    return tiny_teacher["teacher"]


def test_evaluate_scores_parameters_size_and_json(trained, sst2_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    cfg = EvaluateConfig(
        model=str(trained),
        json=str(tmp_path / "eval.json"),
        progress=False,
        data=DataConfig(data_dir=str(sst2_dir)),
    )  # task read from metadata
    result = evaluate(cfg)
    saved = json.loads((trained / "lmshrink.json").read_text())
    assert result["task"] == "sst2" and result["examples"] == 48
    assert result["metrics"]["accuracy"] == pytest.approx(saved["dev"]["accuracy"])
    model = AutoModelForSequenceClassification.from_pretrained(trained)
    assert result["parameters"] == sum(p.numel() for p in model.parameters())
    assert result["size_bytes"] == (trained / "model.safetensors").stat().st_size
    assert json.loads((tmp_path / "eval.json").read_text()) == result
    table = format_table(result)
    assert "accuracy" in table and f"{100 * result['metrics']['accuracy']:.2f}" in table


def test_max_eval_samples_takes_a_subset(trained, sst2_dir):
    cfg = EvaluateConfig(
        model=str(trained),
        progress=False,
        data=DataConfig(task="sst2", data_dir=str(sst2_dir), max_eval_samples=10),
    )
    assert evaluate(cfg)["examples"] == 10


def test_threads_setting_reaches_torch(trained, sst2_dir):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = EvaluateConfig(
            model=str(trained), threads=1, progress=False, data=DataConfig(data_dir=str(sst2_dir))
        )
        evaluate(cfg)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_old_batch_size_key_names_its_new_one(tmp_path):
    from lmshrink.config import from_dict, load_yaml

    with pytest.raises(ConfigError, match="'batch_size' is now 'eval_batch_size'"):
        from_dict(EvaluateConfig, {"model": "m", "batch_size": 64})
    (tmp_path / "e.yaml").write_text("eval_batch_size: 64\nprogress: false\n")
    assert load_yaml(EvaluateConfig, tmp_path / "e.yaml").eval_batch_size == 64


def test_mnli_dev_scores_matched_and_mismatched(tiny_encoder, tmp_path):
    from lmshrink.models.loading import load_for_training

    header = ["index", "sentence1", "sentence2", "gold_label"]
    rows = [
        [str(i), "the cat sat", "a dog", lab]
        for i, lab in enumerate(["entailment", "neutral", "contradiction"] * 2)
    ]
    for name in ("dev_matched.tsv", "dev_mismatched.tsv"):
        write_tsv(tmp_path / "glue" / "MNLI" / name, header, rows)
    tok, model = load_for_training(str(tiny_encoder), get_task("mnli"))
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    result = evaluate(
        EvaluateConfig(
            model=str(tmp_path / "m"),
            progress=False,
            data=DataConfig(task="mnli", data_dir=str(tmp_path / "glue")),
        )
    )
    assert set(result["metrics"]) == {"accuracy", "accuracy_mm"} and result["examples"] == 12


def test_glue_test_labels_are_hidden_so_the_test_split_fails_before_inference(
    trained, sst2_dir, monkeypatch
):
    import lmshrink.measure.scoring as scoring
    from lmshrink.errors import DataError

    write_tsv(sst2_dir / "SST-2" / "test.tsv", ["index", "sentence"], [["0", "a good film"]])
    monkeypatch.setattr(scoring, "predict", lambda *a, **k: pytest.fail("inference ran"))
    cfg = EvaluateConfig(
        model=str(trained), split="test", progress=False, data=DataConfig(data_dir=str(sst2_dir))
    )
    with pytest.raises(DataError, match="the test split has no labels") as exc:
        evaluate(cfg)
    assert "GLUE does not publish sst2's test labels, so score --split dev" in str(exc.value)


def test_json_that_cannot_be_written_is_an_error_before_any_work(trained, tmp_path):
    cfg = EvaluateConfig(model=str(trained), json=str(tmp_path), progress=False)
    with pytest.raises(ConfigError, match="is a folder; pass a file path"):
        evaluate(cfg)
