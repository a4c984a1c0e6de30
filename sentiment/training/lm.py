"""Language-model pretraining of the classifier's encoder: the objective, its output layers and its stream.

The encoder is the classifier's (embedding + recurrent stack of any `rnn`). Its forward direction learns to
predict the next token and its backward direction, run over the text reversed (as SentimentRNN runs its
backward direction), the previous one. With one layer that is exactly the classifier's layer. With more, a
classifier layer above the first reads both directions of the layer below, so the future would leak into a
next-token prediction: here the directions are two separate one-direction stacks (as ELMo's), and
`sentiment.training.transfer` maps them into the classifier's bidirectional stack when fine-tuning.

Parameter names follow SentimentRNN's (`embedding.weight`, `layers.{layer}.{direction}.weight_ih_l0`, ...), so a
one-layer encoder loads into the classifier key for key. The output layers (`heads.{direction}.*`) are dropped
after pretraining.

Output layers (never a full softmax over the vocabulary on CPU, except as the benchmark's baseline):
- adaptive: torch's AdaptiveLogSoftmaxWithLoss over the frequency-ordered vocabulary (Grave et al. 2017); exact
  log-likelihood in training and evaluation; its clusters own their weights (not tied to the embedding).
- sampled: sampled softmax (Jean et al. 2015) with `samples` negatives per batch drawn log-uniformly over the
  vocabulary's frequency ranks, corrected by their expected counts; the output rows are the embedding when tied
  (a projection maps the hidden state to the embedding's size). Evaluation scores the full softmax, so held-out
  perplexities of both kinds compare.
- full: the whole softmax (the baseline the benchmark compares against).

The stream: random `bptt`-token windows over the concatenated pretraining texts (what the pilot did; contiguous
windows with a carried state were not built). The windows of an epoch are a function of (seed, epoch), so the
engine's (epoch, step) is the stream's whole place, and each rank reads every world_size-th batch.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from sentiment.data.batching import EncodedSplit
from sentiment.errors import SentimentError
from sentiment.model import RNN_TYPES

if TYPE_CHECKING:
    from sentiment.config import Config

DIRECTIONS = ("forward", "backward")


# ---------------------------------------------------------------- output layers
class AdaptiveOutput(nn.Module):
    """Adaptive softmax: frequent words in a small head, rarer ones in narrower tail clusters."""

    def __init__(self, in_features: int, vocab_size: int, cutoffs: list[int], div_value: float) -> None:
        super().__init__()
        # a cutoff at or above the vocabulary size has no words after it; with none left, one at half the vocabulary
        kept = [c for c in cutoffs if c < vocab_size - 1] or [max(1, vocab_size // 2)]
        self.cutoffs = kept
        self.softmax = nn.AdaptiveLogSoftmaxWithLoss(in_features, vocab_size, kept, div_value=div_value)

    def forward(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of targets [N] given hidden [N, F] (exact, in training too)."""
        return self.softmax(hidden, targets).loss


class _TiedRows(nn.Module):
    """Output rows [V, D]: the embedding's (tied, with a projection of the hidden state when sizes differ) or own."""

    def __init__(self, in_features: int, embedding: nn.Embedding, tie: bool) -> None:
        super().__init__()
        vocab_size, dim = embedding.weight.shape
        self.embedding = [embedding] if tie else None  # a list: not a submodule (its weight is the encoder's)
        out_dim = dim if tie else in_features
        self.projection = nn.Linear(in_features, dim) if tie and in_features != dim else None
        self.weight = None if tie else nn.Parameter(torch.empty(vocab_size, in_features).normal_(0, in_features ** -0.5))
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.out_dim = out_dim

    def rows(self) -> torch.Tensor:
        return self.embedding[0].weight if self.embedding is not None else self.weight

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.projection(hidden) if self.projection is not None else hidden


class SampledOutput(_TiedRows):
    """Sampled softmax in training, the full softmax in evaluation (exact held-out perplexity)."""

    def __init__(self, in_features: int, embedding: nn.Embedding, samples: int, tie: bool,
                 pad_index: int = 0) -> None:
        super().__init__(in_features, embedding, tie)
        self.vocab_size = embedding.weight.shape[0]
        self.samples = samples
        self.pad_index = pad_index

    def _draw(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """`samples` ids (with replacement) log-uniform over ranks 1..V-1 (the vocabulary is ordered by frequency),
        and the log of each id's expected count among them."""
        n = self.vocab_size - 1  # ranks 0..n-1 are ids 1..V-1: the pad id is never a word
        u = torch.rand(self.samples, device=device, dtype=torch.float64)
        ranks = (torch.exp(u * math.log(n + 1)) - 1).floor().clamp_(0, n - 1).long()
        return ranks + 1, self._log_expected(ranks + 1)

    def _log_expected(self, ids: torch.Tensor) -> torch.Tensor:
        rank = (ids - 1).double()
        p = (torch.log(rank + 2) - torch.log(rank + 1)) / math.log(self.vocab_size)
        return torch.log(p * self.samples).float()

    def forward(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        h = self.project(hidden)
        w = self.rows()
        if not self.training:
            return full_softmax_loss(h, w, self.bias, targets)
        sampled, sampled_log_q = self._draw(h.device)
        true_logit = (h * w[targets]).sum(-1) + self.bias[targets] - self._log_expected(targets)
        sampled_logits = h @ w[sampled].t() + self.bias[sampled] - sampled_log_q
        # a sample that is the target is not a negative ("accidental hit")
        sampled_logits = sampled_logits.masked_fill(sampled[None, :] == targets[:, None], float("-inf"))
        logits = torch.cat([true_logit[:, None], sampled_logits], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(targets))


class FullOutput(_TiedRows):
    """The whole softmax over the vocabulary: the benchmark's baseline."""

    def forward(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return full_softmax_loss(self.project(hidden), self.rows(), self.bias, targets)


def full_softmax_loss(hidden: torch.Tensor, rows: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
                      chunk: int = 4096) -> torch.Tensor:
    """Mean cross-entropy over the whole vocabulary; without gradients it goes in chunks of positions (memory)."""
    if torch.is_grad_enabled():
        return F.cross_entropy(hidden @ rows.t() + bias, targets)
    total = hidden.new_zeros((), dtype=torch.float64)
    for start in range(0, len(targets), chunk):
        logits = hidden[start:start + chunk] @ rows.t() + bias
        total += F.cross_entropy(logits.float(), targets[start:start + chunk], reduction="sum").double()
    return (total / max(len(targets), 1)).to(hidden.dtype)


# ---------------------------------------------------------------- the model
class LanguageModel(nn.Module):
    """Embedding + one recurrent stack per direction + one output layer per direction."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int = 128, num_layers: int = 1,
                 rnn: str = "gru", dropout: float = 0.5, embed_dropout: float = 0.5, output_dropout: float = 0.0,
                 pad_index: int = 0, output: str = "adaptive", cutoffs: list[int] | None = None,
                 div_value: float = 4.0, samples: int = 1024, tie_weights: bool = True) -> None:
        super().__init__()
        if rnn not in RNN_TYPES:
            raise ValueError(f"rnn must be one of {sorted(RNN_TYPES)}, got {rnn!r}")
        cls = RNN_TYPES[rnn]
        self.rnn_type, self.hidden_size, self.num_layers, self.pad_index = rnn, hidden_size, num_layers, pad_index
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_index)
        self.embed_dropout = nn.Dropout(embed_dropout)
        # layers[l][d]: direction d's layer l, reading direction d's layer l-1 only (its own past)
        self.layers = nn.ModuleList(
            nn.ModuleList(cls(embed_dim if layer == 0 else hidden_size, hidden_size, num_layers=1, batch_first=True)
                          for _ in DIRECTIONS)
            for layer in range(num_layers))
        self.layer_dropout = nn.Dropout(dropout)
        self.output_dropout = nn.Dropout(output_dropout)

        def head() -> nn.Module:
            if output == "adaptive":
                return AdaptiveOutput(hidden_size, vocab_size, list(cutoffs or [2000, 10000]), div_value)
            if output == "sampled":
                return SampledOutput(hidden_size, self.embedding, samples, tie_weights, pad_index)
            if output == "full":
                return FullOutput(hidden_size, self.embedding, tie_weights)
            raise ValueError(f"output must be adaptive, sampled or full, got {output!r}")

        self.heads = nn.ModuleList(head() for _ in DIRECTIONS)

    def load_embeddings(self, matrix: np.ndarray | torch.Tensor) -> None:
        with torch.no_grad():
            self.embedding.weight.copy_(torch.as_tensor(matrix, dtype=self.embedding.weight.dtype))
            self.embedding.weight[self.pad_index].zero_()

    def encode(self, ids: torch.Tensor, direction: int) -> torch.Tensor:
        """Top-layer states [B, T, H] of one direction's stack over ids [B, T] (already in its reading order)."""
        x = self.embed_dropout(self.embedding(ids))
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = self.layer_dropout(x)
            x, _ = layer[direction](x)
        return self.output_dropout(x)

    def forward(self, windows: torch.Tensor) -> dict[str, torch.Tensor]:
        """windows [B, T+1] of consecutive tokens -> each direction's mean loss per predicted token: forward
        reads positions 0..T-1 and predicts 1..T; backward reads T..1 (the window reversed) and predicts T-1..0."""
        losses = {}
        for d, (name, seq) in enumerate(zip(DIRECTIONS, (windows, windows.flip(1)))):
            inputs, targets = seq[:, :-1], seq[:, 1:]
            states = self.encode(inputs, d)
            losses[name] = self.heads[d](states.reshape(-1, states.shape[-1]), targets.reshape(-1))
        return losses


def build_language_model(cfg: "Config", vocab_size: int, pad_index: int = 0) -> LanguageModel:
    m, p = cfg.model, cfg.pretrain
    return LanguageModel(vocab_size, cfg.data.glove_dim or m.embed_dim, m.hidden_size, m.num_layers, m.rnn,
                         dropout=m.dropout, embed_dropout=m.embed_dropout, output_dropout=m.output_dropout,
                         pad_index=pad_index, output=p.output, cutoffs=p.cutoffs, div_value=p.div_value,
                         samples=p.samples, tie_weights=p.tie_weights)


# ---------------------------------------------------------------- objective and evaluation
class LanguageModelObjective:
    """The engine's objective: the mean of both directions' losses; each direction's loss is a metrics column."""

    columns = {"forward": "train_forward_loss", "backward": "train_backward_loss"}
    backward_inside = False

    def __call__(self, model: nn.Module, batch: "WindowBatch", **_: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses = model(batch.windows)
        return (losses["forward"] + losses["backward"]) / 2, {k: v.detach() for k, v in losses.items()}


@torch.no_grad()
def held_out_losses(model: LanguageModel, windows: torch.Tensor, batch_size: int = 64) -> dict[str, float]:
    """Each direction's mean loss per token over held-out windows [N, T+1] (no dropout; the full softmax)."""
    was_training = model.training
    model.eval()
    try:
        sums = {name: 0.0 for name in DIRECTIONS}
        for start in range(0, len(windows), batch_size):
            chunk = windows[start:start + batch_size]
            for name, loss in model(chunk).items():
                sums[name] += float(loss) * len(chunk)
        return {name: total / max(len(windows), 1) for name, total in sums.items()}
    finally:
        model.train(was_training)


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))


# ---------------------------------------------------------------- texts and windows
def text_fingerprints(split: EncodedSplit) -> np.ndarray:
    """One 64-bit hash per text of its token ids: a set-of-texts check (the same vocabulary on both sides), stored
    as pretrain_texts.npy and train_texts.npy. Not sentiment.data.fingerprint's text_hashes, which hash token
    strings (no vocabulary needed) and make the per-split digests in data_fingerprint.json: those exist, and these
    have not been moved onto them."""
    ids = np.ascontiguousarray(split.ids)
    out = np.empty(len(split.offsets) - 1, dtype=np.uint64)
    for i in range(len(out)):
        digest = hashlib.blake2b(ids[split.offsets[i]:split.offsets[i + 1]].tobytes(), digest_size=8).digest()
        out[i] = np.frombuffer(digest, dtype=np.uint64)[0]
    return out


@dataclass
class PretrainingText:
    """The token ids the language model trains on and is scored on, and the fingerprints of every text used."""

    train: np.ndarray  # int64, texts laid end to end
    held_out: np.ndarray
    fingerprints: np.ndarray  # uint64, sorted: every pretraining text (train and held-out)
    texts: int
    dropped_held_out_texts: int  # texts equal to a validation or test text, left out


def pretraining_text(sources: list[EncodedSplit], excluded: list[EncodedSplit], held_out_fraction: float,
                     seed: int) -> PretrainingText:
    """The texts of `sources` (the training split and the unlabeled texts) but any equal to a text of `excluded`
    (validation and test), split by text into training and held-out parts (a seeded draw), each laid end to end."""
    banned = np.unique(np.concatenate([text_fingerprints(s) for s in excluded])) if excluded else np.zeros(0, np.uint64)
    pieces: list[np.ndarray] = []
    prints: list[np.ndarray] = []
    dropped = 0
    for split in sources:
        fp = text_fingerprints(split)
        keep = ~np.isin(fp, banned) & (np.diff(split.offsets) > 0)
        dropped += int((np.isin(fp, banned)).sum())
        for i in np.flatnonzero(keep).tolist():
            pieces.append(split.ids[split.offsets[i]:split.offsets[i + 1]])
        prints.append(fp[keep])
    if not pieces:
        raise SentimentError("there is no pretraining text: the training split and data.unlabeled are empty")
    rng = np.random.default_rng([seed, 25])
    held = rng.random(len(pieces)) < held_out_fraction
    if held.all() or not held.any():  # both parts need a text
        held = np.zeros(len(pieces), bool)
        held[int(rng.integers(len(pieces)))] = True
    join = lambda mask: np.concatenate([pieces[i] for i in np.flatnonzero(mask)]).astype(np.int64)  # noqa: E731
    return PretrainingText(join(~held), join(held), np.sort(np.concatenate(prints)), len(pieces), dropped)


@dataclass
class WindowBatch:
    windows: torch.Tensor  # [B, bptt+1]
    rows: int
    tokens: int  # positions each direction predicts


class WindowStream:
    """Random `bptt`+1-token windows over `tokens`, `batch_size` a batch. An epoch is `epoch_tokens` (default: all
    tokens once) worth of windows, drawn from (seed, epoch) alone; rank r reads batches r, r+world, ..."""

    SEED_OFFSET = 2_525_252

    def __init__(self, tokens: np.ndarray, bptt: int, batch_size: int, *, seed: int, device: torch.device,
                 epoch_tokens: int | None = None, num_replicas: int = 1, rank: int = 0) -> None:
        if len(tokens) < bptt + 2:
            raise SentimentError(f"the pretraining text has {len(tokens):,} tokens, fewer than one window of "
                                 f"pretrain.bptt={bptt} + 1: lower pretrain.bptt or add text")
        self.tokens = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
        self.bptt, self.batch_size, self.seed, self.device = bptt, batch_size, seed, device
        self.epoch_tokens = epoch_tokens or len(tokens)
        self.num_replicas, self.rank = num_replicas, rank
        self.offsets = torch.arange(bptt + 1)
        self._starts: np.ndarray = np.zeros((0, batch_size), np.int64)

    def batches_per_epoch(self) -> int:
        n = max(1, self.epoch_tokens // self.bptt) // self.batch_size
        return n - n % self.num_replicas

    def set_epoch(self, epoch: int) -> int:
        rng = np.random.default_rng([self.seed + self.SEED_OFFSET, epoch])
        n = self.batches_per_epoch()
        starts = rng.integers(0, len(self.tokens) - self.bptt, size=(n, self.batch_size))
        self._starts = starts[self.rank::self.num_replicas]
        return len(self._starts)

    def batch(self, i: int) -> WindowBatch:
        starts = torch.from_numpy(self._starts[i])
        windows = self.tokens[starts[:, None] + self.offsets]
        return WindowBatch(windows.to(self.device, non_blocking=True), len(starts), len(starts) * self.bptt)

    def restore(self, state: Any) -> None:  # the engine's (epoch, step) is the whole place
        pass

    def record(self, state: Any) -> None:
        pass


def held_out_windows(tokens: np.ndarray, bptt: int, limit: int) -> torch.Tensor:
    """Up to `limit` consecutive windows [N, bptt+1] overlapping by one token: every held-out token predicted once."""
    n = min(limit, max(0, (len(tokens) - 1) // bptt))
    if n == 0:
        raise SentimentError(f"the held-out text has {len(tokens)} tokens, fewer than one window of pretrain.bptt="
                             f"{bptt} + 1: raise pretrain.held_out_fraction or lower pretrain.bptt")
    starts = np.arange(n) * bptt
    return torch.from_numpy(np.asarray(tokens, np.int64)[starts[:, None] + np.arange(bptt + 1)])
