"""Hourglass-104: two stacked hourglasses with intermediate supervision (official ``large_hourglass``).

Module names follow the official ``exkp``/``HourglassNet`` (``pre``, ``kps``, ``cnvs``, ``inters``,
``inters_``, ``cnvs_`` and per-stack head lists ``hm``/``wh``/``reg``), so official checkpoints
(``ctdet_coco_hg.pth``) load with ``strict=True``. ``forward`` returns a list of head dicts, one
per stack (as every architecture here); the last is the prediction, the earlier ones are supervised
during training.
"""

from __future__ import annotations

import torch
from torch import nn

from centernet.models.heads import HEATMAP_PRIOR_BIAS, head_channels
from centernet.models.registry import register_model


class Convolution(nn.Module):
    """k x k conv (stride ``stride``) -> BN (or nothing, with a conv bias) -> ReLU."""

    def __init__(self, k: int, inp_dim: int, out_dim: int, stride: int = 1, with_bn: bool = True):
        super().__init__()
        pad = (k - 1) // 2
        self.conv = nn.Conv2d(inp_dim, out_dim, (k, k), padding=(pad, pad), stride=(stride, stride),
                              bias=not with_bn)
        self.bn = nn.BatchNorm2d(out_dim) if with_bn else nn.Sequential()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Residual(nn.Module):
    """Two 3x3 conv-BN with a (projected when needed) skip connection."""

    def __init__(self, k: int, inp_dim: int, out_dim: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inp_dim, out_dim, (3, 3), padding=(1, 1), stride=(stride, stride),
                               bias=False)
        self.bn1 = nn.BatchNorm2d(out_dim)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_dim, out_dim, (3, 3), padding=(1, 1), bias=False)
        self.bn2 = nn.BatchNorm2d(out_dim)
        self.skip = nn.Sequential(
            nn.Conv2d(inp_dim, out_dim, (1, 1), stride=(stride, stride), bias=False),
            nn.BatchNorm2d(out_dim),
        ) if stride != 1 or inp_dim != out_dim else nn.Sequential()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.skip(x))


def _make_layer(inp_dim: int, out_dim: int, modules: int) -> nn.Sequential:
    layers = [Residual(3, inp_dim, out_dim)]
    layers += [Residual(3, out_dim, out_dim) for _ in range(1, modules)]
    return nn.Sequential(*layers)


def _make_layer_revr(inp_dim: int, out_dim: int, modules: int) -> nn.Sequential:
    layers = [Residual(3, inp_dim, inp_dim) for _ in range(modules - 1)]
    layers.append(Residual(3, inp_dim, out_dim))
    return nn.Sequential(*layers)


def _make_hg_layer(inp_dim: int, out_dim: int, modules: int) -> nn.Sequential:
    layers = [Residual(3, inp_dim, out_dim, stride=2)]
    layers += [Residual(3, out_dim, out_dim) for _ in range(modules - 1)]
    return nn.Sequential(*layers)


class KpModule(nn.Module):
    """One recursive hourglass level: skip branch ``up1`` + strided ``low1`` -> ``low2`` -> ``low3`` -> x2 up."""

    def __init__(self, n: int, dims: list[int], modules: list[int]):
        super().__init__()
        curr_mod, next_mod = modules[0], modules[1]
        curr_dim, next_dim = dims[0], dims[1]
        self.up1 = _make_layer(curr_dim, curr_dim, curr_mod)
        self.max1 = nn.Sequential()  # the official pool layer is an identity (low1 has stride 2)
        self.low1 = _make_hg_layer(curr_dim, next_dim, curr_mod)
        self.low2: nn.Module = (KpModule(n - 1, dims[1:], modules[1:]) if n > 1
                                else _make_layer(next_dim, next_dim, next_mod))
        self.low3 = _make_layer_revr(next_dim, curr_dim, curr_mod)
        self.up2 = nn.Upsample(scale_factor=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[B, C, h, w]`` (h, w divisible by 2^n) -> ``[B, C, h, w]``."""
        up1 = self.up1(x)
        low3 = self.low3(self.low2(self.low1(self.max1(x))))
        return up1 + self.up2(low3)


def _make_kp_layer(cnv_dim: int, curr_dim: int, out_dim: int) -> nn.Sequential:
    """Official head: 3x3 conv with bias -> ReLU -> 1x1 conv."""
    return nn.Sequential(Convolution(3, cnv_dim, curr_dim, with_bn=False),
                         nn.Conv2d(curr_dim, out_dim, (1, 1)))


class HourglassNet(nn.Module):
    """``exkp`` with n=5, dims [256, 256, 384, 384, 384, 512], modules [2, 2, 2, 2, 2, 4]."""

    def __init__(self, num_classes: int, head_conv: int = 256, nstack: int = 2, n: int = 5,
                 dims: tuple[int, ...] = (256, 256, 384, 384, 384, 512),
                 modules: tuple[int, ...] = (2, 2, 2, 2, 2, 4), cnv_dim: int = 256):
        super().__init__()
        if head_conv < 1:
            raise ValueError(f"hourglass heads need head_conv >= 1, got {head_conv!r}")
        self.nstack = nstack
        self.n = n
        curr_dim = dims[0]
        self.pre = nn.Sequential(Convolution(7, 3, 128, stride=2), Residual(3, 128, curr_dim, stride=2))
        self.kps = nn.ModuleList([KpModule(n, list(dims), list(modules)) for _ in range(nstack)])
        self.cnvs = nn.ModuleList([Convolution(3, curr_dim, cnv_dim) for _ in range(nstack)])
        self.inters = nn.ModuleList([Residual(3, curr_dim, curr_dim) for _ in range(nstack - 1)])
        self.inters_ = nn.ModuleList([
            nn.Sequential(nn.Conv2d(curr_dim, curr_dim, (1, 1), bias=False), nn.BatchNorm2d(curr_dim))
            for _ in range(nstack - 1)
        ])
        self.cnvs_ = nn.ModuleList([
            nn.Sequential(nn.Conv2d(cnv_dim, curr_dim, (1, 1), bias=False), nn.BatchNorm2d(curr_dim))
            for _ in range(nstack - 1)
        ])
        self.head_names = tuple(head_channels(num_classes))
        for name, channels in head_channels(num_classes).items():
            heads = nn.ModuleList([_make_kp_layer(cnv_dim, head_conv, channels) for _ in range(nstack)])
            # official ``large_hourglass``: heatmap bias -2.19, regression heads at PyTorch's default init
            if name == "hm":
                with torch.no_grad():
                    for head in heads:
                        head[-1].bias.fill_(HEATMAP_PRIOR_BIAS)
            setattr(self, name, heads)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, image: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """image ``[B, 3, H, W]`` (H, W divisible by 128) -> per stack {"hm", "wh", "reg"} at H/4 x W/4."""
        stride = 4 * 2 ** self.n
        if image.shape[-2] % stride or image.shape[-1] % stride:
            raise ValueError(f"hourglass input H, W must be divisible by {stride}, "
                             f"got {tuple(image.shape[-2:])}")
        inter = self.pre(image)  # [B, 256, H/4, W/4]
        outs: list[dict[str, torch.Tensor]] = []
        for ind in range(self.nstack):
            cnv = self.cnvs[ind](self.kps[ind](inter))  # [B, cnv_dim, H/4, W/4]
            outs.append({name: getattr(self, name)[ind](cnv) for name in self.head_names})
            if ind < self.nstack - 1:
                inter = self.relu(self.inters_[ind](inter) + self.cnvs_[ind](cnv))
                inter = self.inters[ind](inter)
        return outs


@register_model("hourglass104", head_conv=256)
def hourglass104(num_classes: int, *, head_conv: int) -> nn.Module:
    """Hourglass-104 (2 stacks), the paper's most accurate backbone; returns two head dicts."""
    return HourglassNet(num_classes, head_conv=head_conv)
