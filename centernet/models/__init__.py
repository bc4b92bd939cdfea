"""CenterNet models: ``build_model(arch, num_classes)`` over a registry of architectures."""

from __future__ import annotations

from torch import nn

from centernet.models.pretrained import (
    PretrainedWeights,
    PretrainedWeightsError,
    default_pretrained,
    load_pretrained,
)
from centernet.models.registry import available_architectures, get_spec, register_model
from centernet.models.weights import LoadReport, load_checkpoint

__all__ = ["build_model", "available_architectures", "register_model", "load_checkpoint", "LoadReport",
           "load_pretrained", "default_pretrained", "PretrainedWeights", "PretrainedWeightsError"]


def build_model(
    arch: str,
    num_classes: int,
    *,
    head_conv: int | None = None,
    pretrained: str | None = None,
) -> nn.Module:
    """Build a CenterNet detector.

    Args:
        arch: a registered architecture (see :func:`available_architectures`).
        num_classes: C, channels of the heatmap head.
        head_conv: channels of the heads' 3x3 conv; ``None`` takes the architecture's official value.
        pretrained: ``None``/``"none"`` (random init), ``"imagenet"`` (the official ImageNet
            backbone, downloaded once and hash-checked) or the path of a local weights file; the
            tensors matching by name and shape are loaded (:func:`load_pretrained`, which also
            returns what was loaded, for the run's records).

    Returns:
        a module whose ``forward(x [B,3,H,W])`` gives a list of dicts, one per stack (one for
        ResNet/DLA, two for Hourglass; the last is the prediction), each
        ``{"hm": [B,C,H/4,W/4] logits, "wh": [B,2,H/4,W/4], "reg": [B,2,H/4,W/4]}``.
    """
    spec = get_spec(arch)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    hc = spec.default_head_conv if head_conv is None else int(head_conv)
    model = spec.factory(num_classes, head_conv=hc)
    if pretrained is not None:
        load_pretrained(model, arch, pretrained)
    return model
