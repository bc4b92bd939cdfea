"""Deformable convolution (DCNv1/v2) with torchvision's signature, in pure PyTorch.

``deform_conv2d`` dispatches to ``torchvision.ops.deform_conv2d`` when torchvision imports and
its compiled op runs (checked once, lazily); otherwise :func:`deform_conv2d_torch` computes the
same function from ``F.grid_sample`` and one batched matmul, so it is differentiable, runs on any
device, and needs no compiled extension.

Semantics (torchvision ``csrc/ops/cpu/deform_conv2d_kernel.cpp``): for output pixel (oy, ox) and
kernel tap (i, j) of offset group g, the sample point is
``y = oy*stride_h - pad_h + i*dil_h + offset[b, g*2K + 2*(i*kw+j)]`` and
``x = ox*stride_w - pad_w + j*dil_w + offset[b, g*2K + 2*(i*kw+j) + 1]`` (``(dy, dx)`` pairs,
K = kh*kw); it is read by bilinear interpolation in which every corner outside the image
contributes 0 (so points with y <= -1, y >= H, x <= -1 or x >= W give 0), multiplied by
``mask[b, g*K + i*kw + j]`` when a mask is given, and the columns are convolved with ``weight``
split into ``in_channels // weight.shape[1]`` groups.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

IntPair = int | tuple[int, int]

_TORCHVISION_OP: list[Callable[..., Tensor] | None] = []  # [] = not probed yet; [None] = unusable


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair[0], pair[1]


def _torchvision_op() -> Callable[..., Tensor] | None:
    """torchvision's ``deform_conv2d`` if it imports and runs a tiny call; ``None`` otherwise."""
    if not _TORCHVISION_OP:
        op: Callable[..., Tensor] | None
        try:
            from torchvision.ops import deform_conv2d as op  # type: ignore[no-redef]

            x = torch.ones(1, 1, 3, 3)
            out = op(x, torch.zeros(1, 2, 3, 3), torch.ones(1, 1, 1, 1), mask=torch.ones(1, 1, 3, 3))
            if not torch.allclose(out, x):
                op = None
        except Exception:  # noqa: BLE001 - any failure (missing, ABI mismatch, no op) -> pure torch
            op = None
        _TORCHVISION_OP.append(op)
    return _TORCHVISION_OP[0]


def torchvision_available() -> bool:
    """Whether :func:`deform_conv2d` runs torchvision's compiled kernel."""
    return _torchvision_op() is not None


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = (1, 1),
    padding: IntPair = (0, 0),
    dilation: IntPair = (1, 1),
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable convolution v2 (v1 when ``mask`` is None), exactly as ``torchvision.ops.deform_conv2d``.

    Args:
        input: ``[B, C_in, H, W]``.
        offset: ``[B, 2*G*kh*kw, H_out, W_out]``, (dy, dx) per kernel tap; G = offset groups.
        weight: ``[C_out, C_in // groups, kh, kw]``.
        bias: ``[C_out]`` or None.
        mask: ``[B, G*kh*kw, H_out, W_out]`` modulation, or None.

    Returns:
        ``[B, C_out, H_out, W_out]``.
    """
    op = _torchvision_op()
    if op is not None:
        return op(input, offset, weight, bias, stride=_pair(stride, "stride"),
                  padding=_pair(padding, "padding"), dilation=_pair(dilation, "dilation"), mask=mask)
    return deform_conv2d_torch(input, offset, weight, bias, stride, padding, dilation, mask)


def deform_conv2d_torch(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = (1, 1),
    padding: IntPair = (0, 0),
    dilation: IntPair = (1, 1),
    mask: Tensor | None = None,
) -> Tensor:
    """The pure-PyTorch implementation behind :func:`deform_conv2d` (same arguments and result)."""
    stride_h, stride_w = _pair(stride, "stride")
    pad_h, pad_w = _pair(padding, "padding")
    dil_h, dil_w = _pair(dilation, "dilation")
    if input.dim() != 4:
        raise ValueError(f"input must be [B, C, H, W], got shape {tuple(input.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"weight must be [C_out, C_in/groups, kh, kw], got shape {tuple(weight.shape)}")
    if min(stride_h, stride_w) < 1 or min(dil_h, dil_w) < 1 or min(pad_h, pad_w) < 0:
        raise ValueError(f"need stride >= 1, dilation >= 1, padding >= 0; got stride={stride!r}, "
                         f"dilation={dilation!r}, padding={padding!r}")
    b, c_in, h, w = input.shape
    c_out, c_per_group, kh, kw = weight.shape
    k = kh * kw
    if c_per_group < 1 or c_in % c_per_group != 0:
        raise ValueError(f"weight.shape[1]={c_per_group} does not divide input channels {c_in}")
    groups = c_in // c_per_group
    if c_out % groups != 0:
        raise ValueError(f"out channels {c_out} are not divisible by groups={groups}")
    if offset.dim() != 4 or offset.shape[1] % (2 * k) != 0 or offset.shape[1] == 0:
        raise ValueError(f"offset must be [B, 2*offset_groups*{kh}*{kw}, H_out, W_out], "
                         f"got shape {tuple(offset.shape)}")
    n_off = offset.shape[1] // (2 * k)
    if c_in % n_off != 0:
        raise ValueError(f"offset groups {n_off} do not divide input channels {c_in}")
    h_out = (h + 2 * pad_h - (dil_h * (kh - 1) + 1)) // stride_h + 1
    w_out = (w + 2 * pad_w - (dil_w * (kw - 1) + 1)) // stride_w + 1
    if h_out < 1 or w_out < 1:
        raise ValueError(f"output size {h_out}x{w_out} is empty for input {h}x{w}")
    if tuple(offset.shape) != (b, 2 * n_off * k, h_out, w_out):
        raise ValueError(f"offset shape {tuple(offset.shape)} != expected "
                         f"{(b, 2 * n_off * k, h_out, w_out)}")
    if mask is not None and tuple(mask.shape) != (b, n_off * k, h_out, w_out):
        raise ValueError(f"mask shape {tuple(mask.shape)} != expected {(b, n_off * k, h_out, w_out)}")

    # Sampling points in input pixels: regular grid + learnt offsets.
    dtype, device = input.dtype, input.device
    ys = (torch.arange(h_out, device=device, dtype=dtype) * stride_h - pad_h)[:, None]  # [Ho, 1]
    xs = (torch.arange(w_out, device=device, dtype=dtype) * stride_w - pad_w)[None, :]  # [1, Wo]
    ky = (torch.arange(kh, device=device, dtype=dtype) * dil_h).repeat_interleave(kw)  # [K]
    kx = (torch.arange(kw, device=device, dtype=dtype) * dil_w).repeat(kh)  # [K]
    off = offset.reshape(b, n_off, k, 2, h_out, w_out)  # [B, G, K, (dy, dx), Ho, Wo]
    y = ys + ky[:, None, None] + off[:, :, :, 0]  # [B, G, K, Ho, Wo]
    x = xs + kx[:, None, None] + off[:, :, :, 1]  # [B, G, K, Ho, Wo]

    # grid_sample, bilinear, zeros padding, align_corners=False: pixel p <-> (2p + 1)/size - 1.
    # Its corner rule (corners outside the image contribute 0) is torchvision's.
    grid = torch.stack(((2 * x + 1) / w - 1, (2 * y + 1) / h - 1), dim=-1)  # [B, G, K, Ho, Wo, 2]
    grid = grid.reshape(b * n_off, k * h_out, w_out, 2).to(dtype)
    feats = input.reshape(b * n_off, c_in // n_off, h, w)  # [B*G, C/G, H, W]
    cols = F.grid_sample(feats, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)  # [B*G, C/G, K*Ho, Wo]
    cols = cols.view(b, n_off, c_in // n_off, k, h_out * w_out)
    if mask is not None:
        cols = cols * mask.reshape(b, n_off, 1, k, h_out * w_out).to(cols.dtype)
    cols = cols.reshape(b, groups, c_per_group * k, h_out * w_out)  # [B, g, C/g*K, L]
    out = torch.matmul(weight.reshape(groups, c_out // groups, c_per_group * k), cols)  # [B, g, O/g, L]
    out = out.reshape(b, c_out, h_out, w_out)
    if bias is not None:
        out = out + bias.view(1, c_out, 1, 1)
    return out
