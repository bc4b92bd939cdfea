"""The official CenterNet (xingyizhou/CenterNet) target/loss code, transcribed as straight loops.

Used as the reference that ``centernet.targets``/``centernet.losses``/``centernet.color`` must
match, and as the baseline of ``benchmarks/encode.py`` and ``benchmarks/data_path.py``. Sources:
src/lib/utils/image.py (gaussian_radius, gaussian2D, draw_umich_gaussian, color_aug),
src/lib/datasets/sample/ctdet.py (the per-object loop), src/lib/models/losses.py (_neg_loss, RegL1Loss).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch


def official_gaussian_radius(det_size, min_overlap=0.7):
    height, width = det_size
    a1 = 1
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    sq1 = np.sqrt(b1 ** 2 - 4 * a1 * c1)
    r1 = (b1 + sq1) / 2
    a2 = 4
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    sq2 = np.sqrt(b2 ** 2 - 4 * a2 * c2)
    r2 = (b2 + sq2) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    sq3 = np.sqrt(b3 ** 2 - 4 * a3 * c3)
    r3 = (b3 + sq3) / 2
    return min(r1, r2, r3)


def official_gaussian2d(shape, sigma=1):
    m, n = [(ss - 1.0) / 2.0 for ss in shape]
    y, x = np.ogrid[-m:m + 1, -n:n + 1]
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    return h


def official_draw_umich_gaussian(heatmap, center, radius, k=1):
    diameter = 2 * radius + 1
    gaussian = official_gaussian2d((diameter, diameter), sigma=diameter / 6)
    x, y = int(center[0]), int(center[1])
    height, width = heatmap.shape[0:2]
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    masked_heatmap = heatmap[y - top:y + bottom, x - left:x + right]
    masked_gaussian = gaussian[radius - top:radius + bottom, radius - left:radius + right]
    if min(masked_gaussian.shape) > 0 and min(masked_heatmap.shape) > 0:
        np.maximum(masked_heatmap, masked_gaussian * k, out=masked_heatmap)
    return heatmap


def official_encode(boxes, classes, num_classes, output_size, max_objs=128):
    """The ctdet ``__getitem__`` target loop, boxes already in output-map pixels."""
    output_h, output_w = output_size
    hm = np.zeros((num_classes, output_h, output_w), dtype=np.float32)
    wh = np.zeros((max_objs, 2), dtype=np.float32)
    reg = np.zeros((max_objs, 2), dtype=np.float32)
    ind = np.zeros((max_objs), dtype=np.int64)
    reg_mask = np.zeros((max_objs), dtype=np.uint8)
    num_objs = min(len(boxes), max_objs)
    for k in range(num_objs):
        bbox = np.array(boxes[k], dtype=np.float32)
        cls_id = int(classes[k])
        bbox[[0, 2]] = np.clip(bbox[[0, 2]], 0, output_w - 1)
        bbox[[1, 3]] = np.clip(bbox[[1, 3]], 0, output_h - 1)
        h, w = bbox[3] - bbox[1], bbox[2] - bbox[0]
        if h > 0 and w > 0:
            radius = official_gaussian_radius((math.ceil(h), math.ceil(w)))
            radius = max(0, int(radius))
            ct = np.array([(bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2], dtype=np.float32)
            ct_int = ct.astype(np.int32)
            official_draw_umich_gaussian(hm[cls_id], ct_int, radius)
            wh[k] = 1.0 * w, 1.0 * h
            ind[k] = ct_int[1] * output_w + ct_int[0]
            reg[k] = ct - ct_int
            reg_mask[k] = 1
    return {"hm": hm, "wh": wh, "reg": reg, "ind": ind, "mask": reg_mask}


def official_neg_loss(logits, gt):
    pred = torch.clamp(logits.sigmoid(), min=1e-4, max=1 - 1e-4)
    pos_inds = gt.eq(1).float()
    neg_inds = gt.lt(1).float()
    neg_weights = torch.pow(1 - gt, 4)
    loss = 0
    pos_loss = torch.log(pred) * torch.pow(1 - pred, 2) * pos_inds
    neg_loss = torch.log(1 - pred) * torch.pow(pred, 2) * neg_weights * neg_inds
    num_pos = pos_inds.float().sum()
    pos_loss = pos_loss.sum()
    neg_loss = neg_loss.sum()
    if num_pos == 0:
        loss = loss - neg_loss
    else:
        loss = loss - (pos_loss + neg_loss) / num_pos
    return loss


def official_reg_l1(output, mask, ind, target):
    feat = output.permute(0, 2, 3, 1).contiguous()
    feat = feat.view(feat.size(0), -1, feat.size(3))
    dim = feat.size(2)
    idx = ind.unsqueeze(2).expand(ind.size(0), ind.size(1), dim)
    pred = feat.gather(1, idx)
    mask = mask.unsqueeze(2).expand_as(pred).float()
    loss = torch.nn.functional.l1_loss(pred * mask, target * mask, reduction="sum")
    return loss / (mask.sum() + 1e-4)


def random_coco_like_boxes(rng: np.random.Generator, n: int, output_size=(128, 128), num_classes=80):
    """Boxes in output pixels with COCO-like size spread (some partly outside the map)."""
    h, w = output_size
    sizes = np.exp(rng.uniform(np.log(1.0), np.log(100.0), size=(n, 2)))
    centers = rng.uniform(-4, [w + 4, h + 4], size=(n, 2))
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1).astype(np.float32)
    classes = rng.integers(0, num_classes, size=n)
    return boxes, classes


def official_color_aug(image, order, alphas, lighting, eig_val, eig_vec):
    """The official ``color_aug`` step by step, in place on a float32 BGR ``[H, W, 3]`` image in [0, 1].

    Its random draws are given: ``order`` the step names in the order ``random.shuffle`` left them,
    ``alphas`` the ``1 + uniform(-0.4, 0.4)`` of each step in that order, ``lighting`` the three
    ``normal(scale=0.1)`` weights. The grayscale and its mean are taken once, before the steps.
    """
    gs = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)  # [H, W]
    gs_mean = gs.mean()
    for name, alpha in zip(order, alphas):
        if name == "brightness":
            image *= alpha
        elif name == "contrast":  # blend with the mean gray
            image *= alpha
            image += gs_mean * (1 - alpha)
        elif name == "saturation":  # blend with the per-pixel gray
            image *= alpha
            image += gs[:, :, None] * (1 - alpha)
        else:
            raise ValueError(f"unknown colour step {name!r}")
    image += np.dot(eig_vec, eig_val * lighting)
    return image
