import dataclasses
import re

import pytest

from lmshrink.config import from_dict
from lmshrink.data.augment import MAX_NGRAM, AugmentConfig, augment
from lmshrink.errors import ConfigError

# Off unless set: each test turns on the operation it checks.
NONE = dict(p_mask=0.0, p_ngram=0.0, p_drop=0.0, p_swap=0.0)


def distinct_words(n_examples: int, n_words: int, offset: int = 0) -> list[tuple[str]]:
    """Examples whose words are all different, so every change can be traced."""
    return [(" ".join(f"w{offset + i}_{j}" for j in range(n_words)),) for i in range(n_examples)]


def config(**kwargs) -> AugmentConfig:
    return AugmentConfig(**{**NONE, "multiplier": 1, **kwargs})


def test_defaults_are_off_and_every_field_has_help():
    cfg = AugmentConfig()
    assert cfg.multiplier == 0 and (cfg.p_mask, cfg.p_ngram) == (0.1, 0.25)
    assert augment(distinct_words(5, 6), cfg, seed=0) == []
    assert all(f.metadata.get("help") for f in dataclasses.fields(AugmentConfig))
    assert from_dict(AugmentConfig, {"multiplier": "3", "p_mask": "0.2"}).multiplier == 3


def test_returns_multiplier_copies_per_example_in_order():
    texts = distinct_words(7, 10)
    out = augment(texts, config(multiplier=3, p_mask=0.3), seed=1)
    assert len(out) == 21
    for i, (source,) in enumerate(texts):
        for k in range(3):
            (copy,) = out[i * 3 + k]
            # Masking keeps positions, so every unmasked word is the source's word.
            pairs = list(zip(copy.split(), source.split(), strict=True))
            assert all(c in (s, "[MASK]") for c, s in pairs)


def test_deterministic_for_a_seed_and_different_across_seeds():
    texts = distinct_words(50, 12)
    cfg = config(multiplier=2, p_mask=0.2, p_ngram=0.3, p_drop=0.1, p_swap=0.1)
    assert augment(texts, cfg, seed=3) == augment(texts, cfg, seed=3)
    assert augment(texts, cfg, seed=3) != augment(texts, cfg, seed=4)
    assert texts == distinct_words(50, 12)  # the input is not changed in place


def test_mask_rate_matches_p_mask():
    texts = distinct_words(200, 50)  # 10,000 words
    out = augment(texts, config(p_mask=0.2, mask_token="<mask>"), seed=0)
    words = [w for (t,) in out for w in t.split()]
    assert len(words) == 10_000
    assert words.count("<mask>") / len(words) == pytest.approx(0.2, abs=0.02)


def test_drop_rate_matches_p_drop_and_order_is_kept():
    texts = distinct_words(200, 50)
    out = augment(texts, config(p_drop=0.3), seed=0)
    kept = sum(len(t.split()) for (t,) in out)
    assert 1 - kept / 10_000 == pytest.approx(0.3, abs=0.02)
    for (copy,), (source,) in zip(out, texts, strict=True):
        order = [source.split().index(w) for w in copy.split()]
        assert order == sorted(order)


def test_mask_and_drop_together_keep_their_own_rates():
    texts = distinct_words(200, 50)
    out = augment(texts, config(p_mask=0.2, p_drop=0.2), seed=5)
    words = [w for (t,) in out for w in t.split()]
    assert words.count("[MASK]") / 10_000 == pytest.approx(0.2, abs=0.02)
    assert 1 - len(words) / 10_000 == pytest.approx(0.2, abs=0.02)


def test_swap_moves_words_by_one_place_at_the_configured_rate():
    texts = distinct_words(200, 50)
    p = 0.2
    out = augment(texts, config(p_swap=p), seed=0)
    moved = 0
    for (copy,), (source,) in zip(out, texts, strict=True):
        src = source.split()
        assert sorted(copy.split()) == sorted(src)
        for pos, word in enumerate(copy.split()):
            assert abs(src.index(word) - pos) <= 1
            moved += src.index(word) != pos
    # Left to right, a pair is swapped with probability p and then skipped, so a share
    # p / (1 + p) of positions starts a swap and each swap moves two words.
    assert moved / 10_000 == pytest.approx(2 * p / (1 + p), abs=0.02)


def test_ngram_replaces_a_share_of_fields_by_a_contiguous_ngram():
    texts = distinct_words(2000, 20)
    out = augment(texts, config(p_ngram=0.25), seed=0)
    lengths = []
    for (copy,), (source,) in zip(out, texts, strict=True):
        if copy == source:
            continue
        words, src = copy.split(), source.split()
        start = src.index(words[0])
        assert src[start : start + len(words)] == words
        lengths.append(len(words))
    assert len(lengths) / 2000 == pytest.approx(0.25, abs=0.03)
    assert set(lengths) == set(range(1, MAX_NGRAM + 1))


def test_ngram_of_a_short_field_is_at_most_the_field():
    out = augment([("just two",)] * 50, config(p_ngram=1.0), seed=0)
    assert {t for (t,) in out} == {"just", "two", "just two"}


def test_pair_examples_keep_two_fields_changed_independently():
    firsts = distinct_words(100, 12, offset=0)
    seconds = distinct_words(100, 12, offset=1000)
    texts = [(a, b) for (a,), (b,) in zip(firsts, seconds, strict=True)]
    out = augment(texts, config(multiplier=2, p_ngram=1.0), seed=0)
    assert len(out) == 200 and all(len(t) == 2 for t in out)
    for i, (first, second) in enumerate(out):
        source_first, source_second = texts[i // 2]
        assert set(first.split()) <= set(source_first.split())
        assert set(second.split()) <= set(source_second.split())
    # Independent: the two fields' n-gram lengths differ in many examples.
    assert sum(len(a.split()) != len(b.split()) for a, b in out) > 100


def test_never_returns_an_empty_field():
    texts = [("one two three",), ("",), ("   ",), ("a", "")]
    out = augment(texts, config(multiplier=2, p_drop=1.0), seed=0)
    assert out == [t for t in texts for _ in range(2)]


def test_copies_identical_to_their_source_are_kept():
    texts = distinct_words(3, 4)
    assert augment(texts, config(multiplier=2), seed=0) == [t for t in texts for _ in range(2)]


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        (dict(multiplier=-1), "multiplier"),
        (dict(multiplier=1.5), "multiplier"),
        (dict(p_mask=1.5), "p_mask (--p-mask)"),
        (dict(p_ngram=-0.1), "p_ngram (--p-ngram)"),
        (dict(p_swap=2.0), "p_swap (--p-swap)"),
        (dict(p_mask=0.6, p_drop=0.6), "lower --p-mask or --p-drop"),
        (dict(mask_token=""), "mask_token (--mask-token)"),
        (dict(mask_token="[ MASK ]"), "one word without spaces"),
    ],
)
def test_invalid_settings_name_the_option(kwargs, names):
    with pytest.raises(ConfigError, match=re.escape(names)):
        augment(distinct_words(2, 3), config(**kwargs), seed=0)


def test_the_default_mask_token_becomes_the_teachers_own():
    from lmshrink.data.augment import with_mask_token

    default = AugmentConfig()
    roberta = with_mask_token(default, "<mask>")
    assert roberta.mask_token == "<mask>" and default.mask_token == "[MASK]"
    assert with_mask_token(default, None) is default  # a tokenizer without one
    chosen = AugmentConfig(mask_token="[BLANK]")
    assert with_mask_token(chosen, "<mask>").mask_token == "[BLANK]"


# --- token tasks: word lists -------------------------------------------------------------


def distinct_sentences(n: int, n_words: int) -> list[tuple[str, ...]]:
    return [tuple(f"w{i}_{j}" for j in range(n_words)) for i in range(n)]


def test_word_lists_are_augmented_word_by_word_like_text_fields():
    """A token task's sentence (a tuple of words) changes exactly as the same words joined
    into one text field would, drawn from the same seed; words are never split or joined."""
    from lmshrink.data.augment import augment_words

    sentences = distinct_sentences(40, 9)
    cfg = config(multiplier=2, p_mask=0.2, p_ngram=0.3, p_drop=0.1, p_swap=0.2)
    copies = augment_words(sentences, cfg, seed=5)
    assert len(copies) == 80 and all(isinstance(c, tuple) for c in copies)
    as_text = augment([(" ".join(s),) for s in sentences], cfg, seed=5)
    assert [" ".join(c) for c in copies] == [t for (t,) in as_text]
    assert copies != [s for s in sentences for _ in range(2)]  # something changed
    assert augment_words(sentences, config(multiplier=0), seed=5) == []


def test_a_word_list_that_would_come_out_empty_is_its_source():
    from lmshrink.data.augment import augment_words

    sentences = [("only", "two")]
    assert augment_words(sentences, config(p_drop=1.0), seed=0) == sentences
    masked = augment_words([("a", "b", "c")], config(p_mask=1.0, mask_token="<mask>"), seed=0)
    assert masked == [("<mask>",) * 3]
