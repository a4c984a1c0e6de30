"""`sentiment export` and `sentiment predict --model`: ONNX and torch.export files score token ids as the
run's own model does, with dynamic batch and length, independent of padding; bad input is one error line."""

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
from sentiment.inference.exported import load_exported
from sentiment.model import POOLINGS, SentimentRNN
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


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def predict_rows(*args: str) -> list[dict]:
    code, text = run("predict", "--json", *args, *TEXTS)
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


def test_the_documented_function_agrees_with_predict_model(binary_run, tmp_path):
    """docs/serving.md's text-to-probabilities function, without this package, gives predict --model's rows."""
    out = tmp_path / "doc.onnx"
    code, text = run("export", "--run", str(binary_run), "--format", "onnx", "--out", str(out))
    assert code == 0, text
    doc = (Path(__file__).resolve().parents[1] / "docs" / "serving.md").read_text(encoding="utf-8")
    source = doc.split("```python\n", 1)[1].split("```", 1)[0]
    source = source[: source.index('meta, session = load("model.onnx")')]  # the functions, not the example call
    namespace: dict = {}
    exec(compile(source, "serving.md", "exec"), namespace)
    meta, session = namespace["load"](str(out))
    probs = namespace["probabilities"](TEXTS + ["<br /><br />"], meta, session)
    expected = predict_rows("--model", str(out))
    for row, p in zip(expected, probs):
        if "error" in row:
            assert np.isnan(p).all()
        else:
            assert abs(row["probability"] - p[1]) <= 1e-6
    assert np.isnan(probs[-1]).all()
