"""Detect objects in image files with a trained model; write detections.json (COCO results) and drawn images.

--model is a checkpoint file, runs:/RUN_ID, models:/NAME/VERSION or models:/NAME@ALIAS (looked up in $MLFLOW_TRACKING_URI, else sqlite:///mlruns.db here). --images takes files, folders (their .jpg/.jpeg/.png/.bmp/.tif/.tiff/.webp files) and globs ("**" recurses), relative to the working directory. Output in --out: detections.json (image_id, category_id — the dataset's own id — category_name, bbox [x, y, w, h] in the image's pixels, score, file_name; image_id is the file name's number when every name is one, as COCO's, else the position 1, 2, ...) and images/ with the boxes drawn. Unreadable images are listed and skipped. On CUDA the forward pass runs in float16 autocast (--no-amp: float32).
"""

from __future__ import annotations

from pathlib import Path

import typer

EXAMPLES = """Examples:

  centernet predict --model models:/shapes@champion --images photos/ --out predictions

  centernet predict --model ray_results/resnet18-run/checkpoint.pt --images "data/**/*.jpg" --threshold 0.5

  centernet predict --model runs:/3f2c9a0d5e7b4c1f8a6d2e9b0c4f7a15 --images a.jpg b.png --flip --device cuda
"""


def command(
    model: str = typer.Option(..., "--model", help="Checkpoint file, runs:/RUN_ID, models:/NAME/VERSION or models:/NAME@ALIAS."),
    images: list[str] = typer.Option(..., "--images", help="Image files, folders or globs (repeat, or several after one --images)."),
    extra: list[str] = typer.Argument(None, metavar="[IMAGES]...", help="More image files, folders or globs."),
    out: Path = typer.Option(Path("predictions"), "--out", help="Output folder."),
    threshold: float = typer.Option(0.3, "--threshold", help="Minimum score of a detection (0..1)."),
    flip: bool = typer.Option(False, "--flip", help="Flip test: average with the mirrored image."),
    input_size: int = typer.Option(None, "--input-size", help="Square network input (multiple of 32; default: the model's)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per forward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="float16 autocast on CUDA."),
    workers: int = typer.Option(2, "--workers", min=0, help="Image reading processes."),
    no_draw: bool = typer.Option(False, "--no-draw", help="Write detections.json only."),
) -> None:
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from workflows.errors import UserError
    from workflows.model_source import resolve_model
    from workflows.predict import collect_images, input_size_option, predict_images

    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"--threshold {threshold}: must be between 0 and 1")
    paths = collect_images([*images, *(extra or [])])
    loaded = resolve_model(model)
    size = input_size_option(input_size, loaded.spec.input_size)
    result = predict_images(loaded, paths, out, threshold=threshold, flip=flip, input_size=size,
                            batch_size=batch_size, device=device, amp=amp, loader_workers=workers,
                            draw=not no_draw, on_skip=lambda f, why: typer.echo(f"skipped {f}: {why}", err=True))
    skipped = f" ({len(result.skipped)} unreadable, skipped)" if result.skipped else ""
    typer.echo(f"{result.images} images{skipped}, {result.detections} detections >= {threshold:g}, "
               f"{result.images_per_second:.1f} images/s -> {result.detections_path}")
