"""The whole training data path: samples/s delivered as ready device batches, per loader process.

COCO-like data: 80 classes, photo-like images of 640x480/480x640/640x427 px (smooth shading +
pixel noise, JPEG q90), overlapping objects of 8-300 px, 7 objects per image on average with
about 4 % of the images holding 50-70; input 512x512, batch 32, output 128x128.

One process, one thread (torch, OpenCV and Arrow single-threaded; on CPU the "device" is the CPU,
so everything the device would do is counted here too), best of ``--repeats``, interleaved. Rates
are samples per CPU-second of that process (``time.process_time``: on a shared machine the wall
clock measures the other tenants; wall-clock rates are printed too):

- *official-style*: ``benchmarks/official_style.py`` (per-sample JPEG decode, affine, numpy colour
  augmentation, normalisation, dense ``encode``; ``default_collate``). Its batches are ready.
- *ours*, over shards precomputed from the same images (``ShardDataset`` -> ``collate_samples``,
  ``num_workers=0``), three stages of one batch: ``loader`` (sparse uint8 batches, what a loader
  process delivers), ``+render`` (the dense ``[32, 80, 128, 128]`` heatmaps built by
  ``render_heatmaps``), ``+images`` (``move_batch`` with ``ColorAugment``: heatmaps rendered, images
  colour-augmented and normalised; exactly what ``train_step`` gets).
- *storage limit*: reading and decompressing the same shards' image column alone (Arrow IPC with
  only that field, zstd; ``jpg`` shards also decode each JPEG).

Bars: ours >= 15x the official-style loader, >= 50 % of the storage limit. Besides the serial
rates (one core does the loader's and the device's work one after the other) the table derives the
pipelined rate of one loader process feeding a device that works in parallel (a GPU, or a second
core): ``1 / max(loader cost, device cost)`` per sample, from the same measurements.

The CPU stands in for the device, but unlike CUDA's caching allocator the CPU allocator returns
large blocks to the OS, so every fresh block pays page faults: ours keeps its CPU image batches and
dense heatmaps between batches (``centernet.buffers.KeptBuffers``, reused once the previous batch
is dropped, as the loops here and ``train_epoch`` do); other large blocks (the official-style
batches, the float images of ``+images``) are backed by transparent huge pages as torch allows
(``THP_MEM_ALLOC_ENABLE=1``, set before torch loads unless the environment sets it).

Then the data-wait share of ``train_epoch`` (ResNet-18, 80 classes, 512x512, batch 32, torch on
every core) fed by ``DataLoader(ShardDataset, num_workers=1, collate_fn=collate_samples)`` with
colour augmentation (bar: < 5 %), with and without the loader's start (worker start + shuffle-buffer
fill). On a shared machine this is wall-clock time, as a trainer sees it.

    python benchmarks/data_path.py [--images 256] [--repeats 3] [--formats raw jpg] [--train-steps 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # read once, when torch loads

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.ipc as ipc  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_style import OfficialStyleDataset  # noqa: E402

from centernet.batch import collate_samples, dense_heatmaps  # noqa: E402
from centernet.color import ColorAugment  # noqa: E402
from centernet.engine import move_batch, train_epoch  # noqa: E402
from centernet.losses import CenterNetLoss  # noqa: E402
from centernet.models import build_model  # noqa: E402
from pipeline.precompute import precompute  # noqa: E402
from pipeline.reader import ShardDataset, decode_image, read_manifest  # noqa: E402
from pipeline.schema import PrecomputeSettings  # noqa: E402

BATCH = 32
INPUT = 512
NUM_CLASSES = 80


def object_count(rng: np.random.Generator) -> int:
    """COCO-like: mean ~7, a long tail (about 4 % of the images hold 50-70 objects)."""
    return int(rng.integers(50, 71)) if rng.random() < 0.04 else int(rng.poisson(4.8))


def coco_like(root: Path, num_images: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``root/images/*.jpg`` + ``root/annotations.json`` (80 categories); returns both paths."""
    rng = np.random.default_rng(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        w, h = [(640, 480), (480, 640), (640, 427)][int(rng.integers(3))]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        shade = rng.uniform(40, 200, 3) + rng.uniform(-60, 60, 3) * (xx / w)[..., None] \
            + rng.uniform(-60, 60, 3) * (yy / h)[..., None]  # [H, W, 3]
        image = shade + rng.normal(0, 8, size=(h, w, 3))
        for _ in range(object_count(rng)):
            bw, bh = np.exp(rng.uniform(np.log(8), np.log(300), size=2))
            x1, y1 = rng.uniform(0, w - min(bw, w - 1)), rng.uniform(0, h - min(bh, h - 1))
            x2, y2 = min(w, x1 + bw), min(h, y1 + bh)
            color = rng.uniform(0, 255, 3)
            if rng.random() < 0.5:
                cv2.rectangle(image, (int(x1), int(y1)), (int(x2) - 1, int(y2) - 1), color.tolist(), -1)
            else:
                center = (int((x1 + x2) / 2), int((y1 + y2) / 2))
                cv2.ellipse(image, center, (max(1, int((x2 - x1) / 2)), max(1, int((y2 - y1) / 2))), 0, 0, 360,
                            color.tolist(), -1)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(rng.integers(1, NUM_CLASSES + 1)),
                                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                                "area": float((x2 - x1) * (y2 - y1)), "iscrowd": 0})
        name = f"{image_id:06d}.jpg"
        cv2.imwrite(str(images_dir / name), np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
    categories = [{"id": i, "name": f"class{i}"} for i in range(1, NUM_CLASSES + 1)]
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return images_dir, path


def official_style(images: Path, annotations: Path) -> Callable[[], int]:
    def run() -> int:
        loader = DataLoader(OfficialStyleDataset(images, annotations, INPUT), batch_size=BATCH, shuffle=True,
                            num_workers=0)
        return sum(int(batch["input"].shape[0]) for batch in loader)
    return run


def ours(shards: Path, stage: str, device: str) -> Callable[[], int]:
    """One epoch of ready batches at ``stage``: "loader", "+render" or "+images" (on ``device``)."""
    def run() -> int:
        loader = DataLoader(ShardDataset(shards, rank=0, world_size=1, shuffle=True, seed=0), batch_size=BATCH,
                            num_workers=0, collate_fn=collate_samples, pin_memory=device.startswith("cuda"))
        color = ColorAugment(0)
        n = 0
        for batch in loader:
            if stage == "+render":
                dense_heatmaps(batch, device)
            elif stage == "+images":
                move_batch(batch, device, color=color)
            n += int(batch["image"].shape[0])
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return n
    return run


def storage_limit(shards: Path) -> Callable[[], int]:
    """Read + decompress the shards' image column alone (and decode the images of jpg/png shards)."""
    manifest = read_manifest(shards)
    fmt, size = manifest["settings"]["image_format"], manifest["input_size"]

    def run() -> int:
        n = 0
        for entry in manifest["shards"]:
            with pa.OSFile(str(shards / entry["file"])) as source:
                reader = ipc.open_file(source)
                field = reader.schema.get_field_index("image")
                reader = ipc.open_file(source, options=ipc.IpcReadOptions(included_fields=[field]))
                for b in range(reader.num_record_batches):
                    column = reader.get_batch(b).column(0)
                    if fmt != "raw":
                        _, offsets, data = column.buffers()
                        offsets = np.frombuffer(offsets, np.int32)[column.offset: column.offset + len(column) + 1]
                        pixels = np.frombuffer(data, np.uint8)
                        for i in range(len(column)):
                            decode_image(pixels[offsets[i]:offsets[i + 1]], fmt, size)
                    n += len(column)
        return n
    return run


def throughput(images: Path, annotations: Path, shards: dict[str, Path], repeats: int, device: str) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    pa.set_cpu_count(1)
    cases: dict[str, Callable[[], int]] = {"official-style": official_style(images, annotations)}
    for fmt, path in shards.items():
        cases[f"storage limit {fmt}"] = storage_limit(path)
        for stage in ("loader", "+render", "+images"):
            cases[f"ours {fmt} {stage}"] = ours(path, stage, device)
    cpu: dict[str, float] = {}  # best CPU seconds per sample
    wall: dict[str, float] = {}
    for fn in cases.values():  # warm-up: imports, page cache
        fn()
    for _ in range(repeats):
        for name, fn in cases.items():
            c0, w0 = time.process_time(), time.perf_counter()
            n = fn()
            cpu[name] = min(cpu.get(name, float("inf")), (time.process_time() - c0) / n)
            wall[name] = min(wall.get(name, float("inf")), (time.perf_counter() - w0) / n)
    base = cpu["official-style"]
    print(f"\n== ready batches of {BATCH} at {INPUT}x{INPUT}, {NUM_CLASSES} classes on {device}: 1 process, "
          f"1 thread (best of {repeats}) ==")
    print(f"{'case':24s} {'CPU ms/sample':>13s} {'samples/CPU-s':>14s} {'(wall)':>8s} {'vs official':>12s} "
          f"{'of storage':>11s}")
    for name, sec in cpu.items():
        fmt = name.split()[1] if name.startswith("ours") else None
        limit = f"{100 * cpu[f'storage limit {fmt}'] / sec:10.0f}%" if fmt else ""
        print(f"{name:24s} {1e3 * sec:13.3f} {1 / sec:14.1f} {1 / wall[name]:8.1f} {base / sec:11.1f}x {limit}")
    for fmt in shards:
        limit = cpu[f"storage limit {fmt}"]
        loader = cpu[f"ours {fmt} loader"]
        for stage in ("+render", "+images"):
            serial = cpu[f"ours {fmt} {stage}"]
            pipelined = max(loader, serial - loader)  # loader process || device
            for how, sec in (("serial", serial), ("pipelined", pipelined)):
                r, s = base / sec, limit / sec
                print(f"{fmt} {stage:8s} {how:9s}: {1 / sec:7.1f} samples/s = {r:5.1f}x official-style "
                      f"({'meets' if r >= 15 else 'MISSES'} 15x), {100 * s:3.0f}% of the storage limit "
                      f"({'meets' if s >= 0.5 else 'MISSES'} 50%)")


def data_wait(shards: Path, steps: int) -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = build_model("resnet18", NUM_CLASSES)
    kw = dict(criterion=CenterNetLoss(), optimizer=torch.optim.Adam(model.parameters(), lr=1e-4),
              weights={"hm": 1.0, "wh": 0.1, "reg": 1.0}, device="cpu", color=ColorAugment(0))
    loader = DataLoader(ShardDataset(shards, rank=0, world_size=1, shuffle=True, seed=0), batch_size=BATCH,
                        num_workers=1, drop_last=True, collate_fn=collate_samples, prefetch_factor=2)
    fresh = train_epoch(model, loader, max_steps=steps, **kw)  # a fresh iterator: worker start included
    it = iter(loader)
    t0 = time.perf_counter()
    first = next(it)
    startup = time.perf_counter() - t0
    steady = train_epoch(model, itertools.chain([first], it), max_steps=steps, **kw)
    print(f"{fresh.steps} steps, {fresh.seconds / fresh.steps:.1f} s/step: data wait "
          f"{100 * fresh.data_wait_share:.2f}% incl. loader start, {100 * steady.data_wait_share:.2f}% steady "
          f"(first batch {startup:.2f} s) ({'meets' if fresh.data_wait_share < 0.05 else 'MISSES'} the 5% bar)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--formats", nargs="+", default=["raw", "jpg"], choices=["raw", "jpg", "png"])
    parser.add_argument("--train-steps", type=int, default=2, help="0 skips the data-wait measurement")
    parser.add_argument("--device", default="cpu",
                        help="where ours renders/normalises (e.g. cuda: pinned batches; read the wall-clock rates)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        images, annotations = coco_like(Path(tmp) / "data", args.images)
        counts = np.bincount([a["image_id"] for a in json.loads(annotations.read_text())["annotations"]],
                             minlength=args.images + 1)[1:]
        shards = {fmt: Path(tmp) / f"shards-{fmt}" for fmt in args.formats}
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1")
        try:
            for fmt, out in shards.items():
                precompute(images, annotations, out, PrecomputeSettings.of(input_size=INPUT, image_format=fmt),
                           chunk_size=32, progress=False)
        finally:
            ray.shutdown()
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.images} images, "
              f"objects per image mean {counts.mean():.1f}, max {counts.max()}, {int((counts >= 50).sum())} with 50+")
        for fmt, path in shards.items():
            m = read_manifest(path)
            print(f"{fmt} shards: {sum(s['bytes'] for s in m['shards']) / m['num_samples']:,.0f} bytes/sample")
        throughput(images, annotations, shards, args.repeats, args.device)
        if args.train_steps > 0:
            print(f"\n== data-wait share: ResNet-18 ({NUM_CLASSES} classes) at {INPUT}x{INPUT}, batch {BATCH}, "
                  f"{os.cpu_count()} threads, DataLoader(num_workers=1), colour augmentation on ==")
            data_wait(shards[args.formats[0]], args.train_steps)
        print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
