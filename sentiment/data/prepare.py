"""From a data config to model-ready tensors: source (rows, labels, splits) -> vocab -> ids -> GloVe matrix."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from typing import Any

import numpy as np

from sentiment.data.batching import EncodedSplit, gather_docs  # noqa: F401  (gather_docs lived here)
from sentiment.data.fingerprint import data_fingerprints
from sentiment.config import DataConfig
from sentiment.errors import SentimentError
from sentiment.data.labels import IMDB_LABELS, LabelSpace
from sentiment.paths import cache_dir
from sentiment.data.sources import load_source
from sentiment.data.vocab import Vocab, build_vocab, extend_vocab, table_to_vocab_ids


@dataclass
class PreparedData:
    vocab: Vocab
    train: EncodedSplit
    valid: EncodedSplit
    test: EncodedSplit
    embeddings: np.ndarray | None = None  # [len(vocab), dim] initial embedding rows, from GloVe
    stats: dict = field(default_factory=dict)  # timings, cache hit, coverage: for the CLI to report
    extra: dict[str, EncodedSplit] = field(default_factory=dict)  # further named splits a caller asked for
    label_space: LabelSpace = field(default_factory=lambda: LabelSpace(IMDB_LABELS))
    membership: dict[str, np.ndarray] = field(default_factory=dict)  # each split's rows in its source's numbering
    unlabeled: EncodedSplit | None = None  # texts without labels (data.unlabeled), labels -1
    fingerprints: dict[str, dict] = field(default_factory=dict)  # each split's content digest (data.fingerprint)


def stratified_limit(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Positions of `limit` rows (in their original order) keeping each class's share: quotas by largest remainder,
    each class's rows drawn with `seed` (data.split_seed). All rows when there are no more than `limit`."""
    labels = np.asarray(labels)
    if limit >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * limit / len(labels)
    quota = np.floor(exact).astype(np.int64)
    for k in np.argsort(-(exact - quota), kind="stable")[: limit - int(quota.sum())]:
        quota[k] += 1
    rng = np.random.default_rng([seed, 1000])
    chosen = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


def prepare_data(cfg: DataConfig, vocab: Vocab | None = None, *, with_embeddings: bool = True,
                 embedding_seed: int = 0, indices: dict[str, np.ndarray] | None = None,
                 label_space: LabelSpace | None = None, with_unlabeled: bool = True,
                 token_hashes: bool = False) -> PreparedData:
    """Everything training needs. Pass the run's `vocab` (and `label_space`) to encode with them instead
    of building new ones (evaluation, resume); embeddings are only loaded for a new vocab. `embedding_seed`
    draws the random rows of words GloVe lacks: training passes run.seed, so they vary with the run's seed
    while the split (split_seed) stays put. `indices` (source rows of "train", "valid", "test" and any
    further names, which land in `extra`) replaces the configured split, for studies of splits.
    with_unlabeled: also encode data.unlabeled's texts (training; scoring passes False and never reads them).
    token_hashes: also give every split its token strings' hashes (EncodedSplit.hashes), for an n-gram branch."""
    t0 = time.perf_counter()
    data_dir = Path(cfg.data_dir)
    source = load_source(cfg, label_space, with_unlabeled=with_unlabeled)
    idx, membership = split_rows(cfg, source, indices)

    fingerprints = data_fingerprints(source.tokens, source.ids, source.offsets, source.labels,
                                     {n: idx[n] for n in ("train", "valid", "test") if n in idx},
                                     source.label_space.names, split_sources(cfg))
    gathered = {name: gather_docs(source.ids, source.offsets, docs) for name, docs in idx.items()}
    unlabeled_flat = gather_docs(source.ids, source.offsets, source.unlabeled) if len(source.unlabeled) else None
    new_vocab = vocab is None
    if new_vocab:
        # the vocab sees the training split (and the unlabeled texts) only: validation and test words count as
        # unknown (data.vocab_from: all_texts counts the training rows data.train_limit left out too)
        vocab_rows = gathered["train"][0]
        if cfg.vocab_from == "all_texts" and cfg.train_limit is not None:  # the rows train_limit left out too
            every_train_row = (source.splits if indices is None else indices)["train"]
            vocab_rows = gather_docs(source.ids, source.offsets, every_train_row)[0]
        counts = np.bincount(vocab_rows, minlength=len(source.tokens))
        if unlabeled_flat is not None:
            counts += np.bincount(unlabeled_flat[0], minlength=len(source.tokens))
        vocab = build_vocab(source.tokens, counts, cfg.vocab_max_size, cfg.vocab_min_freq)
    glove = None
    if new_vocab and cfg.glove_dim is not None and (with_embeddings or cfg.vocab_glove_extra):
        from sentiment.data.glove import glove_file, load_glove

        t1 = time.perf_counter()
        glove = load_glove(glove_file(data_dir, cfg.glove_dim), cache_dir(data_dir))
        glove_seconds = time.perf_counter() - t1
        trained_words = len(vocab)
        vocab = extend_vocab(vocab, glove.words, cfg.vocab_glove_extra)
    table_to_vocab = table_to_vocab_ids(source.tokens, vocab)
    splits = {name: EncodedSplit(ids=table_to_vocab[flat], offsets=offsets, labels=source.labels[idx[name]].copy())
              for name, (flat, offsets) in gathered.items()}
    unlabeled = None
    if unlabeled_flat is not None:
        unlabeled = EncodedSplit(ids=table_to_vocab[unlabeled_flat[0]], offsets=unlabeled_flat[1],
                                 labels=np.full(len(source.unlabeled), -1, np.int64))
    if token_hashes:  # the token table's strings hashed once; each split reads its tokens' hashes through it
        from sentiment.data.hashing import hash_tokens

        table_hashes = hash_tokens(source.tokens)
        for name, (flat, offsets) in gathered.items():
            splits[name].hashes, splits[name].hash_offsets = table_hashes[flat], offsets
        if unlabeled is not None:
            unlabeled.hashes, unlabeled.hash_offsets = table_hashes[unlabeled_flat[0]], unlabeled_flat[1]
    space = source.label_space
    stats = _split_stats(source.stats, splits, vocab, space, given=indices is not None)
    embeddings = None
    if glove is not None:
        stats["glove_extra_words"] = len(vocab) - trained_words
    if glove is not None and with_embeddings:
        from sentiment.data.glove import build_embedding_matrix

        t1 = time.perf_counter()
        # coverage counts the training words only: the extra words are GloVe's by construction
        embeddings, coverage = build_embedding_matrix(
            vocab.itos, glove, pad_index=vocab.pad_index, unk_init=cfg.glove_unk_init, seed=embedding_seed,
            token_counts=vocab.counts,
            specials=[vocab.pad_index, vocab.unk_index, *range(trained_words, len(vocab))],
        )
        stats.update(glove_seconds=glove_seconds + time.perf_counter() - t1,
                     glove_vocab_coverage=coverage.vocab_share, glove_token_coverage=coverage.token_share,
                     glove_skipped_lines=glove.skipped_lines)
    stats["prepare_seconds"] = time.perf_counter() - t0
    extra = {name: split for name, split in splits.items() if name not in ("train", "valid", "test")}
    return PreparedData(vocab, splits["train"], splits["valid"], splits["test"], embeddings, stats, extra, space,
                        membership, unlabeled, fingerprints)


def split_rows(cfg: DataConfig, source: Any, indices: dict[str, np.ndarray] | None
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Source rows of each split (data.train_limit applied), and the membership the run stores."""
    idx = source.splits if indices is None else indices
    membership = source.membership if indices is None else dict(indices)
    if cfg.train_limit is not None:
        keep = stratified_limit(source.labels[idx["train"]], cfg.train_limit,
                                cfg.split_seed if cfg.limit_seed is None else cfg.limit_seed)
        idx = {**idx, "train": idx["train"][keep]}
        membership = {**membership, "train": np.asarray(membership["train"])[keep]}
    if len(idx["train"]) == 0:
        raise SentimentError("the training split is empty: check data.valid_fraction and the data directory")
    if len(idx["valid"]) == 0:  # else every epoch scores 0% on nothing and the first one is kept as the best
        raise SentimentError(f"the validation split is empty, and the best epoch is chosen on it: "
                             f"{_empty_validation_cause(cfg, source)}")
    return idx, membership


def _empty_validation_cause(cfg: DataConfig, source: Any) -> str:
    """Why no row was carved for validation: no validation file rows, each class's share rounding to no row, or
    repeated texts (the copies of a text stay on one side, and none fits its class's share)."""
    given = {"files": cfg.valid_file, "hf": cfg.hf_valid_split}.get(cfg.dataset)
    if given:
        return f"the validation split {given} has no rows"
    pool = source.splits["train"]  # what validation was carved from (valid is empty)
    counts = np.bincount(source.labels[pool], minlength=source.label_space.num_classes)
    quota = np.round(cfg.valid_fraction * counts).astype(np.int64)
    largest = int(counts.max(initial=0))
    if quota.sum() == 0:
        needed = f"; a fraction above {0.5 / largest:.3g} carves one" if largest else ""
        return (f"data.valid_fraction={cfg.valid_fraction} of each class rounds to no row (classes of "
                f"{', '.join(f'{int(c):,}' for c in counts)} rows{needed}): raise data.valid_fraction")
    if cfg.dataset == "imdb":  # the movie split: a movie's reviews stay on one side
        return (f"data.valid_fraction={cfg.valid_fraction} asks for {int(quota.sum()):,} row(s), but the reviews of "
                "one movie stay on one side of the split and no movie's fit a class's share: raise "
                "data.valid_fraction or set data.valid_split=random")
    repeated = source.stats.get("duplicate_texts", 0)
    return (f"data.valid_fraction={cfg.valid_fraction} asks for {int(quota.sum()):,} row(s) "
            f"({', '.join(f'{int(q):,}' for q in quota)} per class), but the texts repeat ({repeated:,} row(s) repeat "
            "an earlier text) and all copies of a text stay on one side of the split, so none fits a class's share: "
            "remove the repeated texts or raise data.valid_fraction")


def _split_stats(source_stats: dict[str, Any], splits: dict[str, EncodedSplit], vocab: Vocab, space: LabelSpace,
                 given: bool) -> dict[str, Any]:
    """What prepare reports of the splits: sizes, classes, and the share of tokens read as <unk>."""
    stats = {**source_stats, "vocab_size": len(vocab), "train": len(splits["train"]), "valid": len(splits["valid"]),
             "test": len(splits["test"]), "labels": list(space.names),
             "class_counts": {name: np.bincount(split.labels, minlength=space.num_classes).tolist()
                              for name, split in splits.items() if name in ("train", "valid", "test")}}
    # words training never saw read as <unk>: what data.vocab_glove_extra (or a larger vocab) would change
    stats["unk_token_share"] = {name: float(np.mean(splits[name].ids == vocab.unk_index)) if len(splits[name].ids)
                                else 0.0 for name in ("valid", "test")}
    if given:
        stats["valid_split"] = "given"
    if space.binary:
        stats["valid_positive_share"] = float(splits["valid"].labels.mean())
    return stats


def split_sources(cfg: DataConfig) -> dict[str, str]:
    """What each split is read from, for messages: the file, the dataset, or IMDB's directory."""
    if cfg.dataset == "files":
        return {"train": str(cfg.train_file), "valid": str(cfg.valid_file or cfg.train_file),
                "test": str(cfg.test_file or cfg.train_file)}
    if cfg.dataset == "hf":
        return {n: str(cfg.hf_dataset) for n in ("train", "valid", "test")}
    imdb = str(Path(cfg.data_dir) / "aclImdb")
    return {"train": imdb, "valid": imdb, "test": imdb}
