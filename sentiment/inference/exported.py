"""Scoring with an exported model (`sentiment export`): the file through onnxruntime or torch.export.load,
the text side from its sidecar JSON. `sentiment predict --model PATH` uses this.

The graph only maps token ids to logits. Going from text to ids still needs what training did: the sidecar's
cleaning (`<br />` as whitespace, URL/@mention placeholders, entity/quote normalisation), spaCy's rule-based
English tokenizer (`spacy.blank("en")`) on each whitespace chunk, lowercasing, the vocabulary (unknown words
-> unk_index), and truncation to max_len (head+tail keeps the first quarter and the last three quarters).
A model with the n-gram branch also takes each text's hashed n-grams, computed here by sentiment.ngrams (the
function training, eval and predict use) from the token strings, of the whole text or the truncated one as
the sidecar's "ngrams" says. docs/serving.md shows the same in a few lines without this package.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentiment.data.tokenize import check_text_pipeline
from sentiment.errors import SentimentError
from sentiment.inference.sidecar import FORMATS, INPUTS, NGRAM_INPUTS, SIDECAR_VERSION, sidecar_path
from sentiment.ngrams import NgramBatch, NgramSpec


@dataclass(frozen=True)
class ExportedNgrams:
    """What sentiment.ngrams.ngram_inputs asks of a model's branch: its spec (n, buckets, whole text or not)."""

    spec: NgramSpec


@dataclass
class ExportedModel:
    """An exported model, called like a SentimentRNN: model(ids [B, T], lengths [B]) -> logits."""

    path: Path
    meta: dict[str, Any]
    backend: Any  # onnxruntime.InferenceSession, or the torch.export program's module
    training: bool = False

    @property
    def num_outputs(self) -> int:
        return 1 if len(self.meta["labels"]) == 2 else len(self.meta["labels"])

    @property
    def ngrams(self) -> ExportedNgrams | None:
        """The n-gram inputs the graph takes (None: none), as NgramBranch.spec describes them."""
        g = self.meta.get("ngrams")
        return None if g is None else ExportedNgrams(NgramSpec(g["n"], g["buckets"], g["text"] == "whole"))

    def eval(self) -> "ExportedModel":
        return self

    def train(self, mode: bool = True) -> "ExportedModel":
        return self

    def __call__(self, ids: torch.Tensor, lengths: torch.Tensor, ngrams: NgramBatch | None = None) -> torch.Tensor:
        """ngrams: the batch's n-grams (sentiment.ngrams.ngram_inputs), for a model with the branch."""
        if ids.dim() != 2 or lengths.shape != ids.shape[:1]:
            raise ValueError(f"expected ids [B, T] and lengths [B], got {tuple(ids.shape)} and {tuple(lengths.shape)}")
        # the graph takes lengths on trust (a value check cannot be exported): a length outside 1..T would
        # read another review's positions
        if len(lengths) and (int(lengths.min()) < 1 or int(lengths.max()) > ids.shape[1]):
            raise ValueError(f"lengths must be in 1..{ids.shape[1]}")
        given = {"ids": ids.to(torch.int64), "lengths": lengths.to(torch.int64)}
        if self.ngrams is not None:
            if ngrams is None or len(ngrams.offsets) != len(ids):
                raise ValueError("this model takes n-grams: pass ngrams= for the same texts "
                                 "(sentiment.ngrams.ngram_inputs)")
            given.update(ngram_ids=ngrams.ids.to(torch.int64), ngram_offsets=ngrams.offsets.to(torch.int64),
                         ngram_counts=ngrams.counts.to(torch.float32))
        feeds = {name: given[name] for name in self.meta["inputs"]}
        if self.meta["format"] == "onnx":
            (logits,) = self.backend.run([self.meta["output"]], {k: v.numpy() for k, v in feeds.items()})
            logits = torch.from_numpy(logits)
        else:
            with torch.inference_mode():
                logits = self.backend(**feeds)
        return logits.squeeze(-1) if self.num_outputs == 1 else logits


def load_exported(path: Path, threads: int | None = None) -> ExportedModel:
    """The model at path and its sidecar (PATH.json); one error line for anything missing or foreign, for a
    model that is not the one its sidecar was written with (sha256), and for a file whose loading could run
    code. The model is read once: the bytes checked are the bytes loaded."""
    path = Path(path)
    if not path.is_file():
        raise SentimentError(f"exported model {path} not found")
    meta = read_sidecar(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SentimentError(f"cannot read {path}: {e.strerror or e}") from None
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise SentimentError(f"{path} is not the model its sidecar {sidecar_path(path).name} was written with "
                             "(sha256 differs: the two come from different exports, or one was replaced); "
                             "export the run again")
    backend = _onnx_session(data, path, threads) if meta["format"] == "onnx" else _torch_program(data, path)
    model = ExportedModel(path, meta, backend)
    _check_output_width(model)
    return model


def read_sidecar(path: Path) -> dict[str, Any]:
    """The sidecar of the model at path, checked for what this version reads."""
    sidecar = sidecar_path(path)
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SentimentError(f"{path} has no {sidecar.name} beside it (written by `sentiment export`)") from None
    except (OSError, ValueError) as e:
        raise SentimentError(f"cannot read {sidecar}: {e}") from None
    if isinstance(meta, dict) and meta.get("format") in FORMATS and meta.get("version") == 1:
        raise SentimentError(f"{sidecar} was written by an older `sentiment export` (sidecar version 1, without "
                             "the model's sha256): export the run again")
    if not isinstance(meta, dict) or meta.get("format") not in FORMATS or meta.get("version") != SIDECAR_VERSION \
            or not isinstance(meta.get("sha256"), str) or not isinstance(meta.get("labels"), list) \
            or len(meta["labels"]) < 2:
        raise SentimentError(f"{sidecar} is not the sidecar of a `sentiment export` (format {FORMATS}, "
                             f"version {SIDECAR_VERSION}, with sha256 and labels)")
    extra = [name for name in meta.get("inputs", ()) if name not in INPUTS + NGRAM_INPUTS]
    if any(name in NGRAM_INPUTS for name in meta.get("inputs", ())) and not isinstance(meta.get("ngrams"), dict):
        extra.append('n-grams without the sidecar\'s "ngrams"')
    if extra:
        raise SentimentError(f"{path} takes inputs this version cannot compute ({', '.join(extra)}): upgrade sentiment")
    check_text_pipeline(meta, f"exported model {path}")  # absent (exports before versions): version 1 of each
    return meta


def _onnx_session(data: bytes, path: Path, threads: int | None) -> Any:
    """An onnxruntime session of the model's bytes. No custom-op library is registered, so the graph runs
    only onnxruntime's own kernels; tensors stored outside the file (external data) are refused: they would
    be read from paths the file names, and the sha256 would not cover them."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx.external_data_helper import uses_external_data
    except ImportError:
        raise SentimentError("scoring an ONNX model needs onnx and onnxruntime: pip install 'sentiment[export]'") from None
    try:
        proto = onnx.ModelProto()
        proto.ParseFromString(data)  # the protobuf alone: no external data is read
    except Exception as e:  # protobuf's DecodeError and others for a file that is not ONNX
        raise SentimentError(f"{path} is not an ONNX model ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    graphs, tensors = [proto.graph], []
    while graphs:  # initializers and constants of the graph and every subgraph (If, Loop, Scan)
        graph = graphs.pop()
        tensors += list(graph.initializer)
        for node in graph.node:
            for attribute in node.attribute:
                tensors += ([attribute.t] if attribute.HasField("t") else []) + list(attribute.tensors)
                graphs += ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
    if any(uses_external_data(t) for t in tensors):
        raise SentimentError(f"{path} keeps tensors in external files: refused (`sentiment export` writes one "
                             "self-contained file)")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own classes for a file that is not ONNX
        raise SentimentError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]}") from None


def _torch_program(data: bytes, path: Path) -> Any:
    """The torch.export program in data, after sentiment.inference.safe_pt2 found nothing in it that runs code."""
    from sentiment.inference.safe_pt2 import check_pt2_archive

    check_pt2_archive(data, str(path))
    try:
        return torch.export.load(io.BytesIO(data)).module()  # any file name, not only .pt2
    except Exception as e:  # a file that is not a torch.export archive
        raise SentimentError(f"torch.export.load cannot load {path}: {str(e).splitlines()[0]}") from None


def _check_output_width(model: ExportedModel) -> None:
    """A graph of K outputs with a sidecar of another number of labels would give wrong probabilities."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, max(2, len(model.meta.get("vocab", ()))), (3, 7), generator=gen)
    lengths = torch.tensor([7, 4, 2])
    ngrams = None
    if model.ngrams is not None:
        ngrams = NgramBatch(torch.randint(0, model.ngrams.spec.buckets, (11,), generator=gen), torch.tensor([0, 5, 9]),
                            torch.ones(11))
    try:
        logits = model(ids, lengths, ngrams)
    except Exception as e:
        raise SentimentError(f"{model.path} does not score token ids as its sidecar describes "
                             f"({str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__})") from None
    width = 1 if logits.dim() == 1 else logits.shape[-1]
    if logits.shape[0] != 3 or width != model.num_outputs:
        raise SentimentError(f"{model.path} gives {width} output(s) per text, but its sidecar names "
                             f"{len(model.meta['labels'])} labels ({model.num_outputs} output(s)): they do not belong "
                             "together; export the run again")


def encoding_from(meta: dict[str, Any]) -> Any:
    """The predict.Encoding a sidecar describes (vocab, cleaning, lowercasing, truncation)."""
    from sentiment.data.tokenize import Cleaning
    from sentiment.data.vocab import Vocab
    from sentiment.inference.predict import Encoding

    return Encoding(Vocab(meta["vocab"]), meta["lowercase"], meta["max_len"], meta["truncate"], workers=1,
                    cleaning=Cleaning(**meta["cleaning"]), ngrams="ngrams" in meta)


def predict_exported(path: Path, texts: Sequence[str], *, batch_size: int = 256,
                     threads: int | None = None) -> tuple[np.ndarray, Any]:
    """What predict_texts gives, from an exported model: probabilities [N, K] (NaN rows for empty texts)
    and the label space."""
    from sentiment.data.labels import LabelSpace
    from sentiment.inference.predict import score_texts

    model = load_exported(path, threads)
    space = LabelSpace(tuple(model.meta["labels"]))
    probs = score_texts(model, texts, encoding_from(model.meta), space, batch_size=batch_size, workers=1)
    return probs, space


def load_exported_predictor(model_path: Path, batch_size: int | None = None) -> Any:
    """What predict_exported scores with, loaded once: a predict.Predictor over the exported model."""
    from sentiment.data.labels import LabelSpace
    from sentiment.inference.predict import Predictor

    model = load_exported(model_path)
    return Predictor(model, encoding_from(model.meta), LabelSpace(tuple(model.meta["labels"])), batch_size or 256,
                     workers=1)
