"""The classifier: Embedding -> Dropout -> (bi)directional LSTM/GRU/RNN stack -> pooling -> Linear.

Padding never changes a review's output. The classic recipe gets that from pack_padded_sequence,
but on CPU its backward is quadratic in sequence length (every per-step slice's gradient allocates
and zero-fills the whole packed tensor; pytorch/pytorch#149194): a bidirectional GRU(128) at
batch 64, length 400 spends ~10 s in backward packed against ~0.3 s padded. So the stack is built
from one unidirectional single-layer module per direction per layer, and padding is handled by hand:

- forward direction: run on the right-padded batch as is. The recurrence is causal, so outputs at
  positions < length never see padding; the final state is the output at position length-1.
- backward direction: reverse each review *within its true length* (padding stays at the end), run
  the same forward-style module, take its output at length-1 as the final backward state, and
  reverse the outputs back so position t lines up with the forward direction's position t.

Garbage computed at padded positions never reaches a valid position, and pooling masks it out.
cuDNN runs packed sequences natively and fast, so pack="auto" packs on CUDA only; both paths use
the same modules, so a checkpoint trained on one loads into the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sentiment.errors import SentimentError
from sentiment.ngrams import NgramBatch, NgramBranch, build_branch

if TYPE_CHECKING:
    from sentiment.config import Config

RNN_TYPES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
POOLINGS = ("last", "max", "mean", "max+mean", "last+max+mean")  # the last: ULMFiT's concat pooling
PACK_MODES = ("auto", "always", "never")
# how a model with both parts (recurrent head and n-gram branch) makes its logits: "sum" adds them and trains one
# loss on the sum; "mixture" trains each part on its own loss and weighs them by a mixture fit on validation
COMBINES = ("sum", "mixture")
# torch.export (sentiment export --format torch) is tracing: value-dependent checks are skipped (torch < 2.5: never)
_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)


def _checked_lengths(lengths: torch.Tensor, seq_len: int, use_pack: bool, exporting: bool) -> torch.Tensor | None:
    """Check that every length is in 1..seq_len; returns the lengths on the CPU where packing needs them.

    A length outside 1..T would read another review's state (0 picks the row before it). Lengths come from
    collate on the CPU, where checking them is free; callers on CUDA should pass them so (the copy to the GPU
    is then asynchronous, and packing reuses the CPU copy). Lengths already on the GPU are checked there,
    without waiting for the result."""
    if exporting:
        # torch.export (and the ONNX exporter built on it) cannot branch on tensor values: the exported
        # graph takes lengths on trust, and the caller (sentiment.inference.exported) checks them instead
        return None
    if lengths.device.type == "cpu":
        if len(lengths) and (int(lengths.min()) < 1 or int(lengths.max()) > seq_len):
            raise ValueError(f"lengths must be in 1..{seq_len}, got min {int(lengths.min())} "
                             f"max {int(lengths.max())}")
        return lengths.to(torch.long) if use_pack else None
    torch._assert_async(((lengths >= 1) & (lengths <= seq_len)).all(), f"lengths must be in 1..{seq_len}")
    return lengths.cpu() if use_pack else None


class SentimentRNN(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden_size: int = 256,
        num_layers: int = 2,
        rnn: str = "lstm",
        bidirectional: bool = True,
        dropout: float = 0.5,
        embed_dropout: float = 0.5,
        output_dropout: float = 0.0,
        pooling: str = "last",
        pad_index: int = 0,
        pack: str = "auto",
        num_outputs: int = 1,
        normalize_embeddings: bool = False,
        ngrams: NgramBranch | None = None,
        combine: str = "sum",
    ) -> None:
        super().__init__()
        if rnn == "none" and ngrams is None:
            raise ValueError("rnn='none' needs an n-gram branch (ngrams)")
        if rnn not in RNN_TYPES and rnn != "none":
            raise ValueError(f"rnn must be one of {sorted(RNN_TYPES)}, got {rnn!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {list(COMBINES)}, got {combine!r}")
        if pack not in PACK_MODES:
            raise ValueError(f"pack must be one of {list(PACK_MODES)}, got {pack!r}")
        for name, value in (("vocab_size", vocab_size), ("embed_dim", embed_dim),
                            ("hidden_size", hidden_size), ("num_layers", num_layers),
                            ("num_outputs", num_outputs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name, value in (("dropout", dropout), ("embed_dropout", embed_dropout),
                            ("output_dropout", output_dropout)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if not 0 <= pad_index < vocab_size:
            raise ValueError(f"pad_index must be in [0, vocab_size={vocab_size}), got {pad_index!r}")

        self.rnn_type = rnn
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.pooling = pooling
        self.pad_index = pad_index
        self.pack = pack
        self.num_outputs = num_outputs
        num_dirs = 2 if bidirectional else 1
        self.normalize_embeddings = normalize_embeddings and rnn != "none"
        # the bag-of-n-grams branch (sentiment/ngrams.py), whose logits add to the recurrent head's; None: off
        self.ngrams = ngrams
        # "mixture" needs two parts to weigh; with one it is that part alone, as "sum" is
        self.combine = combine if (rnn != "none" and ngrams is not None) else "sum"
        if self.combine == "mixture":
            # logits = mix[0] * recurrent part + mix[1] * branch + mix_bias; set by set_mixture (fit on validation),
            # saved with the weights so every reader of a checkpoint (eval, predict, serve, export) mixes alike
            self.register_buffer("mix", torch.ones(2))
            self.register_buffer("mix_bias", torch.zeros(num_outputs))
        if rnn == "none":  # the branch alone: no embedding, no recurrent stack, no head
            return

        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_index)
        if normalize_embeddings:
            # each word's share of the training text: the weights of the mean and variance the embeddings are
            # normalised by (set_word_frequencies; saved with the weights, so inference normalises alike)
            self.register_buffer("word_frequencies", torch.full((vocab_size,), 1.0 / vocab_size))
        self.embed_dropout = nn.Dropout(embed_dropout)
        # layers[l][d]: layer l, direction d (0 forward, 1 backward). Each is a single-layer,
        # unidirectional, batch-first module, so its weights map one-to-one onto a stacked
        # nn.LSTM's weight_*_l{l} (d=0) and weight_*_l{l}_reverse (d=1).
        cls = RNN_TYPES[rnn]
        self.layers = nn.ModuleList()
        for layer in range(num_layers):
            in_size = embed_dim if layer == 0 else hidden_size * num_dirs
            self.layers.append(nn.ModuleList(
                cls(in_size, hidden_size, num_layers=1, batch_first=True) for _ in range(num_dirs)
            ))
        # Between recurrent layers only, as nn.LSTM(dropout=...) does: none after the top layer.
        self.layer_dropout = nn.Dropout(dropout)
        # on the pooled features, as the classic recipe does (its one dropout module serves both ends)
        self.output_dropout = nn.Dropout(output_dropout)
        self.fc = nn.Linear(self.output_features, num_outputs)

    @property
    def output_features(self) -> int:
        """Width of the pooled feature vector, i.e. the input size of the final Linear."""
        width = self.hidden_size * (2 if self.bidirectional else 1)
        return width * {"max+mean": 2, "last+max+mean": 3}.get(self.pooling, 1)

    @property
    def has_rnn(self) -> bool:
        return self.rnn_type != "none"

    @property
    def embedding_trainable(self) -> bool:
        return self.has_rnn and self.embedding.weight.requires_grad

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, embedded: torch.Tensor | None = None,
                ngrams: NgramBatch | None = None, parts: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
        """ids [B, T] right-padded with pad_index, lengths [B] (each in 1..T) -> logits [B] (one output,
        two classes) or [B, num_outputs]. `embedded` [B, T, embed_dim] replaces `embed(ids)`: the adversarial
        objectives pass the embedded batch plus a perturbation (the n-gram branch is not perturbed). `ngrams`:
        the batch's n-grams (sentiment.ngrams.collate_ngrams), needed by a model with the branch.
        parts: {"whole": the logits, "rnn": the recurrent part's, "branch": the branch's} (those the model has),
        each shaped as the logits; what per-part training and per-part figures read."""
        own: dict[str, torch.Tensor] = {}
        if self.has_rnn:
            own["rnn"] = self.fc(self.output_dropout(self.features(ids, lengths, embedded)))
        if self.ngrams is not None:
            if ngrams is None:
                raise ValueError("this model has an n-gram branch: pass ngrams= (sentiment.ngrams.ngram_inputs)")
            own["branch"] = self.ngrams(ngrams)
        logits = self.mixed(own)
        if self.num_outputs == 1:
            logits, own = logits.squeeze(-1), {k: v.squeeze(-1) for k, v in own.items()}
        return {"whole": logits, **own} if parts else logits

    def mixed(self, own: dict[str, torch.Tensor]) -> torch.Tensor:
        """The whole's logits from the parts' ({"rnn": ..., "branch": ...}, either alone or both)."""
        if len(own) == 1:
            return next(iter(own.values()))
        if self.combine == "mixture":
            return self.mix[0] * own["rnn"] + self.mix[1] * own["branch"] + self.mix_bias
        return own["rnn"] + own["branch"]

    @torch.no_grad()
    def set_mixture(self, weights: "np.ndarray | list[float]", bias: "np.ndarray | list[float]") -> None:
        """The mixture's weights (recurrent part, branch) and bias [num_outputs] (fit_mixture's)."""
        if self.combine != "mixture":
            raise ValueError("set_mixture: this model adds its parts (combine sum)")
        self.mix.copy_(torch.as_tensor(np.asarray(weights, dtype=np.float32)))
        self.mix_bias.copy_(torch.as_tensor(np.asarray(bias, dtype=np.float32)).reshape(self.mix_bias.shape))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The recurrent stack's input for ids [B, T]: the embeddings (normalised if so built), after dropout."""
        x = self.embedding(ids)
        if self.normalize_embeddings:
            x = self.normalize(x)
        return self.embed_dropout(x)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings x [..., E] shifted and scaled by the frequency-weighted mean and variance of every word's
        embedding, per dimension (Miyato et al. 2017): a perturbation of a given norm then means the same
        whatever the vectors' scale."""
        weight = self.embedding.weight
        freq = self.word_frequencies.to(weight.dtype)
        mean = freq @ weight  # [E]
        var = freq @ (weight - mean).square()
        return (x - mean) * torch.rsqrt(var + 1e-6)

    @torch.no_grad()
    def set_word_frequencies(self, counts: "np.ndarray | list[int]") -> None:
        """The weights of the normalisation: each vocab entry's count in the training (and unlabeled) text."""
        if not self.normalize_embeddings:  # no recurrent part (model.rnn none): no embeddings to normalise
            return
        counts = torch.as_tensor(np.asarray(counts, dtype=np.float64))
        if counts.shape != self.word_frequencies.shape or counts.sum() <= 0:
            raise ValueError(f"expected {self.word_frequencies.shape[0]} non-negative counts, not all zero")
        self.word_frequencies.copy_((counts / counts.sum()).to(self.word_frequencies.dtype))

    def features(self, ids: torch.Tensor, lengths: torch.Tensor, embedded: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled features [B, output_features] that the final Linear reads (of `embedded` where given)."""
        if ids.dim() != 2 or lengths.shape != ids.shape[:1]:
            raise ValueError(f"expected ids [B, T] and lengths [B], got {tuple(ids.shape)} and "
                             f"{tuple(lengths.shape)}")
        batch, seq_len = ids.shape
        exporting = _is_exporting()
        use_pack = (self.pack == "always" or (self.pack == "auto" and ids.is_cuda)) and not exporting
        cpu_lengths = _checked_lengths(lengths, seq_len, use_pack, exporting)
        lengths = lengths.to(ids.device, torch.long, non_blocking=True)

        # Index plumbing, computed once per forward and shared by every layer: rows of the
        # [B*T, F] view. last_rows picks each review's position length-1; rev_rows reverses
        # positions 0..length-1 of each review and leaves its padding where it is. Reversal is
        # its own inverse, so the same index turns backward outputs back into forward order.
        positions = torch.arange(seq_len, device=ids.device)
        row_base = torch.arange(batch, device=ids.device) * seq_len
        last_rows = row_base + lengths - 1
        rev_rows = None
        if self.bidirectional:
            valid = positions[None, :] < lengths[:, None]
            rev = torch.where(valid, lengths[:, None] - 1 - positions[None, :], positions[None, :])
            rev_rows = (rev + row_base[:, None]).reshape(-1)

        def reverse(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(batch * seq_len, -1).index_select(0, rev_rows).view(batch, seq_len, -1)

        def run(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """One direction over x [B, T, F] -> (outputs [B, T, H], final state at length-1 [B, H])."""
            if use_pack:
                packed = pack_padded_sequence(x, cpu_lengths, batch_first=True, enforce_sorted=False)
                out, h_n = module(packed)
                out, _ = pad_packed_sequence(out, batch_first=True, total_length=seq_len)
                h_n = h_n[0] if isinstance(h_n, tuple) else h_n  # LSTM: (h, c)
                return out, h_n[-1]  # already back in batch order (enforce_sorted=False)
            out, _ = module(x)
            final = out.reshape(batch * seq_len, -1).index_select(0, last_rows)
            return out, final

        x = self.embed(ids) if embedded is None else embedded
        top = len(self.layers) - 1
        for i, directions in enumerate(self.layers):
            if i > 0:
                x = self.layer_dropout(x)
            out_fwd, last_fwd = run(directions[0], x)
            if self.bidirectional:
                out_bwd_rev, last_bwd = run(directions[1], reverse(x))
                last = torch.cat((last_fwd, last_bwd), dim=1)
                outs = [out_fwd, out_bwd_rev]
                if i < top:
                    x = torch.cat((out_fwd, reverse(out_bwd_rev)), dim=2)
            else:
                x, last, outs = out_fwd, last_fwd, [out_fwd]

        return self._pool(last, outs, positions, lengths)

    def _pool(self, last: torch.Tensor, outs: list[torch.Tensor], positions: torch.Tensor,
              lengths: torch.Tensor) -> torch.Tensor:
        """The features of `pooling` from the final states [B, D*H] and the top layer's per-direction outputs."""
        if self.pooling == "last":
            return last
        # Pool the top layer's per-position outputs. Max and mean over a review's positions don't care
        # about their order, so the backward direction is pooled in its reversed layout (valid positions
        # are 0..length-1 there too): no un-reversing and no concatenation of [B, T, H] tensors, and the
        # features come out in the order cat-then-pool would give. Positions >= length hold garbage (never
        # path) or zeros (packed path): masked_fill hides them and blocks their gradient.
        pad = (positions[None, :] >= lengths[:, None]).unsqueeze(-1)
        pooled = [last] if self.pooling == "last+max+mean" else []
        if self.pooling in ("max", "max+mean", "last+max+mean"):
            pooled += [o.masked_fill(pad, float("-inf")).amax(dim=1) for o in outs]
        if self.pooling in ("mean", "max+mean", "last+max+mean"):
            # in float32: a half-precision length (or sum) of a long review rounds (bf16 holds integers exactly
            # only up to 256, fp16 up to 2048)
            pooled += [(o.masked_fill(pad, 0.0).sum(dim=1, dtype=torch.float32) / lengths[:, None]).to(o.dtype)
                       for o in outs]
        return torch.cat(pooled, dim=1)

    @torch.no_grad()
    def load_embeddings(self, matrix: np.ndarray | torch.Tensor) -> None:
        """Copy pretrained vectors [vocab_size, embed_dim] into the embedding; the pad row is zeroed.

        The pad row is zeroed so that padding stays the zero vector nn.Embedding starts it as,
        whatever the matrix holds there (padding_idx keeps it from ever being trained).
        """
        if not self.has_rnn:  # nothing reads word vectors
            return
        weight = self.embedding.weight
        matrix = torch.as_tensor(matrix)
        if matrix.dim() != 2 or matrix.shape[0] != weight.shape[0]:
            raise ValueError(f"embedding matrix must be [{weight.shape[0]}, {weight.shape[1]}], "
                             f"got {list(matrix.shape)}")
        if matrix.shape[1] != weight.shape[1]:
            raise SentimentError(f"pretrained vectors have {matrix.shape[1]} dimensions but the "
                                 f"model's embed_dim is {weight.shape[1]}; set embed_dim to "
                                 f"{matrix.shape[1]}")
        weight.copy_(matrix.to(device=weight.device, dtype=weight.dtype))
        weight[self.pad_index].zero_()

    def set_embedding_trainable(self, trainable: bool) -> None:
        """Freeze (False) or unfreeze (True) the embedding, e.g. to fine-tune GloVe after warm-up."""
        if not self.has_rnn:
            return
        self.embedding.weight.requires_grad_(trainable)


def build_model(cfg: "Config", vocab_size: int, pad_index: int = 0, num_outputs: int = 1) -> SentimentRNN:
    """The model a config describes; num_outputs comes from the run's label space (1 for two classes)."""
    m = cfg.model
    return SentimentRNN(
        vocab_size=vocab_size, embed_dim=cfg.data.glove_dim or m.embed_dim, hidden_size=m.hidden_size,
        num_layers=m.num_layers, rnn=m.rnn, bidirectional=m.bidirectional, dropout=m.dropout,
        embed_dropout=m.embed_dropout, output_dropout=m.output_dropout, pooling=m.pooling,
        pad_index=pad_index, pack=m.pack, num_outputs=num_outputs, normalize_embeddings=m.normalize_embeddings,
        ngrams=build_branch(cfg, num_outputs), combine=m.combine,
    )
