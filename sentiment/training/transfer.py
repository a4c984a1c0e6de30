"""Fine-tuning from a pretrained encoder (`model.init_from`), and ULMFiT's gentle fine-tuning options.

- `init_from`: a run directory of `sentiment pretrain` or a finished classifier run. Its vocabulary becomes the
  run's (data.vocab_* and data.glove_* keys that would build another are ignored, and the run says so), its
  embedding and recurrent weights are copied bitwise into the classifier, and the head starts fresh. A model shape
  that does not match the pretrained one is one error naming the config key.
- A pretrained language model of more than one layer has two one-direction stacks (sentiment.training.lm); the
  classifier's upper layers read both directions of the layer below, so each direction gets its pretrained
  weights on its own direction's inputs and zeros on the other's: the classifier starts as the two stacks and
  learns the cross-connections.
- A fine-tune whose validation or test texts were pretraining text is refused (PRETRAIN_TEXTS in the pretrain run),
  and so is one whose validation or test texts a classifier run it starts from trained on with their labels (another
  split_seed, a carved test split): TRAIN_TEXTS in that run, or for runs written before it, its splits.npz rows when
  the two runs read the same data.
- Discriminative learning rates (`train.layer_lr_decay`) and gradual unfreezing (`model.gradual_unfreeze`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from sentiment.errors import SentimentError
from sentiment.runs import PRETRAIN_TEXTS, TRAIN_TEXTS  # sorted uint64 fingerprints of the texts a run trained on

if TYPE_CHECKING:
    from sentiment.config import Config
    from sentiment.data.prepare import PreparedData
    from sentiment.data.vocab import Vocab
    from sentiment.model import SentimentRNN

ENCODER_PREFIXES = ("embedding.", "layers.")
VOCAB_KEYS = ("vocab_max_size", "vocab_from", "vocab_min_freq", "vocab_glove_extra", "glove_unk_init")
# keys of the pretrained run that the fine-tune must share, with what each decides
SHARED_KEYS = (("model.rnn", "the recurrent cell"), ("model.hidden_size", "the recurrent width"),
               ("model.num_layers", "the number of layers"), ("data.lowercase", "the tokens the vocabulary holds"))


def pretrained_checkpoint(run_dir: Path) -> Path:
    from sentiment.runs import BEST, LAST

    run_dir = Path(run_dir)
    for name in (BEST, LAST):
        if (run_dir / name).is_file():
            return run_dir / name
    raise SentimentError(f"model.init_from: {run_dir} has no {BEST} or {LAST} (no finished epoch to start from)")


def init_vocab(cfg: "Config") -> "Vocab":
    """The vocabulary of model.init_from's run, checked against the config keys the two runs must share."""
    from sentiment.config import eval_key
    from sentiment.runs import load_run

    run_dir = Path(cfg.model.init_from)
    saved, vocab = load_run(run_dir, pretraining=None)  # a pretraining run, or a classifier run
    for key, what in SHARED_KEYS:
        mine, theirs = eval_key(cfg, key), eval_key(saved, key)
        if mine != theirs:
            raise SentimentError(f"config key {key} is {mine!r} but model.init_from's run {run_dir} has {theirs!r} "
                                 f"({what}): set {key}={theirs}")
    return vocab


def ignored_keys_note(cfg: "Config") -> str | None:
    """The data keys a fine-tune from init_from does not use (they would build another vocabulary), if any are set."""
    from sentiment.config import DataConfig

    default = DataConfig()
    changed = [f"data.{k}" for k in VOCAB_KEYS if getattr(cfg.data, k) != getattr(default, k)]
    if not changed:
        return None
    return (f"{', '.join(changed)} not used: the vocabulary and embedding come from model.init_from "
            f"({cfg.model.init_from})")


def load_encoder(model: "SentimentRNN", run_dir: Path, vocab: "Vocab") -> dict[str, Any]:
    """Copy the embedding and recurrent weights of run_dir's checkpoint into `model` (bitwise); the head stays as
    built. Returns what was loaded (for results.json)."""
    from sentiment.runs import load_checkpoint

    path = pretrained_checkpoint(run_dir)
    checkpoint = load_checkpoint(path, vocab)
    source = {k: v for k, v in checkpoint["model"].items() if k.startswith(ENCODER_PREFIXES)}
    language_model = checkpoint.get("task") == "pretrain"
    target = model.state_dict()
    wanted = [k for k in target if k.startswith(ENCODER_PREFIXES)]
    missing = [k for k in wanted if k not in source]
    if missing:
        raise SentimentError(f"model.init_from: {path} has no {missing[0]} (model.num_layers or model.bidirectional "
                             "differ from the pretrained run's)")
    hidden = model.hidden_size
    with torch.no_grad():
        for key in wanted:
            src, dst = source[key], target[key]
            if src.shape != dst.shape:
                src = _widen(key, src, dst, hidden)
            dst.copy_(src)
    return {"init_from": str(Path(run_dir)), "checkpoint": path.name, "language_model": language_model,
            "epoch": checkpoint.get("loop", {}).get("epoch")}


def _widen(key: str, src: torch.Tensor, dst: torch.Tensor, hidden: int) -> torch.Tensor:
    """A one-direction stack's upper-layer input weights [G*H, H] placed into the classifier's [G*H, 2H]: its own
    direction's columns (forward: the first H, backward: the last H), zeros for the other's."""
    parts = key.split(".")  # layers.{l}.{d}.weight_ih_l0
    upper = parts[0] == "layers" and int(parts[1]) > 0 and parts[-1] == "weight_ih_l0"
    if not upper or src.shape[0] != dst.shape[0] or src.shape[1] != hidden or dst.shape[1] % hidden:
        raise SentimentError(f"model.init_from: {key} is {list(src.shape)} in the pretrained run but "
                             f"{list(dst.shape)} here: {_which_key(key)} differs from the pretrained run's")
    direction = int(parts[2])
    out = torch.zeros_like(dst)
    out[:, direction * hidden:(direction + 1) * hidden] = src
    return out


def _which_key(key: str) -> str:
    if key.startswith("embedding."):
        return "the embedding size (data.glove_dim or model.embed_dim)"
    return "model.rnn, model.hidden_size or model.bidirectional"


def check_not_pretrained_on(run_dir: Path, data: "PreparedData", cfg: "Config | None" = None) -> None:
    """Refuse validation or test texts that init_from's run trained on: its language model's text, or a classifier
    run's labeled training texts (another data.split_seed or test carve moves them into validation or test)."""
    from sentiment.training.lm import text_fingerprints

    run_dir = Path(run_dir)
    pretrained = (run_dir / PRETRAIN_TEXTS).is_file()
    path = run_dir / (PRETRAIN_TEXTS if pretrained else TRAIN_TEXTS)
    if not path.is_file():
        return _check_rows_not_trained_on(run_dir, data, cfg)
    seen = np.load(path, allow_pickle=False)
    for name, split in (("validation", data.valid), ("test", data.test)):
        if len(split) == 0:
            continue
        overlap = int(np.isin(text_fingerprints(split), seen).sum())
        if overlap and pretrained:
            raise SentimentError(f"{overlap:,} {name} text(s) were pretraining text of {run_dir}: their figures would "
                                 "flatter the model. Fine-tune with the pretrain run's data split (data.split_seed, "
                                 "data.valid_fraction), or pretrain again")
        if overlap:
            raise _trained_on(overlap, name, run_dir)


def _trained_on(overlap: int, name: str, run_dir: Path) -> SentimentError:
    return SentimentError(f"{overlap:,} {name} text(s) were training texts (with their labels) of model.init_from's "
                          f"run {run_dir}: their figures would flatter the model. Fine-tune with that run's data split "
                          "(data.split_seed, valid_fraction, test_fraction, the same files), or start from a run "
                          "that never trained on them")


def _check_rows_not_trained_on(run_dir: Path, data: "PreparedData", cfg: "Config | None") -> None:
    """A classifier run written before TRAIN_TEXTS: its splits.npz rows, comparable when both runs read the same
    data (the same dataset, files and directory, so rows are numbered alike)."""
    from sentiment.runs import SPLITS_FILE, load_run, load_split_membership

    if cfg is None or not (run_dir / SPLITS_FILE).is_file() or not data.membership:
        return
    saved, _ = load_run(run_dir, pretraining=None)
    same = ("dataset", "data_dir", "train_file", "valid_file", "test_file", "hf_dataset", "hf_config")
    if any(getattr(saved.data, k, None) != getattr(cfg.data, k, None) for k in same):
        return  # other data: its row numbers say nothing here
    trained = load_split_membership(run_dir).get("train")
    for split, name in (("valid", "validation"), ("test", "test")):
        rows = data.membership.get(split)
        overlap = int(np.isin(rows, trained).sum()) if rows is not None and trained is not None else 0
        if overlap:
            raise _trained_on(overlap, name, run_dir)


def write_trained_texts(run_dir: Path, data: "PreparedData") -> None:
    """A classifier run's training texts, as fingerprints (a fine-tune from it checks its held-out texts against
    them); texts equal to one of its own validation or test texts are left out: a fine-tune on the same splits
    is not refused for the data's own repeats."""
    from sentiment.atomic import atomic_write
    from sentiment.training.lm import text_fingerprints

    held_out = [text_fingerprints(s) for s in (data.valid, data.test) if len(s)]
    trained = np.unique(text_fingerprints(data.train))
    if held_out:
        trained = trained[~np.isin(trained, np.concatenate(held_out))]
    atomic_write(Path(run_dir) / TRAIN_TEXTS, lambda f: np.save(f, trained, allow_pickle=False))


# ---------------------------------------------------------------- ULMFiT's fine-tuning options
def layer_groups(model: "SentimentRNN") -> list[list[nn.Parameter]]:
    """The classifier's parameters from the top: the head (everything not in the encoder), the recurrent layers top
    down, the embedding."""
    encoder = {id(p) for p in model.embedding.parameters()} | {id(p) for p in model.layers.parameters()}
    head = [p for p in model.parameters() if id(p) not in encoder]
    return [head, *[list(layer.parameters()) for layer in reversed(model.layers)], list(model.embedding.parameters())]


def parameter_groups(model: "SentimentRNN", lr: float, decay: float | None) -> list[dict[str, Any]]:
    """Optimizer groups with discriminative rates: group k from the top at lr / decay**k (one group without decay)."""
    if decay is None:
        return [{"params": list(model.parameters()), "lr": lr}]
    return [{"params": params, "lr": lr / decay ** k} for k, params in enumerate(layer_groups(model)) if params]


def apply_gradual_unfreeze(model: "SentimentRNN", epoch: int, every: int | None, freeze_embeddings: bool) -> None:
    """Epoch `epoch`'s trainable groups: the head always; the recurrent layers one more from the top every `every`
    epochs (1 when None); the embedding last (never, with freeze_embeddings)."""
    every = every or 1
    unfrozen = epoch // every
    for k, params in enumerate(layer_groups(model)[1:]):
        is_embedding = k == len(model.layers)
        trainable = k < unfrozen and not (is_embedding and freeze_embeddings)
        for p in params:
            p.requires_grad_(trainable)


def prepare_training_data(cfg: "Config") -> "PreparedData":
    """A new classifier run's data: with model.init_from, encoded with that run's vocabulary (no GloVe: the embedding
    comes from the run) and checked against the texts it pretrained on; else as data.* says."""
    from sentiment.data.prepare import prepare_data

    if not cfg.model.init_from:
        return prepare_data(cfg.data, embedding_seed=cfg.run.seed, token_hashes=cfg.model.ngrams is not None)
    data = prepare_data(cfg.data, init_vocab(cfg), with_embeddings=False, token_hashes=cfg.model.ngrams is not None)
    check_not_pretrained_on(Path(cfg.model.init_from), data, cfg)
    return data
