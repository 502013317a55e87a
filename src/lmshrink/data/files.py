"""Reading a user's files: text lines and table rows, with an error a user can act on.

Every reader of user files (task splits, transfer files) takes its lines from `text_lines`
and its CSV/TSV/JSONL rows from `read_table`, so that a wrong encoding, a binary file, a
folder, a ragged row or a missing column is met the same way everywhere: a `DataError`
naming the file, the line and the fix, never a traceback.

Encodings: files are read as UTF-8, and a UTF-8 byte-order mark is dropped (Excel and
Notepad write one). A file that starts with a UTF-16 or UTF-32 byte-order mark (Excel's
"Unicode text" export) is read in that encoding, since the mark names it unambiguously.
Anything else is not guessed (a Latin-1 or Windows-1252 file, UTF-16 without a mark):
a wrong guess would silently change the texts, so it is an error naming the line and the
byte, with the command that converts the file.

Line ends: "\\n", "\\r\\n" and a lone "\\r" (old Mac files) all end a line, and each line is
yielded with its end kept, as `open(newline="")` gives them, which is what the csv module
needs to keep line breaks inside quoted fields.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lmshrink.errors import DataError

# GLUE's MNLI and QQP have very long fields; the csv module's default limit is too small.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

TABLE_SUFFIXES = (".tsv", ".csv", ".txt", ".jsonl", ".json")

# Longest first: the UTF-32-LE mark begins with the UTF-16-LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

# One line of bytes with its end: \n, \r\n or a lone \r (as open(newline="") splits).
_BYTE_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")

# Files often passed by mistake where text is expected, by their first bytes (none of these
# starts a text file: each holds a control character or a byte that is not UTF-8).
_ARCHIVES = (
    (b"\x1f\x8b", "a gzip-compressed file", "decompress it first (gunzip)"),
    (b"PK\x03\x04", "a zip archive or an Excel workbook", "extract it or save it as CSV"),
    (b"\xfd7zXZ\x00", "an xz-compressed file", "decompress it first (unxz)"),
)


def check_file(path: Path, hint: str) -> None:
    """Raise a `DataError` unless `path` is a file; `hint` is the fix ("check --train-file")."""
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except (OSError, ValueError) as exc:  # a name too long for the file system, say
        reason = getattr(exc, "strerror", None) or str(exc)
        raise DataError(f"{path}: not a usable path ({reason}); {hint}.") from None
    if is_dir:
        raise DataError(f"{path}: is a folder, not a file; {hint} (name a file inside it).")
    if not is_file:
        raise DataError(f"{path}: file not found; {hint}.")


def folder_problem(path: Path) -> str:
    """What keeps `path` from being a folder to read ("" if it is one), to finish a sentence
    that names it: "does not exist", "is a file, not a folder", ..."""
    try:
        if path.is_dir():
            return ""
        return "is a file, not a folder" if path.is_file() else "does not exist"
    except (OSError, ValueError) as exc:  # a name too long for the file system, say
        return f"is not a usable path ({getattr(exc, 'strerror', None) or exc})"


def text_lines(path: Path, hint: str = "check the path") -> Iterator[str]:
    """The lines of the text file `path`, decoded, each with its line end.

    Raises `DataError` (file, line, fix) for a missing file or a folder (`hint` says which
    option to check), an unreadable file, a compressed file, bytes that are not UTF-8, and
    NUL bytes (a binary file, or UTF-16 without a byte-order mark).
    """
    check_file(path, hint)
    try:
        f = path.open("rb")
    except OSError as exc:
        raise DataError(
            f"{path}: cannot be read ({exc.strerror}); check its permissions."
        ) from None
    with f:
        head = f.read(6)
        for magic, what, fix in _ARCHIVES:
            if head.startswith(magic):
                raise DataError(f"{path}: is {what}, not a text file; {fix}.")
        encoding = next((name for mark, name in _BOMS if head.startswith(mark)), "utf-8")
        f.seek(0)
        # The codecs drop the byte-order mark; newline="" splits at \n, \r\n and \r and
        # keeps the line ends (the fast path: the exact place of bad bytes is found again
        # only when there are some).
        codec = "utf-8-sig" if encoding == "utf-8" else encoding
        text = io.TextIOWrapper(f, encoding=codec, newline="")
        line_no = 0
        try:
            for line in text:
                line_no += 1
                if "\x00" in line:
                    raise DataError(_binary(path, line_no))
                yield line
        except UnicodeDecodeError:
            raise DataError(_find_bad_bytes(path, encoding)) from None
        finally:
            text.detach()  # `with f` closes the file


def _find_bad_bytes(path: Path, encoding: str) -> str:
    """The message for the first bytes of `path` that do not decode: a NUL byte (a binary
    file) or a byte that is not UTF-8, with its line and offset (read again, as bytes)."""
    if encoding != "utf-8":  # UTF-16/32 files are rare and small: decode the whole file
        data = path.read_bytes()
        try:
            data.decode(encoding)
        except UnicodeDecodeError as exc:
            line = data[: exc.start].decode(encoding, errors="replace").count("\n") + 1
            return (
                f"{path}: not valid {encoding.upper()} text at line {line}, byte {exc.start} "
                "(the file starts with a UTF-16/32 byte-order mark); re-save it as UTF-8."
            )
    with path.open("rb") as f:
        offset = line_no = 0
        # b"\n" and b"\r" are never part of a multi-byte UTF-8 character, so lines can be cut
        # before decoding; a carriage return not followed by a line feed ends a line too.
        for raw in f:
            for piece in _BYTE_LINE.findall(raw):
                line_no += 1
                start = (
                    len(codecs.BOM_UTF8) if offset == 0 and piece.startswith(codecs.BOM_UTF8) else 0
                )
                if b"\x00" in piece:  # before decoding: a binary file is not "not UTF-8"
                    return _binary(path, line_no)
                try:
                    piece[start:].decode("utf-8")
                except UnicodeDecodeError as exc:
                    where = offset + start + exc.start
                    return _not_utf8(path, line_no, where, piece[start + exc.start])
                offset += len(piece)
    return f"{path}: not valid {encoding.upper()} text; convert the file to UTF-8."


def _not_utf8(path: Path, line: int, offset: int, byte: int) -> str:
    return (
        f"{path}: not valid UTF-8 text at line {line}, byte {offset} (0x{byte:02X}); convert "
        "the file to UTF-8, e.g. for a Latin-1 or Windows-1252 file: iconv -f cp1252 -t utf-8 "
        f"{path.name} > {path.stem}.utf8{path.suffix}"
        "."
    )


def _binary(path: Path, line: int) -> str:
    return (
        f"{path}, line {line}: holds a NUL byte, so it is a binary file or UTF-16 text without "
        "a byte-order mark, not UTF-8 text; check the path, or save the file as UTF-8 text."
    )


def shorten(value: object, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters, for quoting file contents in a message (a
    field may be megabytes long)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


# --- tables -----------------------------------------------------------------------------


def read_table(
    path: Path,
    columns: Sequence[str | int],
    has_header: bool,
    *,
    optional: Sequence[str | int] = (),
    hint: str = "check the path",
    names_fix: str = "pass the right names (--text-columns / --label-column)",
    headerless_fix: str = "",
    labels: Sequence[str] = (),
) -> Iterator[tuple[int, dict[str | int, Any]]]:
    """Yield (line number, {column: value}) for each data row of a CSV/TSV/JSONL file.

    `columns` are header names, or indices when `has_header` is false; `optional` columns
    (a test split's label) are read where present and left out of the row where absent.
    Every row must have as many fields as the header (or, without one, as the first row):
    a stray tab that shifts a column is an error naming the line, never a silent shift.
    `hint` is the fix for a missing file; `names_fix` for missing columns; `headerless_fix`,
    if given, is said when the header line looks like data (`labels`: known label values).
    """
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        check_file(path, hint)
        raise DataError(f"{path}: unsupported file type '{suffix}'; use .tsv, .csv or .jsonl.")
    if suffix in (".jsonl", ".json"):
        yield from _read_jsonl(path, columns, optional, hint, names_fix)
        return
    delimiter = "," if suffix == ".csv" else "\t"
    # GLUE TSVs hold bare quote characters inside fields, so quoting is off for TSV.
    quoting = csv.QUOTE_MINIMAL if suffix == ".csv" else csv.QUOTE_NONE
    # strict: a quote left open at the end of the file, or text after a closing quote, is
    # an error (the lenient reader would swallow the rest of the file into one field).
    reader = csv.reader(
        text_lines(path, hint), delimiter=delimiter, quoting=quoting, strict=suffix == ".csv"
    )
    rows = _rows(reader, path)
    if has_header:
        first = next(rows, None)
        if first is None:
            return
        line, header = first[0], [h.strip() for h in first[2]]
        missing = [c for c in columns if c not in header]
        # A few rows after the header tell a header from a data row (see _looks_like_data).
        later = [r for _, _, r in itertools.islice(rows, 50)] if missing else []
        if missing and headerless_fix and _looks_like_data(header, labels, later):
            raise DataError(
                f"{path}, line {line}: missing column(s) {missing}, and the first line "
                f"{shorten(header, 200)} looks like data, not a header; {headerless_fix}."
            )
        index = _header_index(path, line, header, columns, optional, names_fix)
        width: int | None = len(header)
        width_from = "the header has"
    else:
        index = {c: int(c) for c in [*columns, *optional]}
        width, width_from = None, ""
    need = max((index[c] for c in columns), default=0) + 1
    for start, end, row in rows:
        if width is None:  # no header: the first row sets the width
            width, width_from = len(row), f"line {start} has"
        if len(row) < need or len(row) != width:
            got = f"{len(row)} field(s) but "
            got += f"at least {need} are needed" if len(row) < need else f"{width_from} {width}"
            raise DataError(f"{path}, line {start}: {got}; {_ragged_fix(row, start, end, suffix)}.")
        yield start, {c: row[i] for c, i in index.items() if i < len(row)}


def _rows(reader: Any, path: Path) -> Iterator[tuple[int, int, list[str]]]:
    """(first line, last line, fields) of each non-blank row; a row spans several lines
    when a quoted CSV field holds line breaks."""
    last = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                problem = f"a quoted field opened on line {last + 1} is never closed"
            elif "expected after" in str(exc):
                problem = f"text follows a closing quote on line {reader.line_num}"
            else:
                problem = f"cannot be split into fields ({exc})"
            raise DataError(
                f"{path}, line {last + 1}: {problem}; close each quoted field, and double "
                'each quote character inside one ("").'
            ) from None
        start, last = last + 1, reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank lines separate nothing
        yield start, last, row


def _ragged_fix(row: list[str], start: int, end: int, suffix: str) -> str:
    """The likely cause of a row with the wrong number of fields, and its fix."""
    if suffix == ".csv" and (end > start or any("\n" in f or "\r" in f for f in row)):
        where = f"runs from line {start} to line {end}" if end > start else "is never closed"
        return (
            f"a quoted field {where}: close the quote that opens it, or double each quote "
            'character inside a field ("")'
        )
    if suffix == ".csv":
        return "quote each field that holds a comma, and check that no field is missing"
    return (
        "a text holds a stray tab (replace it with a space) or a field is missing; "
        "check the delimiter"
    )


def _header_index(
    path: Path,
    line: int,
    header: list[str],
    columns: Sequence[str | int],
    optional: Sequence[str | int],
    names_fix: str,
) -> dict[str | int, int]:
    """{column: field index} from the header line, or a DataError naming every column that
    is missing or given twice."""
    wanted = list(dict.fromkeys([*columns, *optional]))
    twice = [c for c in wanted if header.count(str(c)) > 1]
    if twice:
        raise DataError(
            f"{path}, line {line}: column(s) {twice} appear more than once in the header "
            f"{shorten(header, 200)}; rename the copies so that each name is unique."
        )
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(
            f"{path}, line {line}: missing column(s) {missing}; the header has "
            f"{shorten(header, 200)}; rename the columns or {names_fix}."
        )
    return {c: header.index(c) for c in wanted if c in header}


def _looks_like_data(header: list[str], labels: Sequence[str], later: list[list[str]]) -> bool:
    """Whether a first line that lacks the named columns is a data row rather than a header:
    it holds a known label, a number or a sentence (column names are short words), or one of
    its fields recurs in the same column of a later row (a name would not)."""
    for i, field in enumerate(header):
        if not field:
            continue
        if field in labels or len(field.split()) >= 3 or _is_number(field):
            return True
        if any(i < len(row) and row[i].strip() == field for row in later):
            return True
    return False


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's dict, refusing a repeated key (json keeps the last one silently)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _read_jsonl(
    path: Path,
    columns: Sequence[str | int],
    optional: Sequence[str | int],
    hint: str,
    names_fix: str,
) -> Iterator[tuple[int, dict[str | int, Any]]]:
    for line_no, line in enumerate(text_lines(path, hint), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            fix = (
                "this looks like one JSON array; write one object per line (JSON Lines)"
                if line.lstrip().startswith("[")
                else "each line must be one JSON object"
            )
            raise DataError(f"{path}, line {line_no}: not valid JSON ({exc.msg}); {fix}.") from None
        except _DuplicateKey as exc:
            raise DataError(
                f"{path}, line {line_no}: key {shorten(exc.key)} appears twice in the object; "
                "keep one."
            ) from None
        except RecursionError:
            raise DataError(
                f"{path}, line {line_no}: JSON nested too deeply; each line must be one flat "
                "JSON object."
            ) from None
        except ValueError:  # an integer of more than 4,300 digits (int's conversion limit)
            raise DataError(
                f"{path}, line {line_no}: not valid JSON (a number too long to read); fix the "
                "number or remove the row."
            ) from None
        if not isinstance(obj, dict):
            raise DataError(
                f"{path}, line {line_no}: expected a JSON object per line, got "
                f'{type(obj).__name__}; write each example as {{"text": ..., "label": ...}}.'
            )
        missing = [c for c in columns if c not in obj]
        if missing:
            raise DataError(
                f"{path}, line {line_no}: missing key(s) {missing}; the object has "
                f"{shorten(sorted(obj), 200)}; fix the row or {names_fix}."
            )
        row = {c: obj[c] for c in [*columns, *optional] if c in obj}
        for key, value in row.items():
            if value is None or isinstance(value, (dict, list)):
                raise DataError(
                    f"{path}, line {line_no}: key {key!r} holds {json.dumps(value)[:40]}, not a "
                    "text or a number; fix the row or remove it."
                )
        yield line_no, row
