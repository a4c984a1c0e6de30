"""Which device a run uses, and how the epoch table and results.json name it."""

import pytest
import torch

from sentiment.device import describe_device, resolve_device
from sentiment.errors import SentimentError


def test_describe_device_names_threads_and_autocast(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert describe_device(torch.device("cpu")) == "cpu (2 threads)"
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert describe_device(torch.device("cpu"), torch.bfloat16) == "cpu (1 thread, bf16 autocast)"


def test_describe_device_names_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert describe_device(torch.device("cuda"), torch.float16) == "cuda (NVIDIA H200, fp16 autocast)"
    assert describe_device(torch.device("cuda")) == "cuda (NVIDIA H200)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_an_absent_cuda_device_is_an_error_not_a_fallback():
    with pytest.raises(SentimentError, match="CUDA is not available"):
        resolve_device("cuda")
