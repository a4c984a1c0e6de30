"""SentimentRNN: padding invariance, equivalence with the packed nn.LSTM/GRU recipe, and its API."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sentiment.errors import SentimentError
from sentiment.model import SentimentRNN

VOCAB, EMBED, HIDDEN, PAD = 50, 8, 6, 0
# Mixed lengths, including a length-1 review, padded past the longest one.
LENGTHS = [5, 11, 1, 8]
SEQ_LEN = 14


def make_model(**kwargs) -> SentimentRNN:
    torch.manual_seed(0)
    args = dict(vocab_size=VOCAB, embed_dim=EMBED, hidden_size=HIDDEN, num_layers=2, pad_index=PAD)
    args.update(kwargs)
    return SentimentRNN(**args).eval()


def make_batch(lengths=LENGTHS, seq_len=SEQ_LEN, seed=1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), seq_len), PAD, dtype=torch.long)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(1, VOCAB, (n,), generator=g)
    return ids, torch.tensor(lengths)


def to_reference(model: SentimentRNN) -> nn.Module:
    """A stacked torch RNN holding our per-direction weights (layer l, direction d -> _l{l}[_reverse])."""
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[model.rnn_type]
    ref = cls(EMBED, HIDDEN, num_layers=model.num_layers, bidirectional=model.bidirectional,
              batch_first=True).to(model.embedding.weight.dtype).eval()
    with torch.no_grad():
        for layer, directions in enumerate(model.layers):
            for d, module in enumerate(directions):
                suffix = "_reverse" if d else ""
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(ref, f"{name}_l{layer}{suffix}").copy_(getattr(module, f"{name}_l0"))
    return ref


ALL_CONFIGS = list(itertools.product(("lstm", "gru", "rnn"), (True, False),
                                     ("last", "max", "mean", "max+mean")))


@pytest.mark.parametrize("pack", ["never", "always"])
@pytest.mark.parametrize("rnn,bidirectional,pooling", ALL_CONFIGS)
def test_review_logit_is_the_same_alone_and_padded_in_a_batch(rnn, bidirectional, pooling, pack):
    model = make_model(rnn=rnn, bidirectional=bidirectional, pooling=pooling, pack=pack)
    ids, lengths = make_batch()
    with torch.no_grad():
        batched = model(ids, lengths)
        for b, n in enumerate(LENGTHS):
            alone = model(ids[b:b + 1, :n], lengths[b:b + 1])
            torch.testing.assert_close(batched[b], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("rnn", ["lstm", "gru", "rnn"])
def test_last_pooling_equals_the_classic_packed_recipe(rnn, bidirectional):
    model = make_model(rnn=rnn, bidirectional=bidirectional, pooling="last", pack="never")
    ref = to_reference(model)
    ids, lengths = make_batch()
    with torch.no_grad():
        packed = pack_padded_sequence(model.embedding(ids), lengths, batch_first=True,
                                      enforce_sorted=False)
        _, hidden = ref(packed)
        hidden = hidden[0] if rnn == "lstm" else hidden
        expected = torch.cat((hidden[-2], hidden[-1]), dim=1) if bidirectional else hidden[-1]
        torch.testing.assert_close(model.features(ids, lengths), expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(model(ids, lengths), model.fc(expected).squeeze(-1),
                                   atol=1e-6, rtol=0)


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_max_and_mean_pool_the_classic_outputs_over_the_true_length(rnn):
    model = make_model(rnn=rnn, pooling="max+mean", pack="never")
    ref = to_reference(model)
    ids, lengths = make_batch()
    with torch.no_grad():
        packed = pack_padded_sequence(model.embedding(ids), lengths, batch_first=True,
                                      enforce_sorted=False)
        out, _ = pad_packed_sequence(ref(packed)[0], batch_first=True)
        expected = torch.stack([torch.cat((out[b, :n].amax(0), out[b, :n].mean(0)))
                                for b, n in enumerate(LENGTHS)])
        torch.testing.assert_close(model.features(ids, lengths), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("rnn,pooling", [("lstm", "last"), ("gru", "max+mean"), ("rnn", "max")])
def test_packed_and_padded_paths_give_the_same_outputs_and_gradients(rnn, pooling):
    # float64 so that the comparison is about the algorithm, not summation order.
    model = make_model(rnn=rnn, pooling=pooling, pack="never", dropout=0.0,
                       embed_dropout=0.0).double().train()
    ids, lengths = make_batch()

    def run(pack: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.pack = pack
        model.zero_grad()
        logits = model(ids, lengths)
        (logits * torch.arange(1.0, len(LENGTHS) + 1, dtype=logits.dtype)).sum().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    out_never, grads_never = run("never")
    out_always, grads_always = run("always")
    torch.testing.assert_close(out_never, out_always, atol=1e-10, rtol=0)
    assert grads_never.keys() == grads_always.keys()
    assert any(n.startswith("layers.1.1.") for n in grads_never)  # top backward layer included
    for name in grads_never:
        torch.testing.assert_close(grads_never[name], grads_always[name], atol=1e-10, rtol=0,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("pooling", ["last", "max", "mean", "max+mean", "last+max+mean"])
def test_tokens_at_padded_positions_change_nothing(pooling):
    model = make_model(rnn="lstm", pooling=pooling, pack="never")
    ids, lengths = make_batch()
    pad = torch.arange(SEQ_LEN)[None, :] >= lengths[:, None]
    # Token VOCAB-1 appears only in padding, so its embedding row must get no gradient.
    ids = torch.where(ids == VOCAB - 1, torch.ones_like(ids), ids)
    junk = ids.masked_fill(pad, VOCAB - 1)
    with torch.no_grad():
        torch.testing.assert_close(model(junk, lengths), model(ids, lengths), atol=1e-6, rtol=0)
    model(junk, lengths).sum().backward()
    assert model.embedding.weight.grad[VOCAB - 1].abs().max() == 0
    assert model.embedding.weight.grad[1:VOCAB - 1].abs().max() > 0


@pytest.mark.parametrize("pack", ["never", "always"])
def test_length_one_reviews(pack):
    model = make_model(rnn="gru", pooling="max+mean", pack=pack)
    ids, lengths = make_batch(lengths=[1, 1, 1], seq_len=4)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, lengths), model(ids[:, :1], lengths),
                                   atol=1e-6, rtol=0)
    model.train()
    model(ids, lengths).sum().backward()
    assert model.layers[0][1].weight_ih_l0.grad.abs().max() > 0


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("pooling", ["last", "max", "mean", "max+mean"])
def test_output_shape_and_features(pooling, bidirectional):
    model = make_model(pooling=pooling, bidirectional=bidirectional)
    expected = HIDDEN * (2 if bidirectional else 1) * (2 if pooling == "max+mean" else 1)
    assert model.output_features == expected
    assert model.fc.in_features == expected
    ids, lengths = make_batch()
    assert model(ids, lengths).shape == (len(LENGTHS),)
    assert model.features(ids, lengths).shape == (len(LENGTHS), expected)


def test_lengths_may_be_int32_and_bad_lengths_are_rejected():
    model = make_model()
    ids, lengths = make_batch()
    with torch.no_grad():
        torch.testing.assert_close(model(ids, lengths.int()), model(ids, lengths))
    for bad in ([0, 2, 3, 4], [1, 2, 3, SEQ_LEN + 1]):
        with pytest.raises(ValueError, match="lengths"):
            model(ids, torch.tensor(bad))
    with pytest.raises(ValueError, match="lengths"):
        model(ids, lengths[:2])


@pytest.mark.parametrize("as_tensor", [False, True])
def test_load_embeddings_copies_and_keeps_pad_row_zero(as_tensor):
    model = make_model()
    matrix = np.random.default_rng(0).standard_normal((VOCAB, EMBED)).astype(np.float32)
    model.load_embeddings(torch.from_numpy(matrix) if as_tensor else matrix)
    weight = model.embedding.weight.detach()
    np.testing.assert_array_equal(weight[1:].numpy(), matrix[1:])
    assert weight[PAD].abs().max() == 0
    matrix[1, 0] = 123.0  # a copy, not a view of the caller's array
    assert weight[1, 0] != 123.0


def test_load_embeddings_rejects_wrong_shapes():
    model = make_model()
    with pytest.raises(ValueError, match="embedding matrix"):
        model.load_embeddings(np.zeros((VOCAB + 1, EMBED)))
    with pytest.raises(SentimentError, match="embed_dim"):
        model.load_embeddings(np.zeros((VOCAB, EMBED + 2)))


def test_set_embedding_trainable_toggles_requires_grad():
    model = make_model()
    assert model.embedding.weight.requires_grad
    model.set_embedding_trainable(False)
    assert not model.embedding.weight.requires_grad
    ids, lengths = make_batch()
    model(ids, lengths).sum().backward()
    assert model.embedding.weight.grad is None
    assert model.layers[0][0].weight_ih_l0.grad is not None
    model.set_embedding_trainable(True)
    assert model.embedding.weight.requires_grad


@pytest.mark.parametrize("kwargs,argument", [
    (dict(rnn="transformer"), "rnn"),
    (dict(pooling="attention"), "pooling"),
    (dict(pack="sometimes"), "pack"),
    (dict(hidden_size=0), "hidden_size"),
    (dict(num_layers=0), "num_layers"),
    (dict(dropout=1.0), "dropout"),
    (dict(dropout=-0.1), "dropout"),
    (dict(embed_dropout=1.0), "embed_dropout"),
    (dict(output_dropout=1.0), "output_dropout"),
    (dict(pad_index=VOCAB), "pad_index"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"^{argument} "):
        make_model(**kwargs)


def test_dropout_is_between_layers_only_and_eval_is_deterministic():
    model = make_model(num_layers=1, dropout=0.9, embed_dropout=0.0).train()
    ids, lengths = make_batch()
    # One layer: the inter-layer dropout never applies, so train mode is deterministic here.
    torch.testing.assert_close(model(ids, lengths), model(ids, lengths))
    model = make_model(num_layers=2, dropout=0.9, embed_dropout=0.0).train()
    assert not torch.allclose(model(ids, lengths), model(ids, lengths))
    model.eval()
    torch.testing.assert_close(model(ids, lengths), model(ids, lengths))


@pytest.mark.parametrize("length", [263, 1003])
def test_mean_pooling_of_long_reviews_is_exact_in_bfloat16(length):
    # Every output is tanh(bias) = 0.75 (zero weights, one plain RNN layer), so the mean is 0.75 whatever the
    # length. bf16 holds 263 as 264 and 1003 as 1004: dividing by the length in bf16 gave 0.7461.
    model = SentimentRNN(vocab_size=5, embed_dim=4, hidden_size=3, num_layers=1, rnn="rnn", bidirectional=False,
                         pooling="mean", dropout=0.0, embed_dropout=0.0)
    rnn = model.layers[0][0]
    with torch.no_grad():
        for p in rnn.parameters():
            p.zero_()
        rnn.bias_ih_l0.fill_(float(np.arctanh(0.75)))
    model = model.to(torch.bfloat16).eval()
    ids = torch.ones(2, length, dtype=torch.long)
    features = model.features(ids, torch.tensor([length, length - 7]))
    assert features.dtype == torch.bfloat16
    assert torch.equal(features.float(), torch.full((2, 3), 0.75))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_lengths_outside_the_batch_are_refused_without_a_host_sync():
    import subprocess
    import sys

    # a device-side assert poisons the CUDA context, so it runs in its own process
    code = ("import torch; from sentiment.model import SentimentRNN\n"
            "m = SentimentRNN(vocab_size=5, embed_dim=4, hidden_size=3, pack='never').cuda().eval()\n"
            "out = m(torch.ones(2, 6, dtype=torch.long, device='cuda'), torch.tensor([0, 6], device='cuda'))\n"
            "torch.cuda.synchronize()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "lengths must be in 1..6" in done.stderr
