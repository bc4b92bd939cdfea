"""Precompute throughput with 2 Ray workers vs 1 (target: >= 1.7x), in one Ray instance.

Synthetic COCO-like images (320-640 px, 2-8 objects), official augmentation, input 512. Workers
are warmed up first (imports), then the same dataset is precomputed into fresh
directories with ``workers=1`` and ``workers=2``, alternating; each timing is the best of
``--repeats``. Also printed per best run: the CPU and wall seconds spent inside the chunk tasks
(summed over tasks) and the driver's own wall time before the first task ("setup": JSON
validation, chunk keys) and after the last ("finish": rejects/clean JSON, stats.png, manifest).
The machine's load average is printed before and after: other processes on 2 cores distort it.

    python benchmarks/precompute.py [--images 512] [--chunk-size 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import ray

from centernet.synthetic import make_synthetic_coco
from pipeline.precompute import PrecomputeResult, precompute
from pipeline.schema import PrecomputeSettings


def _warm() -> int:
    import pipeline.precompute  # noqa: F401  (the import the first real task would pay for)

    return 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--input-size", type=int, default=512)
    args = parser.parse_args()
    settings = PrecomputeSettings.of(input_size=args.input_size, views=1)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ds = make_synthetic_coco(Path(tmp) / "data", args.images, seed=0, image_size=(320, 640),
                                     objects_per_image=(2, 8), object_size=(20, 200))
            warm = ray.remote(num_cpus=1)(_warm)
            ray.get([warm.remote() for _ in range(4)])
            precompute(ds.images_dir, ds.annotations, Path(tmp) / "warm", settings,
                       chunk_size=args.chunk_size, workers=2, progress=False)
            load_before = os.getloadavg()[0]
            best: dict[int, float] = {}
            runs: dict[int, PrecomputeResult] = {}
            for rep in range(args.repeats):
                for workers in (1, 2):
                    out = Path(tmp) / f"out-{workers}-{rep}"
                    t0 = time.perf_counter()
                    res = precompute(ds.images_dir, ds.annotations, out, settings, chunk_size=args.chunk_size,
                                     workers=workers, progress=False)
                    wall = time.perf_counter() - t0
                    if wall < best.get(workers, float("inf")):
                        best[workers], runs[workers] = wall, res
    finally:
        ray.shutdown()
    for workers, seconds in sorted(best.items()):
        r = runs[workers]
        d = r.driver_seconds
        print(f"workers={workers}: {args.images} images in {seconds:.2f} s = {args.images / seconds:.1f} images/s; "
              f"task CPU {r.task_cpu_seconds:.2f} s, task wall {r.task_wall_seconds:.2f} s "
              f"({r.task_cpu_seconds / seconds:.2f} cores busy on average); driver setup {d['setup']:.2f} s, "
              f"finish {d['finish']:.2f} s")
    ratio = best[1] / best[2]
    print(f"machine: {os.cpu_count()} CPUs, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
          f"(other processes compete for the same cores)")
    print(f"speed-up 2 workers vs 1: {ratio:.2f}x ({'meets' if ratio >= 1.7 else 'MISSES'} the 1.7x target)")


if __name__ == "__main__":
    main()
