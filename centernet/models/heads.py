"""The three CenterNet heads: 3x3 conv -> ReLU -> 1x1 conv for "hm", "wh" and "reg"."""

from __future__ import annotations

import torch
from torch import nn

HEATMAP_PRIOR_BIAS = -2.19  # sigmoid(-2.19) ~= 0.1, the official focal-loss prior


def head_channels(num_classes: int) -> dict[str, int]:
    """Output channels of each head of the ctdet task."""
    return {"hm": num_classes, "wh": 2, "reg": 2}


def make_head(in_channels: int, out_channels: int, head_conv: int, *, is_heatmap: bool) -> nn.Module:
    """One head as the official code builds it (``head_conv <= 0``: a single 1x1 conv), with the
    official ResNet init (:func:`init_head`)."""
    if head_conv > 0:
        head = nn.Sequential(
            nn.Conv2d(in_channels, head_conv, kernel_size=3, padding=1, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(head_conv, out_channels, kernel_size=1, stride=1, padding=0, bias=True),
        )
    else:
        head = nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=True))
    init_head(head, is_heatmap=is_heatmap)
    return head


@torch.no_grad()
def init_head(head: nn.Module, *, is_heatmap: bool) -> None:
    """The official ResNet head init (``resnet_dcn.fill_fc_weights``, the layout our ResNets follow).

    Heatmap: last bias -2.19, weights at PyTorch's default. Regression heads (``wh``, ``reg``): every
    conv's weights N(0, 0.001), biases 0. (``msra_resnet`` does the same for the last conv only; DLA
    and Hourglass use their own official inits: ``dla._official_dla_head_init`` zeroes the biases and
    keeps default weights, Hourglass keeps default regression heads.)
    """
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    if is_heatmap:
        convs[-1].bias.fill_(HEATMAP_PRIOR_BIAS)
        return
    for conv in convs:
        nn.init.normal_(conv.weight, std=0.001)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)


def add_heads(module: nn.Module, in_channels: int, num_classes: int, head_conv: int) -> None:
    """Attach ``hm``, ``wh``, ``reg`` heads to ``module`` as attributes (the official key names)."""
    for name, channels in head_channels(num_classes).items():
        setattr(module, name, make_head(in_channels, channels, head_conv, is_heatmap=name == "hm"))


def run_heads(module: nn.Module, features: torch.Tensor) -> dict[str, torch.Tensor]:
    """features ``[B, F, H/4, W/4]`` -> {"hm": [B, C, ...] logits, "wh": [B, 2, ...], "reg": [B, 2, ...]}."""
    return {name: getattr(module, name)(features) for name in ("hm", "wh", "reg")}
