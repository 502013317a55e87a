"""NER data: CoNLL column and JSONL readers, the NER tasks' splits, the `TokenSplit` record.

A file holds sentences of words, each with an entity tag in IOB1, IOB2 or BIOES; tags are
converted to IOB2 on read (data/tag_schemes.py), so everything downstream sees one scheme.

- CoNLL column files (.conll, .tsv, .txt, .iob, .bio): one word per line, `token ... tag`
  (the tag is the LAST column), tab-separated if the first line holds a tab, otherwise
  separated by whitespace; a blank line between sentences; `-DOCSTART-` lines are skipped.
  A file with one column everywhere is read as unlabeled words.
- JSONL (.jsonl, .json): one object per line with a `tokens` list and a `tags` list of the
  same length (no `tags` anywhere: unlabeled).

Files are read through `lmshrink.data.files` (`text_lines`), as every reader of a user's
file is: UTF-8 with or without a byte-order mark, UTF-16/32 with one, "\\n", "\\r\\n" or "\\r"
line ends; a folder, a binary or compressed file, or bytes that are not UTF-8 are errors.
Every malformed line raises a `DataError` naming the file, the line and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lmshrink.config import DataConfig
from lmshrink.data.files import check_file, folder_problem, shorten, text_lines
from lmshrink.data.tag_schemes import (
    OUTSIDE,
    check_iob2_labels,
    iob2_labels,
    label_types,
    parse_tag,
    to_iob2,
)
from lmshrink.data.tasks import (
    CUSTOM_NER,
    NER_TASK_NAMES,
    Task,
    canonical_name,
    custom_ner_task,
    get_task,
)
from lmshrink.errors import ConfigError, DataError

COLUMN_SUFFIXES = (".conll", ".tsv", ".txt", ".iob", ".bio")
JSONL_SUFFIXES = (".jsonl", ".json")
DOCSTART = "-DOCSTART-"


@dataclasses.dataclass
class TokenSplit:
    """The sentences of one split: `words[i]` are sentence i's words; `labels[i][j]` is the
    tag id of word j (IOB2, ids in the task's label order), or the whole list is None (no
    tags). `languages[i]` is sentence i's language in a multilingual task (else None).
    A transfer set's split holds its packed sentences (`TextStore`, rows read as tuples)."""

    task: str
    name: str
    source: str
    words: Sequence[Sequence[str]]
    labels: list[list[int]] | None
    languages: list[str] | None = None

    def __len__(self) -> int:
        return len(self.words)

    @property
    def num_words(self) -> int:
        return sum(len(w) for w in self.words)

    def fingerprint(self) -> str:
        """A short hash of exactly the sentences used (words, tags, languages), for metadata."""
        h = hashlib.sha256()
        for i, words in enumerate(self.words):
            h.update("\x1f".join(words).encode())
            h.update(b"\x1e" + (repr(self.labels[i]).encode() if self.labels else b""))
            if self.languages is not None:
                h.update(b"\x1d" + self.languages[i].encode())
        return h.hexdigest()[:16]

    def subset(self, n: int, seed: int) -> TokenSplit:
        """A fixed-seed random subset of `n` sentences (in file order), or self if n covers
        all (the same sentences `Split.subset` would pick for the same n and seed)."""
        if n <= 0 or n >= len(self):
            return self
        keep = sorted(random.Random(seed).sample(range(len(self)), n))
        labels = [self.labels[i] for i in keep] if self.labels is not None else None
        languages = [self.languages[i] for i in keep] if self.languages is not None else None
        return dataclasses.replace(
            self, words=[self.words[i] for i in keep], labels=labels, languages=languages
        )


# --- reading one file ---------------------------------------------------------------------


@dataclasses.dataclass
class TaggedFile:
    """One file's sentences: words, IOB2 tags (None: unlabeled), and where each came from."""

    path: Path
    words: list[list[str]]
    tags: list[list[str]] | None
    lines: list[int]  # the line of each sentence's first word
    line_per_word: bool  # column files: word j of sentence i is on line lines[i] + j

    def line_of(self, sentence: int, word: int) -> int:
        return self.lines[sentence] + (word if self.line_per_word else 0)


def read_tagged_file(path: str | Path, missing_hint: str = "check the path") -> TaggedFile:
    """Read a CoNLL column or JSONL file (see the module docstring), tags made IOB2."""
    path = Path(path)
    suffix = path.suffix.lower()
    check_file(path, missing_hint)  # a folder or a missing file is said as such first
    if suffix not in COLUMN_SUFFIXES + JSONL_SUFFIXES:
        raise DataError(
            f"{path}: unsupported NER file type '{suffix}'; use a column file "
            f"({', '.join(COLUMN_SUFFIXES)}) or JSONL (.jsonl) with tokens and tags."
        )
    # text_lines: encodings, line ends, binary and compressed files (lmshrink.data.files)
    read = _read_jsonl if suffix in JSONL_SUFFIXES else _read_columns
    words, raw_tags, lines = read(path, text_lines(path, missing_hint))
    if not words:
        raise DataError(
            f"{path}: no sentences; a column file needs one 'token ... tag' line per word "
            "and a blank line between sentences, a JSONL file one "
            '{"tokens": [...], "tags": [...]} object per line.'
        )
    tags = [to_iob2(t) for t in raw_tags] if raw_tags is not None else None
    return TaggedFile(path, words, tags, lines, suffix not in JSONL_SUFFIXES)


def _check_tag(path: Path, line: int, tag: str, where: str) -> None:
    try:
        parse_tag(tag)
    except ValueError:
        raise DataError(
            f"{path}, line {line}: tag {shorten(tag)} is not O or B-/I-/E-/S- plus an entity type; "
            f"fix the tag (IOB1, IOB2 and BIOES are read){where}."
        ) from None


_Read = tuple[list[list[str]], list[list[str]] | None, list[int]]


def _read_columns(path: Path, text: Iterable[str]) -> _Read:
    words: list[list[str]] = []
    tags: list[list[str]] = []
    lines: list[int] = []
    sentence: list[str] = []
    sentence_tags: list[str] = []
    sep: str | None = ""  # "" until the first word line decides: "\t" or None (whitespace)
    columns, first = 0, 0

    def end_sentence() -> None:
        if sentence:
            words.append(sentence.copy())
            tags.append(sentence_tags.copy())
            lines.append(number - len(sentence))
            sentence.clear()
            sentence_tags.clear()

    number = 0
    for number, raw in enumerate(text, start=1):
        line = raw.rstrip()
        if not line.strip() or line.split(None, 1)[0] == DOCSTART:
            end_sentence()
            continue
        if sep == "":
            sep = "\t" if "\t" in line else None
            columns, first = len(line.split(sep)), number
        fields = line.split(sep)
        if len(fields) != columns:
            split_by = "tabs" if sep else "whitespace (a token may not hold a space)"
            raise DataError(
                f"{path}, line {number}: {len(fields)} column(s) but line {first} has "
                f"{columns}; give every word line the same columns, separated by {split_by}, "
                "with the tag last."
            )
        token = fields[0].strip()
        if not token:
            raise DataError(f"{path}, line {number}: the token is empty; remove the line.")
        if columns > 1:
            tag = fields[-1].strip()
            _check_tag(path, number, tag, ", or check that the tag is the last column")
            sentence_tags.append(tag)
        sentence.append(token)
    number += 1  # a sentence that ends the file without a blank line ends here
    end_sentence()
    return words, (tags if columns > 1 else None), lines


def _read_jsonl(path: Path, text: Iterable[str]) -> _Read:
    words: list[list[str]] = []
    tags: list[list[str]] = []
    lines: list[int] = []
    labeled: bool | None = None  # decided by the first object
    first = 0
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        obj = _json_line(path, number, line)
        tokens = obj.get("tokens") if isinstance(obj, dict) else None
        if not isinstance(tokens, list) or not tokens:
            raise DataError(
                f"{path}, line {number}: expected an object with a non-empty 'tokens' list; "
                "fix or remove the line."
            )
        bad = [i for i, t in enumerate(tokens) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise DataError(
                f"{path}, line {number}: token {bad[0]} is {shorten(tokens[bad[0]])}, not a "
                "non-empty string; fix or remove it."
            )
        if labeled is None:
            labeled, first = "tags" in obj, number
        if labeled != ("tags" in obj):
            this, that = ("has no", "has") if labeled else ("has", "has no")
            raise DataError(
                f"{path}, line {number}: this object {this} 'tags' but the one on line "
                f"{first} {that}; tag every sentence or none."
            )
        if labeled:
            sentence_tags = obj["tags"]
            if not isinstance(sentence_tags, list) or len(sentence_tags) != len(tokens):
                count = len(sentence_tags) if isinstance(sentence_tags, list) else "no list of"
                raise DataError(
                    f"{path}, line {number}: {len(tokens)} tokens but {count} tags; give "
                    "exactly one tag per token."
                )
            for tag in sentence_tags:
                _check_tag(path, number, str(tag), "")
            tags.append([str(t) for t in sentence_tags])
        words.append(list(tokens))
        lines.append(number)
    return words, (tags if labeled else None), lines


def _json_line(path: Path, number: int, line: str) -> Any:
    """One JSONL line's value, or a DataError naming the line (never a traceback)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        reason = exc.msg
    except RecursionError:
        reason = "nested too deeply"
    except ValueError:  # an integer of more than 4,300 digits
        reason = "a number too long to read"
    raise DataError(
        f"{path}, line {number}: not valid JSON ({reason}); each line must be one "
        'object such as {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}.'
    )


# --- label sets and tag ids ---------------------------------------------------------------


def infer_ner_labels(path: str | Path, missing_hint: str = "check the path") -> tuple[str, ...]:
    """The IOB2 label set of the entity types in a tagged file: O first, then B-/I- of each
    type, sorted by type (so that the same file always gives the same ids)."""
    tagged = read_tagged_file(path, missing_hint)
    if tagged.tags is None:
        raise DataError(
            f"{tagged.path}: the file has no tags to infer the label set from; give each "
            "word's tag as the last column (JSONL: a 'tags' list), or pass --labels."
        )
    types = {parse_tag(tag)[1] for sentence in tagged.tags for tag in sentence} - {""}
    if not types:
        raise DataError(
            f"{tagged.path}: every tag is O, so there is no entity type to learn; check "
            "that the tag is the last column, or pass the label set with --labels."
        )
    return iob2_labels(types)


def _tag_ids(tagged: TaggedFile, labels: Sequence[str], hint: str) -> list[list[int]] | None:
    if tagged.tags is None:
        return None
    ids = {label: i for i, label in enumerate(labels)}
    out: list[list[int]] = []
    for s, sentence in enumerate(tagged.tags):
        try:
            out.append([ids[tag] for tag in sentence])
        except KeyError:
            j = next(j for j, tag in enumerate(sentence) if tag not in ids)
            kind = parse_tag(sentence[j])[1]
            raise DataError(
                f"{tagged.path}, line {tagged.line_of(s, j)}: entity type {kind!r} is not "
                f"in the task's types {label_types(labels)}; fix the tag{hint}."
            ) from None
    return out


# --- the NER tasks -----------------------------------------------------------------------


def is_ner_task(name: str) -> bool:
    """Whether `name` (any spelling get_task accepts) is one of the NER tasks."""
    return canonical_name(name) in NER_TASK_NAMES


def resolve_ner_task(cfg: DataConfig, languages: Sequence[str] | None = None) -> Task | None:
    """The NER task a data config names, or None when it names another kind of task.

    `languages` defaults to the config's `languages` field (WikiAnn's language list); for
    custom-ner the label set is `cfg.labels` (IOB2, in id order) or inferred from the
    training file (dev file if there is none).
    """
    if not cfg.task or not is_ner_task(cfg.task):
        return None
    name = canonical_name(cfg.task)
    if languages is None:
        languages = list(cfg.languages)
    if languages and name != "wikiann":
        raise ConfigError(f"--languages applies to the wikiann task only, not to {name}.")
    if name != CUSTOM_NER:
        return get_task(name, list(languages))
    if cfg.regression or cfg.text_columns:
        raise ConfigError(
            "custom-ner reads words and their tags; leave out --regression and "
            "--text-columns (they are for the sequence-level 'custom' task)."
        )
    if not cfg.train_file and not cfg.dev_file:
        raise ConfigError("the custom-ner task needs --train-file and/or --dev-file.")
    if cfg.labels:
        problem = check_iob2_labels(cfg.labels)
        if problem:
            raise ConfigError(
                f"--labels is not an IOB2 label set: {problem}; give O and a B-X and I-X "
                "for each entity type X (e.g. --labels O,B-PER,I-PER)."
            )
        labels = tuple(cfg.labels)
    else:
        which = "train" if cfg.train_file else "dev"
        labels = infer_ner_labels(cfg.train_file or cfg.dev_file, f"check --{which}-file")
    files = {"train": cfg.train_file, "dev": cfg.dev_file, "test": cfg.test_file}
    return custom_ner_task(labels, files)


def _task_folder(task: Task, data_dir: str) -> Path:
    """The task's folder: <data_dir>/<data_folder>, or data_dir itself if it is that one."""
    if not data_dir:
        raise ConfigError(
            f"the {task.name} task is read from local files; pass --data-dir with the folder "
            f"holding {task.data_folder}/ (e.g. --data-dir ../shared/data/ner)."
        )
    root = Path(data_dir)
    problem = folder_problem(root)
    if problem:
        raise DataError(
            f"data folder {root} {problem}; pass --data-dir pointing to the folder "
            f"holding {task.data_folder}/."
        )
    if (root / task.data_folder).is_dir():
        return root / task.data_folder
    if root.name == task.data_folder:
        return root
    raise DataError(
        f"{root}: no {task.data_folder}/ folder here; pass --data-dir pointing to the "
        f"folder that holds it."
    )


def _split_files(task: Task, split: str, data_dir: str) -> list[tuple[Path, str, str]]:
    """(path, language or "", hint if missing) of each file that makes up a split."""
    filename = task.splits[split].filename
    if not task.data_folder:  # custom-ner: the user's own file
        return [(Path(filename), "", f"check --{split}-file")]
    folder = _task_folder(task, data_dir)
    if not task.languages:
        return [(folder / filename, "", "check --data-dir")]
    try:
        here = sorted(p.name for p in folder.iterdir() if p.is_dir())
    except OSError:  # unreadable: each language's file is then reported as missing
        here = []
    hint = f"the languages in {folder} are {', '.join(here)}; fix --languages or --data-dir"
    return [(folder / lang / filename, lang, hint) for lang in task.languages]


def read_ner_split(task: Task, split: str, cfg: DataConfig) -> TokenSplit:
    """Read one split of an NER task (conll2003, wikiann, custom-ner): tags as ids in the
    task's label order; WikiAnn's languages one after the other, each sentence keeping its
    language."""
    if split not in task.splits:
        raise ConfigError(
            f"task {task.name} has no split '{split}'; it has {', '.join(task.splits)}."
        )
    hint = ", or pass the full label set with --labels" if task.name == CUSTOM_NER else ""
    words: list[list[str]] = []
    labels: list[list[int]] | None = []
    languages: list[str] = []
    sources = []
    for path, language, missing_hint in _split_files(task, split, cfg.data_dir):
        tagged = read_tagged_file(path, missing_hint)
        ids = _tag_ids(tagged, task.labels, hint)
        words.extend(tagged.words)
        if labels is not None and ids is not None:
            labels.extend(ids)
        else:  # one unlabeled file leaves the whole split unlabeled
            labels = None
        languages.extend([language] * len(tagged.words))
        sources.append(str(path))
    return TokenSplit(
        task.name,
        split,
        " + ".join(sources),
        words,
        labels,
        languages if task.languages else None,
    )


def tag_names(ids: Sequence[int], labels: Sequence[str]) -> list[str]:
    """Tag ids of one sentence as IOB2 tag strings (ids outside the label set read as O)."""
    return [labels[i] if 0 <= i < len(labels) else OUTSIDE for i in ids]
