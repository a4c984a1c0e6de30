"""Fine-tuning from a pretrained encoder: init_from, the leak check, discriminative rates, gradual unfreezing,
train_limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sentiment.config import load_config
from sentiment.data.vocab import Vocab
from sentiment.errors import SentimentError
from sentiment.model import build_model
from sentiment.runs import BEST, save_checkpoint, write_run_files
from sentiment.training.lm import build_language_model, text_fingerprints
from sentiment.training.transfer import (PRETRAIN_TEXTS, apply_gradual_unfreeze, check_not_pretrained_on,
                                         init_vocab, layer_groups, load_encoder, parameter_groups)

WORDS = [f"w{i}" for i in range(30)]
SMALL = ["data.glove_dim=null", "model.embed_dim=8", "model.hidden_size=6", "pretrain.cutoffs=[10]"]


def vocab() -> Vocab:
    return Vocab(["<pad>", "<unk>", *WORDS])


def pretrain_run(run_dir: Path, settings: list[str]) -> tuple[torch.nn.Module, list[str]]:
    """A run directory as `sentiment pretrain` leaves it: config, vocab and a language model's best.pt."""
    cfg = load_config(None, SMALL + settings)
    torch.manual_seed(5)
    lm = build_language_model(cfg, len(vocab()))
    run_dir.mkdir(parents=True)
    write_run_files(run_dir, cfg, vocab())
    save_checkpoint(run_dir / BEST, {"model": lm.state_dict(), "vocab": vocab().itos, "task": "pretrain",
                                     "loop": {"epoch": 1}, "config": cfg.to_dict()})
    return lm, SMALL + settings


def classifier(settings: list[str], run_dir: Path, seed: int = 9):
    cfg = load_config(None, settings + [f"model.init_from={run_dir}"])
    torch.manual_seed(seed)
    return build_model(cfg, len(vocab()))


def test_init_from_loads_a_one_layer_encoder_bitwise_with_a_fresh_head(tmp_path):
    lm, settings = pretrain_run(tmp_path / "lm", [])
    model = classifier(settings, tmp_path / "lm")
    head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("fc.")}
    load_encoder(model, tmp_path / "lm", init_vocab(load_config(None, settings + [f"model.init_from={tmp_path / 'lm'}"])))
    state, pretrained = model.state_dict(), lm.state_dict()
    encoder = [k for k in state if k.startswith(("embedding.", "layers."))]
    assert len(encoder) == 1 + 2 * 4  # embedding, 2 directions x (2 weights + 2 biases)
    for key in encoder:
        assert torch.equal(state[key], pretrained[key]), key
    for key, value in head.items():  # the head is the one built, untouched
        assert torch.equal(state[key], value)
    assert not any(k.startswith("heads.") for k in state)  # the language model's output layer is not carried over


def test_a_two_layer_language_model_maps_each_direction_onto_its_own_inputs(tmp_path):
    lm, settings = pretrain_run(tmp_path / "lm", ["model.num_layers=2", "model.pooling=max"])
    model = classifier(settings, tmp_path / "lm")
    load_encoder(model, tmp_path / "lm", vocab())
    h = 6
    for d in (0, 1):
        w = model.layers[1][d].weight_ih_l0.detach()
        own = w[:, d * h:(d + 1) * h]
        other = w[:, (1 - d) * h:(2 - d) * h]
        assert torch.equal(own, lm.layers[1][d].weight_ih_l0.detach())
        assert torch.equal(other, torch.zeros_like(other))
    # so the classifier starts as the two stacks: each direction's top states are the language model's
    model.eval(), lm.eval()
    ids = torch.tensor([[3, 7, 9, 2, 11, 5]])
    with torch.no_grad():
        features = model.features(ids, torch.tensor([6]))
        expected = torch.cat([lm.encode(ids, 0).amax(1), lm.encode(ids.flip(1), 1).amax(1)], dim=1)
    assert torch.allclose(features, expected, atol=1e-6)


@pytest.mark.parametrize("change, key", [(["model.hidden_size=7"], "model.hidden_size"),
                                         (["model.rnn=lstm"], "model.rnn"),
                                         (["model.num_layers=2"], "model.num_layers"),
                                         (["model.embed_dim=5"], "embed")])
def test_a_model_shape_that_does_not_match_is_one_error_naming_the_key(tmp_path, change, key):
    _, settings = pretrain_run(tmp_path / "lm", [])
    cfg = load_config(None, settings + change + [f"model.init_from={tmp_path / 'lm'}"])
    with pytest.raises(SentimentError, match=key):
        model = build_model(cfg, len(vocab()))
        load_encoder(model, tmp_path / "lm", init_vocab(cfg))


def test_another_vocabulary_is_one_error(tmp_path):
    _, settings = pretrain_run(tmp_path / "lm", [])
    model = classifier(settings, tmp_path / "lm")
    with pytest.raises(SentimentError, match="another vocab"):
        load_encoder(model, tmp_path / "lm", Vocab(["<pad>", "<unk>", *reversed(WORDS)]))


def test_validation_or_test_texts_that_were_pretraining_text_are_refused(tmp_path):
    from sentiment.data.batching import EncodedSplit
    from sentiment.data.prepare import PreparedData

    def split_of(texts):
        offsets = np.cumsum([0] + [len(t) for t in texts])
        return EncodedSplit(np.array([i for t in texts for i in t], np.int32), offsets, np.zeros(len(texts), np.int64))

    run = tmp_path / "lm"
    run.mkdir()
    valid, test = split_of([[4, 5, 6]]), split_of([[7, 8]])
    data = PreparedData(vocab(), split_of([[2, 3]]), valid, test)
    np.save(run / PRETRAIN_TEXTS, np.sort(text_fingerprints(split_of([[2, 3], [9, 9]]))))
    check_not_pretrained_on(run, data)  # no overlap: fine
    np.save(run / PRETRAIN_TEXTS, np.sort(text_fingerprints(split_of([[2, 3], [7, 8]]))))
    with pytest.raises(SentimentError, match="1 test text"):
        check_not_pretrained_on(run, data)


def test_discriminative_rates_give_each_layer_group_its_rate():
    cfg = load_config(None, SMALL + ["model.num_layers=2"])
    model = build_model(cfg, len(vocab()))
    optimizer = torch.optim.Adam(parameter_groups(model, 1e-2, 2.0))
    rates = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert len(rates) == len(list(model.parameters()))
    assert all(rates[id(p)] == 1e-2 for p in model.fc.parameters())
    assert all(rates[id(p)] == 5e-3 for p in model.layers[1].parameters())
    assert all(rates[id(p)] == 2.5e-3 for p in model.layers[0].parameters())
    assert rates[id(model.embedding.weight)] == 1.25e-3
    assert len(parameter_groups(model, 1e-2, None)) == 1


def test_gradual_unfreezing_leaves_a_frozen_group_bitwise_unchanged_until_its_epoch():
    cfg = load_config(None, SMALL + ["model.num_layers=2", "model.embed_dropout=0", "model.output_dropout=0",
                                     "model.ngrams=null"])  # the recurrent layers' groups; the branch has no layers
    torch.manual_seed(0)
    model = build_model(cfg, len(vocab()))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=0.1)
    groups = layer_groups(model)  # head, layer 1, layer 0, embedding
    ids, lengths, labels = torch.randint(2, len(vocab()), (8, 5)), torch.full((8,), 5), torch.randint(0, 2, (8,)).float()
    first_changed = {}
    for epoch in range(4):
        apply_gradual_unfreeze(model, epoch, every=1, freeze_embeddings=False)
        before = [[p.detach().clone() for p in g] for g in groups]
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.binary_cross_entropy_with_logits(model(ids, lengths), labels).backward()
            optimizer.step()
        for k, group in enumerate(groups):
            changed = any(not torch.equal(a, p) for a, p in zip(before[k], group))
            if changed:
                first_changed.setdefault(k, epoch)
            elif k not in first_changed:
                assert epoch < k, (k, epoch)
    assert first_changed == {0: 0, 1: 1, 2: 2, 3: 3}


def test_train_limit_is_stratified_seeded_and_leaves_valid_and_test_alone(tmp_path, tiny_data):
    from sentiment.data.prepare import prepare_data

    base = [f"data.data_dir={tiny_data}", "data.glove_dim=null", "model.embed_dim=8"]
    full = prepare_data(load_config(None, base).data, with_embeddings=False)
    limited = prepare_data(load_config(None, base + ["data.train_limit=20"]).data, with_embeddings=False)
    assert len(limited.train) == 20
    assert np.bincount(limited.train.labels).tolist() == [10, 10]
    assert np.isin(limited.membership["train"], full.membership["train"]).all()
    for name in ("valid", "test"):
        assert np.array_equal(limited.membership[name], full.membership[name])
        mine, theirs = getattr(limited, name), getattr(full, name)  # the same texts (ids differ: the vocab is smaller)
        assert np.array_equal(mine.offsets, theirs.offsets) and np.array_equal(mine.labels, theirs.labels)
    again = prepare_data(load_config(None, base + ["data.train_limit=20", "run.seed=7"]).data, with_embeddings=False)
    assert np.array_equal(again.membership["train"], limited.membership["train"])  # seeds share the draw


def test_stratified_limit_keeps_class_shares_and_varies_with_the_seed():
    from sentiment.data.prepare import stratified_limit

    labels = np.array([0] * 70 + [1] * 20 + [2] * 10)
    picked = stratified_limit(labels, 10, seed=1)
    assert np.bincount(labels[picked]).tolist() == [7, 2, 1]
    assert np.array_equal(picked, np.sort(picked))
    assert np.array_equal(picked, stratified_limit(labels, 10, seed=1))
    assert not np.array_equal(picked, stratified_limit(labels, 10, seed=2))
    assert len(stratified_limit(labels, 500, seed=1)) == 100


# ---------------------------------------------------------------- `sentiment pretrain` on the engine
from conftest import TINY_PRETRAINING as TINY_PRETRAIN  # noqa: E402  (the session's pretraining run trains with it too)


@pytest.fixture(scope="module")
def lm_data(tmp_path_factory) -> Path:
    from conftest import make_imdb

    return make_imdb(tmp_path_factory.mktemp("pretrain") / "data", n_per_class=30)


def test_pretraining_resumed_mid_epoch_ends_bitwise_as_an_uninterrupted_run(lm_data, tmp_path):
    from conftest import StopAfter
    from sentiment.runs import LAST, load_checkpoint
    from sentiment.training.engine import TrainingInterrupted
    from sentiment.training.pretrain import pretrain

    cfg = load_config(None, [f"data.data_dir={lm_data}", *TINY_PRETRAIN, "pretrain.epochs=2", "pretrain.output=sampled",
                             "pretrain.samples=16"])
    whole = tmp_path / "whole"
    whole.mkdir()
    pretrain(cfg, whole)
    parts = tmp_path / "parts"
    parts.mkdir()
    with pytest.raises(TrainingInterrupted, match="sentiment pretrain --resume"):
        pretrain(cfg, parts, stop=StopAfter(4))  # mid-epoch 1 (7 steps an epoch)
    assert 0 < load_checkpoint(parts / LAST)["loop"]["step_in_epoch"] < 7
    results = pretrain(cfg, parts, resume=True)
    a, b = load_checkpoint(whole / LAST), load_checkpoint(parts / LAST)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert results["epochs_run"] == 2 and results["held_out_forward_perplexity"] > 1


def test_a_pretraining_the_time_budget_stopped_resumes_bitwise_as_an_uninterrupted_run(lm_data, tmp_path):
    """pretrain.max_minutes stops mid-epoch (a budget of ~0: after the first step): last.pt holds that step, not
    the epoch as finished, so --resume reads the rest of the epoch and ends as the uninterrupted run."""
    from sentiment.runs import LAST, load_checkpoint, read_metrics
    from sentiment.training.pretrain import pretrain

    settings = [f"data.data_dir={lm_data}", *TINY_PRETRAIN, "pretrain.epochs=2"]
    whole = tmp_path / "whole"
    whole.mkdir()
    pretrain(load_config(None, settings), whole)
    parts = tmp_path / "parts"
    parts.mkdir()
    stopped = pretrain(load_config(None, settings + ["pretrain.max_minutes=1e-9"]), parts)
    loop = load_checkpoint(parts / LAST)["loop"]
    assert (loop["epoch"], loop["step_in_epoch"]) == (0, 1) and stopped["last_epoch_partial"]
    assert stopped["best_epoch"] == 1 and read_metrics(parts)[0]["partial"]
    results = pretrain(load_config(None, settings), parts, resume=True)
    a, b = load_checkpoint(whole / LAST), load_checkpoint(parts / LAST)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert results["epochs_run"] == 2 and not results["last_epoch_partial"]
    assert results["passes"] == pytest.approx(json_results(whole)["passes"], rel=0.2)  # not the partial epoch's


def json_results(run_dir: Path) -> dict:
    import json

    return json.loads((run_dir / "results.json").read_text())


def test_pretrain_then_fine_tune_end_to_end(lm_data, tmp_path):
    from typer.testing import CliRunner

    from conftest import one_line_error, set_args
    from sentiment.cli import app
    from sentiment.runs import BEST, load_checkpoint, read_metrics

    runner = CliRunner()
    lm_dir, ft_dir = tmp_path / "lm", tmp_path / "ft"
    base = [f"data.data_dir={lm_data}", "model.hidden_size=16", "run.threads=1"]
    done = runner.invoke(app, ["pretrain", "--run-dir", str(lm_dir), *set_args(base + TINY_PRETRAIN)])
    assert done.exit_code == 0, done.output
    assert "fine-tune with" in done.output
    rows = read_metrics(lm_dir)
    assert {"train_forward_loss", "train_backward_loss", "valid_forward_perplexity", "valid_backward_perplexity",
            "tokens_per_s"} <= rows[0].keys()
    assert (lm_dir / BEST).is_file() and (lm_dir / "curves.png").is_file() and (lm_dir / PRETRAIN_TEXTS).is_file()
    fine = base + ["train.epochs=2", "train.batch_size=16", f"model.init_from={lm_dir}", "train.layer_lr_decay=2.6",
                   "model.gradual_unfreeze=true", "data.vocab_max_size=50"]
    done = runner.invoke(app, ["train", "--run-dir", str(ft_dir), *set_args(fine)])
    assert done.exit_code == 0, done.output
    assert "data.vocab_max_size not used" in done.output
    assert (ft_dir / "vocab.json").read_text() == (lm_dir / "vocab.json").read_text()
    classifier_state = load_checkpoint(ft_dir / BEST)["model"]
    assert not any(k.startswith("heads.") for k in classifier_state)
    import json

    assert json.loads((ft_dir / "results.json").read_text())["init_from"] == str(lm_dir)
    # another validation carve puts pretraining texts into validation: refused, in one line
    done = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "leak"), *set_args(fine + ["data.split_seed=7"])])
    one_line_error(done.exit_code, done.output, "were pretraining text")
    # ... and so does one from the classifier run: texts it trained on, with their labels, would be validation texts;
    # a run from before train_texts.npy is checked on its splits.npz rows (the same data, numbered alike)
    from_classifier = fine + [f"model.init_from={ft_dir}", "data.split_seed=7"]
    for old in (False, True):
        if old:
            (ft_dir / "train_texts.npy").unlink()
        done = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "leak"), *set_args(from_classifier)])
        one_line_error(done.exit_code, done.output, "validation text(s) were training texts", str(ft_dir))
    assert not (tmp_path / "leak").exists()
    # a pretraining run is no classifier, and a classifier run no pretraining: each says what to do instead
    for command in (["predict", "--run", str(lm_dir), "great"], ["eval", "--run", str(lm_dir)],
                    ["train", "--resume", str(lm_dir)]):
        done = runner.invoke(app, command)
        one_line_error(done.exit_code, done.output, "is a pretraining (language model) run",
                       f"model.init_from={lm_dir}")
    done = runner.invoke(app, ["pretrain", "--resume", str(ft_dir)])
    one_line_error(done.exit_code, done.output, "is a classifier run", f"train --resume {ft_dir}")


def test_pretraining_without_a_recurrent_encoder_is_one_error_line(lm_data, tmp_path):
    from typer.testing import CliRunner

    from conftest import one_line_error, set_args
    from sentiment.cli import app

    settings = set_args([f"data.data_dir={lm_data}", "model.rnn=none", "model.ngrams.n=2"])
    for nproc in ([], ["--nproc", "2"]):
        done = CliRunner().invoke(app, ["pretrain", *nproc, "--run-dir", str(tmp_path / "lm"), *settings])
        one_line_error(done.exit_code, done.output, "model.rnn is none", "set model.rnn")
    assert not (tmp_path / "lm").exists()


def test_pretrain_nproc_checks_its_data_before_starting_the_ranks(tmp_path):
    from typer.testing import CliRunner

    from conftest import one_line_error
    from sentiment.cli import app

    done = CliRunner().invoke(app, ["pretrain", "--nproc", "2", "--set", f"data.data_dir={tmp_path / 'none'}",
                                    "--run-dir", str(tmp_path / "lm")])
    one_line_error(done.exit_code, done.output, "not found")


def test_two_gloo_processes_pretrain_as_one_process_over_both_ranks_windows(lm_data, tmp_path):
    """DDP averages the ranks' gradients: the same as one process whose loss is the mean of both ranks' window
    batches (no dropout, constant rate, the adaptive softmax: nothing random but the windows)."""
    import os
    import subprocess
    import sys

    from conftest import set_args
    from sentiment.data.prepare import prepare_data
    from sentiment.runs import LAST, load_checkpoint
    from sentiment.training.engine import seed_everything
    from sentiment.training.lm import LanguageModelObjective, WindowStream, build_language_model
    from sentiment.training.pretrain import pretraining_text_of

    run_dir = tmp_path / "ddp"
    settings = [f"data.data_dir={lm_data}", *TINY_PRETRAIN, "pretrain.epochs=2", "pretrain.warmup_steps=0",
                "pretrain.lr_schedule=constant", "model.embed_dropout=0", "model.output_dropout=0", "run.device=cpu",
                "pretrain.epoch_tokens=800"]
    env = {**os.environ, "SENTIMENT_DIST_TIMEOUT": "30", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "sentiment", "pretrain", "--run-dir", str(run_dir), *set_args(settings)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    cfg = load_config(None, settings)
    torch.set_num_threads(1)
    data = prepare_data(cfg.data, embedding_seed=cfg.run.seed)
    seed_everything(cfg.run.seed)
    model = build_language_model(cfg, len(data.vocab), data.vocab.pad_index)
    model.load_embeddings(data.embeddings)
    text = pretraining_text_of(cfg, data)
    p = cfg.pretrain
    streams = [WindowStream(text.train, p.bptt, p.batch_size, seed=cfg.run.seed, device=torch.device("cpu"),
                            epoch_tokens=p.epoch_tokens, num_replicas=2, rank=r) for r in range(2)]
    optimizer = torch.optim.Adam(model.parameters(), lr=p.lr)
    objective = LanguageModelObjective()
    for epoch in range(p.epochs):
        n = [s.set_epoch(epoch) for s in streams][0]
        for i in range(n):
            optimizer.zero_grad()
            (sum(objective(model, s.batch(i))[0] for s in streams) / 2).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip)
            optimizer.step()
    trained = load_checkpoint(run_dir / LAST)["model"]
    assert trained.keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        assert torch.allclose(trained[name], value, atol=1e-5), name


def test_concat_pooling_is_the_last_states_then_max_then_mean():
    from sentiment.model import SentimentRNN

    torch.manual_seed(0)
    model = SentimentRNN(20, 8, 6, 1, "gru", pooling="last+max+mean", pack="never").eval()
    ids, lengths = torch.randint(2, 20, (3, 7)), torch.tensor([7, 4, 1])
    assert model.output_features == 36 and model.fc.in_features == 36
    with torch.no_grad():
        got = model.features(ids, lengths)
        expected = []
        for pooling in ("last", "max+mean"):
            model.pooling = pooling
            expected.append(model.features(ids, lengths))
    assert torch.equal(got, torch.cat(expected, dim=1))
