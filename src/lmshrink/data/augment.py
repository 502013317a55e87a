"""Transfer-set augmentation, after Tang et al. 2019 ("Distilling task-specific knowledge
from BERT into simple neural networks").

A student learns only what the teacher shows it. Augmented copies of the transfer texts
(some words masked, dropped or swapped with a neighbour, or the whole text cut to a short
n-gram) fill the space between real examples, so the student sees how the teacher behaves
near them. The copies need not keep their source's label: the teacher labels them like any
other transfer text. Pure Python and deterministic for a seed, so that a transfer set (and
the teacher cache keyed by its fingerprint) can be rebuilt exactly.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Iterator

from lmshrink.config import option
from lmshrink.errors import ConfigError

# Tang et al. sample n-grams with n from 1 to 5.
MAX_NGRAM = 5
DEFAULT_MASK_TOKEN = "[MASK]"


@dataclasses.dataclass
class AugmentConfig:
    """How many augmented copies of each transfer text to make, and how to change them."""

    multiplier: int = option(0, "augmented copies made per transfer example (0: no augmentation).")
    p_mask: float = option(0.1, "probability that a word is replaced by the mask token.")
    p_ngram: float = option(
        0.25,
        "probability that a whole text field is replaced by a random n-gram of it "
        f"(n from 1 to {MAX_NGRAM}).",
    )
    p_drop: float = option(0.0, "probability that a word is dropped (word dropout).")
    p_swap: float = option(
        0.0, "probability that a word trades places with the next one (each moves at most once)."
    )
    mask_token: str = option(
        DEFAULT_MASK_TOKEN,
        "the mask token written in place of masked words (left at the default: the "
        "teacher tokenizer's own).",
    )


def with_mask_token(cfg: AugmentConfig, tokenizer_mask_token: str | None) -> AugmentConfig:
    """`cfg` with the teacher tokenizer's mask token (e.g. RoBERTa's <mask>) when its own is
    the default one; a mask token the user chose, or a tokenizer without one, keeps it."""
    if cfg.mask_token == DEFAULT_MASK_TOKEN and tokenizer_mask_token:
        return dataclasses.replace(cfg, mask_token=tokenizer_mask_token)
    return cfg


def augment(texts: list[tuple[str, ...]], cfg: AugmentConfig, seed: int) -> list[tuple[str, ...]]:
    """Only the new examples: `cfg.multiplier` augmented copies of each example.

    Copy k of example i is at index `i * multiplier + k`. Each field of a pair is changed
    independently. Words are whitespace tokens. A field that would come out empty (all words
    dropped, or an empty source) is returned unchanged; a copy may equal its source
    (the transfer set removes duplicates afterwards).
    """
    return list(iter_augment(texts, cfg, seed))


def iter_augment(
    texts: Iterable[tuple[str, ...]], cfg: AugmentConfig, seed: int
) -> Iterator[tuple[str, ...]]:
    """`augment`'s copies one at a time (the same copies, in the same order), so that a
    large transfer set's copies need not be held in a list; the config is checked at once."""
    check_augment_config(cfg)
    return _copies(texts, cfg, random.Random(seed))


def _copies(
    texts: Iterable[tuple[str, ...]], cfg: AugmentConfig, rng: random.Random
) -> Iterator[tuple[str, ...]]:
    if not cfg.multiplier:  # no copies: the texts (maybe millions, packed) are not read
        return
    for fields in texts:
        for _ in range(cfg.multiplier):
            yield tuple(_augment_field(field, cfg, rng) for field in fields)


def check_augment_config(cfg: AugmentConfig) -> None:
    """Raise a `ConfigError` naming the option for a value `augment` cannot use."""
    if isinstance(cfg.multiplier, bool) or not isinstance(cfg.multiplier, int):
        raise ConfigError(
            f"multiplier (--multiplier) takes a whole number, got {cfg.multiplier!r}."
        )
    if cfg.multiplier < 0:
        raise ConfigError(
            f"multiplier (--multiplier) must be 0 or more, got {cfg.multiplier}; "
            "use 0 to turn augmentation off."
        )
    for name in ("p_mask", "p_ngram", "p_drop", "p_swap"):
        value = getattr(cfg, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(
                f"{name} (--{name.replace('_', '-')}) is a probability and must be between "
                f"0 and 1, got {value}."
            )
    # One draw per word decides mask, drop or keep, so the two rates must fit in [0, 1].
    if cfg.p_mask + cfg.p_drop > 1.0:
        raise ConfigError(
            f"p_mask ({cfg.p_mask}) and p_drop ({cfg.p_drop}) add up to more than 1; "
            "lower --p-mask or --p-drop."
        )
    if not cfg.mask_token or cfg.mask_token != cfg.mask_token.strip() or " " in cfg.mask_token:
        raise ConfigError(
            f"mask_token (--mask-token) must be one word without spaces, got "
            f"{cfg.mask_token!r}; use the teacher tokenizer's mask token, e.g. [MASK] or <mask>."
        )


def augment_words(
    sentences: Iterable[tuple[str, ...]], cfg: AugmentConfig, seed: int
) -> list[tuple[str, ...]]:
    """`augment` for a token task's transfer set, whose examples are word lists (one tuple
    of words per sentence): `cfg.multiplier` copies of each, copy k of sentence i at index
    `i * multiplier + k`, each the whole sentence's words changed as `augment` changes one
    text field (n-gram, masking, dropout, swaps). A masked word becomes the mask token,
    one word; a copy that would come out empty is its source."""
    return list(iter_augment_words(sentences, cfg, seed))


def iter_augment_words(
    sentences: Iterable[tuple[str, ...]], cfg: AugmentConfig, seed: int
) -> Iterator[tuple[str, ...]]:
    """`augment_words`'s copies one at a time (the same copies, in the same order), so that
    a large transfer set's copies go straight into a packed store; the config is checked at
    once."""
    check_augment_config(cfg)
    return _word_copies(sentences, cfg, random.Random(seed))


def _word_copies(
    sentences: Iterable[tuple[str, ...]], cfg: AugmentConfig, rng: random.Random
) -> Iterator[tuple[str, ...]]:
    if not cfg.multiplier:  # no copies: the sentences are not read
        return
    for words in sentences:
        for _ in range(cfg.multiplier):
            changed = _augment_words(list(words), cfg, rng)
            yield tuple(changed) if changed else tuple(words)


def _augment_field(field: str, cfg: AugmentConfig, rng: random.Random) -> str:
    """One augmented version of one text field (or the field itself if nothing is left)."""
    words = field.split()
    if not words:
        return field
    words = _augment_words(words, cfg, rng)
    return " ".join(words) if words else field


def _augment_words(words: list[str], cfg: AugmentConfig, rng: random.Random) -> list[str]:
    """One augmented version of a non-empty word list (maybe empty: every word dropped)."""
    # The n-gram step comes first: masking afterwards costs less and gives the same rates.
    if cfg.p_ngram and rng.random() < cfg.p_ngram:
        n = min(rng.randint(1, MAX_NGRAM), len(words))
        start = rng.randrange(len(words) - n + 1)
        words = words[start : start + n]
    if cfg.p_mask or cfg.p_drop:
        kept = []
        for word in words:
            r = rng.random()
            if r < cfg.p_mask:
                kept.append(cfg.mask_token)
            elif r < cfg.p_mask + cfg.p_drop:
                continue
            else:
                kept.append(word)
        words = kept
    if cfg.p_swap:
        i = 0
        while i < len(words) - 1:
            if rng.random() < cfg.p_swap:
                words[i], words[i + 1] = words[i + 1], words[i]
                i += 2  # a swapped word is not carried further along
            else:
                i += 1
    return words
