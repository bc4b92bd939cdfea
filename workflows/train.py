"""Distributed training on Ray Train: check the job, open its MLflow run, run the workers, close.

``run_training(TrainConfig(...))`` checks everything that can be checked before Ray starts (data
directories, classes, architecture, pretrained weights), starts (or connects to) Ray, opens one
MLflow run for the job and runs :func:`workflows.train_worker.train_loop_per_worker` on N DDP
workers (gloo on CPU, NCCL on GPU) through ``ray.train.torch.TorchTrainer``. A worker failure
restarts the worker group from the latest checkpoint (``FailureConfig.max_failures``); running again
with the same storage path and name (:func:`resume_config`) continues a finished or stopped run,
e.g. with more epochs, in the same MLflow run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.loader import DataInfo, describe_data
from workflows.errors import JobFailed, UserError
from workflows.progress import ProgressDisplay, epoch_line, progress_actor_name, progress_board
from workflows.run_meta import read_run_meta, write_run_meta
from workflows.train_config import TrainConfig
from workflows.train_worker import CHECKPOINT_FILE, train_loop_per_worker

log = logging.getLogger("centernet.train")


@dataclass
class TrainOutcome:
    """What a finished job left: the Ray result, its run directory and the MLflow run."""

    result: Any
    run_dir: str
    mlflow_run_id: str
    tracking_uri: str
    checkpoint_path: str | None
    metrics: dict[str, Any]
    summary: dict[str, Any] | None
    checkpoint_sha256: str | None = None  # of checkpoint.pt, hashed while it is local (no second download)


@dataclass(frozen=True)
class JobData:
    """The checked data of a job."""

    train: DataInfo
    val: DataInfo | None


def run_name(cfg: TrainConfig) -> str:
    return cfg.name or f"{cfg.arch}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_data(cfg: TrainConfig) -> JobData:
    """The job's data, described and checked before anything starts (``UserError`` naming the
    directory: missing, not a data directory, classes differing, no ground truth to evaluate)."""
    try:
        info = describe_data(cfg.data, cfg.input_size)
        val_info = describe_data(cfg.val_data, cfg.input_size) if cfg.val_data else None
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    if info.num_samples == 0:
        raise UserError(f"{cfg.data}: the data directory holds no samples")
    if val_info is not None:
        if val_info.classes != info.classes:
            raise UserError(f"{cfg.val_data}: its classes {val_info.classes['names']} differ from the training "
                            f"data's {info.classes['names']}")
        if val_info.annotations is None:
            raise UserError(f"{cfg.val_data}: no ground-truth annotations to evaluate against")
    return JobData(info, val_info)


def check_pretrained(cfg: TrainConfig) -> dict[str, str]:
    """Fetch (once, into torch.hub's cache) and verify the job's pretrained weights on the driver,
    so that an offline machine fails here in one line; returns what to log (source, URL, sha256)."""
    from pathlib import Path

    from centernet.models.pretrained import IMAGENET, NONE, PretrainedWeightsError, fetch, file_sha256, imagenet_url

    source = cfg.pretrained_source
    if source == NONE:
        return {"pretrained": NONE}
    try:
        url = imagenet_url(cfg.arch) if source == IMAGENET else None
        path = fetch(url) if url is not None else Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"--pretrained {source}: weights file not found")
    except (PretrainedWeightsError, ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    return {"pretrained": source, "pretrained.url": url or "", "pretrained.path": str(path),
            "pretrained.sha256": file_sha256(path)}


def resume_config(run_dir: str, **overrides: Any) -> TrainConfig:
    """The config of the run stored at ``run_dir`` (``<storage_path>/<name>``) with ``overrides``
    (e.g. ``epochs=20``): training it continues from that run's latest checkpoint."""
    run_dir = str(run_dir).rstrip("/")
    meta = read_run_meta(run_dir)
    if meta is None:
        raise UserError(f"{run_dir}: not a run directory written by centernet train (no centernet_run.json)")
    base = dict(meta["config"])
    parent, _, name = run_dir.rpartition("/")
    base.update(storage_path=parent or ".", name=name)
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(base)


def build_trainer(cfg: TrainConfig, *, tracking_uri: str, mlflow_run_id: str | None,
                  progress_actor: str | None = None, env_vars: Mapping[str, str] | None = None,
                  name: str | None = None, storage_path: str | None = None,
                  local_rendezvous: str | None = None, callbacks: Sequence[Any] = (),
                  epoch_metrics: bool = True) -> Any:
    """The ``TorchTrainer`` of a job (gloo on CPU, NCCL on GPU). ``local_rendezvous``: on the
    embedded single-machine Ray, a directory where the process group meets through a file, so
    that nothing listens beyond loopback (:mod:`workflows.local_rendezvous`). ``callbacks``: Ray
    Train callbacks of the run (e.g. Tune's ``TuneReportCallback`` when a Tune trial drives it);
    ``epoch_metrics=False``: rank 0 logs only step metrics to MLflow, the epoch metrics are left to
    the receiver of the reports."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    score = "val_AP" if cfg.val_data else None
    backend = "nccl" if cfg.use_gpu else "gloo"
    torch_config = TorchConfig(backend=backend)
    if local_rendezvous is not None:
        from workflows.local_rendezvous import LocalTorchConfig, loopback_worker_env

        torch_config = LocalTorchConfig(backend=backend, store_dir=local_rendezvous)
        env_vars = {**loopback_worker_env(), **(env_vars or {})}
    run_config = RunConfig(
        name=name or run_name(cfg),
        storage_path=storage_path or cfg.storage_uri,
        failure_config=FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints, checkpoint_score_attribute=score,
                                           checkpoint_score_order="max"),
        worker_runtime_env={"env_vars": dict(env_vars)} if env_vars else None,
        callbacks=list(callbacks) or None,
    )
    resources = {"CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = 1
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "tracking_uri": tracking_uri,
                           "mlflow_run_id": mlflow_run_id, "progress_actor": progress_actor,
                           "log_epoch_metrics": epoch_metrics},
        torch_config=torch_config,
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker=resources),
        run_config=run_config,
    )


def run_params(cfg: TrainConfig, data: JobData) -> dict[str, Any]:
    """The MLflow params of a job: the config and the defaults it resolved to."""
    return {**cfg.to_dict(), "effective_lr": cfg.effective_lr, "effective_lr_steps": list(cfg.effective_lr_steps),
            "effective_warmup_steps": cfg.effective_warmup_steps, "global_batch_size": cfg.global_batch_size,
            "pretrained_source": cfg.pretrained_source,
            "num_classes": len(data.train.classes["category_ids"]), "num_samples": data.train.num_samples}


def run_tags(cfg: TrainConfig, data: JobData, run_dir: str) -> dict[str, str]:
    from workflows.tracking import git_commit

    return {"centernet.kind": "train", "arch": cfg.arch, "git_commit": git_commit() or "unknown",
            "data_hash": data.train.data_hash, "data_kind": data.train.kind,
            "val_data_hash": data.val.data_hash if data.val else "", "ray_run_dir": run_dir,
            "num_workers": str(cfg.num_workers)}


def run_training(cfg: TrainConfig, *, address: str | None = None, show_progress: bool = True,
                 verbose: bool = False, tags: Mapping[str, str] | None = None) -> TrainOutcome:
    """Run a training job end to end (see the module docstring); resumes when ``<storage>/<name>``
    already holds a run. ``tags``: extra MLflow tags of the run (e.g. ``mlflow.parentRunId`` to nest
    it under a pipeline's run). Raises :class:`workflows.errors.UserError` for what the user can fix
    before anything starts and :class:`workflows.errors.JobFailed` when training fails for good."""
    from centernet.models.pretrained import file_sha256
    from workflows.ray_runtime import probe_address, ray_session, worker_env_vars
    from workflows.tracking import finish_run, resolve_tracking_uri

    probe_address(address)
    name = run_name(cfg)
    cfg = cfg.replace(name=name)
    data = check_data(cfg)
    pretrained = check_pretrained(cfg)
    if cfg.lr_schedule == "step":
        from centernet.schedule import lr_steps_warning

        late = lr_steps_warning(cfg.effective_lr_steps, cfg.epochs)
        if late:
            log.warning("warning: %s", late)
    run_dir = f"{cfg.storage_uri.rstrip('/')}/{name}"
    tracking_uri = resolve_tracking_uri()
    env_vars = worker_env_vars(tracking_uri)
    meta = read_run_meta(run_dir)
    run_id = open_run(tracking_uri, experiment=cfg.experiment, run_name=name,
                      params={**run_params(cfg, data), **pretrained},
                      tags={**run_tags(cfg, data, run_dir), **(tags or {})},
                      run_id=meta["mlflow_run_id"] if meta else None)
    write_run_meta(run_dir, {"mlflow_run_id": run_id, "tracking_uri": tracking_uri, "config": cfg.to_dict()})
    describe_job(cfg, data, run_dir, run_id, tracking_uri)

    with ray_session(address, env_vars=env_vars, verbose=verbose) as session:
        log.info("ray:        %s", f"local instance {session.address}" if session.started and session.log_dir
                 else f"cluster {session.address or 'connected'}")
        board_name = progress_actor_name(name)
        board = progress_board(board_name)
        trainer = build_trainer(cfg, tracking_uri=tracking_uri, mlflow_run_id=run_id,
                                progress_actor=board_name, env_vars=env_vars,
                                local_rendezvous=session.scratch_dir)
        display = ProgressDisplay(board, total=cfg.epochs, unit="epoch", describe=epoch_line,
                                  position=lambda s: int(s["progress"].get("epoch", 0)), enabled=show_progress)
        try:
            with display:
                result = trainer.fit()
        except Exception as exc:
            from mlflow.exceptions import MlflowException

            try:
                finish_run(tracking_uri, run_id, status="FAILED")
            except MlflowException:  # the server is gone as well: the training failure is the news
                log.warning("warning: could not mark MLflow run %s as FAILED (MLflow at %s does not answer)",
                            run_id, tracking_uri)
            raise JobFailed(failure_line(exc, session.log_dir)) from exc
        finally:
            _kill_quietly(board)
        artifacts = [(d.manifest, kind) for d, kind in ((data.train, "data"), (data.val, "val_data"))
                     if d is not None and d.manifest]
        late = (result.return_value or {}).get("unsent_metrics", [])
        checkpoint_path = checkpoint_sha256 = None
        if result.checkpoint is not None:
            checkpoint_path = checkpoint_uri(result.checkpoint)
            with result.checkpoint.as_directory() as local_dir:  # downloads from remote storage
                artifacts.append((f"{local_dir}/{CHECKPOINT_FILE}", "checkpoint"))
                close_run(tracking_uri, run_id, artifacts, late, checkpoint_path or run_dir)
                checkpoint_sha256 = file_sha256(f"{local_dir}/{CHECKPOINT_FILE}")
        else:
            close_run(tracking_uri, run_id, artifacts, late, run_dir)
    return TrainOutcome(result, run_dir, run_id, tracking_uri, checkpoint_path, dict(result.metrics or {}),
                        result.return_value, checkpoint_sha256)


def open_run(tracking_uri: str, **kwargs: Any) -> str:
    """:func:`workflows.tracking.start_run`; a server that does not answer (after MLflow's HTTP retries,
    ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``) is a :class:`UserError` before anything starts."""
    from mlflow.exceptions import MlflowException

    from workflows.tracking import start_run

    try:
        return start_run(tracking_uri, **kwargs)
    except MlflowException as exc:
        if exc.get_http_status_code() < 500:
            raise
        raise UserError(f"MLflow at {tracking_uri} does not answer ({' '.join(str(exc).split())[:300]}); start it or "
                        f"set MLFLOW_TRACKING_URI to a running server") from None


def close_run(tracking_uri: str, run_id: str, artifacts: list[tuple[str, str]], late_metrics: list[Any],
              where: str) -> None:
    """Close a finished job's MLflow run (artifacts, the metrics rank 0 could not send); a server that
    does not answer even after MLflow's HTTP retries is a one-line :class:`JobFailed` saying where the
    trained model is."""
    from mlflow.exceptions import MlflowException

    from workflows.tracking import finish_run

    try:
        finish_run(tracking_uri, run_id, artifacts=artifacts, late_metrics=late_metrics)
    except MlflowException as exc:
        raise JobFailed(f"training finished ({where}), but MLflow at {tracking_uri} did not take run {run_id}'s "
                        f"results: {' '.join(str(exc).split())[:300]}") from None


def checkpoint_uri(checkpoint: Any) -> str:
    """Where a Ray Train checkpoint's ``checkpoint.pt`` is, as a user names it: a local path, or a
    URI with its scheme (``s3://bucket/...``; Ray keeps the path without it)."""
    import pyarrow.fs as pafs

    path = f"{checkpoint.path}/{CHECKPOINT_FILE}"
    fs = checkpoint.filesystem
    if fs is None or isinstance(fs, pafs.LocalFileSystem):
        return path
    scheme = {"gcs": "gs"}.get(fs.type_name, fs.type_name)
    return f"{scheme}://{path}"


def training_samples(info: DataInfo) -> str:
    """``"2400 samples (shards: 4 views of 600 images, one view of each per epoch)"``, or
    ``"600 samples (coco)"`` for data with one view per image."""
    if info.views > 1:
        return (f"{info.num_samples} samples ({info.kind}: {info.views} views of {info.images_per_epoch} images, "
                "one view of each per epoch)")
    return f"{info.num_samples} samples ({info.kind})"


def describe_job(cfg: TrainConfig, data: JobData, run_dir: str, run_id: str, tracking_uri: str) -> None:
    """A few lines about what was found and where results go (logger ``centernet.train``)."""
    names = ", ".join(data.train.classes["names"][:8]) + (" ..." if len(data.train.classes["names"]) > 8 else "")
    log.info("data:       %s: %s, %d classes: %s", cfg.data, training_samples(data.train),
             len(data.train.classes["names"]), names)
    if data.val is not None:
        log.info("validation: %s: %d images, COCO AP every %d epoch(s)", cfg.val_data, data.val.num_samples,
                 cfg.eval_every)
    start = "ImageNet weights" if cfg.pretrained_source == "imagenet" else (
        "random initialisation" if cfg.from_scratch else cfg.pretrained_source)
    log.info("model:      %s from %s; %d worker(s) x batch %d, lr %.3g, %d epochs", cfg.arch, start,
             cfg.num_workers, cfg.batch_size, cfg.effective_lr, cfg.epochs)
    log.info("run:        %s (MLflow run %s in %s)", run_dir, run_id, tracking_uri)


def failure_line(exc: BaseException, log_dir: str | None, *, what: str = "training") -> str:
    """One line for a failed job (``what`` failed): the root error of the first failing worker, and
    where the logs are."""
    text = str(exc).strip().splitlines()
    errors = [ln.strip() for ln in text if ln.strip() and ":" in ln and ln.strip()[0].isalpha()
              and ("Error" in ln.split(":", 1)[0] or "Exception" in ln.split(":", 1)[0])]
    cause = errors[-1] if errors else (text[-1].strip() if text else type(exc).__name__)
    where = f"; logs: {log_dir}" if log_dir else ""
    return f"{what} failed: {cause}{where} (--verbose shows everything)"


def _kill_quietly(actor: Any) -> None:
    import ray

    try:
        ray.kill(actor)
    except Exception:  # the session may already be going down
        pass
