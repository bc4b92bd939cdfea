"""Running a model on batches: detections, and COCO evaluation over a loader."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from torch import Tensor, nn

from centernet.data import CategoryMap
from centernet.decode import boxes_to_original, decode, decode_probs, flip_merge, to_coco_results
from centernet.evaluate import CocoMetrics, evaluate_coco, load_ground_truth
from centernet.transforms import normalize_batch


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, *, k: int = 100, flip_test: bool = False) -> Tensor:
    """images ``[B, 3, H, W]`` (normalised float, or uint8 BGR) -> detections ``[B, K, 6]``, output-map px.

    The prediction is the last stack's head dict (``model(x)[-1]``; every model returns one per stack).
    """
    model.eval()
    images = normalize_batch(images)
    out = model(images)[-1]
    if not flip_test:
        return decode(out["hm"], out["wh"], out["reg"], k=k)
    out_flipped = model(images.flip(3))[-1]
    heat, wh, reg = flip_merge(out, out_flipped)
    return decode_probs(heat, wh, reg, k=k)


def detections_to_results(
    dets: Tensor, image_ids: Tensor, affines: Tensor, categories: CategoryMap,
    image_sizes: Mapping[int, tuple[int, int]] | None = None, score_threshold: float = 0.0,
) -> list[dict[str, Any]]:
    """Batch detections ``[B, K, 6]`` + per-image affines ``[B, 2, 3]`` -> COCO result dicts."""
    results: list[dict[str, Any]] = []
    for det, image_id, affine in zip(dets.cpu().numpy(), image_ids.tolist(), affines.cpu().numpy()):
        hw = image_sizes.get(int(image_id)) if image_sizes else None
        mapped = boxes_to_original(det, affine.astype(np.float64), hw)
        results += to_coco_results(mapped, int(image_id), categories, score_threshold)
    return results


def predict_loader(
    model: nn.Module,
    loader: Iterable[Mapping[str, Tensor]],
    categories: CategoryMap,
    image_sizes: Mapping[int, tuple[int, int]] | None = None,
    *,
    device: torch.device | str = "cpu",
    k: int = 100,
    flip_test: bool = False,
    on_batch: Callable[[Tensor, Tensor], None] | None = None,
) -> tuple[list[dict[str, Any]], list[int]]:
    """COCO result dicts (original pixels, dataset category ids) of every image the loader yields,
    and the ids of those images in order. ``on_batch(images, detections)`` sees each batch
    (``[B, 3, H, W]`` as loaded, ``[B, K, 6]`` output-map pixels), e.g. to draw a preview."""
    results: list[dict[str, Any]] = []
    seen: list[int] = []
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        dets = predict(model, images, k=k, flip_test=flip_test)
        results += detections_to_results(dets, batch["image_id"], batch["affine"], categories, image_sizes)
        seen += [int(i) for i in batch["image_id"]]
        if on_batch is not None:
            on_batch(images, dets)
    return results, seen


def image_sizes_of(gt: COCO) -> dict[int, tuple[int, int]]:
    """``{image_id: (height, width)}`` of a ground truth."""
    return {i: (img["height"], img["width"]) for i, img in gt.imgs.items()}


def evaluate_model(
    model: nn.Module,
    loader: Iterable[Mapping[str, Tensor]],
    ground_truth: COCO | str | dict[str, Any],
    categories: CategoryMap,
    *,
    device: torch.device | str = "cpu",
    k: int = 100,
    flip_test: bool = False,
) -> tuple[CocoMetrics, list[dict[str, Any]]]:
    """COCO AP of ``model`` over a loader of samples with "image", "image_id" and "affine".

    Only the images the loader yields are evaluated (each once), against ``ground_truth``.
    """
    gt = ground_truth if isinstance(ground_truth, COCO) else load_ground_truth(ground_truth)
    results, seen = predict_loader(model, loader, categories, image_sizes_of(gt), device=device, k=k,
                                   flip_test=flip_test)
    return evaluate_coco(gt, results, image_ids=seen), results
