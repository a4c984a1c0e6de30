"""What a resumed run may change: the keys that only say how long or where it runs, not what it trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sentiment.config import Config
from sentiment.errors import SentimentError

# keys a resume may change: how long, where and how fast it runs, not the model or how it trains
RESUMABLE_KEYS = frozenset({
    "train.epochs", "train.early_stopping_patience", "train.eval_batch_size", "run.name", "run.device",
    "run.threads", "run.eval_test", "run.output_dir", "run.checkpoint_minutes", "run.flush_denormal",
    "run.tensorboard", "data.data_dir", "data.workers"})


def changed_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two config dicts."""
    keys = []
    for k in a.keys() | b.keys():
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            keys += changed_keys(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            keys.append(f"{prefix}{k}")
    return sorted(keys)


def check_resume_config(run_dir: Path, saved: Config, wanted: Config, checkpoint: dict[str, Any] | None = None) -> None:
    """Refuse to resume `run_dir` (trained as `saved` says) with a config that changes the model or its training;
    and, under a decaying learning-rate schedule, with another train.epochs (the rates already used would
    change). `checkpoint`: last.pt, whose config is the one its schedule was built for."""
    refused = [k for k in changed_keys(saved.to_dict(), wanted.to_dict()) if k not in RESUMABLE_KEYS]
    if refused:
        raise SentimentError(f"cannot resume {run_dir} with a changed config ({', '.join(refused)}): "
                             "those keys change the model or its training; start a new run instead")
    started = (checkpoint or {}).get("config", {}).get("train", {}).get("epochs", saved.train.epochs)
    if started != wanted.train.epochs and wanted.train.lr_schedule != "constant":
        raise SentimentError(
            f"cannot resume with train.epochs={wanted.train.epochs}: this run's {wanted.train.lr_schedule} "
            f"learning-rate schedule decays over its {started} epochs. Resume with train.epochs={started}, or start "
            "a new run (a constant schedule can be resumed with more or fewer epochs)")
