"""The search space of ``centernet tune``: which loss weights (and the learning rate) each trial
gets, declared in one place and checked where it enters.

By default the three loss weights: ``hm`` fixed at 1, ``wh`` log-uniform in [0.01, 1], ``reg``
log-uniform in [0.1, 10]; the learning rate is not searched. A YAML file (``--space``) changes any
entry, the others keep their defaults::

    wh: {loguniform: [0.01, 1]}     # log-uniform between two bounds
    reg: {uniform: [0.5, 2]}        # uniform between two bounds
    hm: 1                           # a fixed value
    lr: {choice: [1e-3, 2e-3]}      # one of a list

Keys are the loss names (``centernet.losses.LOSS_NAMES``) and ``lr``. Bounds and values must be
finite and non-negative (log-uniform bounds and learning rates > 0, learning rates < 1), low below
high; a choice needs at least one value. A bad entry is a ``ValueError`` naming the file and key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from centernet.losses import LOSS_NAMES

LR_KEY = "lr"
SPACE_KEYS = (*LOSS_NAMES, LR_KEY)
KINDS = ("fixed", "uniform", "loguniform", "choice")


@dataclass(frozen=True)
class Dimension:
    """One entry of the space: ``kind`` and its ``values`` (fixed: one value; uniform/loguniform:
    low, high; choice: the options)."""

    kind: str
    values: tuple[float, ...]

    @property
    def searched(self) -> bool:
        """Whether trials differ in it (a choice of one value is as fixed as a fixed value)."""
        return self.kind != "fixed" and len(set(self.values)) > 1

    def describe(self) -> str:
        """``"loguniform(0.01, 1)"``, ``"choice(0.001, 0.002)"``, ``"1"``."""
        text = ", ".join(f"{v:g}" for v in self.values)
        return text if self.kind == "fixed" else f"{self.kind}({text})"

    def to_tune(self) -> Any:
        """The Ray Tune domain (or the plain value) of this entry."""
        from ray import tune

        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "uniform":
            return tune.uniform(*self.values)
        if self.kind == "loguniform":
            return tune.loguniform(*self.values)
        return tune.choice(list(self.values))


@dataclass(frozen=True)
class SearchSpace:
    """Every key of :data:`SPACE_KEYS` that the search sets, in that order."""

    dims: dict[str, Dimension]

    def searched(self) -> list[str]:
        """The keys whose values differ between trials."""
        return [k for k, d in self.dims.items() if d.searched]

    def to_tune(self) -> dict[str, Any]:
        """The ``param_space`` of the Tuner."""
        return {k: d.to_tune() for k, d in self.dims.items()}

    def to_params(self) -> dict[str, str]:
        """MLflow params of the parent run: ``space.<key>`` -> its description."""
        return {f"space.{k}": d.describe() for k, d in self.dims.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON/YAML) that :func:`parse_space` reads back."""
        return {k: d.values[0] if d.kind == "fixed" else {d.kind: list(d.values)} for k, d in self.dims.items()}


DEFAULT_SPACE = SearchSpace({
    "hm": Dimension("fixed", (1.0,)),
    "wh": Dimension("loguniform", (0.01, 1.0)),
    "reg": Dimension("loguniform", (0.1, 10.0)),
})


def parse_space(data: Mapping[str, Any] | None, *, source: str = "search space",
                base: SearchSpace = DEFAULT_SPACE) -> SearchSpace:
    """``base`` with the entries of ``data`` (a mapping as in the module docstring) replacing its own."""
    if data is None:
        return base
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping of {', '.join(SPACE_KEYS)} to values or ranges, "
                         f"got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in SPACE_KEYS)
    if unknown:
        raise ValueError(f"{source}: unknown key {unknown[0]!r}; valid keys: {', '.join(SPACE_KEYS)}")
    dims = dict(base.dims)
    dims.update({str(k): _dimension(f"{source}: {k}", str(k), v) for k, v in data.items()})
    return SearchSpace({k: dims[k] for k in SPACE_KEYS if k in dims})


def load_space(path: str | Path) -> SearchSpace:
    """The default space with the entries of the YAML file ``path`` (``yaml.safe_load``)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: search space file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the search space file ({exc})") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    return parse_space({} if data is None else data, source=str(path))


def trial_settings(config: Mapping[str, Any]) -> tuple[dict[str, float], float | None]:
    """A trial's Tune config -> (its loss weights, its learning rate or ``None``)."""
    weights = {k: float(config[k]) for k in LOSS_NAMES if k in config}
    lr = float(config[LR_KEY]) if config.get(LR_KEY) is not None else None
    return weights, lr


def _dimension(name: str, key: str, value: Any) -> Dimension:
    if isinstance(value, Mapping):
        if len(value) != 1:
            raise ValueError(f"{name}: expected one of {{uniform: [low, high]}}, {{loguniform: [low, high]}}, "
                             f"{{choice: [v1, v2, ...]}} or a number, got {dict(value)!r}")
        kind, raw = next(iter(value.items()))
        if kind not in KINDS[1:]:
            raise ValueError(f"{name}: unknown kind {kind!r}; valid: {', '.join(KINDS[1:])} (or a plain number)")
        if not isinstance(raw, (list, tuple)):
            raise ValueError(f"{name}: {kind} needs a list, got {raw!r}")
        values = tuple(_number(f"{name}.{kind}", v) for v in raw)
    else:
        kind, values = "fixed", (_number(name, value),)
    for v in values:
        _check_value(name, key, kind, v)
    if kind in ("uniform", "loguniform"):
        if len(values) != 2:
            raise ValueError(f"{name}: {kind} needs [low, high], got {list(values)}")
        if not values[0] < values[1]:
            raise ValueError(f"{name}: low must be below high, got low {values[0]:g} >= high {values[1]:g}")
    if kind == "choice" and not values:
        raise ValueError(f"{name}: choice needs at least one value")
    return Dimension(kind, values)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return number


def _check_value(name: str, key: str, kind: str, value: float) -> None:
    if value < 0:
        raise ValueError(f"{name}: must not be negative, got {value:g}")
    if key == LR_KEY and not 0 < value < 1:
        raise ValueError(f"{name}: a learning rate must be in (0, 1), got {value:g}")
    if kind == "loguniform" and value <= 0:
        raise ValueError(f"{name}: loguniform bounds must be > 0, got {value:g}")
