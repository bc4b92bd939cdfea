"""Reader throughput vs an official-style per-sample loader, and the data-wait share of training.

(``benchmarks/data_path.py`` measures the whole path at batch 32 against the storage limit too.)

1. Throughput (target: >= 5x), one process, one core (torch and OpenCV single-threaded), input 512,
   80 classes: samples/s turned into training tensors by

   - *official-style*: ``benchmarks/official_style.py`` (JPEG decode from disk -> official random
     scale/shift/flip affine -> warpAffine -> official colour augmentation -> normalisation ->
     dense ``encode`` of the 80x128x128 heatmap).
   - *reader*: ``pipeline.reader.ShardDataset`` over shards precomputed with official augmentation,
     for every stored image format (uint8 images and sparse heatmaps, as stored).

   Both are measured per sample (``for s in dataset``) and through a ``DataLoader(batch_size=16,
   num_workers=0)`` (collation included; for the reader ``collate_samples`` and the dense heatmaps
   rendered on the CPU by ``dense_heatmaps``), best of ``--repeats``, interleaved in one run. Shard
   bytes per sample are reported per format (synthetic images are flat shapes and compress far
   better than photographs, so the raw/jpg size ratio here understates what real data costs).

2. Data-wait share (target: < 5 %): ``centernet.engine.train_epoch`` of a ResNet-18 (80 classes) fed
   by ``DataLoader(ShardDataset(...), batch_size=16, num_workers=1, collate_fn=collate_samples)`` at
   input 128 and 512.

   ``--noise SIGMA`` adds Gaussian pixel noise to the source images (re-saved as JPEG q95), which
   makes their compressibility and decoding cost closer to (worse than) photographs.

    python benchmarks/reader.py [--images 64] [--repeats 3] [--noise 0] [--steps-128 12] [--steps-512 3]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import ray
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shard_size import coco_like  # noqa: E402  (the 80-class synthetic set of the size benchmark)

from official_style import OfficialStyleDataset  # noqa: E402

from centernet.batch import collate_samples, dense_heatmaps  # noqa: E402
from centernet.engine import train_epoch  # noqa: E402
from centernet.losses import CenterNetLoss  # noqa: E402
from centernet.models import build_model  # noqa: E402
from pipeline.precompute import precompute  # noqa: E402
from pipeline.reader import ShardDataset, read_manifest  # noqa: E402
from pipeline.schema import IMAGE_FORMATS, PrecomputeSettings  # noqa: E402

BATCH = 16


def per_sample(make: Callable[[], Iterable]) -> Callable[[], int]:
    def run() -> int:
        n = 0
        for _ in make():
            n += 1
        return n
    return run


def batched(make: Callable[[], Iterable], map_style: bool) -> Callable[[], int]:
    def run() -> int:
        ds = make()
        if map_style:  # official-style: dense batches from default collate
            return sum(int(b["hm"].shape[0]) for b in DataLoader(ds, batch_size=BATCH, shuffle=True))
        loader = DataLoader(ds, batch_size=BATCH, num_workers=0, collate_fn=collate_samples)
        return sum(int(dense_heatmaps(b, "cpu").shape[0]) for b in loader)
    return run


def best_rate(fn: Callable[[], int], best: dict[str, float], name: str) -> None:
    t0 = time.perf_counter()
    n = fn()
    rate = n / (time.perf_counter() - t0)
    best[name] = max(best.get(name, 0.0), rate)


def throughput(images: Path, annotations: Path, shards: dict[str, Path], repeats: int) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    pa.set_cpu_count(1)  # Arrow's decompression threads
    def official() -> OfficialStyleDataset:
        return OfficialStyleDataset(images, annotations, 512, seed=0)

    class Official:  # iterable view of the map-style dataset
        def __iter__(self):
            ds = official()
            return (ds[i] for i in range(len(ds)))

    cases: dict[str, Callable[[], int]] = {
        "official-style": per_sample(Official),
        "official-style +collate": batched(official, map_style=True),
    }
    for fmt, path in shards.items():
        tag = f"reader {fmt}"
        make = (lambda p=path: ShardDataset(p, rank=0, world_size=1))
        cases[tag] = per_sample(make)
        cases[f"{tag} +collate"] = batched(make, map_style=False)
    best: dict[str, float] = {}
    for fn in cases.values():  # warm-up (imports, page cache)
        fn()
    for _ in range(repeats):
        for name, fn in cases.items():
            best_rate(fn, best, name)
    base, base_c = best["official-style"], best["official-style +collate"]
    print(f"\n== reader throughput, 1 process, 1 thread, input 512, 80 classes (best of {repeats}) ==")
    print(f"{'case':38s} {'samples/s':>10s} {'vs official':>12s}")
    for name, rate in best.items():
        ref = base_c if name.endswith("+collate") else base
        print(f"{name:38s} {rate:10.1f} {rate / ref:11.2f}x")
    default = PrecomputeSettings().image_format
    r = best[f"reader {default}"] / base
    rc = best[f"reader {default} +collate"] / base_c
    print(f"default reader ({default}) vs official-style: {r:.2f}x per sample "
          f"({'meets' if r >= 5 else 'MISSES'} the 5x target); {rc:.2f}x collated (heatmaps rendered)")
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE", "0")
    print(f"(collated rates include allocating the dense [16,80,128,128] float32 heatmaps, 84 MB, for "
          f"both loaders; THP_MEM_ALLOC_ENABLE={thp}: with 1, torch backs it by huge pages)")


def shard_bytes(shards: dict[str, Path]) -> None:
    print("\n== stored bytes per sample (whole shard: image + targets), input 512 ==")
    for fmt, path in shards.items():
        m = read_manifest(path)
        total = sum(s["bytes"] for s in m["shards"])
        print(f"{fmt:4s}: {total / m['num_samples']:>10,.0f} bytes/sample")


def data_wait(shard_dir: Path, steps: int, size: int) -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    ds = ShardDataset(shard_dir, rank=0, world_size=1, shuffle=True, seed=0)
    model = build_model("resnet18", ds.num_classes)
    criterion = CenterNetLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    weights = {"hm": 1.0, "wh": 0.1, "reg": 1.0}
    kw = dict(criterion=criterion, optimizer=optimizer, weights=weights, device="cpu")
    loader = DataLoader(ds, batch_size=BATCH, num_workers=1, drop_last=True, collate_fn=collate_samples)
    # whole epochs as a trainer runs them: a fresh loader iterator (worker start included)
    fresh = train_epoch(model, loader, max_steps=steps, **kw)
    # steady state: the first batch (worker start, shuffle-buffer fill) is taken out of the timing
    it = iter(loader)
    t0 = time.perf_counter()
    first = next(it)
    startup = time.perf_counter() - t0
    steady = train_epoch(model, itertools.chain([first], it), max_steps=steps, **kw)
    step = steady.seconds / max(steady.steps, 1)
    print(f"input {size}: {fresh.steps} steps of batch {BATCH}, {fresh.seconds / fresh.steps:.2f} s/step; "
          f"data wait {100 * fresh.data_wait_share:.2f}% incl. loader start, "
          f"{100 * steady.data_wait_share:.2f}% steady ({step:.2f} s/step, first batch {startup:.2f} s) "
          f"({'meets' if fresh.data_wait_share < 0.05 else 'MISSES'} the 5% target)")


def add_noise(images: Path, sigma: float, seed: int = 0) -> None:
    """Gaussian noise of ``sigma`` grey levels on every image of ``images`` (re-saved as JPEG q95)."""
    rng = np.random.default_rng(seed)
    for path in sorted(images.iterdir()):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR).astype(np.float32)
        image += rng.normal(0, sigma, image.shape).astype(np.float32)
        cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps-128", type=int, default=12)
    parser.add_argument("--steps-512", type=int, default=3)
    parser.add_argument("--noise", type=float, default=0.0, help="pixel noise sigma on the source images")
    parser.add_argument("--skip-train", action="store_true", help="only throughput and bytes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        images, annotations = coco_like(Path(tmp) / "data", args.images)
        if args.noise > 0:
            add_noise(images, args.noise)
        shards = {fmt: Path(tmp) / f"shards-{fmt}" for fmt in IMAGE_FORMATS}
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            for fmt, out in shards.items():
                precompute(images, annotations, out, PrecomputeSettings.of(input_size=512, image_format=fmt),
                           chunk_size=16, progress=False)
            if not args.skip_train:
                views = max(1, -(-args.steps_128 * BATCH // args.images))  # enough samples for the steps
                precompute(images, annotations, Path(tmp) / "shards-128",
                           PrecomputeSettings.of(input_size=128, views=views), chunk_size=16, progress=False)
        finally:
            ray.shutdown()
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
              f"{args.images} synthetic images 400-640 px, 3-12 objects, 80 classes, noise sigma {args.noise}")
        shard_bytes(shards)
        throughput(images, annotations, shards, args.repeats)
        if not args.skip_train:
            print(f"\n== data-wait share, ResNet-18 (80 classes) on CPU, DataLoader(batch_size={BATCH}, "
                  f"num_workers=1) ==")
            data_wait(Path(tmp) / "shards-128", args.steps_128, 128)
            data_wait(shards[PrecomputeSettings().image_format], args.steps_512, 512)


if __name__ == "__main__":
    main()
