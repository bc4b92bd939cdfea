"""Loading weights from local files into CenterNet models (``torch.load(weights_only=True)``).

Two entry points:

* :func:`load_matching` (used by ``pretrained.load_pretrained``, i.e. ``build_model(pretrained=...)``):
  backbone / ImageNet weights; loads every tensor whose name and shape match, trying the key
  prefixes under which a backbone sits in a detector (e.g. the official DLA ImageNet file has
  ``level0.*``, the detector ``base.level0.*``).
* :func:`load_checkpoint`: a full CenterNet checkpoint (official ``{"epoch", "state_dict"}``,
  keys possibly prefixed ``module.``), strict by default, with the heads that depend on the number
  of classes left at their fresh initialisation when the class counts differ (fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# Heads whose output channels are the number of classes (the rest are class-agnostic).
CLASS_HEADS: tuple[str, ...] = ("hm",)
_BENIGN_MISSING_SUFFIX = "num_batches_tracked"  # absent from pre-0.4.1 checkpoints; BN copes


@dataclass(frozen=True)
class LoadReport:
    """What a weight load matched, and what it could not (names are the model's own)."""

    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    shape_mismatched: tuple[str, ...]
    reinitialized: tuple[str, ...] = ()  # class-dependent head tensors deliberately not loaded
    prefix: str = ""  # prefix added to the file's keys to match the model ("" = none)

    def summary(self) -> str:
        text = (f"loaded {len(self.loaded)} tensors; missing {len(self.missing)}, unexpected "
                f"{len(self.unexpected)}, shape-mismatched {len(self.shape_mismatched)}")
        if self.reinitialized:
            text += f", re-initialised {len(self.reinitialized)}"
        if self.prefix:
            text += f" (file keys prefixed with {self.prefix!r})"
        return text

    def details(self, limit: int = 10) -> str:
        """Multi-line listing of the problem keys (at most ``limit`` per kind)."""
        lines = [self.summary()]
        for kind in ("missing", "unexpected", "shape_mismatched", "reinitialized"):
            keys = getattr(self, kind)
            if keys:
                more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
                lines.append(f"  {kind}: {', '.join(keys[:limit])}{more}")
        return "\n".join(lines)


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


def _candidate_prefixes(model: nn.Module) -> list[str]:
    return [""] + [f"{name}." for name, _ in model.named_children()]


def _count_matches(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], prefix: str) -> int:
    return sum(1 for k, v in state.items() if prefix + k in own and own[prefix + k].shape == v.shape)


def load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> LoadReport:
    """Load every tensor whose name and shape match; report the rest (never raises on mismatch).

    The file's keys are used as they are or under the prefix of one of the model's top-level
    modules (``base.`` for DLA ImageNet weights), whichever matches most tensors.
    """
    own = model.state_dict()
    prefix = max(_candidate_prefixes(model), key=lambda p: _count_matches(own, state, p))
    state = {prefix + k: v for k, v in state.items()}
    ok = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    mismatched = tuple(sorted(k for k in state if k in own and own[k].shape != state[k].shape))
    model.load_state_dict(ok, strict=False)
    return LoadReport(
        loaded=tuple(sorted(ok)),
        missing=tuple(sorted(k for k in own if k not in state)),
        unexpected=tuple(sorted(k for k in state if k not in own)),
        shape_mismatched=mismatched,
        prefix=prefix,
    )


def _head_of(key: str) -> str:
    return key.split(".", 1)[0]


def load_checkpoint(
    model: nn.Module,
    path: str | Path,
    *,
    reinit_heads_if_classes_differ: bool = True,
    strict: bool = True,
) -> LoadReport:
    """Load a full CenterNet checkpoint (official or ours) into ``model``.

    Args:
        model: the detector, built with the number of classes wanted now (DDP/DataParallel
            wrappers are unwrapped).
        path: ``{"epoch", "state_dict"}`` or a bare state dict; a leading ``module.`` is stripped.
        reinit_heads_if_classes_differ: when a class-dependent head (``hm``) has other shapes in
            the file (another number of classes), load none of that head's tensors, so it keeps
            the model's own values (for a freshly built model, the official initialisation with
            heatmap bias -2.19), and load everything else: backbone, neck and the class-agnostic
            ``wh``/``reg`` heads. When False, such a checkpoint is a shape mismatch.
        strict: raise ``ValueError`` (listing the keys) when any tensor is missing, unexpected or
            shape-mismatched, beyond the heads re-initialised above. Nothing is loaded then.

    Returns:
        the :class:`LoadReport`; ``report.reinitialized`` lists the tensors left at their fresh init.
    """
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    state = read_state_dict(path)
    own = model.state_dict()
    reinit_heads: set[str] = set()
    if reinit_heads_if_classes_differ:
        reinit_heads = {_head_of(k) for k, v in state.items()
                        if _head_of(k) in CLASS_HEADS and k in own and own[k].shape != v.shape}
    reinitialized = tuple(sorted(k for k in own if _head_of(k) in reinit_heads))
    usable = {k: v for k, v in state.items() if _head_of(k) not in reinit_heads}
    loaded = {k: v for k, v in usable.items() if k in own and own[k].shape == v.shape}
    report = LoadReport(
        loaded=tuple(sorted(loaded)),
        missing=tuple(sorted(k for k in own if k not in state)),
        unexpected=tuple(sorted(k for k in state if k not in own)),
        shape_mismatched=tuple(sorted(k for k, v in usable.items() if k in own and own[k].shape != v.shape)),
        reinitialized=reinitialized,
    )
    problems = ([k for k in report.missing if not k.endswith(_BENIGN_MISSING_SUFFIX)]
                + list(report.unexpected) + list(report.shape_mismatched))
    if strict and problems:
        raise ValueError(f"{path}: checkpoint does not fit {type(model).__name__} "
                         f"(pass strict=False to load what matches)\n{report.details()}")
    model.load_state_dict(loaded, strict=False)
    return report
