"""The pipeline flow: data -> (search) -> training -> registration -> evaluation -> predictions.

:func:`run_pipeline` runs a Prefect flow whose tasks are the steps of :mod:`workflows.flow.steps`:
synthetic data when the config asks for it, the training and validation shards (in parallel), the
optional Tune search, the final training (with the search's best loss weights and lr), registration
(``@champion`` by the registry's rule), evaluation of the new version on the validation shards
(flip test) and predictions drawn on a few validation images. Each task is cached by its inputs
(:mod:`workflows.flow.caching`): a rerun of the same config skips every finished step; a run that
failed or was killed resumes at the failed step, and the training step, named by its config,
continues from its latest checkpoint. One MLflow run (``centernet.kind=pipeline``) holds the config;
the steps' runs nest under it (``mlflow.parentRunId``); it and the Prefect flow run name each other.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from workflows.errors import UserError
from workflows.flow.config import PipelineConfig

log = logging.getLogger("centernet.run")

STEPS = ("data", "tune", "train", "register", "evaluate", "predict")
KIND_TAG = "centernet.kind"
FLOW_RUN_TAG = "prefect.flow_run_id"
CONFIG_ARTIFACT = "pipeline_config.json"


@dataclass
class StepReport:
    """One task of a pipeline run: whether it ran or was cached, its wall time in this run, and the
    step's own time (what the step function measured when it ran)."""

    name: str
    cached: bool
    wall_seconds: float
    result: dict[str, Any]

    @property
    def own_seconds(self) -> float:
        return 0.0 if self.cached else float(self.result.get("seconds", 0.0))


@dataclass
class PipelineOutcome:
    """What a pipeline run did and where its results are."""

    name: str
    results_dir: str
    tracking_uri: str
    parent_run_id: str
    flow_run_id: str
    wall_seconds: float = 0.0
    steps: list[StepReport] = field(default_factory=list)

    def step(self, name: str) -> StepReport | None:
        return next((s for s in self.steps if s.name == name), None)

    @property
    def steps_seconds(self) -> float:
        """The steps' own time summed (cached steps count 0)."""
        return sum(s.own_seconds for s in self.steps)


class StepPlan:
    """Which steps run: ``start_from`` reruns that step and every later one (ignoring the cache);
    ``only`` reruns that step alone (earlier steps from the cache, or run when not cached; later
    ones skipped)."""

    def __init__(self, start_from: str | None = None, only: str | None = None):
        for option, value in (("--from", start_from), ("--only", only)):
            if value is not None and value not in STEPS:
                raise UserError(f"{option} {value}: not a step; steps: {', '.join(STEPS)}")
        if start_from and only:
            raise UserError("give --from or --only, not both")
        self.start_from, self.only = start_from, only

    def refresh(self, step: str) -> bool:
        if self.only:
            return step == self.only
        return self.start_from is not None and STEPS.index(step) >= STEPS.index(self.start_from)

    def skipped(self, step: str) -> bool:
        return self.only is not None and STEPS.index(step) > STEPS.index(self.only)


def run_pipeline(cfg: PipelineConfig, *, config_file: str = "", address: str | None = None,
                 start_from: str | None = None, only: str | None = None, show_progress: bool = True,
                 verbose: bool = False) -> PipelineOutcome:
    """Run the pipeline of ``cfg`` as a Prefect flow (see the module docstring)."""
    from workflows.flow.prefect_env import configure_prefect, quiet_prefect_loggers, result_storage
    from workflows.ray_runtime import probe_address

    plan = StepPlan(start_from, only)
    probe_address(address)
    configure_prefect(verbose)
    from prefect import flow

    from workflows.console import configure_output

    configure_output(verbose)  # again: importing Prefect resets the warning filters
    quiet_prefect_loggers(verbose)

    from workflows.flow.remote_results import is_uri

    remote = cfg.cache_dir if is_uri(cfg.cache_dir) else None  # else Prefect's local storage path

    def centernet_pipeline(config: dict[str, Any], config_file: str) -> PipelineOutcome:
        return _run_flow(cfg, config_file, plan, _make_tasks(cfg, remote), address=address,
                         show_progress=show_progress, verbose=verbose)

    pipeline_flow = flow(centernet_pipeline, name="centernet-pipeline", flow_run_name=cfg.name,
                         persist_result=False, validate_parameters=False, log_prints=False)
    try:
        with result_storage(cfg.cache_dir):
            return pipeline_flow(cfg.to_dict(), config_file)
    except ValueError as exc:  # bad data or settings found by a step
        raise UserError(str(exc)) from None


def _make_tasks(cfg: PipelineConfig, remote: str | None = None) -> dict[str, Any]:
    """The steps as Prefect tasks: cached by their ``key`` parameter, results as JSON in the results
    directory (at the URI ``remote`` through a storage block; None: Prefect's local storage path),
    retried ``cfg.retries`` times after transient failures."""
    from prefect import task

    from workflows.flow import steps
    from workflows.flow.caching import cache_key_from_parameters, retry_condition

    options = dict(cache_key_fn=cache_key_from_parameters, persist_result=True, result_serializer="json",
                   retries=cfg.retries, retry_delay_seconds=cfg.retry_delay_s, retry_condition_fn=retry_condition)
    if remote is not None:
        from workflows.flow.remote_results import result_storage_block

        options["result_storage"] = result_storage_block(remote)
    names = ("synthesize", "precompute_split", "tune", "train", "register", "evaluate", "predict")
    return {name: task(getattr(steps, name), name=name, **options) for name in names}


def _run_flow(cfg: PipelineConfig, config_file: str, plan: StepPlan, tasks: dict[str, Any], *,
              address: str | None, show_progress: bool, verbose: bool) -> PipelineOutcome:
    from prefect.runtime import flow_run

    from workflows.tracking import client, finish_run, resolve_tracking_uri, start_run

    tracking_uri = resolve_tracking_uri()
    flow_run_id = str(flow_run.id)
    parent = start_run(tracking_uri, experiment=cfg.train.experiment, run_name=f"pipeline-{cfg.name}",
                       params=cfg.to_dict(), tags={KIND_TAG: "pipeline", FLOW_RUN_TAG: flow_run_id,
                                                   "prefect.flow_run_name": str(flow_run.name),
                                                   "config_file": config_file})
    client(tracking_uri).log_dict(parent, cfg.to_dict(), CONFIG_ARTIFACT)
    _tag_flow_run(flow_run_id, parent)
    outcome = PipelineOutcome(cfg.name, cfg.results_dir, tracking_uri, parent, flow_run_id)
    log.info("pipeline:   %s (Prefect flow run %s, MLflow run %s)", cfg.name, flow_run.name, parent)
    start = time.perf_counter()
    try:
        _steps(cfg, plan, outcome, tasks, address=address, show_progress=show_progress, verbose=verbose)
    except BaseException:
        finish_run(tracking_uri, parent, status="FAILED")
        raise
    outcome.wall_seconds = time.perf_counter() - start
    evaluation = outcome.step("evaluate")
    metrics = {f"eval/{k}": v for k, v in (evaluation.result["metrics"] if evaluation else {}).items()
               if isinstance(v, (int, float))}
    metrics.update({"pipeline/steps_cached": sum(s.cached for s in outcome.steps),
                    "pipeline/steps_run": sum(not s.cached for s in outcome.steps),
                    "pipeline/wall_seconds": outcome.wall_seconds, "pipeline/steps_seconds": outcome.steps_seconds})
    finish_run(tracking_uri, parent, metrics=metrics)
    return outcome


def _tag_flow_run(flow_run_id: str, mlflow_run_id: str) -> None:
    """Tag the Prefect flow run with its MLflow run (``mlflow_run_id:<id>``)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect_client:
        current = prefect_client.read_flow_run(flow_run_id)
        prefect_client.update_flow_run(flow_run_id, tags=[*current.tags, f"mlflow_run_id:{mlflow_run_id}"])


def _call(outcome: PipelineOutcome, name: str, task: Any, refresh: bool, *args: Any) -> dict[str, Any]:
    """Run one task (the cache unless ``refresh``), record and report it; the step's error propagates."""
    start = time.perf_counter()
    state = (task.with_options(refresh_cache=True) if refresh else task)(*args, return_state=True)
    state = _unless_outputs_gone(name, task, state, args)
    return _record(outcome, name, state, time.perf_counter() - start)


def _unless_outputs_gone(name: str, task: Any, state: Any, args: tuple[Any, ...]) -> Any:
    """``state``, or, when it is a cached result whose files were deleted since, the state of the
    step run again (cache refreshed)."""
    from workflows.flow.caching import missing_outputs

    if state.name != "Cached":
        return state
    gone = missing_outputs(state.result(raise_on_failure=False))
    if not gone:
        return state
    log.info("%-11s cached, but %s %s gone: running it again", name + ":", ", ".join(gone),
             "is" if len(gone) == 1 else "are")
    return task.with_options(refresh_cache=True)(*args, return_state=True)


def _record(outcome: PipelineOutcome, name: str, state: Any, wall: float) -> dict[str, Any]:
    result = state.result()  # raises what the step raised
    report = StepReport(name, state.name == "Cached", wall, result)
    outcome.steps.append(report)
    if report.cached:
        log.info("%-11s cached (finished before; %.1f s then)", name + ":", float(result.get("seconds", 0.0)))
    else:
        note = f" ({result['note']})" if result.get("note") else ""
        log.info("%-11s done in %.1f s%s", name + ":", report.own_seconds, note)
    return result


def _data_steps(cfg: PipelineConfig, plan: StepPlan, outcome: PipelineOutcome, tasks: dict[str, Any], *,
                address: str | None, verbose: bool) -> tuple[dict[str, tuple[str, str, str]], dict[str, str]]:
    """Synthetic images when asked, then both splits' shards in parallel. Returns each split's
    ``(images, annotations, annotations hash)`` and its shards' manifest hash."""
    from centernet.config_fields import to_plain
    from workflows.flow.caching import file_sha256, step_key
    from workflows.flow.steps import SharedRay

    data = cfg.data
    if data.synthetic is not None:
        section = to_plain(data.synthetic)
        made = _call(outcome, "synthesize", tasks["synthesize"], plan.refresh("data"),
                     step_key("synthesize", {"section": section, "dir": data.dir}), section, data.dir)
        sources = {split: (made[split]["images"], made[split]["annotations"], made[split]["annotations_sha256"])
                   for split in ("train", "val")}
    else:
        sources = {"train": (data.train_images, data.train_annotations, file_sha256(data.train_annotations)),
                   "val": (data.val_images, data.val_annotations, file_sha256(data.val_annotations))}
    ray = SharedRay(address, verbose=verbose)
    precompute_task = tasks["precompute_split"].with_options(refresh_cache=True) if plan.refresh("data") \
        else tasks["precompute_split"]
    futures, arguments = {}, {}
    start = time.perf_counter()
    for split in ("train", "val"):
        images, annotations, ann_hash = sources[split]
        settings = getattr(cfg.precompute, split).to_dict()
        key = step_key("precompute", {"split": split, "images": images, "annotations_sha256": ann_hash,
                                      "settings": settings, "out": data.shard_dir(split),
                                      "chunk_size": data.chunk_size})
        arguments[split] = (key, split, images, annotations, data.shard_dir(split), settings, data.chunk_size,
                            data.workers, ray)
        futures[split] = precompute_task.submit(*arguments[split])
    shards = {}
    for split, future in futures.items():
        future.wait()
        state = _unless_outputs_gone(f"precompute {split}", precompute_task, future.state, arguments[split])
        shards[split] = _record(outcome, f"precompute {split}", state, time.perf_counter() - start)
    return sources, {split: shards[split]["manifest_sha256"] for split in shards}


def _steps(cfg: PipelineConfig, plan: StepPlan, outcome: PipelineOutcome, tasks: dict[str, Any], *,
           address: str | None, show_progress: bool, verbose: bool) -> None:
    from centernet.config_fields import to_plain
    from workflows.flow.caching import step_key

    sources, upstream = _data_steps(cfg, plan, outcome, tasks, address=address, verbose=verbose)

    # -- search (optional): the best trial's loss weights and lr for the final training
    train_cfg = cfg.train
    if cfg.tune is not None and not plan.skipped("tune"):
        search = to_plain(cfg.tune)
        key = step_key("tune", {"train": train_cfg.to_dict(), "tune": search, "data": upstream})
        search["name"] = search["name"] or f"{cfg.name}-tune-{key[-12:]}"  # named by its inputs: a rerun resumes it
        best = _call(outcome, "tune", tasks["tune"], plan.refresh("tune"), key, train_cfg.replace(name=None).to_dict(),
                     search, address, outcome.parent_run_id, verbose)
        params = best["params"]
        train_cfg = train_cfg.replace(loss_weights=params.get("loss_weights") or train_cfg.loss_weights,
                                      lr=params.get("lr") or train_cfg.lr)
    if plan.skipped("train"):
        return

    # -- final training, named by its inputs so that a rerun resumes it
    key = step_key("train", {"train": train_cfg.replace(name=None).to_dict(), "data": upstream})
    train_cfg = train_cfg if train_cfg.name else train_cfg.replace(name=f"{cfg.name}-{key[-12:]}")
    trained = _call(outcome, "train", tasks["train"], plan.refresh("train"), key, train_cfg.to_dict(), address,
                    outcome.parent_run_id, show_progress, verbose)
    if plan.skipped("register"):
        return

    # -- registration, evaluation of the new version, predictions on a few validation images
    key = step_key("register", {"run_id": trained["run_id"], "checkpoint": trained["checkpoint_sha256"],
                                "name": cfg.model_name, "force_alias": cfg.register.force_alias})
    registered = _call(outcome, "register", tasks["register"], plan.refresh("register"), key, trained["run_id"],
                       cfg.model_name, cfg.register.force_alias, trained["tracking_uri"])
    model_uri = registered["model_uri"]
    if plan.skipped("evaluate"):
        return
    section = to_plain(cfg.evaluate)
    key = step_key("evaluate", {"model": model_uri, "checkpoint": trained["checkpoint_sha256"],
                                "data": upstream["val"], "section": section})
    _call(outcome, "evaluate", tasks["evaluate"], plan.refresh("evaluate"), key, model_uri, cfg.data.shard_dir("val"),
          cfg.evaluate.flip, cfg.evaluate.batch_size, cfg.evaluate.device, f"{cfg.results_dir}/evaluation.json",
          trained["tracking_uri"], outcome.parent_run_id)
    if plan.skipped("predict") or cfg.predict.images == 0:
        return
    from workflows.predict import collect_images

    images = [str(p) for p in collect_images([sources["val"][0]])[: cfg.predict.images]]
    key = step_key("predict", {"model": model_uri, "checkpoint": trained["checkpoint_sha256"], "images": images,
                               "section": to_plain(cfg.predict)})
    _call(outcome, "predict", tasks["predict"], plan.refresh("predict"), key, model_uri, images,
          f"{cfg.results_dir}/predictions", cfg.predict.threshold, cfg.predict.device, trained["tracking_uri"])
