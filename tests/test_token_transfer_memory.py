"""A token task's transfer set in bounded memory: its sentences packed in a `TextStore` (any
number of words per sentence, words of any characters), and `encode_words` encoding chunk
by chunk into `RaggedInts` rows that equal, row by row, what a plain list-based encoding
gives."""

from __future__ import annotations

import random

import pytest

from lmshrink.data.batching import IGNORE_INDEX, encode, encode_words
from lmshrink.data.ragged import RaggedInts
from lmshrink.data.text_store import TextStore
from lmshrink.data.transfer import WordTransferSet
from lmshrink.data.word_shapes import word_shape

# Characters the tiny BERT's normalizer deletes entirely: a word of them has no sub-token.
DELETED = ["\u200b", "\xad"]
# Words of the tiny vocabulary, words it splits into several sub-tokens, cased words (for
# their shapes), digits and punctuation, and deleted words.
POOL = ["the", "movie", "good", "dull", "xyzzy", "Movie", "GOOD", "1996", "3.5", ",", "?"]
POOL += ["naïve", "McDull", *DELETED]

# Sentences whose words hold separators, control characters, a lone surrogate and a word
# of deleted characters; their fingerprint keys the teacher cache of runs made before the
# transfer set was packed, so it must never change.
ODD_SENTENCES = [
    ("EU", "rejects", "German", "call", "."),
    ("Peter", "Blackburn"),
    ("naïve", "\u200b", "日本", "x\x1fy"),
    ("\xad",),
    ("a", "a", "a"),
]
ODD_FINGERPRINT = "8add6b49ad6d66d3"


def tokenizer_of(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def sentences(n: int, seed: int) -> list[tuple[str, ...]]:
    rng = random.Random(seed)
    out = [tuple(rng.choice(POOL) for _ in range(rng.randint(1, 24))) for _ in range(n)]
    return out + [(DELETED[0],), tuple(DELETED), ("good", DELETED[1])]


# --- the packed sentences ---------------------------------------------------------------


def test_a_store_of_any_fields_holds_sentences_of_any_length_and_characters():
    words = [*ODD_SENTENCES, (), ("",), ("\ud800", "a\nb", "\x1e")]
    store = TextStore(words, any_fields=True)
    assert len(store) == len(words) and store == words and list(store) == words
    assert store[-1] == words[-1] and store[5] == () and store[6] == ("",)
    assert store[1:4] == words[1:4] and store[::-2] == words[::-2]
    assert store.take([7, 0, 7]) == [words[7], words[0], words[7]]
    assert store.take([2]).take([0]) == [words[2]]  # a taken store takes any fields too
    assert words[2] in store and ("nope",) not in store
    with pytest.raises(IndexError):
        store[len(words)]
    # bytes of the words, 8 per word end and 8 per sentence end
    n_words = sum(len(w) for w in words)
    data = sum(len(x.encode("utf-8", "surrogatepass")) for w in words for x in w)
    assert store.nbytes() == data + 8 * n_words + 8 * len(words)


def test_a_store_of_fixed_fields_still_refuses_another_number():
    store = TextStore([("a", "b")])
    with pytest.raises(ValueError, match="has 1 field"):
        store.append(("a",))


def test_the_fingerprint_of_the_same_sentences_is_pinned_packed_or_not():
    packed = WordTransferSet(TextStore(ODD_SENTENCES, any_fields=True), {})
    assert WordTransferSet(list(ODD_SENTENCES), {}).fingerprint() == ODD_FINGERPRINT
    assert packed.fingerprint() == ODD_FINGERPRINT


def test_a_built_token_transfer_set_is_packed_through_augmentation_and_dev_overlap():
    from lmshrink.data.augment import AugmentConfig, augment_words
    from lmshrink.data.ner import TokenSplit
    from lmshrink.data.tasks import get_task
    from lmshrink.data.transfer import TransferConfig, build_transfer_set, without_texts

    train_words = [list(s) for s in sentences(40, seed=3)]
    train = TokenSplit("conll2003", "train", "t", train_words, [[0] * len(s) for s in train_words])
    augment = AugmentConfig(multiplier=2, p_mask=0.3, p_drop=0.2, p_swap=0.3)
    cfg = TransferConfig(include_train=True, dedup=False, augment=augment)
    ts = build_transfer_set(cfg, get_task("conll2003"), train, seed=7, progress=False)
    assert isinstance(ts.words, TextStore)
    originals = [tuple(s) for s in train_words]
    assert ts.words == originals + augment_words(originals, augment, seed=7)
    dev = TokenSplit("conll2003", "dev", "d", [train_words[0], ["not", "there"]], None)
    kept = without_texts(ts, [dev])
    assert isinstance(kept.words, TextStore)
    assert kept.words == [w for w in ts.words if w != originals[0]]
    assert kept.split("conll2003").words is kept.words  # read in place, not copied


def test_student_builders_read_the_packed_sentences_in_place(tiny_encoder):
    from lmshrink.distill import _training_inputs
    from lmshrink.students.bilstm import collect_word_vocab

    tok = tokenizer_of(tiny_encoder)
    words = sentences(30, seed=4)
    transfer = WordTransferSet(TextStore(words, any_fields=True), {})

    class Labeled:
        words = [["dull", "movie"]]

    inputs = _training_inputs(transfer, Labeled())
    assert inputs.a is transfer.words and len(inputs) == len(words) + 1
    plain = [list(w) for w in words] + Labeled.words
    assert collect_word_vocab(tok, inputs, 16) == collect_word_vocab(tok, plain, 16)


# --- the packed encoding ----------------------------------------------------------------


def reference_encoding(tok, words, tags, max_length):
    """`encode_words`'s output the plain way: one tokenizer call over all sentences, lists of
    lists. A word is kept if it is before the truncation point, which is the first word
    past the last kept token's word that has a token in the untruncated encoding."""
    batch = [list(s) for s in words]
    out = tok(batch, is_split_into_words=True, truncation=True, max_length=max_length)
    full = tok(batch, is_split_into_words=True)  # not truncated: which words have tokens
    rows = {name: [] for name in ("input_ids", "shapes", "labels", "starts", "empty")}
    cut = 0
    for i, sentence in enumerate(words):
        ids = out.word_ids(i)
        rows["input_ids"].append(list(out["input_ids"][i]))
        starts = [p for p, w in enumerate(ids) if w is not None and w not in ids[:p]]
        rows["starts"].append(starts)
        rows["shapes"].append([0 if w is None else word_shape(sentence[w]) for w in ids])
        labels = [tags[i][w] if p in starts else IGNORE_INDEX for p, w in enumerate(ids)]
        rows["labels"].append(labels)
        last = max((w for w in ids if w is not None), default=-1)
        with_tokens = {w for w in full.word_ids(i) if w is not None}
        kept = min((w for w in with_tokens if w > last), default=len(sentence))
        rows["empty"].append([w for w in range(kept) if w not in with_tokens])
        cut += len(sentence) - kept
    return rows, cut


@pytest.mark.parametrize(("max_length", "chunk_size"), [(10, 7), (64, 4096)])
def test_encode_words_equals_a_list_based_encoding_row_by_row(tiny_encoder, max_length, chunk_size):
    tok = tokenizer_of(tiny_encoder)
    words = sentences(300, seed=max_length)
    tags = [[(i + j) % 9 for j in range(len(s))] for i, s in enumerate(words)]
    enc, cut = encode_words(tok, words, tags, max_length, word_shapes=True, chunk_size=chunk_size)
    ref, ref_cut = reference_encoding(tok, words, tags, max_length)
    assert cut == ref_cut > 0  # some sentences were truncated
    assert list(enc.features) == ["input_ids", "token_type_ids", "word_shape_ids"]
    for rows in (*enc.features.values(), enc.labels, enc.word_starts, enc.empty_words):
        assert isinstance(rows, RaggedInts) and len(rows) == len(words)
    assert any(ref["empty"]) and enc.empty_words is not None
    for i in range(len(words)):
        assert enc.features["input_ids"][i] == ref["input_ids"][i], i
        assert enc.features["token_type_ids"][i] == [0] * len(ref["input_ids"][i]), i
        assert enc.features["word_shape_ids"][i] == ref["shapes"][i], i
        assert enc.labels[i] == ref["labels"][i], i
        assert enc.word_starts[i] == ref["starts"][i], i
        assert enc.empty_words[i] == ref["empty"][i], i
    assert enc.lengths == [len(r) for r in ref["input_ids"]]


def test_chunk_boundaries_change_nothing(tiny_encoder):
    tok = tokenizer_of(tiny_encoder)
    words = sentences(50, seed=1)
    tags = [[(i + j) % 9 for j in range(len(s))] for i, s in enumerate(words)]
    small, small_cut = encode_words(tok, words, tags, 12, word_shapes=True, chunk_size=3)
    whole, whole_cut = encode_words(tok, words, tags, 12, word_shapes=True)
    assert small_cut == whole_cut
    assert list(small.features) == list(whole.features)
    for name, rows in whole.features.items():
        assert small.features[name] == rows, name
    assert small.labels == whole.labels and small.word_starts == whole.word_starts
    assert small.empty_words == whole.empty_words and small.empty_words is not None


def test_empty_words_is_none_without_a_deleted_word_and_none_are_empty(tiny_encoder):
    tok = tokenizer_of(tiny_encoder)
    enc, _ = encode_words(tok, [["good"], ["the", "movie"]], None, 16, chunk_size=1)
    assert enc.empty_words is None and enc.labels is None
    assert enc.word_starts == [[1], [1, 2]]
    enc, _ = encode_words(tok, [["good"], ["the", DELETED[0]]], None, 16, chunk_size=1)
    assert enc.empty_words == [[], [1]]  # found in the second chunk only
    enc, cut = encode_words(tok, [], None, 16)
    assert len(enc) == 0 and cut == 0 and enc.lengths == []


def test_a_packed_transfer_split_encodes_as_its_list_of_sentences(tiny_encoder):
    tok = tokenizer_of(tiny_encoder)
    words = sentences(40, seed=2)
    split = WordTransferSet(TextStore(words, any_fields=True), {}).split("conll2003")
    plain = WordTransferSet([list(w) for w in words], {}).split("conll2003")
    packed, listed = encode(tok, split, 16), encode(tok, plain, 16)
    assert packed.features == listed.features
    assert packed.word_starts == listed.word_starts and packed.empty_words == listed.empty_words
