"""Where labeled text comes from, and how it is split: IMDB (the aclImdb layout), files (CSV, TSV, JSONL,
Parquet, or a pos/neg directory) and Hugging Face datasets.

`load_source(cfg)` gives every source's rows as token ids (cached), class indices in one label space, and
the rows of train, valid and test. Downstream (vocab, GloVe, batches, the loop) never knows which source
it was. Files and datasets are tokenized as in-memory texts on all cores and cached by content, with their
labels, so a warm start reads neither the file nor spaCy.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sentiment.atomic import atomic_write_bytes
from sentiment.config import DataConfig
from sentiment.errors import SentimentError
from sentiment.data.labels import (IMDB_LABELS, LabelSpace, is_missing_label, merged_labels, missing_label_error,
                                   normalize_label, sort_labels)
from sentiment.paths import cache_dir
from sentiment.data.readers import Table, check_regular_file, pos_neg_files, read_bytes, read_table, read_texts
from sentiment.data.tokenize import TOKENIZER_VERSION, Cleaning, into_table, spacy_version

FILES_CACHE_VERSION = 3  # 3: labels normalised, strict file decoding, pos/neg keyed by content


@dataclass
class SourceData:
    """Every row of a source as token ids, with its class and the split it belongs to."""

    tokens: list[str]  # table of distinct tokens; ids index into it
    ids: np.ndarray  # int32, all rows' ids concatenated
    offsets: np.ndarray  # int64 [n_rows + 1]
    labels: np.ndarray  # int64 class index per row (-1: unlabeled)
    splits: dict[str, np.ndarray]  # "train", "valid", "test" -> row indices
    label_space: LabelSpace
    membership: dict[str, np.ndarray]  # each split's rows in its source's own numbering (data rows, from 0)
    stats: dict = field(default_factory=dict)
    unlabeled: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # rows of texts without labels


def cleaning_of(cfg: DataConfig) -> Cleaning:
    """How texts of this data config are cleaned before tokenizing: `<br />` is whitespace for IMDB
    (and wherever data.html_breaks says so); URL/@mention placeholders where data.placeholders says so;
    entities and quotes normalised where data.normalize_text says so."""
    html = cfg.dataset == "imdb" if cfg.html_breaks is None else cfg.html_breaks
    return Cleaning(html_breaks=html, placeholders=cfg.placeholders, normalize=cfg.normalize_text)


def load_source(cfg: DataConfig, label_space: LabelSpace | None = None, *, with_unlabeled: bool = True) -> SourceData:
    """The configured source. Pass a run's label space to index labels with it (evaluation, resume).
    with_unlabeled: also the texts of data.unlabeled (training needs them; scoring does not)."""
    source = _load_imdb(cfg) if cfg.dataset == "imdb" else _load_tables(cfg, label_space)
    if with_unlabeled and cfg.unlabeled:
        t0 = time.perf_counter()
        if cfg.dataset == "imdb":
            part, what = _imdb_unsup(cfg), "IMDB train/unsup"
        elif cfg.dataset == "files":
            part = _file_part(Path(cfg.unlabeled), cfg, labeled=False)
            what = part.source
        else:
            part = _hf_parts(cfg, unlabeled=True)["unlabeled"]
            what = part.source
        source = attach_unlabeled(source, part.tokens, part.ids, part.offsets)
        source.stats.update(unlabeled_source=what, unlabeled_from_cache=part.from_cache,
                            unlabeled_seconds=time.perf_counter() - t0, unlabeled_invalid_utf8_files=part.replaced)
    return source


def attach_unlabeled(source: SourceData, tokens: list[str], ids: np.ndarray, offsets: np.ndarray) -> SourceData:
    """The source with texts without labels appended as rows of class -1 (`source.unlabeled`). Empty texts, and
    any whose tokens equal a validation or test text's, are left out (and counted): training on a held-out
    text, even unlabeled, would flatter the figures chosen and reported on it."""
    table = {t: i for i, t in enumerate(source.tokens)}
    mapping = into_table(table, tokens)
    new_ids = mapping[ids] if len(ids) else np.zeros(0, np.int32)
    n, m = len(source.labels), len(offsets) - 1

    def text(flat: np.ndarray, offs: np.ndarray, i: int) -> bytes:
        return flat[offs[i]:offs[i + 1]].tobytes()

    held_out = {text(source.ids, source.offsets, int(i)) for name in ("valid", "test")
                for i in source.splits.get(name, ())}
    lengths = np.diff(offsets)
    keep, overlapping = [], 0
    for j in np.flatnonzero(lengths > 0).tolist():
        if text(new_ids, offsets, j) in held_out:
            overlapping += 1
        else:
            keep.append(j)
    all_ids = np.concatenate([source.ids, new_ids.astype(source.ids.dtype, copy=False)])
    all_offsets = np.concatenate([source.offsets, source.offsets[-1] + np.asarray(offsets[1:], np.int64)])
    labels = np.concatenate([source.labels, np.full(m, -1, np.int64)])
    stats = {**source.stats, "unlabeled": len(keep), "unlabeled_empty_skipped": int((lengths == 0).sum()),
             "unlabeled_held_out_skipped": overlapping}
    return SourceData(list(table), all_ids, all_offsets, labels, source.splits, source.label_space,
                      source.membership, stats, n + np.asarray(keep, np.int64))


# ---------------------------------------------------------------- IMDB
def _load_imdb(cfg: DataConfig) -> SourceData:
    from sentiment.data.corpus import load_corpus
    from sentiment.data.imdb import imdb_dir, movie_ids, validation_split

    t0 = time.perf_counter()
    data_dir = Path(cfg.data_dir)
    corpus, from_cache = load_corpus(data_dir, lowercase=cfg.lowercase, workers=cfg.resolved_workers(),
                                     cache_dir=cache_dir(data_dir))
    train_all = corpus.select("train")
    labels = corpus.labels[train_all]
    method = "random"
    if cfg.valid_split == "movie":
        movies = movie_ids(imdb_dir(data_dir), [corpus.names[i] for i in train_all])
        if movies is None:
            method = "random (movie split asked for, but train/urls_pos.txt or urls_neg.txt is missing)"
        else:
            method = "movie"
    if method == "movie":
        # no movie on both sides, as IMDB's own train and test share no movies
        train_rel, valid_rel = grouped_split(labels, np.asarray(movies), cfg.valid_fraction, cfg.split_seed,
                                             len(IMDB_LABELS))
    else:
        train_rel, valid_rel = validation_split(labels, cfg.valid_fraction, cfg.split_seed)
    splits = {"train": train_all[train_rel], "valid": train_all[valid_rel], "test": corpus.select("test")}
    stats = {"corpus_from_cache": from_cache, "corpus_seconds": time.perf_counter() - t0, "reviews": len(corpus),
             "invalid_utf8_files": corpus.invalid_utf8, "valid_split": method, "source": "IMDB"}
    return SourceData(corpus.tokens, corpus.ids, corpus.offsets, corpus.labels.astype(np.int64), splits,
                      LabelSpace(IMDB_LABELS), dict(splits), stats)


def _imdb_unsup(cfg: DataConfig) -> "_Part":
    """IMDB's 50,000 train/unsup reviews, tokenized (and cached) apart from the labeled ones."""
    from sentiment.data.corpus import load_corpus
    from sentiment.data.imdb import DataMissingError

    data_dir = Path(cfg.data_dir)
    try:
        corpus, from_cache = load_corpus(data_dir, lowercase=cfg.lowercase, only_unsup=True,
                                         workers=cfg.resolved_workers(), cache_dir=cache_dir(data_dir))
    except DataMissingError as e:
        raise SentimentError(f"data.unlabeled: unsup asks for IMDB's unlabeled reviews, but {e}") from None
    n = len(corpus)
    return _Part(corpus.tokens, corpus.ids, corpus.offsets, np.full(n, -1, np.int32), [], np.zeros(n, np.uint64),
                 np.arange(1, n + 1), "IMDB train/unsup", from_cache=from_cache, replaced=corpus.invalid_utf8)


# ---------------------------------------------------------------- files and datasets
@dataclass
class _Part:
    """One file (or dataset split) tokenized: what the cache holds."""

    tokens: list[str]
    ids: np.ndarray
    offsets: np.ndarray
    label_codes: np.ndarray  # int32 index into label_names per row; -1 without a label column
    label_names: list[str]  # the distinct label values as written, in order of first appearance
    hashes: np.ndarray  # uint64 hash of each row's raw text: exact duplicates share it
    lines: np.ndarray  # int64 line (or row number) of each row, for messages
    source: str
    from_cache: bool = False
    key: str = ""  # the cache key: what the part was made from, and how
    replaced: int = 0  # files of a directory whose invalid UTF-8 was replaced (readers' directories rule)

    def __len__(self) -> int:
        return len(self.hashes)

    def where(self, row: int) -> str:
        return f"{self.source}: line {int(self.lines[row])}"


def _part_from_table(table: Table, cfg: DataConfig, source: str) -> _Part:
    from sentiment.data.corpus import tokenize_texts

    n = len(table)
    if table.labels is None:
        codes, names = np.full(n, -1, np.int32), []
    else:
        index: dict[str, int] = {}
        setdefault = index.setdefault
        # "pos " and "pos" are one class: a stray space must not make a two-class file a three-class run
        codes = np.fromiter((setdefault(v.strip(), len(index)) for v in table.labels), dtype=np.int32, count=n)
        names = list(index)
    lines = np.asarray(table.lines, dtype=np.int64)
    # the texts are handed over, not kept: tokenize_texts empties the list once they are chunks (a 1M-row
    # file's texts are ~300 MB as Python strings); the labels and lines are arrays by now
    texts, table.texts, table.labels, table.lines = table.texts, [], None, []
    tokens, ids, offsets, hashes = tokenize_texts(texts, cfg.lowercase, cfg.resolved_workers(), cleaning_of(cfg),
                                                  consume=True)
    return _Part(tokens, ids, offsets, codes, names, hashes, lines, source, replaced=table.replaced)


def _settings_key(cfg: DataConfig, columns: tuple[str | None, ...]) -> str:
    return json.dumps({"v": FILES_CACHE_VERSION, "lowercase": cfg.lowercase, "spacy": spacy_version(),
                       "clean": cleaning_of(cfg).key(), "columns": columns, "tokenizer": TOKENIZER_VERSION})


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    check_regular_file(path)  # a named pipe would be read here, then again by the reader: a hang
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    except OSError as e:
        raise SentimentError(f"cannot read {path}: {e.strerror or e}") from None
    return h.hexdigest()


def _directory_hash(path: Path) -> str:
    """A pos/neg directory or a directory of .txt files, keyed by content like a file: the name and bytes of
    each file the readers would read. (Name, size and mtime would serve stale tokens after a same-size
    rewrite with the mtime kept.) IMDB's corpus cache, by contrast, is keyed by the name, size and mtime of
    each review (imdb.fingerprint): aclImdb is a checksummed download nobody edits, and hashing its 100,000
    files on every start would cost more than reading its cache. GloVe's cache is keyed the same way
    (size and mtime of the checksummed vectors file)."""
    h = hashlib.sha256()
    if (path / "pos").is_dir() and (path / "neg").is_dir():
        files = [(folder, f) for folder in ("pos", "neg") for f in pos_neg_files(path, folder)]
    else:
        files = [("", f) for f in sorted(path.glob("*.txt"))]
    for folder, f in files:
        data = read_bytes(f)
        h.update(f"{folder}/{f.name}\0{len(data)}\0".encode("utf-8", "surrogateescape"))
        h.update(data)
    return h.hexdigest()


def _cached_part(key_parts: str, cache: Path | None, build) -> _Part:
    """The part from the cache, or built by `build()` and cached."""
    path = None
    key = hashlib.sha256(key_parts.encode()).hexdigest()[:20]
    if cache is not None:
        path = cache / f"texts-{key}.npz"
        part = _load_part(path) if path.exists() else None
        if part is not None:
            part.key = key
            return part
    part = build()
    part.key = key
    if path is not None:
        _save_part(part, path)
    return part


def _pack(strings: list[str]) -> np.ndarray:
    return np.frombuffer("\n".join(strings).encode("utf-8", "surrogatepass"), dtype=np.uint8)


def _unpack(array: np.ndarray) -> list[str]:
    return array.tobytes().decode("utf-8", "surrogatepass").split("\n") if array.size else []


def _save_part(part: _Part, path: Path) -> None:
    buf = io.BytesIO()
    # label names are JSON: a label may hold a newline, which the token packing does not allow
    np.savez(buf, tokens=_pack(part.tokens), ids=part.ids, offsets=part.offsets, label_codes=part.label_codes,
             label_names=np.frombuffer(json.dumps(part.label_names).encode(), np.uint8), hashes=part.hashes,
             lines=part.lines, source=np.frombuffer(part.source.encode("utf-8", "surrogatepass"), np.uint8),
             replaced=np.array(part.replaced, np.int64))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def _load_part(path: Path) -> _Part | None:
    try:
        with np.load(path) as z:
            part = _Part(_unpack(z["tokens"]), z["ids"], z["offsets"], z["label_codes"],
                         json.loads(z["label_names"].tobytes().decode()), z["hashes"], z["lines"],
                         z["source"].tobytes().decode("utf-8", "surrogatepass"), from_cache=True,
                         replaced=int(z["replaced"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError):
        return None
    n = len(part.hashes)
    ok = (len(part.offsets) == n + 1 and part.offsets[-1] == len(part.ids) and len(part.label_codes) == n
          and len(part.lines) == n and (len(part.ids) == 0 or int(part.ids.max()) < len(part.tokens))
          and (n == 0 or int(part.label_codes.max()) < len(part.label_names)))
    return part if ok else None


def _file_part(path: Path, cfg: DataConfig, labeled: bool) -> _Part:
    path = Path(path)
    if not path.exists():
        raise SentimentError(f"{path} not found" if labeled else f"data.unlabeled: {path} not found")
    label_column = cfg.label_column if labeled else None
    content = _directory_hash(path) if path.is_dir() else _file_hash(path)
    key = f"file\0{content}\0{path.name}\0{_settings_key(cfg, (cfg.text_column, label_column))}"
    read = (lambda: read_table(path, cfg.text_column, label_column)) if labeled else (
        lambda: _unlabeled(path, cfg.text_column))
    part = _cached_part(key, cache_dir(Path(cfg.data_dir)), lambda: _part_from_table(read(), cfg, str(path)))
    part.source = str(path)  # a cache entry written for a copy elsewhere (same name and bytes) names that copy
    return part


def _unlabeled(path: Path, text_column: str) -> Table:
    try:
        return read_texts(path, text_column)
    except SentimentError as e:  # say which setting named the file
        raise SentimentError(f"data.unlabeled: {e}") from None


def _hf_parts(cfg: DataConfig, unlabeled: bool = False) -> dict[str, _Part]:
    from sentiment.data.hf import load_hf_tables

    tables, fingerprints = load_hf_tables(cfg, unlabeled=unlabeled)
    parts = {}
    for name, table in tables.items():
        label_column = None if name == "unlabeled" else cfg.label_column
        key = f"hf\0{fingerprints[name]}\0{_settings_key(cfg, (cfg.text_column, label_column))}"
        parts[name] = _cached_part(key, cache_dir(Path(cfg.data_dir)),
                                   lambda table=table: _part_from_table(table, cfg, table.source))
        parts[name].source = table.source  # the cache may hold it under a copy's path
    return parts


def _merge_tokens(parts: list[_Part]) -> tuple[list[str], list[np.ndarray]]:
    """One token table for all parts, and each part's ids renumbered into it."""
    if len(parts) == 1:
        return parts[0].tokens, [parts[0].ids]
    table: dict[str, int] = {}
    renumbered = []
    for part in parts:
        mapping = into_table(table, part.tokens)
        renumbered.append(mapping[part.ids] if len(part.ids) else part.ids)
    return list(table), renumbered


def _label_space(cfg: DataConfig, train: _Part) -> tuple[LabelSpace, dict[str, list[str]]]:
    """The run's classes, from the training labels normalised (labels.normalize_label) or data.labels, and
    which spellings were merged into one class (" Pos", "pos"; "1.0", "1")."""
    present = np.bincount(train.label_codes, minlength=len(train.label_names)) > 0
    found = [n for n, p in zip(train.label_names, present) if p]
    listed = LabelSpace(tuple(cfg.labels)).lookup() if cfg.labels is not None else {}
    for name in found:  # NaN, NA, null...: no class, unless data.labels names it as one
        if is_missing_label(name) and name not in listed and normalize_label(name) not in listed:
            raise _missing_label(train, name, cfg.label_column)
    merged = merged_labels(found)
    if cfg.labels is None:
        classes = list(dict.fromkeys(normalize_label(n) for n in found))
        if len(classes) < 2:
            raise SentimentError(f"{train.source}: every training row has the label {classes[0]!r}: a classifier "
                                 "needs at least two classes" if classes else f"{train.source}: no training rows")
        return LabelSpace(sort_labels(classes)), merged
    space = LabelSpace(tuple(cfg.labels))
    lookup = space.lookup()
    codes = {n: lookup.get(n, lookup.get(normalize_label(n), -1)) for n in found}
    stray = [n for n, i in codes.items() if i < 0]
    if stray:
        raise SentimentError(f"data.labels {list(space.names)} lacks {', '.join(map(repr, stray))}, found in "
                             f"{train.source}'s column {cfg.label_column!r}")
    absent = [n for i, n in enumerate(space.names) if i not in codes.values()]
    if absent:
        raise SentimentError(f"data.labels names {', '.join(map(repr, absent))}, which no training row of "
                             f"{train.source} has (labels there: {', '.join(map(repr, found))})")
    return space, merged


def _missing_label(part: _Part, name: str, column: str) -> SentimentError:
    """The error for the first row of `part` whose label is `name`, a missing value."""
    first = int(np.flatnonzero(part.label_codes == part.label_names.index(name))[0])
    return missing_label_error(part.where(first), name, column)


def _class_indices(part: _Part, space: LabelSpace, what: str, column: str = "") -> np.ndarray:
    """Class index of each row of a part, mapped as every command maps labels (LabelSpace.index); labels the
    space lacks are an error that names them and the first row that has one."""
    if not len(part.label_names):
        return np.full(len(part.label_codes), -1, np.int64)
    lookup = space.lookup()
    mapping = np.array([lookup.get(n, lookup.get(normalize_label(n), -1)) for n in part.label_names], dtype=np.int64)
    if (mapping < 0).any():
        unknown = [n for n, m in zip(part.label_names, mapping) if m < 0]
        first = int(np.flatnonzero(np.isin(part.label_codes, np.flatnonzero(mapping < 0)))[0])
        if is_missing_label(part.label_names[part.label_codes[first]]):
            raise missing_label_error(part.where(first), part.label_names[part.label_codes[first]], column)
        raise SentimentError(f"{part.where(first)}: label {unknown[0]!r} in the {what} split is not a training label "
                             f"({', '.join(map(repr, space.names))})"
                             + (f"; also {', '.join(map(repr, unknown[1:4]))}" if len(unknown) > 1 else ""))
    return mapping[part.label_codes]


def grouped_split(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int,
                  num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, carved) row indices: `fraction` of each class carved out, seeded, and rows of one group
    (exact duplicate texts) always on the same side. Groups are visited in a seeded order and one is
    carved while it keeps every class within its quota, so the carve is stratified to within a few rows."""
    n = len(labels)
    if n == 0 or fraction <= 0:
        return np.arange(n), np.zeros(0, np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    uniq, group = np.unique(groups, return_inverse=True)
    quota = np.round(fraction * np.bincount(labels, minlength=num_classes)).astype(np.int64).tolist()
    order = np.random.default_rng(seed).permutation(len(uniq))
    # each group's rows per class, as one [groups, classes] table: no Python loop over rows
    counts = np.bincount(group * num_classes + labels, minlength=len(uniq) * num_classes).reshape(-1, num_classes)
    single = counts.sum(axis=1) == 1
    single_class = counts.argmax(axis=1)
    taken = [0] * num_classes
    carved_groups = []
    single_list, class_list = single.tolist(), single_class.tolist()
    for g in order.tolist():
        if single_list[g]:  # the common case: a text that occurs once
            c = class_list[g]
            if taken[c] < quota[c]:
                taken[c] += 1
                carved_groups.append(g)
        else:
            row = counts[g].tolist()
            if all(t + k <= q for t, k, q in zip(taken, row, quota)):
                taken = [t + k for t, k in zip(taken, row)]
                carved_groups.append(g)
        if taken == quota:
            break
    carved_mask = np.zeros(len(uniq), bool)
    carved_mask[carved_groups] = True
    rows = carved_mask[group]
    return np.flatnonzero(~rows), np.flatnonzero(rows)


def _split_cache_path(cfg: DataConfig, parts: dict[str, _Part], space: LabelSpace) -> Path | None:
    """Where the carve of these parts with these settings is kept (a warm start reads it instead of carving)."""
    cache = cache_dir(Path(cfg.data_dir))
    if cache is None:
        return None
    key = json.dumps({"v": FILES_CACHE_VERSION, "parts": {n: p.key for n, p in parts.items()},
                      "labels": list(space.names), "test": cfg.test_fraction, "valid": cfg.valid_fraction,
                      "seed": cfg.split_seed})
    return cache / f"splits-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"


def _carve(cfg: DataConfig, parts: dict[str, _Part], order: list[str], rows: dict[str, np.ndarray],
           all_labels: np.ndarray, space: LabelSpace) -> tuple[dict[str, np.ndarray], int, int]:
    """The rows of train, valid and test (test carved first, then valid, where no file gives them), how many
    rows repeat an earlier row's text, and how many texts sit in more than one of the given split files."""
    all_hashes = np.concatenate([parts[n].hashes for n in order])
    carved = {}
    pool = rows["train"]
    if "test" not in parts and cfg.test_fraction > 0:
        keep, out = grouped_split(all_labels[pool], all_hashes[pool], cfg.test_fraction, cfg.split_seed,
                                  space.num_classes)
        pool, carved["test"] = pool[keep], pool[out]
    if "valid" not in parts:
        # the split seed, offset so valid is not drawn in test's order
        keep, out = grouped_split(all_labels[pool], all_hashes[pool], cfg.valid_fraction, cfg.split_seed + 1,
                                  space.num_classes)
        pool, carved["valid"] = pool[keep], pool[out]
    splits = {"train": pool, "valid": carved.get("valid", rows.get("valid")),
              "test": carved.get("test", rows.get("test", np.zeros(0, np.int64)))}
    straddling = 0
    if len(parts) > 1:  # exact duplicates across split files you gave (a carve never splits them)
        sides = [set(all_hashes[splits[n]].tolist()) for n in ("train", "valid", "test")]
        straddling = len((sides[0] & sides[1]) | (sides[0] & sides[2]) | (sides[1] & sides[2]))
    texts = np.concatenate([rows[n] for n in order])  # empty rows are counted apart, not as repeats of ""
    duplicated = len(texts) - len(np.unique(all_hashes[texts]))
    return splits, duplicated, straddling


def _save_splits(path: Path, splits: dict[str, np.ndarray], duplicated: int, straddling: int) -> None:
    buf = io.BytesIO()
    np.savez(buf, counts=np.array([duplicated, straddling], np.int64), **splits)
    atomic_write_bytes(path, buf.getvalue())


def _load_splits(path: Path | None, rows: int) -> tuple[dict[str, np.ndarray], int, int] | None:
    """A cached carve, if it is one of these `rows` rows (validated as _load_part validates a part: an entry
    that does not fit is carved again, never used)."""
    if path is None or not path.exists():
        return None
    try:
        with np.load(path) as z:
            duplicated, straddling = (int(v) for v in z["counts"])
            splits = {name: z[name] for name in ("train", "valid", "test")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    for split in splits.values():
        if split.ndim != 1 or split.dtype.kind not in "iu" or (len(split) and (split.min() < 0 or split.max() >= rows)):
            return None
    return splits, duplicated, straddling


def _load_tables(cfg: DataConfig, label_space: LabelSpace | None) -> SourceData:
    t0 = time.perf_counter()
    if cfg.dataset == "files":
        named = {"train": cfg.train_file, "valid": cfg.valid_file, "test": cfg.test_file}
        parts = {name: _file_part(Path(path), cfg, labeled=True) for name, path in named.items() if path}
    else:
        parts = _hf_parts(cfg)
    order = [name for name in ("train", "valid", "test") if name in parts]
    tokens, ids_list = _merge_tokens([parts[n] for n in order])
    train = parts["train"]
    if not (np.diff(train.offsets) > 0).any():
        raise SentimentError(f"{train.source}: every row's text (column {cfg.text_column!r}) is empty: check "
                             "data.text_column")
    space, merged = (label_space, {}) if label_space is not None else _label_space(cfg, train)
    labels = {name: _class_indices(parts[name], space, name, cfg.label_column) for name in order}

    # rows in the merged numbering, empty texts left out of every split (counted)
    base, rows, skipped = 0, {}, {}
    for name in order:
        lengths = np.diff(parts[name].offsets)
        rows[name] = base + np.flatnonzero(lengths > 0)
        skipped[name] = int((lengths == 0).sum())
        base += len(parts[name])
    all_labels = np.concatenate([labels[n] for n in order])
    split_cache = _split_cache_path(cfg, parts, space)
    cached = _load_splits(split_cache, sum(len(parts[n]) for n in order))
    if cached is not None:
        splits, duplicated, straddling = cached
    else:
        splits, duplicated, straddling = _carve(cfg, parts, order, rows, all_labels, space)
        if split_cache is not None:
            _save_splits(split_cache, splits, duplicated, straddling)
    if len(np.unique(all_labels[splits["train"]])) < 2:
        raise SentimentError(f"{train.source}: the training split holds a single class; a classifier needs two")

    starts = {}
    base = 0
    for name in order:
        starts[name] = base
        base += len(parts[name])
    membership = {}
    for name, split_rows in splits.items():
        owner = name if name in parts else "train"
        membership[name] = split_rows - starts[owner]
    offsets = np.zeros(base + 1, np.int64)
    np.cumsum(np.concatenate([np.diff(parts[n].offsets) for n in order]), out=offsets[1:])
    ids = np.concatenate(ids_list) if ids_list else np.zeros(0, np.int32)
    stats = {"corpus_from_cache": all(parts[n].from_cache for n in order), "corpus_seconds": time.perf_counter() - t0,
             "reviews": base, "source": ", ".join(parts[n].source for n in order),
             "valid_split": "given" if "valid" in parts else "carved",
             "empty_texts_skipped": sum(skipped.values()), "duplicate_texts": duplicated,
             "duplicates_across_splits": straddling, "labels_merged": merged,
             "invalid_utf8_files": sum(parts[n].replaced for n in order)}
    return SourceData(tokens, ids, offsets, all_labels, splits, space, membership, stats)
