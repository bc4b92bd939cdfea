"""Run the whole pipeline of a recipe (configs/*.yaml) as one Prefect flow: data -> shards -> (Tune search) -> training -> registration -> evaluation -> predictions.

Each step is cached by its inputs (its config section, the hashes of what the steps before it produced, its code version): running the same config again skips every finished step and says so; changing train.epochs reruns training and the steps after it. A run that failed or was killed resumes at the failed step (training from its latest checkpoint). Transient failures (a dropped connection, a timeout) are retried; a bad config or bad data is not. The config is validated before any step runs. Paths in the config are relative to where you type the command, or URIs. Prefect runs on its ephemeral local API (SQLite in $PREFECT_HOME, default ~/.prefect) unless PREFECT_API_URL is set; `prefect server start` shows the runs. MLflow: $MLFLOW_TRACKING_URI, or sqlite:///mlruns.db here; one pipeline run with the steps' runs nested under it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from workflows.cli_options import ADDRESS_HELP

EXAMPLES = """Examples:

  # the demo recipe: synthetic shapes, minutes on a laptop
  centernet run configs/demo.yaml

  # fewer epochs, another input size
  centernet run configs/demo.yaml --set train.epochs=3 --set precompute.train.sample.input_size=[96,96]

  # rerun training and everything after it, ignoring their cache; only the evaluation
  centernet run configs/demo.yaml --from train
  centernet run configs/demo.yaml --only evaluate

  # on a cluster (paths in the config on shared storage or s3://)
  centernet run /nfs/configs/coco_dla34.yaml --address ray://head:10001
  centernet submit --address http://head:8265 -- run /nfs/configs/coco_dla34.yaml
"""


def command(
    config: Path = typer.Argument(..., metavar="CONFIG.yaml", help="Pipeline recipe (see configs/)."),
    overrides: list[str] = typer.Option(None, "--set", metavar="KEY.SUB=VALUE",
                                        help="Override a config key, e.g. train.epochs=3 (repeatable; values are YAML)."),
    address: str = typer.Option(None, "--address", help=ADDRESS_HELP),
    start_from: str = typer.Option(None, "--from", metavar="STEP",
                                   help="Rerun STEP and every later step (data, tune, train, register, evaluate, predict)."),
    only: str = typer.Option(None, "--only", metavar="STEP",
                             help="Rerun STEP only (earlier steps from the cache, later ones skipped)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No live training progress display."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show everything: Prefect's, Ray's and the libraries' logs."),
) -> None:
    import os
    import sys

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from workflows.errors import UserError
    from workflows.flow.config import load_pipeline_config
    from workflows.flow.pipeline import run_pipeline
    from workflows.user_paths import on_cluster, resolve_user_path

    path = resolve_user_path(str(config), option="CONFIG")
    try:
        cfg = load_pipeline_config(path, overrides or [], on_cluster=on_cluster(address))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    outcome = run_pipeline(cfg, config_file=str(config), address=address, start_from=start_from, only=only,
                           show_progress=not no_progress and sys.stderr.isatty(), verbose=verbose)
    report(outcome)


def report(outcome: Any) -> None:
    """Where to look: the registered model, the AP table, the predictions picture, the UIs."""
    from workflows.console import command_path, mlflow_ui_command

    cached = sum(s.cached for s in outcome.steps)
    typer.echo(f"\npipeline {outcome.name}: {len(outcome.steps)} steps, {len(outcome.steps) - cached} run, "
               f"{cached} cached, {outcome.wall_seconds:.0f} s (steps' own time {outcome.steps_seconds:.0f} s)")
    register, evaluate, predict = (outcome.step(n) for n in ("register", "evaluate", "predict"))
    if register is not None:
        r = register.result
        where = r["version"] if r["champion"] else r["previous_champion"]
        typer.echo(f"model:       {r['model_uri']} (@champion -> version {where}: {r['reason']})")
    if evaluate is not None:
        typer.echo(f"\n{evaluate.result['table']}\n")
        typer.echo(f"evaluation:  {evaluate.result['report']}")
    if predict is not None:
        typer.echo(f"predictions: {predict.result['picture']}")
    typer.echo(f"results:     {outcome.results_dir}")
    typer.echo(f"mlflow:      run {outcome.parent_run_id}; browse with: "
               f"{mlflow_ui_command(outcome.tracking_uri)}")
    typer.echo(f"prefect:     flow run {outcome.flow_run_id}; browse with: {command_path('prefect')} server start "
               "(then http://127.0.0.1:4200)")
