"""Reading texts (and labels) from files and streams: CSV/TSV with a header, JSONL, plain text one per
line. Used by training on one's own data, `eval --data` and `predict --file` alike."""

from __future__ import annotations

import csv
import io
import json
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
    nul = raw.find(b"\0")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise SentimentError(f"{name}: line {line} has a NUL byte: this is a binary (or UTF-16) file, "
                             "not UTF-8 text")
    return raw.decode("utf-8-sig", errors="replace")  # -sig: drop the BOM that Excel puts in CSVs


def read_file(path: Path) -> str:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SentimentError(f"{path} not found") from None
    except IsADirectoryError:
        raise SentimentError(f"{path} is a directory, not a file") from None
    except OSError as e:
        raise SentimentError(f"cannot read {path}: {e.strerror or e}") from None
    text = decode(raw, path)
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


def _read_jsonl(path: Path, text: str, columns: Sequence[str]) -> list[Record]:
    records: list[Record] = []
    for n, line in enumerate(split_lines(text), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise SentimentError(f"{path}: line {n} is not valid JSON ({getattr(e, 'msg', e)}); "
                                 "expected one JSON object per line") from None
        if not isinstance(obj, dict):
            raise SentimentError(f"{path}: line {n} is a JSON {type(obj).__name__}, not an object; "
                                 "expected one JSON object per line")
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
