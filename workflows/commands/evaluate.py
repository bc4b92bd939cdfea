"""COCO AP of a trained model: AP, AP50, AP75, AP small/medium/large and per-class AP, as a table and a JSON file.

--model is a checkpoint file, runs:/RUN_ID, models:/NAME/VERSION or models:/NAME@ALIAS. Data: --data (shards from `centernet precompute --no-augment`, or a COCO directory with images/ and annotations.json) or --images DIR --annotations JSON. --flip averages with the mirrored image; --scales runs the official multi-scale test (each scale's detections merged per class with Gaussian soft-NMS). A models:/ source's result is also logged to MLflow as an evaluation run linked to that model version.
"""

from __future__ import annotations

from pathlib import Path

import typer

EXAMPLES = """Examples:

  centernet evaluate --model models:/shapes@champion --data shards/val

  centernet evaluate --model demo_output/model.pt --images demo_output/data/val/images \\
      --annotations demo_output/data/val/annotations.json --flip

  # official multi-scale test (5 scales + flip)
  centernet evaluate --model runs:/3f2c9a0d5e7b4c1f8a6d2e9b0c4f7a15 --data shards/val --flip --scales 0.5,0.75,1,1.25,1.5
"""


def command(
    model: str = typer.Option(..., "--model", help="Checkpoint file, runs:/RUN_ID, models:/NAME/VERSION or models:/NAME@ALIAS."),
    data: str = typer.Option(None, "--data", help="Shard directory or COCO directory (images/ + annotations.json)."),
    images: str = typer.Option(None, "--images", help="Image directory (with --annotations)."),
    annotations: str = typer.Option(None, "--annotations", help="COCO annotation JSON (with --images)."),
    flip: bool = typer.Option(False, "--flip", help="Flip test."),
    scales: str = typer.Option(None, "--scales", help="Multi-scale test, e.g. 0.5,0.75,1,1.25,1.5."),
    out: Path = typer.Option(Path("evaluation.json"), "--out", help="JSON report."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per forward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    workers: int = typer.Option(0, "--workers", min=0, help="Data loading processes."),
) -> None:
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from workflows.errors import UserError
    from workflows.evaluate import (evaluate_loaded, image_folder_data, log_evaluation, metrics_table,
                                    parse_scales, shard_or_coco_data, write_report)
    from workflows.model_source import resolve_model

    if bool(data) == bool(images or annotations) or bool(images) != bool(annotations):
        raise UserError("give either --data DIR or both --images DIR and --annotations JSON")
    test_scales = parse_scales(scales)
    loaded = resolve_model(model)
    if data:
        source = shard_or_coco_data(loaded, data, batch_size=batch_size, loader_workers=workers)
    else:
        source = image_folder_data(loaded, images, annotations, batch_size=batch_size, loader_workers=workers)
    result = evaluate_loaded(loaded, source, flip=flip, scales=test_scales, device=device)
    report = write_report(result.report(loaded), out)
    typer.echo(metrics_table(result.metrics))
    mode = f"scales {','.join(map(str, test_scales))}" if test_scales else "single scale"
    typer.echo(f"\n{result.images} images, {mode}{' + flip' if flip else ''}, {result.seconds:.1f} s -> {report}")
    if loaded.version is not None:
        run_id = log_evaluation(loaded, result, report)
        typer.echo(f"logged as MLflow run {run_id} (models:/{loaded.version.name}/{loaded.version.version})")
