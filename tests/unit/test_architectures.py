"""Every architecture builds, runs forward + backward at a small non-square size, and loads checkpoints."""

from __future__ import annotations

import pytest
import torch

from centernet.models import available_architectures, build_model
from centernet.models.dcn import DCN
from centernet.models.heads import HEATMAP_PRIOR_BIAS
from centernet.models.weights import load_checkpoint, load_matching

NUM_CLASSES = 5
# arch -> (batch, H, W) for forward+backward; hourglass needs H, W divisible by 128 (and more than
# one value per channel for training-mode BatchNorm at its innermost, 1/128-size level).
SMALL_INPUTS = {
    "resnet18": (1, 128, 96),
    "resdcn18": (1, 128, 96),
    "resdcn101": (1, 128, 96),
    "dla34": (1, 128, 96),
    "hourglass104": (1, 256, 128),
}


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    """Each architecture built once for the module (with a fixed seed)."""
    torch.manual_seed(0)
    return {arch: build_model(arch, NUM_CLASSES) for arch in SMALL_INPUTS}


def test_registered():
    assert set(SMALL_INPUTS) <= set(available_architectures())


@pytest.mark.parametrize("arch", list(SMALL_INPUTS))
def test_forward_backward_small_non_square(models, arch):
    model = models[arch]
    model.train()
    b, h, w = SMALL_INPUTS[arch]
    x = torch.randn(b, 3, h, w)
    stacks = model(x)
    assert isinstance(stacks, list) and len(stacks) == (2 if arch == "hourglass104" else 1)
    for heads in stacks:
        assert set(heads) == {"hm", "wh", "reg"}
        assert heads["hm"].shape == (b, NUM_CLASSES, h // 4, w // 4)
        assert heads["wh"].shape == (b, 2, h // 4, w // 4)
        assert heads["reg"].shape == (b, 2, h // 4, w // 4)
    loss = sum(v.float().square().mean() for heads in stacks for v in heads.values())
    model.zero_grad(set_to_none=True)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), arch
    # DCN offset/mask predictors start at zero but learn: they receive a gradient
    for name, module in model.named_modules():
        if isinstance(module, DCN):
            assert module.conv_offset_mask.weight.grad.abs().sum() > 0, name


def test_heatmap_bias_prior(models):
    for arch, model in models.items():
        biases = [p for n, p in model.named_parameters() if n.startswith("hm.") and n.endswith("bias")
                  and p.shape == (NUM_CLASSES,)]
        assert biases, arch
        for b in biases:
            torch.testing.assert_close(b.detach(), torch.full_like(b, HEATMAP_PRIOR_BIAS))


def _regression_convs(model: torch.nn.Module) -> list[torch.nn.Conv2d]:
    return [m for name in ("wh", "reg") for m in getattr(model, name).modules() if isinstance(m, torch.nn.Conv2d)]


def test_each_architecture_has_its_official_head_init(models):
    # resnet_dcn (fill_fc_weights): every regression-head conv N(0, 0.001), bias 0
    for arch in ("resnet18", "resdcn18", "resdcn101"):
        for conv in _regression_convs(models[arch]):
            assert 0.0008 < conv.weight.std().item() < 0.0012, arch
            assert conv.bias.abs().max().item() == 0.0, arch
    # pose_dla_dcn (fill_fc_weights): biases 0, PyTorch's default weights (std = 1/sqrt(3 fan_in))
    for conv in _regression_convs(models["dla34"]):
        fan_in = conv.weight[0].numel()
        assert conv.weight.std().item() == pytest.approx((3 * fan_in) ** -0.5, rel=0.1)
        assert conv.bias.abs().max().item() == 0.0
    # large_hourglass: regression heads entirely at PyTorch's default init (nonzero biases too)
    for conv in _regression_convs(models["hourglass104"]):
        assert conv.weight.std().item() == pytest.approx((3 * conv.weight[0].numel()) ** -0.5, rel=0.1)
        assert conv.bias.abs().max().item() > 0.0


def test_dla_imagenet_classifier_is_frozen(models):
    fc = models["dla34"].base.fc
    assert not any(p.requires_grad for p in fc.parameters())


@torch.no_grad()
def test_resdcn18_full_size_output():
    model = build_model("resdcn18", 80).eval()
    out = model(torch.randn(1, 3, 512, 512))[-1]
    assert out["hm"].shape == (1, 80, 128, 128)
    assert out["wh"].shape == out["reg"].shape == (1, 2, 128, 128)


def test_hourglass_rejects_indivisible_size(models):
    with pytest.raises(ValueError, match="divisible by 128"):
        models["hourglass104"](torch.randn(1, 3, 128, 96))


def _save_official_style(model: torch.nn.Module, path) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"epoch": 70, "state_dict": {"module." + k: v for k, v in state.items()}}, path)
    return state


def test_load_checkpoint_round_trip_and_head_reinit(tmp_path):
    source = build_model("resdcn18", NUM_CLASSES)
    with torch.no_grad():  # make every tensor distinguishable from a fresh init
        for p in source.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / "ckpt.pth"
    saved = _save_official_style(source, path)

    # same classes: everything loads, strictly
    same = build_model("resdcn18", NUM_CLASSES)
    report = load_checkpoint(same, path)
    assert not (report.missing or report.unexpected or report.shape_mismatched or report.reinitialized)
    for k, v in same.state_dict().items():
        torch.testing.assert_close(v, saved[k], rtol=0, atol=0)

    # other classes: backbone, neck, wh and reg load; the whole hm head keeps its fresh init
    torch.manual_seed(1)
    other = build_model("resdcn18", NUM_CLASSES + 3)
    fresh_hm = {k: v.clone() for k, v in other.state_dict().items() if k.startswith("hm.")}
    report = load_checkpoint(other, path)
    assert set(report.reinitialized) == set(fresh_hm)
    assert not (report.missing or report.unexpected or report.shape_mismatched)
    for k, v in other.state_dict().items():
        expected = fresh_hm[k] if k.startswith("hm.") else saved[k]
        torch.testing.assert_close(v, expected, rtol=0, atol=0)
    assert other.hm[-1].bias.detach().eq(HEATMAP_PRIOR_BIAS).all()
    assert "re-initialised 4" in report.summary()

    # without re-init the class mismatch is an error naming the keys, and nothing is loaded
    third = build_model("resdcn18", NUM_CLASSES + 3)
    before = third.layer1[0].conv1.weight.detach().clone()
    with pytest.raises(ValueError, match=r"hm\.2\.weight"):
        load_checkpoint(third, path, reinit_heads_if_classes_differ=False)
    torch.testing.assert_close(third.layer1[0].conv1.weight.detach(), before, rtol=0, atol=0)
    report = load_checkpoint(third, path, reinit_heads_if_classes_differ=False, strict=False)
    assert set(report.shape_mismatched) == {"hm.2.weight", "hm.2.bias"}
    assert "hm.0.weight" in report.loaded


def test_load_checkpoint_reports_foreign_keys(models, tmp_path):
    path = tmp_path / "foreign.pth"
    state = {k: v.clone() for k, v in models["resnet18"].state_dict().items()}
    torch.save({"epoch": 1, "state_dict": state}, path)
    model = build_model("resdcn18", NUM_CLASSES)
    with pytest.raises(ValueError, match="conv_offset_mask"):  # missing: the DCN offset convs
        load_checkpoint(model, path)
    report = load_checkpoint(model, path, strict=False)
    assert "deconv_layers.0.conv_offset_mask.weight" in report.missing
    assert "deconv_layers.0.bias" in report.missing
    assert "deconv_layers.0.weight" in report.loaded  # plain 3x3 conv: same name and shape as DCN's


def test_pretrained_backbone_prefix(models, tmp_path):
    """DLA ImageNet files have ``level0.*`` keys; the detector has them under ``base.``."""
    dla = models["dla34"]
    imagenet = {k: torch.randn_like(v) if v.is_floating_point() else v
                for k, v in dla.base.state_dict().items()}
    report = load_matching(dla, imagenet)
    assert report.prefix == "base."
    assert len(report.loaded) == len(imagenet)
    torch.testing.assert_close(dla.base.level3.tree1.tree1.conv1.weight.detach(),
                               imagenet["level3.tree1.tree1.conv1.weight"], rtol=0, atol=0)

    path = tmp_path / "dla34-imagenet.pth"
    torch.save(imagenet, path)
    model = build_model("dla34", NUM_CLASSES, pretrained=str(path))
    torch.testing.assert_close(model.base.fc.weight.detach(), imagenet["fc.weight"], rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(SMALL_INPUTS))
def test_forward_backward_at_512(models, arch):
    """The paper's input size: 512x512 -> 128x128 heads, with a CenterNet loss backward pass."""
    from centernet.losses import CenterNetLoss, combine_losses

    model = models[arch]
    model.train()
    stacks = model(torch.randn(1, 3, 512, 512))
    assert all(heads["hm"].shape == (1, NUM_CLASSES, 128, 128) for heads in stacks)
    hm = torch.zeros(1, NUM_CLASSES, 128, 128)
    hm[0, 1, 64, 32] = 1.0
    batch = {"hm": hm, "ind": torch.tensor([[64 * 128 + 32]]), "mask": torch.ones(1, 1),
             "wh": torch.tensor([[[10.0, 20.0]]]), "reg": torch.tensor([[[0.5, 0.5]]])}
    loss = combine_losses(CenterNetLoss()(stacks, batch))
    model.zero_grad(set_to_none=True)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
