"""Building the transfer set: the unlabeled texts the teacher labels once for distillation.

XtremeDistil's student learns from the teacher's outputs on a large in-domain transfer set,
not only from the task's few gold labels. The set is made of the task's training inputs
(labels hidden), unlabeled files (`.txt` one text per line, or CSV/TSV/JSONL columns),
and optionally augmented copies. File texts are cleaned of HTML markup, optionally split
into sentences and filtered by length, so that they look like the task's inputs. The
result is deduplicated (the teacher would label a repeated text twice for nothing) and
deterministic for a seed, so its fingerprint can key the teacher cache.

A token task's (NER) transfer set is made of word lists, not strings (`WordTransferSet`):
its train sentences with the tags hidden, the sentences of unlabeled `.txt` files split into
words by `split_words` (whitespace, with punctuation and clitics split off as CoNLL-2003 is
tokenised), and augmented copies changed word by word.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import html
import json
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lmshrink.config import option
from lmshrink.data.augment import (
    AugmentConfig,
    check_augment_config,
    iter_augment,
    iter_augment_words,
)
from lmshrink.data.files import check_file, read_table, shorten, text_lines
from lmshrink.data.ner import TokenSplit
from lmshrink.data.splits import Split
from lmshrink.data.tasks import Task
from lmshrink.data.text_store import TextStore, first_occurrences
from lmshrink.data.words import ABBREVIATIONS, split_words
from lmshrink.errors import ConfigError, DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")

# Show a progress bar only where cleaning takes long enough to watch.
_PROGRESS_MIN_TEXTS = 10_000


@dataclasses.dataclass
class TransferConfig:
    """Which texts make up the transfer set, how they are cleaned, and how it is augmented."""

    files: list[str] = option(
        [],
        "unlabeled in-domain files: .txt (one text per line), or .csv/.tsv/.jsonl "
        "read from --columns (repeat the path list comma-separated). Token tasks (NER) "
        "read .txt files, one sentence per line, split into words at whitespace with "
        "punctuation and clitics ('s, n't) split off as CoNLL-2003 is tokenised.",
        flag="transfer",
    )
    columns: list[str] = option(
        [],
        "column name(s) holding the text in CSV/TSV/JSONL transfer files: one for a "
        "single-text task, two for a pair task (default: the task's own text columns).",
    )
    include_train: bool = option(True, "add the task's training inputs (labels hidden).")
    clean_markup: bool = option(
        True, "remove HTML tags such as <br /> and unescape entities in file texts."
    )
    split_sentences: bool = option(
        False, "split file texts (long documents) into sentences; single-text tasks only."
    )
    min_words: int = option(3, "drop file texts (or sentences) with fewer words than this.")
    max_words: int = option(0, "cut file texts to this many words (0: no limit).")
    dedup: bool = option(True, "drop exact duplicate examples (the first one is kept).")
    max_transfer_samples: int = option(
        0, "use a fixed-seed random subset of this many transfer examples (0: all)."
    )
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)


@dataclasses.dataclass
class TransferSet:
    """The transfer examples and where they came from.

    `counts` is counted where texts enter: "train" (training inputs taken), one entry per
    file path (its texts after cleaning, splitting and the length filter), "augmented"
    (copies made), then what was removed ("too_short_dropped" before entry,
    "duplicates_dropped", "subset_dropped"; "dev_overlap_dropped" by `without_texts`), and
    "total" (the final size):
    total = train + files + augmented - duplicates_dropped - subset_dropped
    - dev_overlap_dropped.
    """

    # a list, or for a built set a `TextStore` (packed: millions of texts fit in memory)
    texts: Sequence[tuple[str, ...]]
    counts: dict[str, int]

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        """A short hash of exactly these texts in this order (to key the teacher cache)."""
        h = hashlib.sha256()
        for fields in self.texts:
            h.update("\x1f".join(fields).encode())
            h.update(b"\x1e")
        return h.hexdigest()[:16]


@dataclasses.dataclass
class WordTransferSet:
    """The transfer set of a token task: one tuple of words per sentence, and `counts` as
    `TransferSet.counts` says them (sentences instead of texts)."""

    # a list, or for a built set a `TextStore` of any number of fields (one per word):
    # millions of sentences are held as their bytes, not as tuples of str
    words: Sequence[tuple[str, ...]]
    counts: dict[str, int]

    def __len__(self) -> int:
        return len(self.words)

    def fingerprint(self) -> str:
        """A short hash of exactly these sentences in this order (to key the teacher cache)."""
        h = hashlib.sha256()
        for words in self.words:
            h.update("\x1f".join(words).encode())
            h.update(b"\x1e")
        return h.hexdigest()[:16]

    def split(self, task: str) -> TokenSplit:
        """The sentences as an unlabeled `TokenSplit` (what `data.batching.encode` reads),
        read in place: its `words` are this set's (tuples of words), not a copy."""
        return TokenSplit(task, "transfer", "the transfer set", self.words, None)


# --- cleaning ---------------------------------------------------------------------------

# Only real HTML tag names are removed: reviews also hold "<sighs>", "<3" and
# "< SPOILERS >", which are words, not markup.
_HTML_TAGS = (
    "a|abbr|b|big|blockquote|br|center|cite|code|del|div|em|font|h[1-6]|hr|i|img|ins|li|"
    "ol|p|pre|q|s|small|span|strike|strong|sub|sup|table|tbody|td|th|thead|tr|tt|u|ul"
)
_TAG = re.compile(rf"</?(?:{_HTML_TAGS})\b[^<>]*>", re.IGNORECASE)
# Line breaks in markup or in the text separate paragraphs, which are sentence boundaries
# even where the writer left out the final full stop. (Runs of breaks give empty
# paragraphs, which hold no sentences.)
_LINE_BREAK = re.compile(r"<br\s*/?>|\n", re.IGNORECASE)


def clean_text(text: str) -> str:
    """Text without HTML tags (each becomes a space) or entities, whitespace collapsed."""
    text = _TAG.sub(" ", text)
    text = html.unescape(text)
    return " ".join(text.split())


# --- sentences --------------------------------------------------------------------------

# A sentence ends with . ! or ?, maybe followed by closing quotes or brackets, then
# whitespace and (maybe after an opening quote or bracket) the next sentence's first
# character, which `split_into_sentences` checks to be uppercase or a digit.
_SENTENCE_END = re.compile(r"""[.!?]+["'”’)\]]*(?=\s+["'“‘(\[]?(\w))""")

# "e.g", "i.e", "U.S", "p.m": letters joined by dots.
_DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")


def split_into_sentences(text: str) -> list[str]:
    """Split a text into sentences with simple rules (good enough for a transfer set).

    A boundary is . ! or ? (then optional closing quotes or brackets), whitespace, and an
    uppercase letter or digit (maybe after an opening quote or bracket). A single full stop
    after a title ("Mr.", "Dr."), a dotted abbreviation ("e.g.", "U.S.") or an initial
    ("J. Smith") is not a boundary. Returns stripped, non-empty sentences.
    """
    sentences = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        first = match.group(1)  # the next sentence's first letter or digit
        if not (first.isupper() or first.isdigit()):
            continue
        # Only a single full stop can belong to an abbreviation ("..." or "!" cannot).
        single_stop = match.group().startswith(".") and not match.group().startswith("..")
        if single_stop and _is_abbreviation(_word_before(text, match.start())):
            continue
        sentence = text[start : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    last = text[start:].strip()
    if last:
        sentences.append(last)
    return sentences


def _word_before(text: str, end: int) -> str:
    """The word that ends at `end`, without opening quotes or brackets ("" after a space)."""
    if end == 0 or text[end - 1].isspace():
        return ""
    # A short window suffices: longer words are no abbreviations.
    return text[max(0, end - 12) : end].split()[-1].lstrip("\"'“‘([")


def _is_abbreviation(word: str) -> bool:
    if len(word) == 1:
        return word.isupper()  # an initial, as in "J. R. R. Tolkien"
    return word.lower() in ABBREVIATIONS or _DOTTED.fullmatch(word) is not None


# --- reading ----------------------------------------------------------------------------


def read_unlabeled(path: str, columns: list[str], is_pair: bool) -> list[tuple[str, ...]]:
    """The raw texts of one unlabeled file, as 1-tuples (or 2-tuples for a pair task).

    `.txt` holds one text per line (blank lines are skipped); `.csv`, `.tsv` and `.jsonl`
    are read from `columns` (one name, or two for a pair task). Texts are not cleaned here.
    """
    return list(iter_unlabeled(path, columns, is_pair))


def iter_unlabeled(path: str, columns: list[str], is_pair: bool) -> Iterator[tuple[str, ...]]:
    """`read_unlabeled`'s texts one at a time: a `.txt` file is read line by line, never
    whole (a table is read whole). The file and its type are checked at once; a file that
    holds no texts raises its `DataError` once the iteration reaches its end."""
    file = Path(path)
    check_file(file, "check --transfer")
    suffix = file.suffix.lower()
    if suffix not in (".txt", *TABLE_SUFFIXES):
        raise DataError(
            f"{path}: unsupported transfer file type '{suffix}'; use .txt (one text per "
            "line), .csv, .tsv or .jsonl."
        )
    if suffix == ".txt":
        if is_pair:
            raise DataError(
                f"{path}: a pair task needs two texts per example, which a .txt file "
                "cannot hold; use a CSV, TSV or JSONL file with two text columns."
            )
        # Undecodable bytes, NUL bytes and the like are DataErrors from text_lines.
        stripped = (line.strip() for line in text_lines(file, "check --transfer"))
        return _not_empty(((line,) for line in stripped if line), path, "one text per line")
    texts = _read_columns(file, columns, is_pair)
    return _not_empty(iter(texts), path, f"data rows with column(s) {list(columns)}")


def _not_empty(
    texts: Iterator[tuple[str, ...]], path: str, needs: str
) -> Iterator[tuple[str, ...]]:
    empty = True
    for text in texts:
        empty = False
        yield text
    if empty:
        raise DataError(f"{path}: the transfer file holds no texts; it needs {needs}.")


def _read_columns(file: Path, columns: list[str], is_pair: bool) -> list[tuple[str, ...]]:
    need = 2 if is_pair else 1
    if len(columns) != need:
        task_kind = "a pair task" if is_pair else "a single-text task"
        raise ConfigError(
            f"{file}: {len(columns)} transfer column(s) given ({list(columns)}) but "
            f"{task_kind} reads {need} from each row; name {need} with --columns."
        )
    _check_header(file, columns)
    rows = read_table(
        file,
        list(columns),
        has_header=True,
        hint="check --transfer",
        names_fix="name the text column(s) with --columns",
    )
    return [tuple(str(row[c]) for c in columns) for _, row in rows]


def _check_header(file: Path, columns: list[str]) -> None:
    """Check the first row for the columns, so that the error names the transfer option."""
    first = next((line for line in text_lines(file, "check --transfer") if line.strip()), None)
    if first is None:
        return  # no rows: read_unlabeled reports the empty file
    if file.suffix.lower() == ".jsonl":
        try:
            obj = json.loads(first)
        except (ValueError, RecursionError):  # bad JSON, or a number of 4,300+ digits
            return  # the table reader reports the line and the JSON error
        present = sorted(obj) if isinstance(obj, dict) else []
    else:
        delimiter = "," if file.suffix.lower() == ".csv" else "\t"
        try:
            present = [h.strip() for h in next(csv.reader([first], delimiter=delimiter))]
        except (csv.Error, StopIteration):
            return  # the table reader reports the line
    missing = [c for c in columns if c not in present]
    if missing:
        raise DataError(
            f"{file}, line 1: missing transfer column(s) {missing}; it has "
            f"{shorten(present, 200)}; name the text column(s) with --columns (a table needs "
            "a header row naming them; plain texts go in a .txt file, one per line)."
        )


# --- building ---------------------------------------------------------------------------


def build_transfer_set(
    cfg: TransferConfig,
    task: Task,
    train: Split | TokenSplit | None,
    seed: int,
    progress: bool = True,
) -> TransferSet | WordTransferSet:
    """The transfer set for `task`: train inputs, then file texts, then augmented copies.

    Training inputs are taken as the task gives them (they are what the student will be
    evaluated on); file texts are cleaned, optionally split into sentences and filtered by
    `min_words`/`max_words`. Duplicates are dropped (first one kept; exact, case-sensitive
    match on the whole example), augmented copies are appended and deduplicated against
    everything before them, and `max_transfer_samples` keeps a fixed-seed subset in order.

    A token task (`task.kind.token_level`) gets a `WordTransferSet`: the train split's
    sentences (a `TokenSplit`, tags hidden) and the sentences of `.txt` files split into
    words by `split_words`, `min_words`/`max_words` counting those words, and copies made by
    `augment_words`. Either kind is packed into a `TextStore`.
    """
    _check_config(cfg, task)
    words = task.kind.token_level
    counts: dict[str, int] = {}
    # Packed into a TextStore (a large transfer set is held as its bytes): a sentence
    # task's texts, or a token task's sentences, one field per word.
    texts: Any = TextStore(any_fields=words)
    empty_inputs: list[str] = []  # for the error message if nothing is left

    if cfg.include_train and train is not None:
        inputs = train.words if isinstance(train, TokenSplit) else train.texts
        texts.extend(tuple(fields) for fields in inputs)
        counts["train"] = len(inputs)
        if not inputs:
            empty_inputs.append(f"the train split {train.source} holds no examples")
    else:
        counts["train"] = 0
        empty_inputs.append(
            "include_train is off" if not cfg.include_train else "no train split was given"
        )

    too_short = 0
    columns = [] if words else _transfer_columns(cfg, task)
    if not cfg.files:
        empty_inputs.append("no transfer files were given")
    for path in cfg.files:
        before = len(texts)
        if words:
            lines = read_sentences(path)
            dropped = _prepare_words(lines, cfg, progress, Path(path).name, texts)
        else:
            raw = iter_unlabeled(path, columns, task.is_pair)
            dropped = _prepare(raw, cfg, progress, Path(path).name, texts)
        kept = len(texts) - before
        counts[path] = counts.get(path, 0) + kept
        too_short += dropped
        if not kept:
            empty_inputs.append(
                f"{path} kept no texts ({dropped} shorter than {max(cfg.min_words, 1)} words)"
            )
    counts["too_short_dropped"] = too_short

    duplicates = 0
    if cfg.dedup:
        texts, duplicates = _dedup(texts)
    copies = TextStore(
        (iter_augment_words if words else iter_augment)(texts, cfg.augment, seed),
        any_fields=words,
    )
    counts["augmented"] = len(copies)
    texts.extend(copies)
    if cfg.dedup and copies:
        # The originals are distinct already: copies equal to one of them, or to an
        # earlier copy, go.
        texts, dropped_copies = _dedup(texts)
        duplicates += dropped_copies
    del copies
    counts["duplicates_dropped"] = duplicates

    if not texts:
        raise DataError(
            f"the transfer set for task {task.name} is empty: {'; '.join(empty_inputs)}; "
            "add unlabeled files with --transfer, turn on include_train with a train split, "
            "or lower min_words."
        )
    n = cfg.max_transfer_samples
    counts["subset_dropped"] = 0
    if 0 < n < len(texts):
        keep = sorted(random.Random(seed).sample(range(len(texts)), n))
        counts["subset_dropped"] = len(texts) - n
        texts = _take(texts, keep)
    counts["total"] = len(texts)
    return WordTransferSet(texts, counts) if words else TransferSet(texts, counts)


def _check_config(cfg: TransferConfig, task: Task) -> None:
    if task.kind.token_level and cfg.columns:
        raise ConfigError(
            f"--columns names the text columns of CSV/TSV/JSONL transfer files, but the token "
            f"task {task.name} reads unlabeled .txt files (one sentence per line); leave out "
            "--columns."
        )
    if cfg.split_sentences and task.is_pair:
        raise ConfigError(
            f"split_sentences cannot be used with the pair task {task.name}, as it would "
            "break each pair apart; turn it off (--no-split-sentences)."
        )
    for name in ("min_words", "max_words", "max_transfer_samples"):
        if getattr(cfg, name) < 0:
            flag = name.replace("_", "-")
            raise ConfigError(f"{name} (--{flag}) must be 0 or more, got {getattr(cfg, name)}.")
    if cfg.max_words and cfg.max_words < cfg.min_words:
        raise ConfigError(
            f"max_words ({cfg.max_words}) is below min_words ({cfg.min_words}), so no file "
            "text could be kept; raise --max-words, or use 0 for no limit."
        )
    check_augment_config(cfg.augment)


def _transfer_columns(cfg: TransferConfig, task: Task) -> list[str]:
    """The columns to read from table files: given ones, else the task's when they are names."""
    if cfg.columns:
        return list(cfg.columns)
    if all(isinstance(c, str) for c in task.text_columns):
        return [str(c) for c in task.text_columns]
    tables = [p for p in cfg.files if Path(p).suffix.lower() in TABLE_SUFFIXES]
    if tables:
        raise ConfigError(
            f"{tables[0]}: task {task.name} reads its text from an unnamed column, so the "
            "transfer file's text column name(s) must be given; pass them with --columns."
        )
    return []


def _prepare(
    raw: Iterator[tuple[str, ...]], cfg: TransferConfig, progress: bool, name: str, sink: Any
) -> int:
    """Clean, split and length-filter one file's texts (read as they come) into `sink`
    (`.append`); returns the number too short."""
    from lmshrink.reporting.progress import track

    too_short = 0
    # a file read line by line has no length up front: a bar with a count, not a share
    for fields in track(raw, f"reading {name}", unit="texts", show=progress, transient=True):
        if cfg.split_sentences:
            # Only single-text tasks get here (_check_config), so each piece is one field.
            candidates = [(s,) for s in _sentences(fields[0], cfg.clean_markup)]
        else:
            candidates = [tuple(_clean(f, cfg.clean_markup) for f in fields)]
        for candidate in candidates:
            words = [f.split() for f in candidate]
            # Empty fields are always dropped, whatever min_words says.
            if any(len(w) < max(cfg.min_words, 1) for w in words):
                too_short += 1
                continue
            if cfg.max_words:
                candidate = tuple(
                    " ".join(w[: cfg.max_words]) if len(w) > cfg.max_words else f
                    for f, w in zip(candidate, words, strict=True)
                )
            sink.append(candidate)
    return too_short


def read_sentences(path: str) -> list[str]:
    """The non-blank lines of a token task's unlabeled `.txt` file, stripped: one sentence
    (or, with split_sentences, one document) per line."""
    file = Path(path)
    check_file(file, "check --transfer")
    if file.suffix.lower() != ".txt":
        raise DataError(
            f"{path}: a token task reads unlabeled text from .txt files (one sentence per "
            f"line), not '{file.suffix.lower()}'; write the sentences one per line into a "
            ".txt file."
        )
    lines = [line.strip() for line in text_lines(file, "check --transfer")]
    lines = [line for line in lines if line]
    if not lines:
        raise DataError(
            f"{path}: the transfer file holds no texts; it needs one sentence per line."
        )
    return lines


def _prepare_words(
    lines: list[str], cfg: TransferConfig, progress: bool, name: str, sink: Any
) -> int:
    """Clean, split into sentences (if asked) and into words, and length-filter one file's
    lines into `sink` (`.append`, word tuples); returns the number too short."""
    from lmshrink.reporting.progress import track

    too_short = 0
    show = progress and len(lines) >= _PROGRESS_MIN_TEXTS
    for line in track(lines, f"reading {name}", unit="texts", show=show, transient=True):
        if cfg.split_sentences:
            candidates = _sentences(line, cfg.clean_markup)
        else:
            candidates = [_clean(line, cfg.clean_markup)]
        for sentence in candidates:
            words = split_words(sentence)
            if len(words) < max(cfg.min_words, 1):
                too_short += 1
                continue
            sink.append(tuple(words[: cfg.max_words] if cfg.max_words else words))
    return too_short


def _clean(text: str, clean_markup: bool) -> str:
    return clean_text(text) if clean_markup else text.strip()


def _sentences(text: str, clean_markup: bool) -> list[str]:
    paragraphs = _LINE_BREAK.split(text) if clean_markup else text.split("\n")
    return [
        sentence
        for paragraph in paragraphs
        for sentence in split_into_sentences(_clean(paragraph, clean_markup))
    ]


def _dedup(texts: Any) -> tuple[Any, int]:
    """`texts` (a list or a TextStore) without the examples equal to an earlier one, and how
    many went (`text_store.first_occurrences`: 8 bytes per example, not a set of them)."""
    keep = first_occurrences(texts)
    if len(keep) == len(texts):
        return texts, 0
    return _take(texts, keep), len(texts) - len(keep)


def _take(texts: Any, indices: Any) -> Any:
    """The examples at `indices`, as the same kind of sequence as `texts`."""
    if isinstance(texts, TextStore):
        return texts.take(indices)
    return [texts[int(i)] for i in indices]


def without_texts(
    transfer: TransferSet | WordTransferSet, splits: list[Split] | list[TokenSplit]
) -> TransferSet | WordTransferSet:
    """`transfer` without the examples that are also inputs of `splits` (the dev splits), so
    that a student never learns the teacher's answers on the texts it is scored on; the
    count dropped is `counts["dev_overlap_dropped"]`. A token task's sentences match by
    their words."""
    field = "words" if isinstance(transfer, WordTransferSet) else "texts"
    examples = getattr(transfer, field)
    held_out = {tuple(x) for split in splits for x in getattr(split, field)}
    keep = [i for i, x in enumerate(examples) if x not in held_out]
    kept = examples if len(keep) == len(examples) else _take(examples, keep)
    counts = _overlap_counts(transfer.counts, len(examples), len(kept))
    return dataclasses.replace(transfer, **{field: kept}, counts=counts)


def _overlap_counts(counts: dict[str, int], before: int, after: int) -> dict[str, int]:
    return {**counts, "dev_overlap_dropped": before - after, "total": after}
