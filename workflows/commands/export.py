"""Export a trained model to ONNX and check it: onnxruntime must agree with PyTorch on a random input.

Input `images` [B, 3, H, W] float32 (BGR, normalised with the COCO mean/std, letterboxed); outputs hm (logits), wh, reg at H/4 x W/4, or with --with-decode boxes [B, K, 4] (x1 y1 x2 y2, input pixels), scores [B, K] and classes [B, K] (contiguous class indices: the model's class map gives the dataset ids). Opset 18 (GridSample), so ResDCN and DLA-34 with deformable convolutions export too. The check fails the command when the heads differ by more than 1e-4 (or, with --with-decode, the top detections differ). A models:/ source's ONNX file is also logged as an artifact of that version's run.
"""

from __future__ import annotations

from pathlib import Path

import typer

EXAMPLES = """Examples:

  centernet export --model models:/shapes@champion --out shapes.onnx

  centernet export --model ray_results/dla34-run/checkpoint.pt --out dla34.onnx --input-size 512 --dynamic-batch

  # boxes, scores and classes straight from the graph (3x3 max-pool peaks + top-K inside)
  centernet export --model runs:/3f2c9a0d5e7b4c1f8a6d2e9b0c4f7a15 --out det.onnx --with-decode
"""


def command(
    model: str = typer.Option(..., "--model", help="Checkpoint file, runs:/RUN_ID, models:/NAME/VERSION or models:/NAME@ALIAS."),
    out: Path = typer.Option(..., "--out", help="ONNX file to write (.onnx)."),
    input_size: int = typer.Option(None, "--input-size", help="Square input size (multiple of 32; default: the model's)."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Batch dimension free (default: 1)."),
    with_decode: bool = typer.Option(False, "--with-decode", help="Include peak extraction: outputs boxes, scores, classes."),
    top_k: int = typer.Option(100, "--top-k", min=1, help="Detections per image with --with-decode."),
) -> None:
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from workflows.export import export_onnx
    from workflows.model_source import resolve_model
    from workflows.predict import input_size_option

    loaded = resolve_model(model)
    size = input_size_option(input_size, loaded.spec.input_size)
    result = export_onnx(loaded, out, input_size=size, dynamic_batch=dynamic_batch, with_decode=with_decode, k=top_k)
    diffs = ", ".join(f"{k} {v:.2g}" for k, v in result.max_abs_diff.items())
    typer.echo(f"exported {loaded.spec.arch} at {size[0]}x{size[1]} -> {result.path} ({result.seconds:.1f} s); "
               f"onnxruntime vs PyTorch max abs diff: {diffs}")
    if result.artifact_uri:
        typer.echo(f"logged as {result.artifact_uri}")
