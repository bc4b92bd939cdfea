"""The MLflow pyfunc flavour of a registered CenterNet model: images in, detections out.

Input: a pandas DataFrame (or a dict of columns) with a column ``image`` holding, per row, the
image as base64-encoded file bytes (JPEG, PNG, ...; what a JSON request carries), raw file bytes,
or a uint8 BGR numpy array ``[H, W, 3]``; an optional integer column ``image_id`` names the images
(default: the row position 0, 1, ...). Params: ``threshold`` (0.3), ``flip`` (False),
``batch_size`` (8).

Output: a DataFrame with one row per detection above the threshold, COCO results with names:
``image_id``, ``category_id`` (the dataset's own id), ``category_name``, ``bbox`` ([x, y, w, h] in
the image's pixels) and ``score`` — the same numbers ``centernet predict`` writes.

This module is copied into the registered model (its ``code/``) next to the ``centernet`` package,
so it imports nothing from ``workflows``: a served model needs only its pip requirements.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc

INPUT_COLUMN = "image"
ID_COLUMN = "image_id"
OUTPUT_COLUMNS = ("image_id", "category_id", "category_name", "bbox", "score")
DEFAULT_PARAMS: dict[str, Any] = {"threshold": 0.3, "flip": False, "batch_size": 8}


def _invalid(message: str) -> Exception:
    from mlflow.exceptions import MlflowException

    return MlflowException.invalid_parameter_value(message)  # HTTP 400 when served


def image_from_cell(value: Any, row: int) -> Any:
    """One ``image`` cell (base64 text, file bytes or a BGR array) -> uint8 BGR ``[H, W, 3]``."""
    import numpy as np

    from centernet.detect import check_bgr_image
    from centernet.image_files import decode_image

    if isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(f"image {row}: not base64 text (send the file's bytes base64-encoded)") from None
    try:
        if isinstance(value, (bytes, bytearray)):
            return decode_image(bytes(value), f"image {row}")
        if isinstance(value, np.ndarray):
            return check_bgr_image(value, row)
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    raise _invalid(f"image {row}: expected base64 text, bytes or a uint8 BGR array, got {type(value).__name__}")


class CenterNetPyfunc(mlflow.pyfunc.PythonModel):
    """A CenterNet detector behind ``mlflow.pyfunc`` (see the module docstring)."""

    # predict() checks its input itself (image_from_cell) and the logged signature describes it;
    # MLflow's type-hint validation, and its "add type hints" warning at class creation, are skipped.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        import torch

        from centernet.checkpoint import load_checkpoint_file
        from centernet.data import CategoryMap
        from centernet.models import build_model

        info = json.loads(Path(context.artifacts["model_info"]).read_text())
        self.categories = CategoryMap.from_dict(info["classes"])
        self.input_size = (int(info["input_size"][0]), int(info["input_size"][1]))
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        model = build_model(info["arch"], self.categories.num_classes, head_conv=info.get("head_conv"))
        model.load_state_dict(load_checkpoint_file(context.artifacts["checkpoint"])["state_dict"])
        self.model = model.eval().to(self.device)

    # model_input is left unannotated: MLflow reads a type hint there as a schema of its own.
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> Any:  # noqa: ANN001
        import pandas as pd

        from centernet.detect import detect_images, named_results

        p = {**DEFAULT_PARAMS, **{k: v for k, v in (params or {}).items() if v is not None}}
        threshold = float(p["threshold"])
        if not 0.0 <= threshold <= 1.0:
            raise _invalid(f"threshold must be in [0, 1], got {threshold}")
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if INPUT_COLUMN not in frame.columns:
            raise _invalid(f"input needs a column {INPUT_COLUMN!r} (base64-encoded image bytes); "
                           f"got columns {list(frame.columns)}")
        images = [image_from_cell(v, i) for i, v in enumerate(frame[INPUT_COLUMN])]
        ids = [int(i) for i in frame[ID_COLUMN]] if ID_COLUMN in frame.columns else list(range(len(images)))
        dets = detect_images(self.model, images, self.input_size, flip_test=bool(p["flip"]),
                             batch_size=max(1, int(p["batch_size"])), device=self.device)
        rows = [r for image_id, d in zip(ids, dets) for r in named_results(d, image_id, self.categories, threshold)]
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
