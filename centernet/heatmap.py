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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor


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
    b, c, h, w = (int(v) for v in shape)
    if hm_index.shape != hm_value.shape or hm_index.dim() != 1:
        raise ValueError(f"hm_index and hm_value must be [P] tensors of one length, got "
                         f"{tuple(hm_index.shape)} and {tuple(hm_value.shape)}")
    dense = torch.zeros(b * c * h * w, dtype=torch.float32, device=hm_value.device)  # [B*C*H*W]
    if hm_index.numel():
        dense.scatter_reduce_(0, hm_index.to(torch.int64), hm_value.to(torch.float32), reduce="amax",
                              include_self=True)
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
