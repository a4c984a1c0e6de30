"""Reading texts (and labels) from files and streams: CSV/TSV with a header, JSONL, Parquet, aclImdb-style
pos/neg directories, plain text one per line. Used by training on one's own data, `eval --data` and
`predict --file` alike."""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentiment.errors import SentimentError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}

# csv refuses fields over 128 KiB by default, but one long review (100,000 tokens) is bigger than that.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def decode(raw: bytes, name: str | Path) -> str:
    """UTF-8 text (invalid bytes become U+FFFD, as in training); NUL bytes mean it is not text at all."""
    _check_no_nul(raw, name)
    return raw.decode("utf-8-sig", errors="replace")  # -sig: drop the BOM that Excel puts in CSVs


def _check_no_nul(raw: bytes, name: str | Path) -> None:
    nul = raw.find(b"\0")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise SentimentError(f"{name}: line {line} has a NUL byte: this is a binary (or UTF-16) file, "
                             "not UTF-8 text")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SentimentError(f"{path} not found") from None
    except IsADirectoryError:
        raise SentimentError(f"{path} is a directory, not a file") from None
    except OSError as e:
        raise SentimentError(f"cannot read {path}: {e.strerror or e}") from None


def read_file(path: Path) -> str:
    path = Path(path)
    text = decode(_read_bytes(path), path)
    if not text.strip():
        raise SentimentError(f"{path} is empty")
    return text


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


@dataclass
class Record:
    where: str  # "row 3 (line 4)": for error messages
    values: tuple[str | None, ...]  # the requested columns, None where the row lacks one


def read_records(path: Path, columns: Sequence[str]) -> list[Record]:
    """The given columns of each row of a CSV, TSV or JSONL file (blank lines are not rows)."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise SentimentError(f"{path}: unknown format {path.suffix or '(no suffix)'}; use .csv, .tsv or .jsonl")
    text = read_file(path)
    records = _read_jsonl(path, text, columns) if kind == "jsonl" else _read_csv(path, text, columns, kind)
    if not records:
        raise SentimentError(f"{path} has a header but no rows")
    return records


def _read_csv(path: Path, text: str, columns: Sequence[str], kind: str) -> list[Record]:
    # strict: an unclosed quote is an error, instead of silently swallowing the rest of the file
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if kind == "tsv" else ",", strict=True)
    records: list[Record] = []
    try:
        header = [h.strip() for h in next(reader)]
        missing = [c for c in columns if c not in header]
        if missing:
            raise SentimentError(f"{path}: no column {missing[0]!r} (columns: {', '.join(map(repr, header))})")
        index = [header.index(c) for c in columns]
        while True:
            line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            if not row:
                continue  # a blank line
            values = tuple(row[i] if i < len(row) else None for i in index)
            records.append(Record(f"row {len(records) + 1} (line {line})", values))
    except csv.Error as e:
        raise SentimentError(f"{path}: line {reader.line_num} is not valid {kind.upper()} ({e})") from None
    return records


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


def _read_jsonl(path: Path, text: str, columns: Sequence[str]) -> list[Record]:
    records: list[Record] = []
    for n, line in enumerate(split_lines(text), 1):
        if not line.strip():
            continue
        obj = _json_object(path, n, line)
        missing = [c for c in columns if c not in obj]
        if missing:
            raise SentimentError(f"{path}: line {n} has no field {missing[0]!r} "
                                 f"(fields: {', '.join(map(repr, obj)) or 'none'})")
        records.append(Record(f"row {len(records) + 1} (line {n})", tuple(_as_str(obj[c]) for c in columns)))
    return records


def read_texts(path: Path, text_column: str = "text") -> list[str]:
    """Reviews from a file: one per line for plain text, else the text column of each row."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        return split_lines(read_file(path))
    return [r.values[0] or "" for r in read_records(path, [text_column])]


def read_stream(raw: bytes, name: str = "standard input") -> list[str]:
    """Reviews from bytes read off a stream (stdin), one per line."""
    text = decode(raw, name)
    if not text.strip():
        raise SentimentError(f"no reviews: {name} is empty")
    return split_lines(text)


def read_unlabeled(path: Path, text_column: str = "text") -> Table:
    """Texts without labels (data.unlabeled): a .txt file (one text per line), a directory of .txt files
    (one text each, as aclImdb's train/unsup), or the text column of a .csv, .tsv, .jsonl or .parquet file."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.txt"), key=_natural)
        if not files:
            raise SentimentError(f"data.unlabeled: {path} holds no .txt files")
        texts = [_read_bytes(f).decode("utf-8", errors="replace") for f in files]
        return Table(texts, None, list(range(1, len(texts) + 1)), str(path))
    if path.suffix.lower() in (".txt", ""):
        texts = split_lines(read_file(path))
        return Table(texts, None, list(range(1, len(texts) + 1)), str(path))
    return read_table(path, text_column, None)


@dataclass
class Table:
    """Rows of a labeled (or unlabeled) file: the text of each row, its label as written in the file
    (None when no label column was asked for), and where each row is, for messages."""

    texts: list[str]  # "" where a row has no text (callers skip those and count them)
    labels: list[str] | None  # the label column's values as strings, never empty
    lines: list[int]  # 1-based line of each row in the file (row number for Parquet/datasets), for messages
    source: str  # the file (or dataset) name, for messages

    def __len__(self) -> int:
        return len(self.texts)

    def where(self, i: int) -> str:
        return f"{self.source}: line {self.lines[i]}"


def read_table(path: Path, text_column: str = "text", label_column: str | None = "label") -> Table:
    """The texts (and labels, unless label_column is None) of a CSV/TSV, JSONL or Parquet file, or of a
    directory in the aclImdb layout (pos/ and neg/ folders of .txt reviews, labeled "pos"/"neg").

    Unlike read_texts this is strict: a training set with mangled bytes or a missing label should be
    fixed, not silently learned from. Rows with no text are kept, as "", for the caller to count. Blank
    lines are not rows. Table.lines is the line where each row starts (the header is line 1); for
    Parquet and directories, which have no lines, it is the 1-based row number.
    """
    path = Path(path)
    if path.is_dir():
        return _read_pos_neg(path, labeled=label_column is not None)
    if not path.exists():
        raise SentimentError(f"{path} not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _parquet_table(path, text_column, label_column)
    kind = FORMATS.get(suffix)
    if kind is None:
        raise SentimentError(f"{path}: unknown format {suffix or '(no suffix)'}; use .csv, .tsv, .jsonl, "
                             ".parquet or a directory with pos/ and neg/ folders")
    raw = _read_bytes(path)
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
            texts, labels, lines = _csv_columns(path, stream, text_column, label_column, kind)
    except UnicodeDecodeError:
        raise _not_utf8(path, raw) from None
    if labels is not None:
        _check_labels(path, labels, lines, label_column, "line")
    return Table(texts, labels, lines, str(path))


def _not_utf8(path: Path, raw: bytes) -> SentimentError:
    """Where the first bad byte is: the streaming decoder only knows its offset within a chunk."""
    try:
        raw.decode("utf-8")  # not -sig: a BOM is valid UTF-8, so offsets stay the file's own
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        return SentimentError(f"{path}: line {line} is not valid UTF-8 (byte {raw[e.start]:#04x} at offset "
                              f"{e.start}); save the file as UTF-8")
    raise AssertionError("the streaming decoder failed on bytes that decode")


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
        for column in (text_column, label_column):
            if column is not None and column not in header:
                raise SentimentError(f"{path}: no column {column!r} (columns: {', '.join(map(repr, header))})")
        ti = header.index(text_column)
        li = header.index(label_column) if label_column is not None else ti
        need = max(ti, li)
        labeled = label_column is not None
        texts: list[str] = []
        labels: list[str | None] = []
        lines: list[int] = []
        # the hot loop of a million-row file: plain lists, no per-row objects beyond csv's own
        for row in reader:
            if len(row) > need:
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
        texts.append(text if isinstance(text, str) else _as_str(text) or "")
        if label_column is not None:
            if label_column not in obj:
                raise SentimentError(f"{path}: line {n} has no field {label_column!r} "
                                     f"(fields: {', '.join(map(repr, obj)) or 'none'})")
            labels.append(_label_str(obj[label_column]))
        lines.append(n)
    if not lines:
        raise SentimentError(f"{path} is empty")
    if not with_text:  # a misspelt column, rather than rows without text
        raise SentimentError(f"{path}: no line has a field {text_column!r} "
                             f"(fields of line {lines[0]}: {', '.join(map(repr, first)) or 'none'})")
    return texts, labels if label_column is not None else None, lines


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
    if path.stat().st_size == 0:
        raise SentimentError(f"{path} is empty")
    wanted = [text_column] if label_column is None else [text_column, label_column]
    try:
        names = pq.read_schema(path).names
        for column in wanted:
            if column not in names:
                raise SentimentError(f"{path}: no column {column!r} (columns: {', '.join(map(repr, names))})")
        table = pq.read_table(path, columns=list(dict.fromkeys(wanted)))  # only these: files can be wide
    except (pa.ArrowException, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SentimentError(f"{path}: not a readable Parquet file ({reason})") from None
    if not table.num_rows:
        raise SentimentError(f"{path} has no rows")
    texts = _parquet_values(table.column(text_column), _as_str)
    if table.column(text_column).null_count:
        texts = [t or "" for t in texts]
    labels = None
    lines = list(range(1, table.num_rows + 1))
    if label_column is not None:
        labels = _parquet_values(table.column(label_column), _label_str)
        _check_labels(path, labels, lines, label_column, "row")
    return Table(texts, labels, lines, str(path))


def _parquet_values(column: Any, convert: Any) -> list:
    """A column as Python strings (None for nulls); string columns need no per-value conversion."""
    import pyarrow as pa

    values = column.to_pylist()
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return values
    return [convert(v) for v in values]


def _read_pos_neg(root: Path, labeled: bool) -> Table:
    if not ((root / "pos").is_dir() and (root / "neg").is_dir()):
        raise SentimentError(f"{root} is a directory without pos/ and neg/ folders (the aclImdb layout: "
                             "point at aclImdb/test, not aclImdb)")
    texts: list[str] = []
    labels: list[str] = []
    for folder in ("pos", "neg"):
        files = sorted((root / folder).glob("*.txt"), key=_natural)
        # replacing bad bytes exactly as corpus.py reads IMDB, so that the numbers match `sentiment eval`
        texts += [_read_bytes(f).decode("utf-8", errors="replace") for f in files]
        labels += [folder] * len(files)
    if not texts:
        raise SentimentError(f"{root}: pos/ and neg/ hold no .txt reviews")
    return Table(texts, labels if labeled else None, list(range(1, len(texts) + 1)), str(root))


def _natural(path: Path) -> list:
    """10_3.txt after 9_2.txt: the order imdb.list_reviews gives, so that batches (and float sums)
    are the same as `sentiment eval` on IMDB."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]
