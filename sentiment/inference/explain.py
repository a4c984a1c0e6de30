"""Why a run said what it said: each token's contribution to the logits.

- The recurrent part: Integrated Gradients (Sundararajan et al. 2017) with Captum's LayerIntegratedGradients over
  the embedding layer's output, from a baseline of the padding embedding at the same length; lengths go in as
  additional forward arguments (never interpolated). Whatever the model does after the embedding layer
  (normalize_embeddings' affine shift and scale, dropout: off in eval) is part of the function attributed, so
  completeness holds: the contributions add up to the logit minus the baseline's logit, up to the integral's
  numerical error (measured on every explanation: completeness_error).
- The n-gram branch is linear, so its contribution is exact: each distinct n-gram's weight (count or 1, times its
  bucket's scale, L2-normalised over the text, as NgramBranch.forward computes it) times its row of the table,
  shared equally by its occurrences and spread equally over each occurrence's n tokens. Its baseline is the
  empty bag (the branch's bias alone).
- A model with both parts mixes them (model.combine): each part's contributions are scaled by its mixture weight
  (mix[0] for the recurrent part, mix[1] for the branch; 1 and 1 under combine sum), and the mixture's bias is in
  the baseline.

Two classes: one column, the positive class's logit. K classes: one column per class's logit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentiment.data.batching import truncate
from sentiment.data.labels import LabelSpace
from sentiment.errors import SentimentError
from sentiment.inference.predict import Encoding, load_predictor, text_tokens

# Gauss-Legendre nodes of the path integral. 16 keeps completeness within 5% on IMDB reviews with the CPU recipe
# (docs/explain.md: the figures) at ~1/6 of a second per 400-token review on 2 cores.
DEFAULT_STEPS = 16
METHOD = "gausslegendre"
# interpolated copies of a review run through the recurrent stack at once: bounds memory (activations of
# INTERNAL_BATCH x length x hidden per layer) whatever --steps is
INTERNAL_BATCH = 64
# a logit difference smaller than this is measured against it: a review the model finds as neutral as padding
# would otherwise turn float rounding into a large relative error
COMPLETENESS_EPS = 1e-2


def captum_attr() -> Any:
    """captum.attr, or one line naming the extra that installs it."""
    try:
        import captum.attr
    except ImportError:
        raise SentimentError("explanations need Captum: pip install 'sentiment[explain]' (or pip install captum)") \
            from None
    return captum.attr


@dataclass
class Explanation:
    """One text's explanation. contributions[i][j]: token i's contribution to column j's logit (outputs[j]);
    each row sums the recurrent part's (Integrated Gradients) and the branch's (exact), each already scaled by
    the mixture. sum over i of contributions[i][j] = logits[j] - baseline_logits[j], up to completeness_error."""

    text: str
    tokens: list[str]  # every token the run's tokenizer gives, in order (lowercased if the run lowercases)
    read: list[bool]  # whether the recurrent part reads the token (inside its head+tail window of eval_max_len)
    classes: list[str]  # the run's label names
    probabilities: list[float]  # one per class
    label: str  # the most probable class (two classes: the positive one from probability 0.5)
    outputs: list[str]  # the class whose logit each column explains
    contributions: list[list[float]]  # [n_tokens][n_columns]
    rnn_contributions: list[list[float]] | None  # the recurrent part's share, None without one
    branch_contributions: list[list[float]] | None  # the n-gram branch's share, None without one
    logits: list[float]  # per column
    baseline_logits: list[float]  # the model's logits for the baseline (padding at the same length, no n-grams)
    completeness_error: float  # |sum - (logit - baseline)| / max(|logit - baseline|, COMPLETENESS_EPS), worst column
    rnn_completeness_error: float | None  # the same for the recurrent part alone (the branch is exact)
    method: str = f"integrated gradients ({METHOD}) + exact n-gram branch"
    steps: int = DEFAULT_STEPS
    mixture: list[float] = field(default_factory=lambda: [1.0, 1.0])  # the parts' weights (recurrent, branch)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: plain lists, floats and strings."""
        return asdict(self)

    def token_scores(self, column: int = 0) -> list[float]:
        """Each token's contribution to one column's logit."""
        return [row[column] for row in self.contributions]


@dataclass
class _Parts:
    """One text's inputs: its tokens, the positions each part reads, and their ids and hashes."""

    tokens: list[str]
    rnn_positions: np.ndarray  # token positions the recurrent part reads, in order
    branch_positions: np.ndarray  # token positions the branch reads, in order
    ids: np.ndarray  # vocab ids of every token
    hashes: np.ndarray | None  # token hashes of every token (for the branch)


class Explainer:
    """A loaded run, ready to explain texts (load_explainer)."""

    def __init__(self, model: Any, enc: Encoding, space: LabelSpace, device: Any = "cpu") -> None:
        self.model, self.enc, self.space, self.device = model, enc, space, torch.device(device)
        self.has_rnn = bool(getattr(model, "has_rnn", False))
        self.branch = getattr(model, "ngrams", None)
        self.num_outputs = int(model.num_outputs)
        self.outputs = [space.names[1]] if self.num_outputs == 1 else list(space.names)
        if getattr(model, "combine", "sum") == "mixture":
            self.mix = [float(v) for v in model.mix.tolist()]
        else:
            self.mix = [1.0, 1.0]

    # ------------------------------------------------------------ inputs
    def _parts(self, text: str, tokens: list[str]) -> _Parts:
        from sentiment.ngrams import hash_tokens

        n = len(tokens)
        window = truncate(np.arange(n), self.enc.max_len, self.enc.truncate)
        ids = np.asarray(self.enc.vocab.encode(tokens), dtype=np.int64)
        hashes = branch_positions = None
        if self.branch is not None:
            hashes = hash_tokens(tokens)
            branch_positions = np.arange(n) if self.branch.spec.whole_text else window
        return _Parts(tokens, window if self.has_rnn else np.zeros(0, np.int64),
                      branch_positions if branch_positions is not None else np.zeros(0, np.int64), ids, hashes)

    # ------------------------------------------------------------ explaining
    def explain(self, texts: Sequence[str], *, steps: int = DEFAULT_STEPS,
                max_tokens: int | None = None) -> list[Explanation]:
        """One Explanation per text, in order. Raises on an empty text (no tokens), a text of more than
        max_tokens tokens (a bound for callers such as a server), steps < 1, or Captum missing."""
        if isinstance(texts, str):
            raise SentimentError("explain takes a list of texts, not one string")
        if not texts:
            raise SentimentError("nothing to explain: no texts given")
        check_steps(steps)
        return self.explain_tokens(text_tokens(texts, self.enc), texts, steps=steps, max_tokens=max_tokens)

    def explain_tokens(self, all_tokens: Sequence[list[str]], texts: Sequence[str], *, steps: int = DEFAULT_STEPS,
                       max_tokens: int | None = None) -> list[Explanation]:
        """explain() of texts already tokenized as the run tokenizes (e.g. a split's rows, kept as tokens)."""
        check_steps(steps)
        attr = captum_attr() if self.has_rnn else None
        for i, tokens in enumerate(all_tokens):
            which = "the text" if len(texts) == 1 else f"text {i + 1}"
            if not tokens:
                raise SentimentError(f"nothing to explain: {which} is empty (no words)")
            if max_tokens is not None and len(tokens) > max_tokens:
                raise SentimentError(f"{which} has {len(tokens):,} tokens; at most {max_tokens:,} are explained")
        return [self._explain_one(text, self._parts(text, tokens), steps, attr)
                for text, tokens in zip(texts, all_tokens)]

    def _explain_one(self, text: str, parts: _Parts, steps: int, attr: Any) -> Explanation:
        n, cols = len(parts.tokens), self.num_outputs
        own: dict[str, torch.Tensor] = {}
        base: dict[str, torch.Tensor] = {}
        rnn = branch = None
        if self.has_rnn:
            rnn, own["rnn"], base["rnn"] = self._rnn(parts, steps, attr)
        if self.branch is not None:
            branch, own["branch"], base["branch"] = self._branch(parts)
        logits, baseline = self._mixed(own), self._mixed(base)
        weights = {"rnn": self.mix[0], "branch": self.mix[1]} if len(own) == 2 else {"rnn": 1.0, "branch": 1.0}
        total = np.zeros((n, cols))
        shares: dict[str, np.ndarray | None] = {"rnn": None, "branch": None}
        for name, share in (("rnn", rnn), ("branch", branch)):
            if share is not None:
                shares[name] = share * weights[name]
                total += shares[name]
        probs = self.space.probabilities(logits.numpy()[None, :] if cols > 1 else logits.numpy())[0]
        k = int(probs[1] >= 0.5) if self.space.binary else int(np.argmax(probs))
        rnn_error = None
        if rnn is not None:
            rnn_error = completeness(rnn.sum(0), (own["rnn"] - base["rnn"]).double().numpy())
        return Explanation(
            text=text, tokens=parts.tokens, read=_read_mask(n, parts.rnn_positions, self.has_rnn),
            classes=list(self.space.names), probabilities=[float(p) for p in probs], label=self.space.names[k],
            outputs=self.outputs, contributions=total.tolist(),
            rnn_contributions=None if shares["rnn"] is None else shares["rnn"].tolist(),
            branch_contributions=None if shares["branch"] is None else shares["branch"].tolist(),
            logits=logits.tolist(), baseline_logits=baseline.tolist(),
            completeness_error=completeness(total.sum(0), (logits - baseline).numpy()),
            rnn_completeness_error=rnn_error, steps=steps,
            method=(f"integrated gradients ({METHOD}, {steps} steps)" if self.has_rnn else "")
            + (" + " if self.has_rnn and self.branch is not None else "")
            + ("exact n-gram branch" if self.branch is not None else ""),
            mixture=list(weights.values()) if len(own) == 2 else [1.0 if self.has_rnn else 0.0,
                                                                  1.0 if self.branch is not None else 0.0])

    def _mixed(self, own: dict[str, torch.Tensor]) -> torch.Tensor:
        """The whole's logits [columns] (float64, CPU) from the parts', as SentimentRNN.mixed makes them."""
        own = {k: v.detach().double().cpu().reshape(self.num_outputs) for k, v in own.items()}
        if len(own) == 1:
            return next(iter(own.values()))
        if getattr(self.model, "combine", "sum") == "mixture":
            bias = self.model.mix_bias.detach().double().cpu().reshape(self.num_outputs)
            return self.mix[0] * own["rnn"] + self.mix[1] * own["branch"] + bias
        return own["rnn"] + own["branch"]

    def _rnn_logits(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The recurrent part's logits [B] (one output) or [B, K], before the mixture."""
        model = self.model
        out = model.fc(model.output_dropout(model.features(ids, lengths)))
        return out.squeeze(-1) if self.num_outputs == 1 else out

    def _rnn(self, parts: _Parts, steps: int, attr: Any) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """Integrated Gradients of the recurrent part: contributions [n_tokens, columns] (zero where unread), its
        logits [columns] and its baseline's logits [columns]."""
        model, cols = self.model, self.num_outputs
        read = parts.ids[parts.rnn_positions]
        ids = torch.as_tensor(read, device=self.device)[None, :].repeat(cols, 1)  # one row per column explained
        lengths = torch.full((cols,), len(read), dtype=torch.long)
        pad = torch.full_like(ids, model.pad_index)
        target = None if cols == 1 else list(range(cols))
        ig = attr.LayerIntegratedGradients(self._rnn_logits, model.embedding)
        # cuDNN's RNN backward refuses eval mode; the model stays in eval (dropout off) and runs without cuDNN
        with torch.backends.cudnn.flags(enabled=False):
            scores = ig.attribute(ids, baselines=pad, target=target, additional_forward_args=(lengths,),
                                  n_steps=steps, method=METHOD,
                                  internal_batch_size=max(INTERNAL_BATCH, cols))
            with torch.no_grad():
                logits = self._rnn_logits(ids[:1], lengths[:1])[0].reshape(cols)
                baseline = self._rnn_logits(pad[:1], lengths[:1])[0].reshape(cols)
        per_token = scores.sum(-1).detach().double().cpu().numpy()  # [cols, T]: row j explains column j
        out = np.zeros((len(parts.tokens), cols))
        out[parts.rnn_positions] = per_token.T
        return out, logits.detach().cpu(), baseline.detach().cpu()

    def _branch(self, parts: _Parts) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """The branch's exact contributions [n_tokens, columns], its logits and its baseline's (the bias)."""
        from sentiment.ngrams import NgramBatch, bags

        hashes = parts.hashes[parts.branch_positions]
        out, _ = branch_contributions(self.branch, hashes, parts.branch_positions, len(parts.tokens))
        spec = self.branch.spec
        batch = NgramBatch(*(torch.from_numpy(a) for a in bags(hashes, np.array([0, len(hashes)]), spec.n, spec.buckets)))
        with torch.no_grad():  # the logits as the model computes them: what the exact contributions must add up to
            logits = self.branch(batch.to(self.device))[0].reshape(self.num_outputs)
        return out, logits.double().cpu(), self.branch.bias.detach().double().cpu().reshape(self.num_outputs)


def ngram_occurrences(branch: Any, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every n-gram occurrence the branch reads in a text whose tokens (in the order the branch reads them) hash to
    `hashes`: (start index, n, its share of the branch's logits [O, outputs], float64). Each distinct n-gram's term
    of NgramBranch.forward (its weight, L2-normalised over the text, times its table row) is shared equally by its
    occurrences; the shares add up to the branch's logits minus its bias."""
    from sentiment.ngrams import ngram_ids

    spec, length = branch.spec, len(hashes)
    table = branch.table.weight
    if length == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, table.shape[1]))
    ids, _ = ngram_ids(hashes, np.array([0, length]), spec.n, spec.buckets)
    # ngram_ids lists a text's 1-grams at positions 0..L-1, then its 2-grams at 0..L-2, and so on
    orders = [k for k in range(1, spec.n + 1) if length - k + 1 > 0]
    starts = np.concatenate([np.arange(length - k + 1) for k in orders])
    sizes = np.concatenate([np.full(length - k + 1, k) for k in orders])
    distinct, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    scale = branch.scale.detach()[torch.as_tensor(distinct, device=table.device)].double().cpu().numpy()
    values = np.ones(len(distinct)) if branch.weighting == "nb" else counts.astype(np.float64)
    weights = values * scale
    if branch.norm == "l2":
        weights = weights / math.sqrt(max(float(np.square(weights).sum()), 1e-12))
    rows = table.detach()[torch.as_tensor(distinct, device=table.device)].double().cpu().numpy()
    terms = weights[:, None] * rows  # [U, outputs]: each distinct n-gram's term of the logits
    return starts, sizes, terms[inverse] / counts[inverse][:, None]


def branch_contributions(branch: Any, hashes: np.ndarray, positions: np.ndarray,
                         n_tokens: int) -> tuple[np.ndarray, torch.Tensor]:
    """The n-gram branch's exact contributions [n_tokens, outputs] for a text whose tokens at `positions` (in the
    order the branch reads them) hash to `hashes`, and its logits (bias included) [outputs], float64: each
    occurrence's share (ngram_occurrences) spread equally over its n tokens."""
    starts, sizes, shares = ngram_occurrences(branch, hashes)
    out = np.zeros((n_tokens, shares.shape[1]))
    for k in np.unique(sizes).tolist():
        rows = sizes == k
        share = shares[rows] / k
        for offset in range(k):
            np.add.at(out, positions[starts[rows] + offset], share)
    bias = branch.bias.detach().double().cpu()
    return out, bias + torch.as_tensor(shares.sum(0))


def check_steps(steps: Any) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise SentimentError(f"steps must be an integer >= 1, got {steps!r}")


def completeness(total: np.ndarray, difference: np.ndarray) -> float:
    """The worst column's |sum of contributions - (logit - baseline)| / max(|logit - baseline|, COMPLETENESS_EPS)."""
    total, difference = np.atleast_1d(total), np.atleast_1d(difference)
    return float(np.max(np.abs(total - difference) / np.maximum(np.abs(difference), COMPLETENESS_EPS)))


def _read_mask(n: int, positions: np.ndarray, has_rnn: bool) -> list[bool]:
    if not has_rnn:
        return [True] * n
    mask = np.zeros(n, dtype=bool)
    mask[positions] = True
    return mask.tolist()


def load_explainer(run_dir: Path, *, checkpoint: str = "best", device: str | None = None) -> Explainer:
    """A run's Explainer, loaded as predict loads it (load_predictor)."""
    predictor = load_predictor(Path(run_dir), checkpoint=checkpoint, device=device)
    return Explainer(predictor.model, predictor.enc, predictor.space, predictor.device)
