"""Where a run goes wrong: its most confident wrong predictions on a split (or labeled file), explained; and the
words and n-grams that push each class most over a sample of texts.

Rows come from the run's own split as `sentiment eval` reads it (the same source, split and data checks), kept
as the run's tokens, or from a labeled file (`--data`) read as `eval --data` reads it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sentiment.data.batching import EncodedSplit
from sentiment.errors import SentimentError
from sentiment.inference.explain import DEFAULT_STEPS, Explainer, Explanation, check_steps, ngram_occurrences
from sentiment.inference.predict import Encoding, text_tokens

TOP_WORDS_MIN_COUNT = 5  # a word (or n-gram) is ranked once seen this many times in the sample
TOP_WORDS_SAMPLE = 500
TOP_WORDS_SEED = 0


@dataclass
class LabeledRows:
    """A split's (or file's) rows: scoring input, labels, and each row's tokens and text on demand."""

    split: EncodedSplit  # untruncated ids (and hashes for a branch), for scoring
    labels: np.ndarray
    tokens: Callable[[int], list[str]]
    text: Callable[[int], str]
    where: str  # what to call the rows in a message


@dataclass
class Mistake:
    row: int  # the row's position in the split (or the file's non-empty rows)
    true_label: str
    confidence: float  # the probability of the (wrong) predicted class
    explanation: Explanation


def _run_rows(run_dir: Path, run: Any, split: str, allow_changed_data: bool) -> LabeledRows:
    """A run's own split as eval reads it (data paths, fingerprints and membership checked), as tokens."""
    from sentiment.data.batching import gather_docs
    from sentiment.data.fingerprint import data_fingerprints
    from sentiment.data.prepare import split_rows, split_sources
    from sentiment.data.sources import load_source
    from sentiment.data.vocab import table_to_vocab_ids
    from sentiment.runs import check_data_fingerprints, check_data_paths, check_membership

    cfg = run.cfg
    check_data_paths(run_dir, cfg)
    source = load_source(cfg.data, run.label_space, with_unlabeled=False)
    idx, membership = split_rows(cfg.data, source, None)
    fingerprints = data_fingerprints(source.tokens, source.ids, source.offsets, source.labels,
                                     {n: idx[n] for n in ("train", "valid", "test") if n in idx},
                                     source.label_space.names, split_sources(cfg.data))
    check_data_fingerprints(run_dir, fingerprints, (split,), allow_changed=allow_changed_data)
    if not allow_changed_data:
        check_membership(run_dir, membership, (split,))
    rows = idx[split]
    if not len(rows):
        raise SentimentError(f"{run_dir}'s data has no {split} split rows: use --split valid or --data a labeled file")
    flat, offsets = gather_docs(source.ids, source.offsets, rows)
    encoded = EncodedSplit(ids=table_to_vocab_ids(source.tokens, run.vocab)[flat], offsets=offsets,
                           labels=source.labels[rows].copy())
    if cfg.model.ngrams is not None:
        from sentiment.data.hashing import hash_tokens

        encoded.hashes, encoded.hash_offsets = hash_tokens(source.tokens)[flat], offsets

    def tokens(i: int) -> list[str]:
        return [source.tokens[t] for t in flat[offsets[i]:offsets[i + 1]].tolist()]

    return LabeledRows(encoded, encoded.labels, tokens, lambda i: " ".join(tokens(i)), f"the {split} split")


def _file_rows(run: Any, enc: Encoding, data: Path, text_column: str | None, label_column: str | None) -> LabeledRows:
    """A labeled file's non-empty rows, read as `eval --data` reads them."""
    from sentiment.data.readers import read_table
    from sentiment.inference.labeled import _Where
    from sentiment.inference.predict import drop_empty, encode_texts

    table = read_table(Path(data), text_column or run.cfg.data.text_column, label_column or run.cfg.data.label_column)
    labels = run.label_space.index(table.labels, _Where(table))
    split, keep = drop_empty(encode_texts(table.texts, enc, labels))
    if not len(split):
        raise SentimentError(f"{data}: every review is empty (no text)")
    texts = [t for t, k in zip(table.texts, keep) if k]
    return LabeledRows(split, split.labels, lambda i: text_tokens([texts[i]], enc)[0], texts.__getitem__, str(data))


def _load(run_dir: Path, checkpoint: str, device: str | None, split: str, data: Path | None,
          text_column: str | None, label_column: str | None, allow_changed_data: bool) -> tuple[Explainer, LabeledRows, Any]:
    from sentiment.inference.predict import encoding_of
    from sentiment.inference.runtime import load_trained

    if split not in ("test", "valid"):
        raise SentimentError(f"--split must be test or valid, got {split!r}")
    run = load_trained(Path(run_dir), checkpoint, device)
    enc = encoding_of(run)
    rows = (_file_rows(run, enc, data, text_column, label_column) if data is not None
            else _run_rows(Path(run_dir), run, split, allow_changed_data))
    return Explainer(run.model, enc, run.label_space, run.device), rows, run


def worst_mistakes(run_dir: Path, n: int, *, split: str = "test", data: Path | None = None,
                   text_column: str | None = None, label_column: str | None = None, checkpoint: str = "best",
                   device: str | None = None, batch_size: int | None = None, steps: int = DEFAULT_STEPS,
                   allow_changed_data: bool = False, progress: Callable[[int, int], None] | None = None) -> list[Mistake]:
    """The n most confident wrong predictions of the run on a split (or a labeled file), most confident first,
    each explained. progress(done, total) is called as each is explained."""
    from sentiment.inference.evaluate import predict_logits

    if n < 1:
        raise SentimentError(f"--errors must be >= 1, got {n}")
    check_steps(steps)
    explainer, rows, run = _load(run_dir, checkpoint, device, split, data, text_column, label_column,
                                 allow_changed_data)
    enc, space = explainer.enc, explainer.space
    logits = predict_logits(run.model, rows.split, batch_size=batch_size or run.cfg.train.eval_batch_size,
                            device=run.device, max_len=enc.max_len, truncate=enc.truncate)
    probs = space.probabilities(logits)
    predicted = (probs[:, 1] >= 0.5).astype(np.int64) if space.binary else probs.argmax(1)
    wrong = np.flatnonzero(predicted != rows.labels)
    confidence = probs[wrong, predicted[wrong]]
    chosen = wrong[np.argsort(-confidence, kind="stable")[:n]]
    out = []
    for done, i in enumerate(chosen.tolist(), 1):
        e = explainer.explain_tokens([rows.tokens(i)], [rows.text(i)], steps=steps)[0]
        out.append(Mistake(i, space.names[int(rows.labels[i])], float(probs[i, predicted[i]]), e))
        if progress is not None:
            progress(done, len(chosen))
    return out


@dataclass
class TopTerm:
    term: str  # a word, or an n-gram's words joined by spaces
    mean: float  # mean contribution per occurrence to the column's logit
    count: int  # occurrences in the sample


def top_words(run_dir: Path, *, sample: int = TOP_WORDS_SAMPLE, top: int = 20, split: str = "test",
              data: Path | None = None, text_column: str | None = None, label_column: str | None = None,
              checkpoint: str = "best", device: str | None = None, steps: int = DEFAULT_STEPS,
              min_count: int = TOP_WORDS_MIN_COUNT, allow_changed_data: bool = False,
              progress: Callable[[int, int], None] | None = None) -> dict[str, list[TopTerm]]:
    """For each class, the `top` words and n-grams that push it most: the highest mean contribution per occurrence
    to its logit (two classes: the positive logit's highest for the positive class, its lowest for the negative),
    over terms seen >= min_count times in `sample` rows drawn at random (seed TOP_WORDS_SEED) from the split.
    Words: each token's whole contribution (Integrated Gradients + the branch's exact share); n-grams of 2 or more
    words: the branch's exact term per occurrence (scaled by the mixture)."""
    if sample < 1:
        raise SentimentError(f"--sample must be >= 1, got {sample}")
    check_steps(steps)
    explainer, rows, _ = _load(run_dir, checkpoint, device, split, data, text_column, label_column,
                               allow_changed_data)
    picked = np.sort(np.random.default_rng(TOP_WORDS_SEED).permutation(len(rows.labels))[:sample])
    cols = explainer.num_outputs
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}

    def add(term: str, value: np.ndarray) -> None:
        sums[term] = sums.get(term, 0.0) + value
        counts[term] = counts.get(term, 0) + 1

    for done, i in enumerate(picked.tolist(), 1):
        tokens = rows.tokens(i)
        if not tokens:
            continue
        e = explainer.explain_tokens([tokens], [rows.text(i)], steps=steps)[0]
        for token, value in zip(e.tokens, np.asarray(e.contributions)):
            add(token, value)
        for term, value in _ngram_terms(explainer, tokens):
            add(term, value)
        if progress is not None:
            progress(done, len(picked))
    kept = [t for t, c in counts.items() if c >= min_count]
    means = np.array([sums[t] / counts[t] for t in kept]).reshape(len(kept), cols)
    space = explainer.space
    ranked: dict[str, list[TopTerm]] = {}
    for k, name in enumerate(space.names):
        column, sign = (0, 1.0 if k == 1 else -1.0) if space.binary else (k, 1.0)
        order = np.argsort(-sign * means[:, column], kind="stable")[:top] if len(kept) else []
        ranked[name] = [TopTerm(kept[j], float(means[j, column]), counts[kept[j]]) for j in order
                        if sign * means[j, column] > 0]
    return ranked


def _ngram_terms(explainer: Explainer, tokens: list[str]) -> list[tuple[str, np.ndarray]]:
    """The branch's n-grams of 2+ words in a text, each occurrence with its exact term, scaled by the mixture."""
    branch = explainer.branch
    if branch is None or branch.spec.n < 2:
        return []
    from sentiment.ngrams import hash_tokens

    positions = np.arange(len(tokens))
    if not branch.spec.whole_text:
        from sentiment.data.batching import truncate

        positions = truncate(positions, explainer.enc.max_len, explainer.enc.truncate)
    read = [tokens[p] for p in positions.tolist()]
    starts, sizes, shares = ngram_occurrences(branch, hash_tokens(read))
    weight = explainer.mix[1] if explainer.has_rnn else 1.0
    return [(" ".join(read[s:s + k]), shares[j] * weight)
            for j, (s, k) in enumerate(zip(starts.tolist(), sizes.tolist())) if k >= 2]
