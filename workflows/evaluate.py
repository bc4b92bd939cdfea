"""``centernet evaluate``: COCO AP of a model on shards, a COCO directory, or images + annotations.

Single-scale (optionally flip) evaluation is :func:`centernet.inference.evaluate_model`, the path
training validates with; ``--scales`` runs the official multi-scale test
(:mod:`centernet.multiscale`) and scores it with the same :func:`centernet.evaluate.evaluate_coco`.
A registered model's evaluation is recorded as an MLflow run (``centernet.kind=evaluation``) whose
metrics are linked to that version's logged model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workflows.errors import UserError
from workflows.model_source import LoadedModel

EVALUATION_KIND = "evaluation"


@dataclass(frozen=True)
class EvaluationData:
    """A loader of letterboxed samples ("image", "image_id", "affine") and its ground truth."""

    loader: Any
    annotations: str  # COCO ground-truth JSON
    description: str  # what was evaluated, for the report
    data_hash: str | None
    num_images: int


@dataclass(frozen=True)
class EvaluationResult:
    """COCO metrics of one evaluation and how they were obtained."""

    metrics: Any  # centernet.evaluate.CocoMetrics
    images: int
    seconds: float
    flip: bool
    scales: tuple[float, ...] | None
    data: EvaluationData
    detections: list[dict[str, Any]]

    def report(self, loaded: LoadedModel) -> dict[str, Any]:
        """The JSON report: metrics, per-class AP, model, data and settings."""
        return {"model": loaded.source, "arch": loaded.spec.arch, "data": self.data.description,
                "data_hash": self.data.data_hash, "images": self.images, "flip": self.flip,
                "scales": list(self.scales) if self.scales else None, "seconds": round(self.seconds, 3),
                "metrics": self.metrics.as_dict()}


def parse_scales(text: str | None) -> tuple[float, ...] | None:
    """``"0.5,0.75,1"`` -> (0.5, 0.75, 1.0); ``UserError`` naming a bad entry."""
    if text is None or not text.strip():
        return None
    scales = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            value = float(part)
        except ValueError:
            raise UserError(f"--scales {text}: {part!r} is not a number (e.g. --scales 0.5,0.75,1,1.25,1.5)") from None
        if not 0.1 <= value <= 4.0:
            raise UserError(f"--scales {text}: {value} is outside 0.1..4")
        scales.append(value)
    return tuple(scales)


def _check_classes(loaded: LoadedModel, classes: dict[str, Any], where: str) -> None:
    model_ids = [int(i) for i in loaded.spec.classes["category_ids"]]
    data_ids = [int(i) for i in classes["category_ids"]]
    if model_ids != data_ids:
        raise UserError(f"{where}: its category ids {data_ids} differ from the model's {model_ids}; evaluate "
                        "on data with the classes the model was trained on")


def shard_or_coco_data(loaded: LoadedModel, data: str, *, batch_size: int, loader_workers: int = 0,
                       input_size: tuple[int, int] | None = None, cwd: str | Path | None = None) -> EvaluationData:
    """``--data``: shards or a COCO directory, through ``pipeline.loader`` like training's validation."""
    from pipeline.loader import describe_data, make_loader
    from workflows.user_paths import resolve_user_path

    path = resolve_user_path(data, option="--data", cwd=cwd)
    size = input_size or loaded.spec.input_size
    try:
        info = describe_data(path, input_size=size[0])
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(f"--data {data}: {exc}") from None
    if info.annotations is None:
        raise UserError(f"--data {data}: no ground truth (annotations.clean.json) to evaluate against")
    _check_classes(loaded, info.classes, f"--data {data}")
    loader = make_loader(info, rank=0, world_size=1, batch_size=batch_size, train=False,
                         loader_workers=loader_workers)
    return EvaluationData(loader, info.annotations, info.path, info.data_hash, info.num_samples)


def image_folder_data(loaded: LoadedModel, images: str, annotations: str, *, batch_size: int,
                      loader_workers: int = 0, input_size: tuple[int, int] | None = None,
                      cwd: str | Path | None = None) -> EvaluationData:
    """``--images DIR --annotations JSON``: letterboxed in process (``CocoSampleDataset``)."""
    import hashlib

    from torch.utils.data import DataLoader

    from centernet.batch import collate_samples
    from centernet.data import read_coco
    from centernet.dataset import CocoSampleDataset
    from centernet.sample import SampleConfig

    from workflows.user_paths import resolve_user_path

    images_dir = Path(resolve_user_path(images, option="--images", cwd=cwd))
    ann = Path(resolve_user_path(annotations, option="--annotations", cwd=cwd))
    if not images_dir.is_dir():
        raise UserError(f"--images {images}: no such directory (resolved to {images_dir})")
    try:
        coco = read_coco(ann)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(f"--annotations {annotations}: {exc}") from None
    _check_classes(loaded, coco.categories.to_dict(), f"--annotations {annotations}")
    missing = [r.file_name for r in coco.images if not (images_dir / r.file_name).is_file()]
    if missing:
        raise UserError(f"--images {images}: {len(missing)} image(s) of {annotations} are missing, e.g. {missing[0]}")
    size = input_size or loaded.spec.input_size
    dataset = CocoSampleDataset(images_dir, coco, SampleConfig(input_size=size))
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=loader_workers, collate_fn=collate_samples)
    digest = hashlib.sha256(ann.read_bytes()).hexdigest()[:16]
    return EvaluationData(loader, str(ann), f"{images_dir} + {ann}", digest, len(coco.images))


def evaluate_loaded(loaded: LoadedModel, data: EvaluationData, *, flip: bool = False,
                    scales: Sequence[float] | None = None, device: str = "cpu") -> EvaluationResult:
    """COCO AP of ``loaded`` on ``data`` (single-scale: ``evaluate_model``; else multi-scale)."""
    from centernet.evaluate import evaluate_coco
    from centernet.inference import evaluate_model, image_sizes_of
    from centernet.multiscale import predict_loader_multiscale
    from workflows.distributed_eval import ground_truth
    from workflows.predict import resolve_device

    dev = resolve_device(device)
    model = loaded.model.to(dev).eval()
    categories = loaded.spec.categories
    gt = ground_truth(str(data.annotations))  # a local file or a URI (shards in s3://)
    start = time.perf_counter()
    if scales:
        results, seen = predict_loader_multiscale(model, data.loader, categories, image_sizes_of(gt),
                                                  scales=scales, device=dev, flip_test=flip)
        metrics = evaluate_coco(gt, results, image_ids=seen)
    else:
        metrics, results = evaluate_model(model, data.loader, gt, categories, device=dev, flip_test=flip)
    seconds = time.perf_counter() - start
    return EvaluationResult(metrics, data.num_images, seconds, flip, tuple(scales) if scales else None, data,
                            results)


def metrics_table(metrics: Any) -> str:
    """A plain-text table: AP, AP50, AP75, AP small/medium/large, then AP per class."""
    rows = [("AP", metrics.ap), ("AP50", metrics.ap50), ("AP75", metrics.ap75), ("AP small", metrics.ap_small),
            ("AP medium", metrics.ap_medium), ("AP large", metrics.ap_large)]
    rows += [(f"AP {name}", value) for name, value in metrics.per_class.items()]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    lines += [f"{name:<{width}}  {value:6.4f}" for name, value in rows]
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write the JSON report atomically."""
    from pipeline.shards import atomic_write_bytes, resolve

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fs, local = resolve(path)
    atomic_write_bytes(fs, local, json.dumps(report, indent=2).encode())
    return path


def log_evaluation(loaded: LoadedModel, result: EvaluationResult, report_path: Path) -> str:
    """Record the evaluation of a registered version as an MLflow run (in its training run's
    experiment), its metrics linked to the version's logged model; returns the run id."""
    from mlflow.entities import Metric, Param, RunTag

    from workflows.mlflow_access import store_client
    from workflows.tracking import DEFAULT_EXPERIMENT, ensure_experiment

    ref = loaded.version
    if ref is None:
        raise ValueError("log_evaluation needs a models:/ source")
    uri, client = store_client(loaded.tracking_uri)
    experiment_id = (client.get_run(ref.run_id).info.experiment_id if ref.run_id
                     else ensure_experiment(uri, DEFAULT_EXPERIMENT))
    tags = {"centernet.kind": EVALUATION_KIND, "model_name": ref.name, "model_version": ref.version,
            "model_uri": f"models:/{ref.name}/{ref.version}", "source_run": ref.run_id or "",
            "data_hash": result.data.data_hash or ""}
    run = client.create_run(experiment_id, run_name=f"evaluate-{ref.name}-v{ref.version}", tags=tags)
    params = {"model": loaded.source, "data": result.data.description[:500], "flip": str(result.flip),
              "scales": ",".join(map(str, result.scales)) if result.scales else "1",
              "images": str(result.images)}
    now = int(time.time() * 1000)
    metrics = [Metric(f"eval/{k}".replace(" ", "_"), float(v), now, 0, model_id=ref.model_id)
               for k, v in result.metrics.as_dict().items()]
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                     tags=[RunTag(k, v) for k, v in tags.items()])
    client.log_artifact(run.info.run_id, str(report_path))
    client.set_terminated(run.info.run_id)
    client.set_model_version_tag(ref.name, ref.version, "last_evaluation_run", run.info.run_id)
    return run.info.run_id
