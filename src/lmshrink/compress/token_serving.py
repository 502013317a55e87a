"""What a server of a token classifier (NER) needs beside the graph: export.json's `words`
(how raw text becomes the model's input and how its output becomes tags) and the rule files.

A server holds raw strings; the model reads pre-split words and is read at each word's first
sub-token. lmshrink's own rules for the text-side steps (`lmshrink.data.words.split_words`:
text -> words; `lmshrink.data.word_shapes.word_shape_ids`: words -> shape ids, for a BiLSTM
tagger that reads them) import only the standard library, so `lmshrink export` copies them
beside the graph, and README's NER serving example loads them without lmshrink.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# lmshrink/data/words.py beside a token classifier's graph
SPLITTER_FILE = "split_words.py"
# lmshrink/data/word_shapes.py beside a graph that reads word shapes
SHAPES_FILE = "word_shapes.py"


def token_serving_notes(shapes: bool = False) -> dict[str, Any]:
    """How a token classifier's input is made and its output read (export.json `words`):
    raw text split into words by lmshrink's rule (`SPLITTER_FILE`), words encoded as
    pre-split words, tags (IOB2) read at each word's first sub-token; with `shapes`, how the
    `word_shape_ids` input is made (`SHAPES_FILE`)."""
    import inspect

    from lmshrink.data.words import split_words

    notes = {
        "split_rule": " ".join((inspect.getdoc(split_words) or "").split()),
        "split_file": f"{SPLITTER_FILE}: split_words(text) -> list of words (Python "
        "standard library only); it only cuts, so each word is found in the text in order, "
        "which gives its character offsets",
        "is_split_into_words": True,
        "encode": "tokenizer.encode_batch(list of word lists, is_pretokenized=True); "
        "encoding.word_ids maps each token to its word",
        "read_at": "first_subtoken",
        "read": "a word's tag is the argmax of the logits at its first sub-token; later "
        "sub-tokens, special tokens and padding are not read; a word past max_length tokens "
        "is cut and gets no tag (read it as O)",
        "tag_scheme": "IOB2",
        "entities": "B-X starts an entity of type X, I-X continues one of type X (an I-X "
        "after O or after another type starts one, as conlleval and seqeval read it), O "
        "ends it",
    }
    if shapes:
        notes["word_shapes"] = (
            f"input word_shape_ids [batch, sequence]: on each sub-token, the shape id of its "
            f"word as written ({SHAPES_FILE}: word_shape_ids(words) -> one id per word), 0 on "
            "special tokens and padding"
        )
    return notes


def write_rule_files(folder: Path, shapes: bool) -> None:
    """Beside a token classifier's graph, the rules a server applies to raw text, as
    standalone modules (copies of lmshrink's own, which import only the standard library):
    `SPLITTER_FILE` (text -> words) and, for a graph that reads word shapes, `SHAPES_FILE`
    (words -> shape ids)."""
    from lmshrink import __version__
    from lmshrink.data import word_shapes, words

    modules = [(SPLITTER_FILE, words)] + ([(SHAPES_FILE, word_shapes)] if shapes else [])
    for name, module in modules:
        source = Path(module.__file__).read_text(encoding="utf-8")
        header = (
            f"# Written by lmshrink export (lmshrink {__version__}): a copy of "
            f"lmshrink/data/{Path(module.__file__).name},\n"
            "# a rule a server applies to raw text for this model. Standard library only.\n"
        )
        (folder / name).write_text(header + source, encoding="utf-8")
