"""The recurrent cell's gates over one text, computed from the model's weights by PyTorch's own equations
(docs/explain.md), for learners: GRU update and reset gates, LSTM input, forget and output gates, and the hidden
state's norm, per layer and direction, token by token.

PyTorch's GRU (torch.nn.GRU's documentation) applies the reset gate to W_hn h + b_hn, not to h before the matrix
as the textbook (Cho et al. 2014) does:
    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h
its LSTM:
    i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)     f = sigmoid(W_if x + b_if + W_hf h + b_hf)
    g = tanh(W_ig x + b_ig + W_hg h + b_hg)        o = sigmoid(W_io x + b_io + W_ho h + b_ho)
    c' = f * c + i * g                             h' = o * tanh(c')
weight_ih_l0 stacks (W_ir | W_iz | W_in) (GRU) or (W_ii | W_if | W_ig | W_io) (LSTM) by rows; weight_hh_l0 alike.
The hidden states these give are checked against the module's own (trace_gates: to GATE_TOLERANCE).

The model's layout (sentiment/model.py): layers[l][d] is a single-layer unidirectional batch-first module; the
backward direction reads the text reversed, and its outputs are reversed back so position t is token t.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentiment.data.batching import truncate
from sentiment.errors import SentimentError
from sentiment.inference.predict import load_predictor, text_tokens

GATE_NAMES = {"gru": ("update z", "reset r"), "lstm": ("input i", "forget f", "output o")}
# how far the hidden states computed from the equations may stray from the module's (float32 rounding)
GATE_TOLERANCE = 1e-4
_SHORT = {"forward": "fwd", "backward": "bwd"}


@dataclass
class DirectionTrace:
    """One layer and direction over the text, in token order (the backward direction's states realigned)."""

    layer: int
    direction: str  # "forward" or "backward"
    gates: dict[str, np.ndarray]  # name -> [T, H] activations in 0..1
    hidden: np.ndarray  # [T, H]: the state after reading token t (backward: after reading tokens T-1 .. t)
    module_difference: float  # max |hidden - the module's own output|


@dataclass
class GateTrace:
    tokens: list[str]  # the tokens the recurrent part reads, in order
    rnn: str  # gru or lstm
    directions: list[DirectionTrace]


@torch.no_grad()
def gru_states(module: torch.nn.GRU, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """PyTorch's GRU equations over x [T, F] from h = 0: ({"update z": [T, H], "reset r": [T, H]}, h [T, H])."""
    w_ih, w_hh, b_ih, b_hh = _weights(module)
    hidden = module.hidden_size
    pre_x = x @ w_ih.T + b_ih  # [T, 3H]: every step's input terms at once
    h = x.new_zeros(hidden)
    z_all, r_all, h_all = [], [], []
    for t in range(x.shape[0]):
        pre_h = w_hh @ h + b_hh
        x_r, x_z, x_n = pre_x[t].split(hidden)
        h_r, h_z, h_n = pre_h.split(hidden)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)  # the reset gate scales W_hn h + b_hn, not h
        h = (1 - z) * n + z * h
        z_all.append(z), r_all.append(r), h_all.append(h)
    return {"update z": torch.stack(z_all), "reset r": torch.stack(r_all)}, torch.stack(h_all)


@torch.no_grad()
def lstm_states(module: torch.nn.LSTM, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """PyTorch's LSTM equations over x [T, F] from h = c = 0: ({"input i", "forget f", "output o": [T, H]}, h)."""
    if getattr(module, "proj_size", 0):
        raise SentimentError("gates of an LSTM with proj_size are not drawn")
    w_ih, w_hh, b_ih, b_hh = _weights(module)
    hidden = module.hidden_size
    pre_x = x @ w_ih.T + b_ih
    h, c = x.new_zeros(hidden), x.new_zeros(hidden)
    gates: dict[str, list[torch.Tensor]] = {"input i": [], "forget f": [], "output o": []}
    h_all = []
    for t in range(x.shape[0]):
        pre = pre_x[t] + w_hh @ h + b_hh
        p_i, p_f, p_g, p_o = pre.split(hidden)
        i, f, g, o = torch.sigmoid(p_i), torch.sigmoid(p_f), torch.tanh(p_g), torch.sigmoid(p_o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        gates["input i"].append(i), gates["forget f"].append(f), gates["output o"].append(o)
        h_all.append(h)
    return {k: torch.stack(v) for k, v in gates.items()}, torch.stack(h_all)


def _weights(module: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    if module.num_layers != 1 or module.bidirectional:
        raise SentimentError("gates are computed for single-layer unidirectional modules (the model's layout)")
    w_ih, w_hh = module.weight_ih_l0, module.weight_hh_l0
    zeros = w_ih.new_zeros(w_ih.shape[0])
    b_ih = module.bias_ih_l0 if module.bias else zeros
    b_hh = module.bias_hh_l0 if module.bias else zeros
    return w_ih, w_hh, b_ih, b_hh


def check_gated(model: Any) -> str:
    """The model's cell type if it has gates to draw; else one error line."""
    rnn = getattr(model, "rnn_type", "none")
    if rnn == "none":
        raise SentimentError("this run has no recurrent part (model.rnn none): there are no gates to draw")
    if rnn not in GATE_NAMES:
        raise SentimentError(f"this run's model.rnn is {rnn}: a plain RNN has no gates (gates are drawn for gru and "
                             "lstm)")
    return rnn


@torch.no_grad()
def trace_gates(model: Any, ids: torch.Tensor, tokens: list[str]) -> GateTrace:
    """Every layer's and direction's gates and hidden states over one text's ids [T] (those the model reads),
    each direction's states checked against its module's output (SentimentError past GATE_TOLERANCE)."""
    rnn = check_gated(model)
    states = gru_states if rnn == "gru" else lstm_states
    was_training = model.training
    model.eval()
    try:
        x = model.embed(ids[None, :])[0].float()  # normalised if so built; dropout off
        traces: list[DirectionTrace] = []
        for layer, directions in enumerate(model.layers):
            outputs = []
            for d, module in enumerate(directions):
                inp = x if d == 0 else x.flip(0)  # the backward direction reads the text reversed
                gates, hidden = states(module, inp)
                own = module(inp[None, :])[0][0]
                difference = float((hidden - own).abs().max()) if len(hidden) else 0.0
                if difference > GATE_TOLERANCE:
                    raise SentimentError(f"the gate equations' hidden states differ from {type(module).__name__}'s by "
                                         f"{difference:.2e} (layer {layer}, direction {d})")
                if d == 1:  # back to token order: position t is the state after reading tokens T-1 .. t
                    gates, hidden, own = {k: v.flip(0) for k, v in gates.items()}, hidden.flip(0), own.flip(0)
                outputs.append(own)
                traces.append(DirectionTrace(layer, "backward" if d else "forward",
                                             {k: v.cpu().numpy() for k, v in gates.items()}, hidden.cpu().numpy(),
                                             difference))
            x = torch.cat(outputs, dim=1)
    finally:
        model.train(was_training)
    return GateTrace(tokens, rnn, traces)


def run_gates(run_dir: Path, text: str, *, checkpoint: str = "best", device: str | None = None) -> GateTrace:
    """The gates of a run's recurrent part over one text (the tokens it reads: its head+tail window)."""
    predictor = load_predictor(Path(run_dir), checkpoint=checkpoint, device=device)
    check_gated(predictor.model)
    tokens = text_tokens([text], predictor.enc)[0]
    if not tokens:
        raise SentimentError("nothing to draw: the text is empty (no words)")
    window = truncate(np.arange(len(tokens)), predictor.enc.max_len, predictor.enc.truncate)
    ids = np.asarray(predictor.enc.vocab.encode([tokens[i] for i in window]), dtype=np.int64)
    return trace_gates(predictor.model, torch.as_tensor(ids, device=predictor.device), [tokens[i] for i in window])


def plot_gates(trace: GateTrace, out: Path, *, title: str | None = None) -> Path:
    """A PNG: for each layer and direction, each gate's activations (units x tokens, 0..1) and the hidden state's
    norm, token positions aligned across directions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = GATE_NAMES[trace.rnn]
    n_tokens = len(trace.tokens)
    rows = len(trace.directions) * (len(names) + 1)
    width = min(40.0, max(8.0, 0.16 * n_tokens + 2))
    fig, axes = plt.subplots(rows, 1, figsize=(width, 1.1 * rows + 1), sharex=True, squeeze=False)
    axes = axes[:, 0]
    image = None
    for i, d in enumerate(trace.directions):
        for j, name in enumerate(names):
            ax = axes[i * (len(names) + 1) + j]
            image = ax.imshow(d.gates[name].T, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0,
                              interpolation="nearest", extent=(-0.5, n_tokens - 0.5, d.gates[name].shape[1], 0))
            ax.set_ylabel(f"L{d.layer} {_SHORT[d.direction]}\n{name}", fontsize=8, rotation=0, ha="right", va="center")
            ax.set_yticks([])
        ax = axes[i * (len(names) + 1) + len(names)]
        ax.plot(np.arange(n_tokens), np.linalg.norm(d.hidden, axis=1), color="black", linewidth=1)
        ax.set_ylabel(f"L{d.layer} {_SHORT[d.direction]}\n|h|", fontsize=8, rotation=0, ha="right", va="center")
        ax.tick_params(axis="y", labelsize=7)
    step = max(1, n_tokens // 120)  # every token labelled while they fit
    axes[-1].set_xticks(np.arange(0, n_tokens, step))
    axes[-1].set_xticklabels([trace.tokens[t] for t in range(0, n_tokens, step)], rotation=90, fontsize=7)
    axes[-1].set_xlim(-0.5, n_tokens - 0.5)
    if image is not None:
        fig.colorbar(image, ax=list(axes), fraction=0.015, pad=0.01, label="gate activation")
    fig.suptitle(title or f"{trace.rnn.upper()} gates and hidden-state norm, token by token "
                 "(backward direction aligned to token positions)", fontsize=10)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return out
