"""Inference speed: `centernet predict` end to end vs the forward pass alone; onnxruntime vs eager.

1. ``predict_images`` (read + decode JPEG, letterbox, forward, decode, back-mapping, drawing and
   writing one picture per image, detections.json) in images/s against the forward pass alone on
   the same batch size (random input already letterboxed, ``torch.no_grad``), ResNet-18 at 512,
   batch 1 and 8; synthetic 640x480 JPEGs. The two are measured in alternation, ``--rounds`` times,
   and the best of each is kept (the machines are shared and noisy); the ratio is end-to-end over
   forward-only throughput.
2. Latency of one 512x512 image on the CPU: onnxruntime (the file ``centernet export`` writes:
   opset 18, heads only) against PyTorch eager, ResNet-18 and ResDCN-18 (pure-PyTorch DCN,
   exported through GridSample). Best of ``--repeats`` runs after a warm-up, in alternation.

    .venv/bin/python benchmarks/inference.py [--images 32] [--size 512] [--rounds 3] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from models import best_time  # benchmarks/models.py, beside this script

from centernet.checkpoint import save_checkpoint
from centernet.models import build_model
from centernet.synthetic import make_synthetic_coco
from workflows.export import export_onnx
from workflows.model_source import resolve_model
from workflows.predict import collect_images, predict_images

CLASSES = {"category_ids": [1, 2, 3], "names": ["square", "circle", "triangle"]}


def checkpoint(arch: str, size: int, folder: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(folder / f"{arch}.pt", build_model(arch, 3),
                           extra={"arch": arch, "classes": CLASSES, "input_size": [size, size]})


def bench_predict(folder: Path, n_images: int, size: int, rounds: int, repeats: int, workers: int) -> list[str]:
    data = make_synthetic_coco(folder / "data", n_images, seed=0, image_size=(480, 640))
    paths = collect_images([str(data.images_dir)])
    loaded = resolve_model(str(checkpoint("resnet18", size, folder)))
    lines = ["| batch | predict end to end (img/s) | forward alone (img/s) | end to end / forward |",
             "|---|---|---|---|"]
    for batch in (1, 8):
        x = torch.randn(batch, 3, size, size)
        end_to_end = forward = 0.0
        for _ in range(rounds):
            result = predict_images(loaded, paths, folder / f"out{batch}", batch_size=batch,
                                    loader_workers=workers, progress=False)
            end_to_end = max(end_to_end, result.images_per_second)
            with torch.no_grad():
                forward = max(forward, batch / best_time(lambda: loaded.model(x), repeats))
        lines.append(f"| {batch} | {end_to_end:.2f} | {forward:.2f} | {end_to_end / forward:.0%} |")
    return lines


def bench_onnx(folder: Path, size: int, rounds: int, repeats: int) -> list[str]:
    import onnxruntime as ort

    lines = ["| arch | PyTorch eager (ms) | onnxruntime (ms) | speed-up |", "|---|---|---|---|"]
    for arch in ("resnet18", "resdcn18"):
        loaded = resolve_model(str(checkpoint(arch, size, folder)))
        onnx_path = export_onnx(loaded, folder / f"{arch}.onnx").path
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        x = torch.randn(1, 3, size, size)
        eager = onnx = float("inf")
        for _ in range(rounds):
            with torch.no_grad():
                eager = min(eager, best_time(lambda: loaded.model(x), repeats))
            onnx = min(onnx, best_time(lambda: session.run(None, {"images": x.numpy()}), repeats))
        lines.append(f"| {arch} | {eager * 1e3:.1f} | {onnx * 1e3:.1f} | {eager / onnx:.2f}x |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32, help="synthetic 640x480 images for predict")
    parser.add_argument("--size", type=int, default=512, help="network input size")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the compared measurements")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (best kept)")
    parser.add_argument("--workers", type=int, default=2, help="image-reading processes of predict")
    parser.add_argument("--threads", type=int, default=None, help="torch (and onnxruntime) threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {args.size}x{args.size}")
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        print("\n".join(["", "predict (ResNet-18, 3 classes):"] + bench_predict(Path(tmp), args.images, args.size,
                                                                                 args.rounds, args.repeats,
                                                                                 args.workers)))
        print("\n".join(["", "one image on the CPU:"] + bench_onnx(Path(tmp), args.size, args.rounds, args.repeats)))


if __name__ == "__main__":
    main()
