"""NaN-safe DDP: a non-finite loss or gradient on one rank skips that step on every rank.

Two real processes (gloo, ``torch.multiprocessing`` spawn) train a DDP-wrapped ResNet-18 at 64x64
with :func:`centernet.engine.train_epoch`. Epoch 1: rank 1's batch has a NaN pixel at step 1 (its
loss is NaN, rank 0's finite). Epoch 2: rank 0's gradient of one tensor turns infinite at step 2
(a finite loss everywhere; the all-reduced gradient is infinite on both ranks).
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

WORLD = 2
STEPS = 4
NAN_STEP, NAN_RANK = 1, 1  # epoch 1
INF_GRAD_STEP, INF_GRAD_RANK = 2, 0  # epoch 2
TIMEOUT_S = 480  # the whole run; a rank waiting > COLLECTIVE_TIMEOUT in one collective fails sooner
COLLECTIVE_TIMEOUT = timedelta(seconds=120)


def _batch(seed: int) -> dict[str, torch.Tensor]:
    """Two normalised 64x64 images with one object each, targets at 16x16."""
    from centernet.targets import encode

    g = torch.Generator().manual_seed(seed)
    image = torch.randn(2, 3, 64, 64, generator=g)  # [B, 3, H, W], already normalised
    x0, y0 = (int(v) for v in torch.randint(0, 8, (2,), generator=g))
    t = encode(np.array([[x0, y0, x0 + 6.0, y0 + 5.0]], np.float32), np.array([1]), 2, (16, 16), max_objs=4)
    return {"image": image, **{k: torch.from_numpy(np.stack([v, v])) for k, v in t.items()}}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from centernet.engine import make_optimizer, train_epoch
    from centernet.losses import DEFAULT_LOSS_WEIGHTS, CenterNetLoss
    from centernet.models import build_model
    from centernet.schedule import make_lr_scheduler

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=COLLECTIVE_TIMEOUT)
    try:
        torch.manual_seed(rank)  # different inits: DDP must broadcast rank 0's
        model = DDP(build_model("resnet18", 2))
        optimizer = make_optimizer(model, 1e-3)
        scheduler = make_lr_scheduler(optimizer, epochs=2, steps_per_epoch=STEPS, warmup_steps=3)
        step_index = {"epoch": 0, "step": 0}
        target = model.module.layer4[1].conv2.weight

        def inf_grad(grad: torch.Tensor) -> torch.Tensor:
            hit = (step_index["epoch"], step_index["step"], rank) == (1, INF_GRAD_STEP, INF_GRAD_RANK)
            return torch.full_like(grad, float("inf")) if hit else grad

        target.register_hook(inf_grad)
        record: dict[str, list] = {"skipped": [], "total": [], "grad_norm": [], "epoch_skipped": [], "lr": []}
        for epoch in range(2):
            step_index["epoch"], step_index["step"] = epoch, 0
            batches = [_batch(100 * epoch + 10 * rank + i) for i in range(STEPS)]
            if epoch == 0 and rank == NAN_RANK:
                batches[NAN_STEP]["image"][0, 0, 5, 5] = float("nan")

            def on_step(i: int, step) -> None:
                record["skipped"].append(step.skipped)
                record["total"].append(step.total)
                record["grad_norm"].append(step.grad_norm)
                record["lr"].append(optimizer.param_groups[0]["lr"])
                step_index["step"] = i + 1

            result = train_epoch(model, batches, criterion=CenterNetLoss(), optimizer=optimizer,
                                 weights=DEFAULT_LOSS_WEIGHTS, device="cpu", scheduler=scheduler, on_step=on_step)
            record["epoch_skipped"].append(result.skipped_steps)
        record["scheduler_steps"] = scheduler.last_epoch
        torch.save({"record": record, "state": model.module.state_dict()}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """Run the two ranks once (killed after TIMEOUT_S: a hang is a failure, not a stuck suite)."""
    tmp = tmp_path_factory.mktemp("ddp")
    ctx = mp.start_processes(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"DDP ranks did not finish in {TIMEOUT_S} s (ranks out of step / hanging)")
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_nan_on_one_rank_skips_that_step_on_both(ranks):
    for r in ranks:
        rec = r["record"]
        assert rec["skipped"][:STEPS] == [i == NAN_STEP for i in range(STEPS)]
        assert rec["epoch_skipped"][0] == 1
    assert not np.isfinite(ranks[NAN_RANK]["record"]["total"][NAN_STEP])
    assert np.isfinite(ranks[1 - NAN_RANK]["record"]["total"][NAN_STEP])  # finite here, skipped anyway


def test_infinite_gradient_on_one_rank_skips_that_step_on_both(ranks):
    for r in ranks:
        rec = r["record"]
        assert rec["skipped"][STEPS:] == [i == INF_GRAD_STEP for i in range(STEPS)]
        assert rec["epoch_skipped"][1] == 1
        assert np.isfinite(rec["total"][STEPS + INF_GRAD_STEP])
        assert not np.isfinite(rec["grad_norm"][STEPS + INF_GRAD_STEP])


def test_ranks_stay_in_step(ranks):
    a, b = (r["record"] for r in ranks)
    # the gradient norm is taken after DDP's all-reduce: the same on both ranks at every step
    np.testing.assert_array_equal(a["grad_norm"], b["grad_norm"])  # NaN (not computed) at the NaN step
    taken = 2 * STEPS - 2
    assert a["scheduler_steps"] == b["scheduler_steps"] == taken
    assert a["lr"] == b["lr"]
    params = [k for k in ranks[0]["state"] if "running" not in k and "num_batches" not in k]
    for k in params:
        torch.testing.assert_close(ranks[0]["state"][k], ranks[1]["state"][k], rtol=0, atol=0, msg=k)
    assert all(torch.isfinite(v).all() for r in ranks for v in r["state"].values() if v.is_floating_point())
