"""`sentiment pretrain`: the classifier's encoder trained as a language model, on the training engine.

The text is the training split's texts plus data.unlabeled's, never a validation or test text (and the run keeps
every text's fingerprint in pretrain_texts.npy, so a fine-tune whose held-out texts were among them is refused). The
engine brings the loop, checkpoints and exact resume, signals, DDP (each rank reads its share of each epoch's
windows), the NaN guard, the time budget (pretrain.max_minutes) and reporting; this module supplies the model,
the window stream, the objective and the held-out scoring.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from sentiment.atomic import atomic_write, atomic_write_text
from sentiment.config import Config, check_pretrain_config
from sentiment.data.prepare import PreparedData, prepare_data
from sentiment.device import resolve_device
from sentiment.distributed import Rank, broadcast, rank_device
from sentiment.distributed import init as init_distributed
from sentiment.errors import SentimentError
from sentiment.floats import flush_denormals
from sentiment.runs import (CURVES, LAST, RESULTS, code_version, load_checkpoint, load_run, read_metrics,
                            write_run_files)
from sentiment.training.engine import (Engine, EngineSettings, Reporter, TrainingInterrupted, seed_everything)
from sentiment.training.lm import (DIRECTIONS, LanguageModelObjective, PretrainingText, WindowStream,
                                   build_language_model, held_out_losses, held_out_windows, perplexity,
                                   pretraining_text)
from sentiment.training.tensorboard import tensorboard_enabled, tensorboard_log
from sentiment.training.transfer import PRETRAIN_TEXTS
from sentiment.runstatus import recording_status


def engine_settings(cfg: Config) -> EngineSettings:
    p = cfg.pretrain
    return EngineSettings(epochs=p.epochs, lr=p.lr, batch_size=p.batch_size, weight_decay=p.weight_decay,
                          lr_schedule=p.lr_schedule, warmup_steps=p.warmup_steps, grad_clip=p.grad_clip,
                          amp=cfg.train.amp, lazy_sync=cfg.train.lazy_sync, checkpoint_minutes=cfg.run.checkpoint_minutes,
                          max_minutes=p.max_minutes)


def pretraining_text_of(cfg: Config, data: PreparedData) -> PretrainingText:
    sources = [data.train] + ([data.unlabeled] if data.unlabeled is not None and len(data.unlabeled) else [])
    return pretraining_text(sources, [data.valid, data.test], cfg.pretrain.held_out_fraction, cfg.data.split_seed)


def held_out_validation(windows: torch.Tensor, batch_size: int):
    """The engine's validate: each direction's held-out loss and perplexity; the best checkpoint has the lowest mean
    loss."""

    def validate(model: torch.nn.Module) -> tuple[dict[str, Any], float]:
        t0 = time.perf_counter()
        losses = held_out_losses(model, windows, batch_size)
        mean = sum(losses.values()) / len(losses)
        metrics: dict[str, Any] = {"valid_loss": mean, "valid_perplexity": perplexity(mean)}
        for name in DIRECTIONS:
            metrics[f"valid_{name}_loss"] = losses[name]
            metrics[f"valid_{name}_perplexity"] = perplexity(losses[name])
        metrics["valid_seconds"] = time.perf_counter() - t0
        return metrics, math.exp(-mean)  # 1 / perplexity: in (0, 1], higher is better, as the engine compares

    return validate


def pretrain(cfg: Config, run_dir: Path, *, data: PreparedData | None = None, resume: bool = False,
             reporter: Reporter | None = None, stop: Any = None, rank: Rank | None = None,
             saved: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """Pretrain as `cfg` says into `run_dir` (created by the caller); returns the results (also results.json).
    saved(path): called on the main rank after each checkpoint is written."""
    check_pretrain_config(cfg)
    tensorboard_enabled(cfg.run.tensorboard)  # true without the package: refused before any work
    run_dir, rank = Path(run_dir), rank or Rank()
    code_version()
    flush_denormals(cfg.run.flush_denormal)
    if cfg.run.threads or rank.distributed:
        torch.set_num_threads(cfg.run.threads or 1)
    device = rank_device(rank, resolve_device(cfg.run.device))
    if cfg.pretrain.output == "full" and device.type == "cpu":
        raise SentimentError("pretrain.output: full computes the whole softmax over the vocabulary, the benchmark's "
                             "baseline, too slow on a CPU: use adaptive or sampled")
    init_distributed(rank, device)
    seed_everything(cfg.run.seed)
    checkpoint = None
    if resume:
        _, vocab = load_run(run_dir, pretraining=True)
        for stray in run_dir.glob(".*.tmp"):
            stray.unlink(missing_ok=True)
        checkpoint = load_checkpoint(run_dir / LAST, vocab)
        data = data or prepare_data(cfg.data, vocab, with_embeddings=False)
    else:
        data = data or prepare_data(cfg.data, embedding_seed=cfg.run.seed)
    text = pretraining_text_of(cfg, data)
    if not resume and rank.is_main:
        write_run_files(run_dir, cfg, data.vocab, data.label_space, data.membership)
        atomic_write(run_dir / PRETRAIN_TEXTS, lambda f: np.save(f, text.fingerprints, allow_pickle=False))
    if reporter and rank.is_main and text.dropped_held_out_texts:
        reporter.note(f"{text.dropped_held_out_texts:,} text(s) equal to a validation or test text left out of "
                      "the pretraining text")

    model = build_language_model(cfg, len(data.vocab), data.vocab.pad_index)
    if data.embeddings is not None:
        model.load_embeddings(data.embeddings)
    model.to(device)
    p = cfg.pretrain
    stream = WindowStream(text.train, p.bptt, p.batch_size, seed=cfg.run.seed, device=device,
                          epoch_tokens=p.epoch_tokens, num_replicas=rank.world_size, rank=rank.rank)
    validate = held_out_validation(held_out_windows(text.held_out, p.bptt, p.held_out_windows).to(device),
                                   cfg.train.eval_batch_size)
    with recording_status(run_dir, rank.is_main), \
            tensorboard_log(cfg, run_dir, reporter, main=rank.is_main, checkpoint=checkpoint) as log:
        engine = Engine(model, stream, LanguageModelObjective(), validate, engine_settings(cfg), run_dir, rank=rank,
                        device=device, seed=cfg.run.seed, reporter=log.reporter, stop=stop, checkpoint=checkpoint,
                        extra_state=lambda: {"vocab": data.vocab.itos, "config": cfg.to_dict(), "task": "pretrain"},
                        saved=saved)
        try:
            engine.run()
        except TrainingInterrupted as e:  # the engine names `sentiment train`; this run resumes with its own command
            raise TrainingInterrupted(str(e).replace("sentiment train --resume",
                                                     "sentiment pretrain --resume")) from None
        results = finish(cfg, run_dir, text, rank)
        log.hparams(cfg, results)
    return results


def finish(cfg: Config, run_dir: Path, text: PretrainingText, rank: Rank) -> dict[str, Any]:
    """The curves, and results.json: the best epoch's held-out figures and what the run read."""
    results: dict[str, Any] = {}
    if rank.is_main:
        rows = read_metrics(run_dir)
        plot_lm_curves(rows, run_dir / CURVES)
        best = next((r for r in reversed(rows) if r.get("best")), {})  # the row best.pt holds
        results = {"task": "pretrain", "best_epoch": best.get("epoch", 0), "epochs_run": len(rows),
                   "commit": code_version(), "seed": cfg.run.seed, "split_seed": cfg.data.split_seed,
                   "output": cfg.pretrain.output, "bptt": cfg.pretrain.bptt,
                   "texts": text.texts, "train_tokens": int(len(text.train)), "held_out_tokens": int(len(text.held_out)),
                   "texts_left_out_as_held_out_text": text.dropped_held_out_texts,
                   "tokens_seen": int(sum(r.get("tokens_per_s", 0) * r.get("seconds", 0) for r in rows)),
                   "train_seconds": sum(r.get("seconds", 0.0) for r in rows),
                   "processes": rows[-1].get("processes") if rows else None,
                   # the time budget stopped the last epoch part-way: `pretrain --resume` continues it
                   "last_epoch_partial": bool(rows and rows[-1].get("partial")),
                   "device": rows[-1].get("device") if rows else None}
        results["passes"] = results["tokens_seen"] / max(len(text.train), 1)
        for key in ("valid_loss", "valid_perplexity", *(f"valid_{d}_{m}" for d in DIRECTIONS
                                                        for m in ("loss", "perplexity"))):
            if key in best:
                results[key.replace("valid_", "held_out_")] = best[key]
        atomic_write_text(run_dir / RESULTS, json.dumps(results, indent=2))
    return broadcast(rank, results)


def plot_lm_curves(rows: list[dict[str, Any]], path: Path) -> None:
    """Each direction's training and held-out perplexity per epoch."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in DIRECTIONS:
        ax.plot(epochs, [perplexity(r[f"train_{name}_loss"]) for r in rows], marker="o", linestyle="--",
                label=f"{name}, train")
        ax.plot(epochs, [r[f"valid_{name}_perplexity"] for r in rows], marker="o", label=f"{name}, held out")
    from matplotlib.ticker import MaxNLocator

    ax.set(title="language model perplexity", xlabel="epoch", yscale="log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
