"""Evaluation: loss, accuracy, precision, recall, F1 and the confusion matrix over a split."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn

from sentiment.batching import EncodedSplit, collate


@dataclass
class Metrics:
    loss: float
    accuracy: float
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    tn: int
    fn: int
    n: int
    seconds: float = 0.0
    tokens: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def metrics_from(probs: np.ndarray, labels: np.ndarray, loss: float, threshold: float = 0.5) -> Metrics:
    pred = probs >= threshold
    gold = labels.astype(bool)
    tp, fp = int((pred & gold).sum()), int((pred & ~gold).sum())
    tn, fn = int((~pred & ~gold).sum()), int((~pred & gold).sum())
    n = len(labels)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Metrics(loss, (tp + tn) / n if n else 0.0, precision, recall, f1, tp, fp, tn, fn, n)


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


@torch.inference_mode()
def predict_logits(model: nn.Module, split: EncodedSplit, *, batch_size: int = 256, device: torch.device | str = "cpu",
                   max_len: int | None = None, truncate: str = "head+tail") -> np.ndarray:
    """Logits in the split's order. Batches are sorted by length so that padding stays minimal."""
    was_training = model.training
    model.eval()
    logits = np.zeros(len(split), dtype=np.float32)
    for indices in token_budget_batches(split.lengths(max_len), batch_size):
        ids, lengths, _ = collate(split, indices, max_len, truncate)
        out = model(ids.to(device, non_blocking=True), lengths.to(device))
        logits[indices] = out.float().cpu().numpy()
    model.train(was_training)
    return logits


def evaluate(model: nn.Module, split: EncodedSplit, *, batch_size: int = 256, device: torch.device | str = "cpu",
             max_len: int | None = None, truncate: str = "head+tail") -> Metrics:
    start = time.perf_counter()
    logits = predict_logits(model, split, batch_size=batch_size, device=device, max_len=max_len, truncate=truncate)
    labels = split.labels.astype(np.float32)
    loss = float(nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(labels)))
    metrics = metrics_from(1.0 / (1.0 + np.exp(-logits.astype(np.float64))), labels, loss)
    metrics.seconds = time.perf_counter() - start
    metrics.tokens = int(split.lengths(max_len).sum())
    return metrics
