"""Which device a run uses: shared by training and inference (which must not import the training loop)."""

from __future__ import annotations

import re

import torch

from sentiment.errors import SentimentError


def resolve_device(name: str) -> torch.device:
    """auto: CUDA, else MPS, else CPU; an explicit device that isn't there is an error, not a fallback."""
    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]+)?", name):
        raise SentimentError(f"device {name!r} is not one this tool runs on: use auto, cpu, cuda, cuda:N or mps")
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


def describe_device(device: torch.device, autocast: torch.dtype | None = None) -> str:
    """What ran the steps, for the epoch table and results.json: "cuda (NVIDIA H200, bf16 autocast)",
    "cpu (2 threads)"."""
    if device.type == "cuda":
        parts = [torch.cuda.get_device_name(device)]
    elif device.type == "cpu":
        parts = [f"{torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''}"]
    else:
        parts = []
    if autocast is not None:
        short = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(autocast, str(autocast).removeprefix("torch."))
        parts.append(f"{short} autocast")
    return f"{device.type} ({', '.join(parts)})" if parts else device.type
