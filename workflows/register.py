"""Register a finished training run's model in the MLflow model registry; move ``@champion``.

``register_run(run_id, name)`` logs the run's checkpoint as an MLflow model (pyfunc flavour,
"models from code": ``workflows/pyfunc_model.py`` and the ``centernet`` package travel in the
model's ``code/``; the checkpoint and ``model_info.json`` — arch, class map, input size — are its
artifacts; a signature, an input example and pinned pip requirements), links it to the run, and
creates a new version of registered model ``name`` tagged with arch, val AP, data hashes, source
run and the Tune parent run. The alias ``champion`` moves to the new version only when its val AP
beats the current champion's on the same validation data (same val data hash), or when forced.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workflows.errors import UserError

CHAMPION_ALIAS = "champion"
MODEL_NAME_IN_RUN = "model"
TUNE_PARENT_TAG = "centernet.tune_parent"
KIND_TAG = "centernet.kind"
# The models-from-code entry MLflow executes to load the model; written next to the copied code.
MODEL_CODE = '''"""MLflow models-from-code entry of a CenterNet model (written by `centernet register`)."""
from mlflow.models import set_model

try:
    from pyfunc_model import CenterNetPyfunc  # the copy in the model's code/ (loading, serving)
except ImportError:  # MLflow also runs this file once while logging, before code/ exists
    from workflows.pyfunc_model import CenterNetPyfunc

set_model(CenterNetPyfunc())
'''
REQUIREMENTS = ("torch", "numpy", "opencv-python-headless", "pycocotools", "pandas", "mlflow")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Candidate:
    """What the champion decision compares: a version's val AP on which validation data."""

    version: str
    val_ap: float | None
    val_data_hash: str | None


@dataclass(frozen=True)
class Registration:
    """The outcome of :func:`register_run`."""

    name: str
    version: str
    run_id: str
    model_uri: str  # models:/NAME/VERSION
    model_id: str
    val_ap: float | None
    val_data_hash: str | None
    champion: bool  # the alias points at this version now
    previous_champion: str | None
    reason: str  # why the alias moved or stayed
    tracking_uri: str


def champion_decision(new: Candidate, current: Candidate | None, *, force: bool = False) -> tuple[bool, str]:
    """(move the alias to ``new``?, why) — ``new`` must beat ``current`` on the same validation data."""
    if current is None:
        return True, "no champion yet"
    if force:
        return True, f"--force-alias (champion was version {current.version})"
    if new.val_ap is None:
        return False, (f"version {new.version} has no val AP to compare; champion stays at version "
                       f"{current.version} (use --force-alias to move it)")
    if current.val_ap is None:
        return True, f"champion version {current.version} has no val AP"
    if not new.val_data_hash or new.val_data_hash != current.val_data_hash:
        return False, (f"validation data not known to be the same (val data hash {new.val_data_hash or 'unknown'} vs "
                       f"{current.val_data_hash or 'unknown'} of champion version {current.version}), so the APs "
                       f"are not comparable; champion stays (use --force-alias to move it)")
    if new.val_ap > current.val_ap:
        return True, f"val AP {new.val_ap:.4f} beats {current.val_ap:.4f} of version {current.version}"
    return False, (f"val AP {new.val_ap:.4f} does not beat {current.val_ap:.4f} of champion version "
                   f"{current.version} on the same validation data; champion stays")


def pip_requirements() -> list[str]:
    """This project's inference requirements, pinned to the installed versions (local build tags
    such as ``+cpu`` dropped so that pip can resolve them)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in REQUIREMENTS:
        try:
            pins.append(f"{dist}=={version(dist).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(dist)
    return pins


def model_signature() -> Any:
    """Input: ``image`` (base64 text) and optional ``image_id``; output: one row per detection;
    params ``threshold``, ``flip``, ``batch_size``."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    from workflows.pyfunc_model import DEFAULT_PARAMS

    return ModelSignature(
        inputs=Schema([ColSpec("string", "image"), ColSpec("long", "image_id", required=False)]),
        outputs=Schema([ColSpec("long", "image_id"), ColSpec("long", "category_id"),
                        ColSpec("string", "category_name"), ColSpec(Array("double"), "bbox"),
                        ColSpec("double", "score")]),
        params=ParamSchema([ParamSpec("threshold", "double", DEFAULT_PARAMS["threshold"]),
                            ParamSpec("flip", "boolean", DEFAULT_PARAMS["flip"]),
                            ParamSpec("batch_size", "long", DEFAULT_PARAMS["batch_size"])]),
    )


def input_example(input_size: tuple[int, int]) -> Any:
    """One small PNG (a grey image with a square), base64-encoded, as a DataFrame."""
    import base64

    import cv2
    import numpy as np
    import pandas as pd

    h, w = (max(32, s // 2) for s in input_size)
    image = np.full((h, w, 3), 128, np.uint8)
    cv2.rectangle(image, (w // 4, h // 4), (w // 2, h // 2), (30, 200, 60), thickness=-1)
    return pd.DataFrame({"image": [base64.b64encode(cv2.imencode(".png", image)[1].tobytes()).decode()]})


def stage_model(model: Any, spec: Any, checkpoint: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Write what the logged model is made of into ``folder``: the weights-only checkpoint,
    ``model_info.json``, the code entry and copies of the code it needs. Returns the keyword
    arguments of ``mlflow.pyfunc.log_model`` that refer to them."""
    import centernet
    from centernet.checkpoint import save_checkpoint
    from workflows import pyfunc_model

    folder.mkdir(parents=True, exist_ok=True)
    weights = save_checkpoint(folder / "checkpoint.pt", model, epoch=int(checkpoint.get("epoch", 0)),
                              extra=dict(checkpoint.get("extra") or {}))
    info = folder / "model_info.json"
    info.write_text(json.dumps(spec.to_dict(), indent=2))
    code = folder / "code"
    shutil.copytree(Path(centernet.__file__).parent, code / "centernet",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(pyfunc_model.__file__, code / "pyfunc_model.py")
    entry = folder / "centernet_model.py"
    entry.write_text(MODEL_CODE)
    return {"python_model": str(entry), "artifacts": {"checkpoint": str(weights), "model_info": str(info)},
            "code_paths": [str(code / "centernet"), str(code / "pyfunc_model.py")]}


def run_facts(run: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """Val AP, data hashes and Tune parent of a training run: its tags and metrics first, the
    checkpoint's ``extra`` as the fallback (runs made before those tags existed)."""
    tags, metrics = run.data.tags, run.data.metrics
    saved = extra.get("metrics") if isinstance(extra.get("metrics"), dict) else {}
    val_ap = metrics.get("val/AP", saved.get("val/AP"))
    return {
        "val_ap": float(val_ap) if val_ap is not None and float(val_ap) >= 0 else None,
        "val_data_hash": tags.get("val_data_hash") or extra.get("val_data_hash"),
        "data_hash": tags.get("data_hash") or extra.get("data_hash"),
        "tune_parent": tags.get(TUNE_PARENT_TAG),
    }


def _check_run(run: Any, run_id: str) -> None:
    status = run.info.status
    if status != "FINISHED":
        raise UserError(f"run {run_id} is {status}, not FINISHED: register a training run once it has ended "
                        "successfully")
    kind = run.data.tags.get(KIND_TAG)
    if kind not in (None, "train"):
        raise UserError(f"run {run_id} is a {kind!r} run ({KIND_TAG}); register a training run")


def _current_champion(client: Any, name: str) -> Candidate | None:
    from mlflow.exceptions import MlflowException

    from workflows.mlflow_access import is_not_found

    try:
        mv = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException as exc:
        if is_not_found(exc):  # no alias yet
            return None
        raise
    ap = mv.tags.get("val_AP")
    return Candidate(str(mv.version), float(ap) if ap not in (None, "", "None") else None,
                     mv.tags.get("val_data_hash") or None)


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="CenterNet detector (centernet register)")
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise


def log_model(tracking_uri: str, run: Any, staged: dict[str, Any], input_size: tuple[int, int]) -> str:
    """Log the staged model as an MLflow model of ``run`` (in its experiment, linked as its output)
    without making the run active, also when another run is active in this process (a Tune
    driver); returns the model id."""
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import Model

    from workflows.mlflow_access import fluent_tracking_uri

    with fluent_tracking_uri(tracking_uri), warnings.catch_warnings():
        # MLflow suggests type hints on predict(); the signature below already describes the input
        warnings.filterwarnings("ignore", message=".*type hint.*", category=UserWarning)
        logged = mlflow.initialize_logged_model(name=MODEL_NAME_IN_RUN, source_run_id=run.info.run_id,
                                                experiment_id=run.info.experiment_id)
        # Model.log is what mlflow.pyfunc.log_model calls; it alone takes the run to link the model to
        Model.log(artifact_path=None, name=MODEL_NAME_IN_RUN, flavor=mlflow.pyfunc, run_id=run.info.run_id,
                  model_id=logged.model_id, signature=model_signature(), input_example=input_example(input_size),
                  pip_requirements=pip_requirements(), **staged)
    return logged.model_id


def register_run(run_id: str, name: str, *, tracking_uri: str | None = None,
                 force_alias: bool = False) -> Registration:
    """Register the model of finished training run ``run_id`` as a new version of ``name`` and move
    ``@champion`` to it when it is better (see the module docstring)."""
    from workflows.mlflow_access import fluent_tracking_uri, get_run, store_client
    from workflows.model_source import download_run_checkpoint, load_checkpoint_model

    if not _NAME.match(name or ""):
        raise UserError(f"--name {name!r}: use letters, digits, '_', '.', '-' (it becomes models:/{name}@champion)")
    uri, client = store_client(tracking_uri)
    run = get_run(client, uri, run_id)
    _check_run(run, run_id)
    with tempfile.TemporaryDirectory(prefix="centernet-register-") as tmp:
        path = download_run_checkpoint(client, uri, run_id, None, Path(tmp) / "download")
        model, spec, checkpoint = load_checkpoint_model(path, f"runs:/{run_id}")
        facts = run_facts(run, dict(checkpoint.get("extra") or {}))
        model_id = log_model(uri, run, stage_model(model, spec, checkpoint, Path(tmp) / "model"), spec.input_size)
    tags = {"arch": spec.arch, "val_AP": "" if facts["val_ap"] is None else repr(facts["val_ap"]),
            "data_hash": facts["data_hash"] or "", "val_data_hash": facts["val_data_hash"] or "",
            "source_run": run_id, "input_size": "x".join(map(str, spec.input_size))}
    if facts["tune_parent"]:
        tags["tune_parent"] = facts["tune_parent"]
    _ensure_registered_model(client, name)
    current = _current_champion(client, name)
    with fluent_tracking_uri(uri):  # the SQL registry looks the logged model up through MLflow's global URI
        mv = client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, tags=tags,
                                         model_id=model_id)
    version = str(mv.version)
    move, reason = champion_decision(Candidate(version, facts["val_ap"], facts["val_data_hash"]), current,
                                     force=force_alias)
    if move:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    return Registration(name, version, run_id, f"models:/{name}/{version}", model_id, facts["val_ap"],
                        facts["val_data_hash"], move, current.version if current else None, reason, uri)
