"""The options of a search (``centernet tune``): one declaration for flags, YAML keys, defaults and
checks. The training options of each trial are :class:`workflows.train_config.TrainConfig`'s, less
``name`` and ``num_workers`` (the search's ``name`` and ``workers_per_trial`` say those).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from centernet.config_fields import from_mapping, setting
from workflows.train_config import _at_least

SEARCHERS = ("optuna", "random")
SCHEDULERS = ("asha", "fifo")
# TrainConfig fields that a search sets itself (the trial's name, its worker count).
TRAIN_FIELDS_SET_BY_TUNE = ("name", "num_workers")


@dataclass(frozen=True)
class TuneConfig:
    """What a search is: how many trials, how they are chosen and stopped; validated on construction
    (``ValueError`` naming the field)."""

    name: str | None = setting(None, help="Search name: its state is kept in <storage-path>/<name>; running "
                                          "the same name again continues it.",
                               default_text="tune-<arch>-<date>-<time>")
    trials: int = setting(8, help="Trials (Ray Train runs) in the search.")
    max_concurrent: int | None = setting(None, help="Trials running at once.",
                                         default_text="as many as the cluster's CPUs (GPUs with --gpu) hold")
    workers_per_trial: int = setting(1, help="DDP workers of each trial (Ray Train actors).")
    search: str = setting("optuna", help="How trial settings are chosen: Optuna's TPE or random sampling.",
                          choices=SEARCHERS)
    scheduler: str = setting("asha", help="ASHA stops trials whose val AP falls behind at each rung; FIFO runs "
                                          "every trial to the end.", choices=SCHEDULERS)
    grace_period: int = setting(1, help="ASHA: epochs every trial runs before it may be stopped.")
    reduction_factor: int = setting(2, help="ASHA: 1/reduction-factor of the trials reaching a rung go on.")
    max_epochs: int | None = setting(None, help="ASHA: epochs after which any trial ends (its max_t).",
                                     default_text="--epochs")
    space: str | None = setting(None, help="YAML file of the search space (loss weights hm, wh, reg and lr: a "
                                           "number, {uniform: [lo, hi]}, {loguniform: [lo, hi]} or "
                                           "{choice: [...]}).", path=True, metavar="FILE.yaml",
                                default_text="hm=1, wh loguniform(0.01, 1), reg loguniform(0.1, 10)")
    search_seed: int = setting(0, help="Seed of the searcher.")
    register: str | None = setting(None, help="Register the best trial's model as MODEL_NAME in the MLflow "
                                              "model registry (@champion moves when it is better).",
                                   metavar="MODEL_NAME")

    def __post_init__(self) -> None:
        for name in ("trials", "workers_per_trial", "grace_period"):
            _at_least(name, getattr(self, name), 1)
        _at_least("reduction_factor", self.reduction_factor, 2)
        for name in ("max_concurrent", "max_epochs"):
            if getattr(self, name) is not None:
                _at_least(name, getattr(self, name), 1)
        for name, allowed in (("search", SEARCHERS), ("scheduler", SCHEDULERS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.name is not None and (not self.name or "/" in self.name):
            raise ValueError(f"name: must be a non-empty string without '/', got {self.name!r}")
        if self.register is not None and not self.register.strip():
            raise ValueError("register: a model name is required, got an empty string")

    def asha_max_epochs(self, epochs: int) -> int:
        """ASHA's max_t for trials of ``epochs`` epochs; ``ValueError`` when the schedule cannot work."""
        max_t = self.max_epochs or epochs
        if max_t > epochs:
            raise ValueError(f"max_epochs: {max_t} is more than the trials' --epochs {epochs}")
        if self.grace_period >= max_t:
            raise ValueError(f"grace_period: {self.grace_period} epochs leaves ASHA nothing to stop in "
                             f"{max_t} epochs (use fewer, or more --epochs)")
        return max_t

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "search config") -> TuneConfig:
        return from_mapping(cls, data, source=source)

    def replace(self, **changes: Any) -> TuneConfig:
        return dataclasses.replace(self, **changes)


def split_values(values: Mapping[str, Any], *, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A flat mapping of options (a ``--config`` file) -> (training values, search values); a key of
    neither, or one the search sets itself, is a ``ValueError`` naming it."""
    from workflows.train_config import TrainConfig

    tune_keys = {f.name for f in dataclasses.fields(TuneConfig)}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)} - set(TRAIN_FIELDS_SET_BY_TUNE)
    for key in values:
        if key == "num_workers":
            raise ValueError(f"{source}: num_workers is set per trial by workers_per_trial in a search")
        if key not in tune_keys | train_keys:
            raise ValueError(f"{source}: unknown key {key!r}; valid keys: {', '.join(sorted(tune_keys | train_keys))}")
    return ({k: v for k, v in values.items() if k in train_keys},
            {k: v for k, v in values.items() if k in tune_keys})
