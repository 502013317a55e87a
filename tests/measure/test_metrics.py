import math

import pytest

from lmshrink.measure import metrics


def test_accuracy_and_binary_f1():
    preds, labels = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    assert metrics.accuracy(preds, labels) == pytest.approx(0.6)
    # tp=2, fp=1, fn=1 -> F1 = 2*2 / (2*2 + 1 + 1)
    assert metrics.f1_binary(preds, labels) == pytest.approx(4 / 6)


def test_macro_f1_averages_classes():
    preds, labels = [0, 1, 2, 2], [0, 1, 1, 2]
    per_class = [1.0, 2 / 3, 2 / 3]
    assert metrics.f1_macro(preds, labels) == pytest.approx(sum(per_class) / 3)


def test_matthews_binary_matches_closed_form():
    preds, labels = [1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0]
    tp, tn, fp, fn = 2, 2, 1, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert metrics.matthews(preds, labels) == pytest.approx(expected)
    assert metrics.matthews([1, 1, 1], [1, 0, 1]) == 0.0  # undefined -> 0, as GLUE's scorer


def test_pearson_and_spearman_with_ties():
    x, y = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 9.0]
    # centred x = [-1.5, -.5, .5, 1.5], y = [-3.25, -1.25, .75, 3.75]: r = 11.5 / sqrt(5 * 26.75)
    assert metrics.pearson(x, y) == pytest.approx(11.5 / math.sqrt(5 * 26.75))
    assert metrics.spearman(x, y) == pytest.approx(1.0)
    # ranks of [1, 2, 2, 3] are [1, 2.5, 2.5, 4]; of [1, 3, 2, 4] are [1, 3, 2, 4]
    assert metrics.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(
        metrics.pearson([1, 2.5, 2.5, 4], [1, 3, 2, 4])
    )


def test_against_scipy_and_sklearn_when_installed():
    np = pytest.importorskip("numpy")
    stats = pytest.importorskip("scipy.stats")
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=200), rng.normal(size=200)
    b = np.round(a + b, 1)
    assert metrics.pearson(a, b) == pytest.approx(stats.pearsonr(a, b)[0])
    assert metrics.spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0])
    p, y = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    assert metrics.matthews(p, y) == pytest.approx(skm.matthews_corrcoef(y, p))
    assert metrics.f1_macro(p, y) == pytest.approx(skm.f1_score(y, p, average="macro"))


def test_task_score_is_mean_of_metrics():
    assert metrics.task_score({"f1": 0.9, "accuracy": 0.8}) == pytest.approx(0.85)
