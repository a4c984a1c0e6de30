"""Using a finished run: load its model from the run directory alone, and evaluate it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sentiment.runs import (BEST, LABELS_FILE, LAST, check_data_fingerprints, check_data_paths, check_membership,
                            load_checkpoint, load_labels, load_run)
from sentiment.config import Config
from sentiment.device import resolve_device
from sentiment.errors import SentimentError
from sentiment.inference.evaluate import Metrics, evaluate
from sentiment.floats import flush_denormals
from sentiment.data.labels import LabelSpace
from sentiment.model import SentimentRNN, build_model
from sentiment.data.vocab import Vocab


@dataclass
class LoadedRun:
    cfg: Config
    vocab: Vocab
    model: SentimentRNN
    device: torch.device
    label_space: LabelSpace


def load_trained(run_dir: Path, checkpoint: str = "best", device: str | None = None) -> LoadedRun:
    cfg, vocab = load_run(run_dir)
    space = load_labels(run_dir)
    flush_denormals(cfg.run.flush_denormal)  # before torch starts its threads, which copy the flag
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    dev = resolve_device(device or cfg.run.device)
    if checkpoint not in ("best", "last"):
        raise SentimentError(f"checkpoint must be best or last, got {checkpoint!r}")
    path = Path(run_dir) / (BEST if checkpoint == "best" else LAST)
    state = load_checkpoint(path, vocab, map_location=dev)
    check_output_width(state["model"], space, path)
    model = build_model(cfg, len(vocab), vocab.pad_index, space.num_outputs)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]  # the first mismatch, not the header
        raise SentimentError(f"checkpoint in {run_dir} does not fit the model its config describes: "
                             f"{lines[1] if len(lines) > 1 else lines[0]}") from None
    model.to(dev).eval()
    return LoadedRun(cfg, vocab, model, dev, space)


def check_output_width(weights: dict, space: LabelSpace, path: Path) -> None:
    """labels.json and the checkpoint's output layer must agree: its bias has one entry per output (1 for
    two classes, K for K classes), in the classifier (fc) and in the n-gram branch alike."""
    for key in ("fc.bias", "ngrams.bias"):
        bias = weights.get(key) if isinstance(weights, dict) else None
        if isinstance(bias, torch.Tensor) and bias.dim() == 1 and bias.shape[0] != space.num_outputs:
            width = bias.shape[0]
            classes = 2 if width == 1 else width
            raise SentimentError(f"{path.parent / LABELS_FILE} names {space.num_classes} classes, but {path.name} was "
                                 f"trained for {classes} ({width} output{'s' if width != 1 else ''}): the run's label "
                                 "file does not belong to its checkpoint")


def evaluate_run(run_dir: Path, *, split: str = "test", checkpoint: str = "best", batch_size: int | None = None,
                 device: str | None = None, allow_changed_data: bool = False) -> Metrics:
    """The run's metrics on a split of its own data, refused if that split's rows, texts or labels are not
    the ones it was trained with (allow_changed_data: score changed texts and labels anyway)."""
    from sentiment.data.prepare import prepare_data

    run = load_trained(run_dir, checkpoint, device)
    check_data_paths(run_dir, run.cfg)  # a relative path stored from another directory: named, with that directory
    data = prepare_data(run.cfg.data, run.vocab, label_space=run.label_space, with_unlabeled=False,
                        token_hashes=run.cfg.model.ngrams is not None)
    check_data_fingerprints(run_dir, data.fingerprints, (split,), allow_changed=allow_changed_data)
    if not allow_changed_data:
        check_membership(run_dir, data.membership, (split,))
    if split == "test" and not len(data.test):
        raise SentimentError(f"{run_dir}'s data has no test split (data.test_file is null and data.test_fraction 0): "
                             "evaluate --split valid, or --data a labeled file")
    return evaluate(run.model, getattr(data, split), run.label_space, batch_size=batch_size or run.cfg.train.eval_batch_size,
                    device=run.device, max_len=run.cfg.data.eval_max_len, truncate=run.cfg.data.truncate, parts=True)
