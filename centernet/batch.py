"""Training batches: collated on the CPU as stored (uint8 images, sparse heatmaps), made dense on the device.

A training sample (``pipeline.reader.ShardDataset``, ``centernet.dataset.CocoSampleDataset``) is a
dict with "image" uint8 ``[3, H, W]`` BGR (any strides: the readers hand over a channels-last view
of the stored ``[H, W, 3]`` pixels), the sparse heatmap "hm_index" ``[P]`` (flat C-order index into
``[C, H/4, W/4]``), "hm_value" ``[P]`` float32 and "hm_shape" (C, H/4, W/4), and "wh"/"reg" ``[K, 2]``,
"ind" ``[K]``, "mask" ``[K]``, "image_id", "view" (which stored view of the image; keys the colour
augmentation) and "affine" ``[2, 3]``. :func:`collate_samples` batches it without densifying
anything; :func:`dense_heatmaps` renders the batch's heatmaps on the training device
(``centernet.engine.move_batch`` calls it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import default_collate, get_worker_info

from centernet.buffers import KeptBuffers
from centernet.heatmap import HeatmapCanvas

SPARSE_KEYS = ("hm_index", "hm_value", "hm_shape")
_CANVAS = HeatmapCanvas()  # the process's kept CPU heatmap buffers
_IMAGES = KeptBuffers()  # the process's kept CPU image batches (outside loader workers)


def _stack_images(images: list[Tensor]) -> Tensor:
    """uint8 ``[3, H, W]`` views -> ``[B, 3, H, W]`` with channels-last strides: one copy of each
    sample's ``[H, W, 3]`` pixels into the batch: in shared memory inside a loader worker (the
    batch goes to the main process), else into a kept buffer (:class:`KeptBuffers`)."""
    pixels = [image.permute(1, 2, 0) for image in images]  # [H, W, 3] each
    if get_worker_info() is not None:
        return default_collate(pixels).permute(0, 3, 1, 2)
    shape = (len(pixels), *pixels[0].shape)
    out = _IMAGES.take(math.prod(shape), pixels[0].dtype).tensor.view(shape)  # [B, H, W, 3]
    return torch.stack(pixels, out=out).permute(0, 3, 1, 2)


def _flatten_heatmaps(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-sample sparse heatmaps -> one list over the batch: indices into ``[B, C, H, W]``."""
    shape = tuple(int(v) for v in samples[0]["hm_shape"])
    if len(shape) != 3:
        raise ValueError(f"hm_shape must be (C, H, W), got {samples[0]['hm_shape']!r}")
    numel = shape[0] * shape[1] * shape[2]
    indices, values = [], []
    for b, sample in enumerate(samples):
        if tuple(int(v) for v in sample["hm_shape"]) != shape:
            raise ValueError(f"sample {b} has hm_shape {tuple(sample['hm_shape'])}, sample 0 has {shape}")
        indices.append(torch.as_tensor(sample["hm_index"]))
        values.append(torch.as_tensor(sample["hm_value"]))
        if indices[-1].shape != values[-1].shape or indices[-1].dim() != 1:
            raise ValueError(f"sample {b}: hm_index {tuple(indices[-1].shape)} and hm_value "
                             f"{tuple(values[-1].shape)} must be [P] of one length")
    index = torch.cat(indices).to(torch.int64)  # [P] each sample's own flat index
    owner = torch.repeat_interleave(torch.arange(len(samples)), torch.tensor([len(i) for i in indices]))  # [P]
    bad = (index < 0) | (index >= numel)
    if bool(bad.any()):
        b = int(owner[bad][0])
        own = index[owner == b]
        raise ValueError(f"sample {b}: hm_index values must lie in 0..{numel - 1} for hm_shape {shape}, "
                         f"got {int(own.min())}..{int(own.max())}")
    return {"hm_index": index.add_(owner * numel), "hm_value": torch.cat(values).to(torch.float32),
            "hm_shape": shape}


def collate_samples(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Training samples -> a batch, as stored: nothing dense is built on the CPU.

    Returns "image" uint8 ``[B, 3, H, W]`` (channels-last strides; pinned and copied as is),
    "hm_index" int64 ``[P]`` (flat index into ``[B, C, H/4, W/4]``: sample b's indices + b*C*H*W/16),
    "hm_value" float32 ``[P]``, "hm_shape" (C, H/4, W/4), and every other key stacked by
    ``torch.utils.data.default_collate`` (samples with a dense "hm" are stacked as they are).
    ``ValueError`` naming the sample on inconsistent or out-of-range sparse heatmaps.
    """
    if not samples:
        raise ValueError("collate_samples needs at least one sample")
    batch: dict[str, Any] = {}
    if "hm_index" in samples[0]:
        batch.update(_flatten_heatmaps(samples))
    for key in samples[0]:
        if key in SPARSE_KEYS:
            continue
        if key == "image":
            batch[key] = _stack_images([torch.as_tensor(s[key]) for s in samples])
        else:
            batch[key] = default_collate([s[key] for s in samples])
    return batch


def dense_heatmaps(batch: Mapping[str, Any], device: torch.device | str) -> Tensor:
    """The batch's heatmaps ``[B, C, H/4, W/4]`` float32 on ``device``: its dense "hm" moved, or
    its sparse one (:func:`collate_samples`) rendered there by ``centernet.heatmap.render_heatmaps``
    (on the CPU into buffers kept between batches, :class:`centernet.heatmap.HeatmapCanvas`: do not
    write into the result through ``.numpy()`` or ``.data``)."""
    if "hm" in batch:
        return batch["hm"].to(device, non_blocking=True)
    b = int(batch["image"].shape[0])
    index = batch["hm_index"].to(device, non_blocking=True)  # [P]
    value = batch["hm_value"].to(device, non_blocking=True)  # [P]
    return _CANVAS.render(index, value, (b, *batch["hm_shape"]))
