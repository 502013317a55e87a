"""Word shapes: a small class id per word saying how it is written (capitals, digits, ...).

An uncased teacher's tokenizer lowercases its input, so "Apple" and "apple", "US" and "us"
reach it (and a student reading its ids) as the same tokens; capitals are among the
strongest signals of a named entity. A word-shape id, computed from the ORIGINAL word and
put on each of its sub-tokens (`lmshrink.data.batching.encode_words(..., word_shapes=True)`),
gives the BiLSTM token student that signal back (`BiLSTMConfig.shape_dim`).

The classes look at the word's characters only (no dictionary), so they work for any
language: scripts without case (Chinese, Arabic, Devanagari) get their own class.
Id 0 is never a word's shape: it is the padding (and special-token) value.
"""

from __future__ import annotations

import unicodedata

PAD = 0  # padding and special tokens ([CLS], [SEP]): no word
LOWER = 1  # "paris", "the"
TITLE = 2  # "Paris", "A": first cased letter upper, every other lower
UPPER = 3  # "EU", "U.S.", "NASA": two or more cased letters, all upper
MIXED = 4  # "McDonald", "iPhone", "eBay": any other mix of cases
ALNUM = 5  # letters and digits together: "B52", "3rd", "COVID-19", "1990s"
DIGITS = 6  # digits and no letters: "1996", "1,000", "12:30", "-5"
PUNCT = 7  # punctuation and symbols only: ",", "(", "--", "$", "%"
UNCASED = 8  # letters of a script without case: "北京", "القاهرة", "दिल्ली"
OTHER = 9  # anything else (an empty string, control or unassigned characters)

SHAPE_NAMES = (
    "pad",
    "lower",
    "title",
    "upper",
    "mixed",
    "alnum",
    "digits",
    "punct",
    "uncased",
    "other",
)
NUM_SHAPES = len(SHAPE_NAMES)  # rows of a shape embedding table


def word_shape(word: str) -> int:
    """The shape id (1 .. NUM_SHAPES - 1) of one word, as it was written."""
    letters = [c for c in word if c.isalpha()]
    has_digit = any(c.isdigit() for c in word)
    if not letters:
        if has_digit:
            return DIGITS
        if word and all(unicodedata.category(c)[0] in "PS" for c in word):
            return PUNCT
        return OTHER
    if has_digit:
        return ALNUM
    # A cased letter is one whose upper and lower forms differ (Latin, Greek, Cyrillic, ...).
    cased = [c for c in letters if c.upper() != c.lower()]
    if not cased:
        return UNCASED
    upper = [c.isupper() for c in cased]
    if not any(upper):
        return LOWER
    if upper[0] and not any(upper[1:]):
        return TITLE  # a single capital letter ("A", "I") is a title-case word
    if all(upper):
        return UPPER
    return MIXED


def word_shape_ids(words: list[str]) -> list[int]:
    """The shape id of each word of a sentence."""
    return [word_shape(w) for w in words]
