"""The label space: which classes a run predicts, and the one place that turns logits into losses,
predictions and probabilities.

Two classes keep the classic recipe exactly: one logit, BCEWithLogitsLoss, positive when the logit is
at least 0 (the positive class is names[1]). More than two: K logits and cross-entropy. Nobody else
compares a logit with 0.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

from sentiment.errors import SentimentError

# The usual spellings of a two-class pair, by normalised value: index 1 is the positive class. A run accepts them
# only when its own two names are one negative and one positive spelling, in that order (see LabelSpace.index).
BINARY_SPELLINGS = {"1": 1, "0": 0, "pos": 1, "neg": 0, "positive": 1, "negative": 0, "true": 1, "false": 0}
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def normalize_label(value: str) -> str:
    """The one rule that says when two label values are the same class, for every reader and command:
    surrounding white space is dropped, case is folded to lower case, and a number that is an integer is
    written as one (" 1.0" -> "1", "+2" -> "2", "1e1" -> "10"), as JSON and Parquet numbers already read.
    New runs store their label names normalised; runs trained before keep their names as stored."""
    v = value.strip()
    if _NUMBER.fullmatch(v):
        number = float(v)
        if number.is_integer() and abs(number) < 2**53:
            return str(int(number))
    return v.lower()


def merged_labels(values: Iterable[str]) -> dict[str, list[str]]:
    """Normalised label -> the distinct spellings that became it, where there was more than one spelling or
    the spelling changed (for `prepare` and `train` to report what was merged)."""
    groups: dict[str, list[str]] = {}
    for v in values:
        groups.setdefault(normalize_label(v), []).append(v)
    return {k: sorted(vs) for k, vs in groups.items() if len(vs) > 1 or vs[0].strip() != k}


IMDB_LABELS = ("negative", "positive")  # IMDB runs, and runs written before label spaces existed

# How pandas (read_csv's default na_values, to_csv of a missing value) and friends spell a missing cell, case
# folded: such a label is no label. As a class, one `NaN` turns a two-class task into three.
MISSING_SPELLINGS = frozenset({"", "nan", "-nan", "na", "n/a", "#n/a", "#n/a n/a", "#na", "<na>", "null", "none",
                               "nat", "1.#ind", "-1.#ind", "1.#qnan", "-1.#qnan"})


def is_missing_label(value: str) -> bool:
    """Whether a label value spells a missing value (NaN, NA, N/A, null, None, empty, ...)."""
    return value.strip().lower() in MISSING_SPELLINGS


def missing_label_error(at: str, value: str, column: str | None = None) -> SentimentError:
    """The one message for a row whose label is a missing value (`at`: where the row is)."""
    where = f" in column {column!r}" if column else ""
    return SentimentError(f"{at}: label {value!r}{where} is a missing value (as pandas writes an empty cell): give "
                          f"the row its label or drop it, or list {value.strip()!r} in data.labels to make it a class")


@dataclass(frozen=True)
class LabelSpace:
    names: tuple[str, ...]  # class index -> name

    def __post_init__(self) -> None:
        if len(self.names) < 2:
            raise SentimentError(f"a classifier needs at least two classes, got {list(self.names)}")
        if len(set(self.names)) != len(self.names):
            raise SentimentError(f"label names repeat: {list(self.names)}")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def binary(self) -> bool:
        return len(self.names) == 2

    @property
    def num_outputs(self) -> int:
        """Width of the model's output: one logit for two classes, K otherwise."""
        return 1 if self.binary else len(self.names)

    # ------------------------------------------------------------ training
    def loss(self, logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss of a batch; targets are class indices. With class_weights, a weighted mean (as
        cross_entropy's weight= gives it) for both heads."""
        import torch.nn.functional as F  # torch loads where it is used: data preparation never needs it

        logits = logits.float()
        if self.binary:
            if class_weights is None:
                return F.binary_cross_entropy_with_logits(logits, targets.float())
            per_row = F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none")
            w = class_weights[targets]
            return (per_row * w).sum() / w.sum()
        return F.cross_entropy(logits, targets.long(), weight=class_weights)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Class index of each row."""
        return (logits >= 0).long() if self.binary else logits.argmax(dim=-1)  # P = 0.5 is positive, as in predict

    def correct(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """How many rows are predicted right (a tensor: read it when needed, not every step)."""
        return (self.predict(logits) == targets).sum()

    def balanced_weights(self, labels: np.ndarray) -> np.ndarray:
        """n / (K * n_c) per class, as scikit-learn's class_weight='balanced'."""
        counts = np.bincount(labels, minlength=self.num_classes).astype(np.float64)
        if (counts == 0).any():
            missing = [self.names[i] for i in np.flatnonzero(counts == 0)]
            raise SentimentError(f"train.class_weights=balanced: no training rows of {', '.join(missing)}")
        return len(labels) / (self.num_classes * counts)

    # ------------------------------------------------------------ scoring
    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """[N, K] class probabilities in float64 (for two classes: 1 - p and p of the positive class)."""
        z = np.asarray(logits, dtype=np.float64)
        if self.binary:
            p = 1.0 / (1.0 + np.exp(-z))
            return np.stack([1.0 - p, p], axis=1)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def loss_of(self, logits: np.ndarray, labels: np.ndarray) -> float:
        """Mean loss over a whole split, as training computes it per batch."""
        import torch

        return float(self.loss(torch.from_numpy(np.asarray(logits, dtype=np.float32)),
                               torch.from_numpy(np.asarray(labels, dtype=np.int64))))

    def predictions(self, logits: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Class index per row. threshold: P(positive) from which a two-class row is positive."""
        if self.binary:
            if threshold is None:
                return (np.asarray(logits) >= 0).astype(np.int64)
            return (self.probabilities(logits)[:, 1] >= threshold).astype(np.int64)
        return np.asarray(logits).argmax(axis=1)

    # ------------------------------------------------------------ mapping names
    def lookup(self) -> dict[str, int]:
        """Label value -> class index, by the one rule (normalize_label): each name as stored, then each
        name's normalised form (unless two names share it: a run trained with "1" and "1.0" as two classes
        maps each as stored, and nothing else), then, for a two-class run whose names are themselves the
        negative and positive spellings of BINARY_SPELLINGS (0/1, neg/pos, ...), those spellings."""
        table = {name: i for i, name in enumerate(self.names)}
        normalized = [normalize_label(n) for n in self.names]
        for i, key in enumerate(normalized):
            if normalized.count(key) == 1:
                table.setdefault(key, i)
        if self.binary and [BINARY_SPELLINGS.get(k) for k in normalized] == [0, 1]:
            for key, i in BINARY_SPELLINGS.items():
                table.setdefault(key, i)
        return table

    def index(self, values: Iterable[str], where: Sequence[str] | None = None, source: str = "") -> np.ndarray:
        """Class indices of label values, as lookup() maps them (a value is looked up as written, then
        normalised). Unknown values: one error naming them (and where the first one is)."""
        table = self.lookup()
        memo: dict[str, int] = {}
        out, unknown, first = [], {}, None
        for n, value in enumerate(values):
            i = memo.get(value)
            if i is None:
                i = table.get(value)
                if i is None:
                    i = table.get(normalize_label(value), -1)
                memo[value] = i
            if i < 0:
                unknown[value] = unknown.get(value, 0) + 1
                if first is None:
                    first = n
            out.append(i)
        if unknown:
            values = list(unknown)
            at = where[first] if where is not None else source
            if is_missing_label(values[0]):
                raise missing_label_error(at or "labels", values[0])
            others = f" (and {', '.join(map(repr, values[1:4]))}{' …' if len(values) > 4 else ''})" if len(values) > 1 else ""
            at = f"{where[first]}: " if where is not None else (f"{source}: " if source else "")
            spellings = (" (or 1/0, pos/neg, positive/negative, true/false)"
                         if "true" in table and "true" not in self.names else "")
            raise SentimentError(f"{at}unknown label {values[0]!r}{others}; this run knows "
                                 f"{', '.join(map(repr, self.names))}{spellings}")
        return np.asarray(out, dtype=np.int64)

    # ------------------------------------------------------------ storing
    def save(self, path: Path) -> None:
        from sentiment.atomic import atomic_write_text

        atomic_write_text(Path(path), json.dumps({"labels": list(self.names)}, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "LabelSpace":
        """The run's label space; runs written before labels.json existed are IMDB's two classes."""
        path = Path(path)
        if not path.exists():
            return cls(IMDB_LABELS)
        try:
            names = json.loads(path.read_text(encoding="utf-8"))["labels"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SentimentError(f"{path} is not a label file ({e})") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SentimentError(f"{path}: expected a list of label names")
        return cls(tuple(names))


def sort_labels(values: Iterable[str]) -> tuple[str, ...]:
    """Label names in a natural order: numerically when every label is an integer ("2" before "10"),
    else alphabetically, which puts negative before positive for every usual spelling (0/1, neg/pos,
    negative/positive, false/true), so that names[1] is the positive class."""
    distinct = set(values)
    if all(re.fullmatch(r"[+-]?\d+", v.strip()) for v in distinct):
        return tuple(sorted(distinct, key=lambda v: int(v.strip())))
    return tuple(sorted(distinct))
