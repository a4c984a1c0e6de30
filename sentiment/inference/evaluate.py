"""Evaluation: loss, accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix over a split."""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn

from sentiment.data.batching import EncodedSplit, collate
from sentiment.distributed import Rank
from sentiment.data.labels import IMDB_LABELS, LabelSpace
from sentiment.ngrams import ngram_inputs
from sentiment.workers import run_in_workers


@dataclass
class Metrics:
    """Figures over a split. Every run has accuracy, macro-F1, per-class precision/recall/F1 and the
    confusion matrix (rows: true class, columns: predicted). Two-class runs also keep precision, recall,
    F1 and tp/fp/tn/fn of the positive class (labels[1]), as before label spaces existed."""

    loss: float
    accuracy: float
    macro_f1: float
    n: int
    labels: list[str] = field(default_factory=list)
    per_class: list[dict] = field(default_factory=list)  # {label, precision, recall, f1, support}
    confusion: list[list[int]] = field(default_factory=list)
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    tp: int | None = None
    fp: int | None = None
    tn: int | None = None
    fn: int | None = None
    seconds: float = 0.0
    tokens: int = 0
    # a model with two parts: each part's own figures, as the trained whole holds it ({"rnn": {...}, "branch": ...})
    parts: dict | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: v for k, v in d.items() if v is not None}


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def metrics_from(pred: np.ndarray, labels: np.ndarray, loss: float, names: list[str] | tuple[str, ...]) -> Metrics:
    """Metrics of predicted class indices against true ones."""
    k = len(names)
    pred, gold = np.asarray(pred, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    return metrics_from_confusion(np.bincount(gold * k + pred, minlength=k * k).reshape(k, k), loss, names)


def metrics_from_confusion(confusion: np.ndarray, loss: float, names: list[str] | tuple[str, ...]) -> Metrics:
    """Metrics of a confusion matrix (rows: true class, columns: predicted): also what ranks add up."""
    k = len(names)
    confusion = np.asarray(confusion, dtype=np.int64)
    n = int(confusion.sum())
    per_class = []
    for c in range(k):
        tp, predicted, support = int(confusion[c, c]), int(confusion[:, c].sum()), int(confusion[c].sum())
        precision, recall = _ratio(tp, predicted), _ratio(tp, support)
        f1 = _ratio(2 * precision * recall, precision + recall) if precision + recall else 0.0
        per_class.append({"label": names[c], "precision": precision, "recall": recall, "f1": f1, "support": support})
    # macro-F1 over the classes present in the labels or the predictions (as scikit-learn does): a class
    # that the split lacks and nothing predicts is neither right nor wrong, and must not count as F1 0
    present = [c["f1"] for j, c in enumerate(per_class) if confusion[j].sum() or confusion[:, j].sum()]
    m = Metrics(loss=loss, accuracy=_ratio(int(np.trace(confusion)), n),
                macro_f1=float(np.mean(present)) if present else 0.0, n=n, labels=list(names),
                per_class=per_class, confusion=confusion.tolist())
    if k == 2:
        positive = per_class[1]
        m.precision, m.recall, m.f1 = positive["precision"], positive["recall"], positive["f1"]
        m.tp, m.fp = int(confusion[1, 1]), int(confusion[0, 1])
        m.tn, m.fn = int(confusion[0, 0]), int(confusion[1, 0])
    return m


EVAL_TOKENS_PER_BATCH = 65_536  # padded positions per evaluation batch


def token_budget_batches(lengths: np.ndarray, batch_size: int, max_tokens: int = EVAL_TOKENS_PER_BATCH) -> list[np.ndarray]:
    """Indices sorted by length, cut into batches of at most batch_size reviews and max_tokens padded
    positions: short reviews go in big batches, the longest in small ones, so activation memory stays
    bounded (256 reviews of 2,500 tokens would be a 1.3 GB tensor per layer) and stays in cache."""
    order = np.argsort(lengths, kind="stable")
    batches, start, n = [], 0, len(order)
    while start < n:
        end = start + 1
        while end < n and end - start < batch_size and (end + 1 - start) * int(lengths[order[end]]) <= max_tokens:
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


# Scoring on CPU forks one process per torch thread, each running the model single-threaded on its share of
# the batches. A recurrent layer is a chain of small matrix products, one per position, that two threads
# split poorly: on two cores the CPU recipe's BiGRU(128) scored IMDB test reviews 1.46x faster as two
# one-thread processes than as one two-thread process.
# The logits are bitwise those of scoring in one process: the workers run the very batches the in-process
# path runs (token_budget_batches of the same lengths), so each review meets the same kernels with the same
# shapes. Against one single-threaded process that holds by construction; against one two-thread process it
# held for every model we tried (MKL's matrix products split rows, not sums, between threads here), which
# MKL does not promise for every CPU. tests/test_evaluate.py checks both with np.array_equal. A review
# scored in a different batch (alone, say) rounds differently, by ~1e-7.
_PARALLEL_MIN_TOKENS = 100_000  # below this (one review, a small validation split), forking isn't worth it
_scoring_job: tuple | None = None  # (model, split, batches, max_len, truncate, parts): forked workers inherit it


def _score_batches(assigned: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Worker: logits of the assigned batches, single-threaded, with the indices they belong to."""
    model, split, batches, max_len, truncate, parts = _scoring_job
    torch.set_num_threads(1)
    indices, logits = [], []
    with torch.inference_mode():
        for b in assigned:
            ids, lengths, _ = collate(split, batches[b], max_len, truncate)
            indices.append(batches[b])
            inputs = ngram_inputs(model, split, batches[b], max_len, truncate)  # {} without an n-gram branch
            logits.append(_forward(model, ids, lengths, inputs, parts))
    if not indices:
        return np.zeros(0, np.int64), np.zeros((0, *_row_shape(model, parts)), np.float32)
    return np.concatenate(indices), np.concatenate(logits)


def part_names(model: nn.Module) -> list[str]:
    """The logits predict_logits(parts=True) gives: the whole's, then each part's where the model has two."""
    two = getattr(model, "has_rnn", False) and getattr(model, "ngrams", None) is not None
    return ["whole", "rnn", "branch"] if two else ["whole"]


def _row_shape(model: nn.Module, parts: bool) -> tuple[int, ...]:
    width = getattr(model, "num_outputs", 1)
    return ((len(part_names(model)),) if parts else ()) + (() if width == 1 else (width,))


def _forward(model: nn.Module, ids: torch.Tensor, lengths: torch.Tensor, inputs: dict, parts: bool) -> np.ndarray:
    """One batch's logits as numpy: [B(, K)], or with parts [B, parts(, K)] in part_names' order."""
    if not parts:
        return model(ids, lengths, **inputs).float().cpu().numpy()
    names = part_names(model)
    if len(names) == 1:
        return model(ids, lengths, **inputs).float().cpu().numpy()[:, None]
    out = model(ids, lengths, **inputs, parts=True)
    return torch.stack([out[n] for n in names], dim=1).float().cpu().numpy()


def _deal(costs: list[int], workers: int) -> list[list[int]]:
    """Batches dealt to workers so that each gets about the same work: largest first, to the least loaded."""
    load, assigned = [0] * workers, [[] for _ in range(workers)]
    for b in sorted(range(len(costs)), key=costs.__getitem__, reverse=True):
        w = load.index(min(load))
        assigned[w].append(b)
        load[w] += costs[b]
    return assigned


def scoring_workers(device: torch.device | str) -> int:
    """Processes predict_logits scores with: one per torch thread on CPU where fork exists, else one."""
    if torch.device(device).type != "cpu" or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, torch.get_num_threads())


@torch.inference_mode()
def predict_logits(model: nn.Module, split: EncodedSplit, *, batch_size: int = 256, device: torch.device | str = "cpu",
                   max_len: int | None = None, truncate: str = "head+tail", workers: int | None = None,
                   parts: bool = False) -> np.ndarray | dict[str, np.ndarray]:
    """Logits in the split's order. Batches are sorted by length so that padding stays minimal.
    workers: scoring processes (default: scoring_workers(device)); 1 scores in this process.
    parts: {name: logits} for each of part_names(model) (the whole, and each part of a model with two)."""
    global _scoring_job
    was_training = model.training
    model.eval()
    logits = np.zeros((len(split), *_row_shape(model, parts)), dtype=np.float32)
    lengths_all = split.lengths(max_len)
    batches = token_budget_batches(lengths_all, batch_size)
    costs = [len(b) * int(lengths_all[b[-1]]) for b in batches]  # padded positions (sorted: last is longest)
    workers = min(scoring_workers(device) if workers is None else workers, len(batches))
    try:
        if workers > 1 and sum(costs) >= _PARALLEL_MIN_TOKENS:
            _scoring_job = (model, split, batches, max_len, truncate, parts)
            for indices, out in run_in_workers(_score_batches, _deal(costs, workers), workers):
                logits[indices] = out
        else:
            for indices in batches:
                ids, lengths, _ = collate(split, indices, max_len, truncate)
                inputs = ngram_inputs(model, split, indices, max_len, truncate, device)  # {} without an n-gram branch
                # lengths stay on the CPU: checked there
                logits[indices] = _forward(model, ids.to(device, non_blocking=True), lengths, inputs, parts)
    finally:
        _scoring_job = None
        model.train(was_training)
    if parts:
        return {name: np.ascontiguousarray(logits[:, i]) for i, name in enumerate(part_names(model))}
    return logits


def evaluate(model: nn.Module, split: EncodedSplit, label_space: LabelSpace | None = None, *, batch_size: int = 256,
             device: torch.device | str = "cpu", max_len: int | None = None, truncate: str = "head+tail",
             workers: int | None = None, rank: Rank | None = None, parts: bool = False) -> Metrics:
    """The split's metrics under the run's label space (default: two classes, negative/positive). Under
    several ranks each scores every world_size-th review and the counts are added up: every review is
    counted once, and every rank gets the same figures. parts: also each part's figures (Metrics.parts), for a
    model with two."""
    label_space = label_space or LabelSpace(IMDB_LABELS)
    start = time.perf_counter()
    if rank is not None and rank.distributed:
        return _evaluate_shard(model, split, label_space, rank, batch_size=batch_size, device=device,
                               max_len=max_len, truncate=truncate, start=start, parts=parts)
    logits = predict_logits(model, split, batch_size=batch_size, device=device, max_len=max_len, truncate=truncate,
                            workers=workers, parts=True)
    labels = split.labels.astype(np.int64)
    figures = {name: metrics_from(label_space.predictions(z), labels, label_space.loss_of(z, labels), label_space.names)
               for name, z in logits.items()}
    return _with_parts(figures, parts, start, int(split.lengths(max_len).sum()))


def _with_parts(figures: dict[str, Metrics], parts: bool, start: float, tokens: int) -> Metrics:
    metrics = figures.pop("whole")
    if parts and figures:
        metrics.parts = {name: {k: v for k, v in m.to_dict().items() if k in ("loss", "accuracy", "macro_f1", "f1", "n")}
                         for name, m in figures.items()}
    metrics.seconds = time.perf_counter() - start
    metrics.tokens = tokens
    return metrics


def _evaluate_shard(model: nn.Module, split: EncodedSplit, space: LabelSpace, rank: Rank, *, batch_size: int,
                    device: torch.device | str, max_len: int | None, truncate: str, start: float,
                    parts: bool = False) -> Metrics:
    from sentiment.distributed import all_reduce_sum

    rows = np.arange(rank.rank, len(split), rank.world_size)
    shard = split.take(rows)
    k = space.num_classes
    names = part_names(model)
    sums = []  # per part: [loss sum, confusion counts...]
    logits = predict_logits(model, shard, batch_size=batch_size, device=device, max_len=max_len, truncate=truncate,
                            workers=1, parts=True) if len(shard) else {}  # no forked workers under DDP
    labels = shard.labels.astype(np.int64)
    for name in names:
        if len(shard):
            z = logits[name]
            sums += [[space.loss_of(z, labels) * len(shard)], np.bincount(labels * k + space.predictions(z),
                                                                         minlength=k * k)]
        else:
            sums += [[0.0], np.zeros(k * k, np.int64)]
    # float64 sums: counts stay exact up to 2**53
    totals = all_reduce_sum(rank, torch.from_numpy(np.concatenate(sums).astype(np.float64))).numpy()
    figures = {}
    for i, name in enumerate(names):
        part = totals[i * (k * k + 1):(i + 1) * (k * k + 1)]
        confusion = part[1:].round().astype(np.int64).reshape(k, k)
        figures[name] = metrics_from_confusion(confusion, float(part[0] / max(confusion.sum(), 1)), space.names)
    return _with_parts(figures, parts, start, int(split.lengths(max_len).sum()))
