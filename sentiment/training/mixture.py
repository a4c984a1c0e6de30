"""The mixture of a model's two parts (model.combine: mixture): logits = w_rnn * rnn + w_branch * branch + bias.

Each part trains on its own loss; after every epoch the weights and bias are fit on the validation split by
logistic regression on the parts' logits (two weights and one bias per output: a handful of numbers on thousands of
rows), as Mesnil et al. (2014) weigh their ensemble on validation. Trained on the sum of their logits instead, the
n-gram branch fits the training set within two epochs and the recurrent part learns little (docs/results.md).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sentiment.data.labels import LabelSpace


def fit_mixture(rnn: np.ndarray, branch: np.ndarray, labels: np.ndarray, space: LabelSpace,
                l2: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """(weights [2], bias [outputs]) minimising the mean cross-entropy of w0 * rnn + w1 * branch + bias on these
    rows (logits [N] for two classes, [N, K] for more), with a tiny L2 penalty on the weights' distance from 1 that
    keeps them finite where the split is separable (a stronger one held a useless part near 1 on a small split). Deterministic: float64 L-BFGS from (1, 1, 0) on the
    CPU, so every process that fits the same logits gets the same numbers."""
    z = torch.from_numpy(np.stack([np.asarray(rnn), np.asarray(branch)]).astype(np.float64))  # [2, N(, K)]
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    outputs = 1 if space.binary else z.shape[-1]
    weights = torch.ones(2, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(outputs, dtype=torch.float64, requires_grad=True)
    if len(y) == 0:
        return np.ones(2, np.float32), np.zeros(outputs, np.float32)
    optimizer = torch.optim.LBFGS([weights, bias], lr=1.0, max_iter=200, tolerance_grad=1e-10,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        mixed = (weights.view(2, *([1] * (z.dim() - 1))) * z).sum(0)
        if space.binary:
            loss = F.binary_cross_entropy_with_logits(mixed + bias[0], y.double())
        else:
            loss = F.cross_entropy(mixed + bias, y)
        loss = loss + l2 * (weights - 1).square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weights.detach().numpy().astype(np.float32), bias.detach().numpy().astype(np.float32)
