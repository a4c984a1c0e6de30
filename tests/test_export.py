"""`sentiment export` and `sentiment predict --model`: ONNX and torch.export files score token ids (and the
n-gram branch's hashed n-grams) as the run's own model does, with dynamic batch and length, independent of
padding; bad input is one error line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sentiment.cli import app
from sentiment.inference.export import export_model, sidecar_path
from sentiment.inference.exported import encoding_from, load_exported
from sentiment.model import POOLINGS, SentimentRNN
from sentiment.ngrams import NgramBatch, NgramBranch, NgramSpec, bags, collate_ngrams
from conftest import TINY_TRAINING, make_imdb, one_line_error, set_args

pytest.importorskip("onnxruntime")

runner = CliRunner()
FAST = ["data.glove_dim=null", "model.embed_dim=16", "run.threads=1", "data.workers=1", "train.epochs=2",
        *TINY_TRAINING]
PARITY = 1e-5  # max |Δ probability| between an exported model and the run's own
TEXTS = [
    " ".join(["The film was great and the cast was wonderful."] * 12),
    "awful",
    'He said "superb", and I loved it.',
    " ".join(["A boring, dull mess with the worst plot."] * 30),
    "Terrible. Hated it.<br /><br />Really.",
    "",
]
# one whitespace-free chunk of more than 100 characters, not all letters: split by \w+|\W, never by spaCy (which
# would read "boring!awful" as one token)
LONG_CHUNK_TEXT = "The film was " + "awful,boring!" * 10


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def predict_rows(*args: str, texts: list[str] = TEXTS) -> list[dict]:
    code, text = run("predict", "--json", *args, *texts)
    assert code == 0, text
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory) -> Path:
    """A two-class BiLSTM run on generated IMDB-shaped reviews."""
    base = tmp_path_factory.mktemp("export2")
    data = make_imdb(base / "data", n_per_class=40, with_glove=False)
    code, text = run("train", *set_args([f"data.data_dir={data}", *FAST, "model.rnn=lstm", "model.pooling=max+mean"]),
                     "--run-dir", str(base / "run"))
    assert code == 0, text
    return base / "run"


@pytest.fixture(scope="module")
def three_run(tmp_path_factory) -> Path:
    """A three-class BiGRU run on a generated CSV."""
    base = tmp_path_factory.mktemp("export3")
    rng = random.Random(0)
    cues = {"bad": ["awful", "rude", "lost"], "meh": ["gate", "seat", "booked"], "good": ["great", "thanks", "smooth"]}
    filler = ["the", "my", "was", "and", "it", "this", "so", "very", "crew", "today"]
    rows = ["text,label"] + [" ".join(rng.sample(filler, 4) + [rng.choice(words)]) + f",{label}"
                             for label, words in cues.items() for _ in range(60)]
    (base / "rows.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    code, text = run("train", *set_args([f"data.data_dir={base / 'data'}", "data.dataset=files",
                                         f"data.train_file={base / 'rows.csv'}", *FAST, "model.rnn=gru",
                                         "model.pooling=mean"]), "--run-dir", str(base / "run"))
    assert code == 0, text
    return base / "run"


NGRAM_BRANCH = ["model.ngrams.n=2", "model.ngrams.buckets=4096", "model.ngrams.lr=0.05", "model.ngrams.weighting=tfidf",
                "model.combine=sum"]  # tfidf: the counts input is exported too


@pytest.fixture(scope="module")
def ngram_gru_run(tmp_path_factory) -> Path:
    """A two-class BiGRU run with the n-gram branch (tfidf) reading the truncated text: data.eval_max_len 20
    cuts the long TEXTS, so the n-grams of a cut text must be cut alike after export."""
    base = tmp_path_factory.mktemp("export_ngram_gru")
    data = make_imdb(base / "data", n_per_class=40, with_glove=False)
    code, text = run("train", *set_args([f"data.data_dir={data}", *FAST, "model.rnn=gru", "model.hidden_size=8",
                                         "data.eval_max_len=20", *NGRAM_BRANCH, "model.ngrams.text=truncated"]),
                     "--run-dir", str(base / "run"))
    assert code == 0, text
    return base / "run"


@pytest.fixture(scope="module")
def ngram_alone_run(tmp_path_factory) -> Path:
    """A two-class run of the n-gram branch alone (model.rnn none), nb weighting (no counts input), whole text."""
    base = tmp_path_factory.mktemp("export_ngram_alone")
    data = make_imdb(base / "data", n_per_class=40, with_glove=False)
    code, text = run("train", *set_args([f"data.data_dir={data}", *FAST, "model.rnn=none", *NGRAM_BRANCH,
                                         "model.ngrams.weighting=nb"]), "--run-dir", str(base / "run"))
    assert code == 0, text
    return base / "run"


@pytest.fixture(scope="module")
def mixture_run(tmp_path_factory) -> Path:
    """The default's shape: a BiGRU and the branch (nb, sparse) each on its own loss, mixed on validation."""
    base = tmp_path_factory.mktemp("export_mixture")
    data = make_imdb(base / "data", n_per_class=40, with_glove=False)
    code, text = run("train", *set_args([f"data.data_dir={data}", *FAST, "model.rnn=gru", "model.hidden_size=8",
                                         "model.ngrams.n=2", "model.ngrams.buckets=4096", "model.ngrams.lr=0.05",
                                         "model.combine=mixture"]), "--run-dir", str(base / "run"))
    assert code == 0, text
    return base / "run"


def assert_rows_close(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.keys() == e.keys()
        if "error" in e:
            assert g == e
            continue
        assert g["label"] == e["label"]
        assert max(abs(g["probs"][k] - v) for k, v in e["probs"].items()) <= PARITY


@pytest.mark.parametrize("fmt, name", [("onnx", "model.onnx"), ("torch", "model.pt2")])
def test_binary_run_round_trips(binary_run, tmp_path, fmt, name):
    out = tmp_path / name
    code, text = run("export", "--run", str(binary_run), "--format", fmt, "--out", str(out))
    assert code == 0, text
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["labels"] == ["negative", "positive"] and meta["inputs"] == ["ids", "lengths"]
    assert meta["cleaning"]["html_breaks"] is True and meta["truncate"] == "head+tail"
    assert_rows_close(predict_rows("--model", str(out)), predict_rows("--run", str(binary_run)))


def test_three_class_run_round_trips(three_run, tmp_path):
    out = tmp_path / "three.onnx"
    code, text = run("export", "--run", str(three_run), "--format", "onnx", "--out", str(out))
    assert code == 0, text
    expected = predict_rows("--run", str(three_run))
    assert set(expected[0]["probs"]) == {"bad", "good", "meh"}
    assert_rows_close(predict_rows("--model", str(out)), expected)


# the n-gram runs through both formats: the recurrent one through torch.export too (one case: export is slow)
NGRAM_CASES = [("mixture_run", "onnx", ["ids", "lengths", "ngram_ids", "ngram_offsets"]),
               ("ngram_gru_run", "onnx", ["ids", "lengths", "ngram_ids", "ngram_offsets", "ngram_counts"]),
               ("ngram_gru_run", "torch", ["ids", "lengths", "ngram_ids", "ngram_offsets", "ngram_counts"]),
               ("ngram_alone_run", "onnx", ["ngram_ids", "ngram_offsets"])]


@pytest.mark.parametrize("fixture, fmt, inputs", NGRAM_CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_ngram_run_round_trips(request, tmp_path, fixture, fmt, inputs):
    run_dir = request.getfixturevalue(fixture)
    out = tmp_path / f"model.{fmt}"
    code, text = run("export", "--run", str(run_dir), "--format", fmt, "--out", str(out))
    assert code == 0, text
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["inputs"] == inputs
    assert {k: meta["ngrams"][k] for k in ("n", "buckets")} == {"n": 2, "buckets": 4096}
    assert meta["ngrams"]["text"] == ("truncated" if fixture == "ngram_gru_run" else "whole")
    expected = predict_rows("--run", str(run_dir))
    assert_rows_close(predict_rows("--model", str(out)), expected)


def ngram_model(rnn: str, weighting: str, k: int) -> SentimentRNN:
    """A random model with the n-gram branch (random table and bucket scales, so every part counts)."""
    torch.manual_seed(0)
    branch = NgramBranch(NgramSpec(2, 64, True), k, weighting)
    with torch.no_grad():
        branch.table.weight.normal_()
        branch.bias.normal_()
    branch.set_statistics(np.random.default_rng(0).uniform(0.5, 2.0, 64))
    return SentimentRNN(40, 8, hidden_size=6, num_layers=1, rnn=rnn, pooling="max", num_outputs=k, dropout=0.0,
                        embed_dropout=0.0, ngrams=branch).eval()


@pytest.mark.parametrize("rnn, weighting, k", [("gru", "tfidf", 1), ("none", "nb", 1), ("lstm", "none", 3)])
def test_exported_ngram_model_matches_and_ignores_padding(tmp_path, rnn, weighting, k):
    model = ngram_model(rnn, weighting, k)
    out = tmp_path / "m.onnx"
    export_model(model, out, "onnx", {"labels": ["negative", "positive"] if k == 1 else ["a", "b", "c"]})
    exported = load_exported(out)
    ids, lengths = padded_batch(40, [13, 1, 5, 9, 2])
    gen = np.random.default_rng(1)
    hashes = gen.integers(0, 2**63, int(lengths.sum()), dtype=np.uint64)  # token hashes of each text, end to end
    offsets = np.concatenate([[0], np.cumsum(lengths.numpy())])

    def ngrams_of(rows: list[int]) -> NgramBatch:
        flat = np.concatenate([hashes[offsets[r]:offsets[r + 1]] for r in rows])
        row_offsets = np.concatenate([[0], np.cumsum([offsets[r + 1] - offsets[r] for r in rows])])
        return NgramBatch(*map(torch.from_numpy, bags(flat, row_offsets, 2, 64)))

    together = ngrams_of(list(range(5)))
    with torch.inference_mode():
        reference = model(ids, lengths, ngrams=together)
    got = exported(ids, lengths, together)
    assert got.shape == reference.shape
    assert (got - reference).abs().max().item() < 1e-5
    for i, n in enumerate(lengths.tolist()):  # alone and unpadded, as in the padded batch
        alone = exported(ids[i : i + 1, :n], lengths[i : i + 1], ngrams_of([i]))
        assert (alone - got[i : i + 1]).abs().max().item() < 1e-6


def padded_batch(vocab: int, lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths_t = torch.tensor(lengths)
    ids = torch.randint(2, vocab, (len(lengths), max(lengths)), generator=gen)
    return ids.masked_fill(torch.arange(max(lengths))[None, :] >= lengths_t[:, None], 0), lengths_t


# every pooling of LSTM and GRU, two and three classes, through ONNX; torch.export (slow to export: ~30 s a
# model on a busy CPU) for a few of them
CASES = [(rnn, pooling, k, "onnx") for rnn in ("lstm", "gru") for pooling in POOLINGS for k in (1, 3)]
CASES += [("lstm", "max", 3, "torch"), ("gru", "max+mean", 1, "torch")]


@pytest.mark.parametrize("rnn, pooling, k, fmt", CASES, ids=lambda v: str(v))
def test_exported_model_matches_and_ignores_padding(tmp_path, rnn, pooling, k, fmt):
    torch.manual_seed(0)
    layers = 1 if (fmt, rnn) == ("torch", "gru") else 2  # a scan costs export time: one 2-layer torch case
    model = SentimentRNN(40, 8, hidden_size=6, num_layers=layers, rnn=rnn, pooling=pooling, num_outputs=k,
                         dropout=0.0, embed_dropout=0.0).eval()
    labels = ["negative", "positive"] if k == 1 else ["a", "b", "c"]
    out = tmp_path / f"m.{fmt}"
    export_model(model, out, fmt, {"labels": labels})
    exported = load_exported(out)
    # batch and length other than the export's example (3, 7): both axes are dynamic
    ids, lengths = padded_batch(40, [13, 1, 5, 9, 2])
    with torch.inference_mode():
        reference = model(ids, lengths)
    got = exported(ids, lengths)
    assert got.shape == reference.shape
    assert (got - reference).abs().max().item() < 1e-5
    for i, n in enumerate(lengths.tolist()):  # alone and unpadded, as in the padded batch
        alone = exported(ids[i : i + 1, :n], lengths[i : i + 1])
        assert (alone - got[i : i + 1]).abs().max().item() < 1e-6


def test_bad_input_is_one_error_line(binary_run, tmp_path):
    code, text = run("export", "--run", str(tmp_path), "--format", "onnx", "--out", str(tmp_path / "m.onnx"))
    one_line_error(code, text, "not a run directory")
    code, text = run("export", "--run", str(binary_run), "--format", "tflite", "--out", str(tmp_path / "m.tfl"))
    one_line_error(code, text, "--format must be one of onnx, torch", "tflite")
    code, text = run("predict", "--model", str(tmp_path / "missing.onnx"), "great")
    one_line_error(code, text, "missing.onnx not found")
    (tmp_path / "lone.onnx").write_bytes(b"not onnx")
    code, text = run("predict", "--model", str(tmp_path / "lone.onnx"), "great")
    one_line_error(code, text, "lone.onnx.json")
    code, text = run("predict", "--model", str(tmp_path / "lone.onnx"), "--run", str(binary_run), "great")
    one_line_error(code, text, "one of them")


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_export_never_overwrites_a_run_file_or_a_file_it_did_not_write(binary_run, tmp_path):
    run_files = _files(binary_run)
    for name in ("best.pt", "last.pt", "config.yaml", "vocab.json", "labels.json", "run.json", "splits.npz",
                 "results", "model.txt"):  # "results": its sidecar would be the run's results.json
        code, text = run("export", "--run", str(binary_run), "--format", "onnx", "--out", str(binary_run / name))
        one_line_error(code, text, "inside the run directory", ".onnx or .pt2")
    other_run = tmp_path / "other_run"  # another run directory is protected alike
    other_run.mkdir()
    for name in ("run.json", "config.yaml", "vocab.json"):
        (other_run / name).write_text("{}")
    one_line_error(*run("export", "--run", str(binary_run), "--format", "torch", "--out", str(other_run / "best.pt")),
                   "inside the run directory")
    notes = tmp_path / "notes.onnx"
    notes.write_text("mine")
    one_line_error(*run("export", "--run", str(binary_run), "--format", "onnx", "--out", str(notes)),
                   "exists and is not an earlier export")
    (tmp_path / "m.onnx.json").write_text('{"mine": true}')
    one_line_error(*run("export", "--run", str(binary_run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")),
                   "m.onnx.json exists and is not the sidecar")
    assert notes.read_text() == "mine" and (tmp_path / "m.onnx.json").read_text() == '{"mine": true}'
    assert _files(binary_run) == run_files
    for _ in range(2):  # a new name in the run directory, then again over that earlier export
        code, text = run("export", "--run", str(binary_run), "--format", "onnx", "--out", str(binary_run / "model.onnx"))
        assert code == 0, text
    assert {k: v for k, v in _files(binary_run).items() if not k.startswith("model.onnx")} == run_files
    (binary_run / "model.onnx").unlink()
    (binary_run / "model.onnx.json").unlink()


@pytest.mark.parametrize("failing_write", [1, 2], ids=["model", "sidecar"])
def test_an_export_onto_a_full_disk_leaves_the_previous_pair_intact(binary_run, tmp_path, monkeypatch, failing_write):
    import errno
    import os

    out = tmp_path / "model.onnx"
    code, text = run("export", "--run", str(binary_run), "--format", "onnx", "--out", str(out))
    assert code == 0, text
    before = _files(tmp_path)
    real_fsync, calls = os.fsync, []

    def full_disk(fd: int) -> None:
        calls.append(fd)
        if len(calls) == failing_write:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    code, text = run("export", "--run", str(binary_run), "--format", "onnx", "--checkpoint", "last", "--out", str(out))
    monkeypatch.undo()
    one_line_error(code, text, "No space left on device", "nothing was replaced", "previous export is intact")
    assert _files(tmp_path) == before  # the old pair, whole, and no temporary file
    code, text = run("predict", "--model", str(out), "--json", "great film")
    assert code == 0, text


def test_a_model_and_a_sidecar_of_different_exports_are_refused(binary_run, three_run, tmp_path):
    import hashlib
    import shutil

    for name, source in (("two.onnx", binary_run), ("three.onnx", three_run)):
        code, text = run("export", "--run", str(source), "--format", "onnx", "--out", str(tmp_path / name))
        assert code == 0, text
    mixed = tmp_path / "mixed.onnx"
    shutil.copy(tmp_path / "two.onnx", mixed)  # run B's graph beside run A's sidecar
    shutil.copy(tmp_path / "three.onnx.json", sidecar_path(mixed))
    one_line_error(*run("predict", "--model", str(mixed), "great"), "mixed.onnx", "sha256 differs")
    # a 2-class graph with a 3-class sidecar whose digest was made to match: the output width gives it away
    meta = json.loads(sidecar_path(mixed).read_text())
    meta["sha256"] = hashlib.sha256(mixed.read_bytes()).hexdigest()
    sidecar_path(mixed).write_text(json.dumps(meta))
    one_line_error(*run("predict", "--model", str(mixed), "great"), "1 output(s) per text", "3 labels")


def test_bench_export_help_and_smoke(binary_run, tmp_path):
    import os
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_export.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "--formats" in done.stdout
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("\n".join(t for t in TEXTS if t) + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), "--run", str(binary_run), "--data", str(reviews),
                           "--formats", "onnx", "--repeats", "1", "--json"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["reviews"] == 5 and results["onnx"]["max_abs_delta_prob"] <= PARITY
    assert results["onnx"]["tokens_per_s"] > 0 and results["torch_eager"]["tokens_per_s"] > 0


def documented() -> dict:
    """docs/serving.md's functions (load, tokens, cut, ngram_bag, probabilities, ...), without the example call."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "serving.md").read_text(encoding="utf-8")
    source = doc.split("```python\n", 1)[1].split("```", 1)[0]
    source = source[: source.index('meta, session = load("model.onnx")')]
    namespace: dict = {}
    exec(compile(source, "serving.md", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("fixture", ["binary_run", "ngram_gru_run", "ngram_alone_run", "mixture_run"])
def test_the_documented_function_agrees_with_predict_model(request, tmp_path, fixture):
    """docs/serving.md's text-to-probabilities function, without this package, gives predict --model's rows
    (with the n-gram branch too: its hashing function is the package's, one token at a time)."""
    out = tmp_path / "doc.onnx"
    code, text = run("export", "--run", str(request.getfixturevalue(fixture)), "--format", "onnx", "--out", str(out))
    assert code == 0, text
    namespace = documented()
    meta, session = namespace["load"](str(out))
    texts = TEXTS + [LONG_CHUNK_TEXT]
    probs = namespace["probabilities"](texts + ["<br /><br />"], meta, session)
    expected = predict_rows("--model", str(out), texts=texts)
    assert len(expected) == len(texts)
    for row, p in zip(expected, probs):
        if "error" in row:
            assert np.isnan(p).all()
        else:
            assert abs(row["probability"] - p[1]) <= 1e-6
    assert np.isnan(probs[-1]).all()


def test_the_same_text_gets_the_same_ngrams_in_predict_and_the_exported_path(ngram_gru_run, tmp_path):
    """`predict --run`, `predict --model` and docs/serving.md's ngram_bag give a text the same n-gram ids and
    counts (here of the truncated text, as the run's branch reads it)."""
    import spacy

    from sentiment.inference.predict import encode_texts, encoding_of
    from sentiment.inference.runtime import load_trained

    out = tmp_path / "m.onnx"
    code, text = run("export", "--run", str(ngram_gru_run), "--format", "onnx", "--out", str(out))
    assert code == 0, text
    trained, exported = load_trained(ngram_gru_run, "best", "cpu"), load_exported(out)
    texts = [t for t in TEXTS if t]
    paths = []
    for model, enc in ((trained.model, encoding_of(trained)), (exported, encoding_from(exported.meta))):
        split = encode_texts(texts, enc)
        paths.append([collate_ngrams(split, [i], model.ngrams.spec, enc.max_len, enc.truncate)
                      for i in range(len(texts))])
    namespace, meta = documented(), exported.meta
    tokenizer = spacy.blank("en").tokenizer
    for i, t in enumerate(texts):
        from_run, from_export = paths[0][i], paths[1][i]
        assert torch.equal(from_run.ids, from_export.ids) and torch.equal(from_run.counts, from_export.counts)
        cut = namespace["cut"](namespace["tokens"](t, meta, tokenizer), meta)
        bag = sorted(namespace["ngram_bag"](cut, meta["ngrams"]["n"], meta["ngrams"]["buckets"]).items())
        assert from_run.ids.tolist() == [g for g, _ in bag] and from_run.counts.tolist() == [c for _, c in bag]
    assert len(namespace["tokens"](texts[0], meta, tokenizer)) > meta["max_len"]  # a text the cut shortened
