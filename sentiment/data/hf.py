"""Hugging Face datasets as a data source (`data.dataset: hf`): a Hub name, or a directory written by
`Dataset.save_to_disk` / `DatasetDict.save_to_disk`, read into the same `Table`s the file readers give.

`datasets` is optional and imported only here, only when this source is used: it pulls in pandas,
huggingface_hub and more (about 110 MB beyond pyarrow) and takes about a second to import, which IMDB and
file users should not pay.

A saved directory works offline; a Hub name needs the Hub (or its local cache). A directory saved from a
single `Dataset` (not a `DatasetDict`) has no splits, so it is the training data whatever
data.hf_train_split says, and asking it for a valid or test split is an error (they are carved from it
when data.hf_valid_split / data.hf_test_split are null).
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from sentiment.errors import SentimentError
from sentiment.data.readers import Table, _label_str

if TYPE_CHECKING:
    from sentiment.config import DataConfig

# the Table keys this source returns, and the config field that names each one's split
SPLIT_FIELDS = (("train", "hf_train_split"), ("valid", "hf_valid_split"), ("test", "hf_test_split"),
                ("unlabeled", "unlabeled"))


def load_hf_tables(cfg: DataConfig, unlabeled: bool = False) -> tuple[dict[str, Table], dict[str, str]]:
    """The configured splits as Tables ("train", plus "valid"/"test" where their split names are set), and
    for each a fingerprint that changes whenever its content does, so the tokenized cache can key on it
    without hashing every text. unlabeled: the split data.unlabeled names instead (its texts only)."""
    name = cfg.hf_dataset
    if not name:
        raise SentimentError("data.hf_dataset is not set: name a Hugging Face Hub dataset (e.g. stanfordnlp/imdb) "
                             "or a directory written by save_to_disk")
    wanted = {key: getattr(cfg, field) for key, field in SPLIT_FIELDS
              if key != "unlabeled" and getattr(cfg, field) is not None}
    _check_distinct({**wanted, **({"unlabeled": cfg.unlabeled} if cfg.unlabeled else {})})
    if unlabeled:
        wanted = {"unlabeled": cfg.unlabeled}
    datasets = _import_datasets()
    local = _local_path(name)
    if local is not None and local.is_dir() and (local / "README.md").is_file() and not _is_saved(local):
        loaded = _load_repository(datasets, local, cfg.hf_config)  # a clone of a Hub dataset repository
        label = name if cfg.hf_config is None else f"{name}:{cfg.hf_config}"
    elif local is not None:
        loaded = _load_from_disk(datasets, local, cfg.hf_config)
        label = name
    else:
        loaded = _load_from_hub(datasets, name, cfg.hf_config)
        label = name if cfg.hf_config is None else f"{name}:{cfg.hf_config}"
    tables: dict[str, Table] = {}
    fingerprints: dict[str, str] = {}
    for key, (split, ds) in _pick_splits(datasets, loaded, wanted, label).items():
        source = f"{label}[{split}]" if split is not None else label
        tables[key] = _table(datasets, ds, cfg.text_column, None if key == "unlabeled" else cfg.label_column, source)
        fingerprints[key] = _fingerprint(ds, split or "train")
    return tables, fingerprints


def _import_datasets() -> Any:
    """`datasets`, imported on first use: it is an optional dependency."""
    try:
        import datasets
    except ImportError:
        raise SentimentError("data.dataset: hf needs the Hugging Face datasets library: "
                             "pip install 'sentiment[hf]' (or pip install datasets)") from None
    return datasets


def _check_distinct(wanted: dict[str, str]) -> None:
    """Two roles on one split would score the model on its own training rows (or valid on test)."""
    fields = dict(SPLIT_FIELDS)
    seen: dict[str, str] = {}
    for key, split in wanted.items():
        if split in seen:
            raise SentimentError(f"data.{fields[seen[split]]} and data.{fields[key]} both name the split {split!r}: "
                                 "each role needs its own split (null carves valid/test from train)")
        seen[split] = key


def _reason(e: BaseException) -> str:
    """An exception's message on one line, cut short: `datasets` messages can span lines."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _looks_like_path(name: str) -> bool:
    """A Hub id is `name` or `owner/name`; anything else that is meant as a directory is a path."""
    return (os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or name.count("/") > 1
            or name.endswith("/"))


def _local_path(name: str) -> Path | None:
    """The directory data.hf_dataset names, or None for a Hub name. An existing path wins, as in `datasets`."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    if _looks_like_path(name):
        raise SentimentError(f"data.hf_dataset: directory {name} not found (a Hub dataset is named owner/name, "
                             "e.g. stanfordnlp/imdb)")
    return None


def _is_saved(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _load_repository(datasets: Any, path: Path, config: str | None) -> Any:
    """A local copy of a Hub dataset repository (data files, with configs declared in README.md), read as
    the Hub's copy would be, without the network and without progress bars."""
    what = f"{path}" + (f" (config {config!r})" if config is not None else "")
    bars = datasets.utils.logging.is_progress_bar_enabled()
    datasets.utils.logging.disable_progress_bar()
    try:
        with _offline(datasets):
            return datasets.load_dataset(str(path), config, trust_remote_code=False)
    except (datasets.exceptions.DatasetsError, OSError, ValueError, RuntimeError) as e:
        raise SentimentError(f"data.hf_dataset: could not load the dataset repository {what} ({_reason(e)})") from None
    finally:
        if bars:
            datasets.utils.logging.enable_progress_bar()


def _load_from_disk(datasets: Any, path: Path, config: str | None) -> Any:
    if not path.is_dir():
        raise SentimentError(f"data.hf_dataset: {path} is a file, not a directory written by save_to_disk "
                             "(for a .csv, .jsonl or .parquet file use data.dataset: files)")
    if not _is_saved(path):
        raise SentimentError(f"data.hf_dataset: {path} is not a saved dataset (it has neither dataset_dict.json "
                             "nor state.json, nor a README.md declaring data files); write one with "
                             "Dataset.save_to_disk or DatasetDict.save_to_disk")
    if config is not None:
        raise SentimentError(f"data.hf_config is {config!r}, but {path} is a saved dataset, which has no "
                             "configurations: unset data.hf_config")
    try:
        return datasets.load_from_disk(str(path))
    except (OSError, ValueError, KeyError, TypeError) as e:  # a damaged directory: missing or corrupt files
        raise SentimentError(f"data.hf_dataset: cannot read the saved dataset {path} ({_reason(e)})") from None


_RESOLVE_SECONDS = 3.0  # a DNS server that does not answer is no network too


def _hub_host() -> str:
    from urllib.parse import urlparse

    import huggingface_hub.constants

    return urlparse(huggingface_hub.constants.ENDPOINT).hostname or "huggingface.co"


def _resolves(host: str) -> bool:
    """Whether the Hub's host name resolves, within _RESOLVE_SECONDS: without it `datasets` retries each
    request for ~28 s, printing a line per retry, before it gives up."""
    import socket
    import threading

    answer: list[bool] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, 443)
            answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(_RESOLVE_SECONDS)
    return bool(answer and answer[0])


@contextmanager
def _offline(datasets: Any) -> Iterator[None]:
    """`datasets` and huggingface_hub in offline mode (as HF_HUB_OFFLINE=1), for this load only: the local
    cache still serves a dataset loaded before, and nothing is requested, retried or logged."""
    import huggingface_hub.constants

    saved = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


def _load_from_hub(datasets: Any, name: str, config: str | None) -> Any:
    what = repr(name) + (f" (config {config!r})" if config is not None else "")
    offline = bool(getattr(datasets.config, "HF_HUB_OFFLINE", False))
    unresolved = None
    if not offline and not _resolves(_hub_host()):
        unresolved = _hub_host()
    try:
        if unresolved is None:
            return datasets.load_dataset(name, config, trust_remote_code=False)
        with _offline(datasets):
            return datasets.load_dataset(name, config, trust_remote_code=False)
    except ConnectionError:  # offline (HF_HUB_OFFLINE=1) or the Hub unreachable, and nothing cached
        if unresolved is not None:
            hub, hint = f"the Hugging Face Hub ({unresolved}) cannot be reached (its name does not resolve)", ""
        else:
            hub = "offline mode is on (HF_HUB_OFFLINE)" if offline else "the Hugging Face Hub is unreachable"
            hint = "" if offline else " (HF_HUB_OFFLINE=1 skips the Hub's retries)"
        raise SentimentError(f"data.hf_dataset: could not load {what}: {hub} and the dataset is not in the local "
                             f"cache; a directory written by save_to_disk works offline{hint}") from None
    except datasets.exceptions.DatasetNotFoundError as e:
        raise SentimentError(f"data.hf_dataset: could not load {what}: no such dataset on the Hub, or it is "
                             f"private or gated ({_reason(e)}); a directory written by save_to_disk works "
                             "offline") from None
    except (datasets.exceptions.DatasetsError, OSError, ValueError, RuntimeError) as e:
        # an unknown config, a script-based dataset `datasets` no longer runs, a failed download, ...
        raise SentimentError(f"data.hf_dataset: could not load {what} ({_reason(e)})") from None


def _pick_splits(datasets: Any, loaded: Any, wanted: dict[str, str], label: str) -> dict[str, tuple[str | None, Any]]:
    """key -> (split name, Dataset). A single saved Dataset has no split name (None) and is train only."""
    fields = dict(SPLIT_FIELDS)
    if isinstance(loaded, datasets.DatasetDict):
        for key, split in wanted.items():
            if split not in loaded:
                raise SentimentError(f"data.{fields[key]}: {label} has no split {split!r} "
                                     f"(splits: {', '.join(map(repr, loaded))})")
        return {key: (split, loaded[split]) for key, split in wanted.items()}
    extra = [key for key in wanted if key != "train"]
    if extra:
        raise SentimentError(f"data.{fields[extra[0]]}: {label} is a single Dataset (saved without splits), "
                             f"so it can only be the train split: set data.{fields[extra[0]]} to null to carve "
                             f"{extra[0]} from it, or save a DatasetDict with that split")
    return {"train": (None, loaded)}


def _is_text_type(t: Any) -> bool:
    import pyarrow.types as pt

    return (pt.is_string(t) or pt.is_large_string(t) or pt.is_null(t)
            or bool(getattr(pt, "is_string_view", lambda _: False)(t)))


def _is_label_type(t: Any) -> bool:
    import pyarrow.types as pt

    return _is_text_type(t) or pt.is_integer(t) or pt.is_floating(t) or pt.is_boolean(t)


def _table(datasets: Any, ds: Any, text_column: str, label_column: str | None, source: str) -> Table:
    """One split as a Table: its two columns turned into Python lists once, through Arrow, not row by row
    (label_column None: texts only)."""
    columns = ds.column_names
    for column, field in ((text_column, "text_column"), (label_column, "label_column")):
        if column is not None and column not in columns:
            raise SentimentError(f"{source}: no column {column!r} (columns: {', '.join(map(repr, columns))}); "
                                 f"set data.{field}")
    # [:] applies any indices mapping (select, shuffle, filter) and, without one, is a zero-copy slice
    arrow = ds.select_columns([c for c in dict.fromkeys((text_column, label_column)) if c]).with_format("arrow")[:]
    text = arrow.column(text_column)
    if not _is_text_type(text.type):
        raise SentimentError(f"{source}: column {text_column!r} holds {text.type} values, not text; set "
                             f"data.text_column to the text column (columns: {', '.join(map(repr, columns))})")
    texts = text.to_pylist()
    if text.null_count:  # None (and every value of a null-typed column) is a row without text
        texts = [t or "" for t in texts]
    lines = list(range(1, len(texts) + 1))
    if label_column is None:
        return Table(texts, None, lines, source)

    label = arrow.column(label_column)
    feature = ds.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        labels = _class_labels(label.to_pylist(), feature.names, label_column, source)
    elif _is_label_type(label.type):
        values = label.to_pylist()
        labels = values if _is_text_type(label.type) else [_label_str(v) for v in values]
        empty = {v for v in set(labels) if v is None or not v.strip()}  # a handful of distinct labels: cheap
        if empty:
            row = next(i for i, v in enumerate(labels) if v in empty)
            raise SentimentError(f"{source}: row {row + 1}: empty label in column {label_column!r}")
    else:
        raise SentimentError(f"{source}: column {label_column!r} holds {label.type} values; data.label_column needs "
                             "one class per row (a ClassLabel, string, integer or boolean column)")
    return Table(texts, labels, lines, source)


def _class_labels(codes: list[int | None], names: list[str], column: str, source: str) -> list[str]:
    """ClassLabel codes as their names (stanfordnlp/imdb's 0/1 -> "neg"/"pos"). -1 is how `datasets` marks
    an unlabeled row; indexing names with it would silently give the last class, so it is an error."""
    n = len(names)
    invalid = {c for c in set(codes) if c is None or not 0 <= c < n}
    if invalid:
        bad = next(i for i, c in enumerate(codes) if c in invalid)
        code = codes[bad]
        classes = f"the ClassLabel column {column!r} has {n} classes ({', '.join(names)})"
        if code is None:
            raise SentimentError(f"{source}: row {bad + 1}: empty label in column {column!r}")
        if code == -1:
            raise SentimentError(f"{source}: row {bad + 1}: label -1 marks an unlabeled row (like the "
                                 f"'unsupervised' split of stanfordnlp/imdb); {classes}")
        raise SentimentError(f"{source}: row {bad + 1}: label {code} is out of range: {classes}")
    return [names[c] for c in codes]


def _fingerprint(ds: Any, split: str) -> str:
    """`datasets`' own fingerprint (it changes with every transform, and is kept by save_to_disk), with the
    split, the row count, the features (ClassLabel names make the labels) and the size of each Arrow file,
    which catches a directory rewritten in place. Stats only: nothing is read, and a copied directory
    still hits the cache."""
    files = []
    for entry in getattr(ds, "cache_files", None) or []:
        filename = entry.get("filename", "")
        try:
            files.append([Path(filename).name, os.stat(filename).st_size])
        except OSError:
            files.append([Path(filename).name, None])
    key = [getattr(ds, "_fingerprint", None), split, len(ds), str(ds.features), files]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]
