"""The pipeline's steps: each calls the existing function that does the work and returns what the
steps after it need (paths, hashes, run ids, metrics) as plain JSON data, with its own wall time.

The flow (:mod:`workflows.flow.pipeline`) makes them Prefect tasks: cached by the key each takes as
its first parameter (:func:`workflows.flow.caching.step_key`), retried after transient failures.
Each step first runs the ``CENTERNET_FLOW_FAIL_ONCE`` test hook.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from workflows.flow.caching import fail_once_hook, file_sha256
from workflows.flow.remote_results import staged_output

PARENT_RUN_TAG = "mlflow.parentRunId"
PREDICTIONS_PICTURE = "predictions.png"


class SharedRay:
    """One Ray connection for steps running at once in threads (the two precompute steps): the
    first that needs it starts it, the last one out closes it; a step that is cached, or whose
    shards all exist, never does."""

    def __init__(self, address: str | None, *, verbose: bool = False):
        self.address = address
        self.verbose = verbose
        self._lock = threading.Lock()
        self._users = 0
        self._stack: contextlib.ExitStack | None = None

    @contextlib.contextmanager
    def use(self) -> Iterator[None]:
        from workflows.ray_runtime import ray_session, worker_env_vars

        with self._lock:
            if self._users == 0:
                stack = contextlib.ExitStack()
                # worker_env_vars: a cluster's nodes know nothing of the user's S3 settings
                stack.enter_context(ray_session(self.address, env_vars=worker_env_vars(), dashboard=False,
                                                verbose=self.verbose, ship_code=True))
                self._stack = stack
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._stack is not None:
                    self._stack.close()
                    self._stack = None


def synthesize(key: str, section: Mapping[str, Any], out_dir: str) -> dict[str, Any]:
    """Generate the synthetic train/val datasets (``make_synthetic_coco``) under ``out_dir``."""
    from centernet.synthetic import make_synthetic_coco

    fail_once_hook("synthesize")
    start = time.perf_counter()
    out: dict[str, Any] = {}
    for split, count, seed in (("train", section["train_images"], section["seed"]),
                               ("val", section["val_images"], section["seed"] + 1)):
        root = Path(out_dir) / split
        ds = make_synthetic_coco(root, int(count), seed=int(seed))
        out[split] = {"images": str(root / "images"), "annotations": str(ds.annotations),
                      "annotations_sha256": file_sha256(ds.annotations)}
    return {**out, "seconds": time.perf_counter() - start}


def precompute_split(key: str, split: str, images: str, annotations: str, out: str, settings: Mapping[str, Any],
                     chunk_size: int, workers: int | None, ray: SharedRay) -> dict[str, Any]:
    """Validate one dataset and write its shards (``pipeline.precompute.precompute``, which skips
    shards a previous run finished)."""
    from pipeline.precompute import precompute
    from pipeline.schema import PrecomputeSettings

    fail_once_hook(f"precompute_{split}")
    start = time.perf_counter()
    result = precompute(images, annotations, out, PrecomputeSettings.from_dict(dict(settings)), chunk_size=chunk_size,
                        workers=workers, progress=False, ray_context=ray.use)
    m = result.manifest
    return {"dir": result.out, "settings_hash": m["settings_hash"],
            "manifest_sha256": file_sha256(f"{out}/manifest.json"), "num_samples": int(m["num_samples"]),
            "shards_written": result.shards_written, "shards_skipped": result.shards_skipped,
            "seconds": time.perf_counter() - start}


def tune(key: str, train: Mapping[str, Any], search: Mapping[str, Any], address: str | None, parent_run_id: str,
         verbose: bool) -> dict[str, Any]:
    """The Tune search (``workflows.tune.run_tune``): the best trial's loss weights and lr."""
    from workflows.errors import JobFailed
    from workflows.train_config import TrainConfig
    from workflows.tune import run_tune
    from workflows.tune_config import TuneConfig

    fail_once_hook("tune")
    start = time.perf_counter()
    outcome = run_tune(TrainConfig.from_dict(train), TuneConfig.from_dict(search), address=address,
                       show_progress=False, verbose=verbose, parent_run_id=parent_run_id)
    if outcome.best is None:
        raise JobFailed(f"the search {outcome.search_dir} ended without a usable trial")
    return {"params": outcome.best_params, "run_id": outcome.best_run_id, "search_run_id": outcome.parent_run_id,
            "search_dir": outcome.search_dir, "val_ap": outcome.best.val_ap, "seconds": time.perf_counter() - start}


def train(key: str, config: Mapping[str, Any], address: str | None, parent_run_id: str, show_progress: bool,
          verbose: bool) -> dict[str, Any]:
    """The final training (``workflows.train.run_training``); its run directory is named by the
    config, so a rerun after a failure continues from the latest checkpoint."""
    from workflows.train import run_training
    from workflows.train_config import TrainConfig

    fail_once_hook("train")
    start = time.perf_counter()
    outcome = run_training(TrainConfig.from_dict(config), address=address, show_progress=show_progress,
                           verbose=verbose, tags={PARENT_RUN_TAG: parent_run_id})
    metrics = {k: float(v) for k, v in outcome.metrics.items() if isinstance(v, (int, float))}
    start_epoch = int((outcome.summary or {}).get("start_epoch", 0))
    last = int(metrics.get("epoch", -1)) + 1
    note = (f"resumed at epoch {start_epoch + 1}, ran to epoch {last} of {config['epochs']}" if start_epoch
            else f"epochs 1-{last} of {config['epochs']}")
    return {"run_id": outcome.mlflow_run_id, "start_epoch": start_epoch, "note": note,
            "tracking_uri": outcome.tracking_uri, "run_dir": outcome.run_dir, "checkpoint": outcome.checkpoint_path,
            "checkpoint_sha256": outcome.checkpoint_sha256[:16] if outcome.checkpoint_sha256 else None,
            "metrics": metrics, "seconds": time.perf_counter() - start}


def register(key: str, run_id: str, name: str, force_alias: bool, tracking_uri: str) -> dict[str, Any]:
    """Register the trained model (``workflows.register.register_run``; ``@champion`` by its rule)."""
    from workflows.register import register_run

    fail_once_hook("register")
    start = time.perf_counter()
    r = register_run(run_id, name, tracking_uri=tracking_uri, force_alias=force_alias)
    return {"model_uri": r.model_uri, "name": r.name, "version": r.version, "champion": r.champion,
            "previous_champion": r.previous_champion, "reason": r.reason, "val_ap": r.val_ap,
            "seconds": time.perf_counter() - start}


def evaluate(key: str, model_uri: str, data: str, flip: bool, batch_size: int, device: str, out: str,
             tracking_uri: str, parent_run_id: str) -> dict[str, Any]:
    """COCO AP of the registered version on the validation shards (``workflows.evaluate``),
    recorded as an MLflow evaluation run nested under the pipeline's run."""
    from workflows.evaluate import evaluate_loaded, log_evaluation, metrics_table, shard_or_coco_data, write_report
    from workflows.model_source import resolve_model
    from workflows.tracking import client

    fail_once_hook("evaluate")
    start = time.perf_counter()
    loaded = resolve_model(model_uri, tracking_uri=tracking_uri)
    source = shard_or_coco_data(loaded, data, batch_size=batch_size)
    result = evaluate_loaded(loaded, source, flip=flip, device=device)
    with staged_output(out) as local:
        run_id = log_evaluation(loaded, result, write_report(result.report(loaded), local))
    client(tracking_uri).set_tag(run_id, PARENT_RUN_TAG, parent_run_id)
    return {"metrics": result.metrics.as_dict(), "table": metrics_table(result.metrics), "report": out,
            "run_id": run_id, "seconds": time.perf_counter() - start}


def predict(key: str, model_uri: str, images: list[str], out: str, threshold: float, device: str,
            tracking_uri: str) -> dict[str, Any]:
    """Predictions of the registered version drawn on a few validation images
    (``workflows.predict.predict_images``), tiled into one picture."""
    import cv2

    from centernet.visualize import tile_images
    from workflows.model_source import resolve_model
    from workflows.predict import DRAWN_DIR, predict_images

    fail_once_hook("predict")
    start = time.perf_counter()
    loaded = resolve_model(model_uri, tracking_uri=tracking_uri)
    with staged_output(out) as local:
        result = predict_images(loaded, [Path(p) for p in images], local, threshold=threshold, device=device,
                                progress=False)
        drawn = sorted((local / DRAWN_DIR).iterdir())
        cv2.imwrite(str(local / PREDICTIONS_PICTURE), tile_images([cv2.imread(str(p)) for p in drawn], columns=4,
                                                                  cell=256))
    out = out.rstrip("/")
    return {"picture": f"{out}/{PREDICTIONS_PICTURE}", "detections": f"{out}/{result.detections_path.name}",
            "images": result.images, "seconds": time.perf_counter() - start}
