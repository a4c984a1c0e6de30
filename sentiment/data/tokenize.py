"""Text cleaning and spaCy tokenization, fast enough for the whole of IMDB.

spaCy's tokenizer splits on spaces first and then handles each space-separated chunk on its own
(prefixes, suffixes, infixes, special cases). So we split every text on whitespace ourselves, tokenize
each *distinct* chunk once, and reuse the result: IMDB's 11M chunks have only ~400k distinct values.
Purely alphabetic chunks that are not special cases (most words) cannot be split by spaCy's rules, so
they skip the tokenizer entirely. Whitespace tokens are dropped. Each chunk gets exactly the tokens
`spacy.blank("en")` gives it alone; on whole texts spaCy's special-case matcher very rarely reaches across
a space (`x:) :)b`), which we deliberately don't reproduce: a chunk's tokens never depend on its neighbours.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)

_nlp = None
_special: frozenset[str] = frozenset()


def spacy_version() -> str:
    """spaCy's version without importing spaCy (~1 s): a warm cache is checked without it."""
    from importlib.metadata import version

    return version("spacy")


def _tokenizer():
    global _nlp, _special
    if _nlp is None:
        import spacy

        _nlp = spacy.blank("en")  # rules only: no model download
        _special = frozenset(_nlp.tokenizer.rules)
    return _nlp.tokenizer


def clean_text(text: str) -> str:
    """IMDB reviews carry HTML line breaks (`<br /><br />`); they are whitespace, not words."""
    return _BREAK.sub(" ", text)


# Social-media text: every URL and @mention is a word of its own that GloVe lacks and the vocab sees once.
# As placeholders they share one vector each (fastai's xx- style: alphabetic, so spaCy keeps them whole).
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@\w+")
URL_TOKEN, MENTION_TOKEN = "xxurl", "xxuser"

# Text exported from the web keeps HTML entities (tweets: `&amp;` in 4% of the airline tweets) and typographic
# quotes. spaCy splits `&amp;` into three tokens and `don’t` into `do` + `n’t`, which GloVe (ASCII `n't`)
# lacks; unescaped and made ASCII, they read as the words they are.
_ASCII_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201b": "'", "\u2032": "'",
                               "\u201c": '"', "\u201d": '"', "\u201f": '"', "\u2033": '"'})


@dataclass(frozen=True)
class Cleaning:
    """What happens to a text before it is split into chunks; part of every corpus cache key, and stored
    with each run (through its config) so prediction cleans as training did."""

    html_breaks: bool = True  # `<br />` is whitespace (IMDB)
    placeholders: bool = False  # URLs -> xxurl, @mentions -> xxuser (tweets)
    normalize: bool = False  # HTML entities unescaped (&amp; -> &), typographic quotes made ASCII (’ -> ')

    def __call__(self, text: str) -> str:
        if self.normalize:
            text = html.unescape(text).translate(_ASCII_QUOTES)
        if self.html_breaks:
            text = _BREAK.sub(" ", text)
        if self.placeholders:
            text = _MENTION.sub(f" {MENTION_TOKEN} ", _URL.sub(f" {URL_TOKEN} ", text))
        return text

    def key(self) -> str:
        # normalize joins the key only when on, so caches written before it existed stay valid
        return f"br={int(self.html_breaks)},ph={int(self.placeholders)}" + (",norm=1" if self.normalize else "")


IMDB_CLEANING = Cleaning()


def split_chunks(text: str, cleaning: Cleaning = IMDB_CLEANING) -> list[str]:
    return cleaning(text).split()


# Chunks per spaCy call. A Doc per chunk costs 3x more than the tokenizing itself, and the per-Doc
# overhead still shows at 256 chunks (40k distinct IMDB chunks: 1.86 s at 256, 1.48 s at 1024, 1.24-1.40 s
# at 4096-16384); a group of 8192 is a Doc of ~25k tokens, small next to the corpus.
_GROUP = 8192


def tokenize_chunks(chunks: Sequence[str], lowercase: bool = True) -> list[list[str]]:
    """Tokens of each chunk (a string without whitespace), with spaCy's English rules."""
    from spacy.attrs import IS_SPACE, LOWER, ORTH

    tokenizer = _tokenizer()
    strings = _nlp.vocab.strings
    attr = LOWER if lowercase else ORTH  # spaCy's LOWER is str.lower() of the token text
    out: list[list[str] | None] = [None] * len(chunks)
    pending = []
    for i, chunk in enumerate(chunks):
        if chunk.isalpha() and chunk not in _special:
            out[i] = [chunk.lower() if lowercase else chunk]
        else:
            pending.append(i)
    # Chunks are tokenized in groups joined by " \n ": each chunk is still a space-delimited span that spaCy
    # tokenizes on its own, and the newline token between them stops spaCy's special-case matcher from
    # reaching across chunks (with plain spaces, "a'' ''heart''" splits the second '' differently).
    # Tokens come back as string hashes in one array (Token objects would cost more than tokenizing).
    text_of: dict[int, str] = {}
    for start in range(0, len(pending), _GROUP):
        group = pending[start : start + _GROUP]
        arr = tokenizer(" \n ".join(chunks[i] for i in group)).to_array([attr, IS_SPACE])
        space = arr[:, 1].astype(bool)
        owner = np.cumsum(space)[~space]  # each separator starts the next chunk
        hashes = arr[~space, 0].tolist()
        if int(space.sum()) != len(group) - 1:  # never seen; stay exact anyway
            for i in group:
                out[i] = [t.lower_ if lowercase else t.text for t in tokenizer(chunks[i]) if not t.is_space]
            continue
        for h in set(hashes).difference(text_of):
            text_of[h] = strings[h]
        tokens = [text_of[h] for h in hashes]
        pos = 0
        for i, n in zip(group, np.bincount(owner, minlength=len(group)).tolist()):
            out[i] = tokens[pos : pos + n]
            pos += n
    return out  # type: ignore[return-value]


def init_tokenizer() -> None:
    """Load spaCy's rules now (before forking workers, so each one doesn't load them again)."""
    _tokenizer()


class ChunkMemo:
    """The tokens (or anything made of them, e.g. vocab ids) of each distinct whitespace chunk, computed once
    per batch of new chunks with tokenize_chunks: the one memo behind prediction-time tokenizing. Bounded:
    when a batch would overflow it, it starts over (it is only a speed-up; endless streams stay bounded)."""

    def __init__(self, lowercase: bool = True, size: int = 200_000, convert: Callable[[list[str]], Any] | None = None):
        self.lowercase = lowercase
        self.size = size
        self.convert = convert
        self.table: dict[str, Any] = {}

    def fill(self, chunks: Iterable[str]) -> dict[str, Any]:
        """The memo, holding every one of `chunks` (look them up in it right away: a later fill may clear it)."""
        distinct = dict.fromkeys(chunks)
        missing = [c for c in distinct if c not in self.table]
        if missing:
            if len(self.table) + len(missing) > self.size:
                self.table.clear()
                missing = list(distinct)
            tokens = tokenize_chunks(missing, self.lowercase)
            self.table.update(zip(missing, tokens if self.convert is None else map(self.convert, tokens)))
        return self.table


def into_table(table: dict[str, int], strings: list[str]) -> np.ndarray:
    """The one token-table remap: each string's id in `table` (int32), adding those it lacks in order of
    first appearance. Merging workers' chunk or token tables, files' token tables and unlabeled texts' all
    go through it."""
    setdefault = table.setdefault
    return np.fromiter((setdefault(t, len(table)) for t in strings), dtype=np.int32, count=len(strings))
