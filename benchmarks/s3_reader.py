"""Shard reading from ``s3://`` (an S3-compatible server on loopback) vs the same bytes on local disk.

Shards of a synthetic dataset are precomputed once to local disk and copied byte for byte into a
bucket of moto's S3 server (``tests/integration/services.py``, on 127.0.0.1). Then, interleaved and
best of ``--repeats``, one process reads every sample with

- ``pipeline.reader.iter_samples`` (numpy samples, stored order),
- ``pipeline.reader.ShardDataset`` (torch tensors: what training consumes), and
- ``pipeline.loader.make_loader`` with ``--loader-workers`` processes (training's DataLoader, each
  worker reading its shards and keeping 4 batches prefetched),

from the local directory and from the ``s3://`` URI (pyarrow's S3 filesystem, endpoint from
``AWS_ENDPOINT_URL_S3``). Reported: samples/s, shard MB/s, the time to open the manifest, and the
S3/local throughput ratio. Loopback has no network latency or bandwidth limit, and moto is a
single-process Python server: the ratio measures the S3 protocol path (HTTP range requests, request
handling), not a real object store's network.

    python benchmarks/s3_reader.py [--images 96] [--input-size 256] [--image-format raw] [--repeats 3]
        [--loader-workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import pyarrow.fs as pafs
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from services import s3_server, service_dir  # noqa: E402  (the test harness's S3 server)

from centernet.synthetic import make_synthetic_coco  # noqa: E402
from pipeline.loader import describe_data, make_loader  # noqa: E402
from pipeline.precompute import precompute  # noqa: E402
from pipeline.reader import ShardDataset, iter_samples, read_manifest  # noqa: E402
from pipeline.schema import IMAGE_FORMATS, PrecomputeSettings  # noqa: E402


def upload(local_dir: Path, uri: str) -> int:
    """Copy every file of ``local_dir`` to ``uri`` (same names); returns the bytes copied."""
    fs, base = pafs.FileSystem.from_uri(uri)
    total = 0
    for path in sorted(local_dir.iterdir()):
        data = path.read_bytes()
        with fs.open_output_stream(f"{base}/{path.name}") as out:
            out.write(data)
        total += len(data)
    return total


def timed_count(make: Callable[[], Iterable]) -> tuple[int, float]:
    """(items, seconds) of one full pass over ``make()``."""
    start = time.perf_counter()
    n = sum(1 for _ in make())
    return n, time.perf_counter() - start


def samples_of(batches: Iterable[dict]) -> Iterable[None]:
    """One item per sample of each batch (for :func:`timed_count`)."""
    for batch in batches:
        yield from [None] * len(batch["image"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=96, help="synthetic images (one sample each)")
    parser.add_argument("--input-size", type=int, default=256, help="network input side (multiple of 32)")
    parser.add_argument("--image-format", choices=IMAGE_FORMATS, default="raw", help="how shards store images")
    parser.add_argument("--chunk-size", type=int, default=32, help="images per shard")
    parser.add_argument("--repeats", type=int, default=3, help="passes per reader and source (best counts)")
    parser.add_argument("--loader-workers", type=int, default=2, help="DataLoader processes of the prefetching reader")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size of the prefetching reader")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    with tempfile.TemporaryDirectory(prefix="s3bench-") as tmp, service_dir() as services:
        data = make_synthetic_coco(Path(tmp) / "coco", args.images, seed=0, image_size=(360, 480))
        local = Path(tmp) / "shards"
        settings = PrecomputeSettings.of(input_size=args.input_size, augment=False, image_format=args.image_format)
        precompute(data.images_dir, data.annotations, local, settings, chunk_size=args.chunk_size, workers=2,
                   progress=False)
        with s3_server(services) as s3:
            os.environ.update(s3.env)  # pyarrow in this process reaches the bucket through these
            remote = s3.uri("shards")
            nbytes = upload(local, remote)
            shard_bytes = sum(int(s["bytes"]) for s in read_manifest(local)["shards"])
            sources = {"local": str(local), "s3": remote}
            readers = {
                "iter_samples": lambda src: iter_samples(src),
                "ShardDataset": lambda src: ShardDataset(src, rank=0, world_size=1, shuffle=False),
                "prefetching": lambda src: samples_of(make_loader(
                    describe_data(src, input_size=args.input_size), rank=0, world_size=1, batch_size=args.batch_size,
                    train=False, loader_workers=args.loader_workers)),
            }
            best: dict[tuple[str, str], float] = {}
            opened: dict[str, float] = {}
            for _ in range(args.repeats):
                for source, src in sources.items():
                    start = time.perf_counter()
                    read_manifest(src)
                    opened[source] = min(opened.get(source, float("inf")), time.perf_counter() - start)
                    for reader, make in readers.items():
                        n, seconds = timed_count(lambda: make(src))
                        assert n == args.images, f"{reader} read {n} of {args.images} samples from {source}"
                        best[reader, source] = min(best.get((reader, source), float("inf")), seconds)

    print(f"{args.images} samples, input {args.input_size}, image format {args.image_format}; shards "
          f"{shard_bytes / 1e6:.2f} MB ({nbytes / 1e6:.2f} MB uploaded with the manifest and side files); "
          f"best of {args.repeats}, one process, torch/OpenCV single-threaded; prefetching: make_loader with "
          f"{args.loader_workers} worker processes x prefetch 4, batch {args.batch_size} (its time includes starting "
          "the workers, once per pass)")
    print(f"manifest open: local {opened['local'] * 1e3:.1f} ms, s3 {opened['s3'] * 1e3:.1f} ms")
    print(f"{'reader':14s} {'source':6s} {'samples/s':>10s} {'MB/s':>8s}")
    for reader in readers:
        for source in sources:
            seconds = best[reader, source]
            print(f"{reader:14s} {source:6s} {args.images / seconds:10.1f} {shard_bytes / 1e6 / seconds:8.1f}")
        ratio = best[reader, "local"] / best[reader, "s3"]
        print(f"{reader:14s} s3/local throughput: {ratio:.2f}x")


if __name__ == "__main__":
    main()
