"""CenterNet models: ``build_model(arch, num_classes)`` over a registry of architectures."""

from __future__ import annotations

from torch import nn

from centernet.models.registry import available_architectures, get_spec, register_model
from centernet.models.weights import LoadReport, load_checkpoint, load_matching, read_state_dict

__all__ = ["build_model", "available_architectures", "register_model", "load_checkpoint", "LoadReport"]


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
        pretrained: path of a local weights file for the backbone; matching tensors are loaded.

    Returns:
        a module whose ``forward(x [B,3,H,W])`` gives {"hm": [B,C,H/4,W/4] logits, "wh", "reg"}
        (for multi-stack models, a list of such dicts, the last one the prediction).
    """
    spec = get_spec(arch)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    hc = spec.default_head_conv if head_conv is None else int(head_conv)
    model = spec.factory(num_classes, head_conv=hc)
    if pretrained is not None:
        report = load_matching(model, read_state_dict(pretrained))
        if not report.loaded:
            raise ValueError(f"{pretrained}: no tensor matched {arch!r} by name and shape")
    return model
