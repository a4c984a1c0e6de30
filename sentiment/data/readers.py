"""Reading texts (and labels) from files and streams: CSV/TSV with a header, JSONL, Parquet, aclImdb-style
pos/neg directories, directories of .txt files, plain text one per line. The one set of readers behind
training on one's own data, `eval --data` and `predict --file` alike.

Decoding, one rule per kind of source, the same in every command:
- files (CSV, TSV, JSONL, plain text, standard input): strict UTF-8 (a BOM is dropped); a byte that is not
  UTF-8, a NUL byte, or a JSON lone surrogate ("\\ud83d", half of an emoji) is an error naming the file and
  line. A file is the user's data: it should be fixed, not silently learned from.
- Parquet (and Hugging Face datasets): Arrow's strings, which are UTF-8 by construction.
- directories of .txt files (pos/ and neg/ folders, unlabeled-text folders: the aclImdb layout, which
  IMDB's own reviews share): as IMDB is read, invalid bytes become U+FFFD and the files that had any are
  counted (Table.replaced) and reported, so that `eval --data aclImdb/test` matches `sentiment eval`.
Only regular files are read: a named pipe or a device would block or never end.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
import stat
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from sentiment.errors import SentimentError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
TABLE_SUFFIXES = (*FORMATS, ".parquet")


@contextmanager
def _long_csv_fields() -> Iterator[None]:
    """csv refuses fields over 128 KiB by default, but one long review (100,000 tokens) is bigger than that.
    The limit is process-wide, so it is raised only while a file is read, and restored after."""
    previous = csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def check_regular_file(path: Path) -> os.stat_result:
    """The file's stat, or one error: missing, a dangling symbolic link, a directory, or not a regular file."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise SentimentError(f"{path} is a symbolic link to {os.readlink(path)}, which does not exist") from None
        raise SentimentError(f"{path} not found") from None
    except OSError as e:
        raise SentimentError(f"cannot read {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise SentimentError(f"{path} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise SentimentError(f"{path} is not a regular file (a named pipe, socket or device): save the data to "
                             "a file first")
    return st


def _check_no_nul(raw: bytes, name: str | Path) -> None:
    nul = raw.find(b"\0")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise SentimentError(f"{name}: line {line} has a NUL byte: this is a binary (or UTF-16) file, "
                             "not UTF-8 text")


def read_bytes(path: Path) -> bytes:
    """A regular file's bytes, or one error naming it."""
    check_regular_file(path)
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise SentimentError(f"cannot read {path}: {e.strerror or e}") from None


def decode_strict(raw: bytes, name: str | Path) -> str:
    """A file's text by the files rule: UTF-8 (BOM dropped), else one error naming the line."""
    _check_no_nul(raw, name)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _not_utf8(name, raw) from None


def split_lines(text: str) -> list[str]:
    """Lines on \\n or \\r\\n only: str.splitlines() would also cut reviews at \\x0c, \\x85 or U+2028."""
    lines = text.replace("\r\n", "\n").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _as_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):  # JSON true/false, which str() would spell True/False
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def read_stream(raw: bytes, name: str = "standard input") -> list[str]:
    """Reviews from bytes read off a stream (stdin), one per line, decoded as files are."""
    text = decode_strict(raw, name)
    if not text.strip():
        raise SentimentError(f"no reviews: {name} is empty")
    return split_lines(text)


def read_texts(path: Path, text_column: str = "text") -> Table:
    """Texts without labels, from whatever the readers read: the text column of a .csv, .tsv, .jsonl or
    .parquet file; a pos/neg directory (pos/ then neg/, as `eval --data` reads it); a directory of .txt
    files (one text each, as aclImdb's train/unsup); any other file as plain text, one text per line.
    `predict --file` and data.unlabeled both read through it."""
    path = Path(path)
    if path.is_dir():
        if (path / "pos").is_dir() and (path / "neg").is_dir():
            return _read_pos_neg(path, labeled=False)
        return _read_txt_dir(path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return read_table(path, text_column, None)
    raw = read_bytes(path)
    text = decode_strict(raw, path)
    if not text.strip():
        raise SentimentError(f"{path} is empty")
    texts = split_lines(text)
    return Table(texts, None, list(range(1, len(texts) + 1)), str(path))


read_unlabeled = read_texts  # data.unlabeled's texts: the same reader as predict's


def _read_txt_dir(path: Path) -> Table:
    files = sorted(path.glob("*.txt"), key=_natural)
    if not files:
        raise SentimentError(f"{path} holds no .txt files (it is a directory without pos/ and neg/ folders too)")
    texts, replaced = _read_txt_files(files)
    return Table(texts, None, list(range(1, len(texts) + 1)), str(path), replaced)


def _read_txt_files(files: list[Path]) -> tuple[list[str], int]:
    """The texts of .txt files by the directories rule (bad bytes replaced), and how many had bad bytes."""
    texts, replaced = [], 0
    for f in files:
        raw = read_bytes(f)
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            texts.append(raw.decode("utf-8", errors="replace"))
            replaced += 1
    return texts, replaced


@dataclass
class Table:
    """Rows of a labeled (or unlabeled) file: the text of each row, its label as written in the file
    (None when no label column was asked for), and where each row is, for messages."""

    texts: list[str]  # "" where a row has no text (callers skip those and count them)
    labels: list[str] | None  # the label column's values as strings, never empty
    lines: list[int]  # 1-based line of each row in the file (row number for Parquet/datasets), for messages
    source: str  # the file (or dataset) name, for messages
    replaced: int = 0  # files of a directory whose invalid UTF-8 was replaced (the directories rule)

    def __len__(self) -> int:
        return len(self.texts)

    def where(self, i: int) -> str:
        return f"{self.source}: line {self.lines[i]}"


def read_table(path: Path, text_column: str = "text", label_column: str | None = "label") -> Table:
    """The texts (and labels, unless label_column is None) of a CSV/TSV, JSONL or Parquet file, or of a
    directory in the aclImdb layout (pos/ and neg/ folders of .txt reviews, labeled "pos"/"neg").

    Decoded by the module's rules (files strict, directories as IMDB). A missing label, a duplicate column
    name or a non-scalar JSON value is an error naming the line. Rows with no text are kept, as "", for the
    caller to count. Blank lines are not rows. Table.lines is the line where each row starts (the header is
    line 1); for Parquet and directories, which have no lines, it is the 1-based row number.
    """
    path = Path(path)
    if label_column is not None and label_column == text_column:
        raise SentimentError(f"the text column and the label column are both {text_column!r}: name the column "
                             "that holds the labels (data.label_column, --label-column)")
    if path.is_dir():
        return _read_pos_neg(path, labeled=label_column is not None)
    check_regular_file(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _parquet_table(path, text_column, label_column)
    kind = FORMATS.get(suffix)
    if kind is None:
        raise SentimentError(f"{path}: unknown format {suffix or '(no suffix)'}; use .csv, .tsv, .jsonl, "
                             ".parquet or a directory with pos/ and neg/ folders")
    raw = read_bytes(path)
    body = raw.removeprefix(codecs.BOM_UTF8)
    if not body or body.isspace():
        raise SentimentError(f"{path} is empty")
    _check_no_nul(raw, path)
    # Decoded as it is parsed: a 100 MB file never exists as one str (nor as StringIO's 4-byte chars).
    stream = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8-sig", newline="" if kind != "jsonl" else "\n")
    try:
        if kind == "jsonl":
            texts, labels, lines = _jsonl_columns(path, stream, text_column, label_column)
        else:
            with _long_csv_fields():
                texts, labels, lines = _csv_columns(path, stream, text_column, label_column, kind)
    except UnicodeDecodeError:
        raise _not_utf8(path, raw) from None
    if labels is not None:
        _check_labels(path, labels, lines, label_column, "line")
    return Table(texts, labels, lines, str(path))


def _not_utf8(path: str | Path, raw: bytes) -> SentimentError:
    """Where the first bad byte is: the streaming decoder only knows its offset within a chunk."""
    try:
        raw.decode("utf-8")  # not -sig: a BOM is valid UTF-8, so offsets stay the file's own
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        return SentimentError(f"{path}: line {line} is not valid UTF-8 (byte {raw[e.start]:#04x} at offset "
                              f"{e.start}); save the file as UTF-8")
    raise AssertionError("the streaming decoder failed on bytes that decode")


def _check_unique_columns(path: Path, names: list[str]) -> None:
    """`text,text,label` would silently read the first `text`: which one was meant is the user's to say."""
    seen = set()
    for name in names:
        if name and name in seen:
            raise SentimentError(f"{path}: the column name {name!r} appears twice in the header; rename one")
        seen.add(name)


def _is_blank(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def _csv_columns(path: Path, stream: io.TextIOWrapper, text_column: str, label_column: str | None,
                 kind: str) -> tuple[list[str], list[str | None] | None, list[int]]:
    # strict: an unclosed quote is an error, instead of silently swallowing the rest of the file
    reader = csv.reader(stream, delimiter="\t" if kind == "tsv" else ",", strict=True)
    last = 0  # the line the previous row ended on: the next row starts on the line after it
    try:
        for row in reader:
            last = reader.line_num
            if not _is_blank(row):
                header = [h.strip() for h in row]
                break
        else:
            raise SentimentError(f"{path} is empty")
        _check_unique_columns(path, header)
        for column in (text_column, label_column):
            if column is not None and column not in header:
                raise SentimentError(f"{path}: no column {column!r} (columns: {', '.join(map(repr, header))})")
        ti = header.index(text_column)
        li = header.index(label_column) if label_column is not None else ti
        need, width = max(ti, li), len(header)
        labeled = label_column is not None
        texts: list[str] = []
        labels: list[str | None] = []
        lines: list[int] = []
        # the hot loop of a million-row file: plain lists, no per-row objects beyond csv's own
        for row in reader:
            if len(row) > need:
                if len(row) > width:
                    raise _extra_fields(path, last + 1, len(row), width, kind)
                texts.append(row[ti])
                if labeled:
                    labels.append(row[li])
            elif _is_blank(row):
                last = reader.line_num
                continue
            else:  # a short row: what it lacks is empty (the label check names it)
                texts.append(row[ti] if ti < len(row) else "")
                if labeled:
                    labels.append(row[li] if li < len(row) else None)
            lines.append(last + 1)
            last = reader.line_num
    except csv.Error as e:
        reason = "a quoted field starts here and is never closed" if "unexpected end of data" in str(e) else str(e)
        raise SentimentError(f"{path}: line {last + 1} is not valid {kind.upper()} ({reason})") from None
    if not texts:
        raise SentimentError(f"{path} has a header but no rows")
    return texts, labels if labeled else None, lines


def _extra_fields(path: Path, line: int, fields: int, width: int, kind: str) -> SentimentError:
    """A row with more fields than the header: a text holding the delimiter, unquoted. Reading the first
    fields alone would cut every such text at its first comma, silently."""
    delimiter = "a tab" if kind == "tsv" else "a comma"
    return SentimentError(f"{path}: line {line} has {fields} fields, the header {width}: a text holding {delimiter} "
                          f"must be quoted (\"like, this\"); write the file with a CSV writer (or as JSONL)")


def _jsonl_columns(path: Path, stream: io.TextIOWrapper, text_column: str, label_column: str | None,
                   ) -> tuple[list[str], list[str | None] | None, list[int]]:
    texts: list[str] = []
    labels: list[str | None] = []
    lines: list[int] = []
    with_text = 0
    first: dict = {}
    for n, line in enumerate(stream, 1):
        if line.isspace():
            continue
        obj = _json_object(path, n, line)
        if not lines:
            first = obj
        text = obj.get(text_column)
        if text_column in obj:
            with_text += 1
            _check_scalar(path, n, text_column, text)
        texts.append(text if isinstance(text, str) else _as_str(text) or "")
        if label_column is not None:
            if label_column not in obj:
                raise SentimentError(f"{path}: line {n} has no field {label_column!r} "
                                     f"(fields: {', '.join(map(repr, obj)) or 'none'})")
            _check_scalar(path, n, label_column, obj[label_column])
            labels.append(_label_str(obj[label_column]))
        if "\\u" in line:  # only an escape can spell a lone surrogate: the common line costs one search
            _check_no_surrogate(path, n, texts[-1], labels[-1] if label_column is not None else None)
        lines.append(n)
    if not lines:
        raise SentimentError(f"{path} is empty")
    if not with_text:  # a misspelt column, rather than rows without text
        raise SentimentError(f"{path}: no line has a field {text_column!r} "
                             f"(fields of line {lines[0]}: {', '.join(map(repr, first)) or 'none'})")
    return texts, labels if label_column is not None else None, lines


def _json_object(path: Path, n: int, line: str) -> dict:
    """Line n of a JSONL file as the JSON object it must be, or one error naming the line."""
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise SentimentError(f"{path}: line {n} is not valid JSON ({getattr(e, 'msg', e)}); "
                             "expected one JSON object per line") from None
    if not isinstance(obj, dict):
        raise SentimentError(f"{path}: line {n} is a JSON {type(obj).__name__}, not an object; "
                             "expected one JSON object per line")
    return obj


def _check_scalar(path: Path, n: int, field: str, value: Any) -> None:
    """{"text": {"body": ...}} would otherwise train on a Python repr of the object."""
    if isinstance(value, (dict, list)):
        kind = "object" if isinstance(value, dict) else "array"
        raise SentimentError(f"{path}: line {n}: field {field!r} is a JSON {kind}, not text or a single value")


def _check_no_surrogate(path: Path, n: int, *values: str | None) -> None:
    """A lone surrogate ("\\ud83d": a tweet cut in the middle of an emoji) is valid JSON but not text: it
    cannot be encoded, and would fail deep inside the tokenizer."""
    for value in values:
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise SentimentError(f"{path}: line {n} holds a lone surrogate {value[e.start]!r} (half of a "
                                     "character cut in two, often an emoji): remove or complete it") from None


def _label_str(value: Any) -> str | None:
    """A label as it reads: 1.0 (JSON, or a float column) is "1" like the 1 it means; NaN is missing."""
    if isinstance(value, float):
        if value != value:
            return None
        if value.is_integer():
            return str(int(value))
    return _as_str(value)


def _check_labels(path: Path, labels: list[str | None], lines: list[int], column: str | None, unit: str) -> None:
    """Every row has a label: one without would otherwise fail later, far from the file, or be skipped."""
    empty = {v for v in set(labels) if v is None or not v.strip()}  # a handful of distinct labels: cheap
    if empty:
        i = next(i for i, v in enumerate(labels) if v in empty)
        raise SentimentError(f"{path}: {unit} {lines[i]}: empty label in column {column!r}")


def _parquet_table(path: Path, text_column: str, label_column: str | None) -> Table:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise SentimentError(f"{path}: reading Parquet needs pyarrow: pip install 'sentiment[parquet]' (or pip install pyarrow)") from None
    if check_regular_file(path).st_size == 0:
        raise SentimentError(f"{path} is empty")
    wanted = [text_column] if label_column is None else [text_column, label_column]
    try:
        names = pq.read_schema(path).names
        _check_unique_columns(path, names)
        for column in wanted:
            if column not in names:
                raise SentimentError(f"{path}: no column {column!r} (columns: {', '.join(map(repr, names))})")
        table = pq.read_table(path, columns=list(dict.fromkeys(wanted)))  # only these: files can be wide
    except (pa.ArrowException, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SentimentError(f"{path}: not a readable Parquet file ({reason})") from None
    if not table.num_rows:
        raise SentimentError(f"{path} has no rows")
    texts = _parquet_values(path, table.column(text_column), text_column, _as_str)
    if table.column(text_column).null_count:
        texts = [t or "" for t in texts]
    labels = None
    lines = list(range(1, table.num_rows + 1))
    if label_column is not None:
        labels = _parquet_values(path, table.column(label_column), label_column, _label_str)
        _check_labels(path, labels, lines, label_column, "row")
    return Table(texts, labels, lines, str(path))


def _parquet_values(path: Path, column: Any, name: str, convert: Any) -> list:
    """A column as Python strings (None for nulls); string columns need no per-value conversion. Binary
    columns are decoded as UTF-8 (an invalid one is an error naming its row); lists, structs and maps are
    refused: their Python repr (`['a', 'b']`, `b'...'`) is not the text."""
    import pyarrow as pa

    kind = column.type
    if pa.types.is_dictionary(kind):  # a categorical column: its values are what it holds
        kind = kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return column.to_pylist()
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        values = column.to_pylist()
        for row, value in enumerate(values):
            if value is None:
                continue
            try:
                values[row] = value.decode("utf-8")
            except UnicodeDecodeError as e:
                raise SentimentError(f"{path}: row {row + 1}: column {name!r} holds bytes that are not UTF-8 text "
                                     f"(byte {value[e.start]:#04x} at offset {e.start})") from None
        return values
    if pa.types.is_nested(kind):
        what = ("maps" if pa.types.is_map(kind) else "structs" if pa.types.is_struct(kind)
                else "unions" if pa.types.is_union(kind) else "lists")
        raise SentimentError(f"{path}: column {name!r} holds {what} ({kind}), not text or a single value: "
                             "write one string per row")
    return [convert(v) for v in column.to_pylist()]


def _read_pos_neg(root: Path, labeled: bool) -> Table:
    if not ((root / "pos").is_dir() and (root / "neg").is_dir()):
        raise SentimentError(f"{root} is a directory without pos/ and neg/ folders (the aclImdb layout: "
                             "point at aclImdb/test, not aclImdb)")
    texts: list[str] = []
    labels: list[str] = []
    replaced = 0
    for folder in ("pos", "neg"):
        # bad bytes replaced exactly as corpus.py reads IMDB, so that the numbers match `sentiment eval`
        folder_texts, bad = _read_txt_files(pos_neg_files(root, folder))
        texts += folder_texts
        replaced += bad
        labels += [folder] * len(folder_texts)
    if not texts:
        raise SentimentError(f"{root}: pos/ and neg/ hold no .txt reviews")
    return Table(texts, labels if labeled else None, list(range(1, len(texts) + 1)), str(root), replaced)


def pos_neg_files(root: Path, folder: str) -> list[Path]:
    """The .txt files of root/folder in the order they are read (the content cache hashes them in it too)."""
    return sorted((Path(root) / folder).glob("*.txt"), key=_natural)


def _natural(path: Path) -> list:
    """10_3.txt after 9_2.txt: the order imdb.list_reviews gives, so that batches (and float sums)
    are the same as `sentiment eval` on IMDB."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]
