"""Entity-level NER scores: micro precision, recall and F1 (the CoNLL convention), per
entity type, and per language with the mean over languages (WikiAnn).

An entity counts as found only when a predicted entity has exactly its span and type.
Entities are read from tags the lenient way (data/tag_schemes.py): an `I-X` after `O` or
after another type starts an entity, as conlleval and seqeval's default mode do, so the
numbers equal seqeval's `precision_score`, `recall_score` and `f1_score` (a test compares
them). A ratio whose denominator is 0 is 0, as in seqeval: no predicted entities give
precision 0, no gold entities recall 0.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

import numpy as np

from lmshrink.data.tag_schemes import OUTSIDE, tag_spans


@dataclasses.dataclass
class Counts:
    """Entities found (exact span and type), predicted and in the gold tags."""

    correct: int = 0
    predicted: int = 0
    gold: int = 0

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        return self.correct / self.gold if self.gold else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def add(self, other: Counts) -> None:
        self.correct += other.correct
        self.predicted += other.predicted
        self.gold += other.gold


@dataclasses.dataclass
class EntityScores:
    """The counts of a set of sentences: all entities, per type, and per language."""

    overall: Counts
    per_type: dict[str, Counts]  # sorted by type
    per_language: dict[str, Counts]  # in order of first appearance; empty without languages

    @property
    def language_mean_f1(self) -> float:
        """The unweighted mean of the per-language F1s (each language counts the same);
        the overall F1 when the sentences carry no language."""
        if not self.per_language:
            return self.overall.f1
        return float(np.mean([c.f1 for c in self.per_language.values()]))

    def metrics(self) -> dict[str, float]:
        """Flat metric names and values: entity_precision, entity_recall, entity_f1,
        f1_type_<TYPE> for each type, and with languages f1_lang_<code> for each language
        and entity_f1_lang_mean (the mean over languages)."""
        out = {
            "entity_precision": self.overall.precision,
            "entity_recall": self.overall.recall,
            "entity_f1": self.overall.f1,
        }
        out.update({f"f1_type_{kind}": c.f1 for kind, c in self.per_type.items()})
        if self.per_language:
            out.update({f"f1_lang_{lang}": c.f1 for lang, c in self.per_language.items()})
            out["entity_f1_lang_mean"] = self.language_mean_f1
        return out


def entity_scores(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    languages: Sequence[str] | None = None,
) -> EntityScores:
    """Scores of predicted tags against gold tags, one list of tags per sentence (IOB1,
    IOB2 or BIOES strings); `languages[i]` is sentence i's language, if any. Entities never
    cross a sentence boundary."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted ones")
    if languages is not None and len(languages) != len(gold):
        raise ValueError(f"{len(gold)} sentences but {len(languages)} languages")
    overall = Counts()
    per_type: dict[str, Counts] = {}
    per_language: dict[str, Counts] = {}
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted ones")
        true, guessed = set(tag_spans(g)), set(tag_spans(p))
        found = true & guessed
        sentence = Counts(len(found), len(guessed), len(true))
        overall.add(sentence)
        if languages is not None:
            per_language.setdefault(languages[i], Counts()).add(sentence)
        for count, spans in (("correct", found), ("predicted", guessed), ("gold", true)):
            for kind, n in Counter(kind for _, _, kind in spans).items():
                counts = per_type.setdefault(kind, Counts())
                setattr(counts, count, getattr(counts, count) + n)
    return EntityScores(overall, dict(sorted(per_type.items())), per_language)


def scores_from_ids(
    pred: Sequence[Sequence[int]] | np.ndarray,
    gold: Sequence[Sequence[int]],
    labels: Sequence[str],
    languages: Sequence[str] | None = None,
) -> EntityScores:
    """Scores of predicted tag ids (ragged rows, or [N, W] padded with IGNORE_INDEX) against
    gold tag ids per sentence, with `labels` the task's tags in id order.

    Row i is read for the first len(gold[i]) words; a word without a prediction (cut off by
    truncation, or an id outside the label set) counts as O, so the entities it held are
    missed rather than dropped from the score.
    """
    if len(pred) != len(gold):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted ones")
    n = len(labels)
    gold_tags = [[labels[t] for t in row] for row in gold]
    pred_tags = []
    for row, true in zip(pred, gold, strict=True):
        ids = [int(t) for t in row[: len(true)]]
        ids += [-1] * (len(true) - len(ids))
        pred_tags.append([labels[t] if 0 <= t < n else OUTSIDE for t in ids])
    return entity_scores(gold_tags, pred_tags, languages)
