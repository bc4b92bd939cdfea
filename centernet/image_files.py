"""Image files for inference: decoding, and a dataset that letterboxes them and flags bad files.

A file that cannot be read or decoded does not stop a run over thousands of images: the dataset
yields it with ``ok = False`` and the reason, and the caller lists and skips it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from centernet.detect import letterbox_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def decode_image(data: bytes, what: str = "image") -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, ...) -> uint8 BGR ``[H, W, 3]``; ``ValueError`` naming ``what``."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if image is None:
        raise ValueError(f"{what}: not a decodable image ({len(data)} bytes)")
    return image


def read_image(path: str | Path) -> np.ndarray:
    """uint8 BGR ``[H, W, 3]`` of an image file, decoded exactly as :func:`decode_image` decodes its
    bytes; ``FileNotFoundError``/``ValueError`` naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_image(data, str(path))


class ImageFileDataset(Dataset):
    """Image files -> letterboxed samples for :func:`centernet.detect.detect_batch`.

    Each item: "image" uint8 ``[3, H, W]`` BGR at ``input_size`` (H, W), "affine" float64 ``[2, 3]``
    (output-map px -> original px), "hw" (H0, W0), "index", "ok", "error" (why a file was skipped)
    and, with ``keep_original``, "original" (the decoded ``[H0, W0, 3]`` image, for drawing).
    """

    def __init__(self, paths: Sequence[str | Path], input_size: tuple[int, int], *, keep_original: bool = False):
        self.paths = [Path(p) for p in paths]
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.keep_original = keep_original

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        h, w = self.input_size
        try:
            original = read_image(self.paths[index])
        except (OSError, ValueError) as exc:
            return {"image": torch.zeros(3, h, w, dtype=torch.uint8), "affine": np.zeros((2, 3)),
                    "hw": (0, 0), "index": index, "ok": False, "error": str(exc), "original": None}
        image, affine = letterbox_image(original, self.input_size)
        return {"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(), "affine": affine,
                "hw": original.shape[:2], "index": index, "ok": True, "error": "",
                "original": original if self.keep_original else None}


def collate_images(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack "image" ``[B, 3, H, W]`` and "affine" ``[B, 2, 3]``; everything else as lists."""
    batch: dict[str, Any] = {"image": torch.stack([s["image"] for s in samples]),
                             "affine": np.stack([s["affine"] for s in samples])}
    for key in ("hw", "index", "ok", "error", "original"):
        batch[key] = [s[key] for s in samples]
    return batch
