"""ResNet backbones with three up-convolution stages to stride 4 (official ``msra_resnet``/``resnet_dcn``).

Module names follow the official ``resnet_dcn.PoseResNet`` (``conv1``, ``layer1``..``layer4``,
``deconv_layers``, heads ``hm``/``wh``/``reg``) so that official checkpoints map onto them.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from centernet.models.dcn import dcn3x3
from centernet.models.heads import add_heads, run_heads
from centernet.models.registry import register_model

BN_MOMENTUM = 0.1

# conv_factory(in_channels, out_channels) -> a 3x3, stride-1, padding-1 conv module
ConvFactory = Callable[[int, int], nn.Module]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


def plain_conv3x3(in_channels: int, out_channels: int) -> nn.Module:
    """The non-deformable stand-in for the official DCN before each up-convolution."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


@torch.no_grad()
def fill_bilinear(up: nn.ConvTranspose2d) -> None:
    """Bilinear-upsampling init of a transposed conv, channel c -> channel c.

    The official ``fill_up_weights`` writes the kernel into ``w[c, 0]`` only (every input channel
    feeding output channel 0); here each channel is upsampled onto itself, which is what a bilinear
    initialisation means and gives every output channel a signal from the start.
    """
    w = up.weight  # [in, out, k, k]
    k = w.size(2)
    f = math.ceil(k / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    idx = torch.arange(k, dtype=torch.float64)
    line = 1 - torch.abs(idx / f - c)
    kernel = (line[:, None] * line[None, :]).to(w.dtype)  # [k, k]
    w.zero_()
    for ch in range(min(w.size(0), w.size(1))):
        w[ch, ch] = kernel


class ResNetCenterNet(nn.Module):
    """ResNet -> 3 x (3x3 conv, BN, ReLU, 4x4 up-conv stride 2, BN, ReLU) -> heads at stride 4."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        num_classes: int,
        head_conv: int,
        conv_factory: ConvFactory = plain_conv3x3,
        up_channels: tuple[int, int, int] = (256, 128, 64),
    ):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.deconv_layers = self._make_deconv_layers(up_channels, conv_factory)
        add_heads(self, up_channels[-1], num_classes, head_conv)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion, momentum=BN_MOMENTUM),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _make_deconv_layers(self, channels: tuple[int, ...], conv_factory: ConvFactory) -> nn.Sequential:
        layers: list[nn.Module] = []
        for planes in channels:
            up = nn.ConvTranspose2d(planes, planes, kernel_size=4, stride=2, padding=1,
                                    output_padding=0, bias=False)
            fill_bilinear(up)
            layers += [
                conv_factory(self.inplanes, planes),
                nn.BatchNorm2d(planes, momentum=BN_MOMENTUM),
                nn.ReLU(inplace=True),
                up,
                nn.BatchNorm2d(planes, momentum=BN_MOMENTUM),
                nn.ReLU(inplace=True),
            ]
            self.inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """x ``[B, 3, H, W]`` (H, W divisible by 32) -> a list of one head dict at ``[B, *, H/4, W/4]``
        (one stack; the official ``PoseResNet`` returns ``[ret]`` too)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # [B, 64, H/4, W/4]
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [B, 512*e, H/32, W/32]
        x = self.deconv_layers(x)  # [B, 64, H/4, W/4]
        return [run_heads(self, x)]


RESNET_LAYERS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}


@register_model("resnet18", head_conv=64)
def resnet18(num_classes: int, *, head_conv: int) -> nn.Module:
    """ResNet-18 with plain 3x3 convs before the up-convolutions (no DCN)."""
    block, layers = RESNET_LAYERS[18]
    return ResNetCenterNet(block, layers, num_classes, head_conv)


@register_model("resdcn18", head_conv=64)
def resdcn18(num_classes: int, *, head_conv: int) -> nn.Module:
    """ResNet-18 with a 3x3 DCN before each up-convolution (official ``resnet_dcn``, ``--arch resdcn_18``)."""
    block, layers = RESNET_LAYERS[18]
    return ResNetCenterNet(block, layers, num_classes, head_conv, conv_factory=dcn3x3)


@register_model("resdcn101", head_conv=64)
def resdcn101(num_classes: int, *, head_conv: int) -> nn.Module:
    """ResNet-101 with DCN up-convolutions (official ``resnet_dcn``, ``--arch resdcn_101``)."""
    block, layers = RESNET_LAYERS[101]
    return ResNetCenterNet(block, layers, num_classes, head_conv, conv_factory=dcn3x3)
