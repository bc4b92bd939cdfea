"""`centernet export`: ONNX of ResNet-18, ResDCN-18 and DLA-34 (deformable convolutions through
GridSample) agrees with PyTorch in onnxruntime; with --with-decode the graph gives the same top
detections; a registered source gets the file logged to its version's run."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from centernet.checkpoint import save_checkpoint
from centernet.detect import letterbox_image
from centernet.image_files import read_image
from centernet.inference import predict
from centernet.models import build_model
from centernet.transforms import normalize_image
from workflows.cli import build_app
from workflows.export import export_onnx
from workflows.model_source import resolve_model

CLASSES = {"category_ids": [2, 7, 90], "names": ["square", "circle", "triangle"]}


@pytest.mark.parametrize("arch", ["resnet18", "resdcn18", "dla34"])
def test_onnx_heads_match_pytorch(arch, tmp_path):
    torch.manual_seed(0)
    model = build_model(arch, 3)
    with torch.no_grad():  # off the initialisation: non-zero DCN offsets sample between pixels
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    save_checkpoint(tmp_path / "m.pt", model, extra={"arch": arch, "classes": CLASSES, "input_size": [64, 64]})
    loaded = resolve_model(str(tmp_path / "m.pt"))
    result = export_onnx(loaded, tmp_path / "m.onnx", dynamic_batch=arch == "resnet18")
    assert set(result.max_abs_diff) == {"hm", "wh", "reg"} and max(result.max_abs_diff.values()) <= 1e-4
    # independently: another input (3 images where the batch is dynamic), onnxruntime vs eager
    x = torch.randn(3 if arch == "resnet18" else 1, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    got = dict(zip(["hm", "wh", "reg"], session.run(None, {"images": x.numpy()})))
    with torch.no_grad():
        want = loaded.model(x)[-1]
    for name in ("hm", "wh", "reg"):
        assert got[name].shape == tuple(want[name].shape)
        assert np.abs(got[name] - want[name].numpy()).max() <= 1e-4, name
    if arch == "resdcn18":  # the decode on DCN heads (ResNet-18's is checked on a trained model below)
        decoded = export_onnx(loaded, tmp_path / "d.onnx", with_decode=True, k=20)
        assert decoded.max_abs_diff["scores"] <= 1e-4 and decoded.max_abs_diff["compared"] >= 1


def test_export_with_decode_from_the_registry(shapes_registry, trained_detector, tmp_path):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "shapes.onnx"
    result = CliRunner().invoke(build_app(), ["export", "--model", f"models:/{shapes_registry.name}@champion", "--out",
                                              str(out), "--with-decode", "--dynamic-batch", "--top-k", "20"],
                                env={"MLFLOW_TRACKING_URI": shapes_registry.tracking_uri})
    assert result.exit_code == 0, result.output
    assert f"logged as runs:/{shapes_registry.run_id}/onnx/shapes.onnx" in result.output
    client = MlflowClient(shapes_registry.tracking_uri)
    assert [a.path for a in client.list_artifacts(shapes_registry.run_id, "onnx")] == ["onnx/shapes.onnx"]
    onnx_tag = client.get_model_version(shapes_registry.name, "1").tags["onnx"]
    assert onnx_tag == f"runs:/{shapes_registry.run_id}/onnx/shapes.onnx"

    # on real images: the graph's top detections are PyTorch's decode (x4 = input pixels)
    loaded = resolve_model(str(trained_detector.strong))
    files = sorted(trained_detector.data.images_dir.iterdir())[:2]
    boxed = [letterbox_image(read_image(f), (64, 64))[0] for f in files]
    x = torch.from_numpy(np.stack([normalize_image(b) for b in boxed]))  # [2, 3, 64, 64]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    boxes, scores, classes = session.run(None, {"images": x.numpy()})
    want = predict(loaded.model, x, k=20).numpy()  # [2, 20, 6] output-map px
    assert boxes.shape == (2, 20, 4) and classes.dtype == np.int64
    np.testing.assert_allclose(scores[:, 0], want[:, 0, 4], atol=1e-5)
    np.testing.assert_array_equal(classes[:, 0], want[:, 0, 5].astype(np.int64))
    np.testing.assert_allclose(boxes[:, 0], want[:, 0, :4] * 4, atol=1e-3)
    assert (scores[:, 0] > 0.5).all()
