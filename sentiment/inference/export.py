"""`sentiment export`: a run's model as a file that scores token ids without this package, plus a sidecar
JSON (PATH.json) with everything the text side needs: vocabulary, labels, cleaning, lowercasing, truncation.

The graph's inputs are named and listed in the sidecar ("inputs"): `ids` [B, T] int64, right-padded with
pad_index, and `lengths` [B] int64, each in 1..T. A later input (e.g. hashed n-gram ids computed outside the
graph) is one more name there; callers feed inputs by name, so files written today keep working. The output
`logits` is [B, K]: K = 1 for two classes (sigmoid gives P(labels[1])), else K classes (softmax).

- ONNX: the TorchScript-based exporter (`torch.onnx.export(dynamo=False)`), which maps each recurrent
  module onto ONNX's LSTM/GRU/RNN op with a dynamic sequence axis. The dynamo exporter (torch.export) would
  have to unroll the recurrence over a fixed length: torch.export decomposes aten.lstm/gru into one step
  per position, specialising T.
- torch: a `torch.export` program (torch.export.save / torch.export.load). The recurrent modules are swapped,
  for the export only, for a `scan` over positions with the same weights and the same cell equations, so the
  length axis stays dynamic; SentimentRNN.features skips its value-dependent length check while exporting
  (the loader, sentiment.inference.exported, checks lengths instead).

Padding stays exact in both: the graph is SentimentRNN.features itself (reversal within each length, final
state at length-1, masked pooling), so a review's logits do not depend on what it is batched with.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from sentiment.atomic import atomic_write_text
from sentiment.errors import SentimentError

FORMATS = ("onnx", "torch")
SIDECAR_SUFFIX = ".json"
SIDECAR_VERSION = 1
INPUTS = ("ids", "lengths")
OUTPUT = "logits"
ONNX_OPSET = 17


def sidecar_path(model_path: Path) -> Path:
    """Where the settings of an exported model live: PATH.json beside PATH."""
    return Path(str(model_path) + SIDECAR_SUFFIX)


class LogitsGraph(nn.Module):
    """What is exported: named inputs (ids, lengths) -> logits [B, K] (always two-dimensional)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        logits = self.model(ids, lengths)
        return logits.unsqueeze(-1) if logits.dim() == 1 else logits


class ScanRecurrence(nn.Module):
    """A single-layer, unidirectional, batch-first nn.LSTM/GRU/RNN(tanh) as a `scan` over positions, with the
    module's own weights: what torch.export keeps with a dynamic length. forward(x) -> (outputs, None)."""

    def __init__(self, module: nn.RNNBase) -> None:
        super().__init__()
        if module.num_layers != 1 or module.bidirectional or not module.batch_first or module.proj_size:
            raise ValueError("ScanRecurrence takes single-layer, unidirectional, batch-first modules")
        self.mode = module.mode  # "LSTM", "GRU", "RNN_TANH", "RNN_RELU"
        self.hidden_size = module.hidden_size
        self.weight_ih, self.weight_hh = module.weight_ih_l0, module.weight_hh_l0
        self.bias_ih = module.bias_ih_l0 if module.bias else None
        self.bias_hh = module.bias_hh_l0 if module.bias else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        from torch._higher_order_ops.scan import scan

        gates_in = nn.functional.linear(x, self.weight_ih, self.bias_ih).transpose(0, 1)  # [T, B, G*H]
        h0 = x.new_zeros(x.shape[0], self.hidden_size)
        w_hh, b_hh, mode = self.weight_hh, self.bias_hh, self.mode

        if mode == "LSTM":
            def step(carry: tuple[torch.Tensor, torch.Tensor], g: torch.Tensor):
                h, c = carry
                i, f, cand, o = (g + nn.functional.linear(h, w_hh, b_hh)).chunk(4, -1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(cand)
                h = torch.sigmoid(o) * torch.tanh(c)
                return (h, c), h.clone()

            _, out = scan(step, (h0, h0.clone()), gates_in)
        elif mode == "GRU":
            def step(h: torch.Tensor, g: torch.Tensor):
                ir, iz, i_n = g.chunk(3, -1)
                hr, hz, h_n = nn.functional.linear(h, w_hh, b_hh).chunk(3, -1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                h = (1 - z) * torch.tanh(i_n + r * h_n) + z * h
                return h, h.clone()

            _, out = scan(step, h0, gates_in)
        else:
            act = torch.tanh if mode == "RNN_TANH" else torch.relu

            def step(h: torch.Tensor, g: torch.Tensor):
                h = act(g + nn.functional.linear(h, w_hh, b_hh))
                return h, h.clone()

            _, out = scan(step, h0, gates_in)
        return out.transpose(0, 1), None


def exportable(model: nn.Module, *, scan: bool) -> LogitsGraph:
    """A copy of model for export: in eval mode, never packing, its recurrent modules as scans if asked."""
    model = copy.deepcopy(model).cpu().eval()
    model.pack = "never"
    if scan:
        for directions in model.layers:
            for d, module in enumerate(directions):
                directions[d] = ScanRecurrence(module)
    return LogitsGraph(model).eval()


def _example(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    # batch 3 and length 7 (not 0 or 1, which the exporters would specialise); lengths unequal, so padding shows
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab_size, (3, 7), generator=gen)
    lengths = torch.tensor([7, 4, 2])
    return ids, lengths


def export_model(model: nn.Module, out: Path, fmt: str, settings: dict[str, Any]) -> Path:
    """Write model (a SentimentRNN) to `out` in format fmt, and settings (+ inputs/output/format) to the
    sidecar; returns the sidecar's path. Both are written atomically."""
    if fmt not in FORMATS:
        raise SentimentError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    if out.is_dir():
        raise SentimentError(f"--out {out} is a directory; give a file name (e.g. {out / ('model.' + ('onnx' if fmt == 'onnx' else 'pt2'))})")
    out.parent.mkdir(parents=True, exist_ok=True)
    ids, lengths = _example(model.embedding.num_embeddings)
    ids = ids.masked_fill(torch.arange(7)[None, :] >= lengths[:, None], model.pad_index)
    tmp = out.with_name(out.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracer notes are not the user's business
        if fmt == "onnx":
            graph = exportable(model, scan=False)
            torch.onnx.export(graph, (ids, lengths), str(tmp), dynamo=False, input_names=list(INPUTS),
                              output_names=[OUTPUT], opset_version=ONNX_OPSET,
                              dynamic_axes={"ids": {0: "batch", 1: "length"}, "lengths": {0: "batch"},
                                            OUTPUT: {0: "batch"}})
        else:
            graph = exportable(model, scan=True)
            batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
            # inputs by keyword, so that callers feed them by name, as they do ONNX's
            program = torch.export.export(graph, (), {"ids": ids, "lengths": lengths},
                                          dynamic_shapes={"ids": {0: batch, 1: length}, "lengths": {0: batch}})
            buffer = io.BytesIO()  # torch.export.save wants a .pt2 name or a buffer; the user names the file
            torch.export.save(program, buffer)
            tmp.write_bytes(buffer.getvalue())
    tmp.replace(out)
    sidecar = sidecar_path(out)
    meta = {"format": fmt, "version": SIDECAR_VERSION, "file": out.name, "inputs": list(INPUTS), "output": OUTPUT,
            **settings}
    atomic_write_text(sidecar, json.dumps(meta, ensure_ascii=False, indent=1))
    return sidecar


def run_settings(run: Any, run_dir: Path, checkpoint: str) -> dict[str, Any]:
    """What the text side needs (and what a reader wants to know) of a loaded run, for the sidecar."""
    from dataclasses import asdict

    from sentiment.inference.predict import encoding_of

    enc = encoding_of(run)
    results = _read_results(run_dir)
    return {
        "labels": list(run.label_space.names),
        "pad_index": run.vocab.pad_index, "unk_index": run.vocab.unk_index,
        "lowercase": enc.lowercase, "max_len": enc.max_len, "truncate": enc.truncate,
        "cleaning": asdict(enc.cleaning),
        "tokenizer": "spacy.blank('en') per whitespace chunk, whitespace tokens dropped (sentiment.data.tokenize)",
        "model": model_summary(run.cfg), "run": str(run_dir), "checkpoint": checkpoint,
        "commit": results.get("commit"), "vocab": run.vocab.itos,
    }


def model_summary(cfg: Any) -> dict[str, Any]:
    m = cfg.model
    return {"rnn": m.rnn, "hidden_size": m.hidden_size, "num_layers": m.num_layers,
            "bidirectional": m.bidirectional, "pooling": m.pooling, "embed_dim": cfg.data.glove_dim or m.embed_dim}


def _read_results(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "results.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def export_run(run_dir: Path, fmt: str, out: Path, *, checkpoint: str = "best") -> Path:
    """`sentiment export`: the run's checkpoint to `out` (+ sidecar); returns the sidecar's path."""
    from sentiment.inference.runtime import load_trained

    if fmt not in FORMATS:
        raise SentimentError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    run = load_trained(run_dir, checkpoint, "cpu")
    return export_model(run.model, out, fmt, run_settings(run, run_dir, checkpoint))
