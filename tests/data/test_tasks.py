import pytest

from lmshrink.data.task_kinds import REGRESSION, SEQUENCE_CLASSIFICATION
from lmshrink.data.tasks import GLUE_TASKS, custom_task, get_task
from lmshrink.errors import ConfigError


def test_glue_table_has_every_task_with_its_official_metrics():
    expected = {
        "cola": ("mcc",),
        "sst2": ("accuracy",),
        "mrpc": ("f1", "accuracy"),
        "stsb": ("pearson", "spearman"),
        "qqp": ("f1", "accuracy"),
        "mnli": ("accuracy",),
        "qnli": ("accuracy",),
        "rte": ("accuracy",),
        "wnli": ("accuracy",),
    }
    assert {name: t.metrics for name, t in GLUE_TASKS.items()} == expected


def test_label_sets_and_pairs():
    assert get_task("stsb").kind is REGRESSION and get_task("stsb").num_labels == 1
    assert {t.kind for n, t in GLUE_TASKS.items() if n != "stsb"} == {SEQUENCE_CLASSIFICATION}
    assert get_task("mnli").labels == ("entailment", "neutral", "contradiction")
    assert get_task("rte").labels == ("entailment", "not_entailment")
    assert get_task("mrpc").is_pair and not get_task("sst2").is_pair
    assert "dev_mismatched" in get_task("mnli").splits
    assert get_task("mnli").companion_splits == {"dev": "dev_mismatched"}


def test_aliases_and_unknown_task():
    assert get_task("SST-2").name == "sst2" and get_task("STS-B").name == "stsb"
    with pytest.raises(ConfigError, match="unknown task 'sst3'.*custom"):
        get_task("sst3")


def test_custom_task_checks_columns():
    task = custom_task("custom", ["text"], "y", ["neg", "pos"], False, {"train": "t.csv"})
    assert task.num_labels == 2 and task.metrics == ("accuracy", "f1_macro")
    with pytest.raises(ConfigError, match="one or two --text-columns"):
        custom_task("custom", [], "y", [], False, {})
    with pytest.raises(ConfigError, match="--regression and --labels"):
        custom_task("custom", ["t"], "y", ["a"], True, {})


def test_the_task_kind_answers_for_heads_export_and_agreement():
    """Pinned answers of the two kinds: head settings (as written into a model's config),
    exported output names, predictions, and what counts as the same prediction."""
    import numpy as np

    mnli = get_task("mnli")
    assert mnli.kind.head_settings(mnli.labels) == {
        "num_labels": 3,
        "problem_type": "single_label_classification",
        "id2label": {0: "entailment", 1: "neutral", 2: "contradiction"},
        "label2id": {"entailment": 0, "neutral": 1, "contradiction": 2},
    }
    assert REGRESSION.head_settings(()) == {
        "num_labels": 1,
        "problem_type": "regression",
        "id2label": {0: "score"},
        "label2id": {"score": 0},
    }
    assert REGRESSION.output_names(()) == ["score"]
    assert SEQUENCE_CLASSIFICATION.output_names(("0", "1")) == ["0", "1"]
    assert REGRESSION.describe_outputs(()) == "a regression output"
    assert SEQUENCE_CLASSIFICATION.describe_outputs(("a", "b", "c")) == "3 labels"
    outputs = np.array([[0.1, 0.9], [0.7, -0.2]])
    assert SEQUENCE_CLASSIFICATION.predictions(outputs).tolist() == [1, 0]
    assert REGRESSION.predictions(outputs).tolist() == [0.1, 0.7]
    other = np.array([[0.13, 0.0], [0.8, 1.0]])
    assert REGRESSION.same_prediction(outputs, other).tolist() == [True, False]
    assert REGRESSION.same_prediction(outputs, other, tolerance=0.2).tolist() == [True, True]
    assert SEQUENCE_CLASSIFICATION.same_prediction(outputs, other).tolist() == [False, False]
