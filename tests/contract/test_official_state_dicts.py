"""Our architectures have exactly the state-dict names and shapes of the official CenterNet models.

How the fixtures ``tests/fixtures/official_<arch>_state_dict.json`` were produced: the official
model files (github.com/xingyizhou/CenterNet, ``src/lib/models/networks/resnet_dcn.py``,
``pose_dla_dcn.py``, ``large_hourglass.py``) were copied to a scratch directory outside this
repository, with ``DCNv2/dcn_v2.py`` replaced by a stand-in ``DCN`` that registers the same
parameters as the compiled one (``weight``, ``bias``, ``conv_offset_mask``), and the ImageNet
downloads replaced by what they leave in the state dict (nothing for ResNet, which loads with
``strict=False``; ``base.fc`` = Conv2d(512, 1000, 1) for DLA). The models were built as the
official ``create_model`` does for ``--arch resdcn_18 / resdcn_101 / dla_34 / hourglass`` with
heads ``{"hm": 80, "wh": 2, "reg": 2}`` and the official head_conv, and
``{name: list(shape)}`` of ``state_dict()`` plus the parameter count were written to JSON. None
of that code is part of this repository.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from centernet.models import build_model
from centernet.models.weights import load_checkpoint

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ARCHS = ["resdcn18", "dla34", "hourglass104", "resdcn101"]


def _official(arch: str) -> dict:
    return json.loads((FIXTURES / f"official_{arch}_state_dict.json").read_text())


@pytest.fixture(scope="module", params=ARCHS)
def arch_and_model(request):
    ref = _official(request.param)
    model = build_model(request.param, ref["num_classes"])
    return request.param, ref, model


def test_state_dict_names_and_shapes_are_official(arch_and_model):
    arch, ref, model = arch_and_model
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    expected = ref["state_dict"]
    assert sorted(set(expected) - set(own)) == [], f"{arch}: missing official keys"
    assert sorted(set(own) - set(expected)) == [], f"{arch}: keys the official model lacks"
    wrong = {k: (own[k], expected[k]) for k in expected if own[k] != expected[k]}
    assert wrong == {}, f"{arch}: shapes (ours, official) differ"


def test_default_head_conv_is_official(arch_and_model):
    arch, ref, model = arch_and_model
    hidden = [v for k, v in model.state_dict().items() if k.startswith("wh.") and v.dim() == 4][0]
    assert hidden.shape[0] == ref["head_conv"], arch


def test_parameter_count_within_one_percent(arch_and_model):
    arch, ref, model = arch_and_model
    ours = sum(p.numel() for p in model.parameters())
    assert abs(ours - ref["num_parameters"]) <= 0.01 * ref["num_parameters"], (arch, ours)


@pytest.mark.parametrize("arch", ["resdcn18", "dla34"])  # the others: too large a file to write
def test_official_state_dict_loads_strictly_after_module_prefix_is_stripped(arch, tmp_path):
    """A checkpoint shaped like the official ones ({"epoch", "state_dict"}, ``module.`` keys)."""
    ref = _official(arch)
    model = build_model(arch, ref["num_classes"])
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in ref["state_dict"].items():
        if name.endswith("num_batches_tracked"):
            state["module." + name] = torch.tensor(7)
        else:
            state["module." + name] = torch.randn(shape, generator=gen)
    path = tmp_path / f"ctdet_{arch}.pth"
    torch.save({"epoch": 140, "state_dict": state}, path)
    report = load_checkpoint(model, path)
    assert not (report.missing or report.unexpected or report.shape_mismatched or report.reinitialized)
    own = model.state_dict()
    for name in ref["state_dict"]:
        torch.testing.assert_close(own[name], state["module." + name], rtol=0, atol=0)
