"""Peak RSS of precompute and of the reader at N and 10N images (target: no growth with N).

Each measurement runs in a fresh subprocess (so ``ru_maxrss`` is that run's own peak):

- precompute: the driver's peak RSS (it starts its own local Ray with 2 CPUs) and the largest peak
  RSS of any Ray worker process that ran a chunk task (each task reports its process's
  ``ru_maxrss``; workers are reused across tasks, so that is their lifetime peak).
- reader: peak RSS of a process that streams every sample of the shards through
  ``ShardDataset`` (shuffled, uint8 images; the default training path), and one that streams them
  through ``iter_samples``. The shuffle buffer (``--buffer-size``, default 32) is below N so it is
  full in both runs: its memory is bounded by the buffer, not the dataset.

Synthetic COCO-like images (400-640 px, 3-12 objects), input 512, official augmentation, raw
image storage (the default).

    python benchmarks/memory.py [--images 40] [--factor 10] [--chunk-size 8] [--buffer-size 32]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024


def _self_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def child_precompute(images: str, annotations: str, out: str, chunk_size: int) -> dict[str, float]:
    import ray

    from pipeline.precompute import precompute
    from pipeline.schema import PrecomputeSettings

    before = _self_peak()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        res = precompute(images, annotations, out, PrecomputeSettings.of(input_size=512), chunk_size=chunk_size,
                         progress=False)
        seconds = time.perf_counter() - t0
    finally:
        ray.shutdown()
    return {"driver_peak": _self_peak(), "driver_before": before, "worker_peak": res.worker_peak_rss_bytes,
            "samples": res.manifest["num_samples"], "seconds": seconds}


def child_reader(shards: str, mode: str, buffer_size: int) -> dict[str, float]:
    import torch

    from pipeline.reader import ShardDataset, iter_samples

    torch.set_num_threads(1)
    before = _self_peak()
    n = 0
    t0 = time.perf_counter()
    if mode == "ShardDataset":
        ds = ShardDataset(shards, rank=0, world_size=1, shuffle=True, buffer_size=buffer_size)
        for epoch in range(2):
            ds.set_epoch(epoch)
            for _ in ds:
                n += 1
    else:
        for _ in iter_samples(shards):
            n += 1
    return {"peak": _self_peak(), "before": before, "samples": n, "seconds": time.perf_counter() - t0}


def run_child(*args: str) -> dict[str, float]:
    res = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                         timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed:\n{res.stdout}\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--buffer-size", type=int, default=32)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "precompute":
            out = child_precompute(rest[0], rest[1], rest[2], int(rest[3]))
        else:
            out = child_reader(rest[0], rest[1], int(rest[2]))
        print(json.dumps(out))
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from shard_size import coco_like

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.images, args.images * args.factor):
            images, annotations = coco_like(Path(tmp) / f"data-{n}", n)
            out = str(Path(tmp) / f"shards-{n}")
            pre = run_child("precompute", str(images), str(annotations), out, str(args.chunk_size))
            rd = run_child("reader", out, "ShardDataset", str(args.buffer_size))
            it = run_child("reader", out, "iter_samples", str(args.buffer_size))
            rows.append((n, pre, rd, it))
    print(f"peak RSS in MiB (fresh subprocess each); input 512, raw images, chunk size {args.chunk_size}, "
          f"shuffle buffer {args.buffer_size}")
    print(f"{'images':>7s} {'samples':>8s} {'precompute driver':>18s} {'Ray worker (max)':>17s} "
          f"{'ShardDataset x2 epochs':>23s} {'iter_samples':>13s}")
    for n, pre, rd, it in rows:
        print(f"{n:7d} {int(pre['samples']):8d} {pre['driver_peak'] / MIB:18.0f} {pre['worker_peak'] / MIB:17.0f} "
              f"{rd['peak'] / MIB:23.0f} {it['peak'] / MIB:13.0f}")
    (n0, p0, r0, i0), (n1, p1, r1, i1) = rows
    for name, a, b in (("precompute driver", p0["driver_peak"], p1["driver_peak"]),
                       ("Ray worker", p0["worker_peak"], p1["worker_peak"]),
                       ("ShardDataset", r0["peak"], r1["peak"]), ("iter_samples", i0["peak"], i1["peak"])):
        growth = (b - a) / MIB
        verdict = "flat" if growth < 0.05 * a / MIB + 16 else "GROWS"
        print(f"{name}: {a / MIB:.0f} -> {b / MIB:.0f} MiB at {n1 // n0}x the images ({growth:+.0f} MiB, {verdict})")


if __name__ == "__main__":
    main()
