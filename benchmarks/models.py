"""Model costs on this machine beside the paper's figures, and pure-torch DCN vs a plain conv.

For each architecture: parameters (M; trainable in brackets where they differ: DLA-34 keeps the
official, unused ImageNet classifier frozen for checkpoint compatibility), GFLOPs of one 512x512
forward (``torch.utils.flop_counter.FlopCounterMode``: 2 x multiply-adds of convs and matmuls;
the DCN sampling itself is not counted), and the best forward time per image at batch 1 and
batch 8 (eval, ``torch.no_grad``, 80 classes), next to the paper's COCO AP and FPS (TITAN Xp GPU,
github.com/xingyizhou/CenterNet README). Then the deformable convolution of ``centernet.ops``
(pure PyTorch unless torchvision's kernel is usable) against ``F.conv2d`` of the same shape.

    .venv/bin/python benchmarks/models.py [--archs resdcn18,dla34] [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from centernet.models import build_model
from centernet.models.dcn import DCN
from centernet.ops import deform_conv2d, torchvision_available

ALL_ARCHS = ["resnet18", "resdcn18", "resdcn101", "dla34", "hourglass104"]
# arch -> (COCO val AP, FPS), no test-time augmentation, official README / paper
PAPER = {"resdcn18": ("28.1", "142"), "resdcn101": ("34.6", "45"), "dla34": ("37.4", "52"),
         "hourglass104": ("40.3", "14"), "resnet18": ("-", "-")}


def best_time(fn, repeats: int, warmup: int = 1) -> float:
    """Best wall time of ``fn()`` over ``repeats`` runs, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def gflops(model: torch.nn.Module, size: int) -> float:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.randn(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def bench_arch(arch: str, size: int, batches: list[int], repeats: int) -> dict[str, str]:
    model = build_model(arch, 80).eval()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params = f"{total / 1e6:.2f}" + (f" ({trainable / 1e6:.2f})" if trainable != total else "")
    row = {"arch": arch, "params_M": params, "GFLOPs": f"{gflops(model, size):.1f}"}
    for b in batches:
        x = torch.randn(b, 3, size, size)
        with torch.no_grad():
            t = best_time(lambda: model(x), repeats, warmup=1 if b == 1 else 0)
        row[f"ms/img b{b}"] = f"{1000 * t / b:.0f}"
        row[f"img/s b{b}"] = f"{b / t:.2f}"
    row["paper AP"], row["paper FPS (GPU)"] = PAPER.get(arch, ("-", "-"))
    return row


def bench_dcn(shapes: list[tuple[int, int, int, int]], repeats: int) -> list[dict[str, str]]:
    """(batch, channels, H, W): 3x3 DCN (in = out channels) vs F.conv2d, forward and fwd+bwd."""
    rows = []
    for b, c, h, w in shapes:
        torch.manual_seed(0)
        x = torch.randn(b, c, h, w, requires_grad=True)
        weight = (torch.randn(c, c, 3, 3) * 0.05).requires_grad_()
        offset = torch.randn(b, 18, h, w, requires_grad=True)
        mask = torch.rand(b, 9, h, w, requires_grad=True)
        dcn = DCN(c, c, 3, 1, 1)
        conv = torch.nn.Conv2d(c, c, 3, 1, 1)

        def op_fwd():
            with torch.no_grad():
                deform_conv2d(x, offset, weight, padding=(1, 1), mask=mask)

        def conv_fwd():
            with torch.no_grad():
                F.conv2d(x, weight, padding=1)

        def op_bwd():
            deform_conv2d(x, offset, weight, padding=(1, 1), mask=mask).sum().backward()

        def conv_bwd():
            F.conv2d(x, weight, padding=1).sum().backward()

        def module_fwd():
            with torch.no_grad():
                dcn(x)

        def plain_module_fwd():
            with torch.no_grad():
                conv(x)

        t = {name: best_time(fn, repeats) for name, fn in [
            ("op", op_fwd), ("conv", conv_fwd), ("op_bwd", op_bwd), ("conv_bwd", conv_bwd),
            ("dcn", module_fwd), ("plain", plain_module_fwd)]}
        rows.append({
            "shape (B,C,H,W)": f"{b},{c},{h},{w}",
            "deform_conv2d ms": f"{1000 * t['op']:.1f}", "conv2d ms": f"{1000 * t['conv']:.1f}",
            "ratio fwd": f"{t['op'] / t['conv']:.1f}x",
            "ratio fwd+bwd": f"{t['op_bwd'] / t['conv_bwd']:.1f}x",
            "DCN module ratio": f"{t['dcn'] / t['plain']:.1f}x",
        })
    return rows


def print_table(rows: list[dict[str, str]]) -> None:
    cols = list(rows[0])
    widths = [max(len(c), *(len(r[c]) for r in rows)) for c in cols]
    print("  ".join(c.ljust(wd) for c, wd in zip(cols, widths)))
    print("  ".join("-" * wd for wd in widths))
    for r in rows:
        print("  ".join(r[c].ljust(wd) for c, wd in zip(cols, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default=",".join(ALL_ARCHS),
                        help=f"comma-separated subset of {','.join(ALL_ARCHS)}")
    parser.add_argument("--quick", action="store_true", help="batch 1 only, one timed run each")
    parser.add_argument("--size", type=int, default=512, help="input side (default 512)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = parser.parse_args()
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = sorted(set(archs) - set(ALL_ARCHS))
    if unknown:
        parser.error(f"--archs: unknown {unknown}; choose from {ALL_ARCHS}")
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else 2
    batches = [1] if args.quick else [1, 8]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {args.size}x{args.size}, "
          f"deform_conv2d backend: {'torchvision' if torchvision_available() else 'pure torch'}\n")
    print_table([bench_arch(a, args.size, batches, repeats) for a in archs])
    print("\nDeformable 3x3 conv vs ordinary 3x3 conv, same shape (CenterNet's DCN sizes at 512x512):")
    shapes = [(1, 64, 128, 128), (1, 256, 32, 32)] if args.quick else \
        [(1, 64, 128, 128), (1, 256, 32, 32), (8, 64, 128, 128)]
    print_table(bench_dcn(shapes, repeats))


if __name__ == "__main__":
    main()
