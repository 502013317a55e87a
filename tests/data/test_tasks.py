import pytest

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
    assert get_task("stsb").is_regression and get_task("stsb").num_labels == 1
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
