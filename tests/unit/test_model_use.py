"""Pure pieces of using a model: the champion rule, checkpoint specs, model sources, image inputs,
scales, the metrics table and the ONNX detection comparison."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from centernet.checkpoint import save_checkpoint
from centernet.evaluate import CocoMetrics
from centernet.models import build_model
from workflows.errors import UserError
from workflows.evaluate import metrics_table, parse_scales
from workflows.export import compare_decoded, compare_heads
from workflows.model_source import load_checkpoint_model, model_spec, parse_models_uri, resolve_model
from workflows.predict import collect_images, image_ids, input_size_option
from workflows.register import Candidate, champion_decision

CLASSES = {"category_ids": [2, 7, 90], "names": ["square", "circle", "triangle"]}


def test_champion_moves_only_on_better_val_ap_on_the_same_val_data():
    cur = Candidate("1", 0.40, "abc")
    assert champion_decision(Candidate("2", 0.5, "abc"), None) == (True, "no champion yet")
    move, why = champion_decision(Candidate("2", 0.41, "abc"), cur)
    assert move and why == "val AP 0.4100 beats 0.4000 of version 1"
    move, why = champion_decision(Candidate("2", 0.40, "abc"), cur)  # a tie does not beat
    assert not move and "does not beat 0.4000 of champion version 1" in why
    move, why = champion_decision(Candidate("2", 0.90, "xyz"), cur)
    assert not move and "validation data not known to be the same (val data hash xyz vs abc" in why
    assert not champion_decision(Candidate("2", 0.90, None), cur)[0]
    assert not champion_decision(Candidate("2", None, "abc"), cur)[0]
    assert champion_decision(Candidate("2", 0.1, "xyz"), cur, force=True)[0]
    assert champion_decision(Candidate("2", 0.1, "abc"), Candidate("1", None, "abc"))[0]


def test_model_spec_reads_train_and_demo_checkpoints():
    train = model_spec({"arch": "dla34", "classes": CLASSES, "config": {"input_size": 384, "head_conv": 128}}, "x")
    assert train.input_size == (384, 384) and train.arch == "dla34" and train.head_conv == 128
    lead = model_spec({"arch": "resnet18", "classes": CLASSES, "input_size": [256, 320], "config": {"input_size": 512}}, "x")
    assert lead.input_size == (256, 320)  # extra["input_size"] wins over the config's
    demo = model_spec({"arch": "resnet18", "classes": CLASSES, "input_size": [128, 128]}, "demo")
    assert demo.categories.category_ids == (2, 7, 90)
    with pytest.raises(UserError, match=r"^ck\.pt: not a CenterNet checkpoint of this project "
                                        r"\(extra lacks arch, input_size\)$"):
        model_spec({"classes": CLASSES}, "ck.pt")


def test_checkpoint_sources_and_their_errors(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = build_model("resnet18", 3)
    save_checkpoint(tmp_path / "m.pt", model, extra={"arch": "resnet18", "classes": CLASSES, "input_size": [64, 64]})
    monkeypatch.chdir(tmp_path)
    loaded = resolve_model("m.pt")  # relative to the working directory
    assert loaded.spec.arch == "resnet18" and not loaded.model.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match=r"^notes\.txt: not a PyTorch checkpoint"):
        resolve_model("notes.txt")
    with pytest.raises(UserError, match=r"^nope\.pt: no such checkpoint file$"):
        resolve_model("nope.pt")
    assert resolve_model((tmp_path / "m.pt").as_uri()).spec.arch == "resnet18"  # file:// like s3://, via MLflow
    with pytest.raises(UserError, match=r"^file:///no/such/m\.pt: cannot download"):
        resolve_model("file:///no/such/m.pt")
    save_checkpoint(tmp_path / "wrong.pt", model, extra={"arch": "resdcn18", "classes": CLASSES, "input_size": [64, 64]})
    with pytest.raises(UserError, match=r"weights do not fit resdcn18 with 3 classes"):
        load_checkpoint_model(tmp_path / "wrong.pt")
    with pytest.raises(UserError, match=r"^models:/x/y: expected models:/NAME/VERSION or models:/NAME@ALIAS$"):
        parse_models_uri("models:/x/y")
    assert parse_models_uri("models:/shapes@champion") == ("shapes", None, "champion")
    assert parse_models_uri("models:/shapes/3") == ("shapes", "3", None)
    with pytest.raises(UserError, match="no MLflow store at"):
        resolve_model("models:/shapes@champion", tracking_uri=f"sqlite:///{tmp_path / 'absent.db'}")
    with pytest.raises(UserError, match=r"cannot reach the MLflow tracking server http://127\.0\.0\.1:9"):
        resolve_model("models:/shapes@champion", tracking_uri="http://127.0.0.1:9")


def test_collect_images_files_folders_globs(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("2.jpg", "10.png", "notes.txt"):
        (tmp_path / "a" / name).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no images")
    found = collect_images(["a"], cwd=tmp_path)
    assert [p.name for p in found] == ["10.png", "2.jpg"]
    assert collect_images(["a/*.jpg", "a/2.jpg"], cwd=tmp_path) == [tmp_path / "a" / "2.jpg"]
    assert image_ids(found) == [10, 2]  # COCO-style numeric names
    assert image_ids([tmp_path / "x.jpg", tmp_path / "2.jpg"]) == [1, 2]
    with pytest.raises(UserError, match=r"^--images empty: no image files \(\.jpg"):
        collect_images(["empty"], cwd=tmp_path)
    with pytest.raises(UserError, match=r"^--images a/\*\.gif: matches no image files"):
        collect_images(["a/*.gif"], cwd=tmp_path)
    with pytest.raises(UserError, match=r"^--images nope: no such file or directory"):
        collect_images(["nope"], cwd=tmp_path)
    assert input_size_option(None, (64, 96)) == (64, 96) and input_size_option(128, (64, 64)) == (128, 128)
    with pytest.raises(UserError, match=r"^--input-size must be a positive multiple of 32 \(e\.g\. 512\), got 100$"):
        input_size_option(100, (64, 64))


def test_parse_scales_and_metrics_table():
    assert parse_scales("0.5, 0.75,1,1.25,1.5") == (0.5, 0.75, 1.0, 1.25, 1.5)
    assert parse_scales(None) is None
    with pytest.raises(UserError, match="'x' is not a number"):
        parse_scales("1,x")
    table = metrics_table(CocoMetrics(0.5, 0.75, 0.5, 0.1, 0.2, 0.3, {"square": 0.25}))
    lines = table.splitlines()
    assert lines[2] == "AP         0.5000" and lines[3] == "AP50       0.7500" and lines[-1] == "AP square  0.2500"


def test_onnx_comparisons_pass_within_and_fail_beyond_tolerance():
    ref = (torch.zeros(1, 2, 4, 4), torch.ones(1, 2, 4, 4))
    assert compare_heads(ref, [np.full((1, 2, 4, 4), 5e-5), np.ones((1, 2, 4, 4))], ("hm", "wh")) == {"hm": 5e-5, "wh": 0.0}
    with pytest.raises(UserError, match=r"^ONNX check failed: output 'wh' differs from PyTorch by 0\.001 > 0\.0001$"):
        compare_heads(ref, [np.zeros((1, 2, 4, 4)), np.full((1, 2, 4, 4), 1.001)], ("hm", "wh"))
    boxes = torch.tensor([[[0.0, 0, 10, 10], [5, 5, 8, 8], [1, 1, 2, 2], [3, 3, 4, 4]]])
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.1]])  # the middle two tie: either order is fine
    classes = torch.tensor([[1, 0, 2, 0]])
    swapped = [boxes.numpy()[:, [0, 2, 1, 3]], scores.numpy(), classes.numpy()[:, [0, 2, 1, 3]]]
    assert compare_decoded((boxes, scores, classes), swapped)["compared"] == 3.0  # the K-th is not matched
    wrong = [boxes.numpy(), scores.numpy(), np.array([[1, 2, 2, 0]])]
    with pytest.raises(UserError, match=r"^ONNX check failed: detection 1 of image 0 \(class 2, score 0\.5000\) has no"):
        compare_decoded((boxes, scores, classes), wrong)
    moved = [boxes.numpy() + np.array([0, 0, 0, 0.01]), scores.numpy(), classes.numpy()]
    with pytest.raises(UserError, match="within 0.001 px"):
        compare_decoded((boxes, scores, classes), moved)
