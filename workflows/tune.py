"""Hyperparameter search over the loss weights (and lr) with Ray Tune: each trial a Ray Train run,
one MLflow parent run per search with a nested run per trial.

``run_tune(TrainConfig(...), TuneConfig(...))`` checks the job before Ray starts (data, space,
schedule), opens the search's MLflow run, and runs ``TuneConfig.trials`` trials of
:func:`workflows.tune_trial.run_trial` — a ``TorchTrainer`` of the training worker with the
trial's weights — chosen by Optuna's TPE or random sampling and stopped early by ASHA on ``val_AP``
(or run to the end, FIFO). Trial drivers reserve no CPU (256 MiB of memory), so ``K`` trials of
``W`` one-CPU workers fit in ``K x W`` CPUs. The search's state lives in ``<storage>/<name>``
(Tune's experiment state and ``centernet_tune.json``); running the same name again continues it
with ``Tuner.restore``: ended trials are not rerun, interrupted ones continue from their latest
checkpoint in the same MLflow run. At the end the parent run gets the best trial, a CSV of all
trials and two plots (:mod:`workflows.tune_report`); ``register`` registers the best trial's model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from workflows.errors import JobFailed, UserError
from workflows.train import JobData, check_data, check_pretrained, training_samples
from workflows.train_config import TrainConfig
from workflows.tune_config import TuneConfig
from workflows.tune_space import DEFAULT_SPACE, SearchSpace, load_space, parse_space

log = logging.getLogger("centernet.tune")
SEARCH_META_FILE = "centernet_tune.json"
METRIC = "val_AP"
TRIAL_DRIVER_MEMORY = 256 * 1024**2  # what a trial's Train driver reserves instead of a CPU
# Settings that may change when a search is continued (they do not change its trials).
CHANGEABLE_ON_RESUME = ("register", "train.storage_path")  # storage_path: where the search directory is now


@dataclass
class TuneOutcome:
    """What a finished search left: where its state is, its MLflow runs, its trials, the best one.

    ``best_params`` and ``best_run_id`` are what a caller (e.g. a pipeline) takes from a search:
    the best trial's loss weights and lr, and the MLflow run that holds its checkpoint."""

    search_dir: str
    parent_run_id: str
    tracking_uri: str
    trials: list[Any]  # workflows.tune_report.TrialRecord
    best: Any | None
    registration: Any | None = None  # workflows.register.Registration with --register

    @property
    def best_run_id(self) -> str | None:
        """The MLflow run id of the best trial (a training run: ``runs:/<id>/checkpoint/checkpoint.pt``)."""
        return self.best.run_id if self.best is not None else None

    @property
    def best_params(self) -> dict[str, Any]:
        """The best trial's settings: ``{"loss_weights": {"hm", "wh", "reg"}, "lr": float | None}``
        (``lr``: the trial's effective learning rate), ``{}`` without a best trial."""
        if self.best is None:
            return {}
        settings = self.best.settings
        return {"loss_weights": {k: settings[k] for k in ("hm", "wh", "reg") if k in settings},
                "lr": settings.get("lr")}


def search_name(train: TrainConfig, tune: TuneConfig) -> str:
    return tune.name or f"tune-{train.arch}-{time.strftime('%Y%m%d-%H%M%S')}"


def search_dir(train: TrainConfig, tune: TuneConfig) -> str:
    """``<storage path>/<search name>`` (the name must be set)."""
    return f"{train.storage_uri.rstrip('/')}/{tune.name}"


def read_search_meta(directory: str) -> dict[str, Any] | None:
    """The metadata of the search stored at ``directory`` (configs, space, MLflow parent run), or
    ``None`` when it holds no search."""
    from workflows.run_meta import read_run_meta

    return read_run_meta(directory, SEARCH_META_FILE)


def write_search_meta(directory: str, meta: dict[str, Any]) -> None:
    from workflows.run_meta import write_run_meta

    write_run_meta(directory, meta, SEARCH_META_FILE)


def stored_configs(directory: str) -> tuple[TrainConfig, TuneConfig]:
    """The configs of the search at ``directory`` (``<storage path>/<name>``), to continue it."""
    meta = read_search_meta(directory)
    if meta is None:
        raise UserError(f"{directory}: not a search directory written by centernet tune (no {SEARCH_META_FILE})")
    return TrainConfig.from_dict(meta["train"]), TuneConfig.from_dict(meta["tune"])


def check_search(train: TrainConfig, tune: TuneConfig, meta: dict[str, Any] | None) -> SearchSpace:
    """What can be checked before Ray starts (``UserError`` naming the option); returns the space."""
    if not train.val_data:
        needs = "--register" if tune.register else "a search"
        raise UserError(f"{needs} needs --val-data: trials are compared by their validation AP")
    if tune.register:
        from workflows.register import _NAME as MODEL_NAME  # the registry's rule, checked before the search

        if not MODEL_NAME.match(tune.register):
            raise UserError(f"--register {tune.register!r}: use letters, digits, '_', '.', '-' (it becomes "
                            f"models:/{tune.register}@champion)")
    try:
        if tune.scheduler == "asha":
            tune.asha_max_epochs(train.epochs)
        if meta is not None:
            return parse_space(meta["space"], source=f"{SEARCH_META_FILE} space", base=SearchSpace({}))
        return load_space(tune.space) if tune.space else DEFAULT_SPACE
    except ValueError as exc:
        raise UserError(str(exc)) from None


def check_same_search(directory: str, meta: dict[str, Any], train: TrainConfig, tune: TuneConfig) -> None:
    """``UserError`` when the settings differ from those the search at ``directory`` started with."""
    old = {**{f"train.{k}": v for k, v in meta["train"].items()}, **{k: v for k, v in meta["tune"].items()}}
    new = {**{f"train.{k}": v for k, v in train.to_dict().items()}, **tune.to_dict()}
    changed = [k for k in new if k not in CHANGEABLE_ON_RESUME and old.get(k) != new[k]]
    if changed:
        what = ", ".join(f"{k.removeprefix('train.')} {old.get(k)!r} -> {new[k]!r}" for k in changed[:4])
        raise UserError(f"{directory}: a search with other settings is stored there ({what}); continue it "
                        f"with `centernet tune --resume {directory}` alone, or choose another --name")


def max_concurrent(train: TrainConfig, tune: TuneConfig) -> int:
    """Trials at once: ``--max-concurrent``, else as many as the cluster's CPUs (GPUs) hold."""
    import ray

    if tune.max_concurrent:
        return min(tune.max_concurrent, tune.trials)
    resources = ray.cluster_resources()
    if train.use_gpu:
        fit = int(resources.get("GPU", 0) // tune.workers_per_trial)
    else:
        fit = int(resources.get("CPU", 0) // (tune.workers_per_trial * train.cpus_per_worker))
    return max(1, min(fit, tune.trials))


def parent_params(train: TrainConfig, tune: TuneConfig, space: SearchSpace, data: JobData,
                  concurrent: int) -> dict[str, Any]:
    """MLflow params of the search's run: its options, the space, the data and the trials' config."""
    params: dict[str, Any] = {"searcher": tune.search, "scheduler": tune.scheduler, "trials": tune.trials,
                              "max_concurrent": concurrent, "workers_per_trial": tune.workers_per_trial,
                              "search_seed": tune.search_seed, "metric": METRIC}
    if tune.scheduler == "asha":
        params.update(grace_period=tune.grace_period, reduction_factor=tune.reduction_factor,
                      max_epochs=tune.asha_max_epochs(train.epochs))
    params.update(space.to_params())
    params.update(data_hash=data.train.data_hash, val_data_hash=data.val.data_hash if data.val else "",
                  train=train.to_dict())
    return params


def parent_tags(train: TrainConfig, tune: TuneConfig, data: JobData, directory: str) -> dict[str, str]:
    from workflows.tracking import git_commit

    return {"centernet.kind": "tune", "centernet.search": str(tune.name), "arch": train.arch,
            "git_commit": git_commit() or "unknown", "data_hash": data.train.data_hash,
            "val_data_hash": data.val.data_hash if data.val else "", "ray_run_dir": directory}


def searcher(tune: TuneConfig) -> Any:
    if tune.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=METRIC, mode="max", seed=tune.search_seed)
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=tune.search_seed)


def scheduler(train: TrainConfig, tune: TuneConfig) -> Any:
    """ASHA on ``val_AP`` counted in finished epochs (``epochs_done``: Tune's own iteration count
    restarts when a resumed trial continues from a checkpoint), or FIFO. A trial that reaches
    ``--epochs`` ends by itself (its Train run shuts down cleanly) rather than being stopped."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if tune.scheduler == "fifo":
        return FIFOScheduler()
    max_t = tune.asha_max_epochs(train.epochs)
    return ASHAScheduler(time_attr="epochs_done", metric=METRIC, mode="max", max_t=max_t,
                         grace_period=tune.grace_period, reduction_factor=tune.reduction_factor,
                         stop_last_trials=max_t < train.epochs)


@contextlib.contextmanager
def quiet_tune(verbose: bool) -> Iterator[None]:
    """Tune's console output off unless ``verbose`` (its newer output engine prints an experiment
    table even at verbosity 0; the classic one is silent there), its error logs included: a failed
    trial is one line of :class:`workflows.tune_callback.SearchCallback`, its traceback in the
    trial's ``error.txt``."""
    if verbose:
        yield
        return
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    tune_logger.setLevel(logging.CRITICAL)
    import optuna

    # "A new study created in memory ...": optuna's own setting (it resets its logger's level)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    old = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        with without_raylet_line(STARTUP_CONCURRENCY_WARNING):
            yield
    finally:
        tune_logger.setLevel(level)
        if old is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = old


# The raylet warns when its Python workers outnumber 4x its CPUs: a search always has them on a small
# machine (a trial's driver and Train controller reserve no CPU), so the warning says nothing there.
STARTUP_CONCURRENCY_WARNING = r"which is \d+x the maximum expected startup concurrency"


@contextlib.contextmanager
def without_raylet_line(pattern: str) -> Iterator[None]:
    """Drop the driver-printed Ray lines matching ``pattern`` for the block (through the skip
    filter of Ray's log de-duplicators; a Ray without them prints the lines as before)."""
    import re

    try:
        from ray._private import ray_logging

        dedups = [ray_logging.stdout_deduplicator, ray_logging.stderr_deduplicator]  # raylet lines go to stdout
        old = [d.skip_re for d in dedups]
    except (ImportError, AttributeError):
        yield
        return
    for dedup, previous in zip(dedups, old):
        dedup.skip_re = re.compile(pattern if previous is None else f"{pattern}|{previous.pattern}")
    try:
        yield
    finally:
        for dedup, previous in zip(dedups, old):
            dedup.skip_re = previous


def make_tuner(spec: Any, train: TrainConfig, tune: TuneConfig, space: SearchSpace, *, concurrent: int,
               callback: Any, verbose: bool) -> Any:
    """The Tuner of the search, restored from ``spec.search_dir`` when that holds Tune's state (the
    restored one keeps the callback it was created with)."""
    import ray.tune

    from workflows.tune_trial import run_trial

    trainable = ray.tune.with_resources(ray.tune.with_parameters(run_trial, spec=spec),
                                        {"CPU": 0, "memory": TRIAL_DRIVER_MEMORY})
    if ray.tune.Tuner.can_restore(spec.search_dir):
        return ray.tune.Tuner.restore(spec.search_dir, trainable, resume_unfinished=True, resume_errored=False,
                                      restart_errored=False)
    return ray.tune.Tuner(
        trainable,
        param_space=space.to_tune(),
        tune_config=ray.tune.TuneConfig(search_alg=searcher(tune), scheduler=scheduler(train, tune),
                                        num_samples=tune.trials, max_concurrent_trials=concurrent,
                                        reuse_actors=False),
        run_config=ray.tune.RunConfig(name=tune.name, storage_path=train.storage_uri, verbose=1 if verbose else 0,
                                      callbacks=[callback]),
    )


def run_tune(train: TrainConfig, tune: TuneConfig, *, address: str | None = None, show_progress: bool = True,
             verbose: bool = False, parent_run_id: str | None = None) -> TuneOutcome:
    """Run (or continue) a search end to end (see the module docstring). ``parent_run_id``: an
    MLflow run (of the same tracking store) to nest the search's run under (tag
    ``mlflow.parentRunId``), e.g. a pipeline's. Raises :class:`workflows.errors.UserError` for what
    the user can fix before anything starts and :class:`workflows.errors.JobFailed` when the
    search ends without a usable trial."""
    from workflows.progress import ProgressDisplay, progress_actor_name, progress_board
    from workflows.ray_runtime import probe_address, ray_session, worker_env_vars
    from workflows.tracking import finish_run, resolve_tracking_uri, start_run
    from workflows.train import _kill_quietly, failure_line
    from workflows.tune_callback import SearchCallback, finished_trials, trials_line
    from workflows.tune_trial import PARENT_TAG, TrialSpec

    probe_address(address)
    tune = tune.replace(name=search_name(train, tune))
    train = train.replace(num_workers=tune.workers_per_trial, name=None)
    directory = search_dir(train, tune)
    meta = read_search_meta(directory)
    if meta is not None:
        check_same_search(directory, meta, train, tune)
    space = check_search(train, tune, meta)
    data = check_data(train)
    pretrained = check_pretrained(train)
    tracking_uri = meta["tracking_uri"] if meta else resolve_tracking_uri()
    env_vars = worker_env_vars(tracking_uri)

    with ray_session(address, env_vars=env_vars, verbose=verbose) as session, quiet_tune(verbose):
        concurrent = max_concurrent(train, tune)
        parent = start_run(tracking_uri, experiment=train.experiment, run_name=str(tune.name),
                           params=parent_params(train, tune, space, data, concurrent),
                           tags={**parent_tags(train, tune, data, directory),
                                 **({PARENT_TAG: parent_run_id} if parent_run_id else {})},
                           run_id=meta["parent_run_id"] if meta else None)
        write_search_meta(directory, {"parent_run_id": parent, "tracking_uri": tracking_uri, "train": train.to_dict(),
                                      "tune": tune.to_dict(), "space": space.to_dict()})
        describe_search(train, tune, space, data, directory, parent, tracking_uri, concurrent, resumed=meta is not None)
        spec = TrialSpec(train=train.to_dict(), data=data, search_dir=directory, tracking_uri=tracking_uri,
                         parent_run_id=parent, env_vars=env_vars, scratch_dir=session.scratch_dir,
                         extra_params=pretrained)
        board_name = progress_actor_name(str(tune.name))
        board = progress_board(board_name)
        manifests = [(d.manifest, kind) for d, kind in ((data.train, "data"), (data.val, "val_data"))
                     if d is not None and d.manifest]
        callback = SearchCallback(spec, epochs=train.epochs, board=board_name, artifacts=manifests)
        tuner = make_tuner(spec, train, tune, space, concurrent=concurrent, callback=callback, verbose=verbose)
        display = ProgressDisplay(board, total=tune.trials, unit="trial", describe=trials_line,
                                  position=finished_trials, enabled=show_progress)
        try:
            with display:
                grid = tuner.fit()
        except Exception as exc:
            finish_run(tracking_uri, parent, status="FAILED")
            raise JobFailed(failure_line(exc, session.log_dir, what="search")) from exc
        finally:
            _kill_quietly(board)
        return finish_search(train, tune, space, grid, directory, parent, tracking_uri, session.log_dir)


def finish_search(train: TrainConfig, tune: TuneConfig, space: SearchSpace, grid: Any, directory: str,
                  parent: str, tracking_uri: str, log_dir: str | None) -> TuneOutcome:
    """After ``Tuner.fit``: drop runs of lost trials, report into the parent run, register the best."""
    from workflows.tracking import finish_run
    from workflows.train import failure_line
    from workflows.tune_report import remove_lost_trial_runs, report_search, trial_records

    ended = grid.num_terminated + grid.num_errors
    if ended < tune.trials:
        finish_run(tracking_uri, parent, status="KILLED")
        raise JobFailed(f"the search stopped with {ended} of {tune.trials} trials ended; continue it with: "
                        f"centernet tune --resume {directory}")
    lost = remove_lost_trial_runs(tracking_uri, train.experiment, parent)
    if lost:
        log.info("removed %d MLflow run(s) of trials lost when the search was interrupted (they were rerun)", lost)
    records = trial_records(tracking_uri, train.experiment, parent)
    best = report_search(tracking_uri, parent, records, space, status="FINISHED" if grid.num_errors < len(grid)
                         else "FAILED")
    outcome = TuneOutcome(directory, parent, tracking_uri, records, best)
    if best is None:
        cause = failure_line(grid.errors[0], log_dir, what="every trial") if grid.errors else (
            "no trial reported a validation AP")
        raise JobFailed(cause)
    if tune.register:
        outcome.registration = register_best(best.run_id, tune.register, tracking_uri)
    return outcome


def register_best(run_id: str, model_name: str, tracking_uri: str) -> Any:
    """Register run ``run_id``'s model as ``model_name`` (``workflows.register.register_run``)."""
    from workflows.register import register_run

    return register_run(run_id, model_name, tracking_uri=tracking_uri)


def describe_search(train: TrainConfig, tune: TuneConfig, space: SearchSpace, data: JobData, directory: str,
                    parent: str, tracking_uri: str, concurrent: int, *, resumed: bool) -> None:
    """A few lines about the search (logger ``centernet.tune``)."""
    log.info("data:       %s: %s, %d classes; validation %s: %d images", train.data,
             training_samples(data.train), len(data.train.classes["names"]), train.val_data,
             data.val.num_samples if data.val else 0)
    how = (f"ASHA on val AP (grace {tune.grace_period}, reduction {tune.reduction_factor}, max "
           f"{tune.asha_max_epochs(train.epochs)} epochs)" if tune.scheduler == "asha" else "FIFO")
    log.info("search:     %d trials of %d epochs, %d at once, %d worker(s) each; %s sampling, %s", tune.trials,
             train.epochs, concurrent, tune.workers_per_trial, tune.search, how)
    log.info("space:      %s", ", ".join(f"{k} {d.describe()}" for k, d in space.dims.items()))
    log.info("%s %s (MLflow run %s in %s)", "continuing:" if resumed else "run:       ", directory, parent,
             tracking_uri)
