"""`sentiment export`: a run's model as a file that scores token ids without this package, plus a sidecar
JSON (PATH.json) with everything the text side needs: vocabulary, labels, cleaning, lowercasing, truncation.

The graph's inputs are named and listed in the sidecar ("inputs"): `ids` [B, T] int64, right-padded with
pad_index, and `lengths` [B] int64, each in 1..T. A run with the n-gram branch (model.ngrams) also takes its
n-grams, computed outside the graph (sentiment.ngrams.bags: FNV-1a hashes of the token strings, combined into
1..n-grams, modulo buckets; the sidecar's "ngrams" says n, buckets and whole or truncated text):
`ngram_ids` [N] int64 (each text's distinct bucket ids, texts one after another), `ngram_offsets` [B] int64
(where each text's ids start) and, unless the weighting is nb (binarized), `ngram_counts` [N] float32. The
per-bucket scale (tfidf/nb), the L2 normalisation and the table are inside the graph. A run without a recurrent
part (model.rnn none) takes the n-gram inputs only. Callers feed inputs by name. The output `logits` is
[B, K]: K = 1 for two classes (sigmoid gives P(labels[1])), else K classes (softmax).

- ONNX: the TorchScript-based exporter (`torch.onnx.export(dynamo=False)`), which maps each recurrent
  module onto ONNX's LSTM/GRU/RNN op with a dynamic sequence axis. The dynamo exporter (torch.export) would
  have to unroll the recurrence over a fixed length: torch.export decomposes aten.lstm/gru into one step
  per position, specialising T.
- torch: a `torch.export` program (torch.export.save / torch.export.load). The recurrent modules are swapped,
  for the export only, for a `scan` over positions with the same weights and the same cell equations, so the
  length axis stays dynamic; SentimentRNN.features skips its value-dependent length check while exporting
  (the loader, sentiment.inference.exported, checks lengths instead).

Padding stays exact in both: the graph is SentimentRNN.features itself (reversal within each length, final
state at length-1, masked pooling), so a review's logits do not depend on what it is batched with. The n-gram
branch is exported as GatherNgramBranch: nn.EmbeddingBag's weighted sum written as a gather and a scatter_add
(ONNX has no EmbeddingBag op; the TorchScript exporter would emit a Loop), with the same parameters.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from sentiment.data.tokenize import text_pipeline_version
from sentiment.errors import SentimentError
from sentiment.inference.sidecar import (  # noqa: F401  (re-exported: the names lived here)
    FORMATS, INPUTS, NGRAM_INPUTS, OUTPUT, SIDECAR_SUFFIX, SIDECAR_VERSION, sidecar_path)
from sentiment.ngrams import NgramBatch, NgramBranch

ONNX_OPSET = 17


def _two_dimensional(logits: torch.Tensor) -> torch.Tensor:
    return logits.unsqueeze(-1) if logits.dim() == 1 else logits


class LogitsGraph(nn.Module):
    """What is exported: named inputs (ids, lengths) -> logits [B, K] (always two-dimensional)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return _two_dimensional(self.model(ids, lengths))


class NgramLogitsGraph(LogitsGraph):
    """A model with the n-gram branch: (ids, lengths, ngram_ids, ngram_offsets, ngram_counts) -> logits [B, K]."""

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, ngram_ids: torch.Tensor, ngram_offsets: torch.Tensor,
                ngram_counts: torch.Tensor) -> torch.Tensor:
        return _two_dimensional(self.model(ids, lengths, ngrams=NgramBatch(ngram_ids, ngram_offsets, ngram_counts)))


class BinarizedNgramLogitsGraph(LogitsGraph):
    """NgramLogitsGraph for the nb weighting, which reads no counts (an input the graph ignores would be
    dropped by the ONNX exporter)."""

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, ngram_ids: torch.Tensor,
                ngram_offsets: torch.Tensor) -> torch.Tensor:
        return _two_dimensional(self.model(ids, lengths, ngrams=NgramBatch(ngram_ids, ngram_offsets, None)))


class NgramOnlyGraph(LogitsGraph):
    """A model without a recurrent part (model.rnn none): (ngram_ids, ngram_offsets, ngram_counts) -> logits."""

    def forward(self, ngram_ids: torch.Tensor, ngram_offsets: torch.Tensor, ngram_counts: torch.Tensor) -> torch.Tensor:
        return _two_dimensional(self.model.ngrams(NgramBatch(ngram_ids, ngram_offsets, ngram_counts)))


class BinarizedNgramOnlyGraph(LogitsGraph):
    """NgramOnlyGraph for the nb weighting (no counts)."""

    def forward(self, ngram_ids: torch.Tensor, ngram_offsets: torch.Tensor) -> torch.Tensor:
        return _two_dimensional(self.model.ngrams(NgramBatch(ngram_ids, ngram_offsets, None)))


class GatherNgramBranch(nn.Module):
    """An NgramBranch (eval mode) in ops both exporters keep with dynamic sizes: the text of each n-gram from
    the offsets (a +1 at each bag's start, cumulated), the weights' per-text L2 norm and the weighted sum of
    table rows by scatter_add. Same parameters and the same sums as NgramBranch.forward, in another order
    (differences ~1e-7)."""

    def __init__(self, branch: NgramBranch) -> None:
        super().__init__()
        self.binarized = branch.weighting == "nb"  # counts are not read
        self.l2 = branch.norm == "l2"
        self.weight, self.bias = branch.table.weight, branch.bias
        self.register_buffer("scale", branch.scale)

    def forward(self, ngrams: NgramBatch) -> torch.Tensor:
        ids, offsets, counts = ngrams
        n, batch = ids.shape[0], offsets.shape[0]
        weights = self.scale[ids] if self.binarized else counts.float() * self.scale[ids]
        # scatter_add, not index_add: the TorchScript exporter writes index_add as a ScatterElements that
        # overwrites repeated indices instead of adding them
        starts = torch.zeros(n + 1, dtype=torch.int64).scatter_add(0, offsets, torch.ones_like(offsets))
        text_of = starts[:n].cumsum(0) - 1
        if self.l2:
            squares = weights.new_zeros(batch).scatter_add(0, text_of, weights.square())
            weights = weights * torch.rsqrt(squares.clamp_min(1e-12))[text_of]
        rows = self.weight[ids] * weights[:, None]
        outputs = self.weight.shape[1]
        return rows.new_zeros(batch, outputs).scatter_add(0, text_of[:, None].expand(n, outputs), rows) + self.bias


def input_names(model: nn.Module) -> list[str]:
    """The graph's inputs for model, in order: ids and lengths for the recurrent part, the n-grams for the
    branch (no counts under nb)."""
    names = list(INPUTS) if model.has_rnn else []
    branch = model.ngrams
    if branch is not None:
        names += list(NGRAM_INPUTS[:2] if branch.weighting == "nb" else NGRAM_INPUTS)
    return names


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
    """A copy of model for export: in eval mode, never packing, its recurrent modules as scans if asked, its
    n-gram branch as a GatherNgramBranch; wrapped in the graph class that takes input_names(model)."""
    model = copy.deepcopy(model).cpu().eval()
    model.pack = "never"
    if scan and model.has_rnn:
        for directions in model.layers:
            for d, module in enumerate(directions):
                directions[d] = ScanRecurrence(module)
    if model.ngrams is None:
        return LogitsGraph(model).eval()
    binarized = model.ngrams.weighting == "nb"
    model.ngrams = GatherNgramBranch(model.ngrams)
    if model.has_rnn:
        return (BinarizedNgramLogitsGraph if binarized else NgramLogitsGraph)(model).eval()
    return (BinarizedNgramOnlyGraph if binarized else NgramOnlyGraph)(model).eval()


def _example(model: nn.Module) -> dict[str, torch.Tensor]:
    """Example inputs by name: batch 3, length 7 and 11 n-grams (not 0 or 1, which the exporters would
    specialise, and unequal); lengths unequal, so padding shows."""
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([7, 4, 2])
    example = {"lengths": lengths}
    if model.has_rnn:
        ids = torch.randint(1, model.embedding.num_embeddings, (3, 7), generator=gen)
        example["ids"] = ids.masked_fill(torch.arange(7)[None, :] >= lengths[:, None], model.pad_index)
    if model.ngrams is not None:
        example["ngram_ids"] = torch.randint(0, model.ngrams.spec.buckets, (11,), generator=gen)
        example["ngram_offsets"] = torch.tensor([0, 5, 9])
        example["ngram_counts"] = torch.randint(1, 4, (11,), generator=gen).float()
    return {name: example[name] for name in input_names(model)}


def _dynamic_axes(names: list[str]) -> dict[str, dict[int, str]]:
    """Each input's dynamic axes, by the names they share: batch, length (of ids), ngrams (N)."""
    axes = {"ids": {0: "batch", 1: "length"}, "lengths": {0: "batch"}, "ngram_ids": {0: "ngrams"},
            "ngram_offsets": {0: "batch"}, "ngram_counts": {0: "ngrams"}}
    return {name: axes[name] for name in names}


def export_model(model: nn.Module, out: Path, fmt: str, settings: dict[str, Any]) -> Path:
    """Write model (a SentimentRNN) to `out` in format fmt, and settings (+ inputs/output/format and the
    model file's sha256) to the sidecar; returns the sidecar's path. See write_pair for how the two are
    replaced together."""
    if fmt not in FORMATS:
        raise SentimentError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    if out.is_dir():
        raise SentimentError(f"--out {out} is a directory; give a file name (e.g. {out / ('model.' + ('onnx' if fmt == 'onnx' else 'pt2'))})")
    example = _example(model)
    names = list(example)
    buffer = io.BytesIO()  # the whole file in memory first: its sha256 goes into the sidecar
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracer notes are not the user's business
        if fmt == "onnx":
            graph = exportable(model, scan=False)
            torch.onnx.export(graph, tuple(example.values()), buffer, dynamo=False, input_names=names,
                              output_names=[OUTPUT], opset_version=ONNX_OPSET,
                              dynamic_axes={**_dynamic_axes(names), OUTPUT: {0: "batch"}})
        else:
            graph = exportable(model, scan=True)
            dims = {axis: torch.export.Dim(axis) for axis in ("batch", "length", "ngrams")}
            # inputs by keyword, so that callers feed them by name, as they do ONNX's
            program = torch.export.export(graph, (), example, dynamic_shapes={
                name: {i: dims[axis] for i, axis in axes.items()} for name, axes in _dynamic_axes(names).items()})
            torch.export.save(program, buffer)  # torch.export.save wants a .pt2 name or a buffer
    data = buffer.getvalue()
    meta = {"format": fmt, "version": SIDECAR_VERSION, "file": out.name, "sha256": hashlib.sha256(data).hexdigest(),
            "inputs": names, "output": OUTPUT, **ngram_settings(model), **settings,
            **text_pipeline_version()}  # how texts become its tokens and n-gram ids: a reader checks it can do alike
    sidecar = sidecar_path(out)
    write_pair(out, data, sidecar, json.dumps(meta, ensure_ascii=False, indent=1).encode("utf-8"))
    return sidecar


def write_pair(model_path: Path, model_bytes: bytes, sidecar: Path, sidecar_bytes: bytes) -> None:
    """Replace a model and its sidecar so that a reader never takes half of one export for a whole one:
    both are written in full to temporary files first (a full disk fails here, with the previous pair
    untouched and no temporary file left), then the model is renamed over the old model and the sidecar
    over the old sidecar. Between the two renames a reader finds the new model beside the old sidecar,
    whose sha256 does not match: refused (exported.load_exported), not misread."""
    temps: list[str] = []
    try:
        model_path.parent.mkdir(parents=True, exist_ok=True)
        for target, data in ((model_path, model_bytes), (sidecar, sidecar_bytes)):
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            temps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; exports get the usual permissions
    except OSError as e:
        _remove(temps)
        raise SentimentError(f"cannot write {model_path if len(temps) < 2 else sidecar}: {e.strerror or e}; "
                             f"nothing was replaced ({'the previous export is intact' if model_path.exists() else 'no export written'})") from None
    try:
        os.replace(temps[0], model_path)
    except OSError as e:
        _remove(temps)
        raise SentimentError(f"cannot replace {model_path}: {e.strerror or e}; nothing was replaced") from None
    try:
        os.replace(temps[1], sidecar)
    except OSError as e:
        _remove(temps[1:])
        raise SentimentError(f"wrote {model_path} but cannot replace {sidecar}: {e.strerror or e}; the two do not "
                             "match now (loading refuses them): export again") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def ngram_settings(model: nn.Module) -> dict[str, Any]:
    """The sidecar's "ngrams": what the text side computes for the n-gram inputs ({} without the branch)."""
    branch = model.ngrams
    if branch is None:
        return {}
    spec = branch.spec
    return {"ngrams": {
        "n": spec.n, "buckets": spec.buckets, "text": "whole" if spec.whole_text else "truncated",
        "counts": branch.weighting != "nb", "weighting": branch.weighting, "norm": branch.norm,
        "hash": "sentiment.ngrams.bags: 64-bit FNV-1a of each token's UTF-8 bytes; a k-gram's hash folds its tokens' "
                "as h = h * 0x9E3779B97F4A7C15 ^ next (mod 2**64), then fmix64(h ^ (0x5851F42D4C957F2D * k mod 2**64)) "
                "% buckets; each text's distinct ids ascending, with their counts",
    }}


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
    summary = {"rnn": m.rnn, "hidden_size": m.hidden_size, "num_layers": m.num_layers,
               "bidirectional": m.bidirectional, "pooling": m.pooling, "embed_dim": cfg.data.glove_dim or m.embed_dim}
    if m.ngrams is not None:
        g = m.ngrams
        summary["ngrams"] = {"n": g.n, "buckets": g.buckets, "weighting": g.weighting, "text": g.text}
    return summary


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
    check_out(Path(out), Path(run_dir))
    run = load_trained(run_dir, checkpoint, "cpu")
    return export_model(run.model, out, fmt, run_settings(run, run_dir, checkpoint))


EXPORT_SUFFIXES = (".onnx", ".pt2")


def _is_run_directory(path: Path) -> bool:
    from sentiment.runs import CONFIG_FILE, RUN_FILE, VOCAB_FILE

    return (path / RUN_FILE).is_file() or ((path / CONFIG_FILE).is_file() and (path / VOCAB_FILE).is_file())


def _is_export_sidecar(sidecar: Path) -> bool:
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") in FORMATS and "vocab" in meta


def check_out(out: Path, run_dir: Path) -> None:
    """Refuse an --out that would overwrite what is not an earlier export: inside a run directory (--run's or
    any other) only a new name ending in .onnx or .pt2 (so that neither it nor its OUT.json is a run file:
    best.pt, config.yaml, results.json, ...); elsewhere an existing file only if it is an earlier export,
    with its sidecar beside it."""
    target, sidecar = out.resolve(), sidecar_path(out)
    if target.parent == Path(run_dir).resolve() or _is_run_directory(target.parent):
        if target.suffix.lower() not in EXPORT_SUFFIXES:
            raise SentimentError(f"--out {out} is inside the run directory {target.parent}: there, give a new file "
                                 f"name ending in .onnx or .pt2 (run files such as best.pt and config.yaml are never "
                                 "overwritten)")
    if sidecar.exists() and not _is_export_sidecar(sidecar):
        raise SentimentError(f"{sidecar} exists and is not the sidecar of a `sentiment export`: refused to overwrite "
                             "it; choose another --out")
    if (out.exists() or out.is_symlink()) and not sidecar.exists():
        raise SentimentError(f"--out {out} exists and is not an earlier export (no {sidecar.name} beside it): "
                             "refused to overwrite it; choose another name")
