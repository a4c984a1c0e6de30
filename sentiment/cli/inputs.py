"""Where texts to score or explain come from: arguments, a file (any format the readers take), or standard input;
shared by `predict` and `explain`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

from rich.markup import escape

from sentiment.cli.app import err_console
from sentiment.errors import SentimentError


def _predict_inputs(texts: Optional[list[str]], file: Optional[Path], text_column: str) -> tuple[Any, str]:
    """The reviews to predict (an iterator: plain-text files and standard input are read as they are
    consumed) and what to call their source in an error."""
    from sentiment.data.readers import TABLE_SUFFIXES, check_regular_file, read_texts
    from sentiment.inference.predict import check_text_file, iter_lines

    if texts:
        fixed, replaced = _decoded_arguments(texts)
        if replaced:
            err_console.print(f"[yellow]note:[/] {replaced:,} argument{'s' if replaced != 1 else ''} had invalid "
                              "UTF-8 (decoded with replacement)", soft_wrap=True)
        return iter(fixed), "the arguments"
    if file is not None and str(file) != "-":
        if file.is_dir() or file.suffix.lower() in TABLE_SUFFIXES:
            table = read_texts(file, text_column)
            if table.replaced:
                err_console.print(f"[yellow]note:[/] {table.replaced:,} files of {escape(str(file))} had invalid "
                                  "UTF-8 (decoded with replacement, as IMDB is)")
            return iter(table.texts), str(file)
        check_regular_file(file)
        try:
            check_text_file(file)
            stream = open(file, "rb")
        except OSError as e:
            raise SentimentError(f"cannot read {file}: {e.strerror or e}") from None
        return _closing(iter_lines(stream, str(file)), stream), str(file)
    if sys.stdin.isatty():
        err_console.print("reading reviews from standard input, one per line (Ctrl-D to finish)…")
    return iter_lines(sys.stdin.buffer, "standard input"), "standard input"


def _closing(lines: Any, stream: Any) -> Any:
    try:
        yield from lines
    finally:
        stream.close()


def _decoded_arguments(texts: list[str]) -> tuple[list[str], int]:
    """Arguments as text: bytes that are not UTF-8 reach sys.argv as lone surrogates (Python's
    surrogateescape), which no tokenizer takes; they become U+FFFD, as in a directory of .txt files."""
    fixed, replaced = [], 0
    for text in texts:
        try:
            text.encode("utf-8")
            fixed.append(text)
        except UnicodeEncodeError:
            try:
                raw = text.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                raw = text.encode("utf-8", "replace")
            fixed.append(raw.decode("utf-8", "replace"))
            replaced += 1
    return fixed, replaced
