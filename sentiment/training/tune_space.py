"""The search space of `sentiment tune`: a YAML file mapping dotted config keys to a range or a list of choices.

    train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}   # a float key: a float range (log: sampled on a log scale)
    model.hidden_size: {low: 64, high: 256, step: 64}  # an integer key: an integer range (step: its grid)
    model.rnn: [gru, lstm]                             # any key: one of these values

It is checked as `--set` is, against the config the trials start from: an unknown key, a range that cannot be
sampled (low >= high, log with low <= 0) or a value the config refuses is one error naming the file and the key,
before any trial starts. Each trial's values reach `sentiment train` as --set KEY=VALUE texts.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any, Literal

import yaml

from sentiment.config import apply_overrides, config_from_dict, eval_key, read_yaml
from sentiment.errors import SentimentError

RANGE_FIELDS = ("low", "high", "log", "step")
Scalar = None | bool | int | float | str


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One key of the space: a float or integer range, or categorical choices."""

    key: str
    kind: Literal["float", "int", "categorical"]
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Scalar, ...] = ()

    def suggest(self, trial: Any) -> Scalar:
        """This key's value for an Optuna trial."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.key, list(self.choices))

    def to_dict(self) -> dict[str, Any]:
        """As stored with the study (a study continued with another space is refused)."""
        if self.kind == "categorical":
            return {"key": self.key, "choices": list(self.choices)}
        return {"key": self.key, "kind": self.kind, "low": self.low, "high": self.high, "log": self.log,
                "step": self.step}


def scalar_text(value: Scalar) -> str:
    """A value as `--set KEY=TEXT` reads it back (YAML): 1e-05 as 1.0e-05 (YAML 1.1 reads `1e-05` as a string),
    a string that looks like another type quoted."""
    return yaml.safe_dump([value], default_flow_style=True, width=math.inf).strip()[1:-1]


def override_texts(params: dict[str, Scalar]) -> list[str]:
    """A trial's values as --set texts."""
    return [f"{key}={scalar_text(value)}" for key, value in params.items()]


def read_space(path: Path, base: dict[str, Any], overrides: list[str]) -> list[Dimension]:
    """The space file at path, checked against the config mapping `base` with the --set `overrides` applied."""
    try:
        raw = read_yaml(path)
    except SentimentError as e:
        raise SentimentError(str(e).replace("config file", "space file", 1)) from None
    if not raw:
        raise SentimentError(f"space file {path} names no key: map config keys to ranges or lists, e.g. "
                             "`train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}`")
    named = {text.split("=", 1)[0].strip() for text in overrides}
    space = []
    for key, spec in raw.items():
        where = f"space file {path}, key {key}"
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise SentimentError(f"space file {path}: {key!r} is not a dotted config key such as train.lr")
        if key in named:
            raise SentimentError(f"{where}: also given by --set; tune it or set it, not both")
        try:
            space.append(_dimension(key, spec, base, overrides, where))
        except SentimentError as e:
            message = str(e)
            raise SentimentError(message if message.startswith("space file") else f"{where}: {message}") from None
    return space


def _dimension(key: str, spec: Any, base: dict[str, Any], overrides: list[str], where: str) -> Dimension:
    if isinstance(spec, list):
        return _categorical(key, spec, base, overrides)
    if not isinstance(spec, dict):
        raise SentimentError(f"expected a range {{low: .., high: ..}} or a list of choices, got {spec!r} (a nested "
                             "mapping? name keys dotted, e.g. `train.lr:`)")
    unknown = [name for name in spec if name not in RANGE_FIELDS]
    if unknown:
        raise SentimentError(f"unknown range field {unknown[0]!r} (a range has {', '.join(RANGE_FIELDS)}; a nested "
                             "mapping? name keys dotted, e.g. `train.lr:`)")
    if "low" not in spec or "high" not in spec:
        raise SentimentError("a range needs both low and high")
    kind = _range_kind(key, spec["low"], base, overrides)
    low, high = (_number(spec[name], kind, name) for name in ("low", "high"))
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise SentimentError(f"log must be true or false, got {log!r}")
    if not low < high:
        raise SentimentError(f"impossible range: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise SentimentError(f"impossible range: log needs low > 0, got {low}")
    if step is not None:
        step = _number(step, kind, "step")
        if step <= 0:
            raise SentimentError(f"step must be > 0, got {step}")
        if log:
            raise SentimentError("step and log cannot go together (Optuna samples a log range continuously)")
    for value in (low, high):
        _check_value(key, value, base, overrides)
    return Dimension(key, kind, low=low, high=high, log=log, step=step)


def _categorical(key: str, choices: list, base: dict[str, Any], overrides: list[str]) -> Dimension:
    if not choices:
        raise SentimentError("an empty list of choices")
    for value in choices:
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise SentimentError(f"a choice must be a single value (a number, a string, true/false or null), got "
                                 f"{value!r}")
        _check_value(key, value, base, overrides)
    if len({scalar_text(v) for v in choices}) != len(choices):
        raise SentimentError(f"a choice is listed twice in {choices!r}")
    return Dimension(key, "categorical", choices=tuple(choices))


def _range_kind(key: str, low: Any, base: dict[str, Any], overrides: list[str]) -> Literal["float", "int"]:
    """float or int, as the config types the key (a range of a string or true/false key is refused)."""
    try:  # the key's value in the config the trials start from
        current = eval_key(config_from_dict(apply_overrides(copy.deepcopy(base), overrides)), key)
    except AttributeError:  # an unknown key, or a key of a section that is off: the config's error, or its value
        current = None
    if current is None:  # an unknown key (the config's error names it) or a null one: typed as low is
        current = eval_key(_resolve(key, low, base, overrides), key)
    if dataclasses.is_dataclass(current):
        raise SentimentError("names a section, not a key: name one of its keys")
    if isinstance(current, bool) or not isinstance(current, (int, float)):
        raise SentimentError(f"a range needs a numeric key, and this one takes {current!r}: give a list of choices")
    return "int" if isinstance(current, int) else "float"


def _number(value: Any, kind: str, name: str) -> float | int:
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SentimentError(f"{name} must be a finite number, got {value!r}")
    if kind == "int":
        if value != int(value):
            raise SentimentError(f"the key takes integers, so {name} must be one, got {value!r}")
        return int(value)
    return float(value)


def _check_value(key: str, value: Any, base: dict[str, Any], overrides: list[str]) -> None:
    _resolve(key, value, base, overrides)


def _resolve(key: str, value: Any, base: dict[str, Any], overrides: list[str]) -> Any:
    """The config with this key set to value (as --set would set it): the config's own one-line errors for an
    unknown key, a wrong type or an impossible value."""
    cfg = config_from_dict(apply_overrides(copy.deepcopy(base), [*overrides, f"{key}={scalar_text(value)}"]))
    if dataclasses.is_dataclass(eval_key(cfg, key)):
        raise SentimentError("names a section, not a key: name one of its keys")
    return cfg
