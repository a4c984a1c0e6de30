"""What an exported model's sidecar is (sentiment export writes it, sentiment.inference.exported reads it): the
formats, the graph's input and output names, the sidecar's version and where it lives."""

from __future__ import annotations

from pathlib import Path

FORMATS = ("onnx", "torch")
SIDECAR_SUFFIX = ".json"
SIDECAR_VERSION = 2  # 2: the sidecar holds the model's sha256
INPUTS = ("ids", "lengths")
NGRAM_INPUTS = ("ngram_ids", "ngram_offsets", "ngram_counts")
OUTPUT = "logits"


def sidecar_path(model_path: Path) -> Path:
    """Where the settings of an exported model live: PATH.json beside PATH."""
    return Path(str(model_path) + SIDECAR_SUFFIX)
