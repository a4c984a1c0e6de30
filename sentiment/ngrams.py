"""The bag-of-n-grams branch: a linear model over hashed word n-grams whose logits join the recurrent head's.

Why: TF-IDF + logistic regression matches our recurrent models on IMDB and short texts, and the two make
different errors (issue 24; NBSVM, Wang & Manning 2012; Mesnil et al. 2014). The branch is that linear
model, summed with the recurrent one (model.combine sum) or trained apart and mixed on validation (mixture).

- Its inputs, each text's distinct n-gram bucket ids with counts hashed from the token strings, come from the
  data side (sentiment/data/hashing.py), outside the torch graph: what an exported model takes as its second
  input.
- The model weighs each n-gram by a per-bucket scale (none: 1, tfidf: smoothed idf as scikit-learn computes
  it, nb: the Naive Bayes log-count ratio, binarized counts as NBSVM) computed from the labeled training rows
  only and kept in the model's state (so every checkpoint, eval and predict carry it); n-grams never seen in
  training weigh 0, as a fitted vectorizer ignores unknown terms. The weighted vector is L2-normalised per
  text (norm: l2) and summed by an nn.EmbeddingBag(buckets, outputs): the cost is linear in the text's length.
  With model.ngrams.sparse its gradient is a sparse tensor of the batch's rows, which
  sentiment/training/lazy_adam.py steps alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from sentiment.data.hashing import (  # noqa: F401  (re-exported: the names lived here before)
    COMBINE, FNV_OFFSET, FNV_PRIME, NB_ALPHA, ORDER_SALT, READABLE_TOKEN_HASH_VERSIONS, TOKEN_HASH_VERSION,
    WEIGHTINGS, NgramBatch, NgramSpec, bags, collate_ngrams, hash_tokens, ngram_ids, ngram_statistics)
from sentiment.errors import SentimentError

if TYPE_CHECKING:
    from sentiment.config import Config
    from sentiment.data.batching import EncodedSplit

def spec_of(model: nn.Module) -> NgramSpec | None:
    """The n-grams the model's branch reads; None without one. Any model whose `ngrams` carries a spec (an
    exported model, sentiment.inference.exported) takes them alike."""
    spec = getattr(getattr(model, "ngrams", None), "spec", None)
    return spec if isinstance(spec, NgramSpec) else None


def ngram_inputs(model: nn.Module, split: "EncodedSplit", indices: Sequence[int] | np.ndarray,
                 max_len: int | None = None, mode: str = "head+tail",
                 device: torch.device | str | None = None) -> dict[str, Any]:
    """The model's keyword inputs besides ids and lengths: {"ngrams": ...} for a model with the branch, else {}."""
    spec = spec_of(model)
    if spec is None:
        return {}
    batch = collate_ngrams(split, indices, spec, max_len, mode)
    return {"ngrams": batch.to(device) if device is not None else batch}


class NgramBranch(nn.Module):
    """logits [B, outputs] = sum over a text's distinct n-grams of weight_g * table[g] + bias, where weight_g is
    its count (1 under nb) times the bucket's scale, L2-normalised over the text (norm l2), dropped out in
    training. The table starts at zero: the joint model starts as the recurrent one."""

    def __init__(self, spec: NgramSpec, num_outputs: int, weighting: str = "tfidf", norm: str = "l2",
                 dropout: float = 0.0, sparse: bool = False) -> None:
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.spec = spec
        self.weighting = weighting
        self.norm = norm
        self.dropout = dropout
        # sparse: the table's gradient holds the batch's rows only (table.sparse may be turned off before training:
        # under NCCL, which cannot all-reduce a sparse gradient)
        self.table = nn.EmbeddingBag(spec.buckets, num_outputs, mode="sum", sparse=sparse)
        nn.init.zeros_(self.table.weight)
        self.bias = nn.Parameter(torch.zeros(num_outputs))
        self.register_buffer("scale", torch.ones(spec.buckets))  # set_statistics: from the training rows

    @torch.no_grad()
    def set_statistics(self, scale: np.ndarray) -> None:
        scale = torch.as_tensor(np.asarray(scale, dtype=np.float32))
        if scale.shape != self.scale.shape:
            raise ValueError(f"expected {self.scale.shape[0]} bucket scales, got {tuple(scale.shape)}")
        self.scale.copy_(scale.to(self.scale.device))

    def forward(self, ngrams: NgramBatch) -> torch.Tensor:
        ids, offsets, counts = ngrams
        values = torch.ones_like(counts) if self.weighting == "nb" else counts
        weights = values.float() * self.scale[ids]
        if self.norm == "l2" and ids.numel():
            sizes = torch.diff(offsets, append=offsets.new_tensor([ids.numel()]))
            # output_size: known on the host, so CUDA need not wait to learn it
            text_of = torch.repeat_interleave(torch.arange(len(offsets), device=ids.device), sizes,
                                              output_size=ids.numel())
            squares = torch.zeros(len(offsets), device=ids.device).index_add_(0, text_of, weights.square())
            weights = weights * torch.rsqrt(squares.clamp_min(1e-12))[text_of]
        weights = F.dropout(weights, self.dropout, self.training)
        return self.table(ids, offsets, per_sample_weights=weights) + self.bias


# what `model.ngrams.buckets: null` lets the table take, with Adam's two moments (3 float32 copies of it)
TABLE_BUDGET_BYTES = 200 * 2**20
MAX_AUTO_BUCKETS = 2**22


def resolve_branch(cfg: "Config", num_classes: int, train_tokens: int | None = None) -> list[str]:
    """Set the branch's data-dependent keys in place: weighting auto (nb for two classes, tfidf for more) and buckets
    null (a power of two: at most MAX_AUTO_BUCKETS, within TABLE_BUDGET_BYTES, and no more than the first one at or
    above the training text's n-grams, n x train_tokens, when that is given: 14,000 tweets need no 4M-row table).
    Returns what it chose, as `key=value` strings; nothing for a config without the branch or with both keys given."""
    g = cfg.model.ngrams
    if g is None:
        return []
    chosen = []
    if g.weighting == "auto":
        g.weighting = "nb" if num_classes == 2 else "tfidf"
        chosen.append(f"model.ngrams.weighting={g.weighting}")
    if g.buckets is None:
        outputs = 1 if num_classes == 2 else num_classes
        buckets = MAX_AUTO_BUCKETS
        while buckets > 1 and (3 * 4 * outputs * buckets > TABLE_BUDGET_BYTES
                               or (train_tokens is not None and buckets // 2 >= g.n * train_tokens)):
            buckets //= 2
        g.buckets = buckets
        chosen.append(f"model.ngrams.buckets={buckets}")
    return chosen


def branch_tokens(data: Any) -> int | None:
    """The training split's token count as the branch reads it (its token hashes), for resolve_branch; None when
    the data carries no hashes."""
    hashes = getattr(getattr(data, "train", None), "hashes", None)
    return None if hashes is None else int(len(hashes))


def resolve_like(cfg: "Config", run_cfg: "Config") -> None:
    """A config's auto keys (weighting auto, buckets null) as the run `run_cfg` resolved them: what resuming that run
    with this config means."""
    g, done = cfg.model.ngrams, run_cfg.model.ngrams
    if g is None or done is None:
        return
    if g.weighting == "auto":
        g.weighting = done.weighting
    if g.buckets is None:
        g.buckets = done.buckets


def build_branch(cfg: "Config", num_outputs: int) -> NgramBranch | None:
    """The branch model.ngrams describes, or None when it is off (auto and null keys resolved for num_outputs on a
    copy: a run stores the resolved ones, see resolve_branch)."""
    if cfg.model.ngrams is None:
        return None
    import copy

    resolved = copy.deepcopy(cfg)
    resolve_branch(resolved, 2 if num_outputs == 1 else num_outputs)
    g = resolved.model.ngrams
    return NgramBranch(NgramSpec(g.n, g.buckets, g.text == "whole"), num_outputs, g.weighting, g.norm, g.dropout,
                        sparse=g.sparse)


def init_statistics(model: nn.Module, cfg: "Config", train: "EncodedSplit", num_classes: int) -> None:
    """A new run's branch gets its weighting's statistics from the training split (a resumed one loads them)."""
    branch = getattr(model, "ngrams", None)
    if isinstance(branch, NgramBranch):
        branch.set_statistics(ngram_statistics(train, branch.spec, branch.weighting, num_classes,
                                               cfg.data.max_len, cfg.data.truncate))


def parameter_groups(model: nn.Module, cfg: "Config") -> list[dict[str, Any]]:
    """The optimizer's parameter groups: the recurrent model with train.lr and train.weight_decay; the branch
    with its own model.ngrams.lr (null: train.lr) and model.ngrams.weight_decay (a 2**20-row table trained
    without decay overfits where logistic regression's C is tuned). With model.ngrams.sparse the table is a group of
    its own after the bias's (same lr and decay), marked "sparse": True while its gradient is sparse (the engine
    steps it with LazyAdam)."""
    branch = getattr(model, "ngrams", None)
    if not isinstance(branch, NgramBranch):
        return [{"params": list(model.parameters())}]
    own = {id(p) for p in branch.parameters()}
    rest = [p for p in model.parameters() if id(p) not in own]
    g = cfg.model.ngrams
    own_settings = {"lr": g.lr if g.lr is not None else cfg.train.lr, "weight_decay": g.weight_decay}
    if g.sparse:  # the same groups when the table trains dense after all (NCCL): one checkpoint format
        groups = [{"params": [branch.bias], **own_settings},
                  {"params": [branch.table.weight], **own_settings, "sparse": branch.table.sparse}]
    else:
        groups = [{"params": list(branch.parameters()), **own_settings}]
    return ([{"params": rest}] if rest else []) + groups
