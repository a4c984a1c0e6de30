"""Adam whose cost grows with the rows a step touches, not with the table: for the n-gram branch's table, whose
gradient (nn.EmbeddingBag(sparse=True)) is a sparse tensor holding only the batch's rows.

- `LazyAdam`: Adam's update, with Adam's coupled L2 penalty (grad += weight_decay * w), on the rows a sparse
  gradient names, and nothing else: a row no text of the batch holds keeps its weights and its moments (they do
  not decay on that step), as torch.optim.SparseAdam (which has no weight decay, and adds eps before the bias
  correction where Adam adds it after: here it is Adam's formula). The step count, and so the bias correction, is
  the optimizer's (one per step), as SparseAdam's. Its state is Adam's (step, exp_avg, exp_avg_sq per parameter).
- `AdamWithLazyRows`: torch.optim.Adam for the dense parameters (fused on the engine's lazy path) and LazyAdam for
  the groups marked `"sparse": True`, as one optimizer: one list of param_groups in the order given (an LR
  scheduler scales every group), one found_inf (the lazy path's non-finite step is skipped by both), and one
  state_dict in torch.optim.Adam's format, so a checkpoint reads the same whichever of the two stepped a group.
- `build_optimizer`: the one the engine (and the benchmarks) use: plain torch.optim.Adam when no group is sparse
  (checkpoints and results as before), else AdamWithLazyRows.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch


class LazyAdam(torch.optim.Optimizer):
    """Adam (coupled L2 weight decay) on the rows of each parameter that its sparse gradient touches."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid LazyAdam settings: lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self.found_inf: torch.Tensor | None = None  # set by the engine's lazy path: 1.0 skips the step

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        grad = p.grad
        if not grad.is_sparse:
            raise RuntimeError("LazyAdam steps parameters whose gradients are sparse (nn.EmbeddingBag(sparse=True)); "
                               "use torch.optim.Adam for dense ones")
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if state["step"].device != p.device:  # a checkpoint loaded on the CPU keeps its step there
            state["step"] = state["step"].to(p.device)
        step, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
        skip = self.found_inf
        step.add_(1 if skip is None else 1 - skip.to(step))  # as fused Adam: a skipped step is not counted
        grad = grad.coalesce()  # one value per row (a row in two texts of the batch: their sum)
        rows, g = grad.indices()[0], grad.values()
        if rows.numel() == 0:
            return
        beta1, beta2 = group["betas"]
        w, m, v = p.index_select(0, rows), exp_avg.index_select(0, rows), exp_avg_sq.index_select(0, rows)
        if group["weight_decay"]:
            g = g.add(w, alpha=group["weight_decay"])  # the L2 penalty, on the rows this step touches
        new_m = m.lerp(g, 1 - beta1)
        new_v = v.mul(beta2).addcmul_(g, g, value=1 - beta2)
        if skip is None:  # torch.optim.Adam's arithmetic (single-tensor, not capturable), to the last bit
            t = float(step)
            denom = (new_v.sqrt() / (1 - beta2 ** t) ** 0.5).add_(group["eps"])
            new_w = w.addcdiv(new_m, denom, value=-group["lr"] / (1 - beta1 ** t))
        else:  # the step count stays on the device, as fused Adam's
            denom = (new_v.sqrt() / (1 - beta2 ** step).sqrt()).add_(group["eps"])
            new_w = w - new_m / denom * (group["lr"] / (1 - beta1 ** step))
            # a skipped step leaves the rows as they were, decided on the device without a wait
            keep = skip == 0
            new_w, new_m, new_v = (torch.where(keep, new, old) for new, old in ((new_w, w), (new_m, m), (new_v, v)))
        p.index_copy_(0, rows, new_w)
        exp_avg.index_copy_(0, rows, new_m)
        exp_avg_sq.index_copy_(0, rows, new_v)


class AdamWithLazyRows(torch.optim.Optimizer):
    """torch.optim.Adam for the groups with dense gradients, LazyAdam for those marked "sparse": True, behind one
    optimizer interface (step, zero_grad, param_groups, found_inf, state_dict, load_state_dict)."""

    def __init__(self, groups: list[dict[str, Any]], *, lr: float, weight_decay: float = 0.0,
                 fused: bool = False) -> None:
        dense: list[dict[str, Any]] = []
        lazy: list[dict[str, Any]] = []
        self._order: list[tuple[str, int]] = []  # each group's optimizer and its index there, in the given order
        for group in groups:
            group = dict(group)
            kind = "lazy" if group.pop("sparse", False) else "dense"
            part = lazy if kind == "lazy" else dense
            self._order.append((kind, len(part)))
            part.append(group)
        self.parts: dict[str, torch.optim.Optimizer] = {}
        if dense:
            self.parts["dense"] = torch.optim.Adam(dense, lr=lr, weight_decay=weight_decay,
                                                   **({"fused": True} if fused else {}))
        if lazy:
            self.parts["lazy"] = LazyAdam(lazy, lr=lr, weight_decay=weight_decay)
        super().__init__(self._groups(), {"lr": lr, "weight_decay": weight_decay})
        self._found_inf: torch.Tensor | None = None

    def _groups(self) -> list[dict[str, Any]]:
        """The parts' own group dicts (the same objects: what a scheduler sets there, they step with)."""
        return [self.parts[kind].param_groups[i] for kind, i in self._order]

    @property
    def found_inf(self) -> torch.Tensor | None:
        return self._found_inf

    @found_inf.setter
    def found_inf(self, value: torch.Tensor | None) -> None:
        self._found_inf = value
        for part in self.parts.values():
            part.found_inf = value

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self.parts.values():
            part.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """torch.optim.Adam's format over all groups in their order (parameters numbered across them)."""
        inner = {kind: part.state_dict() for kind, part in self.parts.items()}
        state: dict[int, Any] = {}
        groups, number = [], 0
        for kind, i in self._order:
            group = dict(inner[kind]["param_groups"][i])
            numbers = []
            for own in group["params"]:
                if own in inner[kind]["state"]:
                    state[number] = inner[kind]["state"][own]
                numbers.append(number)
                number += 1
            groups.append({**group, "params": numbers})
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """An Adam-format state dict (ours, or torch.optim.Adam's over the same groups) split between the parts."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self._order):
            raise ValueError(f"the saved optimizer has {len(saved_groups)} parameter groups, this one "
                             f"{len(self._order)}")
        per = {kind: {"state": {}, "param_groups": []} for kind in self.parts}
        counts = dict.fromkeys(self.parts, 0)
        for (kind, _), saved in zip(self._order, saved_groups):
            numbers = []
            for number in saved["params"]:
                if number in state_dict["state"]:
                    per[kind]["state"][counts[kind]] = state_dict["state"][number]
                numbers.append(counts[kind])
                counts[kind] += 1
            per[kind]["param_groups"].append({**saved, "params": numbers})
        for kind, part in self.parts.items():
            part.load_state_dict(per[kind])
        self.param_groups = self._groups()  # load_state_dict gave the parts new group dicts
        self.found_inf = self._found_inf


def build_optimizer(groups: list[dict[str, Any]], *, lr: float, weight_decay: float = 0.0,
                    fused: bool = False) -> torch.optim.Optimizer:
    """torch.optim.Adam over `groups` (fused: on the engine's lazy CUDA path), or AdamWithLazyRows when a group is
    marked "sparse": True (its parameters' gradients are sparse)."""
    if any(g.get("sparse") for g in groups):
        return AdamWithLazyRows(groups, lr=lr, weight_decay=weight_decay, fused=fused)
    return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, **({"fused": True} if fused else {}))
