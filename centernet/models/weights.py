"""Loading weights from local files into CenterNet models (``torch.load(weights_only=True)``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class LoadReport:
    """What a weight load matched, and what it could not."""

    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    shape_mismatched: tuple[str, ...]

    def summary(self) -> str:
        return (f"loaded {len(self.loaded)} tensors; missing {len(self.missing)}, unexpected "
                f"{len(self.unexpected)}, shape-mismatched {len(self.shape_mismatched)}")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file (a bare state dict or ``{"state_dict": ...}``), ``module.`` stripped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict or a dict with 'state_dict'")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> LoadReport:
    """Load every tensor whose name and shape match; report the rest (never raises on mismatch)."""
    own = model.state_dict()
    ok = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    mismatched = tuple(sorted(k for k in state if k in own and own[k].shape != state[k].shape))
    model.load_state_dict(ok, strict=False)
    return LoadReport(
        loaded=tuple(sorted(ok)),
        missing=tuple(sorted(k for k in own if k not in state)),
        unexpected=tuple(sorted(k for k in state if k not in own)),
        shape_mismatched=mismatched,
    )
