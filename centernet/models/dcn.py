"""Modulated deformable convolution module with the parameter names of DCNv2's ``DCN``.

The official CenterNet networks use ``DCNv2.dcn_v2.DCN``: ``weight`` ``[out, in, kh, kw]``,
``bias`` ``[out]`` and ``conv_offset_mask`` (a zero-initialised conv predicting
``deformable_groups * 3 * kh * kw`` channels, split in three equal chunks ``o1, o2, m``;
offset = cat(o1, o2), mask = sigmoid(m)). Same names and shapes here, so official checkpoints
load unchanged; the op is :func:`centernet.ops.deform_conv2d`, whose (dy, dx) offset layout and
mask layout are those of DCNv2's kernel.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from centernet.ops import deform_conv2d

IntPair = int | tuple[int, int]


def _pair(value: IntPair) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class DCN(nn.Module):
    """DCNv2 ``DCN``: offsets and modulation predicted from the input by ``conv_offset_mask``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        deformable_groups: int = 1,
    ):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be >= 1, got in={in_channels!r}, out={out_channels!r}")
        if deformable_groups < 1 or in_channels % deformable_groups != 0:
            raise ValueError(f"deformable_groups={deformable_groups!r} must divide in_channels={in_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.deformable_groups = deformable_groups
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.conv_offset_mask = nn.Conv2d(
            in_channels, deformable_groups * 3 * kh * kw, kernel_size=self.kernel_size,
            stride=self.stride, padding=self.padding, dilation=self.dilation, bias=True,
        )
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """DCNv2 init: weight U(-1/sqrt(n), 1/sqrt(n)) with n = in*kh*kw, bias 0, offsets/mask conv 0."""
        stdv = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        self.weight.uniform_(-stdv, stdv)
        self.bias.zero_()
        self.conv_offset_mask.weight.zero_()
        self.conv_offset_mask.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[B, C_in, H, W]`` -> ``[B, C_out, H_out, W_out]``."""
        out = self.conv_offset_mask(x)  # [B, 3*G*K, Ho, Wo]
        o1, o2, m = torch.chunk(out, 3, dim=1)
        offset = torch.cat((o1, o2), dim=1)  # [B, 2*G*K, Ho, Wo], (dy, dx) pairs
        mask = torch.sigmoid(m)  # [B, G*K, Ho, Wo]
        return deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, mask=mask)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"deformable_groups={self.deformable_groups}")


def dcn3x3(in_channels: int, out_channels: int) -> DCN:
    """The 3x3, stride-1, padding-1 DCN the official ResNet-DCN and DLA-34 use."""
    return DCN(in_channels, out_channels, kernel_size=(3, 3), stride=1, padding=1, dilation=1,
               deformable_groups=1)
