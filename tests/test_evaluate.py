import json

import numpy as np
import pytest
from conftest import write_tsv

from lmshrink.config import DataConfig
from lmshrink.data.tasks import get_task
from lmshrink.evaluate import EvaluateConfig, evaluate, format_table, split_metrics


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


def test_split_metrics_for_mnli_mismatched_and_regression():
    from lmshrink.data.splits import Split

    mm = Split("mnli", "dev_mismatched", "x", [("a", "b")] * 3, [0, 1, 2])
    logits = np.array([[3, 0, 0], [0, 3, 0], [3, 0, 0]], dtype=np.float32)
    assert split_metrics(get_task("mnli"), logits, mm) == {"accuracy_mm": pytest.approx(2 / 3)}
    sts = Split("stsb", "dev", "x", [("a", "b")] * 3, [1.0, 2.0, 3.0])
    scores = split_metrics(get_task("stsb"), np.array([[0.1], [0.2], [0.4]]), sts)
    assert scores["spearman"] == pytest.approx(1.0) and scores["pearson"] < 1.0


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
