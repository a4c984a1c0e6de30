"""Which device a run uses: shared by training and inference (which must not import the training loop)."""

from __future__ import annotations

import torch

from sentiment.errors import SentimentError


def resolve_device(name: str) -> torch.device:
    """auto: CUDA, else MPS, else CPU; an explicit device that isn't there is an error, not a fallback."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SentimentError(f"run.device is {name!r} but CUDA is not available; use run.device=auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SentimentError("run.device is 'mps' but MPS is not available; use run.device=auto or cpu")
    return torch.device(name)
