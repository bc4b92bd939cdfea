"""COCO AP over the validation data inside a DDP job: one evaluation code path with everything else.

Each rank runs :func:`centernet.inference.predict_loader` on its share (``pipeline.loader``: every
image on exactly one rank), the results are gathered on rank 0, which scores them once with
:func:`centernet.evaluate.evaluate_coco` — the same functions ``centernet evaluate`` and the demo
use through :func:`centernet.inference.evaluate_model`.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.loader import DataInfo, make_loader
from pipeline.shards import read_bytes, resolve

_GT_CACHE: dict[str, Any] = {}


def ground_truth(path: str) -> Any:
    """The pycocotools ``COCO`` of an annotation file (local path or URI), cached per process."""
    from centernet.evaluate import load_ground_truth

    if path not in _GT_CACHE:
        fs, where = resolve(path)
        _GT_CACHE[path] = load_ground_truth(json.loads(read_bytes(fs, where)))
    return _GT_CACHE[path]


def gather(obj: Any, world_size: int) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` outside a process group)."""
    import torch.distributed as dist

    if world_size == 1 or not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def evaluate_distributed(
    module: Any, info: DataInfo, *, rank: int, world_size: int, batch_size: int, device: Any,
    preview_images: int = 0,
) -> tuple[dict[str, float] | None, Any]:
    """COCO metrics on rank 0 (``None`` elsewhere) and, on rank 0, ``(images [N,3,H,W] normalised,
    detections [N,K,6], heatmaps [N,C,H/4,W/4])`` of ``preview_images`` images for a preview."""
    from centernet.data import CategoryMap
    from centernet.evaluate import evaluate_coco
    from centernet.inference import image_sizes_of, predict_loader

    if info.annotations is None:
        raise ValueError(f"{info.path}: no ground-truth annotation file to evaluate against")
    gt = ground_truth(info.annotations)
    cats = CategoryMap.from_dict(info.classes)
    loader = make_loader(info, rank=rank, world_size=world_size, batch_size=batch_size, train=False)
    preview: list[Any] = []

    def keep_preview(images: Any, dets: Any) -> None:
        if not preview and preview_images > 0 and rank == 0:
            preview.extend(_preview_of(module, images[:preview_images], dets[:preview_images]))

    results, seen = predict_loader(module, loader, cats, image_sizes_of(gt), device=device,
                                   on_batch=keep_preview)
    gathered = gather((results, seen), world_size)
    if rank != 0:
        return None, None
    all_results = [r for rs, _ in gathered for r in rs]
    all_seen = [i for _, ids in gathered for i in ids]
    if len(all_seen) != len(set(all_seen)):
        dup = sorted({i for i in all_seen if all_seen.count(i) > 1})[:10]
        raise RuntimeError(f"validation images given to more than one rank (ids {dup}); reader sharding bug")
    metrics = evaluate_coco(gt, all_results, image_ids=all_seen).as_dict()
    return metrics, (tuple(preview) if preview else None)


def _preview_of(module: Any, images: Any, dets: Any) -> list[Any]:
    """[normalised images, detections, heatmap probabilities] on the CPU, for a preview figure."""
    import torch

    from centernet.transforms import normalize_batch

    images = normalize_batch(images)  # [N, 3, H, W] float32
    with torch.no_grad():
        heat = torch.sigmoid(module(images)[-1]["hm"].float())  # last stack: [N, C, H/4, W/4]
    return [images.cpu(), dets.cpu(), heat.cpu()]
