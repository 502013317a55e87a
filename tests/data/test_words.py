"""The word-splitting rule for a token task's unlabeled text (CoNLL-2003's tokenisation)."""

import pytest

from lmshrink.data.words import split_words


@pytest.mark.parametrize(
    ("sentence", "words"),
    [
        (
            "EU rejects German call to boycott British lamb.",
            "EU rejects German call to boycott British lamb .",
        ),
        ('He said: "No (never)!"', 'He said : " No ( never ) ! "'),
        (
            "Germany's envoy doesn't know, they're sure.",
            "Germany 's envoy does n't know , they 're sure .",
        ),
        (
            "The U.S. and Mr. Smith of Acme Inc. met J. Doe at 8 a.m.",
            "The U.S. and Mr. Smith of Acme Inc. met J. Doe at 8 a.m.",
        ),
        (
            "O'Brien scored 3.5 points; 1,000 Franco-German fans cheered...",
            "O'Brien scored 3.5 points ; 1,000 Franco-German fans cheered ...",
        ),
        ("1. Jones ( Britain ) 3:45.12", "1. Jones ( Britain ) 3:45.12"),
        ("ended in 1996.", "ended in 1996 ."),
        ("the players' union 's", "the players ' union 's"),
        ("  spaced\tout  ", "spaced out"),
        ("", ""),
    ],
)
def test_split_words_splits_punctuation_and_clitics_off_as_conll_does(sentence, words):
    assert split_words(sentence) == words.split()


def test_split_words_gives_back_conll_sentences_from_their_joined_words(shared_ner):
    """On the real CoNLL-2003 dev file, nearly every sentence's words joined by spaces split
    back into exactly those words."""
    sentences, words = [], []
    for line in (shared_ner / "conll2003" / "dev.tsv").read_text(encoding="utf-8").splitlines():
        if line:
            words.append(line.split("\t")[0])
        elif words:
            sentences.append(words)
            words = []
    same = sum(split_words(" ".join(s)) == s for s in sentences)
    assert same / len(sentences) > 0.99
