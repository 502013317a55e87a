"""Word-level encoding of token tasks: labels on first sub-tokens, truncation counted, padded
labels ignored, and predictions read back per word."""

from __future__ import annotations

import numpy as np
import torch
from conftest import tiny_bert_config

from lmshrink.data.batching import IGNORE_INDEX, collate, encode_words
from lmshrink.training.inference import predict_words


def tokenizer_of(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def test_tags_sit_on_first_sub_tokens_and_the_rest_is_ignored(tiny_encoder):
    tok = tokenizer_of(tiny_encoder)
    # "xyzzy" is not in the tiny vocabulary: it splits into several sub-tokens
    words = [["the", "movie", "xyzzy", "good"], ["dull"]]
    enc, cut = encode_words(tok, words, [[0, 1, 2, 3], [4]], max_length=32)
    assert cut == 0
    ids = enc.features["input_ids"][0]
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    assert enc.word_starts[0] == [1, 2, 3, len(ids) - 2]  # "good" right before [SEP]
    assert len(ids) - 2 - 3 > 1  # xyzzy took several sub-tokens
    expected = [IGNORE_INDEX] * len(ids)
    for tag, pos in zip([0, 1, 2, 3], enc.word_starts[0], strict=True):
        expected[pos] = tag
    assert enc.labels[0] == expected
    assert enc.labels[1] == [IGNORE_INDEX, 4, IGNORE_INDEX]


def test_truncation_counts_the_words_it_cut(tiny_encoder):
    tok = tokenizer_of(tiny_encoder)
    words = [["the", "movie", "was", "good", "and", "fine"]]
    enc, cut = encode_words(tok, words, None, max_length=5)  # [CLS] + 3 words + [SEP]
    assert cut == 3 and enc.word_starts == [[1, 2, 3]] and enc.labels is None


def test_collate_pads_token_labels_with_the_ignore_index(tiny_encoder):
    tok = tokenizer_of(tiny_encoder)
    enc, _ = encode_words(tok, [["good"], ["the", "movie", "was"]], [[1], [0, 0, 2]], 32)
    batch = collate(enc, [0, 1])
    assert batch["labels"].dtype == torch.long
    assert batch["labels"].tolist() == [
        [IGNORE_INDEX, 1, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
        [IGNORE_INDEX, 0, 0, 2, IGNORE_INDEX],
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def test_predict_words_reads_each_word_at_its_first_sub_token(tiny_encoder):
    from transformers import BertForTokenClassification

    tok = tokenizer_of(tiny_encoder)
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_bert_config(vocab_size=len(tok), num_labels=3))
    words = [["the", "xyzzy", "good"], ["dull", "plot"], ["fine"]]
    enc, _ = encode_words(tok, words, None, max_length=32)
    got = predict_words(model, enc, batch_size=2)
    model.eval()
    for i, sentence in enumerate(words):
        single = tok([sentence], is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**single).logits[0].numpy()  # [T, C]
        assert got[i].shape == (len(sentence), 3)
        np.testing.assert_allclose(got[i], logits[enc.word_starts[i]], atol=1e-5)
