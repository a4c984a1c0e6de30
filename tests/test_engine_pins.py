"""The training engine against a frozen copy of the loop it replaced (tests/frozen/train_81a9968.py, the loop of
commit 81a9968): in the same process, on CPU, on tiny data, both must end with bitwise the same weights, optimizer
state, logits, metrics rows and results, for the plain loop, its knobs (gradient accumulation, a warming and
decaying schedule, frozen then unfrozen embeddings, class weights), the lazy host-sync path, AT+VAT+entropy
minimisation on unlabeled texts, two gloo processes, and a run interrupted mid-epoch and resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import numpy as np
import torch

from frozen import train_81a9968 as frozen
from sentiment.config import load_config
from sentiment.data.batching import collate
from sentiment.data.prepare import prepare_data
from sentiment.model import build_model
from sentiment.runs import BEST, LAST, RESULTS, load_checkpoint, load_labels, load_run, read_metrics
from sentiment.training.train import TrainingInterrupted, train
from conftest import TINY_TRAINING, StopAfter, make_imdb

FAST = [*TINY_TRAINING, "data.valid_split=random", "data.workers=1", "data.glove_dim=null", "model.embed_dim=16",
        "run.device=cpu", "run.threads=1"]
VARIANTS = {
    "plain": ["train.epochs=2"],
    "knobs": ["train.epochs=3", "train.grad_accum=2", "train.lr_schedule=cosine", "train.warmup_steps=2",
              "model.freeze_embeddings=true", "model.unfreeze_after=1", "train.class_weights=balanced"],
    "lazy": ["train.epochs=2", "train.lazy_sync=true"],
    "all_on": ["train.epochs=2", "model.output_dropout=0.3", "data.unlabeled=unsup", "train.unlabeled_batch_size=8",
               "model.normalize_embeddings=true", "train.adversarial.epsilon=1.0",
               "train.virtual_adversarial.epsilon=1.0", "train.entropy_minimization.weight=0.5"],
}


@pytest.fixture(scope="module")
def imdb(tmp_path_factory) -> Path:
    from test_objectives import add_unsup

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SENTIMENT_CACHE_DIR", raising=False)
        data = make_imdb(tmp_path_factory.mktemp("pins") / "data", n_per_class=40, with_glove=False)  # 5 steps/epoch
        add_unsup(data)
        yield data


def config(data: Path, variant: str):
    return load_config(None, [f"data.data_dir={data}", *FAST, *VARIANTS[variant]])


def timing_free(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if "seconds" not in k and "per_s" not in k} for r in rows]


def logits(run_dir: Path, checkpoint: str = LAST) -> torch.Tensor:
    """The checkpoint's model (eval mode) on the first 32 validation rows."""
    cfg, vocab = load_run(run_dir)
    space = load_labels(run_dir)
    data = prepare_data(cfg.data, vocab, label_space=space)
    model = build_model(cfg, len(vocab), vocab.pad_index, space.num_outputs)
    model.load_state_dict(load_checkpoint(run_dir / checkpoint, vocab)["model"])
    model.eval()
    ids, lengths, _ = collate(data.valid, list(range(min(32, len(data.valid)))), cfg.data.max_len, cfg.data.truncate,
                              vocab.pad_index)
    with torch.no_grad():
        return model(ids, lengths)


def equal(a, b) -> bool:
    """Bitwise equality of nested checkpoint values (tensors compared exactly, NaN never equal)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return a == b


def assert_same_run(expected: Path, got: Path) -> None:
    for name in (LAST, BEST):
        a, b = load_checkpoint(expected / name), load_checkpoint(got / name)
        for part in ("model", "optimizer", "scheduler", "scaler", "rng"):
            assert equal(a[part], b[part]), (name, part)
        loop_a, loop_b = dict(a["loop"]), dict(b["loop"])
        loop_a.pop("seconds"), loop_b.pop("seconds")
        assert loop_a == loop_b, name
    moved = logits(expected)
    assert torch.equal(moved, logits(got))
    assert torch.equal(logits(expected, BEST), logits(got, BEST))
    assert timing_free(read_metrics(expected)) == timing_free(read_metrics(got))
    a, b = (json.loads((d / RESULTS).read_text()) for d in (expected, got))
    a.pop("train_seconds"), b.pop("train_seconds")
    for split in ("valid", "test"):
        if split in a:
            a[split].pop("seconds", None), b[split].pop("seconds", None)
    # keys results.json gained since the frozen loop (fine-tuning's provenance) must not change the others
    assert b.pop("init_from", None) is None and b.pop("train_rows", len_train(got)) == len_train(got)
    assert a == b


def len_train(run_dir: Path) -> int:
    return int(len(np.load(run_dir / "splits.npz")["train"]))


def fresh(tmp_path: Path, name: str) -> Path:
    run_dir = tmp_path / name
    run_dir.mkdir()
    return run_dir


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_engine_trains_bitwise_as_the_frozen_loop(imdb, tmp_path, variant):
    cfg = config(imdb, variant)
    frozen.train(cfg, fresh(tmp_path, "frozen"))
    train(cfg, fresh(tmp_path, "live"))
    trained = load_checkpoint(tmp_path / "live" / LAST)
    assert trained["loop"]["global_step"] >= 10  # N steps really ran
    rows = read_metrics(tmp_path / "live")
    assert rows[0]["train_loss"] != rows[-1]["train_loss"]  # the weights moved: agreeing is no coincidence
    assert_same_run(tmp_path / "frozen", tmp_path / "live")


@pytest.mark.parametrize("variant,steps", [("plain", 6), ("knobs", 3), ("all_on", 6)])
def test_a_run_resumed_mid_epoch_is_bitwise_the_frozen_uninterrupted_one(imdb, tmp_path, variant, steps):
    cfg = config(imdb, variant)
    frozen.train(cfg, fresh(tmp_path, "frozen"))
    cut = fresh(tmp_path, "cut")
    with pytest.raises(TrainingInterrupted):
        train(cfg, cut, stop=StopAfter(steps))
    loop = load_checkpoint(cut / LAST)["loop"]
    assert loop["epoch"] == 1 and loop["step_in_epoch"] == 2  # mid-epoch
    train(cfg, cut, resume=True)
    assert_same_run(tmp_path / "frozen", cut)


def test_two_gloo_processes_train_bitwise_as_the_frozen_loop(tmp_path):
    """One torchrun launch (2 CPU processes, gloo) trains the frozen loop, then the engine, in the same processes:
    the plain path (DDP's hooks average the gradients) and the extra objectives' (the loop averages them)."""
    from test_distributed import SETTINGS
    from test_objectives import write_two_class

    # 128 rows: 104 train, so every step's two batches are full. With a short batch the live loop weighs each row
    # the same across ranks (Batch.weight), where the frozen loop averaged the ranks' batch means: a fix, not a pin
    base = write_two_class(tmp_path, rows=128)
    env = {**os.environ, "SENTIMENT_DIST_TIMEOUT": "30", "OMP_NUM_THREADS": "1"}
    env.pop("SENTIMENT_CACHE_DIR", None)
    common = [*SETTINGS, "train.epochs=2", "run.eval_test=false", "run.device=cpu", f"data.train_file={base / 't.csv'}",
              f"data.data_dir={base / 'data'}", "run.checkpoint_minutes=0"]
    extras = [f"data.unlabeled={base / 'u.txt'}", "train.unlabeled_batch_size=8", "train.adversarial.epsilon=0.5",
              "train.virtual_adversarial.epsilon=2.0", "train.entropy_minimization.weight=0.3"]
    script = Path(__file__).parent / "frozen" / "ddp_pair.py"
    for name, settings in (("plain", common), ("extras", [*common, *extras])):
        out = tmp_path / name
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                               str(script), str(out), *settings], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        rows = read_metrics(out / "live")
        assert [r["processes"] for r in rows] == [2, 2]
        assert_same_run(out / "frozen", out / "live")
