"""Fixtures for using trained models: a tiny detector trained in process to near-perfection on a
synthetic set (category ids 2, 7, 90), train-like MLflow runs carrying its checkpoint, and a
registry with it as ``models:/shapes@champion``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

INPUT_SIZE = 64
TRAIN_STEPS = 75  # full-batch steps of the strong model (AP50 1.0 on its images)
WEAK_STEPS = 30  # the same run stopped early: the worse model (AP50 ~0.06)
CATEGORY_IDS = (2, 7, 90)


@dataclass(frozen=True)
class TrainedDetector:
    """Checkpoints of one training run (early and final), their real AP on the data, the data."""

    data: object  # centernet.synthetic.SyntheticDataset
    strong: Path
    weak: Path
    strong_ap: float
    weak_ap: float
    data_hash: str


def _checkpoint(model, path: Path, categories, steps: int) -> Path:
    from centernet.checkpoint import save_checkpoint

    extra = {"arch": "resnet18", "classes": categories.to_dict(), "num_classes": categories.num_classes,
             "input_size": [INPUT_SIZE, INPUT_SIZE], "config": {"arch": "resnet18", "input_size": INPUT_SIZE}}
    return save_checkpoint(path, model, epoch=steps, extra=extra)


@pytest.fixture(scope="session")
def trained_detector(tmp_path_factory) -> TrainedDetector:
    """ResNet-18 at 64x64 fitted to 6 synthetic images, one object each (~10 s of one CPU core)."""
    import hashlib

    import torch

    from centernet.batch import collate_samples
    from centernet.dataset import CocoSampleDataset
    from centernet.engine import make_optimizer, train_epoch
    from centernet.inference import evaluate_model
    from centernet.losses import CenterNetLoss, validate_loss_weights
    from centernet.models import build_model
    from centernet.sample import SampleConfig
    from centernet.synthetic import make_synthetic_coco

    root = tmp_path_factory.mktemp("detector")
    data = make_synthetic_coco(root / "data", 6, seed=5, image_size=(64, 80), object_size=(24, 40),
                               objects_per_image=(1, 1), category_ids=CATEGORY_IDS)
    dataset = CocoSampleDataset(data.images_dir, data.annotations, SampleConfig(input_size=(INPUT_SIZE, INPUT_SIZE)))
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=len(dataset), collate_fn=collate_samples)))
    torch.manual_seed(0)
    model = build_model("resnet18", dataset.num_classes)
    optimizer = make_optimizer(model, 3e-3)
    weights = validate_loss_weights({})
    aps = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steps this small run faster on one thread, and far faster on a busy machine
    try:
        for step in range(1, TRAIN_STEPS + 1):
            train_epoch(model, [batch], criterion=CenterNetLoss(), optimizer=optimizer, weights=weights,
                        device="cpu")
            if step in (WEAK_STEPS, TRAIN_STEPS):
                name = "weak" if step == WEAK_STEPS else "strong"
                _checkpoint(model, root / f"{name}.pt", dataset.coco.categories, step)
                aps[name] = evaluate_model(model, [batch], str(data.annotations), dataset.coco.categories)[0].ap
    finally:
        torch.set_num_threads(threads)
    data_hash = hashlib.sha256(Path(data.annotations).read_bytes()).hexdigest()[:16]
    return TrainedDetector(data, root / "strong.pt", root / "weak.pt", aps["strong"], aps["weak"], data_hash)


def _make_train_run(tracking_uri: str, checkpoint: Path, *, val_ap: float, val_data_hash: str,
                    data_hash: str = "train-data", tags: dict[str, str] | None = None) -> str:
    """A finished MLflow run as `centernet train` leaves it: tags, final val/AP, checkpoint artifact."""
    import shutil
    import tempfile

    from workflows.tracking import finish_run, start_run

    run_id = start_run(tracking_uri, experiment="centernet", run_name="train-like", params={"arch": "resnet18"},
                       tags={"centernet.kind": "train", "arch": "resnet18", "data_hash": data_hash,
                             "val_data_hash": val_data_hash, **(tags or {})})
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "checkpoint.pt"
        shutil.copy2(checkpoint, copy)
        finish_run(tracking_uri, run_id, artifacts=[(copy, "checkpoint")], metrics={"val/AP": val_ap})
    return run_id


@pytest.fixture(scope="session")
def make_train_run():
    """``make_train_run(tracking_uri, checkpoint, *, val_ap, val_data_hash, data_hash=, tags=) -> run id``."""
    return _make_train_run


@dataclass(frozen=True)
class Registry:
    """An MLflow store holding the strong model's run, registered as ``shapes`` (@champion)."""

    tracking_uri: str
    run_id: str
    name: str


@pytest.fixture(scope="session")
def shapes_registry(tmp_path_factory, trained_detector) -> Registry:
    from workflows.register import register_run

    uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlruns.db'}"
    run_id = _make_train_run(uri, trained_detector.strong, val_ap=trained_detector.strong_ap,
                            val_data_hash=trained_detector.data_hash)
    registration = register_run(run_id, "shapes", tracking_uri=uri)
    assert registration.champion and registration.version == "1"
    return Registry(uri, run_id, "shapes")


@pytest.fixture(scope="module")
def sqlite_tracking(tmp_path_factory):
    """$MLFLOW_TRACKING_URI set to a fresh SQLite store for the module (put back after)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlruns.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri
