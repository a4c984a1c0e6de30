"""The bag-of-n-grams branch (sentiment/ngrams.py): stable hashing, the same n-grams in training, evaluation and
prediction, batch invariance, what bigrams learn that unigrams cannot, the NB statistics, the branch alone,
resume, and the extra objectives with the branch on."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sentiment.config import load_config
from sentiment.data.batching import EncodedSplit
from sentiment.errors import SentimentError
from sentiment.model import build_model
from sentiment.ngrams import (COMBINE, ORDER_SALT, NgramSpec, bags, collate_ngrams, hash_tokens, ngram_inputs,
                              ngram_statistics, parameter_groups)
from sentiment.runs import LAST, load_checkpoint
from sentiment.training.train import TrainingInterrupted, train
from conftest import BATCH_TOL, TINY_TRAINING, StopAfter

MASK = (1 << 64) - 1
FAST = ["data.dataset=files", "data.glove_dim=null", "model.embed_dim=8", "run.threads=1", "data.workers=1",
        "data.test_fraction=0", "data.valid_fraction=0.25", "run.eval_test=false", *TINY_TRAINING]


# ------------------------------------------------------------------ a pure-Python reference of the hashing
def fnv1a(token: str) -> int:
    h = 0xCBF29CE484222325
    for byte in token.encode("utf-8"):
        h = ((h ^ byte) * 0x100000001B3) & MASK
    return h


def fmix(x: int) -> int:
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & MASK
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & MASK
    return x ^ (x >> 33)


def reference_ngrams(tokens: list[str], n: int, buckets: int) -> set[int]:
    """The bucket ids of a text's 1..n-grams, one token and one n-gram at a time."""
    hashes = [fnv1a(t) for t in tokens]
    ids = set()
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            g = hashes[i]
            for h in hashes[i + 1 : i + k]:
                g = ((g * int(COMBINE)) & MASK) ^ h
            ids.add(fmix(g ^ int(ORDER_SALT[k])) % buckets)
    return ids


def split_of(docs: list[list[str]], labels: list[int]) -> EncodedSplit:
    lengths = [len(d) for d in docs]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    hashes = hash_tokens([t for d in docs for t in d])
    return EncodedSplit(np.zeros(int(offsets[-1]), np.int32), offsets, np.asarray(labels, np.int64), hashes, offsets)


DOCS = [["a", "good", "movie"], ["not", "good"], ["a", "bad", "movie", "not", "good"], ["bad"], ["héllo", "wörld", "a"]]


def test_hashes_match_the_reference_and_every_text_its_ngrams():
    assert hash_tokens(["", "a", "héllo", "x" * 300]).tolist() == [fnv1a(t) for t in ["", "a", "héllo", "x" * 300]]
    split = split_of(DOCS, [1, 0, 0, 0, 1])
    ngrams = collate_ngrams(split, range(len(DOCS)), NgramSpec(3, 1000, True))
    offsets = ngrams.offsets.tolist() + [len(ngrams.ids)]
    for i, doc in enumerate(DOCS):
        assert set(ngrams.ids[offsets[i]:offsets[i + 1]].tolist()) == reference_ngrams(doc, 3, 1000)
    # every n-gram occurrence counted once: a text of L tokens has L - k + 1 k-grams
    assert float(ngrams.counts.sum()) == sum(max(len(d) - k + 1, 0) for d in DOCS for k in (1, 2, 3))


def test_a_100k_character_token_hashes_in_a_fifth_of_a_second_as_the_reference_does():
    import time

    long_tokens = ["x" * 100_000, "é" * 40_000 + "!", "y" * 65, "z" * 64]
    tokens = long_tokens + [w for d in DOCS for w in d]
    start = time.perf_counter()
    hashes = hash_tokens(tokens)
    assert time.perf_counter() - start < 0.2  # was 0.8 s: one numpy step per byte of the longest token
    assert hashes.tolist() == [fnv1a(t) for t in tokens]  # the same values: TOKEN_HASH_VERSION stays 1


HASH_SCRIPT = """
import json, numpy as np
from sentiment.ngrams import bags, hash_tokens
tokens = ["the", "movie", "was", "not", "good", "émouvant", "!"]
h = hash_tokens(tokens)
ids, offsets, counts = bags(h, np.array([0, 4, 7]), 3, 2**20)
print(json.dumps({"hashes": [str(v) for v in h], "ids": ids.tolist(), "offsets": offsets.tolist()}))
"""


def test_hashing_is_the_same_in_another_process_with_another_hash_seed():
    tokens = ["the", "movie", "was", "not", "good", "émouvant", "!"]
    h = hash_tokens(tokens)
    ids, offsets, _ = bags(h, np.array([0, 4, 7]), 3, 2**20)
    env = {**os.environ, "PYTHONHASHSEED": "4321", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", HASH_SCRIPT], env=env, capture_output=True, text=True, check=True)
    theirs = json.loads(out.stdout)
    assert theirs == {"hashes": [str(v) for v in h], "ids": ids.tolist(), "offsets": offsets.tolist()}


def test_nb_weighting_is_the_log_count_ratio_of_a_direct_count():
    labels = [1, 0, 0, 0, 1]
    spec = NgramSpec(2, 64, True)
    scale = ngram_statistics(split_of(DOCS, labels), spec, "nb", 2)
    present = [reference_ngrams(d, 2, 64) for d in DOCS]
    seen = sorted(set().union(*present))
    p = {g: 1.0 + sum(g in s for s, y in zip(present, labels) if y == 1) for g in seen}
    q = {g: 1.0 + sum(g in s for s, y in zip(present, labels) if y == 0) for g in seen}
    expected = np.zeros(64)
    for g in seen:
        expected[g] = np.log(p[g] / sum(p.values())) - np.log(q[g] / sum(q.values()))
    np.testing.assert_allclose(scale, expected, rtol=1e-5, atol=1e-6)
    idf = ngram_statistics(split_of(DOCS, labels), spec, "tfidf", 2)
    for g in seen:
        df = sum(g in s for s in present)
        assert idf[g] == pytest.approx(np.log(6 / (1 + df)) + 1)
    with pytest.raises(SentimentError, match="nb is for two classes"):
        ngram_statistics(split_of(DOCS, labels), spec, "nb", 3)


@pytest.mark.parametrize("rnn", ["gru", "none"])
def test_a_texts_output_does_not_depend_on_its_batch(rnn):
    cfg = load_config(None, ["data.glove_dim=null", "model.embed_dim=8", f"model.rnn={rnn}",
                             "model.ngrams.buckets=512", "model.hidden_size=8"])
    torch.manual_seed(0)
    model = build_model(cfg, 50, 0, 3).eval()
    with torch.no_grad():
        model.ngrams.table.weight.normal_()
        model.ngrams.set_statistics(np.random.default_rng(0).uniform(0.5, 2, 512))
    rng = np.random.default_rng(1)
    docs = [[f"w{rng.integers(30)}" for _ in range(rng.integers(1, 40))] for _ in range(9)]
    split = split_of(docs, [0] * 9)
    split.ids = rng.integers(2, 50, len(split.ids)).astype(np.int32)

    def logits(indices):
        from sentiment.data.batching import collate

        ids, lengths, _ = collate(split, indices)
        with torch.no_grad():
            return model(ids, lengths, **ngram_inputs(model, split, indices))

    together = logits(list(range(9)))
    for i in range(9):
        torch.testing.assert_close(logits([i])[0], together[i], atol=BATCH_TOL, rtol=0)
        torch.testing.assert_close(logits([8 - i, i, 3])[1], together[i], atol=BATCH_TOL, rtol=0)


def phrase_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Label 1 where a text says `not bad`, 0 where it says `bad not`: both words in every text of both
    classes, so only the bigram tells them apart."""
    rng = random.Random(seed)
    filler = ["the", "movie", "was", "it", "a", "plot", "and", "so", "this", "film"]
    rows = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(filler) for _ in range(rng.randint(2, 8))]
        words.insert(rng.randrange(len(words) + 1), "not bad" if label else "bad not")
        rows.append({"text": " ".join(words), "label": str(label)})
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def phrases(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("phrases") / "phrases.csv", phrase_rows(400))


def phrase_config(csv_path: Path, tmp: Path, *extra: str):
    return load_config(None, [*FAST, f"data.train_file={csv_path}", f"data.data_dir={tmp / 'data'}",
                              "model.rnn=none", "model.ngrams.buckets=4096", "model.ngrams.lr=0.1",
                              "train.epochs=4", *extra])


@pytest.mark.parametrize("n, low, high", [(2, 0.97, 1.0), (1, 0.3, 0.7)])
def test_bigrams_learn_a_phrase_that_unigrams_cannot(phrases, tmp_path, n, low, high):
    """model.rnn none: the branch alone trains, and is a real linear model of its n-grams."""
    cfg = phrase_config(phrases, tmp_path, f"model.ngrams.n={n}")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    results = train(cfg, run_dir)
    assert low <= results["valid"]["accuracy"] <= high, results["valid"]
    state = load_checkpoint(run_dir / LAST)["model"]
    assert not any(k.startswith(("embedding", "layers", "fc")) for k in state)  # no recurrent part at all


def test_the_same_text_gets_the_same_ngrams_in_training_evaluation_and_prediction(phrases, tmp_path):
    from sentiment.data.prepare import prepare_data
    from sentiment.inference.predict import encode_texts, encoding_of
    from sentiment.inference.runtime import load_trained

    cfg = phrase_config(phrases, tmp_path, "train.epochs=1")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    train(cfg, run_dir)
    run = load_trained(run_dir)
    data = prepare_data(cfg.data, token_hashes=True)  # as training prepares it
    scored = prepare_data(run.cfg.data, run.vocab, label_space=run.label_space, with_unlabeled=False,
                          token_hashes=True)  # as `sentiment eval` does
    with phrases.open(encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    rows = data.membership["valid"][:20]
    predicted = encode_texts([texts[r] for r in rows], encoding_of(run))  # as `sentiment predict` does
    spec = run.model.ngrams.spec
    for name, split, indices in (("train", data.valid, range(20)), ("eval", scored.valid, range(20)),
                                 ("predict", predicted, range(20))):
        got = collate_ngrams(split, list(indices), spec)
        if name == "train":
            expected = got
        else:
            assert all(torch.equal(a, b) for a, b in zip(got, expected)), name
    for i, r in enumerate(rows[:5]):  # and the reference, from the text's own tokens
        tokens = run.vocab.decode(predicted.ids[predicted.offsets[i]:predicted.offsets[i + 1]])
        assert set(collate_ngrams(predicted, [i], spec).ids.tolist()) == reference_ngrams(tokens, 2, 4096)


@pytest.mark.parametrize("sparse", [True, False])
def test_the_branch_has_its_own_optimizer_group_and_resumes_bitwise(phrases, tmp_path, sparse):
    """Dense: one group for the table and bias. Sparse (model.ngrams.sparse, LazyAdam on the table's rows): the bias,
    then the table marked sparse; the lazy optimizer's state resumes bitwise as Adam's does."""
    settings = ["model.rnn=gru", "model.hidden_size=8", "model.ngrams.weighting=nb", "model.ngrams.dropout=0.2",
                "model.ngrams.weight_decay=0.001", "train.epochs=2", f"model.ngrams.sparse={str(sparse).lower()}",
                "train.grad_clip=1.0"]
    cfg = phrase_config(phrases, tmp_path, *settings)
    model = build_model(cfg, 20, 0, 1)
    groups = parameter_groups(model, cfg)
    assert len(groups) == 2 + sparse and all(g["lr"] == 0.1 and g["weight_decay"] == 0.001 for g in groups[1:])
    assert {id(p) for g in groups[1:] for p in g["params"]} == {id(p) for p in model.ngrams.parameters()}
    assert [g.get("sparse", False) for g in groups[1:]] == ([False, True] if sparse else [False])

    whole = tmp_path / "whole"
    whole.mkdir()
    train(cfg, whole)
    cut = tmp_path / "cut"
    cut.mkdir()
    with pytest.raises(TrainingInterrupted):
        train(cfg, cut, stop=StopAfter(25))  # mid epoch 2
    train(cfg, cut, resume=True)
    whole_pt, cut_pt = load_checkpoint(whole / LAST), load_checkpoint(cut / LAST)
    a, b = whole_pt["model"], cut_pt["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert float(a["ngrams.scale"].abs().sum()) > 0  # the NB ratios went with the run
    assert float(a["ngrams.table.weight"].abs().max()) > 0  # the table trained
    table = whole_pt["optimizer"]["state"][len(whole_pt["optimizer"]["state"]) - 1]  # the last parameter: the table
    assert table["exp_avg"].shape == a["ngrams.table.weight"].shape
    for number, state in whole_pt["optimizer"]["state"].items():
        assert all(torch.equal(v, cut_pt["optimizer"]["state"][number][k]) for k, v in state.items())


@pytest.mark.parametrize("objective", ["train.adversarial.epsilon=1.0", "train.virtual_adversarial.epsilon=1.0",
                                       "train.entropy_minimization.weight=0.5"])
def test_extra_objectives_train_with_the_branch(phrases, tmp_path, objective):
    """Under each extra objective the branch gets gradients and learns: its table (zero at init) moved, and its
    own logits, without the LSTM's, tell `not bad` from `bad not` on validation, which only a bigram can."""
    from sentiment.data.prepare import prepare_data
    from sentiment.inference.runtime import load_trained

    cfg = phrase_config(phrases, tmp_path, "model.rnn=lstm", "model.hidden_size=8", "train.epochs=1", objective,
                        "model.combine=sum")  # the extra objectives train the summed whole
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    results = train(cfg, run_dir)
    run = load_trained(run_dir, "last")
    assert float(run.model.ngrams.table.weight.detach().abs().max()) > 0  # built with zeros: only training moves it
    valid = prepare_data(run.cfg.data, run.vocab, label_space=run.label_space, with_unlabeled=False,
                         token_hashes=True).valid
    with torch.no_grad():
        branch_logits = run.model.ngrams(collate_ngrams(valid, range(len(valid.labels)), run.model.ngrams.spec))
    branch_accuracy = float(((branch_logits[:, 0] > 0).long().numpy() == valid.labels).mean())
    assert branch_accuracy >= 0.9, (branch_accuracy, results["valid"])
    assert results["valid"]["accuracy"] >= 0.9, results["valid"]


def test_config_checks_for_the_branch():
    with pytest.raises(SentimentError, match="model.ngrams must be set when model.rnn is none"):
        load_config(None, ["model.rnn=none", "model.ngrams=null"])
    with pytest.raises(SentimentError, match="train.adversarial needs a recurrent part"):
        load_config(None, ["model.rnn=none", "model.ngrams.n=2", "train.adversarial.epsilon=1"])
    with pytest.raises(SentimentError, match="model.ngrams.n must be in 1..8"):
        load_config(None, ["model.ngrams.n=0"])
    assert load_config(None, []).model.ngrams is not None  # on by default: the default has two parts
    assert load_config(None, ["model.ngrams=null"]).model.ngrams is None


def test_ddp_run_with_the_branch_then_eval_and_predict_through_the_cli(phrases, tmp_path):
    """Two processes (DDP, gloo) train a GRU + branch mixed on validation (the main rank fits the mixture and sends
    it); `sentiment eval` reproduces its test figures, `eval --data`
    scores new labeled text, and `sentiment predict` tells the phrase apart (the n-grams computed there too)."""
    env = {**os.environ, "SENTIMENT_DIST_TIMEOUT": "30", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("SENTIMENT_CACHE_DIR", None)

    def sentiment(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sentiment", *args], capture_output=True, text=True, env=env,
                              timeout=600)

    settings = [s for s in FAST if not s.startswith(("data.test_fraction", "run.eval_test"))]
    settings += [f"data.train_file={phrases}", f"data.data_dir={tmp_path / 'data'}", "model.hidden_size=8",
                 "model.ngrams.buckets=4096", "model.ngrams.lr=0.1", "train.epochs=3", "data.test_fraction=0.2",
                 "model.combine=mixture"]
    run_dir = tmp_path / "run"
    done = sentiment("train", "--nproc", "2", *[a for s in settings for a in ("--set", s)], "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["processes"] == 2 and results["test"]["accuracy"] > 0.9, results["test"]
    out = sentiment("eval", "--run", str(run_dir), "--json")
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["confusion"] == results["test"]["confusion"]
    new = write_csv(tmp_path / "new.csv", phrase_rows(40, seed=7))
    out = sentiment("eval", "--run", str(run_dir), "--data", str(new), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["accuracy"] > 0.9
    out = sentiment("predict", "--run", str(run_dir), "--json", "the plot was not bad", "the plot was bad not")
    assert out.returncode == 0, out.stderr
    labels = [json.loads(line)["label"] for line in out.stdout.strip().splitlines()[-2:]]
    assert labels == ["1", "0"], out.stdout


def test_the_branch_reads_the_truncated_text_only_when_told():
    docs = [[f"w{i}" for i in range(40)]]
    split = split_of(docs, [0])
    whole = collate_ngrams(split, [0], NgramSpec(2, 2**16, True), max_len=8, mode="head+tail")
    cut = collate_ngrams(split, [0], NgramSpec(2, 2**16, False), max_len=8, mode="head+tail")
    assert set(whole.ids.tolist()) == reference_ngrams(docs[0], 2, 2**16)
    kept = docs[0][:2] + docs[0][-6:]  # head+tail: a quarter of the budget from the head
    assert set(cut.ids.tolist()) == reference_ngrams(kept, 2, 2**16)


@pytest.mark.parametrize("classes, weighting, buckets", [(2, "nb", 2**22), (3, "tfidf", 2**22), (20, "tfidf", 2**19)])
def test_auto_weighting_and_null_buckets_resolve_for_the_classes_within_200_mb(classes, weighting, buckets):
    from sentiment.ngrams import TABLE_BUDGET_BYTES, resolve_branch

    cfg = load_config(None, ["model.ngrams={n: 2, weighting: auto, buckets: null}"])
    assert resolve_branch(cfg, classes) == [f"model.ngrams.weighting={weighting}", f"model.ngrams.buckets={buckets}"]
    assert (cfg.model.ngrams.weighting, cfg.model.ngrams.buckets) == (weighting, buckets)
    outputs = 1 if classes == 2 else classes
    assert 3 * 4 * outputs * buckets <= TABLE_BUDGET_BYTES < 3 * 4 * outputs * buckets * 2 or buckets == 2**22
    model = build_model(load_config(None, ["model.ngrams={n: 2, weighting: auto, buckets: null}"]), 20, 0, outputs)
    assert (model.ngrams.weighting, model.ngrams.spec.buckets) == (weighting, buckets)  # built as a run stores it
    given = load_config(None, ["model.ngrams={n: 2, weighting: tfidf, buckets: 4096}"])
    assert resolve_branch(given, classes) == [] and given.model.ngrams.buckets == 4096


def test_a_run_stores_what_auto_chose_and_resumes_from_the_config_that_said_auto(phrases, tmp_path):
    from sentiment.runs import load_run

    auto = ["model.ngrams.weighting=auto", "model.ngrams.buckets=null", "train.epochs=2"]
    cfg = phrase_config(phrases, tmp_path, *auto)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(TrainingInterrupted):
        train(cfg, run_dir, stop=StopAfter(3))
    from sentiment.data.prepare import prepare_data

    saved, _ = load_run(run_dir)
    ngrams = 2 * len(prepare_data(phrase_config(phrases, tmp_path).data, token_hashes=True).train.hashes)
    buckets = saved.model.ngrams.buckets  # the power of two at or just above the training rows' 1-2 grams
    assert saved.model.ngrams.weighting == "nb" and buckets & (buckets - 1) == 0 and buckets // 2 < ngrams <= buckets
    from typer.testing import CliRunner

    from sentiment.cli import app
    from sentiment.config import dump_config

    said_auto = tmp_path / "auto.yaml"  # train() resolved cfg in place: the file is written from a fresh one
    said_auto.write_text(dump_config(phrase_config(phrases, tmp_path, *auto)), encoding="utf-8")
    assert "weighting: auto" in said_auto.read_text()
    result = CliRunner().invoke(app, ["train", "--resume", str(run_dir), "--config", str(said_auto)])
    assert result.exit_code == 0, result.output
