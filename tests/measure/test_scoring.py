"""Scoring with the official metrics: metric names per split, predictions per task kind."""

import numpy as np
import pytest

from lmshrink.data.splits import Split
from lmshrink.data.tasks import get_task
from lmshrink.errors import DataError
from lmshrink.measure.scoring import predict_and_score, split_metrics


def test_split_metrics_for_mnli_mismatched_and_regression():
    mm = Split("mnli", "dev_mismatched", "x", [("a", "b")] * 3, [0, 1, 2])
    logits = np.array([[3, 0, 0], [0, 3, 0], [3, 0, 0]], dtype=np.float32)
    assert split_metrics(get_task("mnli"), logits, mm) == {"accuracy_mm": pytest.approx(2 / 3)}
    sts = Split("stsb", "dev", "x", [("a", "b")] * 3, [1.0, 2.0, 3.0])
    scores = split_metrics(get_task("stsb"), np.array([[0.1], [0.2], [0.4]]), sts)
    assert scores["spearman"] == pytest.approx(1.0) and scores["pearson"] < 1.0


def test_an_unlabelled_split_cannot_be_scored():
    test = Split("sst2", "test", "test.tsv", [("a",)], None)
    with pytest.raises(DataError, match="test.tsv: the test split has no labels"):
        split_metrics(get_task("sst2"), np.zeros((1, 2)), test)


def test_predict_and_score_returns_each_splits_outputs_in_its_order():
    """The model sees the split's examples (sorted by length for speed) and the outputs come
    back in the split's order, one array per split, scored with its suffix."""
    import types

    import torch

    class Tokenizer:
        pad_token_id = 0

        def __call__(self, firsts, seconds, truncation, max_length):
            return {"input_ids": [[int(w) for w in t.split()] for t in firsts]}

    class Model:
        training = False

        def eval(self):
            return self

        def train(self, mode=True):
            return self

        def __call__(self, input_ids, attention_mask):
            # class 1 when the row's first id is odd
            odd = (input_ids[:, :1] % 2).float()
            return types.SimpleNamespace(logits=torch.cat([1 - odd, odd], dim=1))

    dev = Split("mnli", "dev", "d", [("3 1 1",), ("2",), ("5 1",)], [1, 0, 0])
    mm = Split("mnli", "dev_mismatched", "m", [("4",), ("7 1 1 1",)], [0, 1])
    scores, outputs = predict_and_score(Model(), Tokenizer(), get_task("mnli"), [dev, mm], 8, 2)
    assert [o.argmax(1).tolist() for o in outputs] == [[1, 0, 1], [0, 1]]
    assert scores == {"accuracy": pytest.approx(2 / 3), "accuracy_mm": 1.0}


def test_token_tasks_are_scored_by_entity_f1_at_each_words_first_sub_token(tiny_encoder):
    """A token model's per-word predictions, read at first sub-tokens, give the entity F1
    of those tags; the task's headline metric only (the breakdown is separate)."""
    import torch
    from conftest import tiny_bert_config
    from transformers import AutoTokenizer, BertForTokenClassification

    from lmshrink.data.batching import encode
    from lmshrink.data.ner import TokenSplit
    from lmshrink.measure.entities import entity_scores
    from lmshrink.measure.scoring import entity_breakdown
    from lmshrink.training.inference import predict_words

    task = get_task("conll2003")
    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_bert_config(vocab_size=len(tok), num_labels=9))
    words = [["the", "xyzzy", "cat", "sat"], ["dog", "on", "mat"], ["good"]] * 4
    tags = [[1, 2, 0, 3], [5, 0, 7], [0]] * 4  # B-PER I-PER O B-ORG, B-LOC O B-MISC, O
    split = TokenSplit("conll2003", "dev", "dev.tsv", words, tags)
    scores, (outputs,) = predict_and_score(model, tok, task, [split], 32, batch_size=5)
    assert list(scores) == ["entity_f1"]
    expected = predict_words(model, encode(tok, split, 32), 5)
    for got, want in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(got, want)
    names = [task.labels[i] for i in range(9)]
    pred_tags = [[names[i] for i in out.argmax(axis=1)] for out in outputs]
    gold_tags = [[names[i] for i in row] for row in tags]
    want = entity_scores(gold_tags, pred_tags)
    assert scores["entity_f1"] == pytest.approx(want.overall.f1)
    breakdown = entity_breakdown(task, outputs, split)
    assert breakdown["entity_recall"] == pytest.approx(want.overall.recall)
    assert set(breakdown) >= {"f1_type_PER", "f1_type_ORG", "f1_type_LOC", "f1_type_MISC"}


def test_a_zero_width_word_is_scored_as_o_and_later_words_keep_their_gold_tags(tiny_encoder):
    """A word the tokenizer deletes entirely ("\\u200b") has no sub-token: it is predicted O
    and every later word is scored against its own gold tag. The model here tags each token
    by its id, and the gold tags are what it predicts, so any shift lowers F1 below 1."""
    import types

    import torch
    from transformers import AutoTokenizer

    from lmshrink.data.ner import TokenSplit
    from lmshrink.evaluate import entity_details

    task = get_task("conll2003")  # O B-PER I-PER B-ORG I-ORG B-LOC I-LOC B-MISC I-MISC
    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    tag_of = {"he": 1, "she": 2, "cat": 3, "mat": 5}
    tag_of_id = {tok.convert_tokens_to_ids(w): t for w, t in tag_of.items()}

    class Model:
        training = False

        def eval(self):
            return self

        def train(self, mode=True):
            return self

        def __call__(self, input_ids, attention_mask, token_type_ids=None):
            tags = input_ids.apply_(lambda i: tag_of_id.get(i, 0))  # [B, T]
            return types.SimpleNamespace(logits=torch.nn.functional.one_hot(tags, 9).float())

    zw = "\u200b"
    words = [
        ["he", "she", zw, "sat", "on", "the", "mat"],
        ["the", "cat", zw, "he", "she"],
        [zw, "mat"],
        ["the", "cat"],
    ]
    gold = [[tag_of.get(w, 0) for w in sentence] for sentence in words]
    split = TokenSplit("conll2003", "dev", "dev.tsv", words, gold)
    scores, (outputs,) = predict_and_score(Model(), tok, task, [split], 32, batch_size=3)
    assert scores == {"entity_f1": 1.0}
    assert [o.argmax(-1).tolist() for o in outputs] == gold
    details = entity_details(task, outputs, split)
    assert details["gold_entities"]["all"] == 6 and details["entities"]["entity_recall"] == 1.0
