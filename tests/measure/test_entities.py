"""Entity-level NER scores: hand-made cases with pinned values, the per-language breakdown,
scoring from tag ids, and agreement with seqeval's default mode on random sequences."""

from __future__ import annotations

import random

import numpy as np
import pytest

from lmshrink.measure.entities import Counts, entity_scores, scores_from_ids


def prf(gold, pred) -> tuple[float, float, float]:
    s = entity_scores(gold, pred).overall
    return s.precision, s.recall, s.f1


def test_exact_span_and_type():
    scores = entity_scores([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-ORG"]])
    assert scores.overall == Counts(correct=1, predicted=2, gold=2)
    assert scores.overall.f1 == 0.5
    assert {k: c.f1 for k, c in scores.per_type.items()} == {"LOC": 0.0, "ORG": 0.0, "PER": 1.0}
    # a span one word short is a miss and a false positive
    assert prf([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]]) == (0.0, 0.0, 0.0)


def test_fractional_values():
    gold = [["B-PER", "O", "B-LOC", "I-LOC"], ["B-ORG", "O", "B-PER"]]
    pred = [["B-PER", "O", "B-LOC", "O"], ["B-ORG", "O", "O"]]
    p, r, f = prf(gold, pred)  # 2 of 3 predictions right, 2 of 4 entities found
    assert (p, r) == (2 / 3, 0.5) and f == pytest.approx(4 / 7)


def test_i_after_o_starts_an_entity():
    assert prf([["O", "B-LOC", "I-LOC"]], [["O", "I-LOC", "I-LOC"]]) == (1.0, 1.0, 1.0)
    assert prf([["I-MISC", "O"]], [["B-MISC", "O"]]) == (1.0, 1.0, 1.0)
    # after another type too: B-ORG I-PER I-PER holds ORG (0,1) and PER (1,3)
    gold = [["B-ORG", "O", "B-PER", "I-PER"]]
    scores = entity_scores(gold, [["B-ORG", "I-PER", "I-PER", "I-PER"]])
    assert scores.overall == Counts(correct=1, predicted=2, gold=2)


def test_type_change_inside_a_run():
    scores = entity_scores([["B-ORG", "I-ORG", "I-ORG"]], [["B-ORG", "I-PER", "I-PER"]])
    assert scores.overall == Counts(correct=0, predicted=2, gold=1)
    assert scores.overall.f1 == 0.0


def test_entity_at_the_sentence_end_does_not_cross_into_the_next():
    gold = [["O", "B-PER"], ["I-PER", "O"]]  # two entities: one per sentence
    assert entity_scores(gold, gold).overall == Counts(2, 2, 2)
    assert prf(gold, [["O", "B-PER"], ["B-PER", "O"]]) == (1.0, 1.0, 1.0)
    assert prf([["O", "O", "B-LOC"]], [["O", "O", "O"]]) == (0.0, 0.0, 0.0)


def test_empty_predictions_and_no_gold_entities():
    none = entity_scores([["B-PER", "O", "B-LOC"]], [["O", "O", "O"]])
    assert none.overall == Counts(0, 0, 2) and none.overall.precision == 0.0
    assert none.metrics()["entity_f1"] == 0.0
    no_gold = entity_scores([["O", "O"]], [["B-PER", "B-PER"]])
    assert no_gold.overall == Counts(0, 2, 0)
    assert (no_gold.overall.precision, no_gold.overall.recall, no_gold.overall.f1) == (0, 0, 0)
    assert entity_scores([["O"], []], [["O"], []]).overall == Counts(0, 0, 0)


def test_metrics_and_languages():
    gold = [["B-PER", "O"], ["B-LOC", "O"], ["B-LOC", "B-PER"]]
    pred = [["B-PER", "O"], ["O", "O"], ["B-LOC", "B-PER"]]
    scores = entity_scores(gold, pred, ["en", "de", "de"])
    # en: 1/1 found, F1 1; de: 2 of 3 found with 2 predictions, F1 0.8; mean 0.9
    assert scores.per_language == {"en": Counts(1, 1, 1), "de": Counts(2, 2, 3)}
    assert scores.metrics() == {
        "entity_precision": 1.0,
        "entity_recall": 0.75,
        "entity_f1": pytest.approx(6 / 7),
        "f1_type_LOC": pytest.approx(2 / 3),
        "f1_type_PER": 1.0,
        "f1_lang_en": 1.0,
        "f1_lang_de": pytest.approx(0.8),
        "entity_f1_lang_mean": pytest.approx(0.9),
    }
    plain = entity_scores(gold, pred)
    assert "entity_f1_lang_mean" not in plain.metrics() and plain.language_mean_f1 == 6 / 7
    with pytest.raises(ValueError, match="2 gold tags but 1"):
        entity_scores([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="1 gold sentences but 2"):
        entity_scores([["O"]], [["O"], ["O"]])


def test_scores_from_padded_or_truncated_ids():
    labels = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
    gold = [[1, 2, 0], [3, 0, 0, 3, 4]]
    # [N, W] padded with -100; sentence 2 was cut after 4 words, so its last LOC is missed
    pred = np.array([[1, 2, 0, -100, -100], [3, 0, 0, 3, -100]])
    scores = scores_from_ids(pred, gold, labels, ["en", "de"])
    # the cut LOC: (3, 5) in gold, (3, 4) predicted
    assert scores.overall == Counts(correct=2, predicted=3, gold=3)
    assert scores.per_language["en"].f1 == 1.0
    ragged = scores_from_ids([[1, 2, 0], [3, 0]], gold, labels)
    assert ragged.overall == Counts(correct=2, predicted=2, gold=3)
    assert scores_from_ids([[1, 9, 0]], [[1, 0, 0]], labels).overall == Counts(1, 1, 1)


def random_tags(rng: random.Random, tags: list[str], sentences: int) -> list[list[str]]:
    return [[rng.choice(tags) for _ in range(rng.randint(0, 9))] for _ in range(sentences)]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("scheme", ["IOB", "BIOES"])
def test_same_values_as_seqeval_default_mode(scheme):
    seqeval = pytest.importorskip("seqeval.metrics")
    rng = random.Random(13)
    tags = ["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    if scheme == "BIOES":
        tags += ["E-PER", "S-PER", "E-LOC", "S-LOC"]
    for _ in range(300):
        gold = random_tags(rng, tags, rng.randint(1, 6))
        # predictions: gold with some tags changed, so that some entities match
        pred = [[t if rng.random() < 0.6 else rng.choice(tags) for t in s] for s in gold]
        ours = entity_scores(gold, pred)
        assert ours.overall.precision == pytest.approx(seqeval.precision_score(gold, pred))
        assert ours.overall.recall == pytest.approx(seqeval.recall_score(gold, pred))
        assert ours.overall.f1 == pytest.approx(seqeval.f1_score(gold, pred))
    # per type, on one larger set
    gold = random_tags(rng, tags, 400)
    pred = [[t if rng.random() < 0.6 else rng.choice(tags) for t in s] for s in gold]
    report = seqeval.classification_report(gold, pred, output_dict=True)
    ours = entity_scores(gold, pred)
    for kind, counts in ours.per_type.items():
        assert counts.f1 == pytest.approx(report[kind]["f1-score"])
        assert counts.precision == pytest.approx(report[kind]["precision"])
        assert counts.gold == report[kind]["support"]
