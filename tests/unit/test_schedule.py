"""Training defaults and per-step learning-rate schedules, against hand-computed values."""

from __future__ import annotations

import warnings

import pytest
import torch

from centernet.schedule import (
    LRSchedule,
    default_lr,
    default_lr_steps,
    lr_steps_warning,
    make_lr_scheduler,
    scaled_lr,
)


def _optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.Adam(torch.nn.Linear(1, 1).parameters(), lr=lr)


def _lrs(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> list[float]:
    """The rate each of ``steps`` optimisation steps uses (stepping the scheduler after each)."""
    out = []
    for _ in range(steps):
        out.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def test_default_milestones_are_the_official_fractions():
    assert default_lr_steps(140) == (90, 120)
    assert default_lr_steps(12) == (8, 10)  # 12*90/140 = 7.71, 12*120/140 = 10.29
    assert default_lr_steps(36) == (23, 31)  # 23.14, 30.86
    assert default_lr_steps(230) == (148, 197)  # 147.86, 197.14
    assert default_lr_steps(2) == (1,)  # 1.29 -> 1, 1.71 -> 2 = the last epoch: dropped
    assert default_lr_steps(1) == ()
    with pytest.raises(ValueError, match="epochs"):
        default_lr_steps(0)


def test_default_lr_official_when_pretrained_higher_from_scratch():
    assert default_lr(32, pretrained=True) == pytest.approx(1.25e-4)
    assert default_lr(16, pretrained=True) == pytest.approx(6.25e-5)
    assert default_lr(128, pretrained=True) == pytest.approx(5e-4)  # the official DLA-34 setting
    assert default_lr(64, pretrained=False) == pytest.approx(2 * default_lr(32, pretrained=False))
    assert default_lr(16, pretrained=False) > 4 * default_lr(16, pretrained=True)
    assert scaled_lr(32) == pytest.approx(1.25e-4)
    with pytest.raises(ValueError, match="batch_size"):
        scaled_lr(0)


def test_step_schedule_drops_at_the_default_milestones():
    # 12 epochs of 2 steps: milestones (8, 10) -> steps 16 and 20
    sched = make_lr_scheduler(_optimizer(), epochs=12, steps_per_epoch=2, warmup_steps=0)
    lrs = _lrs(sched, 24)
    assert lrs[:16] == pytest.approx([1.0] * 16)
    assert lrs[16:20] == pytest.approx([0.1] * 4)
    assert lrs[20:] == pytest.approx([0.01] * 4)


def test_explicit_steps_win():
    sched = make_lr_scheduler(_optimizer(2.0), epochs=12, steps_per_epoch=3, lr_steps=(2,), warmup_steps=0)
    lrs = _lrs(sched, 36)
    assert lrs[:6] == pytest.approx([2.0] * 6) and lrs[6:] == pytest.approx([0.2] * 30)


def test_linear_warmup_hand_computed():
    sched = make_lr_scheduler(_optimizer(0.4), epochs=10, steps_per_epoch=10, warmup_steps=4)
    # factor (i + 1) / 4 for i < 4: 0.1, 0.2, 0.3, 0.4, then the base rate until epoch 6 (step 60)
    assert _lrs(sched, 7) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4])
    # warmup and decay multiply: step 2 is past milestone 2 and 3/4 through the warmup
    assert LRSchedule(total_steps=100, warmup_steps=4, milestones=(2,))(2) == pytest.approx(0.75 * 0.1)


def test_cosine_ends_at_the_final_factor():
    sched = make_lr_scheduler(_optimizer(), epochs=5, steps_per_epoch=2, kind="cosine", warmup_steps=0,
                              final_factor=0.1)
    lrs = _lrs(sched, 10)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[5] == pytest.approx(0.1 + 0.9 * 0.5)  # halfway: cos(pi / 2) = 0
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert sched.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # after the last step
    with pytest.raises(ValueError, match="kind='step' only"):
        make_lr_scheduler(_optimizer(), epochs=5, steps_per_epoch=2, kind="cosine", lr_steps=(3,))


def test_milestone_at_or_beyond_the_last_epoch_warns():
    with pytest.warns(UserWarning, match=r"\[90, 120\] are at or beyond the last epoch \(36 epochs\).*\[23, 31\]"):
        make_lr_scheduler(_optimizer(), epochs=36, steps_per_epoch=1, lr_steps=(90, 120))
    assert "[12]" in lr_steps_warning((8, 12), 12)
    assert lr_steps_warning((8, 11), 12) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for epochs in (1, 2, 3, 12, 36, 140):
            make_lr_scheduler(_optimizer(), epochs=epochs, steps_per_epoch=1)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="kind must be one of"):
        make_lr_scheduler(_optimizer(), epochs=2, steps_per_epoch=1, kind="linear")
    with pytest.raises(ValueError, match="lr_steps must be increasing"):
        make_lr_scheduler(_optimizer(), epochs=9, steps_per_epoch=1, lr_steps=(5, 3))
    with pytest.raises(ValueError, match="steps_per_epoch"):
        make_lr_scheduler(_optimizer(), epochs=9, steps_per_epoch=0)
    with pytest.raises(ValueError, match="warmup_steps"):
        make_lr_scheduler(_optimizer(), epochs=9, steps_per_epoch=1, warmup_steps=-1)


def test_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    sched = make_lr_scheduler(_optimizer(), epochs=4, steps_per_epoch=5, lr_steps=(2,), warmup_steps=3)
    _lrs(sched, 8)
    torch.save(sched.state_dict(), tmp_path / "sched.pt")
    other = make_lr_scheduler(_optimizer(), epochs=4, steps_per_epoch=5, lr_steps=(2,), warmup_steps=3)
    other.load_state_dict(torch.load(tmp_path / "sched.pt", weights_only=True))
    other.optimizer.param_groups[0]["lr"] = sched.optimizer.param_groups[0]["lr"]  # as the optimizer's state
    assert _lrs(other, 12) == pytest.approx(_lrs(sched, 12))
    assert other.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
