"""Register a finished training run's model in the MLflow model registry and move @champion when it is better.

The run's checkpoint is logged as an MLflow model (pyfunc flavour: images in, detections with the dataset's category ids out) and becomes a new version of --name, tagged with arch, val AP, data hashes and source run. The alias `champion` moves to the new version only if its val AP beats the current champion's on the same validation data (same val data hash); --force-alias moves it anyway. Runs are looked up in $MLFLOW_TRACKING_URI, or sqlite:///mlruns.db in the working directory.
"""

from __future__ import annotations

import typer

EXAMPLES = """Examples:

  # register the model of a finished `centernet train` run (its MLflow run id)
  centernet register --run 3f2c9a0d5e7b4c1f8a6d2e9b0c4f7a15 --name shapes

  # use it: predict, evaluate, export, serve
  centernet predict --model models:/shapes@champion --images photos/
  mlflow models serve -m models:/shapes@champion --env-manager local -p 5001

  # make this version the champion whatever its val AP
  centernet register --run 3f2c9a0d5e7b4c1f8a6d2e9b0c4f7a15 --name shapes --force-alias
"""


def command(
    run: str = typer.Option(..., "--run", help="MLflow run id of a finished training run."),
    name: str = typer.Option(..., "--name", help="Registered model name (models:/NAME@champion)."),
    force_alias: bool = typer.Option(False, "--force-alias", help="Move @champion to this version regardless of val AP."),
) -> None:
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from workflows.register import CHAMPION_ALIAS, register_run

    r = register_run(run, name, force_alias=force_alias)
    ap = "n/a" if r.val_ap is None else f"{r.val_ap:.4f}"
    typer.echo(f"registered {r.model_uri} (run {r.run_id}, val AP {ap}, val data {r.val_data_hash or 'unknown'})")
    where = r.version if r.champion else r.previous_champion
    typer.echo(f"@{CHAMPION_ALIAS} -> version {where}: {r.reason}")
    typer.echo(f"tracking:  {r.tracking_uri}")
