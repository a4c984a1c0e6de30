"""Run directories and checkpoints.

A run directory holds everything needed to evaluate, resume or serve a model without the config file
it came from: config.yaml (resolved), vocab.json, labels.json (class names), splits.npz (which source rows
went to train, valid and test), metrics.jsonl, best.pt, last.pt, curves.png and results.json. Checkpoints are written atomically and loaded with weights_only=True (no pickle code).

Run directories have a format version (RUN_FORMAT_VERSION), in run.json beside the run files and in every
checkpoint ("run_format_version"). A run directory without run.json was written before versions existed: version
0, read as it is (tests/test_compat.py keeps such a run evaluating, predicting and resuming).
"""

from __future__ import annotations

import io
import json
import os
import functools
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentiment.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from sentiment.config import Config, config_from_dict, dump_config, read_yaml
from sentiment.errors import SentimentError
from sentiment.data.labels import IMDB_LABELS, LabelSpace
from sentiment.data.tokenize import MAX_CHUNK, TOKENIZER_VERSION, check_text_pipeline, text_pipeline_version
from sentiment.data.vocab import Vocab

CHECKPOINT_FORMAT = 1
CONFIG_FILE, VOCAB_FILE, METRICS_FILE = "config.yaml", "vocab.json", "metrics.jsonl"
LABELS_FILE, SPLITS_FILE = "labels.json", "splits.npz"
BEST, LAST, RESULTS, CURVES = "best.pt", "last.pt", "results.json", "curves.png"
PRETRAIN_TEXTS = "pretrain_texts.npy"  # a pretraining run's texts (sorted uint64 fingerprints): marks such a run
TRAIN_TEXTS = "train_texts.npy"  # a classifier run's training texts (sorted uint64 fingerprints), for init_from
# 1: run.json (this version) written with the run files; 0: run directories written before it
RUN_FORMAT_VERSION, RUN_FILE = 1, "run.json"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "run_format_version": RUN_FORMAT_VERSION, **state}, buf)
    atomic_write(Path(path), lambda f: f.write(buf.getbuffer()))


def load_checkpoint(path: Path, vocab: Vocab | None = None, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint dict; one clear error if it is missing, corrupt, or belongs to another vocab."""
    path = Path(path)
    if not path.is_file():
        raise SentimentError(f"checkpoint {path} not found")
    try:
        with warnings.catch_warnings():  # torch's advice on a file that is not a torch checkpoint at all
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        code = re.search(r"GLOBAL (\S+)", str(e))  # a class or function: unpickling it would run code
        if code:
            raise SentimentError(f"checkpoint {path} refers to Python code ({code.group(1)}), not only tensors: "
                                 "refused to load it (that code would run); use a checkpoint you trust") from None
        raise SentimentError(f"checkpoint {path} is corrupt or truncated ({_last_line(e)[:200]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SentimentError(f"checkpoint {path} is corrupt or truncated ({first[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "model" not in state:
        raise SentimentError(f"{path} is not a checkpoint written by this version of sentiment")
    if vocab is not None and state.get("vocab") != vocab.itos:
        raise SentimentError(f"checkpoint {path} belongs to another vocab than {path.parent / VOCAB_FILE}")
    return state


def _last_line(error: BaseException) -> str:
    """The gist of torch's weights-only errors, which put advice first and the cause last."""
    lines = [l.strip() for l in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() if l.strip()]
    lines = [l for l in lines if not l.startswith("Check the documentation")]
    return lines[-1] if lines else type(error).__name__


@functools.cache
def code_version() -> str:
    """The git commit this package was loaded from ("+dirty" with uncommitted changes to tracked files),
    or the package version outside a git checkout. Read once per process (training reads it when it starts),
    so a commit made while a run trains is not recorded as that run's code."""
    import subprocess

    from sentiment import __version__

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            raise OSError(commit.stderr)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"sentiment {__version__}"
    return commit.stdout.strip() + ("+dirty" if dirty else "")


def write_run_files(run_dir: Path, cfg: Config, vocab: Vocab, label_space: LabelSpace | None = None,
                    membership: dict[str, np.ndarray] | None = None) -> None:
    """What inference needs besides a checkpoint (config, vocab, label names), and which source rows went
    to train, valid and test (for audits and for baselines that must use the same split)."""
    # with how its texts become tokens and n-gram hashes (a later sentiment checks it can make them alike), and
    # the working directory: the data paths the config gives relative are relative to it (eval names it)
    atomic_write_text(run_dir / RUN_FILE, json.dumps({"format_version": RUN_FORMAT_VERSION, **text_pipeline_version(),
                                                      "working_directory": os.getcwd()}) + "\n")
    atomic_write_text(run_dir / CONFIG_FILE, dump_config(cfg))
    vocab.save(run_dir / VOCAB_FILE)
    (label_space or LabelSpace(IMDB_LABELS)).save(run_dir / LABELS_FILE)
    if membership:
        buf = io.BytesIO()
        np.savez_compressed(buf, **{name: np.asarray(rows, dtype=np.int64) for name, rows in membership.items()})
        atomic_write_bytes(run_dir / SPLITS_FILE, buf.getvalue())


def run_format_version(run_dir: Path) -> int:
    """The format version of a run directory: run.json's, or 0 for runs written before it existed. A version newer
    than this code reads is refused."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return 0
    try:
        version = json.loads(path.read_text(encoding="utf-8"))["format_version"]
    except (ValueError, KeyError, TypeError, OSError):
        raise SentimentError(f"{path} is not a run file of sentiment (expected {{\"format_version\": N}})") from None
    if not isinstance(version, int) or not 0 <= version <= RUN_FORMAT_VERSION:
        raise SentimentError(f"{run_dir} has run format version {version}; this sentiment reads versions up to "
                             f"{RUN_FORMAT_VERSION}: upgrade sentiment to use it")
    return version


def run_text_pipeline(run_dir: Path) -> dict[str, Any]:
    """The text pipeline versions run.json records (sentiment.data.tokenize.text_pipeline_version); {} for runs
    written before they were recorded (read as version 1 of each)."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return {}
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return {}  # run_format_version names the broken file
    if not isinstance(recorded, dict):
        return {}
    return {k: v for k, v in recorded.items() if k in ("tokenizer_version", "token_hash_version")}


def check_data_paths(run_dir: Path, cfg: Config) -> None:
    """The run's own data files, before they are read: a relative one not found here is named with the directory
    training ran from (it is relative to that directory, and stored as given)."""
    data = cfg.data
    keys = ["train_file", "valid_file", "test_file"] if data.dataset == "files" else []
    keys += ["data_dir"] if data.dataset == "imdb" else []
    for key in keys:
        value = getattr(data, key)
        if not value or Path(value).is_absolute() or Path(value).exists():
            continue
        try:
            trained_in = json.loads((Path(run_dir) / RUN_FILE).read_text(encoding="utf-8")).get("working_directory")
        except (OSError, ValueError, AttributeError):
            trained_in = None
        where = (f"the directory `sentiment train` ran from, {trained_in}" if isinstance(trained_in, str)
                 else "the directory `sentiment train` ran from")
        if isinstance(trained_in, str) and (Path(trained_in) / value).exists() and Path(trained_in) != Path.cwd():
            hint = f"run this command from {trained_in}"
        else:
            hint = "run this command from that directory"
        raise SentimentError(f"data.{key} {value} not found in {Path.cwd()}: {run_dir} stores it relative to {where}; "
                             f"{hint}")


def load_labels(run_dir: Path) -> LabelSpace:
    """The run's label space. Only IMDB runs were written before labels.json existed: theirs is IMDB's
    negative/positive; any other run without it has lost its class names, and guessing them would be wrong."""
    path = Path(run_dir) / LABELS_FILE
    if not path.exists():
        data = read_yaml(Path(run_dir) / CONFIG_FILE).get("data") if (Path(run_dir) / CONFIG_FILE).is_file() else None
        dataset = data.get("dataset", "imdb") if isinstance(data, dict) else "imdb"
        if dataset != "imdb":
            raise SentimentError(f"{path} not found: the run's class names are lost (a run directory needs "
                                 f"{CONFIG_FILE}, {VOCAB_FILE}, {LABELS_FILE} and its checkpoint)")
        return LabelSpace(IMDB_LABELS)
    return LabelSpace.load(path)


def check_membership(run_dir: Path, membership: dict[str, np.ndarray], splits: tuple[str, ...] = ("train", "valid", "test")) -> None:
    """Refuse data whose splits are not the ones the run was trained with (runs without splits.npz: no check)."""
    if not (Path(run_dir) / SPLITS_FILE).is_file():
        return
    saved = load_split_membership(run_dir)
    for name in splits:
        if name in saved and name in membership and not np.array_equal(saved[name], membership[name]):
            raise SentimentError(f"the {name} split of {run_dir}'s data is not the one it was trained with (the data "
                                 "changed since, or its split settings did): its figures would not be comparable")


def load_split_membership(run_dir: Path) -> dict[str, np.ndarray]:
    """Rows of each split, numbered as in the source they came from (data rows from 0)."""
    path = Path(run_dir) / SPLITS_FILE
    if not path.is_file():
        raise SentimentError(f"{run_dir} has no {SPLITS_FILE} (written by runs since label spaces exist)")
    with np.load(path) as z:
        return {name: z[name] for name in z.files}


def is_pretraining_run(run_dir: Path) -> bool:
    """Whether run_dir was written by `sentiment pretrain` (a language model, not a classifier)."""
    return (Path(run_dir) / PRETRAIN_TEXTS).is_file()


def load_run(run_dir: Path, *, pretraining: bool | None = False) -> tuple[Config, Vocab]:
    """The run's config and vocabulary. pretraining: False for a classifier run (what predict, eval, export, serve
    and `train --resume` read: a pretraining run is refused, saying what it is for), True for a pretraining run
    only (`pretrain --resume`), None for either (model.init_from)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SentimentError(f"run directory {run_dir} not found")
    missing = [name for name in (CONFIG_FILE, VOCAB_FILE) if not (run_dir / name).is_file()]
    if len(missing) == 2:
        raise SentimentError(f"{run_dir} is not a run directory (no {CONFIG_FILE} and {VOCAB_FILE})")
    if missing:
        raise SentimentError(f"{run_dir / missing[0]} not found: the run directory is incomplete")
    if pretraining is not None and is_pretraining_run(run_dir) != pretraining:
        if pretraining:
            raise SentimentError(f"{run_dir} is a classifier run, not a pretraining (language model) run: continue it "
                                 f"with `sentiment train --resume {run_dir}`")
        raise SentimentError(f"{run_dir} is a pretraining (language model) run, not a classifier: it predicts no "
                             f"labels. Fine-tune a classifier from it with `sentiment train --set "
                             f"model.init_from={run_dir}` (`sentiment pretrain --resume {run_dir}` continues it)")
    run_format_version(run_dir)  # a run from a newer sentiment: refused, not misread
    check_text_pipeline(run_text_pipeline(run_dir), f"run {run_dir}")  # so is one whose tokens it cannot make
    raw = read_yaml(run_dir / CONFIG_FILE)  # one-line errors, safe_load: no Python tags
    if isinstance(raw.get("data"), dict):
        raw["data"].setdefault("valid_split", "random")  # runs written before the movie split carved at random
    if isinstance(raw.get("model"), dict):
        # runs written before the two-part default: no branch unless they named one, and their parts summed
        raw["model"].setdefault("ngrams", None)
        raw["model"].setdefault("combine", "sum")
    ngrams = raw.get("model", {}).get("ngrams") if isinstance(raw.get("model"), dict) else None
    if isinstance(ngrams, dict):
        ngrams.setdefault("sparse", False)  # runs written before model.ngrams.sparse: resumed with the dense update
    cfg = config_from_dict(raw)
    return cfg, Vocab.load(run_dir / VOCAB_FILE)


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    """One JSON line per epoch. Rewritten whole (it is small), so a kill mid-write never leaves half a line."""
    path = Path(run_dir) / METRICS_FILE
    rows = read_metrics(run_dir)
    rows = [r for r in rows if r.get("epoch") != row.get("epoch")] + [row]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a torn line from an older writer; the epochs before it are intact
    return rows


def truncate_metrics(run_dir: Path, epochs_done: int) -> None:
    """On resume, drop rows of epochs after the checkpoint (they will be trained again)."""
    rows = [r for r in read_metrics(run_dir) if r.get("epoch", 0) <= epochs_done]
    atomic_write_text(Path(run_dir) / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in rows))


# ---------------------------------------------------------------- data fingerprints
DATA_FINGERPRINT_FILE = "data_fingerprint.json"


def write_data_fingerprints(run_dir: Path, fingerprints: dict[str, dict]) -> None:
    """Store each split's content digest (sentiment.data.fingerprint.data_fingerprints) in the run."""
    if fingerprints:
        atomic_write_text(Path(run_dir) / DATA_FINGERPRINT_FILE,
                          json.dumps({"format": 1, "splits": fingerprints}, indent=2) + "\n")


def check_data_fingerprints(run_dir: Path, fingerprints: dict[str, dict], splits: tuple[str, ...] = ("train", "valid", "test"),
                            *, allow_changed: bool = False) -> None:
    """Refuse data whose splits hold other texts or labels than the run was trained with (a label flipped,
    a review rewritten), naming the file; runs written before fingerprints existed are not checked.
    allow_changed: accept it (`eval --allow-changed-data`)."""
    path = Path(run_dir) / DATA_FINGERPRINT_FILE
    if allow_changed or not path.is_file():
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SentimentError(f"{path} is not a data fingerprint file ({e})") from None
    for name in splits:
        old, new = saved.get(name), fingerprints.get(name)
        if old is None or new is None or old.get("sha256") == new.get("sha256"):
            continue
        rows = (f" ({old.get('rows', '?'):,} rows then, {new['rows']:,} now)" if old.get("rows") != new.get("rows")
                else "")
        trained = run_text_pipeline(run_dir).get("tokenizer_version", 1)
        if trained != TOKENIZER_VERSION and not rows:  # the same texts may read as other tokens now
            rows = (f" (or its texts hold whitespace-free runs of over {MAX_CHUNK} characters, which tokenizer "
                    f"version {TOKENIZER_VERSION} cuts and the run's version {trained} did not)")
        raise SentimentError(f"the {name} split's texts or labels in {new.get('source') or old.get('source')} are not "
                             f"the ones {run_dir} was trained with{rows}: the data changed since; its figures would "
                             "not be comparable (eval --allow-changed-data evaluates anyway)")
