"""The plain-PyTorch step/epoch functions, the non-finite guard, the schedule and checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from centernet.batch import collate_samples
from centernet.checkpoint import load_checkpoint_file, restore_training_state, save_checkpoint
from centernet.engine import make_optimizer, move_batch, train_epoch, train_step
from centernet.losses import DEFAULT_LOSS_WEIGHTS, CenterNetLoss
from centernet.schedule import make_lr_scheduler
from centernet.sample import SampleConfig, make_sample
from centernet.schedule import make_lr_scheduler
from centernet.synthetic import render_image


def _batch(n: int = 4, size: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        image, objects = render_image(rng, size, size, 3, 2, (10, 24))
        boxes = np.array([b for b, _ in objects], np.float32)
        classes = np.array([c for _, c in objects])
        samples.append(make_sample(image, boxes, classes, 2, SampleConfig(input_size=(size, size))))
    return move_batch(collate_samples(samples), "cpu")  # dense targets, normalised images


def test_loss_falls_when_overfitting_one_batch():
    from centernet.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", 2)
    optimizer = make_optimizer(model, 1e-3)
    batch = _batch()
    losses = [train_step(model, batch, criterion=CenterNetLoss(), optimizer=optimizer,
                         weights=DEFAULT_LOSS_WEIGHTS).total for _ in range(25)]
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])


def test_non_finite_step_is_skipped_and_the_model_untouched():
    from centernet.models import build_model

    model = build_model("resnet18", 2)
    optimizer = make_optimizer(model, 1e-3)
    batch = _batch(2)
    batch["image"][0, 0, 0, 0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_step(model, batch, criterion=CenterNetLoss(), optimizer=optimizer, weights=DEFAULT_LOSS_WEIGHTS)
    assert result.skipped and not math.isfinite(result.total)
    after = model.state_dict()
    # weights and the BatchNorm statistics the NaN forward pass had changed
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert after["bn1.num_batches_tracked"].item() == 0

    epoch = train_epoch(model, [batch, _batch(2, seed=1)], criterion=CenterNetLoss(), optimizer=optimizer,
                        weights=DEFAULT_LOSS_WEIGHTS, device="cpu")
    assert epoch.steps == 2 and epoch.skipped_steps == 1 and epoch.images == 4
    assert math.isfinite(epoch.mean_losses["total"]) and 0 <= epoch.data_wait_share < 1


def test_channels_last_step_gives_the_losses_of_the_contiguous_step():
    from centernet.models import build_model

    batch = _batch(2)
    results = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        model = build_model("resnet18", 2).to(memory_format=fmt)
        optimizer = make_optimizer(model, 1e-3)
        moved = dict(batch, image=batch["image"].contiguous(memory_format=fmt))
        results.append([train_step(model, moved, criterion=CenterNetLoss(), optimizer=optimizer,
                                   weights=DEFAULT_LOSS_WEIGHTS) for _ in range(2)])
    for contiguous, last in zip(*results):
        assert not contiguous.skipped and not last.skipped
        assert last.total == pytest.approx(contiguous.total, rel=1e-4)
        assert last.losses == pytest.approx(contiguous.losses, rel=1e-4)


def test_train_epoch_steps_the_scheduler_after_each_update_only():
    from centernet.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", 2)
    optimizer = make_optimizer(model, 1e-3)
    scheduler = make_lr_scheduler(optimizer, epochs=1, steps_per_epoch=4, warmup_steps=4)
    bad = _batch(2, seed=2)
    bad["image"][1, 2, 3, 4] = float("inf")
    batches = [_batch(2, seed=1), bad, _batch(2, seed=3)]
    lrs = []
    result = train_epoch(model, batches, criterion=CenterNetLoss(), optimizer=optimizer, weights=DEFAULT_LOSS_WEIGHTS,
                         device="cpu", scheduler=scheduler,
                         on_step=lambda i, step: lrs.append(optimizer.param_groups[0]["lr"]))
    assert result.skipped_steps == 1 and scheduler.last_epoch == 2
    # warmup (i + 1) / 4 of 1e-3, read after each step: stepped, held over the skipped step, stepped
    assert lrs == pytest.approx([5e-4, 5e-4, 7.5e-4])


def test_checkpoint_round_trip_is_atomic_and_weights_only(tmp_path):
    from centernet.models import build_model

    model = build_model("resnet18", 2)
    opt = make_optimizer(model, 1e-3)
    sched = make_lr_scheduler(opt, epochs=10, steps_per_epoch=1, lr_steps=(5,), warmup_steps=0)
    train_step(model, _batch(2), criterion=CenterNetLoss(), optimizer=opt, weights=DEFAULT_LOSS_WEIGHTS)
    path = save_checkpoint(tmp_path / "ckpt" / "model.pt", model, optimizer=opt, scheduler=sched, epoch=7,
                           extra={"arch": "resnet18", "classes": {"category_ids": [1, 2]}})
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary left behind
    ckpt = load_checkpoint_file(path)
    other = build_model("resnet18", 2)
    opt2 = make_optimizer(other, 1e-3)
    sched2 = make_lr_scheduler(opt2, epochs=10, steps_per_epoch=1, lr_steps=(5,), warmup_steps=0)
    assert restore_training_state(ckpt, other, opt2, sched2) == 7
    x = torch.randn(1, 3, 64, 64)
    model.eval(), other.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0]["hm"], other(x)[0]["hm"])
    assert ckpt["extra"]["arch"] == "resnet18"
    with pytest.raises(FileNotFoundError):
        load_checkpoint_file(tmp_path / "missing.pt")
