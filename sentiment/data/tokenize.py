"""Text cleaning and spaCy tokenization, fast enough for the whole of IMDB.

spaCy's tokenizer splits on spaces first and then handles each space-separated chunk on its own
(prefixes, suffixes, infixes, special cases). So we split every text on whitespace ourselves, tokenize
each *distinct* chunk once, and reuse the result: IMDB's 11M chunks have only ~400k distinct values.
Purely alphabetic chunks that are not special cases (most words) cannot be split by spaCy's rules, so
they skip the tokenizer entirely. Whitespace tokens are dropped. Each chunk gets exactly the tokens
`spacy.blank("en")` gives it alone; on whole texts spaCy's special-case matcher very rarely reaches across
a space (`x:) :)b`), which we deliberately don't reproduce: a chunk's tokens never depend on its neighbours.
A chunk of more than MAX_CHUNK characters that is not all letters never reaches spaCy, whose cost grows with the
square of a chunk's length (see TOKENIZER_VERSION): tokenizing takes time linear in a text's length.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sentiment.errors import SentimentError

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)

# What a text's tokens are, as a number recorded in every run (run.json) and export: a model is fed the tokens
# it was trained on only if they are made the same way.
#   1: spaCy on every whitespace chunk whole.
#   2: a chunk of more than MAX_CHUNK characters that is not all letters is split without spaCy, by
#      LONG_CHUNK_TOKEN: runs of letters, digits and _ (\w+) and each other character alone. spaCy's affix rules
#      take time quadratic in a chunk's length (one 100,000-character chunk took minutes; cut into 16-character
#      pieces it still took 0.4-0.9 s, one affix at a time); the expression takes milliseconds.
# Runs of version 1 are read as they are, without a word: versions 1 and 2 give the same tokens to every chunk
# of at most MAX_CHUNK characters (tests/test_tokenize.py checks ordinary text token for token against spaCy),
# and IMDB's 100,000 reviews hold no longer chunk that is not all letters (the longest: 91 characters), so a
# version-1 model only ever meets new tokens where it met rare, mostly <unk>, ones. A version this code does not
# know (a newer sentiment's) is refused: see check_text_pipeline.
TOKENIZER_VERSION = 2
READABLE_TOKENIZER_VERSIONS = (1, 2)
MAX_CHUNK = 100
LONG_CHUNK_TOKEN = re.compile(r"\w+|\W")  # on a chunk without whitespace: every character in exactly one token

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
# ... and at most this many characters: one spaCy call holds the GIL throughout (a server's other threads wait),
# and chunks of up to MAX_CHUNK characters made of affixes cost ~3 ms each, so a call of 8192 of them would hold
# it for half a minute. 16,384 characters: at most ~0.5 s; ordinary groups are ~2,300 chunks (IMDB: ~7 a chunk).
_GROUP_CHARS = 16_384


def _groups(pending: list[int], chunks: Sequence[str]) -> Iterable[list[int]]:
    group: list[int] = []
    chars = 0
    for i in pending:
        group.append(i)
        chars += len(chunks[i])
        if len(group) == _GROUP or chars >= _GROUP_CHARS:
            yield group
            group, chars = [], 0
    if group:
        yield group


def long_chunk_tokens(chunk: str, lowercase: bool = True) -> list[str]:
    """Tokens of a chunk of more than MAX_CHUNK characters that is not all letters (see TOKENIZER_VERSION)."""
    return LONG_CHUNK_TOKEN.findall(chunk.lower() if lowercase else chunk)


def _is_long(chunk: str) -> bool:
    return len(chunk) > MAX_CHUNK and not chunk.isalpha()  # all letters: one token, as ever (never spaCy's)


def tokenize_chunks(chunks: Sequence[str], lowercase: bool = True) -> list[list[str]]:
    """Tokens of each chunk (a string without whitespace), with spaCy's English rules; a long chunk's with
    long_chunk_tokens, so the time taken is linear in the text's length."""
    if max(map(len, chunks), default=0) <= MAX_CHUNK:
        return _tokenize_whole(chunks, lowercase)
    short = [i for i, c in enumerate(chunks) if not _is_long(c)]
    out: list[list[str]] = [long_chunk_tokens(c, lowercase) if _is_long(c) else [] for c in chunks]
    for i, tokens in zip(short, _tokenize_whole([chunks[i] for i in short], lowercase)):
        out[i] = tokens
    return out


def _tokenize_whole(chunks: Sequence[str], lowercase: bool) -> list[list[str]]:
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
    for group in _groups(pending, chunks):
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


def text_pipeline_version() -> dict[str, int]:
    """How texts become a model's inputs, as version numbers to record beside a model (run.json, an export's
    sidecar) and check with check_text_pipeline when it is loaded."""
    from sentiment.data.hashing import TOKEN_HASH_VERSION

    return {"tokenizer_version": TOKENIZER_VERSION, "token_hash_version": TOKEN_HASH_VERSION}


def check_text_pipeline(recorded: Mapping[str, object], what: str) -> None:
    """Refuse a model (`what`: a run directory, an exported model) whose recorded text pipeline this code cannot
    reproduce. A field that is absent was recorded before versions existed: version 1 (see TOKENIZER_VERSION for
    why tokenizer version 1 is read as it is)."""
    from sentiment.data.hashing import READABLE_TOKEN_HASH_VERSIONS

    for key, readable in (("tokenizer_version", READABLE_TOKENIZER_VERSIONS),
                          ("token_hash_version", READABLE_TOKEN_HASH_VERSIONS)):
        version = recorded.get(key, 1)
        if version not in readable:
            raise SentimentError(f"{what} was made with {key.replace('_', ' ')} {version!r}; this sentiment reads "
                                 f"{' and '.join(map(str, readable))}: its texts would not read as they were trained "
                                 "(use the sentiment that made it)")


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
