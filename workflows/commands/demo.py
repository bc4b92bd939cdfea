"""Make a synthetic dataset, train a ResNet-18 CenterNet on it, evaluate COCO AP, draw predictions.

The model trains from scratch (no download) with the shared training defaults: the from-scratch
learning rate, its linear warmup, and x0.1 drops at 90/140 and 120/140 of the epochs. The run is
recorded in MLflow: $MLFLOW_TRACKING_URI, else sqlite:///mlruns.db in the working directory
(experiment "centernet-demo").
"""

from __future__ import annotations

from pathlib import Path

import typer

EXAMPLES = """Examples:

  centernet demo                                  # defaults: about 10 minutes on 2 CPU cores

  centernet demo --out /tmp/demo --epochs 4 --train-images 200   # a quicker, rougher run
"""


def command(
    out: Path = typer.Option(Path("demo_output"), help="Directory for data, checkpoint, metrics and picture."),
    epochs: int = typer.Option(36, min=1, help="Training epochs."),
    train_images: int = typer.Option(600, min=1, help="Synthetic training images."),
    val_images: int = typer.Option(100, min=1, help="Synthetic validation images."),
    input_size: int = typer.Option(128, min=32, help="Square network input size (multiple of 32)."),
    batch_size: int = typer.Option(16, min=1, help="Batch size."),
    lr: float = typer.Option(None, min=0.0, help="Adam learning rate. (default: the from-scratch default for the batch size)"),
    seed: int = typer.Option(0, help="Seed for data, augmentation and initialisation."),
) -> None:
    from workflows.console import mlflow_ui_command
    from workflows.demo import DemoConfig, run_demo
    from workflows.errors import UserError

    try:
        config = DemoConfig(epochs=epochs, train_images=train_images, val_images=val_images,
                            input_size=input_size, batch_size=batch_size, lr=lr, seed=seed)
    except ValueError as exc:
        raise UserError(f"demo: {exc}") from None
    result = run_demo(out, config)
    m = result.metrics
    typer.echo(f"\nvalidation: AP {m.ap:.3f}  AP50 {m.ap50:.3f}  AP75 {m.ap75:.3f}")
    typer.echo("per class AP: " + ", ".join(f"{k} {v:.3f}" for k, v in m.per_class.items()))
    typer.echo(f"picture:    {result.picture}\ncheckpoint: {result.checkpoint}\n"
               f"metrics:    {result.picture.parent / 'metrics.json'}\ntime:       {result.seconds / 60:.1f} min\n"
               f"MLflow:     run {result.run_id} in {result.tracking_uri}\n"
               f"            (browse: {mlflow_ui_command(result.tracking_uri)})")
