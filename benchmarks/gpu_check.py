"""GPU checks and speeds in one run (GPU time is scarce): what the CPU machines cannot measure.

1. The device heatmap renderer equals ``centernet.targets.encode``'s heatmap bit for bit on CUDA
   (random scenes: many classes, overlapping same-class objects, borders, truncation, empty images).
2. The pure-PyTorch deformable convolution on CUDA equals the CPU one (float64).
3. Training images/s at 512x512 (synthetic batches already on the GPU, Adam, the CenterNet loss):
   ResNet-18 and DLA-34, bf16 autocast, NCHW vs channels_last, batch 32 and 64; fp16 with the
   GradScaler for ResNet-18.
4. The data path at that speed: ``train_epoch`` fed by ``DataLoader(ShardDataset)`` with 2, 4 and 8
   loader processes (pinned, sparse batches, heatmaps rendered and colour augmentation on the GPU,
   channels_last model and images as the Ray Train worker runs them; ``--data-compile`` for
   ``torch.compile``): images/s and the data-wait share, steady state (first 10 steps excluded). Needs shards
   (``--shards``, e.g. from ``benchmarks/data_path.py``'s COCO-like generator).
5. The renderer's time per batch of 32 on the GPU.
6. Inference images/s (forward + decode, no I/O): ResNet-18 and DLA-34 at 512, batch 1 and 64,
   fp16/bf16, channels_last; ``torch.compile`` for ResNet-18 at batch 64 when time allows.

Every section prints as it goes and is timed against ``--budget-s``; one that fails prints its error
and the next one runs.

    python benchmarks/gpu_check.py [--shards DIR] [--budget-s 480]
"""

from __future__ import annotations

import argparse
import time
import traceback
from collections.abc import Callable

import numpy as np
import torch

from centernet.batch import collate_samples
from centernet.color import ColorAugment, to_network_input
from centernet.decode import decode
from centernet.engine import train_epoch, train_step
from centernet.heatmap import render_heatmaps
from centernet.losses import CenterNetLoss
from centernet.models import build_model
from centernet.targets import encode, encode_sparse

SIZE = 512
OUT = SIZE // 4
CLASSES = 80
WEIGHTS = {"hm": 1.0, "wh": 0.1, "reg": 1.0}
START = time.monotonic()


def left(budget: float) -> float:
    return budget - (time.monotonic() - START)


def section(name: str, fn: Callable[[], None]) -> None:
    print(f"\n== {name} (t={time.monotonic() - START:.0f}s)", flush=True)
    try:
        fn()
    except Exception:  # report and go on: one broken section must not cost the others
        print(traceback.format_exc(limit=4), flush=True)


def cuda_time(fn: Callable[[], object], warmup: int, iters: int) -> float:
    """Seconds per call of ``fn`` on the GPU (synchronised)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def random_scene(rng: np.random.Generator, max_objs: int) -> tuple[np.ndarray, np.ndarray]:
    n = int(rng.integers(0, 60))
    xy = rng.uniform(-8, OUT + 8, (n, 2))
    wh = rng.uniform(0.5, 60, (n, 2))
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1).astype(np.float32)
    return boxes, rng.integers(0, 5, n)


def check_renderer() -> None:
    rng = np.random.default_rng(0)
    scenes = 0
    for _ in range(64):
        batch = [random_scene(rng, 32) for _ in range(8)]
        dense = [encode(b, c, 5, (OUT, OUT), max_objs=32)["hm"] for b, c in batch]
        sparse = [encode_sparse(b, c, 5, (OUT, OUT), max_objs=32) for b, c in batch]
        idx = torch.cat([torch.as_tensor(s["hm_index"]).long() + i * 5 * OUT * OUT for i, s in enumerate(sparse)])
        val = torch.cat([torch.as_tensor(s["hm_value"]) for s in sparse])
        out = render_heatmaps(idx.cuda(), val.cuda(), (8, 5, OUT, OUT)).cpu().numpy()
        assert np.array_equal(out, np.stack(dense)), "CUDA render differs from encode"
        scenes += 8
    print(f"renderer on CUDA == encode's heatmap bit for bit on {scenes} random scenes")


def check_dcn() -> None:
    from centernet.ops import deform_conv2d_torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 17, 19, generator=g, dtype=torch.float64)
    w = torch.randn(6, 8, 3, 3, generator=g, dtype=torch.float64)
    off = 2 * torch.randn(2, 18, 17, 19, generator=g, dtype=torch.float64)
    mask = torch.rand(2, 9, 17, 19, generator=g, dtype=torch.float64)
    cpu = deform_conv2d_torch(x, off, w, None, (1, 1), (1, 1), (1, 1), mask)
    gpu = deform_conv2d_torch(x.cuda(), off.cuda(), w.cuda(), None, (1, 1), (1, 1), (1, 1), mask.cuda()).cpu()
    print(f"DCN CUDA vs CPU (float64): max abs diff {float((cpu - gpu).abs().max()):.2e}")
    assert torch.allclose(cpu, gpu, atol=1e-9)


def synthetic_batch(batch: int, device: str = "cuda") -> dict[str, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(0)
    k = 128
    hm = torch.zeros(batch, CLASSES, OUT, OUT, device=device)
    ind = torch.randint(0, OUT * OUT, (batch, k), device=device, generator=g)
    cls = torch.randint(0, CLASSES, (batch, k), device=device, generator=g)
    hm.view(batch, CLASSES, -1).scatter_(2, ind[:, None, :].expand(-1, CLASSES, -1), 0.5)
    hm.view(batch, -1).scatter_(1, cls * OUT * OUT + ind, 1.0)
    image = torch.randint(0, 256, (batch, 3, SIZE, SIZE), dtype=torch.uint8, device=device, generator=g)
    return {"image": to_network_input(image), "hm": hm, "ind": ind,
            "wh": 50 * torch.rand(batch, k, 2, device=device, generator=g),
            "reg": torch.rand(batch, k, 2, device=device, generator=g),
            "mask": (torch.rand(batch, k, device=device, generator=g) < 0.1).to(torch.uint8)}


def train_speed(arch: str, batch: int, dtype: torch.dtype, channels_last: bool, iters: int = 15,
                compile: bool = False) -> float:
    torch.manual_seed(0)
    model = build_model(arch, CLASSES, pretrained="none").cuda().train()
    data = synthetic_batch(batch)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        data["image"] = data["image"].contiguous(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    crit = CenterNetLoss()
    sec = cuda_time(lambda: train_step(model, data, criterion=crit, optimizer=opt, weights=WEIGHTS,
                                       amp_dtype=dtype, scaler=scaler), warmup=3, iters=iters)
    torch.cuda.empty_cache()
    return batch / sec


def training_speeds(budget: float, compiled_only: bool = False) -> None:
    cases = [("resnet18", 32, torch.bfloat16, False), ("resnet18", 32, torch.bfloat16, True),
             ("resnet18", 64, torch.bfloat16, True), ("resnet18", 64, torch.float16, True),
             ("resnet18", 64, torch.float32, False),
             ("dla34", 32, torch.bfloat16, True), ("dla34", 64, torch.bfloat16, True)]
    cases = [] if compiled_only else [(*c, False) for c in cases]
    cases += [("resnet18", 64, torch.bfloat16, True, True), ("resnet18", 128, torch.bfloat16, True, True)]
    for arch, batch, dtype, cl, compiled in cases:
        if left(budget) < 120:
            print("(time budget: remaining training cases skipped)")
            return
        ips = train_speed(arch, batch, dtype, cl, iters=25 if compiled else 15, compile=compiled)
        print(f"train {arch:9s} batch {batch:3d} {str(dtype).split('.')[1]:8s} "
              f"{'channels_last' if cl else 'NCHW':13s}{' torch.compile' if compiled else ''}: "
              f"{ips:8.0f} images/s", flush=True)


class Passes(torch.utils.data.IterableDataset):
    """``passes`` passes over a ShardDataset in one stream, so that the loader processes keep
    streaming (a small shard set would otherwise measure mostly the loader's start per epoch)."""

    def __init__(self, dataset: torch.utils.data.IterableDataset, passes: int):
        super().__init__()
        self.dataset, self.passes = dataset, passes

    def __iter__(self):
        for epoch in range(self.passes):
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            yield from self.dataset


def data_wait(shards: str, budget: float, batch: int, compiled: bool, workers_list: tuple[int, ...]) -> None:
    """``train_epoch`` as the Ray Train worker runs it (channels_last model and images, bf16,
    colour augmentation and heatmap rendering on the GPU), fed by ``DataLoader(ShardDataset)``."""
    from torch.utils.data import DataLoader

    from pipeline.reader import ShardDataset

    torch.manual_seed(0)
    model = build_model("resnet18", CLASSES, pretrained="none").cuda().to(memory_format=torch.channels_last)
    kw = dict(criterion=CenterNetLoss(), optimizer=torch.optim.Adam(model.parameters(), lr=1e-4),
              weights=WEIGHTS, device="cuda", amp_dtype=torch.bfloat16, color=ColorAugment(0),
              memory_format=torch.channels_last)
    step_model = torch.compile(model) if compiled else model
    if compiled:
        kw["criterion"] = torch.compile(kw["criterion"])
    for workers in workers_list:
        if left(budget) < 90:
            print("(time budget: remaining loader cases skipped)")
            return
        stream = Passes(ShardDataset(shards, rank=0, world_size=1, shuffle=True, seed=0), passes=24 * workers)
        loader = DataLoader(stream, batch_size=batch, num_workers=workers, pin_memory=True, drop_last=True,
                            collate_fn=collate_samples, prefetch_factor=4)
        batches = iter(loader)
        t0 = time.perf_counter()
        first = train_epoch(step_model, batches, max_steps=10, **kw)  # worker start, autotune, compile: excluded
        first_s = time.perf_counter() - t0
        r = train_epoch(step_model, batches, max_steps=60, **kw)
        print(f"loader workers {workers}, batch {batch}{', torch.compile' if compiled else ''}: "
              f"{batch * r.steps / r.seconds:7.0f} images/s, data wait {100 * r.data_wait_share:5.1f}% over "
              f"{r.steps} steady steps (first 10 steps: {first_s:.0f} s, {100 * first.data_wait_share:.1f}% "
              f"data wait, incl. start)", flush=True)
        del batches, loader


def step_breakdown(shards: str, batch: int) -> None:
    """Where a real batch's step goes: the move (H2D copy, colour augmentation, heatmap render),
    the train step on the moved batch (with and without the loss), a forward alone."""
    from pipeline.reader import ShardDataset

    from centernet.engine import move_batch

    samples = []
    for s in ShardDataset(shards, rank=0, world_size=1, shuffle=False, seed=0):
        samples.append(s)
        if len(samples) == batch:
            break
    host = {k: (v.pin_memory() if isinstance(v, torch.Tensor) else v) for k, v in collate_samples(samples).items()}
    color = ColorAugment(0)
    cl = torch.channels_last
    torch.manual_seed(0)
    model = build_model("resnet18", CLASSES, pretrained="none").cuda().to(memory_format=cl)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    crit = CenterNetLoss()
    moved = move_batch(host, "cuda", color=color, memory_format=cl)
    synth = synthetic_batch(batch)
    synth["image"] = synth["image"].contiguous(memory_format=cl)
    timings = {
        "move_batch (H2D, colour, render)": lambda: move_batch(host, "cuda", color=color, memory_format=cl),
        "move_batch without colour": lambda: move_batch(host, "cuda", memory_format=cl),
        "train_step, real batch on GPU": lambda: train_step(model, moved, criterion=crit, optimizer=opt,
                                                            weights=WEIGHTS, amp_dtype=torch.bfloat16),
        "train_step, synthetic batch": lambda: train_step(model, synth, criterion=crit, optimizer=opt,
                                                          weights=WEIGHTS, amp_dtype=torch.bfloat16),
        "move + train_step": lambda: train_step(model, move_batch(host, "cuda", color=color, memory_format=cl),
                                                criterion=crit, optimizer=opt, weights=WEIGHTS,
                                                amp_dtype=torch.bfloat16),
    }
    for name, fn in timings.items():
        sec = cuda_time(fn, warmup=3, iters=15)
        print(f"{name:36s}: {1e3 * sec:7.2f} ms per batch of {batch} ({batch / sec:6.0f} images/s)", flush=True)

    def forward_loss() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(moved["image"])
        crit(out, moved)

    def forward_only() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(moved["image"])

    for name, fn in (("forward + loss", forward_loss), ("forward", forward_only)):
        sec = cuda_time(fn, warmup=3, iters=15)
        print(f"{name:36s}: {1e3 * sec:7.2f} ms per batch of {batch}", flush=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            train_step(model, move_batch(host, "cuda", color=color, memory_format=cl), criterion=crit,
                       optimizer=opt, weights=WEIGHTS, amp_dtype=torch.bfloat16)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))


def renderer_time() -> None:
    rng = np.random.default_rng(1)
    sparse = [encode_sparse(*random_scene(rng, 128), CLASSES, (OUT, OUT)) for _ in range(32)]
    idx = torch.cat([torch.as_tensor(s["hm_index"]).long() + i * CLASSES * OUT * OUT
                     for i, s in enumerate(sparse)]).cuda()
    val = torch.cat([torch.as_tensor(s["hm_value"]) for s in sparse]).cuda()
    sec = cuda_time(lambda: render_heatmaps(idx, val, (32, CLASSES, OUT, OUT)), warmup=5, iters=50)
    print(f"render_heatmaps, batch 32 x {CLASSES} x {OUT} x {OUT} ({idx.numel()} nonzero pixels): "
          f"{1e3 * sec:.3f} ms per batch")


def inference_speeds(budget: float) -> None:
    for arch in ("resnet18", "dla34"):
        model = build_model(arch, CLASSES, pretrained="none").cuda().eval().to(memory_format=torch.channels_last)
        for batch, dtype in ((1, torch.float16), (64, torch.float16), (64, torch.bfloat16)):
            if left(budget) < 60:
                print("(time budget: remaining inference cases skipped)")
                return
            x = torch.randn(batch, 3, SIZE, SIZE, device="cuda").contiguous(memory_format=torch.channels_last)

            def run() -> torch.Tensor:
                with torch.no_grad(), torch.autocast("cuda", dtype=dtype):
                    out = model(x)[-1]
                return decode(out["hm"].float(), out["wh"].float(), out["reg"].float())

            sec = cuda_time(run, warmup=5, iters=20 if batch > 1 else 100)
            print(f"infer {arch:9s} batch {batch:3d} {str(dtype).split('.')[1]:8s} channels_last: "
                  f"{batch / sec:8.0f} images/s (forward + decode)", flush=True)
    if left(budget) > 150:
        model = build_model("resnet18", CLASSES, pretrained="none").cuda().eval().to(memory_format=torch.channels_last)
        compiled = torch.compile(model)
        x = torch.randn(64, 3, SIZE, SIZE, device="cuda").contiguous(memory_format=torch.channels_last)

        def run_compiled() -> torch.Tensor:
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
                out = compiled(x)[-1]
            return decode(out["hm"].float(), out["wh"].float(), out["reg"].float())

        t0 = time.perf_counter()
        run_compiled()
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0
        sec = cuda_time(run_compiled, warmup=3, iters=20)
        print(f"infer resnet18  batch  64 float16  channels_last torch.compile: {64 / sec:8.0f} images/s "
              f"(compile {compile_s:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default=None, help="shard directory for the data-path section")
    parser.add_argument("--budget-s", type=float, default=480.0)
    parser.add_argument("--only", nargs="*", default=None, choices=["checks", "train", "data", "breakdown", "infer"],
                        help="run only these sections")
    parser.add_argument("--compiled-only", action="store_true", help="training: only the torch.compile cases")
    parser.add_argument("--data-batch", type=int, default=64, help="data path: batch size")
    parser.add_argument("--data-workers", type=int, nargs="*", default=[2, 4, 8], help="data path: loader processes")
    parser.add_argument("--data-compile", action="store_true", help="data path: torch.compile the model")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, {torch.get_num_threads()} CPU threads")
    torch.backends.cudnn.benchmark = True
    def wanted(name: str) -> bool:
        return args.only is None or name in args.only

    if wanted("checks"):
        section("renderer bit-identity on CUDA", check_renderer)
        section("deformable convolution on CUDA", check_dcn)
        section("renderer time", renderer_time)
    if wanted("train"):
        section("training images/s (synthetic batches on the GPU)", lambda: training_speeds(args.budget_s, args.compiled_only))
    if args.shards and wanted("data"):
        section(f"data path: data-wait share (ResNet-18 channels_last, bf16, batch {args.data_batch})",
                lambda: data_wait(args.shards, args.budget_s, args.data_batch, args.data_compile,
                                  tuple(args.data_workers)))
    if args.shards and wanted("breakdown"):
        section(f"step breakdown (ResNet-18 channels_last, bf16, batch {args.data_batch})",
                lambda: step_breakdown(args.shards, args.data_batch))
    if wanted("infer"):
        section("inference images/s", lambda: inference_speeds(args.budget_s))
    print(f"\ntotal {time.monotonic() - START:.0f} s")


if __name__ == "__main__":
    main()
