"""sentiment explain (sentiment/inference/explain.py, gates.py, mistakes.py; the CLI in sentiment/cli/explain.py):
completeness of the contributions, the branch's exactness, unread tokens, the gate equations against PyTorch's
modules, and the commands' outputs and error lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sentiment.cli import app
from sentiment.data.batching import truncate
from sentiment.data.labels import LabelSpace
from sentiment.data.tokenize import IMDB_CLEANING
from sentiment.data.vocab import Vocab
from sentiment.errors import SentimentError
from sentiment.inference.explain import DEFAULT_STEPS, Explainer, load_explainer
from sentiment.inference.gates import gru_states, lstm_states, trace_gates
from sentiment.inference.predict import Encoding, load_predictor
from sentiment.model import SentimentRNN
from sentiment.ngrams import NgramBranch, NgramSpec
from conftest import NEGATIVE, NEUTRAL, POSITIVE, TINY_TRAINING, make_imdb, one_line_error, set_args

runner = CliRunner()
EVAL_MAX_LEN = 20  # short, so that longer texts have tokens the recurrent part does not read
FAST = ["data.glove_dim=null", "model.embed_dim=16", "run.threads=1", "data.workers=1", "train.epochs=2",
        *TINY_TRAINING, "model.rnn=gru", "model.hidden_size=8", "model.ngrams.n=2", "model.ngrams.buckets=4096",
        "model.ngrams.lr=0.05", "model.combine=mixture", f"data.eval_max_len={EVAL_MAX_LEN}", "data.max_len=20"]
TEXTS = ["The movie was wonderful and the cast superb, but the plot was a boring mess really. " * 2,
         "awful", "A brilliant, moving film with great music and a dull ending."]


@pytest.fixture(scope="module")
def mixture_run(tmp_path_factory) -> Path:
    """A trained BiGRU + n-gram branch, mixed (the default's shape), reading 20 tokens."""
    base = tmp_path_factory.mktemp("explain")
    data = make_imdb(base / "data", n_per_class=40, with_glove=False)
    result = runner.invoke(app, ["train", *set_args([f"data.data_dir={data}", *FAST]), "--run-dir", str(base / "run")])
    assert result.exit_code == 0, result.output
    return base / "run"


@pytest.fixture(scope="module")
def explainer(mixture_run) -> Explainer:
    return load_explainer(mixture_run)


def k_class_explainer(rnn: str = "lstm", whole_text: bool = False) -> Explainer:
    """Three classes, a 2-layer bidirectional LSTM and a tfidf branch over 1-3 grams, mixed; random weights."""
    torch.manual_seed(0)
    vocab = Vocab(["<pad>", "<unk>", *NEUTRAL, *POSITIVE, *NEGATIVE, ".", ","])
    branch = NgramBranch(NgramSpec(3, 512, whole_text), 3, "tfidf")
    with torch.no_grad():
        branch.table.weight.normal_()
        branch.bias.normal_()
        branch.scale.uniform_(0.5, 2.0)
    model = SentimentRNN(len(vocab), 8, hidden_size=6, num_layers=2, rnn=rnn, pooling="max+mean", dropout=0.0,
                         embed_dropout=0.0, num_outputs=3, ngrams=branch, combine="mixture").eval()
    model.set_mixture([0.7, 1.8], [0.1, -0.2, 0.3])
    enc = Encoding(vocab, lowercase=True, max_len=12, truncate="head+tail", workers=1, cleaning=IMDB_CLEANING,
                   ngrams=True)
    return Explainer(model, enc, LabelSpace(["angry", "calm", "happy"]))


# ---------------------------------------------------------------- the library
def test_contributions_add_up_to_the_logit_difference_for_a_mixture_run(explainer, mixture_run):
    explanations = explainer.explain(TEXTS)
    probs = load_predictor(mixture_run).probabilities(TEXTS)
    model = explainer.model
    for e, p in zip(explanations, probs):
        assert e.outputs == ["positive"] and len(e.contributions) == len(e.tokens) == len(e.read)
        total = np.asarray(e.contributions).sum(0)
        gap = np.asarray(e.logits) - np.asarray(e.baseline_logits)
        assert np.abs(total - gap).max() <= 0.05 * max(abs(gap).max(), 1e-2), (total, gap)
        assert e.completeness_error <= 0.05 and e.steps == DEFAULT_STEPS
        assert np.allclose(e.probabilities, p, atol=1e-5)  # the same figures predict gives
        # each part is scaled by its mixture weight: the parts add up to the whole
        rnn, branch = np.asarray(e.rnn_contributions), np.asarray(e.branch_contributions)
        assert np.allclose(rnn + branch, e.contributions)
        assert e.mixture == pytest.approx(model.mix.tolist())
    json.dumps([e.to_dict() for e in explanations])  # JSON-able
    assert explanations[1].label == "negative" and explanations[1].contributions[0][0] < 0


def test_k_classes_get_a_column_each_and_completeness_holds():
    explainer = k_class_explainer()
    for e in explainer.explain(["The film was wonderful but the ending awful, dull and a mess.", "great fun"]):
        assert e.outputs == ["angry", "calm", "happy"] and np.asarray(e.contributions).shape == (len(e.tokens), 3)
        assert e.completeness_error <= 0.05, e.completeness_error
        assert e.label == e.classes[int(np.argmax(e.probabilities))]


def test_the_branch_share_is_exact_and_unread_tokens_are_marked():
    explainer = k_class_explainer(whole_text=True)
    model = explainer.model
    text = " ".join(["the", "movie", "was", "great", "fun"] * 4 + ["awful"])  # 21 tokens, 12 read
    e = explainer.explain([text])[0]
    window = truncate(np.arange(len(e.tokens)), 12, "head+tail")
    assert [i for i, r in enumerate(e.read) if r] == window.tolist() and sum(e.read) == 12
    rnn, branch = np.asarray(e.rnn_contributions), np.asarray(e.branch_contributions)
    unread = ~np.asarray(e.read)
    assert np.all(rnn[unread] == 0) and np.abs(branch[unread]).sum() > 0  # the branch reads the whole text
    # exact: the branch's share adds up to mix[1] * (its logits - its bias), as the model computes them
    from sentiment.inference.predict import encode_texts
    from sentiment.ngrams import collate_ngrams

    split = encode_texts([text], explainer.enc)
    with torch.no_grad():
        own = model.ngrams(collate_ngrams(split, [0], model.ngrams.spec))[0]
    expected = float(model.mix[1]) * (own - model.ngrams.bias).detach().double().numpy()
    assert np.allclose(branch.sum(0), expected, atol=1e-5, rtol=1e-6)


def test_a_branch_only_model_reads_every_token_and_needs_no_gradients():
    branch = NgramBranch(NgramSpec(2, 64, True), 1, "none")
    with torch.no_grad():
        branch.table.weight.normal_()
    model = SentimentRNN(10, 4, rnn="none", ngrams=branch).eval()
    vocab = Vocab(["<pad>", "<unk>", "good", "bad"])
    e = Explainer(model, Encoding(vocab, True, 2, "head+tail", 1, IMDB_CLEANING, True),
                  LabelSpace(["negative", "positive"])).explain(["good good bad film"])[0]
    assert all(e.read) and e.rnn_contributions is None and e.completeness_error < 1e-5  # exact, up to float32


def test_bad_input_is_one_error(explainer, monkeypatch):
    with pytest.raises(SentimentError, match="empty"):
        explainer.explain(["<br />  "])
    with pytest.raises(SentimentError, match="at most 3"):
        explainer.explain(["one two three four"], max_tokens=3)
    with pytest.raises(SentimentError, match="steps"):
        explainer.explain(["good"], steps=0)
    monkeypatch.setitem(sys.modules, "captum.attr", None)  # as if Captum were not installed
    with pytest.raises(SentimentError, match=r"sentiment\[explain\]"):
        explainer.explain(["good"])


# ---------------------------------------------------------------- the gates
@pytest.mark.parametrize("cls,states", [(torch.nn.GRU, gru_states), (torch.nn.LSTM, lstm_states)])
def test_the_gate_equations_give_the_modules_hidden_states(cls, states):
    torch.manual_seed(1)
    module = cls(5, 7, batch_first=True)
    x = torch.randn(30, 5)
    gates, hidden = states(module, x)
    with torch.no_grad():
        own = module(x[None])[0][0]
    assert (hidden - own).abs().max() < 1e-5
    assert all(g.shape == (30, 7) and 0 <= float(g.min()) and float(g.max()) <= 1 and not g.requires_grad for g in gates.values())


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_a_bidirectional_stacks_gates_line_up_with_the_models_features(rnn):
    torch.manual_seed(2)
    model = SentimentRNN(20, 6, hidden_size=5, num_layers=2, rnn=rnn, pooling="last").eval()
    ids = torch.randint(2, 20, (9,))
    trace = trace_gates(model, ids, [str(i) for i in ids.tolist()])
    assert [(d.layer, d.direction) for d in trace.directions] == [(0, "forward"), (0, "backward"), (1, "forward"),
                                                                  (1, "backward")]
    top_fwd, top_bwd = trace.directions[2].hidden, trace.directions[3].hidden
    with torch.no_grad():
        features = model.features(ids[None], torch.tensor([9]))[0].numpy()
    # the forward direction ends at the last token; the backward one, aligned to positions, at the first
    assert np.abs(np.concatenate([top_fwd[-1], top_bwd[0]]) - features).max() < 1e-5


def test_models_without_gates_are_one_error():
    with pytest.raises(SentimentError, match="plain RNN has no gates"):
        trace_gates(SentimentRNN(10, 4, hidden_size=3, rnn="rnn").eval(), torch.tensor([2, 3]), ["a", "b"])
    branch_only = SentimentRNN(10, 4, rnn="none", ngrams=NgramBranch(NgramSpec(1, 16, True), 1)).eval()
    with pytest.raises(SentimentError, match="no recurrent part"):
        trace_gates(branch_only, torch.tensor([2]), ["a"])


# ---------------------------------------------------------------- the commands
def test_explain_json_html_and_terminal(mixture_run, tmp_path):
    page = tmp_path / "e.html"
    result = runner.invoke(app, ["explain", "--run", str(mixture_run), "--json", "--html", str(page), *TEXTS[:2]])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert len(rows) == 2 and rows[1]["tokens"] == ["awful"] and rows[0]["read"].count(False) > 0
    html = page.read_text()
    assert "superb" in html and "unread" in html and "http" not in html and "<script" not in html
    shown = runner.invoke(app, ["explain", "--run", str(mixture_run), "--steps", "4", TEXTS[2]])
    assert shown.exit_code == 0 and "brilliant" in shown.output and "not read by the recurrent part" in shown.output


def test_explain_gates_writes_a_png(mixture_run, tmp_path):
    out = tmp_path / "gates.png"
    result = runner.invoke(app, ["explain", "--gates", "--run", str(mixture_run), TEXTS[0], "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "match the GRU module" in result.output


@pytest.mark.parametrize("args,needle", [
    (["explain", "--run", "{run}", ""], "empty"),
    (["explain", "--run", "{run}"], "give texts"),
    (["explain", "--gates", "--run", "{run}", "a", "b", "--out", "x.png"], "exactly one"),
    (["explain", "--gates", "--run", "{run}", "good"], "--out"),
    (["explain", "--run", "{run}", "good", "--steps", "0"], "steps"),
    (["eval", "--run", "{run}", "--html", "x.html"], "--errors"),
    (["eval", "--run", "{run}", "--errors", "0"], "--errors must be >= 1"),
])
def test_command_errors_are_one_line(mixture_run, args, needle):
    result = runner.invoke(app, [a.replace("{run}", str(mixture_run)) for a in args])
    one_line_error(result.exit_code, result.output, needle)


def test_eval_errors_lists_the_most_confident_mistakes(mixture_run, tmp_path):
    page = tmp_path / "errors.html"
    result = runner.invoke(app, ["eval", "--run", str(mixture_run), "--errors", "3", "--json", "--html", str(page),
                                 "--steps", "4"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert rows, "the tiny run makes a few mistakes on its test split"
    assert all(r["true_label"] != r["label"] for r in rows)
    assert [r["confidence"] for r in rows] == sorted((r["confidence"] for r in rows), reverse=True)
    assert "most confident mistakes" in page.read_text()


def test_eval_top_words_ranks_the_cue_words(mixture_run):
    result = runner.invoke(app, ["eval", "--run", str(mixture_run), "--top-words", "--sample", "40", "--json",
                                 "--steps", "4"])
    assert result.exit_code == 0, result.output
    ranked = json.loads(result.output.strip().splitlines()[-1])
    assert set(ranked) == {"negative", "positive"}
    top_positive = {t["term"] for t in ranked["positive"][:8]}
    top_negative = {t["term"] for t in ranked["negative"][:8]}
    assert top_positive & set(POSITIVE) and top_negative & set(NEGATIVE), (top_positive, top_negative)
    assert all(t["count"] >= 5 and t["mean"] > 0 for t in ranked["positive"])
