"""Precompute throughput with 2 Ray workers vs 1 (target: >= 1.7x), in one Ray instance.

Synthetic COCO-like images (320-640 px, 2-8 objects), official augmentation, input 512. Workers
are warmed up first (imports, albumentations), then the same dataset is precomputed into fresh
directories with ``workers=1`` and ``workers=2``; each timing is the best of ``--repeats``.

    python benchmarks/precompute.py [--images 128] [--chunk-size 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import ray

from centernet.synthetic import make_synthetic_coco
from pipeline.precompute import precompute
from pipeline.schema import PrecomputeSettings


def _warm() -> int:
    import albumentations  # noqa: F401  (the import the first real task would pay for)

    import pipeline.precompute  # noqa: F401

    return 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--input-size", type=int, default=512)
    args = parser.parse_args()
    settings = PrecomputeSettings(input_size=args.input_size, views=1)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ds = make_synthetic_coco(Path(tmp) / "data", args.images, seed=0, image_size=(320, 640),
                                     objects_per_image=(2, 8), object_size=(20, 200))
            warm = ray.remote(num_cpus=1)(_warm)
            ray.get([warm.remote() for _ in range(4)])
            precompute(ds.images_dir, ds.annotations, Path(tmp) / "warm", settings,
                       chunk_size=args.chunk_size, workers=2, progress=False)
            best: dict[int, float] = {}
            cpu: dict[int, float] = {}
            for rep in range(args.repeats):
                for workers in (1, 2):
                    out = Path(tmp) / f"out-{workers}-{rep}"
                    t0 = time.perf_counter()
                    res = precompute(ds.images_dir, ds.annotations, out, settings, chunk_size=args.chunk_size,
                                     workers=workers, progress=False)
                    wall = time.perf_counter() - t0
                    if wall < best.get(workers, float("inf")):
                        best[workers], cpu[workers] = wall, res.task_cpu_seconds
    finally:
        ray.shutdown()
    for workers, seconds in sorted(best.items()):
        print(f"workers={workers}: {args.images} images in {seconds:.2f} s = {args.images / seconds:.1f} images/s"
              f" (task CPU {cpu[workers]:.2f} s: {cpu[workers] / seconds:.2f} cores busy on average)")
    ratio = best[1] / best[2]
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other processes compete)")
    print(f"speed-up 2 workers vs 1: {ratio:.2f}x ({'meets' if ratio >= 1.7 else 'MISSES'} the 1.7x target)")


if __name__ == "__main__":
    main()
