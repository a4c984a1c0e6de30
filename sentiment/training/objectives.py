"""What a training step minimises: the supervised loss, and the objectives that compose on top of it.

- adversarial (AT, Goodfellow et al. 2015; Miyato et al. 2017): the supervised loss again, on the embedded
  review moved by r = epsilon * g / ||g||, g the loss gradient with respect to the embeddings;
- virtual adversarial (VAT, Miyato et al. 2017): KL(p(x) || p(x + r)), r of norm epsilon in the direction
  that changes the prediction most, found by power iteration from a random probe of norm xi. It needs no
  labels, so it runs on the unlabeled batch (or on the labeled one when there is no unlabeled text);
- entropy minimisation (Grandvalet & Bengio 2005; Sachan et al. 2019): the entropy of the predictions on the
  unlabeled batch.

Perturbations live on the embedded batch after embedding dropout and are normalised per review over its
true length (padding gets none). Every forward of one VAT computation replays the same random state, so
the clean and perturbed predictions share their dropout masks: the divergence is exactly 0 at r = 0, and
the probe measures the perturbation, not dropout noise. Two classes use the sigmoid, K classes the softmax.

Each is an objective of the training engine (sentiment.training.engine): `objective(model, batch) -> (loss,
stats)`. `Supervised` is the plain loss; `ExtraObjectives` composes the others on top of it and runs its own
backward passes (the adversarial direction needs the gradient of a first one) through the engine's `backward`,
which scales for accumulation and mixed precision.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from sentiment.config import TrainConfig
from sentiment.errors import SentimentError
from sentiment.data.labels import LabelSpace
from sentiment.ngrams import NgramBatch

# metrics.jsonl columns, in this order, for the objectives a run has on
COLUMNS = {"adversarial": "train_adversarial_loss", "virtual_adversarial": "train_virtual_adversarial_loss",
           "entropy_minimization": "train_entropy"}


@dataclass
class Batch:
    ids: torch.Tensor  # [B, T] on the device
    lengths: torch.Tensor  # [B] on the CPU
    labels: torch.Tensor | None = None  # [B] class indices on the device; None for unlabeled texts
    unlabeled: "Batch | None" = None  # the unlabeled texts read beside this labeled batch, if any
    ngrams: NgramBatch | None = None  # the n-gram branch's input (sentiment.ngrams), on the device; unperturbed
    # what this batch's loss is scaled by in the backward pass: under DDP, world size x this rank's share of the
    # step's rows, so each row weighs the same whichever rank reads it, as in one process over the union
    weight: float = 1.0

    @property
    def inputs(self) -> dict:
        """The model's inputs besides ids, lengths and embedded."""
        return {} if self.ngrams is None else {"ngrams": self.ngrams}

    @property
    def rows(self) -> int:
        return int(self.ids.shape[0])

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())  # lengths are on the CPU: no wait


class Supervised:
    """The supervised loss: (model, batch) -> (mean loss, {"correct": rows predicted right}), tensors, so the engine
    reads them when it reports and no step waits for the device."""

    columns: dict[str, str] = {}
    backward_inside = False

    def __init__(self, space: LabelSpace, class_weights: torch.Tensor | None = None, per_part: bool = False) -> None:
        # per_part (model.combine mixture): the loss is the sum of each part's own loss, so each learns all it can
        # alone; the rows counted correct are the whole's (as its current mixture weighs the parts)
        self.space, self.class_weights, self.per_part = space, class_weights, per_part

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.per_part:
            out = model(batch.ids, batch.lengths, **batch.inputs, parts=True)
            loss = sum(self.space.loss(out[name], batch.labels, self.class_weights) for name in ("rnn", "branch"))
            return loss, {"correct": self.space.correct(out["whole"].detach(), batch.labels)}
        logits = model(batch.ids, batch.lengths, **batch.inputs)
        return (self.space.loss(logits, batch.labels, self.class_weights),
                {"correct": self.space.correct(logits.detach(), batch.labels)})


def unit_perturbation(g: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """g [B, T, E] scaled to L2 norm 1 per review over its first `lengths` positions; zero at padding (and for a
    review whose gradient is all zero, or not finite: fp16's scaled gradients can overflow)."""
    g = torch.nan_to_num(g.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
    positions = torch.arange(g.shape[1], device=g.device)
    mask = positions[None, :] < lengths.to(g.device)[:, None]
    g = g * mask.unsqueeze(-1)
    norm = g.square().sum(dim=(1, 2), keepdim=True).sqrt()
    return g / norm.clamp_min(1e-12)


def divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Mean KL(p || q) between the predictions the logits make (one logit: sigmoid; K: softmax), in float32."""
    p_logits, q_logits = p_logits.float(), q_logits.float()
    if p_logits.dim() == 1:
        p = torch.sigmoid(p_logits)
        kl = (p * (F.logsigmoid(p_logits) - F.logsigmoid(q_logits))
              + (1 - p) * (F.logsigmoid(-p_logits) - F.logsigmoid(-q_logits)))
        return kl.mean()
    log_p = F.log_softmax(p_logits, dim=-1)
    return (log_p.exp() * (log_p - F.log_softmax(q_logits, dim=-1))).sum(dim=-1).mean()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the predictions the logits make, in float32."""
    logits = logits.float()
    if logits.dim() == 1:
        p = torch.sigmoid(logits)
        return -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits)).mean()
    log_p = F.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1).mean()


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


@contextmanager
def _replay(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> Iterator[None]:
    """Random draws inside repeat those made from `state` (the same dropout masks); afterwards the generators
    continue where they were before entering."""
    before = _rng_state(device)
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)
    try:
        yield
    finally:
        torch.set_rng_state(before[0])
        if before[1] is not None:
            torch.cuda.set_rng_state(before[1], device)


Backward = Callable[..., None]  # backward(loss, retain_graph=False): the loop's scaled backward pass


class ExtraObjectives:
    """The supervised loss with AT, VAT and entropy minimisation, as train.adversarial, .virtual_adversarial and
    .entropy_minimization say. `step` returns (supervised loss, rows predicted right, {objective: its loss}),
    all tensors, after back-propagating weight * loss of each."""

    def __init__(self, cfg: TrainConfig, space: LabelSpace, class_weights: torch.Tensor | None = None, *,
                 has_unlabeled: bool = False) -> None:
        self.adversarial = cfg.adversarial
        self.virtual_adversarial = cfg.virtual_adversarial
        self.entropy_minimization = cfg.entropy_minimization
        self.space = space
        self.class_weights = class_weights
        self.has_unlabeled = has_unlabeled
        self.checked_probe = False
        self.names = [name for name in COLUMNS if getattr(cfg, name) is not None]
        self.columns = {name: COLUMNS[name] for name in self.names}

    backward_inside = True  # the engine averages gradients across ranks itself

    def __call__(self, model: nn.Module, batch: Batch, *,
                 backward: Backward) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The engine's objective: `step` on the batch and the unlabeled one read beside it."""
        loss, correct, parts = self.step(model, batch, batch.unlabeled, backward)
        return loss, {"correct": correct, **parts}

    @property
    def wants_unlabeled_batch(self) -> bool:
        return self.has_unlabeled and (self.virtual_adversarial is not None or self.entropy_minimization is not None)

    def step(self, model: nn.Module, batch: Batch, unlabeled: Batch | None,
             backward: Backward) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        space, device = self.space, batch.ids.device
        parts: dict[str, torch.Tensor] = {}
        x = model.embed(batch.ids)
        if self.adversarial is not None:
            if x.requires_grad:
                x.retain_grad()
            else:  # frozen embeddings: the perturbation still needs the gradient with respect to them
                x.requires_grad_()
        # the random state before the recurrent stack's dropout, which VAT on this batch replays
        labeled_state = _rng_state(device) if self.virtual_adversarial is not None and unlabeled is None else None
        logits = model(batch.ids, batch.lengths, embedded=x, **batch.inputs)
        supervised = space.loss(logits, batch.labels, self.class_weights)
        correct = space.correct(logits.detach(), batch.labels)
        terms = []
        if self.adversarial is not None:
            # one backward gives both the weights' gradient and the embeddings' (x.grad); the graph is kept for
            # the adversarial loss, which reaches the embedding matrix through x
            backward(supervised, retain_graph=True)
            grad = x.grad if x.grad is not None else torch.zeros_like(x)
            r = self.adversarial.epsilon * unit_perturbation(grad, batch.lengths).to(x.dtype)
            adversarial = space.loss(model(batch.ids, batch.lengths, embedded=x + r, **batch.inputs), batch.labels,
                                     self.class_weights)
            parts["adversarial"] = adversarial.detach()
            terms.append(self.adversarial.weight * adversarial)
        else:
            terms.append(supervised)

        if self.virtual_adversarial is not None or self.entropy_minimization is not None:
            if unlabeled is not None:
                xu = model.embed(unlabeled.ids)
                state = _rng_state(device)
                logits_u = model(unlabeled.ids, unlabeled.lengths, embedded=xu, **unlabeled.inputs)
                target = unlabeled
            else:  # no unlabeled text: the labeled batch, its predictions and its dropout masks
                xu, state, logits_u, target = x, labeled_state, logits, batch
            if self.entropy_minimization is not None:
                ent = entropy(logits_u)
                parts["entropy_minimization"] = ent.detach()
                terms.append(self.entropy_minimization.weight * ent)
            if self.virtual_adversarial is not None:
                vat = self.virtual_adversarial
                r = vat.epsilon * self.vat_direction(model, target, xu.detach(), logits_u.detach(), state)
                with _replay(state, device):
                    perturbed = model(target.ids, target.lengths, embedded=xu + r.to(xu.dtype),
                                      **target.inputs)
                loss = divergence(logits_u.detach(), perturbed)
                parts["virtual_adversarial"] = loss.detach()
                terms.append(vat.weight * loss)
        backward(sum(terms[1:], terms[0]))
        return supervised.detach(), correct, parts

    def vat_direction(self, model: nn.Module, batch: Batch, x: torch.Tensor, clean_logits: torch.Tensor,
                      state: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
        """The unit direction (per review) in which the prediction changes most, by power iteration. Under mixed
        precision it runs in float32: a probe of norm xi spread over a review's positions is far below bf16's
        resolution, and x + d would round back to x."""
        vat, device = self.virtual_adversarial, x.device
        amp = torch.is_autocast_enabled(device.type)
        exact = torch.autocast(device.type, enabled=False) if amp else nullcontext()
        x = x.float() if amp else x
        if amp:
            with torch.no_grad(), exact, _replay(state, device):
                clean_logits = model(batch.ids, batch.lengths, embedded=x, **batch.inputs)
        d = torch.randn_like(x)
        for _ in range(vat.power_iterations):
            d = (vat.xi * unit_perturbation(d, batch.lengths)).to(x.dtype).requires_grad_()
            if not self.checked_probe:
                self._check_probe(x, d.detach(), batch.lengths)
            with exact, _replay(state, device):
                kl = divergence(clean_logits, model(batch.ids, batch.lengths, embedded=x + d, **batch.inputs))
            (d,) = torch.autograd.grad(kl, d)
        self.checked_probe = True
        return unit_perturbation(d, batch.lengths)

    def _check_probe(self, x: torch.Tensor, d: torch.Tensor, lengths: torch.Tensor) -> None:
        """Once per run: a probe lost in float32 rounding (x + d == x) leaves VAT doing nothing, silently. Padding
        and the embeddings dropout zeroed are left out: a probe survives there at any size, which proves nothing."""
        positions = torch.arange(x.shape[1], device=x.device)
        nonzero = (x != 0) & (positions[None, :] < lengths.to(x.device)[:, None]).unsqueeze(-1)
        if not bool(nonzero.any()):
            return
        changed = float(((x + d) != x)[nonzero].float().mean())
        if changed < 0.5:
            xi = self.virtual_adversarial.xi
            raise SentimentError(f"train.virtual_adversarial.xi={xi} is too small: adding the probe changes only "
                                 f"{changed:.0%} of the embedding values in float32, so VAT would do (almost) "
                                 "nothing; raise xi (0.1 to 10 suit normalised embeddings)")
