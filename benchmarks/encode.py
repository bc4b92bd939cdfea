"""Encode throughput: centernet.targets.encode / encode_sparse vs the official per-object loop.

COCO-like samples: Poisson(7) objects per image, 80 classes, a 128x128 output map, measured in one
run. The encoders must give identical targets (checked on 200 samples before timing; the sparse
heatmap is rendered dense for the check). Prints samples/s and the ratios. ``encode`` builds the
dense map as the official loop does (that allocation dominates both); ``encode_sparse`` is what the
precompute stage stores.

    .venv/bin/python benchmarks/encode.py [--samples 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from official_reference import official_encode, random_coco_like_boxes  # noqa: E402

from centernet.targets import encode, encode_sparse, render_heatmap  # noqa: E402


def make_samples(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [random_coco_like_boxes(rng, int(rng.poisson(7)), (128, 128), 80) for _ in range(n)]


def best_rate(fn, samples, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for boxes, classes in samples:
            fn(boxes, classes, 80, (128, 128))
        best = min(best, time.perf_counter() - start)
    return len(samples) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    samples = make_samples(args.samples)
    for boxes, classes in samples[:200]:
        ours, ref = encode(boxes, classes, 80, (128, 128)), official_encode(boxes, classes, 80, (128, 128))
        assert all(np.array_equal(ours[k], ref[k]) for k in ref), "encoders disagree"
        sparse = encode_sparse(boxes, classes, 80, (128, 128))
        dense = render_heatmap(sparse["hm_index"], sparse["hm_value"], 80, (128, 128))
        assert np.array_equal(dense, ref["hm"]), "sparse encoder disagrees"
    baseline = best_rate(official_encode, samples, args.repeats)
    ours = best_rate(encode, samples, args.repeats)
    sparse = best_rate(encode_sparse, samples, args.repeats)
    print(f"samples: {len(samples)} (mean {np.mean([len(b) for b, _ in samples]):.1f} objects, 80 classes, 128x128)")
    print(f"official per-object loop : {baseline:9.1f} samples/s")
    print(f"centernet.targets.encode : {ours:9.1f} samples/s")
    print(f"centernet encode_sparse  : {sparse:9.1f} samples/s")
    print(f"ratio encode / official        : {ours / baseline:7.2f}x")
    print(f"ratio encode_sparse / official : {sparse / baseline:7.2f}x")


if __name__ == "__main__":
    main()
