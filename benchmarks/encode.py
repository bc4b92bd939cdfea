"""Encode throughput: centernet.targets.encode / encode_sparse vs a per-object loop.

The baseline, :func:`per_object_loop`, is this project's re-implementation of the *structure* of
the official ctdet target loop (one Python iteration per object: clip, ``gaussian_radius``, draw),
built on centernet's own scalar ``gaussian_radius``/``draw_gaussian``. It is a timing baseline only;
parity with the official code is tested on the official code's own outputs
(``tests/unit/test_official_parity.py``). It runs twice: with a fresh Gaussian kernel for every draw
(the kernel cache cleared first), as the official ``draw_umich_gaussian`` computes one per call, and
with centernet's cached kernels, which shows how much of the difference the cache alone makes.

COCO-like samples: Poisson(7) objects per image, 80 classes, a 128x128 output map, measured in one
run by this process's CPU time, the encoders taking turns. The encoders must give identical targets
(checked on 200 samples before timing; the sparse heatmap is rendered dense for the check). Prints
samples per CPU-second and the ratios. ``encode`` builds the dense map as the loop does (that
allocation dominates both); ``encode_sparse`` is what the precompute stage stores.

    .venv/bin/python benchmarks/encode.py [--samples 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from random_boxes import random_coco_like_boxes  # noqa: E402

from centernet.targets import (  # noqa: E402
    draw_gaussian,
    encode,
    encode_sparse,
    gaussian_kernel,
    gaussian_radius,
    render_heatmap,
)


def per_object_loop(boxes: np.ndarray, classes: np.ndarray, num_classes: int, output_size: tuple[int, int],
                    max_objs: int = 128, fresh_kernels: bool = True) -> dict[str, np.ndarray]:
    """The ctdet targets one object at a time (timing baseline; see the module docstring)."""
    out_h, out_w = output_size
    hm = np.zeros((num_classes, out_h, out_w), dtype=np.float32)
    wh = np.zeros((max_objs, 2), dtype=np.float32)
    reg = np.zeros((max_objs, 2), dtype=np.float32)
    ind = np.zeros((max_objs,), dtype=np.int64)
    mask = np.zeros((max_objs,), dtype=np.uint8)
    for k in range(min(len(boxes), max_objs)):
        box = np.array(boxes[k], dtype=np.float32)  # [4]
        box[[0, 2]] = np.clip(box[[0, 2]], 0, out_w - 1)
        box[[1, 3]] = np.clip(box[[1, 3]], 0, out_h - 1)
        h, w = box[3] - box[1], box[2] - box[0]
        if h > 0 and w > 0:
            radius = max(0, int(gaussian_radius(math.ceil(h), math.ceil(w))))
            ct = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], dtype=np.float32)
            ct_int = ct.astype(np.int32)
            if fresh_kernels:
                gaussian_kernel.cache_clear()
            draw_gaussian(hm[int(classes[k])], (int(ct_int[0]), int(ct_int[1])), radius)
            wh[k] = w, h
            ind[k] = ct_int[1] * out_w + ct_int[0]
            reg[k] = ct - ct_int
            mask[k] = 1
    return {"hm": hm, "wh": wh, "reg": reg, "ind": ind, "mask": mask}


def make_samples(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [random_coco_like_boxes(rng, int(rng.poisson(7)), (128, 128), 80) for _ in range(n)]


def best_rates(fns: dict[str, Callable], samples, repeats: int) -> dict[str, float]:
    """Samples per CPU-second of each encoder, best of ``repeats``; the encoders take turns in every
    repeat and are timed by this process's CPU time, so load from other processes biases none."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.process_time()
            for boxes, classes in samples:
                fn(boxes, classes, 80, (128, 128))
            best[name] = min(best[name], time.process_time() - start)
    return {name: len(samples) / seconds for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    samples = make_samples(args.samples)
    for boxes, classes in samples[:200]:
        ours, ref = encode(boxes, classes, 80, (128, 128)), per_object_loop(boxes, classes, 80, (128, 128))
        assert all(np.array_equal(ours[k], ref[k]) for k in ref), "encoders disagree"
        sparse = encode_sparse(boxes, classes, 80, (128, 128))
        dense = render_heatmap(sparse["hm_index"], sparse["hm_value"], 80, (128, 128))
        assert np.array_equal(dense, ref["hm"]), "sparse encoder disagrees"
    rates = best_rates({"baseline": per_object_loop, "cached": partial(per_object_loop, fresh_kernels=False),
                        "encode": encode, "sparse": encode_sparse}, samples, args.repeats)
    baseline, cached, ours, sparse = (rates[k] for k in ("baseline", "cached", "encode", "sparse"))
    print(f"samples: {len(samples)} (mean {np.mean([len(b) for b, _ in samples]):.1f} objects, 80 classes, 128x128)")
    print(f"per-object loop, fresh kernels (baseline) : {baseline:9.1f} samples/CPU-s")
    print(f"per-object loop, cached kernels           : {cached:9.1f} samples/CPU-s")
    print(f"centernet.targets.encode                  : {ours:9.1f} samples/CPU-s")
    print(f"centernet encode_sparse                   : {sparse:9.1f} samples/CPU-s")
    print(f"ratio cached loop / baseline   : {cached / baseline:7.2f}x")
    print(f"ratio encode / baseline        : {ours / baseline:7.2f}x")
    print(f"ratio encode_sparse / baseline : {sparse / baseline:7.2f}x")


if __name__ == "__main__":
    main()
