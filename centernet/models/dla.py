"""DLA-34 with deformable DLAUp/IDAUp to stride 4 (official ``pose_dla_dcn.DLASeg``, ``--arch dla_34``).

Module names follow the official code (``base.level0`` .. ``base.level5``, ``dla_up.ida_{i}``,
``ida_up``, ``proj_{i}``/``up_{i}``/``node_{i}``, heads ``hm``/``wh``/``reg``), so official
checkpoints load with ``strict=True``. ``base.fc`` (the ImageNet classifier the official code
attaches when it loads ImageNet weights, and therefore saves in every checkpoint) is kept as a
frozen, unused 1x1 conv for that reason; it takes no part in the forward pass or training. The
same holds for ``base.level3.project`` and ``base.level4.project``, which the official forward
computes and then discards.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from centernet.models.dcn import dcn3x3
from centernet.models.heads import add_heads, run_heads
from centernet.models.registry import register_model

BN_MOMENTUM = 0.1


class BasicBlock(nn.Module):
    """Two 3x3 convs; the residual comes from the enclosing :class:`Tree` when given."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation, bias=False,
                               dilation=dilation)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=dilation, bias=False,
                               dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        residual = x if residual is None else residual
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Root(nn.Module):
    """1x1 conv over the concatenated children (+ the first child when ``residual``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, residual: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, stride=1, bias=False,
                              padding=(kernel_size - 1) // 2)
        self.bn = nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual

    def forward(self, *children: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(torch.cat(children, 1)))
        if self.residual:
            x = x + children[0]
        return self.relu(x)


class Tree(nn.Module):
    """Hierarchical deep aggregation tree of ``levels`` levels."""

    def __init__(
        self,
        levels: int,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        level_root: bool = False,
        root_dim: int = 0,
        root_kernel_size: int = 1,
        dilation: int = 1,
        root_residual: bool = False,
    ):
        super().__init__()
        if root_dim == 0:
            root_dim = 2 * out_channels
        if level_root:
            root_dim += in_channels
        self.tree1: nn.Module
        self.tree2: nn.Module
        if levels == 1:
            self.tree1 = BasicBlock(in_channels, out_channels, stride, dilation=dilation)
            self.tree2 = BasicBlock(out_channels, out_channels, 1, dilation=dilation)
            self.root = Root(root_dim, out_channels, root_kernel_size, root_residual)
        else:
            self.tree1 = Tree(levels - 1, in_channels, out_channels, stride, root_dim=0,
                              root_kernel_size=root_kernel_size, dilation=dilation,
                              root_residual=root_residual)
            self.tree2 = Tree(levels - 1, out_channels, out_channels, root_dim=root_dim + out_channels,
                              root_kernel_size=root_kernel_size, dilation=dilation,
                              root_residual=root_residual)
        self.level_root = level_root
        self.levels = levels
        self.downsample = nn.MaxPool2d(stride, stride=stride) if stride > 1 else None
        self.project = None
        if in_channels != out_channels:
            self.project = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, bias=False),
                nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            )
            if levels > 1:
                # The official forward computes this projection and hands it to a sub-Tree, which
                # ignores it; kept (frozen, not computed) so official checkpoints load strictly
                # and DDP finds no parameter without a gradient.
                self.project.requires_grad_(False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None,
                children: list[torch.Tensor] | None = None) -> torch.Tensor:
        children = [] if children is None else children
        bottom = self.downsample(x) if self.downsample is not None else x
        if self.level_root:
            children.append(bottom)
        if self.levels == 1:
            residual = self.project(bottom) if self.project is not None else bottom
            x1 = self.tree1(x, residual)
            x2 = self.tree2(x1)
            return self.root(x2, x1, *children)
        x1 = self.tree1(x)  # a sub-Tree builds its own residual (see __init__)
        children.append(x1)
        return self.tree2(x1, children=children)


class DLA(nn.Module):
    """DLA backbone; ``forward`` returns the six level outputs (strides 1, 2, 4, 8, 16, 32)."""

    def __init__(self, levels: list[int], channels: list[int], residual_root: bool = False,
                 imagenet_classes: int = 1000):
        super().__init__()
        self.channels = list(channels)
        self.base_layer = nn.Sequential(
            nn.Conv2d(3, channels[0], kernel_size=7, stride=1, padding=3, bias=False),
            nn.BatchNorm2d(channels[0], momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
        )
        self.level0 = self._make_conv_level(channels[0], channels[0], levels[0])
        self.level1 = self._make_conv_level(channels[0], channels[1], levels[1], stride=2)
        self.level2 = Tree(levels[2], channels[1], channels[2], 2, level_root=False,
                           root_residual=residual_root)
        self.level3 = Tree(levels[3], channels[2], channels[3], 2, level_root=True,
                           root_residual=residual_root)
        self.level4 = Tree(levels[4], channels[3], channels[4], 2, level_root=True,
                           root_residual=residual_root)
        self.level5 = Tree(levels[5], channels[4], channels[5], 2, level_root=True,
                           root_residual=residual_root)
        # Unused ImageNet classifier, present in official checkpoints (see module docstring).
        self.fc = nn.Conv2d(channels[-1], imagenet_classes, kernel_size=1, bias=True)
        self.fc.requires_grad_(False)

    @staticmethod
    def _make_conv_level(inplanes: int, planes: int, convs: int, stride: int = 1,
                         dilation: int = 1) -> nn.Sequential:
        modules: list[nn.Module] = []
        for i in range(convs):
            modules += [
                nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride if i == 0 else 1,
                          padding=dilation, bias=False, dilation=dilation),
                nn.BatchNorm2d(planes, momentum=BN_MOMENTUM),
                nn.ReLU(inplace=True),
            ]
            inplanes = planes
        return nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x ``[B, 3, H, W]`` -> 6 maps, level i ``[B, channels[i], H/2^i, W/2^i]``."""
        x = self.base_layer(x)
        outs = []
        for i in range(6):
            x = getattr(self, f"level{i}")(x)
            outs.append(x)
        return outs


@torch.no_grad()
def fill_up_weights(up: nn.ConvTranspose2d) -> None:
    """Bilinear kernel in ``w[c, 0]`` for every channel (official; exact for depthwise up-convs)."""
    w = up.weight  # [C, 1, k, k] for groups=C
    f = math.ceil(w.size(2) / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    idx = torch.arange(w.size(2), dtype=torch.float64)
    line = 1 - torch.abs(idx / f - c)
    w[:, 0] = (line[:, None] * line[None, :]).to(w.dtype)


class DeformConv(nn.Module):
    """DCN 3x3 -> BN -> ReLU (official names: ``conv``, ``actf``)."""

    def __init__(self, chi: int, cho: int):
        super().__init__()
        self.actf = nn.Sequential(nn.BatchNorm2d(cho, momentum=BN_MOMENTUM), nn.ReLU(inplace=True))
        self.conv = dcn3x3(chi, cho)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.actf(self.conv(x))


class IDAUp(nn.Module):
    """Iterative deep aggregation: project, upsample and merge ``layers[startp+1:endp]`` in place."""

    def __init__(self, o: int, channels: list[int], up_f: list[int]):
        super().__init__()
        for i in range(1, len(channels)):
            f = int(up_f[i])
            up = nn.ConvTranspose2d(o, o, f * 2, stride=f, padding=f // 2, output_padding=0,
                                    groups=o, bias=False)
            fill_up_weights(up)
            setattr(self, f"proj_{i}", DeformConv(channels[i], o))
            setattr(self, f"up_{i}", up)
            setattr(self, f"node_{i}", DeformConv(o, o))

    def forward(self, layers: list[torch.Tensor], startp: int, endp: int) -> None:
        for i in range(startp + 1, endp):
            upsample = getattr(self, f"up_{i - startp}")
            project = getattr(self, f"proj_{i - startp}")
            node = getattr(self, f"node_{i - startp}")
            layers[i] = node(upsample(project(layers[i])) + layers[i - 1])


class DLAUp(nn.Module):
    """Stacked IDAUps, coarsest first; returns the aggregated maps, finest first."""

    def __init__(self, startp: int, channels: list[int], scales: list[int]):
        super().__init__()
        self.startp = startp
        in_channels = list(channels)
        scales = list(scales)
        for i in range(len(channels) - 1):
            j = -i - 2
            setattr(self, f"ida_{i}", IDAUp(channels[j], in_channels[j:],
                                             [s // scales[j] for s in scales[j:]]))
            scales[j + 1:] = [scales[j]] * len(scales[j + 1:])
            in_channels[j + 1:] = [channels[j]] * len(in_channels[j + 1:])

    def forward(self, layers: list[torch.Tensor]) -> list[torch.Tensor]:
        layers = list(layers)
        out = [layers[-1]]
        for i in range(len(layers) - self.startp - 1):
            getattr(self, f"ida_{i}")(layers, len(layers) - i - 2, len(layers))
            out.insert(0, layers[-1])
        return out


class DLASeg(nn.Module):
    """DLA backbone + DLAUp + IDAUp to ``down_ratio`` 4, then the three heads (final kernel 1)."""

    def __init__(self, num_classes: int, head_conv: int, down_ratio: int = 4, last_level: int = 5):
        super().__init__()
        if down_ratio not in (2, 4, 8, 16):
            raise ValueError(f"down_ratio must be one of 2, 4, 8, 16, got {down_ratio!r}")
        self.first_level = int(math.log2(down_ratio))
        self.last_level = last_level
        self.base = DLA([1, 1, 1, 2, 2, 1], [16, 32, 64, 128, 256, 512])
        channels = self.base.channels
        scales = [2 ** i for i in range(len(channels[self.first_level:]))]
        self.dla_up = DLAUp(self.first_level, channels[self.first_level:], scales)
        out_channel = channels[self.first_level]
        self.ida_up = IDAUp(out_channel, channels[self.first_level:self.last_level],
                            [2 ** i for i in range(self.last_level - self.first_level)])
        add_heads(self, out_channel, num_classes, head_conv)
        _official_dla_head_init(self)

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """x ``[B, 3, H, W]`` (H, W divisible by 32) -> a list of one head dict at ``[B, *, H/4, W/4]``
        (one stack, as the official ``DLASeg`` returns ``[z]``)."""
        feats = self.dla_up(self.base(x))  # finest first: [B, 64, H/4, W/4], ...
        y = [feats[i].clone() for i in range(self.last_level - self.first_level)]
        self.ida_up(y, 0, len(y))
        return [run_heads(self, y[-1])]  # y[-1]: [B, 64, H/4, W/4]


@torch.no_grad()
def _official_dla_head_init(model: nn.Module) -> None:
    """``pose_dla_dcn``: regression heads keep PyTorch's default weights with zero biases."""
    for name in ("wh", "reg"):
        for conv in getattr(model, name).modules():
            if isinstance(conv, nn.Conv2d):
                conv.reset_parameters()
                if conv.bias is not None:
                    conv.bias.zero_()


@register_model("dla34", head_conv=256)
def dla34(num_classes: int, *, head_conv: int) -> nn.Module:
    """DLA-34 with deformable up-sampling, output stride 4 (the paper's speed/accuracy trade-off)."""
    return DLASeg(num_classes, head_conv)
