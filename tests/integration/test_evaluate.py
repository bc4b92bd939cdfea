"""`centernet evaluate`: a near-perfect model scores AP50 >= 0.9, the command's numbers are
evaluate_model's on the same data (COCO directory through pipeline.loader, or images +
annotations), multi-scale testing runs, and a registered model's result is logged to MLflow."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from workflows.cli import build_app


def _evaluate(args: list[str], env: dict[str, str]):
    result = CliRunner().invoke(build_app(), ["evaluate", *args], env=env)
    assert result.exit_code == 0, result.output
    return result


def test_evaluate_matches_evaluate_model_and_logs_a_registered_run(shapes_registry, trained_detector, tmp_path):
    import torch
    from mlflow.tracking import MlflowClient

    from centernet.batch import collate_samples
    from centernet.dataset import CocoSampleDataset
    from centernet.inference import evaluate_model
    from centernet.sample import SampleConfig
    from workflows.model_source import resolve_model

    data = trained_detector.data
    root = data.images_dir.parent  # a COCO directory: images/ + annotations.json
    env = {"MLFLOW_TRACKING_URI": shapes_registry.tracking_uri}
    result = _evaluate(["--model", f"models:/{shapes_registry.name}@champion", "--data", str(root),
                        "--out", str(tmp_path / "eval.json")], env)
    report = json.loads((tmp_path / "eval.json").read_text())
    metrics = report["metrics"]
    assert metrics["AP50"] >= 0.9 and report["images"] == 6 and report["scales"] is None
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP/square", "AP/circle", "AP/triangle"} <= set(metrics)
    lines = result.output.splitlines()
    assert f"AP50         {metrics['AP50']:.4f}" in lines and f"AP triangle  {metrics['AP/triangle']:.4f}" in lines

    loaded = resolve_model(str(trained_detector.strong))
    dataset = CocoSampleDataset(data.images_dir, data.annotations, SampleConfig(input_size=loaded.spec.input_size))
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, collate_fn=collate_samples)
    direct, _ = evaluate_model(loaded.model, loader,
                               str(data.annotations), loaded.spec.categories)
    assert metrics == pytest.approx(direct.as_dict(), abs=1e-12)

    # the same numbers from --images/--annotations and from a checkpoint file
    _evaluate(["--model", str(trained_detector.strong), "--images", str(data.images_dir), "--annotations",
               str(data.annotations), "--out", str(tmp_path / "eval2.json")], env)
    assert json.loads((tmp_path / "eval2.json").read_text())["metrics"] == pytest.approx(metrics, abs=1e-12)

    # the registered model's evaluation is an MLflow run linked to the version
    client = MlflowClient(shapes_registry.tracking_uri)
    version = client.get_model_version(shapes_registry.name, "1")
    run = client.get_run(version.tags["last_evaluation_run"])
    assert run.data.tags["centernet.kind"] == "evaluation" and run.data.tags["model_version"] == "1"
    assert run.data.tags["model_uri"] == f"models:/{shapes_registry.name}/1"
    assert run.data.metrics["eval/AP50"] == pytest.approx(metrics["AP50"])
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["eval.json"]


def test_multiscale_evaluation(trained_detector, tmp_path):
    # (the tiny model saw one scale and no flips, so its multi-scale AP is low: scale equivariance
    # of the pipeline is checked on perfect heads in tests/unit/test_multiscale.py)
    data = trained_detector.data
    args = ["--model", str(trained_detector.strong), "--data", str(data.images_dir.parent)]
    result = _evaluate([*args, "--scales", "0.75,1,1.25", "--flip", "--out", str(tmp_path / "ms.json")], {})
    report = json.loads((tmp_path / "ms.json").read_text())
    assert report["scales"] == [0.75, 1.0, 1.25] and report["flip"] is True and report["images"] == 6
    assert 0.0 <= report["metrics"]["AP50"] <= 1.0
    assert "6 images, scales 0.75,1.0,1.25 + flip" in result.output
    _evaluate([*args, "--scales", "1", "--out", str(tmp_path / "one.json")], {})
    _evaluate([*args, "--out", str(tmp_path / "plain.json")], {})
    one, plain = (json.loads((tmp_path / f).read_text())["metrics"] for f in ("one.json", "plain.json"))
    assert one == pytest.approx(plain, abs=1e-12)  # one scale, no NMS: the single-scale path's numbers
    assert plain["AP50"] >= 0.9


def test_evaluate_on_precomputed_shards_equals_the_coco_directory(trained_detector, ray_local, tmp_path):
    from pipeline.precompute import precompute
    from pipeline.schema import PrecomputeSettings

    data = trained_detector.data
    precompute(data.images_dir, data.annotations, tmp_path / "shards",
               PrecomputeSettings.of(input_size=64, augment=False), chunk_size=4, progress=False)
    args = ["--model", str(trained_detector.strong)]
    _evaluate([*args, "--data", str(tmp_path / "shards"), "--out", str(tmp_path / "shards.json")], {})
    _evaluate([*args, "--data", str(data.images_dir.parent), "--out", str(tmp_path / "coco.json")], {})
    shards, coco = (json.loads((tmp_path / f).read_text()) for f in ("shards.json", "coco.json"))
    assert shards["images"] == 6 and shards["metrics"] == pytest.approx(coco["metrics"], abs=1e-12)
    assert shards["data_hash"] != coco["data_hash"]  # the manifest's hash vs the annotation file's
