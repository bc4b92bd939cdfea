"""``centernet predict``: detections on image files -> ``detections.json`` and drawn images.

Inputs are files, folders (their image files) or globs, relative to the working directory. Images
are read and letterboxed in DataLoader workers, run through the network in batches (autocast on
GPU) and mapped back to their pixels; unreadable files are listed and skipped. The output folder
gets ``detections.json`` (COCO results: ``image_id``, the dataset's ``category_id``, ``bbox`` x y w h,
``score``, plus ``category_name`` and ``file_name``) and one picture per image under ``images/``.
"""

from __future__ import annotations

import glob
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.shards import atomic_write_bytes, resolve
from workflows.errors import UserError
from workflows.model_source import LoadedModel

DETECTIONS_FILE = "detections.json"
DRAWN_DIR = "images"
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class PredictResult:
    """What a prediction run did."""

    images: int  # images predicted (readable ones)
    detections: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    seconds: float = 0.0
    detections_path: Path | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def collect_images(inputs: Sequence[str], cwd: str | Path | None = None) -> list[Path]:
    """Files, folders (their image files, not recursive) and globs (``**`` recursive) -> image
    paths in order, without duplicates. ``UserError`` naming an input that gives no images."""
    from centernet.image_files import IMAGE_EXTENSIONS

    base = Path(cwd or Path.cwd())
    found: list[Path] = []
    for text in inputs:
        path = Path(text).expanduser()
        path = path if path.is_absolute() else base / path
        if _GLOB_CHARS & set(text):
            matches = [Path(m) for m in sorted(glob.glob(str(path), recursive=True))]
            images = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_EXTENSIONS]
            if not images:
                raise UserError(f"--images {text}: matches no image files ({' '.join(IMAGE_EXTENSIONS)})")
        elif path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not images:
                raise UserError(f"--images {text}: no image files ({' '.join(IMAGE_EXTENSIONS)}) in this directory")
        elif path.is_file():
            images = [path]
        else:
            raise UserError(f"--images {text}: no such file or directory (resolved to {path})")
        found += images
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise UserError("--images: give at least one image file, folder or glob")
    return unique


def image_ids(paths: Sequence[Path]) -> list[int]:
    """COCO image ids for files: the numbers their names are (COCO's ``000000139.jpg`` -> 139) when
    every name is a distinct number, else the position 1, 2, ... in the input order."""
    stems = [p.stem for p in paths]
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(paths) + 1))


def resolve_device(device: str) -> Any:
    """``torch.device`` for ``--device``; ``UserError`` when CUDA is asked for but absent."""
    import torch

    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"--device {device!r}: use cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
    return torch.device(device)


def input_size_option(size: int | None, default: tuple[int, int]) -> tuple[int, int]:
    """``--input-size S`` -> (S, S), else the model's own; ``UserError`` unless a multiple of 32."""
    from centernet.transforms import check_input_size

    if size is None:
        return default
    try:
        check_input_size(size, "--input-size")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return size, size


def _drawn_names(paths: Sequence[Path]) -> list[str]:
    from centernet.image_files import IMAGE_EXTENSIONS

    names = [p.name if p.suffix.lower() in IMAGE_EXTENSIONS else f"{p.name}.jpg" for p in paths]
    repeated = {n for n in names if names.count(n) > 1}
    return [f"{i + 1:06d}_{n}" if n in repeated else n for i, n in enumerate(names)]


def _display(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def predict_images(
    loaded: LoadedModel,
    paths: Sequence[Path],
    out_dir: str | Path,
    *,
    threshold: float = 0.3,
    flip: bool = False,
    input_size: tuple[int, int] | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    amp: bool = True,
    loader_workers: int = 0,
    draw: bool = True,
    progress: bool | None = None,
    on_skip: Callable[[str, str], None] | None = None,
    cwd: str | Path | None = None,
) -> PredictResult:
    """Predict every image of ``paths`` with ``loaded`` and write ``out_dir`` (module docstring).
    ``progress=None`` shows a bar when there is more than one batch and stderr is a terminal."""
    import cv2
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from centernet.detect import detect_batch, named_results
    from centernet.image_files import ImageFileDataset, collate_images
    from centernet.visualize import draw_detections

    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"--threshold {threshold}: must be between 0 and 1")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be >= 1")
    dev = resolve_device(device)
    size = input_size or loaded.spec.input_size
    categories = loaded.spec.categories
    out = Path(out_dir)
    (out / DRAWN_DIR if draw else out).mkdir(parents=True, exist_ok=True)
    base = Path(cwd or Path.cwd()).resolve()
    ids, drawn = image_ids(paths), _drawn_names(paths)
    model = loaded.model.to(dev).eval()
    amp_dtype = torch.float16 if amp and dev.type == "cuda" else None
    dataset = ImageFileDataset(paths, size, keep_original=draw)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=loader_workers, collate_fn=collate_images,
                        pin_memory=dev.type == "cuda")
    show = progress if progress is not None else len(paths) > batch_size
    results: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    done = 0
    start = time.perf_counter()
    with tqdm(total=len(paths), desc="predict", unit="img", disable=not show or None) as bar:
        for batch in loader:
            keep = [i for i, ok in enumerate(batch["ok"]) if ok]
            for i in (i for i, ok in enumerate(batch["ok"]) if not ok):
                skipped.append((_display(paths[batch["index"][i]], base), batch["error"][i]))
                if on_skip is not None:
                    on_skip(*skipped[-1])
            if keep:
                images = batch["image"][keep].to(dev, non_blocking=True)  # [B, 3, H, W] uint8
                dets = detect_batch(model, images, batch["affine"][keep], [batch["hw"][i] for i in keep],
                                    flip_test=flip, amp_dtype=amp_dtype)
                for det, i in zip(dets, keep):
                    index = batch["index"][i]
                    name = _display(paths[index], base)
                    results += [{**r, "file_name": name} for r in named_results(det, ids[index], categories, threshold)]
                    if draw:
                        picture = draw_detections(batch["original"][i], det, categories.names,
                                                  score_threshold=threshold)
                        cv2.imwrite(str(out / DRAWN_DIR / drawn[index]), picture)
                done += len(keep)
            bar.update(len(batch["ok"]))
    seconds = time.perf_counter() - start
    target = out / DETECTIONS_FILE
    fs, local = resolve(target)
    atomic_write_bytes(fs, local, json.dumps(results).encode())
    return PredictResult(done, len(results), skipped, seconds, target)
