"""Shared fixtures: a tiny IMDB-shaped dataset whose labels are learnable, and tiny GloVe vectors."""

from __future__ import annotations

import inspect
import os
import random
from pathlib import Path

import pytest
import torch

from sentiment.training.train import StopFlag

torch.set_num_threads(1)  # tests are small; more threads only contend on a shared CI machine
# and so for the processes tests start (the CLI, torchrun, serve): torch reads this at start. Under
# `pytest -n 2` two workers share the cores; two 2-thread processes on 2 cores slow each other many times over
os.environ.setdefault("OMP_NUM_THREADS", "1")

# `make test` runs the suite in two parts: the tests that start several training processes (torchrun, --nproc)
# alone, one at a time (`-m ranks`), then the rest on every core (`-m "not ranks" -n auto --dist loadfile`: each
# file on one worker, so its module fixtures are built once). A pair of gloo ranks that shares two cores with
# other work misses its process group's start (seen: "could not join the process group (gloo)").
_STARTS_RANKS = ("--nproc", "torch.distributed.run", "rdzv", "torchrun(", "two_ranks")


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        try:
            source = inspect.getsource(item.function)
        except (AttributeError, OSError, TypeError):
            source = ""
        if item.nodeid.split("::")[0].endswith("test_distributed.py") or any(s in source for s in _STARTS_RANKS) \
                or "two_ranks" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ranks)


POSITIVE = ["great", "wonderful", "superb", "loved", "brilliant", "excellent", "moving", "fun"]
NEGATIVE = ["awful", "boring", "terrible", "hated", "dull", "worst", "poor", "mess"]
NEUTRAL = ["the", "movie", "film", "plot", "actor", "scene", "story", "it", "was", "and", "a", "this",
           "director", "cast", "ending", "music", "really", "quite", "very", "with"]


# Training settings that learn the tiny dataset in seconds: constant learning rate, no warmup, light dropout.
# How close one review's output must be when it is scored in a different batch. On CPU the
# kernels are the same whatever the batch, so only float rounding differs; cuDNN picks algorithms
# (and TF32) by batch shape, which moves a probability by ~1e-5.
BATCH_TOL = 1e-4 if torch.cuda.is_available() else 1e-6

TINY_TRAINING = ["train.batch_size=16", "train.lr=0.01", "train.lr_schedule=constant", "train.warmup_steps=0",
                 "model.hidden_size=16", "model.embed_dropout=0.1", "model.output_dropout=0.0",
                 # the recurrent model alone, as these tests were written for: the two-part default's own tests
                 # (test_mixture, test_ngrams, test_config) switch the branch on themselves
                 "model.ngrams=null"]


def set_args(settings: list[str]) -> list[str]:
    """["a=1", "b=2"] -> ["--set", "a=1", "--set", "b=2"] for the command line."""
    return [arg for s in settings for arg in ("--set", s)]


def one_line_error(code: int, text: str, *needles: str) -> str:
    """Assert a command failed with exactly one `error:` line, last in the output, and no traceback."""
    assert code != 0, text
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    assert text.rstrip().splitlines()[-1] == errors[0], text  # the message is one line, and the last
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def review(rng: random.Random, positive: bool) -> str:
    words = [rng.choice(NEUTRAL) for _ in range(rng.randint(8, 60))]
    cue = POSITIVE if positive else NEGATIVE
    for _ in range(rng.randint(1, 3)):
        words.insert(rng.randrange(len(words) + 1), rng.choice(cue))
    text = " ".join(words)
    # sprinkle IMDB's quirks: HTML breaks, capitals and punctuation
    return text.capitalize().replace(" and ", ", and ", 1) + ".<br /><br />" + rng.choice(["Really.", "OK!", "Hmm..."])


def make_imdb(data_dir: Path, n_per_class: int = 60, seed: int = 0, with_glove: bool = True) -> Path:
    """data_dir/aclImdb in the standard layout (+ data_dir/glove/glove.6B.50d.txt)."""
    rng = random.Random(seed)
    root = Path(data_dir) / "aclImdb"
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                rating = rng.randint(7, 10) if label == "pos" else rng.randint(1, 4)
                (folder / f"{i}_{rating}.txt").write_text(review(rng, label == "pos"), encoding="utf-8")
    if with_glove:
        glove = Path(data_dir) / "glove"
        glove.mkdir(parents=True, exist_ok=True)
        vrng = random.Random(seed + 1)
        lines = [" ".join([w] + [f"{vrng.gauss(0, 0.5):.4f}" for _ in range(50)])
                 for w in POSITIVE[:4] + NEGATIVE[:4] + NEUTRAL + [".", ","]]
        (glove / "glove.6B.50d.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(data_dir)


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return make_imdb(tmp_path / "data")


def poison_loss(monkeypatch, after_calls: int) -> None:
    """Make the training loss NaN from call after_calls + 1 on (call n is step n of the run)."""
    _wrap_training_loss(monkeypatch, after_calls, lambda loss: loss * float("nan"))


def _wrap_training_loss(monkeypatch, after_calls: int, poison) -> None:
    """From call after_calls + 1 of the training objective on, its loss goes through `poison`."""
    from sentiment.training import train as train_mod

    real = train_mod.supervised_objective
    calls = {"n": 0}

    def poisoned_objective(*args, **kwargs):
        objective = real(*args, **kwargs)

        def wrapped(model, batch):  # an objective: (model, batch) -> (loss, stats)
            calls["n"] += 1
            loss, stats = objective(model, batch)
            return (poison(loss) if calls["n"] > after_calls else loss), stats

        return wrapped

    monkeypatch.setattr(train_mod, "supervised_objective", poisoned_objective)


def poison_gradient(monkeypatch, after_calls: int) -> None:
    """From call after_calls + 1 on, the training loss keeps its finite value but back-propagates NaN:
    a finite loss with a non-finite gradient (call n is step n of the run)."""
    class NaNGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad * float("nan")

    _wrap_training_loss(monkeypatch, after_calls, NaNGradient.apply)


class StopAfter(StopFlag):
    """A training stop flag that asks to stop once the loop has checked it `n` times (once per step)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def __bool__(self) -> bool:
        self.n -= 1
        return self.n < 0


# ---------------------------------------------------------------- finished runs, trained once per session
TINY_PRETRAINING = ["model.hidden_size=16", "pretrain.bptt=10", "pretrain.batch_size=8", "pretrain.warmup_steps=2",
                    "pretrain.held_out_fraction=0.1", "pretrain.held_out_windows=10", "pretrain.epoch_tokens=600",
                    "run.threads=1"]


@pytest.fixture(scope="session")
def session_data(tmp_path_factory) -> Path:
    """A tiny IMDB (40 reviews a class: 5 steps an epoch in batches of 16), for the session's runs."""
    return make_imdb(tmp_path_factory.mktemp("session") / "data", n_per_class=40)


def tiny_run_config(data: Path, *extra: str):
    from sentiment.config import load_config

    return load_config(None, [f"data.data_dir={data}", *TINY_TRAINING, "train.epochs=2", "run.eval_test=true", *extra])


@pytest.fixture(scope="session")
def finished_run(session_data, tmp_path_factory) -> Path:
    """A classifier run of 2 epochs (10 steps), trained to the end with the default settings' run.tensorboard: auto.
    Read it, never write it: other tests share it."""
    from sentiment.training.train import train

    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run_dir.mkdir()
    train(tiny_run_config(session_data), run_dir)
    return run_dir


@pytest.fixture(scope="session")
def pretraining_run(session_data, tmp_path_factory) -> Path:
    """A language-model pretraining run of one epoch, trained to the end. Read it, never write it."""
    from sentiment.config import load_config
    from sentiment.training.pretrain import pretrain

    run_dir = tmp_path_factory.mktemp("pretrained") / "lm"
    run_dir.mkdir()
    pretrain(load_config(None, [f"data.data_dir={session_data}", *TINY_PRETRAINING, "pretrain.epochs=1"]), run_dir)
    return run_dir
