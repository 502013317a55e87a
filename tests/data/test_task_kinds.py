"""The token-classification task kind's answers (the sequence kinds' answers are pinned in
test_tasks.py and must not change)."""

from __future__ import annotations

import numpy as np

from lmshrink.data.task_kinds import (
    IGNORE_INDEX,
    KINDS,
    REGRESSION,
    SEQUENCE_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
)

TAGS = ("O", "B-PER", "I-PER")


def test_token_kind_settings():
    kind = TOKEN_CLASSIFICATION
    assert KINDS["token_classification"] is kind
    assert kind.token_level and not kind.is_regression and kind.label_dtype == "long"
    assert kind.auto_model == "AutoModelForTokenClassification"
    assert (kind.gold_loss, kind.logit_loss) == ("token_gold_ce", "token_soft_kl")
    assert kind.head_settings(TAGS) == {
        "num_labels": 3,
        "problem_type": "single_label_classification",
        "id2label": {0: "O", 1: "B-PER", 2: "I-PER"},
        "label2id": {"O": 0, "B-PER": 1, "I-PER": 2},
    }
    assert kind.output_names(TAGS) == ["O", "B-PER", "I-PER"]
    assert kind.describe_outputs(TAGS) == "3 labels per word"
    # the sequence kinds keep their Auto class and stay sequence level
    for other in (SEQUENCE_CLASSIFICATION, REGRESSION):
        assert other.auto_model == "AutoModelForSequenceClassification" and not other.token_level


def test_token_predictions_and_agreement_per_word():
    # outputs [N=2, W=3, C=3]; sentence 0 has 3 words, sentence 1 has 2 (one padding slot)
    a = np.zeros((2, 3, 3))
    a[0, :, :] = [[5, 0, 0], [0, 5, 0], [0, 0, 5]]
    a[1, :, :] = [[0, 5, 0], [5, 0, 0], [0, 0, 9]]
    mask = np.array([[1, 1, 1], [1, 1, 0]])
    preds = TOKEN_CLASSIFICATION.predictions(a, mask)
    assert preds.tolist() == [[0, 1, 2], [1, 0, IGNORE_INDEX]]
    assert TOKEN_CLASSIFICATION.predictions(a).tolist() == [[0, 1, 2], [1, 0, 2]]
    b = a.copy()
    b[0, 2] = [9, 0, 0]  # a real word tagged differently
    b[1, 2] = [9, 0, 0]  # padding: does not count
    same = TOKEN_CLASSIFICATION.same_prediction(a, b, mask=mask)
    assert same.tolist() == [True, True, False, True, True]  # 5 real words
    assert float(same.mean()) == 0.8
    assert TOKEN_CLASSIFICATION.same_prediction(a, b).tolist().count(False) == 2
