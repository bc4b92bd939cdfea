"""One trial of a search: a Ray Train run of :func:`workflows.train_worker.train_loop_per_worker`
with the trial's loss weights (and lr), tracked in its own MLflow run nested under the search's.

:func:`run_trial` is the Tune function trainable. It runs in a trial actor and is the driver of its
trial's Train run (``<search dir>/trials/<trial id>``): it opens (or, when a resumed search restarts
the trial, reopens) the trial's MLflow run and fits a ``TorchTrainer`` whose
``TuneReportCallback`` hands every epoch's report to Tune. The rank-0 worker logs the step and epoch
metrics into the trial's run; the epoch metrics (val AP among them) reach it through the search's
driver, which logs each epoch Tune accepted (:func:`log_epoch_metrics`): a trial stopped by the
scheduler may run on until Tune's stop reaches it, and what it does then must not count. The
driver closes the run when the trial ends (:func:`close_trial_run`): its state (completed, stopped early,
failed) as a tag and its latest checkpoint as the artifact ``checkpoint/checkpoint.pt`` — trial
runs carry what ``centernet register`` reads from a training run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workflows.train import JobData
from workflows.train_config import TrainConfig

PARENT_TAG = "mlflow.parentRunId"  # what nests a run under another in the MLflow UI
TUNE_PARENT_TAG = "centernet.tune_parent"
TRIAL_ID_TAG = "centernet.trial_id"
TRIAL_STATE_TAG = "centernet.trial_state"
EPOCHS_DONE_TAG = "centernet.epochs_done"
COMPLETED, STOPPED, FAILED = "completed", "stopped_early", "failed"


@dataclass(frozen=True)
class TrialSpec:
    """What every trial of a search shares (plain data, sent to the trial actors)."""

    train: dict[str, Any]  # the search's TrainConfig.to_dict(); weights and lr come from the trial
    data: JobData
    search_dir: str
    tracking_uri: str
    parent_run_id: str
    env_vars: dict[str, str] = field(default_factory=dict)
    scratch_dir: str | None = None  # the local Ray session's (file rendezvous); None on a cluster
    extra_params: dict[str, str] = field(default_factory=dict)  # e.g. the pretrained weights' source

    @property
    def experiment(self) -> str:
        return str(self.train["experiment"])

    @property
    def trials_dir(self) -> str:
        return f"{self.search_dir.rstrip('/')}/trials"

    def run_dir(self, trial_id: str) -> str:
        """The Train run directory of trial ``trial_id`` (checkpoints, Train's own state)."""
        return f"{self.trials_dir}/{trial_id}"


def trial_config(spec: TrialSpec, config: Mapping[str, Any], trial_id: str) -> TrainConfig:
    """The training config of one trial: the search's, with the trial's weights and lr."""
    from workflows.tune_space import trial_settings

    weights, lr = trial_settings(config)
    cfg = TrainConfig.from_dict(spec.train)
    return cfg.replace(name=trial_id, loss_weights={**cfg.loss_weights, **weights},
                       lr=lr if lr is not None else cfg.lr)


def run_trial(config: dict[str, Any], spec: TrialSpec) -> None:
    """The Tune function trainable: one Ray Train run with this trial's settings (see the module
    docstring). A failed Train run raises, and Tune records the trial as failed."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from workflows.train import build_trainer

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = trial_config(spec, config, trial_id)
    run_id = open_trial_run(spec, trial_id, cfg)
    trainer = build_trainer(cfg, tracking_uri=spec.tracking_uri, mlflow_run_id=run_id, env_vars=spec.env_vars,
                            name=trial_id, storage_path=spec.trials_dir, local_rendezvous=spec.scratch_dir,
                            callbacks=[TuneReportCallback()], epoch_metrics=False)
    trainer.fit()


def find_trial_run(tracking_uri: str, experiment: str, parent_run_id: str, trial_id: str) -> Any | None:
    """The MLflow run of trial ``trial_id`` of the search ``parent_run_id``, if it has one."""
    from workflows.tracking import find_runs

    runs = find_runs(tracking_uri, experiment, filter_string=(
        f"tags.`{TUNE_PARENT_TAG}` = '{parent_run_id}' and tags.`{TRIAL_ID_TAG}` = '{trial_id}'"))
    return runs[0] if runs else None


def open_trial_run(spec: TrialSpec, trial_id: str, cfg: TrainConfig) -> str:
    """Create the trial's run, nested under the search's, as a training run (params, tags), or
    reopen it when the trial was started before (a resumed search)."""
    from workflows.tracking import start_run
    from workflows.train import run_params, run_tags

    existing = find_trial_run(spec.tracking_uri, spec.experiment, spec.parent_run_id, trial_id)
    tags = {**run_tags(cfg, spec.data, spec.run_dir(trial_id)), PARENT_TAG: spec.parent_run_id,
            TUNE_PARENT_TAG: spec.parent_run_id, TRIAL_ID_TAG: trial_id}
    return start_run(spec.tracking_uri, experiment=spec.experiment, run_name=trial_id,
                     params={**run_params(cfg, spec.data), **spec.extra_params, "trial_id": trial_id}, tags=tags,
                     run_id=existing.info.run_id if existing is not None else None)


# Keys Tune adds to every result (not the training worker's metrics).
_TUNE_KEYS = frozenset({"done", "training_iteration", "timesteps_this_iter", "episodes_this_iter", "epochs_done"})


def log_epoch_metrics(tracking_uri: str, run_id: str, result: Mapping[str, Any]) -> None:
    """Log the epoch metrics a trial reported (a Tune result) into its run, at the step the training
    worker would have used (its ``global_step``)."""
    from ray.tune.result import AUTO_RESULT_KEYS

    from workflows.tracking import RunLogger

    metrics = {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and k not in _TUNE_KEYS and k not in AUTO_RESULT_KEYS}
    RunLogger(tracking_uri, run_id).log_metrics(metrics, step=int(result.get("global_step", 0)), flush=True)


def trial_state(ended_with_error: bool, epochs_done: int, epochs: int) -> str:
    """How a trial ended: failed, completed (all its epochs) or stopped early (by the scheduler)."""
    if ended_with_error:
        return FAILED
    return COMPLETED if epochs_done >= epochs else STOPPED


def latest_checkpoint(run_dir: str, epochs_done: int) -> str | None:
    """The directory of the newest checkpoint of a trial's Train run among its first
    ``epochs_done`` epochs (a later one may be half-written by a stopped trial), or ``None``."""
    from pyarrow import fs as pafs

    from pipeline.shards import exists, join, resolve
    from workflows.train_worker import CHECKPOINT_FILE

    filesystem, path = resolve(run_dir)
    try:
        entries = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError:
        return None
    epochs = sorted((int(e.base_name[6:]), e.path) for e in entries
                    if e.type == pafs.FileType.Directory and e.base_name.startswith("epoch_")
                    and e.base_name[6:].isdigit() and int(e.base_name[6:]) < epochs_done)
    for _, directory in reversed(epochs):
        if exists(filesystem, join(directory, CHECKPOINT_FILE)):
            return run_dir.rstrip("/") + "/" + Path(directory).name
    return None


def close_trial_run(spec: TrialSpec, trial_id: str, *, state: str, epochs_done: int,
                    artifacts: Sequence[tuple[str, str]] = ()) -> str | None:
    """Record how trial ``trial_id`` ended in its run and close it (once: a run already closed is left
    as it is): tags ``centernet.trial_state`` and ``centernet.epochs_done``, the latest checkpoint as
    ``checkpoint/checkpoint.pt`` plus ``artifacts`` (``(local path, artifact dir)``), status
    FINISHED (FAILED for a failed trial). Returns the run id, ``None`` when the trial has no run."""
    import ray.train

    from workflows.tracking import client, finish_run
    from workflows.train_worker import CHECKPOINT_FILE

    run = find_trial_run(spec.tracking_uri, spec.experiment, spec.parent_run_id, trial_id)
    if run is None:
        return None
    if run.info.status != "RUNNING" and TRIAL_STATE_TAG in run.data.tags:  # closed before
        return run.info.run_id
    run_id = run.info.run_id
    c = client(spec.tracking_uri)
    c.set_tag(run_id, TRIAL_STATE_TAG, state)
    c.set_tag(run_id, EPOCHS_DONE_TAG, str(epochs_done))
    status = "FAILED" if state == FAILED else "FINISHED"
    checkpoint = latest_checkpoint(spec.run_dir(trial_id), epochs_done)
    if checkpoint is None:
        finish_run(spec.tracking_uri, run_id, status=status, artifacts=artifacts)
        return run_id
    with ray.train.Checkpoint(checkpoint).as_directory() as local_dir:  # downloads from remote storage
        finish_run(spec.tracking_uri, run_id, status=status,
                   artifacts=[*artifacts, (f"{local_dir}/{CHECKPOINT_FILE}", "checkpoint")])
    return run_id
