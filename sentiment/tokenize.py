"""Text cleaning and spaCy tokenization, fast enough for the whole of IMDB.

spaCy's tokenizer splits on spaces first and then handles each space-separated chunk on its own
(prefixes, suffixes, infixes, special cases). So we split every text on whitespace ourselves, tokenize
each *distinct* chunk once, and reuse the result: IMDB's 11M chunks have only ~400k distinct values.
Purely alphabetic chunks that are not special cases (most words) cannot be split by spaCy's rules, so
they skip the tokenizer entirely. Whitespace tokens are dropped. The result equals
`[t.text for t in nlp(text) if not t.is_space]` (checked by tests and scripts/bench_prepare.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import spacy

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)

_nlp = None
_special: frozenset[str] = frozenset()


def spacy_version() -> str:
    return spacy.__version__


def _tokenizer():
    global _nlp, _special
    if _nlp is None:
        _nlp = spacy.blank("en")  # rules only: no model download
        _special = frozenset(_nlp.tokenizer.rules)
    return _nlp.tokenizer


def clean_text(text: str) -> str:
    """IMDB reviews carry HTML line breaks (`<br /><br />`); they are whitespace, not words."""
    return _BREAK.sub(" ", text)


def split_chunks(text: str) -> list[str]:
    return clean_text(text).split()


def tokenize_chunks(chunks: Sequence[str], lowercase: bool = True) -> list[list[str]]:
    """Tokens of each chunk (a string without whitespace), with spaCy's English rules."""
    tokenizer = _tokenizer()
    out: list[list[str]] = []
    for chunk in chunks:
        if chunk.isalpha() and chunk not in _special:
            tokens = [chunk]
        else:
            tokens = [t.text for t in tokenizer(chunk) if not t.is_space]
        out.append([t.lower() for t in tokens] if lowercase else tokens)
    return out


class Tokenizer:
    """Tokenize single texts (prediction time) with a memo of chunks already seen."""

    def __init__(self, lowercase: bool = True, memo_size: int = 200_000):
        self.lowercase = lowercase
        self._memo: dict[str, list[str]] = {}
        self._memo_size = memo_size

    def __call__(self, text: str) -> list[str]:
        chunks = split_chunks(text)
        missing = [c for c in dict.fromkeys(chunks) if c not in self._memo]
        if missing:
            if len(self._memo) + len(missing) > self._memo_size:
                self._memo.clear()  # bounded memory on endless input streams; it is only a speed-up
            self._memo.update(zip(missing, tokenize_chunks(missing, self.lowercase)))
        memo = self._memo
        return [tok for c in chunks for tok in memo[c]]

    def pipe(self, texts: Iterable[str]) -> Iterable[list[str]]:
        for text in texts:
            yield self(text)
