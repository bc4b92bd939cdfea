"""The model registry and the ResNet-18 detector's heads."""

from __future__ import annotations

import pytest
import torch

from centernet.models import available_architectures, build_model
from centernet.models.heads import HEATMAP_PRIOR_BIAS
from centernet.models.registry import register_model


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return build_model("resnet18", 5).eval()


def test_head_shapes_square_512(resnet18):
    with torch.no_grad():
        outputs = resnet18(torch.zeros(1, 3, 512, 512))
    assert isinstance(outputs, list) and len(outputs) == 1  # one stack
    assert {k: tuple(v.shape) for k, v in outputs[0].items()} == {
        "hm": (1, 5, 128, 128), "wh": (1, 2, 128, 128), "reg": (1, 2, 128, 128)}


def test_head_shapes_non_square(resnet18):
    with torch.no_grad():
        out = resnet18(torch.zeros(2, 3, 96, 160))[-1]
    assert out["hm"].shape == (2, 5, 24, 40) and out["wh"].shape == (2, 2, 24, 40)


def test_heads_follow_the_official_layout_and_init(resnet18):
    hm_last = resnet18.hm[-1]
    assert torch.all(hm_last.bias == HEATMAP_PRIOR_BIAS)
    assert resnet18.hm[0].out_channels == 64  # head_conv 64 for ResNet
    assert torch.all(resnet18.wh[-1].bias == 0)
    assert [m.out_channels for m in resnet18.deconv_layers if isinstance(m, torch.nn.ConvTranspose2d)] == [256, 128, 64]
    with torch.no_grad():
        prob = torch.sigmoid(resnet18(torch.zeros(1, 3, 64, 64))[0]["hm"]).mean().item()
    assert prob == pytest.approx(0.1, abs=0.05)  # the -2.19 prior


def test_bilinear_upconv_init_doubles_a_constant_map():
    model = build_model("resnet18", 1)
    up = next(m for m in model.deconv_layers if isinstance(m, torch.nn.ConvTranspose2d))
    x = torch.ones(1, up.in_channels, 4, 4)
    with torch.no_grad():
        y = up(x)
    assert y.shape == (1, up.out_channels, 8, 8)
    assert torch.allclose(y[:, :, 1:-1, 1:-1], torch.ones_like(y[:, :, 1:-1, 1:-1]))


def test_head_conv_override_and_unknown_arch():
    assert build_model("resnet18", 3, head_conv=32).hm[0].out_channels == 32
    with pytest.raises(ValueError, match="valid architectures: .*resnet18"):
        build_model("resnet19", 3)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet18", 0)
    assert "resnet18" in available_architectures()


def test_register_model_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet18", head_conv=64)(lambda num_classes, *, head_conv: None)


def test_pretrained_loads_matching_tensors(tmp_path):
    src = build_model("resnet18", 3)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    model = build_model("resnet18", 7, pretrained=str(path))
    assert torch.equal(model.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
    assert model.hm[-1].out_channels == 7
