"""GloVe word vectors: find them on disk, load them fast (with a binary cache), build embedding matrices.

Parsing 400,000 lines of text is the slow part of every run that uses GloVe, so the loader parses the
numbers with whole-array numpy operations and keeps a binary copy (.npy + word list) in a cache
directory; a later load only reads that copy.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
import zlib
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import BinaryIO

import numpy as np

from sentiment.atomic import atomic_write
from sentiment.errors import DataMissingError, SentimentError

# Bump when the cache layout or parsing rules change, so old caches are not trusted.
_CACHE_FORMAT = 1
# Bytes read per block: big enough that per-block numpy overhead is negligible, small enough that the
# temporaries stay in reused memory (fresh large allocations page-fault and cost more than they save).
_BLOCK_BYTES = 1 << 20


@dataclass(eq=False, repr=False)
class GloVe:
    words: list[str]  # row i of vectors is words[i]
    vectors: np.ndarray  # float32 [n_words, dim]
    skipped_lines: int = 0  # lines with the wrong number of values (skipped and counted)
    _index: dict[str, int] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or len(self.words) != self.vectors.shape[0]:
            raise ValueError(
                f"GloVe needs one vector row per word, got {len(self.words)} words and shape {self.vectors.shape}"
            )

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def index(self) -> dict[str, int]:
        """word -> row; if a word repeats, its first row wins (as a reader of the file top-down would expect)."""
        if self._index is None:
            n = len(self.words)
            # Built from the end so earlier rows overwrite later duplicates.
            self._index = dict(zip(reversed(self.words), range(n - 1, -1, -1)))
        return self._index

    def __repr__(self) -> str:  # the default would print 400,000 words
        return f"GloVe(words={len(self.words)}, dim={self.dim}, skipped_lines={self.skipped_lines})"


@dataclass
class Coverage:
    vocab_found: int  # vocab entries (specials excluded) that have a GloVe vector
    vocab_total: int
    tokens_found: int  # corpus tokens (weighted by their counts) whose type has a GloVe vector
    tokens_total: int

    @property
    def vocab_share(self) -> float:
        return self.vocab_found / self.vocab_total if self.vocab_total else 0.0

    @property
    def token_share(self) -> float:
        return self.tokens_found / self.tokens_total if self.tokens_total else 0.0


def glove_file(data_dir: Path, dim: int) -> Path:
    """The downloaded GloVe 6B text file of this dimension, or DataMissingError naming the dims on disk."""
    folder = Path(data_dir) / "glove"
    path = folder / f"glove.6B.{dim}d.txt"
    if path.is_file():
        return path
    names = (re.fullmatch(r"glove\.6B\.(\d+)d\.txt", p.name) for p in folder.glob("glove.6B.*d.txt"))
    dims = sorted(int(m.group(1)) for m in names if m)
    available = ", ".join(f"{d}d" for d in dims) if dims else "none"
    raise DataMissingError(
        f"GloVe {dim}d vectors not found at {path} (on disk: {available}); "
        f"run `make download-data` or `sentiment download --glove-dim {dim}`"
    )


def load_glove(path: Path, cache_dir: Path | None = None, *, member: str | None = None) -> GloVe:
    """Load GloVe vectors from a text file or a zip holding one (member picks it if there are several).

    With cache_dir, the parsed vectors are kept there and reused while the source file is unchanged.
    """
    path = Path(path)
    if not path.is_file():
        raise DataMissingError(f"GloVe file not found: {path}; run `make download-data`")
    member = _zip_member(path, member) if path.suffix.lower() == ".zip" else None
    if cache_dir is None:
        return _parse_source(path, member)
    stem = _cache_stem(path, member)
    glove = _read_cache(Path(cache_dir), stem)
    if glove is None:
        glove = _parse_source(path, member)
        _write_cache(Path(cache_dir), stem, glove)
    return glove


def build_embedding_matrix(
    tokens: Sequence[str],
    glove: GloVe,
    *,
    pad_index: int | None = 0,
    unk_init: str = "random",
    init_std: float | None = None,
    seed: int = 0,
    token_counts: Sequence[int] | None = None,
    specials: Collection[int] = (),
) -> tuple[np.ndarray, Coverage]:
    """Row i is the GloVe vector of tokens[i], or an unk_init row ("zeros" or "random") if it has none.

    Random rows are normal with std init_std (default: the std of all GloVe values), seeded by seed.
    The pad row is always zeros. specials (indices) are left out of both coverage counts.
    """
    if unk_init not in ("zeros", "random"):
        raise SentimentError(f"unknown unk_init {unk_init!r}: use 'zeros' or 'random'")
    if init_std is not None and init_std < 0:
        raise SentimentError(f"init_std must be >= 0, got {init_std}")
    n = len(tokens)
    if token_counts is not None and len(token_counts) != n:
        raise ValueError(f"token_counts has {len(token_counts)} entries for {n} tokens")
    if pad_index is not None and not 0 <= pad_index < n:
        raise ValueError(f"pad_index {pad_index} is outside the {n} tokens")

    index = glove.index()
    rows = np.fromiter((index.get(t, -1) for t in tokens), dtype=np.int64, count=n)
    found = rows >= 0

    if unk_init == "random":
        std = float(glove.vectors.std(dtype=np.float64)) if init_std is None else float(init_std)
        # Draw every row (found ones are overwritten) so a row's random vector depends only on the seed
        # and its position, not on which other tokens happen to be in GloVe.
        matrix = np.random.default_rng(seed).normal(0.0, std, size=(n, glove.dim)).astype(np.float32)
    else:
        matrix = np.zeros((n, glove.dim), dtype=np.float32)
    matrix[found] = glove.vectors[rows[found]]
    if pad_index is not None:
        matrix[pad_index] = 0.0

    special_rows = np.asarray(list(specials), dtype=np.int64)
    if special_rows.size and not ((special_rows >= 0) & (special_rows < n)).all():
        raise ValueError(f"specials {sorted(specials)} must be indices into the {n} tokens")
    counted = np.ones(n, dtype=bool)
    counted[special_rows] = False
    weights = np.ones(n, dtype=np.int64) if token_counts is None else np.asarray(token_counts, dtype=np.int64)
    coverage = Coverage(
        vocab_found=int(np.count_nonzero(found & counted)),
        vocab_total=int(np.count_nonzero(counted)),
        tokens_found=int(weights[found & counted].sum()),
        tokens_total=int(weights[counted].sum()),
    )
    return matrix, coverage


# --- reading the source ---------------------------------------------------------------------------


def _zip_member(path: Path, member: str | None) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise SentimentError(f"cannot read {path} as a zip file ({exc}); delete it and download it again") from exc
    candidates = [n for n in names if fnmatch(n.rsplit("/", 1)[-1], "glove*.txt")]
    if member is not None:
        if member not in names:
            raise SentimentError(f"{path} has no member {member!r}; it has: {', '.join(candidates) or 'no glove*.txt'}")
        return member
    if len(candidates) != 1:
        found = ", ".join(candidates) if candidates else "none"
        raise SentimentError(f"{path} must hold exactly one glove*.txt to load without a member name (found: {found})")
    return candidates[0]


@contextmanager
def _open_binary(path: Path, member: str | None) -> Iterator[BinaryIO]:
    if member is None:
        with open(path, "rb") as f:
            yield f
        return
    try:
        with zipfile.ZipFile(path) as zf, zf.open(member) as f:
            yield f  # decompresses as it is read, so a 1 GB member is never held whole
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:  # a truncated or damaged download
        raise SentimentError(f"cannot read {member} from {path} ({exc}); delete it and download it again") from exc


def _parse_source(path: Path, member: str | None) -> GloVe:
    where = f"{path}:{member}" if member else str(path)
    try:
        with _open_binary(path, member) as f:
            glove = _parse_stream(f)
    except OSError as exc:  # permissions, a vanished network mount, ...
        raise SentimentError(f"cannot read {where}: {exc.strerror or exc}") from exc
    if glove is None:
        raise SentimentError(f"{where} has no valid GloVe line ('word v1 v2 ...'); delete it and download it again")
    return glove


def _line_blocks(stream: BinaryIO) -> Iterator[list[bytes]]:
    """Whole lines, a block at a time, so memory stays bounded whatever the file size."""
    tail = b""
    first = True
    while block := stream.read(_BLOCK_BYTES):
        if first and block.startswith(b"\xef\xbb\xbf"):  # a UTF-8 BOM would glue itself to the first word
            block = block[3:]
        first = False
        lines = (tail + block).split(b"\n")
        tail = lines.pop()
        if lines:
            yield lines
    if tail:
        yield [tail]


def _parse_stream(stream: BinaryIO) -> GloVe | None:
    words: list[str] = []
    arrays: list[np.ndarray] = []
    dim = 0
    skipped = 0
    for lines in _line_blocks(stream):
        values = None
        if dim:
            # Fast path for clean lines ("word v1 ... v{dim}"): no per-line checks in Python, the value
            # parser validates the layout of the whole block at once.
            block_words, _, rests = zip(*[line.partition(b" ") for line in lines])
            values = _parse_values(b"\n".join(rests), len(rests), dim)
        if values is None:
            block_words, values, dim, bad = _parse_block_slowly(lines, dim)
            skipped += bad
        if block_words:
            # One decode call is much faster than one per word; '\n' never occurs inside a line, and a
            # broken byte sequence cannot swallow it, so the split gives exactly one entry per word.
            words += b"\n".join(block_words).decode("utf-8", "replace").split("\n")
            arrays.append(values)
    if not words:
        return None
    vectors = np.concatenate(arrays).reshape(len(words), dim)
    return GloVe(words=words, vectors=vectors, skipped_lines=skipped)


def _parse_block_slowly(lines: list[bytes], dim: int) -> tuple[list[bytes], np.ndarray, int, int]:
    """Blocks the fast path refused: blank lines, '\\r\\n', wrong value counts, exponents, junk.

    Returns (words, values, dim, skipped lines); dim is set from the first line with values.
    """
    parts = [line.rstrip().partition(b" ") for line in lines]  # rstrip: '\r' and trailing spaces
    parts = [p for p in parts if p[0] or p[2]]  # blank lines are neither data nor errors
    if not dim:
        dim = next((p[2].count(b" ") + 1 for p in parts if p[2]), 0)
    good = [p for p in parts if p[2] and p[2].count(b" ") == dim - 1]
    skipped = len(parts) - len(good)
    rests = [p[2] for p in good]
    values = _parse_values(b"\n".join(rests), len(rests), dim) if rests else np.empty(0, np.float32)
    if values is None:
        try:  # numpy's C parser also takes exponents, nan and inf (slower, but these are rare)
            values = np.fromstring(b" ".join(rests), dtype=np.float32, sep=" ")
        except ValueError:
            values = None
        if values is None or values.size != len(rests) * dim:
            # Something is not a number (or a double space hides a missing one): find the lines.
            rows = [_parse_line(rest, dim) for rest in rests]
            keep = [i for i, row in enumerate(rows) if row is not None]
            skipped += len(rests) - len(keep)
            good = [good[i] for i in keep]
            values = np.concatenate([rows[i] for i in keep]) if keep else np.empty(0, np.float32)
    return [p[0] for p in good], values, dim, skipped


def _parse_line(rest: bytes, dim: int) -> np.ndarray | None:
    try:
        row = np.fromstring(rest, dtype=np.float32, sep=" ")
    except ValueError:
        return None
    return row if row.size == dim else None


# SWAR ("SIMD within a register"): 8 ASCII digits packed in a little-endian uint64, first byte the
# most significant digit, become their integer value in three multiply-shift steps. Bytes that are 0
# count as the digit 0, so masking off the bytes before a number acts as leading zeros.
_U = np.uint64
_LOW_NIBBLES, _PAIRS, _QUADS = _U(0x0F0F0F0F0F0F0F0F), _U(0x00FF00FF00FF00FF), _U(0x0000FFFF0000FFFF)
_MUL1, _MUL2, _MUL3 = _U(10 * 256 + 1), _U(100 * 65536 + 1), _U(10000 * 2**32 + 1)
_SH8, _SH16, _SH32 = _U(8), _U(16), _U(32)
# _KEEP[k]: mask keeping the last k bytes of a word (its high bytes); k > 8 keeps all 8.
_KEEP = np.array([((1 << 64) - 1) & ~((1 << (8 * max(8 - k, 0))) - 1) for k in range(17)], dtype=np.uint64)
_KEEP[0] = 0
_POW10 = 10.0 ** np.arange(17)


def _eight_digits(v: np.ndarray) -> np.ndarray:
    v = ((v & _LOW_NIBBLES) * _MUL1) >> _SH8
    v = ((v & _PAIRS) * _MUL2) >> _SH16
    return ((v & _QUADS) * _MUL3) >> _SH32


def _fields(b: np.ndarray, n_lines: int, dim: int) -> tuple[np.ndarray, ...] | None:
    """Where each of the n_lines * dim values of b starts and ends, where its point is (its end if it has
    none), the separators, and the number of points; None unless every line holds dim single-space-separated
    values with at most one point each."""
    n = n_lines * dim
    is_nl = b == 10
    is_sep = b == 32
    is_sep |= is_nl
    is_dot = b == 46
    events = np.flatnonzero(is_sep | is_dot)  # one scan finds separators and points together
    event_is_dot = is_dot[events]
    n_dots = int(np.count_nonzero(event_is_dot))
    if len(events) - n_dots != n - 1:
        return None
    ends = np.empty(n, np.int64)
    ends[-1] = len(b)
    if n_dots == n and event_is_dot[0::2].all() and not event_is_dot[1::2].any():
        # Usual case: point, separator, point, ... so every value has exactly one point.
        dots = events[0::2]
        ends[:-1] = events[1::2]
    else:  # some values without a point (e.g. "1")
        if (event_is_dot[1:] & event_is_dot[:-1]).any():  # two points in one value
            return None
        sep_at = np.flatnonzero(~event_is_dot)
        ends[:-1] = events[sep_at]
        # A value has a point if the event just before its end is one; else it acts as if it ended in one.
        before = np.empty(n, np.int64)
        before[:-1] = sep_at - 1
        before[-1] = len(events) - 1
        dots = np.where((before >= 0) & event_is_dot[before], events[before], ends) if n_dots else ends.copy()
    seps = ends[:-1]
    # Every dim-th separator must be a line end, and there must be no other line ends.
    if np.count_nonzero(is_nl) != n_lines - 1 or not is_nl[seps[dim - 1 :: dim]].all():
        return None
    starts = np.empty(n, np.int64)
    starts[0] = 0
    starts[1:] = seps + 1
    if not (ends > starts).all():  # an empty field (double space)
        return None
    return starts, ends, dots, seps, n_dots


def _parse_values(blob: bytes, n_lines: int, dim: int) -> np.ndarray | None:
    """The n_lines * dim numbers in blob (lines joined by '\\n', values by single spaces), as float32.

    Handles the numbers GloVe writes, -?digits[.digits], with whole-array numpy operations; returns
    None for anything else (a line with another value count, an empty field, an exponent, junk) so the
    caller can take a slower, general path. The result equals numpy's own parser bit for bit: the
    digits form an exact integer mantissa m < 2**53, and m / 10**k is one correctly rounded division.
    """
    b = np.frombuffer(blob, dtype=np.uint8)
    n = n_lines * dim
    if not n or not b.size:
        return None
    fields = _fields(b, n_lines, dim)
    if fields is None:
        return None
    starts, ends, dots, seps, n_dots = fields
    # '-' only as a value's first byte; every other byte a digit, separator or point.
    neg = b[starts] == 45
    n_neg = int(np.count_nonzero(neg))
    if np.count_nonzero(b == 45) != n_neg:
        return None
    if np.count_nonzero((b - np.uint8(48)) < 10) != len(b) - len(seps) - n_dots - n_neg:
        return None

    int_len = dots - starts - neg
    frac_len = ends - dots - 1
    np.maximum(frac_len, 0, out=frac_len)  # -1 for values without a point
    n_digits = int_len + frac_len
    max_int_len = int(int_len.max())
    if max_int_len > 8 or n_digits.max() > 16 or n_digits.min() < 1:  # 16 digits fit the two words
        return None
    # An unaligned uint64 view with a 1-byte stride reads the 8 bytes before any position, no copies.
    padded = np.zeros(len(b) + 16, np.uint8)
    padded[16:] = b
    words8 = np.ndarray(shape=(len(b) + 9,), dtype="<u8", buffer=padded, strides=(1,))
    frac_part = _eight_digits(words8[ends + 8] & _KEEP[frac_len])
    if frac_len.max() > 8:  # rare: the leading fraction digits are in the 8 bytes before those
        long = np.flatnonzero(frac_len > 8)
        frac_part[long] += _eight_digits(words8[ends[long]] & _KEEP[frac_len[long] - 8]) * _U(10**8)
    if max_int_len <= 1:  # GloVe's usual |v| < 10: the integer part is the one byte before the point
        int_part = np.where(int_len > 0, padded[dots + 15] - np.uint8(48), np.uint8(0))
    else:
        int_part = _eight_digits(words8[dots + 8] & _KEEP[int_len])
    # Exact integer mantissa (checked below), then one correctly rounded division.
    scale = _POW10[frac_len]
    values = frac_part.astype(np.float64)
    values += int_part * scale
    if n_digits.max() > 15 and values.max() >= 2**53:  # beyond exact doubles
        return None
    values /= scale
    np.copysign(values, 0.5 - neg, out=values)
    return values.astype(np.float32)


# --- binary cache ---------------------------------------------------------------------------------


def _cache_stem(path: Path, member: str | None) -> str:
    """File-name stem: one part per source path (to find stale versions), one per source version."""
    st = path.stat()
    source = f"{path.resolve()}\0{member or ''}"
    version = f"{st.st_size}:{st.st_mtime_ns}:{_CACHE_FORMAT}"
    src_key = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    ver_key = hashlib.sha256(version.encode()).hexdigest()[:16]
    return f"glove-{src_key}-{ver_key}"


def _cache_paths(cache_dir: Path, stem: str) -> tuple[Path, Path, Path]:
    return cache_dir / f"{stem}.npy", cache_dir / f"{stem}.words.txt", cache_dir / f"{stem}.json"


def _read_cache(cache_dir: Path, stem: str) -> GloVe | None:
    npy, txt, meta_path = _cache_paths(cache_dir, stem)
    if not meta_path.exists():  # the meta file is written last: without it the cache is incomplete
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        vectors = np.load(npy, mmap_mode=None, allow_pickle=False)
        words = txt.read_text(encoding="utf-8").split("\n")
        n, dim = int(meta["n_words"]), int(meta["dim"])
        if vectors.dtype != np.float32 or vectors.shape != (n, dim) or len(words) != n:
            raise ValueError("cache does not match its meta file")
        return GloVe(words=words, vectors=vectors, skipped_lines=int(meta["skipped_lines"]))
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        # Corrupt or truncated (json/unicode errors are ValueErrors): drop it and parse the source again.
        with suppress(OSError):
            for p in (meta_path, npy, txt):
                p.unlink(missing_ok=True)
        return None


def _write_cache(cache_dir: Path, stem: str, glove: GloVe) -> None:
    """Best effort: a cache that cannot be written (read-only or full disk) only costs speed next time."""
    npy, txt, meta_path = _cache_paths(cache_dir, stem)
    meta = {"format": _CACHE_FORMAT, "n_words": len(glove.words), "dim": glove.dim,
            "skipped_lines": glove.skipped_lines}
    try:
        # Each file appears under its final name only when complete, and the meta file, which marks the
        # cache as usable, comes last.
        atomic_write(npy, lambda f: np.save(f, glove.vectors, allow_pickle=False))
        atomic_write(txt, lambda f: f.write("\n".join(glove.words).encode("utf-8")))
        atomic_write(meta_path, lambda f: f.write(json.dumps(meta).encode()))
    except SentimentError:  # atomic_write's form of an OSError
        return
    # Older versions of the same source are dead weight (tens to hundreds of MB each), and so are temp
    # files of killed writers (unlinking one still being written only makes that writer skip caching).
    src_prefix = stem.rsplit("-", 1)[0] + "-"
    with suppress(OSError):
        for p in [*cache_dir.glob(f"{src_prefix}*"), *cache_dir.glob(f".{src_prefix}*.tmp")]:
            if not p.name.startswith(stem + "."):
                p.unlink(missing_ok=True)

