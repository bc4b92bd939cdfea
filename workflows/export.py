"""``centernet export``: the network as ONNX, checked against PyTorch with onnxruntime.

The graph is exported with torch's dynamo-based exporter (``onnxscript``) at opset 18, high enough
for ``GridSample``, which the pure-PyTorch deformable convolution of ResDCN and DLA-34 lowers to.
Input ``images`` ``[B, 3, H, W]`` float32, BGR normalised with the COCO mean/std; outputs the heads
``hm`` (logits), ``wh``, ``reg``, or with ``with_decode`` ``boxes`` (input pixels), ``scores`` and
``classes`` (contiguous indices). After writing, onnxruntime runs the file on a random input and
the export fails unless it agrees with PyTorch on the same input.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workflows.errors import UserError
from workflows.model_source import LoadedModel

ONNX_OPSET = 18
HEAD_TOLERANCE = 1e-4  # max abs difference of the heads (float32)
BOX_TOLERANCE = 1e-3  # input pixels


@dataclass(frozen=True)
class ExportResult:
    """The exported file and how close onnxruntime came to PyTorch."""

    path: Path
    input_size: tuple[int, int]
    dynamic_batch: bool
    with_decode: bool
    max_abs_diff: dict[str, float]  # per output
    seconds: float
    artifact_uri: str | None = None  # where it was logged (registered sources)


def _session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def compare_heads(reference: tuple[Any, ...], got: list[np.ndarray], names: tuple[str, ...],
                  tolerance: float = HEAD_TOLERANCE) -> dict[str, float]:
    """Max abs difference per output; ``UserError`` naming the first one beyond ``tolerance``."""
    diffs = {n: float(np.abs(r.detach().cpu().numpy() - g).max()) for n, r, g in zip(names, reference, got)}
    for name, diff in diffs.items():
        if not diff <= tolerance:
            raise UserError(f"ONNX check failed: output {name!r} differs from PyTorch by {diff:.3g} > {tolerance:g}")
    return diffs


def compare_decoded(reference: tuple[Any, ...], got: list[np.ndarray], *, score_tolerance: float = HEAD_TOLERANCE,
                    box_tolerance: float = BOX_TOLERANCE) -> dict[str, float]:
    """Top-K detections of onnxruntime vs PyTorch: the sorted scores within ``score_tolerance``,
    and every onnxruntime detection found among PyTorch's with the same class, a score within
    ``score_tolerance`` and the box within ``box_tolerance`` pixels (near-equal scores may come in
    either order; detections as low as the K-th score may fall out of either top-K and are not
    matched). ``UserError`` otherwise."""
    boxes, scores, classes = (t.detach().cpu().numpy() for t in reference)
    o_boxes, o_scores, o_classes = got
    score_diff = float(np.abs(scores - o_scores).max())
    if not score_diff <= score_tolerance:
        raise UserError(f"ONNX check failed: top-K scores differ from PyTorch by {score_diff:.3g} > "
                        f"{score_tolerance:g}")
    box_diff, matched = 0.0, 0
    for b in range(scores.shape[0]):
        cut = scores[b, -1] + score_tolerance
        for i in np.flatnonzero(o_scores[b] > cut):
            same = (np.abs(scores[b] - o_scores[b, i]) <= score_tolerance) & (classes[b] == o_classes[b, i])
            diff = float(np.abs(boxes[b, same] - o_boxes[b, i]).max(axis=1).min()) if same.any() else np.inf
            if not diff <= box_tolerance:
                raise UserError(f"ONNX check failed: detection {i} of image {b} (class {o_classes[b, i]}, score "
                                f"{o_scores[b, i]:.4f}) has no PyTorch counterpart within {box_tolerance:g} px")
            box_diff, matched = max(box_diff, diff), matched + 1
    return {"scores": score_diff, "boxes": box_diff, "compared": float(matched)}


def export_onnx(
    loaded: LoadedModel,
    out: str | Path,
    *,
    input_size: tuple[int, int] | None = None,
    dynamic_batch: bool = False,
    with_decode: bool = False,
    k: int = 100,
    seed: int = 0,
) -> ExportResult:
    """Export ``loaded`` to ``out`` and check it (module docstring); a registered source gets the
    file logged as an artifact of its version's run (``onnx/<file name>``)."""
    import torch

    from centernet.exportable import DECODED_NAMES, HEAD_NAMES, DecodedOutputs, HeadOutputs

    size = input_size or loaded.spec.input_size
    out = Path(out)
    if out.suffix != ".onnx":
        raise UserError(f"--out {out}: give a file name ending in .onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    model = loaded.model.to("cpu").eval()
    graph = DecodedOutputs(model, k=k).eval() if with_decode else HeadOutputs(model).eval()
    names = DECODED_NAMES if with_decode else HEAD_NAMES
    batch = 2 if dynamic_batch else 1  # a size-1 example would be specialised by torch.export
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(batch, 3, *size, generator=generator)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic_batch else None
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(graph, (example,), str(out), dynamo=True, opset_version=ONNX_OPSET,
                          input_names=["images"], output_names=list(names), dynamic_shapes=dynamic,
                          external_data=False, verbose=False)
    seconds = time.perf_counter() - start
    check = torch.randn(batch + (1 if dynamic_batch else 0), 3, *size, generator=generator)
    with torch.no_grad():
        reference = graph(check)
    got = _session(out).run(None, {"images": check.numpy()})
    diffs = compare_decoded(reference, got) if with_decode else compare_heads(reference, got, names)
    artifact = log_onnx(loaded, out) if loaded.version is not None else None
    return ExportResult(out, tuple(size), dynamic_batch, with_decode, diffs, seconds, artifact)


def log_onnx(loaded: LoadedModel, path: Path) -> str:
    """Log the ONNX file as an artifact of the registered version's run; returns its runs:/ URI."""
    from workflows.mlflow_access import store_client

    ref = loaded.version
    if ref is None or not ref.run_id:
        raise UserError(f"{loaded.source}: the model version has no run to log the ONNX file to")
    _, client = store_client(loaded.tracking_uri)
    client.log_artifact(ref.run_id, str(path), "onnx")
    uri = f"runs:/{ref.run_id}/onnx/{path.name}"
    client.set_model_version_tag(ref.name, ref.version, "onnx", uri)
    return uri
