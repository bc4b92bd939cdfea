"""centernet.ops.deform_conv2d against a slow reference written from torchvision's definition.

The reference follows ``torchvision/csrc/ops/cpu/deform_conv2d_kernel.cpp``: sample point
``y = oy*sh - ph + i*dh + offset_dy``, ``x = ox*sw - pw + j*dw + offset_dx`` with (dy, dx) pairs per
kernel tap and offset group; bilinear interpolation returning 0 for y <= -1, y >= H, x <= -1,
x >= W, and corners outside the image contributing 0; multiplied by the mask; then a grouped
convolution of the columns with the weight.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from centernet.models.dcn import DCN
from centernet.ops import deform_conv2d, deform_conv2d_torch


def _bilinear(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """img ``[C, H, W]`` at the real point (y, x) -> ``[C]``, torchvision's boundary rule."""
    c, h, w = img.shape
    out = torch.zeros(c, dtype=img.dtype)
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return out
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            if 0 <= yy < h and 0 <= xx < w:
                out = out + wy * wx * img[:, yy, xx]
    return out


def reference_deform_conv2d(input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0),
                            dilation=(1, 1), mask=None) -> torch.Tensor:
    """Loop over every (batch, offset group, tap, output pixel); float64 throughout."""
    input, offset, weight = input.double(), offset.double(), weight.double()
    b, c_in, h, w = input.shape
    c_out, c_per_group, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    k = kh * kw
    n_off = offset.shape[1] // (2 * k)
    groups = c_in // c_per_group
    h_out = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    w_out = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    cpo = c_in // n_off
    cols = torch.zeros(b, c_in, kh, kw, h_out, w_out, dtype=torch.float64)
    for bi in range(b):
        for g in range(n_off):
            img = input[bi, g * cpo:(g + 1) * cpo]
            for i in range(kh):
                for j in range(kw):
                    tap = i * kw + j
                    for oy in range(h_out):
                        for ox in range(w_out):
                            dy = offset[bi, g * 2 * k + 2 * tap, oy, ox].item()
                            dx = offset[bi, g * 2 * k + 2 * tap + 1, oy, ox].item()
                            m = 1.0 if mask is None else mask[bi, g * k + tap, oy, ox].item()
                            y = oy * sh - ph + i * dh + dy
                            x = ox * sw - pw + j * dw + dx
                            cols[bi, g * cpo:(g + 1) * cpo, i, j, oy, ox] = m * _bilinear(img, y, x)
    out = torch.zeros(b, c_out, h_out, w_out, dtype=torch.float64)
    opg = c_out // groups
    for g in range(groups):
        wg = weight[g * opg:(g + 1) * opg]  # [O/g, C/g, kh, kw]
        cg = cols[:, g * c_per_group:(g + 1) * c_per_group]  # [B, C/g, kh, kw, Ho, Wo]
        out[:, g * opg:(g + 1) * opg] = torch.einsum("ocij,bcijyx->boyx", wg, cg)
    if bias is not None:
        out = out + bias.double().view(1, -1, 1, 1)
    return out


# (B, C_in, C_out, H, W, kh, kw, stride, padding, dilation, groups, offset_groups, use_mask)
CONFIGS = [
    (2, 4, 6, 7, 6, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, True),
    (2, 4, 6, 7, 6, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, False),
    (1, 4, 4, 8, 7, 3, 3, (2, 2), (1, 1), (1, 1), 2, 2, True),
    (1, 6, 4, 7, 8, 3, 2, (2, 1), (0, 1), (1, 2), 2, 3, True),
    (1, 4, 2, 9, 9, 3, 3, (1, 1), (2, 2), (2, 2), 1, 4, True),
    (2, 3, 3, 5, 5, 1, 1, (1, 1), (0, 0), (1, 1), 3, 1, False),
    (1, 2, 3, 6, 5, 2, 2, (1, 1), (0, 0), (1, 1), 1, 2, True),
]


def _make_inputs(cfg, dtype=torch.float32, seed=0):
    b, c_in, c_out, h, w, kh, kw, stride, padding, dilation, groups, n_off, use_mask = cfg
    g = torch.Generator().manual_seed(seed)
    h_out = (h + 2 * padding[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    w_out = (w + 2 * padding[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    x = torch.randn(b, c_in, h, w, generator=g, dtype=dtype)
    offset = 2.0 * torch.randn(b, 2 * n_off * kh * kw, h_out, w_out, generator=g, dtype=dtype)
    far = torch.rand(offset.shape, generator=g) < 0.1  # some samples far outside the image
    offset = torch.where(far, offset.sign() * (h + 3.5), offset)
    weight = torch.randn(c_out, c_in // groups, kh, kw, generator=g, dtype=dtype) * 0.5
    bias = torch.randn(c_out, generator=g, dtype=dtype)
    mask = torch.rand(b, n_off * kh * kw, h_out, w_out, generator=g, dtype=dtype) if use_mask else None
    return x, offset, weight, bias, dict(stride=stride, padding=padding, dilation=dilation), mask


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"s{c[7]}p{c[8]}d{c[9]}g{c[10]}og{c[11]}m{int(c[12])}k{c[5]}x{c[6]}")
def test_forward_matches_reference(cfg):
    x, offset, weight, bias, kw, mask = _make_inputs(cfg)
    expected = reference_deform_conv2d(x, offset, weight, bias, mask=mask, **kw)
    got = deform_conv2d_torch(x, offset, weight, bias, mask=mask, **kw)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-5)
    # the public entry point (torchvision's kernel when present) agrees too
    torch.testing.assert_close(deform_conv2d(x, offset, weight, bias, mask=mask, **kw).double(),
                               expected, rtol=0, atol=1e-5)


def test_boundary_rule_by_hand():
    """1x1 kernel, one channel: sample points placed on and around the image border."""
    img = torch.arange(1.0, 13.0).view(1, 1, 3, 4)  # H=3, W=4, values 1..12
    weight = torch.ones(1, 1, 1, 1)
    # output pixel (0, 0) samples at (dy, dx); other pixels sample at their own grid point + 0
    cases = {
        (-1.0, 0.0): 0.0,  # y == -1 -> 0
        (-0.5, 0.0): 0.5 * 1.0,  # half of row 0 (row -1 is outside)
        (0.0, -0.25): 0.75 * 1.0,
        (2.0, 3.0): 12.0,  # the last pixel exactly
        (2.5, 0.0): 0.5 * 9.0,  # halfway below the last row
        (3.0, 0.0): 0.0,  # y == H -> 0
        (0.0, 4.0): 0.0,  # x == W -> 0
        (0.5, 1.5): (2 + 3 + 6 + 7) / 4,
    }
    for (dy, dx), value in cases.items():
        offset = torch.zeros(1, 2, 3, 4)
        offset[0, 0, 0, 0], offset[0, 1, 0, 0] = dy, dx
        out = deform_conv2d_torch(img, offset, weight)
        assert out[0, 0, 0, 0].item() == pytest.approx(value, abs=1e-6), (dy, dx)
        torch.testing.assert_close(out[0, 0].flatten()[1:], img[0, 0].flatten()[1:])


def test_offset_layout_is_dy_dx():
    """dy = +1 reads the row below; dx = +1 the column to the right."""
    img = torch.randn(1, 2, 5, 6)
    weight = torch.eye(2).view(2, 2, 1, 1)
    down = torch.zeros(1, 2, 5, 6)
    down[:, 0] = 1.0
    right = torch.zeros(1, 2, 5, 6)
    right[:, 1] = 1.0
    torch.testing.assert_close(deform_conv2d_torch(img, down, weight)[:, :, :-1], img[:, :, 1:])
    torch.testing.assert_close(deform_conv2d_torch(img, right, weight)[..., :-1], img[..., 1:])


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[2], CONFIGS[3], CONFIGS[5]],
                         ids=["basic", "stride2-groups", "mixed", "1x1-nomask"])
def test_zero_offset_unit_mask_is_conv2d(cfg):
    x, offset, weight, bias, kw, _ = _make_inputs(cfg)
    mask = torch.ones(offset.shape[0], offset.shape[1] // 2, *offset.shape[2:])
    got = deform_conv2d_torch(x, torch.zeros_like(offset), weight, bias, mask=mask, **kw)
    groups = x.shape[1] // weight.shape[1]
    expected = F.conv2d(x, weight, bias, groups=groups, **kw)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", [
    (1, 4, 2, 4, 4, 3, 3, (1, 1), (1, 1), (1, 1), 2, 2, True),
    (2, 2, 3, 4, 5, 2, 3, (2, 1), (1, 0), (1, 2), 1, 1, True),
    (1, 3, 2, 4, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, False),
], ids=["groups-offgroups", "strided-dilated", "nomask"])
def test_gradcheck_float64(cfg):
    x, offset, weight, bias, kw, mask = _make_inputs(cfg, dtype=torch.float64, seed=1)
    offset = offset.clamp(-3, 3) + 0.123  # keep away from integer kinks of bilinear sampling
    tensors = [t.requires_grad_() for t in (x, offset, weight, bias)]
    if mask is not None:
        tensors.append(mask.requires_grad_())

    def fn(inp, off, wt, bs, *m):
        return deform_conv2d_torch(inp, off, wt, bs, mask=m[0] if m else None, **kw)

    assert torch.autograd.gradcheck(fn, tuple(tensors), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_rejects_bad_shapes():
    x = torch.randn(1, 4, 6, 6)
    weight = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match="offset"):
        deform_conv2d_torch(x, torch.zeros(1, 17, 4, 4), weight)
    with pytest.raises(ValueError, match="offset shape"):
        deform_conv2d_torch(x, torch.zeros(1, 18, 5, 5), weight)
    with pytest.raises(ValueError, match="mask shape"):
        deform_conv2d_torch(x, torch.zeros(1, 18, 4, 4), weight, mask=torch.ones(1, 8, 4, 4))
    with pytest.raises(ValueError, match="offset groups"):
        deform_conv2d_torch(x, torch.zeros(1, 54, 4, 4), weight)
    with pytest.raises(ValueError, match="does not divide"):
        deform_conv2d_torch(x, torch.zeros(1, 18, 4, 4), torch.randn(2, 3, 3, 3))


def test_dcn_module_official_layout():
    """DCN: zero-initialised offsets -> conv with mask 0.5; offsets = cat(o1, o2), mask = sigmoid(m)."""
    torch.manual_seed(0)
    dcn = DCN(4, 5, kernel_size=(3, 3), stride=1, padding=1)
    assert sorted(n for n, _ in dcn.named_parameters()) == [
        "bias", "conv_offset_mask.bias", "conv_offset_mask.weight", "weight"]
    assert dcn.conv_offset_mask.out_channels == 27
    x = torch.randn(2, 4, 6, 5)
    expected = F.conv2d(x, dcn.weight * 0.5, dcn.bias, padding=1)  # sigmoid(0) = 0.5
    torch.testing.assert_close(dcn(x), expected, rtol=1e-5, atol=1e-5)

    with torch.no_grad():
        dcn.conv_offset_mask.weight.normal_(std=0.1)
        dcn.conv_offset_mask.bias.normal_()
    om = dcn.conv_offset_mask(x)
    offset = torch.cat((om[:, :9], om[:, 9:18]), 1)
    expected = reference_deform_conv2d(x, offset, dcn.weight, dcn.bias, padding=(1, 1),
                                       mask=torch.sigmoid(om[:, 18:]))
    torch.testing.assert_close(dcn(x).double(), expected, rtol=0, atol=1e-5)
    dcn(x).sum().backward()
    assert dcn.conv_offset_mask.weight.grad.abs().sum() > 0


def test_matches_torchvision_when_available():
    tv_ops = pytest.importorskip(
        "torchvision.ops", reason="torchvision does not import here; its op cannot be compared")
    try:
        tv_ops.deform_conv2d(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, 2), torch.ones(1, 1, 1, 1))
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"torchvision imports but its deform_conv2d op does not run: {exc}")
    for cfg in CONFIGS:
        x, offset, weight, bias, kw, mask = _make_inputs(cfg, dtype=torch.float64, seed=2)
        tensors = [x, offset, weight, bias] + ([mask] if mask is not None else [])
        ours = [t.clone().requires_grad_() for t in tensors]
        theirs = [t.clone().requires_grad_() for t in tensors]
        out_ours = deform_conv2d_torch(*ours[:4], mask=ours[4] if mask is not None else None, **kw)
        out_theirs = tv_ops.deform_conv2d(*theirs[:4], mask=theirs[4] if mask is not None else None, **kw)
        torch.testing.assert_close(out_ours, out_theirs, rtol=1e-7, atol=1e-7)
        grad = torch.randn_like(out_ours)
        out_ours.backward(grad)
        out_theirs.backward(grad)
        for a, b in zip(ours, theirs):  # input, offset, weight, bias, mask
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-6)


def test_non_contiguous_offset_and_mask():
    x, offset, weight, bias, kw, mask = _make_inputs(CONFIGS[0])
    offset_t = offset.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    mask_t = mask.transpose(2, 3).contiguous().transpose(2, 3)
    assert not offset_t.is_contiguous()
    torch.testing.assert_close(deform_conv2d_torch(x, offset_t, weight, bias, mask=mask_t, **kw),
                               deform_conv2d_torch(x, offset, weight, bias, mask=mask, **kw))
