"""Experiment configuration: YAML -> typed dataclasses, with `--set` overrides and clear errors.

A config file is the whole experiment. Every key has a default, so a config names only what it
changes; unknown keys, wrong types and impossible values are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from sentiment.errors import SentimentError
from sentiment.paths import default_data_dir, default_runs_dir


# The defaults are the CPU recipe (configs/imdb_cpu.yaml): about 90% test accuracy after about 10 minutes
# of training on two CPU cores. configs/imdb_bilstm.yaml spells out the classic recipe key by key.


@dataclass
class DataConfig:
    # imdb: the aclImdb reviews in data_dir; files: your own train_file (valid_file, test_file); hf: a Hugging
    # Face dataset (hf_dataset: a hub name, or a directory written by save_to_disk)
    dataset: Literal["imdb", "files", "hf"] = "imdb"
    data_dir: str = field(default_factory=lambda: str(default_data_dir()))  # IMDB, GloVe and the caches
    train_file: Optional[str] = None  # .csv, .tsv, .jsonl, .parquet, or a directory with pos/ and neg/ folders
    valid_file: Optional[str] = None  # null: carve valid_fraction from train (stratified, seeded)
    test_file: Optional[str] = None  # null: carve test_fraction from train first (0: no test split)
    test_fraction: float = 0.1  # files and hf only: IMDB has its own test split
    text_column: str = "text"
    label_column: str = "label"
    labels: Optional[list[str]] = None  # null: the training labels, sorted; or the classes, in order
    hf_dataset: Optional[str] = None  # dataset: hf: a hub name (stanfordnlp/imdb) or a save_to_disk directory
    hf_config: Optional[str] = None
    hf_train_split: str = "train"
    hf_valid_split: Optional[str] = None  # null: carve valid_fraction from the train split
    hf_test_split: Optional[str] = None  # null: carve test_fraction from the train split
    placeholders: bool = False  # URLs -> xxurl, @mentions -> xxuser (short social-media text)
    # HTML entities unescaped (&amp; -> &, &gt; -> >) and typographic quotes made ASCII (don’t -> don't, as
    # GloVe spells it): text exported from the web. files and hf only; off by default.
    normalize_text: bool = False
    html_breaks: Optional[bool] = None  # `<br />` as whitespace; null: for IMDB only
    valid_fraction: float = 0.1  # carved from train, label-balanced; model selection uses it
    # movie: no movie has reviews in both train and valid (IMDB's train and test share no movies, so
    # validation then predicts test); random: reviews drawn at random. movie needs train/urls_*.txt
    # and falls back to random, saying so, without them.
    valid_split: Literal["movie", "random"] = "movie"
    split_seed: int = 42  # separate from run.seed so runs with different seeds share one split
    lowercase: bool = True  # GloVe 6B is uncased
    max_len: Optional[int] = 400  # truncate training reviews to this many tokens (null: keep all)
    truncate: Literal["head", "tail", "head+tail"] = "head+tail"
    # Evaluation and prediction read this many tokens (null: whole reviews), cut as `truncate` says.
    # Whole reviews scored 0.16 points higher on IMDB's movie validation split (same model): a tie
    # within that split's ~0.6-point noise, so the cheaper reading is the default.
    eval_max_len: Optional[int] = 400
    vocab_max_size: Optional[int] = 25_000  # most frequent training tokens, plus <pad> and <unk>
    # Which texts the vocabulary counts: `train`, the training rows kept (data.train_limit) and data.unlabeled's
    # texts; `all_texts`, every labeled training row, kept or not, and data.unlabeled's texts: with few labels,
    # the vocabulary a model pretrained on those texts has, so the two compare fairly. Never a validation or test
    # text either way.
    vocab_from: Literal["train", "all_texts"] = "train"
    vocab_min_freq: int = 1
    # Also add up to this many of GloVe's most frequent words that training lacks (GloVe lists words by
    # frequency), with their GloVe rows: a word first met in validation, test or prediction then reads its
    # pretrained vector instead of <unk>. For small datasets; 0: off. Needs glove_dim.
    vocab_glove_extra: int = 0
    glove_dim: Optional[int] = 50  # null: no pretrained vectors (embedding sized by model.embed_dim)
    glove_unk_init: Literal["random", "zeros"] = "random"  # rows for words GloVe lacks
    workers: Optional[int] = None  # processes for tokenization (null: every core)
    # Texts without labels, for the semi-supervised objectives (train.virtual_adversarial,
    # train.entropy_minimization): `unsup` for IMDB's 50,000 train/unsup reviews; a file of texts (its
    # data.text_column) for files; a split name (e.g. `unsupervised`) for hf. The vocabulary counts them too;
    # a text equal to a validation or test text is left out.
    unlabeled: Optional[str] = None
    # Keep this many labeled training rows, stratified by class and drawn with split_seed (runs with other seeds
    # share the draw); validation and test are untouched. null: all. For learning from few labels.
    train_limit: Optional[int] = None
    # The draw of data.train_limit's rows (null: split_seed): another draw of few labels, the validation split kept
    limit_seed: Optional[int] = None

    def resolved_workers(self) -> int:
        import os

        return self.workers or os.cpu_count() or 1


@dataclass
class NgramConfig:
    """A linear branch over hashed word n-grams (sentiment/ngrams.py) whose logits add to the recurrent head's."""

    n: int = 2  # 1..n-grams of the tokens (as strings: words outside the vocabulary keep their features)
    # hashed n-gram ids. Of d distinct n-grams about 1 - exp(-d / buckets) share a bucket with another (a uniform
    # hash): ~10% at d = buckets / 10, ~45% at d = 0.6 x buckets (IMDB's ~2.5M 1-2 grams in 2**22 buckets).
    # null: the largest power of two up to 2**22 whose table, with Adam's two moments, fits in 200 MB for the data's
    # classes (2**22 for up to 3 classes, 2**19 for 20); a new run stores the number it chose in its config.yaml
    buckets: Optional[int] = None
    # per-bucket scale, from the labeled training rows: none (counts), tfidf (smoothed idf, as scikit-learn), nb
    # (Naive Bayes log-count ratios on binarized counts, NBSVM; two classes only), auto (nb for two classes, tfidf
    # for more; a new run stores which in its config.yaml)
    weighting: Literal["none", "tfidf", "nb", "auto"] = "auto"
    norm: Literal["l2", "none"] = "l2"  # each text's weighted n-gram vector scaled to unit length
    dropout: float = 0.0  # on the n-gram weights, in training
    # whole: the branch reads the whole text (it costs O(tokens), and a linear model gains from every word a
    # review holds, which is how TF-IDF + LR reads it); truncated: what the recurrent part reads (data.max_len,
    # data.eval_max_len, data.truncate)
    text: Literal["whole", "truncated"] = "whole"
    # the branch's learning rate (null: train.lr): 5x the recurrent part's, as a linear model's table learns from
    # sparse, rare features
    lr: Optional[float] = 0.01
    # the branch's own L2 penalty (Adam's weight_decay in its parameter group): ~1 / (C * n_train) for logistic
    # regression's C ~ 25 on IMDB's 22,500 training reviews (a table trained without decay overfits)
    weight_decay: float = 2.0e-6
    # true: the table's gradient holds only the batch's rows (a sparse tensor) and its Adam update and L2 penalty
    # touch only those rows (sentiment/training/lazy_adam.py), so a step costs what the batch's n-grams cost,
    # not the table's size; its moments decay only on the steps a row is touched (as torch's SparseAdam), and
    # train.grad_clip leaves the table out (each text's n-gram vector has unit L2 norm, which bounds its
    # gradient). false: a dense Adam update of every row each step (runs stored without this key). Under NCCL
    # (torchrun on GPUs), which cannot all-reduce sparse gradients, the table trains dense, with a note.
    sparse: bool = True


@dataclass
class ModelConfig:
    # none: no recurrent part; the n-gram branch (model.ngrams) alone
    rnn: Literal["lstm", "gru", "rnn", "none"] = "gru"
    embed_dim: Optional[int] = None  # only without GloVe; with GloVe it is the GloVe dimension
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.5  # between recurrent layers
    embed_dropout: float = 0.5
    output_dropout: float = 0.5  # on the pooled features before the final Linear
    pooling: Literal["last", "max", "mean", "max+mean", "last+max+mean"] = "max+mean"  # last+max+mean: ULMFiT's
    freeze_embeddings: bool = False
    unfreeze_after: Optional[int] = None  # epochs after which frozen embeddings start training
    pack: Literal["auto", "always", "never"] = "auto"  # pack_padded_sequence only where fast (cuDNN)
    # Embeddings scaled to zero mean and unit variance per dimension, weighted by word frequency (Miyato et
    # al. 2017), so an adversarial perturbation's size means the same for every word and every run.
    normalize_embeddings: bool = False
    # the n-gram branch beside the recurrent part (its keys: NgramConfig above); null: off (the classic recipes)
    ngrams: Optional[NgramConfig] = field(default_factory=NgramConfig)
    # With both parts (a recurrent model and model.ngrams): sum adds their logits and trains one loss on the sum;
    # mixture trains each part on its own loss and weighs them (two weights and a bias) by a logistic regression
    # fit on the validation split after every epoch, kept in the checkpoint (docs/results.md, "The whole and its
    # parts"). Trained on the sum, the branch fits the training set within two epochs and the recurrent part
    # learns little; trained apart, each learns all it can and the mixture takes what each adds.
    # With one part (model.ngrams null, or model.rnn none) both mean that part alone.
    combine: Literal["sum", "mixture"] = "mixture"
    # A run directory (of `sentiment pretrain`, or a finished classifier run) whose vocabulary, embedding and
    # recurrent weights this model starts from, with a new head. data.vocab_* and data.glove_* are then not used.
    init_from: Optional[str] = None
    # Gradual unfreezing (ULMFiT): the recurrent layers and the embedding start frozen and are unfrozen one group
    # at a time from the top, every `unfreeze_after` epochs (1 when null); the head always trains.
    gradual_unfreeze: bool = False


@dataclass
class PretrainConfig:
    """`sentiment pretrain`: the encoder as two one-direction language models (next token, previous token)."""

    bptt: int = 70  # tokens per window: random windows over the concatenated texts
    output: Literal["adaptive", "sampled", "full"] = "adaptive"  # full: a benchmark baseline, refused on CPU
    cutoffs: list[int] = field(default_factory=lambda: [2000, 10000])  # adaptive softmax's clusters (by frequency)
    div_value: float = 4.0  # adaptive softmax: each tail cluster's width shrinks by this factor
    samples: int = 1024  # sampled softmax: negatives per batch, log-uniform over frequency ranks
    tie_weights: bool = True  # sampled and full: the output rows are the embedding (a projection if sizes differ)
    batch_size: int = 64  # windows per batch and process
    epochs: int = 1
    epoch_tokens: Optional[int] = None  # tokens per epoch (validation and best.pt each epoch); null: one pass
    lr: float = 3e-3
    weight_decay: float = 0.0
    grad_clip: Optional[float] = 0.5
    lr_schedule: Literal["constant", "cosine", "linear"] = "linear"  # linear + warmup_steps: slanted triangular
    warmup_steps: int = 200
    max_minutes: Optional[float] = None  # wall-clock budget of one start (resume continues); null: none
    held_out_fraction: float = 0.01  # of the pretraining texts, for held-out perplexity (never valid/test)
    held_out_windows: int = 256  # windows of held-out text scored after each epoch


@dataclass
class AdversarialConfig:
    """Adversarial training (AT): the loss again on embeddings moved by epsilon along the loss gradient."""

    weight: float = 1.0
    epsilon: float = 5.0  # L2 norm of each review's perturbation, over its true length and every dimension


@dataclass
class VirtualAdversarialConfig:
    """Virtual adversarial training (VAT): the KL divergence between the prediction and the prediction on
    embeddings moved by epsilon in the direction that changes it most; needs no labels."""

    weight: float = 1.0
    epsilon: float = 5.0  # L2 norm of each review's perturbation
    xi: float = 0.1  # norm of the probe that finds the direction (finite differences; too small and x + r == x)
    power_iterations: int = 1


@dataclass
class EntropyMinimizationConfig:
    """Entropy minimisation: lowers the entropy of predictions on unlabeled texts (confident predictions)."""

    weight: float = 1.0


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 64  # per process: under torchrun the global batch is batch_size x processes x grad_accum
    grad_accum: int = 1  # batches per optimizer step (keeps the global batch when the process count changes)
    eval_batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.0
    grad_clip: Optional[float] = 5.0  # max gradient norm (the cure for exploding gradients); null: off
    lr_schedule: Literal["constant", "cosine", "linear"] = "cosine"  # decay to 0 over all steps
    warmup_steps: int = 100
    bucket: bool = True  # length-bucketed batches
    early_stopping_patience: Optional[int] = None  # epochs without valid-accuracy gain before stopping
    amp: bool = True  # mixed precision, used on CUDA only
    # The loop reads loss, accuracy and the non-finite check from the device only when it reports (about
    # twice a second), never inside a step; non-finite steps are skipped by fused Adam. null: on CUDA.
    lazy_sync: Optional[bool] = None
    class_weights: Optional[Literal["balanced"]] = None  # balanced: weight classes by n / (K * n_class)
    # Extra objectives, each off unless named (e.g. `adversarial: {epsilon: 5.0}`); with all off the loop
    # is the plain supervised one. Every labeled batch is joined by one unlabeled batch (when data.unlabeled
    # is set and an objective uses it); an epoch is one pass over the labeled batches, and the unlabeled
    # stream runs through its own shuffled passes, resumed where it was.
    adversarial: Optional[AdversarialConfig] = None
    virtual_adversarial: Optional[VirtualAdversarialConfig] = None
    entropy_minimization: Optional[EntropyMinimizationConfig] = None
    unlabeled_batch_size: int = 64
    unlabeled_max_len: Optional[int] = None  # tokens of an unlabeled text read (head+tail); null: data.max_len
    # Discriminative learning rates (ULMFiT): the head trains at lr, the top recurrent layer at lr / decay, the one
    # below at lr / decay^2, ..., the embedding last (ULMFiT: 2.6). null: one rate.
    layer_lr_decay: Optional[float] = None

    def uses_unlabeled(self) -> bool:
        return self.virtual_adversarial is not None or self.entropy_minimization is not None

    def has_extra_objectives(self) -> bool:
        return self.adversarial is not None or self.uses_unlabeled()


@dataclass
class RunConfig:
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    threads: Optional[int] = None  # torch CPU threads (None: torch's default)
    output_dir: str = field(default_factory=lambda: str(default_runs_dir()))
    name: Optional[str] = None  # default: the config file's name
    eval_test: bool = True  # evaluate the best checkpoint on the test split when training ends
    checkpoint_minutes: float = 10.0  # also write last.pt mid-epoch this often (0: after every step)
    # Flush denormal floats to zero on CPU. Off, `pooling: last` models were reported ~9x slower on CPU
    # (gradients decay into denormals through long reviews); the rounding it adds is below 1e-38.
    flush_denormal: bool = True
    # TensorBoard event files in the run directory (docs/tracking.md): auto writes them where the tensorboard
    # package is installed (the `track` extra), true requires it, false never writes them
    tensorboard: Union[bool, Literal["auto"]] = "auto"


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list of " + _type_name(typing.get_args(tp)[0]).removeprefix("a ") + "s"
    if dataclasses.is_dataclass(tp):
        return "a mapping of " + ", ".join(f.name for f in dataclasses.fields(tp))
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string", type(None): "null"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        section = next((a for a in args if dataclasses.is_dataclass(a)), None)
        if section is not None and isinstance(value, dict):  # an optional section: its own errors name the key
            return _build(section, value, f"{key}.")
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except SentimentError:
                pass
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return _build(tp, value, f"{key}.")
    elif origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin is list:
        if isinstance(value, list):
            (item,) = typing.get_args(tp)
            return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads 1e-3 as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise SentimentError(f"config key {key}: expected {_type_name(tp)}, got {value!r}")


def _closest(name: str, options: list[str]) -> str:
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else f" (valid keys: {', '.join(options)})"


def _build(cls: type, values: Any, prefix: str) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise SentimentError(f"config key {prefix.rstrip('.') or '<root>'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise SentimentError(f"unknown config key {path}{_closest(str(key), names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{path}.")
        else:
            kwargs[key] = _coerce(value, tp, path)
    return cls(**kwargs)


def validate(cfg: Config) -> None:
    """Values that have the right type but cannot work."""
    checks = [
        ("data.valid_fraction", 0 <= cfg.data.valid_fraction < 1, "must be in [0, 1)"),
        ("data.label_column", cfg.data.dataset == "imdb" or cfg.data.label_column != cfg.data.text_column,
         f"names the same column as data.text_column ({cfg.data.text_column!r}): name the column holding the labels"),
        ("data.max_len", cfg.data.max_len is None or cfg.data.max_len >= 1, "must be >= 1 or null"),
        ("data.eval_max_len", cfg.data.eval_max_len is None or cfg.data.eval_max_len >= 1, "must be >= 1 or null"),
        ("data.vocab_max_size", cfg.data.vocab_max_size is None or cfg.data.vocab_max_size >= 1, "must be >= 1 or null"),
        ("data.vocab_min_freq", cfg.data.vocab_min_freq >= 1, "must be >= 1"),
        ("data.vocab_glove_extra", cfg.data.vocab_glove_extra >= 0, "must be >= 0"),
        ("data.glove_dim", cfg.data.glove_dim in (None, 50, 100, 200, 300), "must be 50, 100, 200, 300 or null"),
        ("data.vocab_glove_extra", cfg.data.vocab_glove_extra == 0 or cfg.data.glove_dim is not None,
         "needs data.glove_dim: its words and rows come from GloVe"),
        ("data.workers", cfg.data.workers is None or cfg.data.workers >= 1, "must be >= 1 or null"),
        ("data.test_fraction", 0 <= cfg.data.test_fraction < 1, "must be in [0, 1)"),
        ("data.train_file", cfg.data.dataset != "files" or bool(cfg.data.train_file),
         "must name your training file when data.dataset is files"),
        ("data.hf_dataset", cfg.data.dataset != "hf" or bool(cfg.data.hf_dataset),
         "must name a Hugging Face dataset (or a save_to_disk directory) when data.dataset is hf"),
        ("data.labels", cfg.data.labels is None or (len(cfg.data.labels) >= 2
         and len(set(cfg.data.labels)) == len(cfg.data.labels) and all(cfg.data.labels)),
         "must list at least two distinct, non-empty label names, or be null"),
        # IMDB's reviews are tokenized one fixed way (its cache is shared by every IMDB config); an IMDB run
        # that asked otherwise would train on one cleaning and predict with another.
        *((key, cfg.data.dataset != "imdb" or ok, "is for files and hf datasets: IMDB's reviews are cleaned one "
           "fixed way (<br /> as whitespace, nothing else)")
          for key, ok in (("data.placeholders", not cfg.data.placeholders),
                          ("data.normalize_text", not cfg.data.normalize_text),
                          ("data.html_breaks", cfg.data.html_breaks is not False))),
        ("data.valid_fraction", cfg.data.dataset == "imdb" or cfg.data.valid_fraction > 0
         or bool(cfg.data.valid_file if cfg.data.dataset == "files" else cfg.data.hf_valid_split),
         "must be > 0 when no validation file or split is given"),
        ("model.embed_dim", cfg.data.glove_dim is not None or (cfg.model.embed_dim or 0) >= 1,
         "must be >= 1 when data.glove_dim is null"),
        ("model.hidden_size", cfg.model.hidden_size >= 1, "must be >= 1"),
        ("model.num_layers", cfg.model.num_layers >= 1, "must be >= 1"),
        ("model.dropout", 0 <= cfg.model.dropout < 1, "must be in [0, 1)"),
        ("model.embed_dropout", 0 <= cfg.model.embed_dropout < 1, "must be in [0, 1)"),
        ("model.output_dropout", 0 <= cfg.model.output_dropout < 1, "must be in [0, 1)"),
        ("model.unfreeze_after", cfg.model.unfreeze_after is None or cfg.model.unfreeze_after >= 0, "must be >= 0 or null"),
        ("train.epochs", cfg.train.epochs >= 1, "must be >= 1"),
        ("train.batch_size", cfg.train.batch_size >= 1, "must be >= 1"),
        ("train.grad_accum", cfg.train.grad_accum >= 1, "must be >= 1"),
        ("train.eval_batch_size", cfg.train.eval_batch_size >= 1, "must be >= 1"),
        ("train.lr", cfg.train.lr > 0, "must be > 0"),
        ("train.weight_decay", cfg.train.weight_decay >= 0, "must be >= 0"),
        ("train.grad_clip", cfg.train.grad_clip is None or cfg.train.grad_clip > 0, "must be > 0 or null"),
        ("train.warmup_steps", cfg.train.warmup_steps >= 0, "must be >= 0"),
        ("train.early_stopping_patience", cfg.train.early_stopping_patience is None
         or cfg.train.early_stopping_patience >= 1, "must be >= 1 or null"),
        ("train.unlabeled_batch_size", cfg.train.unlabeled_batch_size >= 1, "must be >= 1"),
        ("train.unlabeled_max_len", cfg.train.unlabeled_max_len is None or cfg.train.unlabeled_max_len >= 1,
         "must be >= 1 or null"),
        ("data.unlabeled", cfg.data.unlabeled is None or bool(cfg.data.unlabeled.strip()),
         "must name the unlabeled texts (IMDB: unsup) or be null"),
        ("data.unlabeled", cfg.data.unlabeled is None or cfg.data.dataset != "imdb" or cfg.data.unlabeled == "unsup",
         "must be unsup (IMDB's train/unsup reviews) when data.dataset is imdb"),
        *_objective_checks(cfg),
        *_ngram_checks(cfg),
        *_pretrain_checks(cfg),
        ("run.threads", cfg.run.threads is None or cfg.run.threads >= 1, "must be >= 1 or null"),
        ("run.checkpoint_minutes", cfg.run.checkpoint_minutes >= 0, "must be >= 0"),
        ("run.device", cfg.run.device in ("auto", "cpu", "mps") or cfg.run.device.startswith("cuda"),
         "must be auto, cpu, cuda, cuda:N or mps"),
    ]
    for key, ok, why in checks:
        if not ok:
            value = eval_key(cfg, key)
            shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)
            raise SentimentError(f"config key {key} {why}, got {shown}")  # as YAML writes it


def _objective_checks(cfg: Config) -> list[tuple[str, bool, str]]:
    checks = []
    for name in ("adversarial", "virtual_adversarial", "entropy_minimization"):
        section = getattr(cfg.train, name)
        if section is None:
            continue
        checks.append((f"train.{name}.weight", section.weight >= 0, "must be >= 0"))
        if name != "entropy_minimization":
            checks.append((f"train.{name}.epsilon", section.epsilon > 0, "must be > 0"))
    vat = cfg.train.virtual_adversarial
    if vat is not None:
        checks += [("train.virtual_adversarial.xi", vat.xi > 0, "must be > 0"),
                   ("train.virtual_adversarial.power_iterations", vat.power_iterations >= 1, "must be >= 1")]
    return checks


def _ngram_checks(cfg: Config) -> list[tuple[str, bool, str]]:
    g = cfg.model.ngrams
    checks = [("model.ngrams", cfg.model.rnn != "none" or g is not None,
               "must be set when model.rnn is none (the n-gram branch is then the whole model)")]
    if cfg.model.rnn == "none":
        checks += [(f"train.{name}", getattr(cfg.train, name) is None,
                    "needs a recurrent part (model.rnn is none): its perturbations live on the word embeddings")
                   for name in ("adversarial", "virtual_adversarial", "entropy_minimization")]
        checks += [("train.layer_lr_decay", cfg.train.layer_lr_decay is None,
                    "needs a recurrent part (model.rnn is none): its rates step down the recurrent layers; set it "
                    "to null"),
                   ("model.gradual_unfreeze", not cfg.model.gradual_unfreeze,
                    "needs a recurrent part (model.rnn is none): it unfreezes the recurrent layers one by one; set it "
                    "to false")]
    if cfg.model.combine == "mixture" and cfg.model.rnn != "none" and g is not None:
        checks += [(f"train.{name}", getattr(cfg.train, name) is None,
                    "trains the whole's logits, while model.combine mixture trains each part on its own loss: "
                    "set it to null, or model.combine to sum")
                   for name in ("adversarial", "virtual_adversarial", "entropy_minimization")]
    if g is not None:
        checks += [("model.ngrams.n", 1 <= g.n <= 8, "must be in 1..8"),
                   ("model.ngrams.buckets", g.buckets is None or 1 <= g.buckets <= 2**26, "must be in 1..2**26 or null"),
                   ("model.ngrams.dropout", 0 <= g.dropout < 1, "must be in [0, 1)"),
                   ("model.ngrams.lr", g.lr is None or g.lr > 0, "must be > 0 or null"),
                   ("model.ngrams.weight_decay", g.weight_decay >= 0, "must be >= 0")]
    return checks
def check_pretrain_config(cfg: Config) -> None:
    """What `sentiment pretrain` needs beyond a valid config: a recurrent encoder to train as a language model."""
    if cfg.model.rnn == "none":
        raise SentimentError("config key model.rnn is none (the n-gram branch alone), but pretrain trains the "
                             "recurrent encoder as a language model: set model.rnn to gru, lstm or rnn")


def _pretrain_checks(cfg: Config) -> list[tuple[str, bool, str]]:
    p = cfg.pretrain
    return [
        ("data.train_limit", cfg.data.train_limit is None or cfg.data.train_limit >= 2, "must be >= 2 or null"),
        ("train.layer_lr_decay", cfg.train.layer_lr_decay is None or cfg.train.layer_lr_decay > 0, "must be > 0 or null"),
        ("pretrain.bptt", p.bptt >= 2, "must be >= 2"),
        ("pretrain.cutoffs", all(a < b for a, b in zip(p.cutoffs, p.cutoffs[1:])) and all(c > 0 for c in p.cutoffs),
         "must be increasing and > 0"),
        ("pretrain.div_value", p.div_value >= 1, "must be >= 1"),
        ("pretrain.samples", p.samples >= 1, "must be >= 1"),
        ("pretrain.batch_size", p.batch_size >= 1, "must be >= 1"),
        ("pretrain.epochs", p.epochs >= 1, "must be >= 1"),
        ("pretrain.epoch_tokens", p.epoch_tokens is None or p.epoch_tokens >= 1, "must be >= 1 or null"),
        ("pretrain.lr", p.lr > 0, "must be > 0"),
        ("pretrain.weight_decay", p.weight_decay >= 0, "must be >= 0"),
        ("pretrain.grad_clip", p.grad_clip is None or p.grad_clip > 0, "must be > 0 or null"),
        ("pretrain.warmup_steps", p.warmup_steps >= 0, "must be >= 0"),
        ("pretrain.max_minutes", p.max_minutes is None or p.max_minutes > 0, "must be > 0 or null"),
        ("pretrain.held_out_fraction", 0 < p.held_out_fraction < 1, "must be in (0, 1)"),
        ("pretrain.held_out_windows", p.held_out_windows >= 1, "must be >= 1"),
    ]


def eval_key(cfg: Config, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """`model.rnn=gru` -> (["model", "rnn"], "gru"); the value is parsed as a YAML scalar."""
    if "=" not in text:
        raise SentimentError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise SentimentError(f"--set {text!r}: the key is empty or malformed, e.g. --set model.rnn=gru")
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise SentimentError(f"--set {key.strip()}: the value is over {MAX_YAML_BYTES:,} bytes")
    try:
        value = _load_yaml(raw) if raw.strip() else None
    except (yaml.YAMLError, RecursionError):
        value = raw  # not YAML (an alias included: it is never expanded): the text as written
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        parts, value = parse_override(text)
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:  # absent, or an optional section that is off (null): --set turns it on
                child = node[part] = {}
            if not isinstance(child, dict):
                raise SentimentError(f"--set {text!r}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


# A config is a few kilobytes; a bigger file is not one (and PyYAML would hold all of it as Python objects).
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 50


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader (no Python tags) that refuses aliases (`*name`). An alias expands to the whole node its anchor
    names, so a 1 KB file of nested aliases (the "billion laughs") expands to billions of nodes: 40 s and
    gigabytes before it dies. No config needs one; an anchor without an alias is harmless and kept."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not allowed in a config: write the value out",
                event.start_mark)
        # [[[[...]]]] thousands deep would end in Python's RecursionError, after 0.6 s; a config is a few deep
        if self.depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep",
                                              self.peek_event().start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _NoAliasDumper(yaml.SafeDumper):
    """Never writes an anchor and alias for a repeated object: what it writes, _NoAliasLoader reads."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_NoAliasLoader)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file as a mapping (a config, a run's config.yaml): at most MAX_YAML_BYTES, no Python tags, no
    aliases; anything else is one error naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)  # not the whole file: it may be huge, or endless
    except FileNotFoundError:
        raise SentimentError(f"config file {path} not found") from None
    except OSError as e:
        raise SentimentError(f"cannot read config file {path}: {e.strerror or e}") from None
    if len(data) > MAX_YAML_BYTES:
        raise SentimentError(f"config file {path} is over {MAX_YAML_BYTES:,} bytes: not a config")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SentimentError(f"cannot read config file {path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        raw = _load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise SentimentError(f"config file {path}: YAML syntax error{where}: {problem}") from None
    except RecursionError:  # a last resort: _NoAliasLoader stops at MAX_YAML_DEPTH
        raise SentimentError(f"config file {path}: YAML nested too deeply to be a config") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SentimentError(f"config file {path}: expected a mapping of sections, got {type(raw).__name__}")
    return raw


def config_from_dict(raw: dict[str, Any]) -> Config:
    cfg = _build(Config, raw, "")
    validate(cfg)
    return cfg


def load_config(path: Path | None, overrides: list[str] | None = None) -> Config:
    """The resolved config: defaults, then the file, then `--set` overrides."""
    raw = read_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    cfg = config_from_dict(raw)
    if cfg.run.name is None and path is not None:
        cfg.run.name = Path(path).stem
    return cfg


def flat_config(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config dict's leaves under dotted keys: {"train": {"lr": 0.01}} -> {"train.lr": 0.01}. A section that is
    off (null) is one key with the value None."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def dump_config(cfg: Config) -> str:
    return yaml.dump(cfg.to_dict(), Dumper=_NoAliasDumper, sort_keys=False)


# ---------------------------------------------------------------- one's own data in one line
# What `sentiment train --data FILE` starts from without --config: the recipe measured on short text of one's
# own (configs/airline_tweets_ngrams.yaml: 14,640 tweets, 3 classes; docs/results.md), not IMDB's 400-token one,
# with its two parts mixed on validation.
# data.max_len and data.eval_max_len are left to the data: choose_max_len sets them from the training texts.
OWN_DATA_RECIPE: dict[str, Any] = {
    "data": {"dataset": "files", "test_fraction": 0.1, "valid_fraction": 0.1, "placeholders": True,
             "glove_dim": 50},
    # two parts mixed on validation, as the IMDB default: any number of classes (weighting auto: tfidf beyond two)
    # and a table sized to the data within 200 MB (buckets null); the branch's decay as measured on the tweets
    "model": {"rnn": "gru", "hidden_size": 128, "num_layers": 1, "bidirectional": True, "embed_dropout": 0.3,
              "output_dropout": 0.5, "pooling": "max+mean", "combine": "mixture",
              "ngrams": {"n": 2, "weight_decay": 1.0e-5}},
    "train": {"epochs": 6, "batch_size": 64, "lr": 0.002, "lr_schedule": "cosine", "warmup_steps": 100,
              "grad_clip": 5.0},
}
MAX_LEN_PERCENTILE = 95  # of the training texts' token counts: 1 text in 20 is cut, and batches stay short
MAX_LEN_CAP = 400  # IMDB's reading: longer texts are cut to their head and tail (data.truncate)
MAX_LEN_FLOOR = 8


def own_data_config(path: Path | None, overrides: list[str], files: dict[str, Any]) -> Config:
    """The config of `train --data`: the file at `path` (or, without one, OWN_DATA_RECIPE), the data keys
    `files` gives (train_file, valid_file, test_file, text_column, label_column; None: unchanged), then the
    --set overrides. A path is set as written, never parsed as YAML."""
    cfg = config_from_dict(apply_overrides(own_data_raw(path, files), overrides))
    if cfg.run.name is None:
        cfg.run.name = Path(path).stem if path is not None else Path(str(files["train_file"])).stem
    return cfg


def own_data_raw(path: Path | None, files: dict[str, Any]) -> dict[str, Any]:
    """The mapping own_data_config resolves before its --set overrides (`sentiment tune --data` adds a trial's
    overrides to it and writes it as best.yaml)."""
    import copy

    raw = read_yaml(path) if path is not None else copy.deepcopy(OWN_DATA_RECIPE)
    if not isinstance(raw.get("data"), dict):
        raw["data"] = {}
    data = raw["data"]
    data["dataset"] = "files"
    for key in ("valid_file", "test_file"):
        data.setdefault(key, None)
    data.update({k: str(v) for k, v in files.items() if v is not None})
    return raw


def choose_max_len(lengths: Any) -> int:
    """data.max_len for texts of these token counts: the MAX_LEN_PERCENTILE-th percentile, within
    [MAX_LEN_FLOOR, MAX_LEN_CAP]."""
    import numpy as np

    lengths = np.asarray(lengths)
    if not len(lengths):
        return MAX_LEN_CAP
    return int(min(MAX_LEN_CAP, max(MAX_LEN_FLOOR, int(np.ceil(np.percentile(lengths, MAX_LEN_PERCENTILE))))))
