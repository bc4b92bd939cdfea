"""Focal and L1 losses against hand-computed values (parity with the official code's own outputs:
``test_official_parity.py``)."""

from __future__ import annotations

import math

import pytest
import torch

from centernet.losses import CenterNetLoss, combine_losses, focal_loss, reg_l1_loss, validate_loss_weights

LOG_HALF = math.log(0.5)


def test_focal_loss_hand_computed():
    logits = torch.zeros(1, 1, 1, 2)  # p = 0.5 everywhere
    gt = torch.tensor([[[[1.0, 0.5]]]])
    pos = -LOG_HALF * 0.5**2  # -log(p) (1-p)^2
    neg = -LOG_HALF * 0.5**2 * (1 - 0.5) ** 4  # -log(1-p) p^2 (1-gt)^4
    assert focal_loss(logits, gt).item() == pytest.approx((pos + neg) / 1, rel=1e-6)


def test_focal_loss_without_positives_is_the_negative_sum():
    logits = torch.zeros(1, 1, 1, 2)
    gt = torch.zeros(1, 1, 1, 2)
    assert focal_loss(logits, gt).item() == pytest.approx(2 * -LOG_HALF * 0.25, rel=1e-6)


def test_focal_loss_clamps_like_the_official_sigmoid():
    logits = torch.tensor([[[[30.0]]]])
    gt = torch.zeros(1, 1, 1, 1)
    expected = -math.log(1e-4) * (1 - 1e-4) ** 2
    assert focal_loss(logits, gt).item() == pytest.approx(expected, rel=1e-5)
    assert torch.isfinite(focal_loss(torch.tensor([[[[-1e4, 1e4]]]]), torch.tensor([[[[1.0, 0.0]]]])))


def test_reg_l1_hand_computed():
    pred = torch.arange(8, dtype=torch.float32).reshape(1, 2, 2, 2)  # ch0 [[0,1],[2,3]], ch1 [[4,5],[6,7]]
    ind = torch.tensor([[3, 0]])
    mask = torch.tensor([[1, 0]], dtype=torch.uint8)
    target = torch.tensor([[[1.0, 9.0], [100.0, 100.0]]])
    # object 0 at pixel 3: pred (3, 7), target (1, 9): |2| + |2| = 4, over 2 * 1 objects
    assert reg_l1_loss(pred, ind, mask, target).item() == pytest.approx(4 / (2 + 1e-4), rel=1e-6)


def test_reg_l1_no_objects_is_zero():
    pred = torch.randn(1, 2, 4, 4)
    zero = reg_l1_loss(pred, torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3), torch.ones(1, 3, 2))
    assert zero.item() == 0.0


def _batch():
    hm = torch.zeros(1, 2, 4, 4)
    hm[0, 1, 2, 1] = 1.0
    return {"hm": hm, "ind": torch.tensor([[9]]), "mask": torch.tensor([[1]]),
            "wh": torch.tensor([[[3.0, 2.0]]]), "reg": torch.tensor([[[0.5, 0.25]]])}


def test_centernet_loss_returns_unweighted_dict_and_averages_stacks():
    batch = _batch()
    out1 = {"hm": torch.zeros(1, 2, 4, 4), "wh": torch.zeros(1, 2, 4, 4), "reg": torch.zeros(1, 2, 4, 4)}
    out2 = {k: v + 1 for k, v in out1.items()}
    crit = CenterNetLoss()
    l1, l2 = crit([out1], batch), crit([out2], batch)
    assert set(l1) == {"hm", "wh", "reg"}
    # wh at pixel 9 predicted (0, 0) vs (3, 2): |3| + |2| over 2 * 1 objects
    assert l1["wh"].item() == pytest.approx(5 / (2 + 1e-4), rel=1e-6)
    both = crit([out1, out2], batch)
    for k in l1:
        assert both[k].item() == pytest.approx((l1[k].item() + l2[k].item()) / 2, rel=1e-6)


def test_centernet_loss_wants_a_list_of_stacks():
    out = {"hm": torch.zeros(1, 2, 4, 4), "wh": torch.zeros(1, 2, 4, 4), "reg": torch.zeros(1, 2, 4, 4)}
    with pytest.raises(ValueError, match="list of head dicts"):
        CenterNetLoss()(out, _batch())
    with pytest.raises(ValueError, match="list of head dicts"):
        CenterNetLoss()([], _batch())


def test_combine_losses_default_and_custom_weights():
    losses = {"hm": torch.tensor(2.0), "wh": torch.tensor(10.0), "reg": torch.tensor(0.5)}
    assert combine_losses(losses).item() == pytest.approx(2 + 1 + 0.5)
    assert combine_losses(losses, validate_loss_weights({"wh": 0.0})).item() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="unknown loss"):
        validate_loss_weights({"size": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        validate_loss_weights({"hm": -1.0})
