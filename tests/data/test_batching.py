"""Word-level encoding of token tasks: labels on first sub-tokens, truncation counted, padded
labels ignored, and predictions read back per word."""

from __future__ import annotations

import numpy as np
import pytest
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


def test_word_shapes_sit_on_every_sub_token_of_their_word(tiny_encoder):
    from lmshrink.data import word_shapes as ws

    tok = tokenizer_of(tiny_encoder)  # uncased: "Movie" and "movie" are the same ids
    words = [["The", "MOVIE", "Xyzzy", "42", "!"], ["good"]]
    enc, _ = encode_words(tok, words, [[0] * 5, [1]], max_length=32, word_shapes=True)
    plain, _ = encode_words(tok, [[w.lower() for w in s] for s in words], None, 32)
    assert enc.features["input_ids"] == plain.features["input_ids"]
    assert "word_shape_ids" not in plain.features  # only when asked
    shapes = enc.features["word_shape_ids"]
    ids = enc.features["input_ids"][0]
    starts = enc.word_starts[0]
    expected = [ws.PAD] * len(ids)  # [CLS] and [SEP] stay 0
    want = [ws.TITLE, ws.UPPER, ws.TITLE, ws.DIGITS, ws.PUNCT]
    for word, start in enumerate(starts):
        end = starts[word + 1] if word + 1 < len(starts) else len(ids) - 1
        expected[start:end] = [want[word]] * (end - start)
    assert starts[3] - starts[2] > 1  # "Xyzzy" is several sub-tokens, each with its shape
    assert shapes[0] == expected
    assert shapes[1] == [ws.PAD, ws.LOWER, ws.PAD]
    batch = collate(enc, [0, 1])
    assert batch["word_shape_ids"][1].tolist() == [0, ws.LOWER] + [0] * (len(ids) - 2)


def test_word_shapes_follow_truncation_and_refuse_sentence_splits(tiny_encoder):
    from lmshrink.data.batching import encode
    from lmshrink.data.splits import Split

    tok = tokenizer_of(tiny_encoder)
    enc, cut = encode_words(tok, [["A", "b", "C", "d"]], None, max_length=4, word_shapes=True)
    assert cut == 2
    assert enc.features["word_shape_ids"] == [[0, 2, 1, 0]]
    split = Split("sst2", "dev", "", [("a text",)], [1])
    with pytest.raises(ValueError, match="token task"):
        encode(tok, split, 16, word_shapes=True)


# Characters the tiny BERT's normalizer deletes entirely: a word of them has no sub-token.
ZERO_WIDTH = ["\u200b", "\xad", "\ufeff", "\u200d"]


def test_a_word_the_tokenizer_deletes_still_counts_as_a_word(tiny_encoder):
    """A zero-width word is listed in `empty_words` (not cut), the tags of later words stay
    on their own first sub-tokens, and only words past --max-length count as cut."""
    tok = tokenizer_of(tiny_encoder)
    for char in ZERO_WIDTH:
        assert tok([[char]], is_split_into_words=True)["input_ids"] == [[2, 3]]  # [CLS] [SEP]
    zw, shy, bom, zwj = ZERO_WIDTH
    words = [["the", zw, "movie", shy, "good"], [bom, "dull"], ["dull", zwj]]
    tags = [[0, 1, 2, 3, 4], [5, 6], [7, 8]]
    enc, cut = encode_words(tok, words, tags, max_length=32)
    plain, _ = encode_words(tok, [["the", "movie", "good"], ["dull"], ["dull"]], None, 32)
    assert cut == 0
    assert enc.features["input_ids"] == plain.features["input_ids"]  # the same model input
    assert enc.word_starts == [[1, 2, 3], [1], [1]]
    assert enc.empty_words == [[1, 3], [0], [1]]
    assert enc.labels[0] == [IGNORE_INDEX, 0, 2, 4, IGNORE_INDEX]  # "movie" keeps its own tag
    assert enc.labels[1] == [IGNORE_INDEX, 6, IGNORE_INDEX]
    # [CLS] + 3 tokens + [SEP]: "the", zw, "movie", "was" are kept; "good" and the zw after it
    # are past the cut; a sentence that merely ends with a zw word loses nothing.
    long = ["the", zw, "movie", "was", "good", zw]
    enc, cut = encode_words(tok, [long, ["good", zw]], None, max_length=5)
    assert cut == 2 and enc.empty_words == [[1], [1]]
    assert enc.word_starts == [[1, 2, 3], [1]]
    assert encode_words(tok, words[1:], None, 32)[0].empty_words == [[0], [1]]
    assert encode_words(tok, [["good"]], None, 32)[0].empty_words is None


def test_the_truncation_warning_counts_only_cut_words(tiny_encoder, capsys):
    from lmshrink.data.batching import encode
    from lmshrink.data.ner import TokenSplit

    tok = tokenizer_of(tiny_encoder)
    sentences = [["good", ZERO_WIDTH[0], "dull", ZERO_WIDTH[1]], ["the", ZERO_WIDTH[0]]]
    encode(tok, TokenSplit("t", "dev", "dev.tsv", sentences, None), max_length=32)
    assert "were cut" not in capsys.readouterr().err
    sentences.append(["the", "movie", ZERO_WIDTH[2], "was", "good", ZERO_WIDTH[3], "dull"])
    encode(tok, TokenSplit("t", "dev", "dev.tsv", sentences, None), max_length=5)
    # only the third sentence is cut: "good", zwj and "dull" lie past [CLS] the movie zw was
    assert "dev.tsv: 3 of 13 words are past --max-length 5 tokens" in capsys.readouterr().err


def test_predict_words_reads_a_word_without_sub_tokens_as_outside(tiny_encoder):
    """A zero-width word gets a row predicting the O id; every other word keeps the row of
    its own first sub-token (the same as without the zero-width word)."""
    from transformers import BertForTokenClassification

    tok = tokenizer_of(tiny_encoder)
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_bert_config(vocab_size=len(tok), num_labels=3))
    words = [["the", ZERO_WIDTH[0], "xyzzy", "good"], [ZERO_WIDTH[1]], ["dull", "plot"]]
    enc, _ = encode_words(tok, words, None, max_length=32)
    plain, _ = encode_words(tok, [[w for w in s if w not in ZERO_WIDTH] for s in words], None, 32)
    got = predict_words(model, enc, batch_size=2, outside=2)
    want = predict_words(model, plain, batch_size=2)
    assert [g.shape for g in got] == [(4, 3), (1, 3), (2, 3)]
    np.testing.assert_allclose(got[0][[0, 2, 3]], want[0], atol=1e-5)
    np.testing.assert_allclose(got[2], want[2], atol=1e-5)
    assert got[0][1].tolist() == [0.0, 0.0, 1.0] and got[1].argmax(-1).tolist() == [2]
