"""Dense CenterNet heatmaps rendered from their sparse form, batched, on the training device.

The one heatmap renderer for training: the shard reader and the in-process dataset both hand over
the nonzero pixels of each sample's heatmap (``hm_index`` flat C-order index into ``[C, H, W]`` and
``hm_value``, as :func:`centernet.targets.encode_sparse` computes and the shards store), batched by
:func:`centernet.batch.collate_samples` into one flat list with per-sample offsets; here a single
``scatter_reduce(amax)`` into a zero ``[B, C, H, W]`` tensor builds the dense target on the device.

Why the stored values and not boxes + radii drawn on the device: the values are the exact float32
results of ``encode``'s Gaussians (float64 ``exp``, element-wise max where same-class Gaussians
overlap, peaks exactly 1.0), so a scatter that only *copies* them is bit-identical to ``encode``
by construction, on any device. Drawing Gaussians on the device would recompute ``exp`` in float32
on a GPU, whose rounding differs from the CPU's, and would need a proof per device. The sparse
lists are small (8 KB per COCO sample vs 5.2 MB dense) and concatenating them needs no padding.

``amax`` (with the zero initial value) makes the result independent of the order of the entries
and exact even if a pixel is listed more than once; ``scatter_reduce`` with ``amax`` is
deterministic on CUDA (it is not among the operations ``torch.use_deterministic_algorithms``
refuses).

On the CPU a fresh ``[32, 80, 128, 128]`` batch (168 MB) costs more than the rest of the data path:
the allocator hands large blocks back to the OS, so every batch pays page faults plus a full
memset. :class:`HeatmapCanvas` keeps the dense buffers instead (what CUDA's caching allocator does
for device memory) and, once the caller has dropped a batch, clears only the pixels it wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from centernet.buffers import KeptBuffers


def render_heatmaps(hm_index: Tensor, hm_value: Tensor, shape: tuple[int, int, int, int]) -> Tensor:
    """Sparse heatmaps of a batch -> dense ``[B, C, H, W]`` float32 on ``hm_value``'s device.

    Args:
        hm_index: ``[P]`` integer flat C-order indices into ``[B, C, H, W]`` (each sample's own
            index plus ``b * C * H * W``), all in ``0 .. B*C*H*W - 1`` (checked where they are
            batched, :func:`centernet.batch.collate_samples`, not here: that would wait for the device).
        hm_value: ``[P]`` float32 values, > 0 (the nonzero pixels of the heatmaps).
        shape: (B, C, H, W).

    Every pixel not listed is 0; a pixel listed more than once gets the largest value.
    """
    b, c, h, w = _checked_shape(hm_index, hm_value, shape)
    dense = torch.zeros(b * c * h * w, dtype=torch.float32, device=hm_value.device)  # [B*C*H*W]
    _scatter(dense, hm_index.to(torch.int64), hm_value)
    return dense.view(b, c, h, w)


def _checked_shape(hm_index: Tensor, hm_value: Tensor, shape: tuple[int, int, int, int]) -> tuple[int, ...]:
    if hm_index.shape != hm_value.shape or hm_index.dim() != 1:
        raise ValueError(f"hm_index and hm_value must be [P] tensors of one length, got "
                         f"{tuple(hm_index.shape)} and {tuple(hm_value.shape)}")
    return tuple(int(v) for v in shape)


def _scatter(dense: Tensor, hm_index: Tensor, hm_value: Tensor) -> None:
    """``dense[i] = max(dense[i], v)`` for every (i, v): ``dense`` ``[N]`` float32, ``hm_index`` ``[P]`` int64."""
    if hm_index.numel():
        dense.scatter_reduce_(0, hm_index, hm_value.to(torch.float32), reduce="amax", include_self=True)


@dataclass(frozen=True)
class _Written:
    """What a render left in a kept buffer: the pixels it wrote and the buffer's version counter then."""

    index: Tensor  # [P] int64, the canvas's own copy
    version: int  # the buffer's _version (an in-place write by the caller is noticed)


class HeatmapCanvas:
    """:func:`render_heatmaps` into dense CPU buffers kept between batches (:class:`KeptBuffers`;
    non-CPU devices: plain :func:`render_heatmaps`, their allocators already keep memory).

    A kept buffer is cleared by zeroing just the pixels its last render wrote, or all of it when it
    was written in place since (its version counter); the result is bit for bit
    :func:`render_heatmaps`'s. Writes that bypass the version counter (through ``.numpy()`` or
    ``.data``) into a returned batch are not allowed. Thread-safe.
    """

    def __init__(self, slots: int = 2):
        self._buffers = KeptBuffers(slots)

    def render(self, hm_index: Tensor, hm_value: Tensor, shape: tuple[int, int, int, int]) -> Tensor:
        """:func:`render_heatmaps` (same arguments, same result) into a kept buffer on the CPU."""
        if hm_value.device.type != "cpu":
            return render_heatmaps(hm_index, hm_value, shape)
        b, c, h, w = _checked_shape(hm_index, hm_value, shape)
        index = hm_index.to(torch.int64)  # [P]
        kept = self._buffers.take(b * c * h * w, torch.float32)
        dense = kept.tensor  # [B*C*H*W]
        written: _Written | None = kept.state
        if written is not None and dense._version == written.version:
            dense.index_fill_(0, written.index, 0.0)  # only what the last render wrote
        else:  # fresh, or written in place since
            dense.zero_()
        _scatter(dense, index, hm_value)
        kept.state = _Written(index.clone(), dense._version)
        return dense.view(b, c, h, w)


def dense_heatmap(sample: Mapping[str, Any]) -> np.ndarray:
    """One sample's sparse heatmap (``hm_index``, ``hm_value``, ``hm_shape`` = (C, H, W)) as the
    dense ``[C, H, W]`` float32 numpy array :func:`centernet.targets.encode` returns, rendered by
    :func:`render_heatmaps` on the CPU."""
    c, h, w = (int(v) for v in sample["hm_shape"])
    index = torch.from_numpy(np.array(sample["hm_index"], dtype=np.int64))  # [P] (a copy: views may be read-only)
    value = torch.from_numpy(np.array(sample["hm_value"], dtype=np.float32))  # [P]
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= c * h * w):
        raise ValueError(f"hm_index values must lie in 0..{c * h * w - 1} for hm_shape {(c, h, w)}, got "
                         f"{int(index.min())}..{int(index.max())}")
    return render_heatmaps(index, value, (1, c, h, w))[0].numpy()
