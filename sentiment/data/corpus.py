"""The tokenized IMDB corpus, built once with both cores and cached on disk.

The cache holds every review as int32 ids into a table of distinct tokens (not a vocab: the vocab
depends on the training split and its settings, and is built from this in milliseconds). Its key
covers the review files (path, size, mtime), the tokenization settings and the spaCy version, so a
changed setting never reuses a stale cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import zipfile
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from sentiment.data.imdb import SPLIT_CODES, fingerprint, imdb_dir, list_reviews
from sentiment.data.tokenize import (IMDB_CLEANING, Cleaning, clean_text, init_tokenizer, into_table, spacy_version,
                                     tokenize_chunks)
from sentiment.atomic import atomic_write_bytes
from sentiment.errors import SentimentError
from sentiment.workers import run_in_workers

CACHE_VERSION = 2
_PARALLEL_MIN_DOCS = 2000  # below this, starting worker processes costs more than it saves


@dataclass
class TokenizedCorpus:
    tokens: list[str]  # table of distinct tokens; ids index into it
    ids: np.ndarray  # int32, every review's token ids, concatenated
    offsets: np.ndarray  # int64 [n_docs + 1]: review i is ids[offsets[i]:offsets[i + 1]]
    labels: np.ndarray  # int8: 1 pos, 0 neg, -1 unlabeled
    ratings: np.ndarray  # int8 stars
    splits: np.ndarray  # int8 codes of imdb.SPLIT_CODES
    names: list[str]  # file paths relative to the aclImdb directory
    invalid_utf8: int = 0  # review files decoded with replacement characters

    def __len__(self) -> int:
        return len(self.labels)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def doc(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    def select(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == SPLIT_CODES[split])


def _read_and_split(paths: list[str]) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    """Worker: read reviews, split into whitespace chunks, and send back only compact data:
    the distinct chunks and each review as int32 indices into them."""
    chunked, bad = [], 0
    for path in paths:
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:  # a directory or an unreadable file where a review should be
            raise SentimentError(f"cannot read review file {path}: {e.strerror or e}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            bad += 1
        chunked.append(clean_text(text).split())
    lengths = np.fromiter(map(len, chunked), dtype=np.int64, count=len(chunked))
    flat = list(chain.from_iterable(chunked))
    index = {c: i for i, c in enumerate(dict.fromkeys(flat))}
    ids = np.fromiter(map(index.__getitem__, flat), dtype=np.int32, count=len(flat))
    return list(index), ids, lengths, bad


def _tokenize_to_ids(args: tuple[list[str], bool]) -> tuple[str, np.ndarray, np.ndarray]:
    """Worker: tokens of each chunk as ids into a table local to this worker. Returns the table packed
    into one string ('\\n' between tokens, which never hold whitespace), each chunk's token count, and
    the flat ids: the main process then only merges two small tables instead of handling every token."""
    chunks, lowercase = args
    per_chunk = tokenize_chunks(chunks, lowercase)
    n_tok = np.fromiter(map(len, per_chunk), dtype=np.int64, count=len(per_chunk))
    flat = list(chain.from_iterable(per_chunk))
    table = {t: i for i, t in enumerate(dict.fromkeys(flat))}
    ids = np.fromiter(map(table.__getitem__, flat), dtype=np.int32, count=len(flat))
    return "\n".join(table), n_tok, ids


def _halves(items: list, parts: int) -> list[list]:
    size = max(1, -(-len(items) // parts))
    return [items[i : i + size] for i in range(0, len(items), size)] or [[]]


def _split_texts(bounds: tuple[int, int]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Worker: texts[start:end] (inherited through fork) cleaned and split into whitespace chunks, sent back
    as distinct chunks, each text as int32 indices into them, and an 8-byte hash of each raw text (exact
    duplicates are kept on one side of a split)."""
    texts, cleaning = _texts_job
    chunked = [cleaning(t).split() for t in texts[bounds[0] : bounds[1]]]
    hashes = np.fromiter((int.from_bytes(hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                                         "little") for t in texts[bounds[0] : bounds[1]]), dtype=np.uint64,
                         count=bounds[1] - bounds[0])
    lengths = np.fromiter(map(len, chunked), dtype=np.int64, count=len(chunked))
    flat = list(chain.from_iterable(chunked))
    index = {c: i for i, c in enumerate(dict.fromkeys(flat))}
    ids = np.fromiter(map(index.__getitem__, flat), dtype=np.int32, count=len(flat))
    return list(index), ids, lengths, hashes


_texts_job: tuple[list[str], Cleaning] | None = None  # forked workers inherit it
_TEXT_BLOCK = 50_000  # texts per worker task: bounds what one task holds and sends back


def tokenize_texts(texts: list[str], lowercase: bool = True, workers: int = 2, cleaning: Cleaning = IMDB_CLEANING,
                   consume: bool = False) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Tokenize in-memory texts into (token table, flat ids, offsets, 8-byte hash of each text), as
    tokenize_files does for files: each distinct chunk is tokenized once, on `workers` processes.
    consume: empty `texts` once they are split into chunks, so their memory is free for the rest."""
    global _texts_job
    workers = max(1, min(workers, os.cpu_count() or 1))
    init_tokenizer()
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    parallel = workers > 1 and method is not None and len(texts) >= _PARALLEL_MIN_DOCS
    blocks = [(i, min(i + _TEXT_BLOCK, len(texts))) for i in range(0, len(texts), _TEXT_BLOCK)] or [(0, 0)]
    _texts_job = (texts, cleaning)
    try:
        parts = run_in_workers(_split_texts, blocks, workers, method) if parallel else [_split_texts(b) for b in blocks]
    finally:
        _texts_job = None
    if consume:
        texts.clear()
    hashes = np.concatenate([p[3] for p in parts])
    tokens, ids, offsets = _tokenize_parts([p[:3] for p in parts], lowercase, workers, parallel, method or "spawn")
    return tokens, ids, offsets, hashes


def tokenize_files(paths: list[str], lowercase: bool = True, workers: int = 2) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    """Tokenize review files into (token table, flat ids, offsets, invalid-UTF-8 count)."""
    workers = max(1, min(workers, os.cpu_count() or 1))
    init_tokenizer()
    parallel = workers > 1 and len(paths) >= _PARALLEL_MIN_DOCS
    # fork: workers inherit the loaded modules (spaCy's rules included), so they start in milliseconds
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    if parallel:
        parts = run_in_workers(_read_and_split, _halves(paths, workers), workers, method)
    else:
        parts = [_read_and_split(paths)]
    bad = sum(p[3] for p in parts)
    tokens, ids, offsets = _tokenize_parts([p[:3] for p in parts], lowercase, workers, parallel, method)
    return tokens, ids, offsets, bad


def _tokenize_parts(parts: list, lowercase: bool, workers: int, parallel: bool,
                    method: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """From the workers' (distinct chunks, chunk ids, chunks per doc) to (token table, ids, offsets)."""
    # merge the workers' distinct chunks into one global numbering
    chunk_index: dict[str, int] = {}
    flat_parts, length_parts = [], []
    for uniq, ids, lengths in parts:
        flat_parts.append(into_table(chunk_index, uniq)[ids])
        length_parts.append(lengths)
    chunk_ids = np.concatenate(flat_parts) if flat_parts else np.zeros(0, np.int32)
    doc_chunks = np.concatenate(length_parts)
    chunks = list(chunk_index)
    del chunk_index, parts

    # Worker k tokenizes chunks k, k+W, k+2W...: chunks come in order of first appearance, so contiguous
    # halves would give the second worker most of the rare chunks, the ones spaCy must split (7.5 s
    # against 6.3 s); strided, both get the same mix.
    stride = workers if parallel else 1
    jobs = [(chunks[k::stride], lowercase) for k in range(stride)]
    if parallel:
        results = run_in_workers(_tokenize_to_ids, jobs, workers, method)
    else:
        results = [_tokenize_to_ids(j) for j in jobs]

    # one token table, and each chunk's tokens as a (start, count) slice of chunk_tokens, which holds the
    # workers' token ids one worker after the other
    table: dict[str, int] = {}
    token_parts = []
    n_tok = np.zeros(len(chunks), np.int64)
    chunk_start = np.zeros(len(chunks), np.int64)
    base = 0
    for k, (packed, counts, local_ids) in enumerate(results):
        local = packed.split("\n") if local_ids.size else []
        token_parts.append(into_table(table, local)[local_ids])
        n_tok[k::stride] = counts
        chunk_start[k::stride] = base + np.cumsum(counts) - counts
        base += len(local_ids)
    chunk_tokens = np.concatenate(token_parts) if token_parts else np.zeros(0, np.int32)

    # expand every review's chunks into token ids, vectorised; in int32 while positions fit (IMDB has 13M
    # tokens), which halves the memory traffic of these 11-13M-element arrays (1.28 s -> ~0.7 s here)
    total = int(np.dot(np.bincount(chunk_ids, minlength=len(chunks)), n_tok)) if len(chunk_ids) else 0
    index = np.int32 if total < 2**31 else np.int64
    per_pos = n_tok.astype(index)[chunk_ids]
    ends = np.cumsum(per_pos, dtype=index)
    gather = np.repeat(chunk_start.astype(index)[chunk_ids] - (ends - per_pos), per_pos)
    gather += np.arange(total, dtype=index)
    ids = chunk_tokens[gather] if total else np.zeros(0, np.int32)
    chunk_offsets = np.concatenate([[0], np.cumsum(doc_chunks)])
    token_offsets = np.concatenate([[0], ends])[chunk_offsets].astype(np.int64)
    return list(table), ids.astype(np.int32, copy=False), token_offsets


def _cache_key(files: list[tuple[str, int, int]], lowercase: bool) -> str:
    # Without the tokenizer's version (tokenize.TOKENIZER_VERSION): versions 1 and 2 tokenize IMDB's reviews
    # alike (no whitespace-free run over tokenize.MAX_CHUNK characters that is not all letters), so a cache of
    # either serves both. A version that changes IMDB's tokens must join this key.
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "lowercase": lowercase, "spacy": spacy_version(), "clean": "br"}).encode())
    h.update("".join(f"{name}\0{size}\0{mtime}\n" for name, size, mtime in files).encode())
    return h.hexdigest()[:20]


def _pack_strings(strings: list[str]) -> np.ndarray:
    return np.frombuffer("\n".join(strings).encode("utf-8"), dtype=np.uint8)


def _unpack_strings(array: np.ndarray) -> list[str]:
    return array.tobytes().decode("utf-8").split("\n") if array.size else []


def _save(corpus: TokenizedCorpus, path: Path) -> None:
    buf = io.BytesIO()
    np.savez(
        buf, ids=corpus.ids, offsets=corpus.offsets, labels=corpus.labels, ratings=corpus.ratings,
        splits=corpus.splits, tokens=_pack_strings(corpus.tokens), names=_pack_strings(corpus.names),
        invalid_utf8=np.array([corpus.invalid_utf8]),
    )
    atomic_write_bytes(path, buf.getvalue())


def _load(path: Path) -> TokenizedCorpus | None:
    """The cached corpus, or None when it is missing, truncated or inconsistent (then it is rebuilt)."""
    try:
        with np.load(path) as z:
            corpus = TokenizedCorpus(
                tokens=_unpack_strings(z["tokens"]), ids=z["ids"], offsets=z["offsets"], labels=z["labels"],
                ratings=z["ratings"], splits=z["splits"], names=_unpack_strings(z["names"]),
                invalid_utf8=int(z["invalid_utf8"][0]),
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError):
        return None
    n = len(corpus.labels)
    ok = (
        len(corpus.offsets) == n + 1 and corpus.offsets[-1] == len(corpus.ids) and len(corpus.names) == n
        and (len(corpus.ids) == 0 or int(corpus.ids.max()) < len(corpus.tokens))
    )
    return corpus if ok else None


def load_corpus(
    data_dir: Path, *, lowercase: bool = True, include_unsup: bool = False, only_unsup: bool = False,
    workers: int = 2, cache_dir: Path | None = None,
) -> tuple[TokenizedCorpus, bool]:
    """The tokenized corpus and whether it came from the cache. only_unsup: train/unsup's reviews alone, in a
    cache of their own, so asking for them does not tokenize the labeled reviews again."""
    root = imdb_dir(data_dir)
    reviews = list_reviews(root, include_unsup=include_unsup, only_unsup=only_unsup)
    cache_path = None
    if cache_dir is not None:
        key = _cache_key(fingerprint(reviews), lowercase)
        prefix = "unsup-only-" if only_unsup else "unsup-" if include_unsup else ""
        cache_path = Path(cache_dir) / f"corpus-{prefix}{key}.npz"
        if cache_path.exists():
            corpus = _load(cache_path)
            if corpus is not None and len(corpus) == len(reviews):
                return corpus, True
            cache_path.unlink(missing_ok=True)  # corrupt or truncated: rebuild it

    tokens, ids, offsets, bad = tokenize_files([r.path for r in reviews], lowercase, workers)
    corpus = TokenizedCorpus(
        tokens=tokens, ids=ids, offsets=offsets,
        labels=np.array([r.label for r in reviews], dtype=np.int8),
        ratings=np.array([r.rating for r in reviews], dtype=np.int8),
        splits=np.array([SPLIT_CODES[r.split] for r in reviews], dtype=np.int8),
        names=[r.name for r in reviews],
        invalid_utf8=bad,
    )
    if cache_path is not None:
        _save(corpus, cache_path)
    return corpus, False
