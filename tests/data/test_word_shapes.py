"""Word shapes: each word's class from how it is written, for any script."""

from __future__ import annotations

import pytest

from lmshrink.data import word_shapes as ws

CASES = {
    "paris": ws.LOWER,
    "'s": ws.LOWER,
    "straße": ws.LOWER,
    "Paris": ws.TITLE,
    "A": ws.TITLE,
    "O'neil": ws.TITLE,
    "Élysée": ws.TITLE,
    "Москва": ws.TITLE,
    "EU": ws.UPPER,
    "U.S.": ws.UPPER,
    "NASA": ws.UPPER,
    "McDonald": ws.MIXED,
    "iPhone": ws.MIXED,
    "B52": ws.ALNUM,
    "3rd": ws.ALNUM,
    "COVID-19": ws.ALNUM,
    "1996": ws.DIGITS,
    "1,000.5": ws.DIGITS,
    "12:30": ws.DIGITS,
    "-5": ws.DIGITS,
    ",": ws.PUNCT,
    "(": ws.PUNCT,
    "--": ws.PUNCT,
    "$": ws.PUNCT,
    "北京": ws.UNCASED,
    "القاهرة": ws.UNCASED,
    "दिल्ली": ws.UNCASED,
    "": ws.OTHER,
    "\x00": ws.OTHER,
}


@pytest.mark.parametrize("word", list(CASES))
def test_word_shape_of_hand_made_words(word):
    assert ws.word_shape(word) == CASES[word], ws.SHAPE_NAMES[ws.word_shape(word)]


def test_ids_are_small_and_zero_is_padding_only():
    assert ws.PAD == 0 and ws.NUM_SHAPES == len(ws.SHAPE_NAMES) == 10
    assert {ws.word_shape(w) for w in CASES} == set(range(1, ws.NUM_SHAPES))
    assert ws.word_shape_ids(["EU", "rejects", "German", "call", "."]) == [
        ws.UPPER,
        ws.LOWER,
        ws.TITLE,
        ws.LOWER,
        ws.PUNCT,
    ]
