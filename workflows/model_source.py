"""One resolver for "which model": a checkpoint file (a path, or a URI such as ``s3://...``),
``runs:/RUN_ID[/PATH]``, ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` -> the network (weights
loaded, eval mode), its class map (the dataset's own category ids and names), architecture and
input size.

Checkpoints are ``centernet.checkpoint`` files: a training run's ``checkpoint/checkpoint.pt``
artifact, the demo's ``model.pt``, or the copy a registered model version carries. Every failure
(unknown run/name/version/alias, unreachable store, a file that is not a checkpoint) is a
one-line :class:`workflows.errors.UserError` naming the source.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from workflows.errors import UserError

if TYPE_CHECKING:
    from centernet.data import CategoryMap

# Where runs keep their checkpoint: `centernet train`, then the demo.
RUN_CHECKPOINTS = ("checkpoint/checkpoint.pt", "checkpoints/model.pt")
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))/?$")


@dataclass(frozen=True)
class ModelSpec:
    """What a checkpoint says about its network."""

    arch: str
    classes: dict[str, Any]  # CategoryMap.to_dict(): contiguous index <-> dataset category id and name
    input_size: tuple[int, int]  # (H, W) the model was trained at
    head_conv: int | None = None

    @property
    def categories(self) -> CategoryMap:
        from centernet.data import CategoryMap

        return CategoryMap.from_dict(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "classes": self.classes, "input_size": list(self.input_size),
                "head_conv": self.head_conv}


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version a model was loaded from."""

    name: str
    version: str
    run_id: str | None
    model_id: str | None


@dataclass(frozen=True)
class LoadedModel:
    """A resolved model source."""

    model: Any  # torch.nn.Module in eval mode, on the CPU
    spec: ModelSpec
    source: str
    run_id: str | None = None  # the run the checkpoint came from (runs:/, or a version's run)
    version: ModelVersionRef | None = None  # set for models:/ sources
    tracking_uri: str | None = None


def model_spec(extra: Mapping[str, Any], where: str) -> ModelSpec:
    """The :class:`ModelSpec` of a checkpoint's ``extra`` (a training run's, or the demo's
    ``{arch, classes, input_size}``); ``UserError`` naming ``where`` when something is missing."""
    config = extra.get("config") if isinstance(extra.get("config"), Mapping) else {}
    arch = extra.get("arch") or config.get("arch")
    classes = extra.get("classes")
    size = extra.get("input_size", config.get("input_size"))
    missing = [k for k, v in (("arch", arch), ("classes", classes), ("input_size", size)) if not v]
    if missing:
        raise UserError(f"{where}: not a CenterNet checkpoint of this project (extra lacks {', '.join(missing)})")
    if isinstance(size, (int, float)):
        size = [int(size), int(size)]
    try:
        input_size = (int(size[0]), int(size[1]))
        ids = [int(i) for i in classes["category_ids"]]
        names = [str(n) for n in classes["names"]]
    except (TypeError, KeyError, IndexError, ValueError):
        raise UserError(f"{where}: malformed class map or input size in the checkpoint") from None
    head_conv = extra.get("head_conv", config.get("head_conv"))
    return ModelSpec(str(arch), {"category_ids": ids, "names": names}, input_size,
                     int(head_conv) if head_conv else None)


def load_checkpoint_model(path: str | Path, where: str | None = None) -> tuple[Any, ModelSpec, dict[str, Any]]:
    """(network with the checkpoint's weights in eval mode, its spec, the raw checkpoint) of a
    checkpoint file; ``UserError`` naming ``where`` (default: the path) if it is not one."""
    from centernet.checkpoint import load_checkpoint_file
    from centernet.models import build_model

    where = where or str(path)
    if Path(path).is_dir():
        raise UserError(f"{where}: is a directory; give a checkpoint file (.pt), runs:/RUN_ID or models:/NAME@ALIAS")
    try:
        ckpt = load_checkpoint_file(path)
    except FileNotFoundError:
        raise UserError(f"{where}: no such checkpoint file") from None
    except Exception as exc:  # noqa: BLE001 - torch.load fails in many ways (pickle, zip, keys) on other files
        detail = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise UserError(f"{where}: not a PyTorch checkpoint ({detail})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise UserError(f"{where}: not a CenterNet checkpoint (no state_dict)")
    spec = model_spec(ckpt.get("extra") or {}, where)
    try:
        model = build_model(spec.arch, len(spec.classes["category_ids"]), head_conv=spec.head_conv)
    except ValueError as exc:  # an architecture this code does not know
        raise UserError(f"{where}: {exc}") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise UserError(f"{where}: weights do not fit {spec.arch} with {len(spec.classes['category_ids'])} "
                        f"classes ({str(exc).splitlines()[0][:160]})") from None
    return model.eval(), spec, ckpt


def find_run_checkpoint(client: Any, run_id: str) -> str | None:
    """The artifact path of a run's checkpoint (:data:`RUN_CHECKPOINTS`), or ``None``."""
    for path in RUN_CHECKPOINTS:
        folder = path.rpartition("/")[0]
        if any(a.path == path for a in client.list_artifacts(run_id, folder)):
            return path
    return None


def download_run_checkpoint(client: Any, tracking_uri: str, run_id: str, artifact_path: str | None,
                            dst: str | Path) -> Path:
    """Download a run's checkpoint (``artifact_path``, or the one :func:`find_run_checkpoint` finds)."""
    from workflows.mlflow_access import get_run

    get_run(client, tracking_uri, run_id)
    path = artifact_path or find_run_checkpoint(client, run_id)
    if path is None:
        raise UserError(f"run {run_id} has no checkpoint artifact ({' or '.join(RUN_CHECKPOINTS)}); is it a "
                        "finished `centernet train` run?")
    try:
        return Path(client.download_artifacts(run_id, path, str(dst)))
    except Exception as exc:  # noqa: BLE001 - MLflow raises various types for a missing artifact
        raise UserError(f"runs:/{run_id}/{path}: cannot download ({str(exc).splitlines()[0][:160]})") from None


def download_version_checkpoint(client: Any, ref: ModelVersionRef, dst: str | Path) -> Path:
    """The checkpoint file a registered version carries (its pyfunc ``checkpoint`` artifact)."""
    import mlflow.artifacts
    import yaml

    local = Path(mlflow.artifacts.download_artifacts(
        artifact_uri=client.get_model_version_download_uri(ref.name, ref.version), dst_path=str(dst)))
    mlmodel = local / "MLmodel"
    flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get("python_function", {}) \
        if mlmodel.is_file() else {}
    entry = (flavor.get("artifacts") or {}).get("checkpoint") or {}
    path = local / entry["path"] if entry.get("path") else None
    if path is None or not path.is_file():
        raise UserError(f"models:/{ref.name}/{ref.version}: not a CenterNet model (no checkpoint artifact); "
                        "register it with `centernet register`")
    return path


def parse_models_uri(source: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` -> (name, version, alias)."""
    match = _MODELS_URI.match(source)
    if not match:
        raise UserError(f"{source}: expected models:/NAME/VERSION or models:/NAME@ALIAS")
    return match["name"], match["version"], match["alias"]


def resolve_model(source: str, *, tracking_uri: str | None = None, cwd: str | Path | None = None) -> LoadedModel:
    """Load the model ``source`` names (see the module docstring). A path is relative to ``cwd``
    (default: the working directory); ``runs:/`` and ``models:/`` are looked up in ``tracking_uri``
    (default: ``$MLFLOW_TRACKING_URI`` or ``sqlite:///<cwd>/mlruns.db``)."""
    from workflows.mlflow_access import get_model_version, store_client

    text = str(source).strip()
    if not text:
        raise UserError("--model is empty: give a checkpoint file, runs:/RUN_ID or models:/NAME@ALIAS")
    if text.startswith("runs:/"):
        run_id, _, artifact = text[len("runs:/"):].strip("/").partition("/")
        if not run_id:
            raise UserError(f"{text}: expected runs:/RUN_ID or runs:/RUN_ID/path/to/checkpoint.pt")
        uri, client = store_client(tracking_uri)
        with tempfile.TemporaryDirectory(prefix="centernet-model-") as tmp:
            path = download_run_checkpoint(client, uri, run_id, artifact or None, tmp)
            model, spec, _ = load_checkpoint_model(path, text)
        return LoadedModel(model, spec, text, run_id=run_id, tracking_uri=uri)
    if text.startswith("models:/"):
        name, version, alias = parse_models_uri(text)
        uri, client = store_client(tracking_uri)
        mv = get_model_version(client, uri, name, version=version, alias=alias)
        source_id = mv.source[len("models:/"):] if str(mv.source).startswith("models:/m-") else None
        model_id = getattr(mv, "model_id", None) or source_id
        ref = ModelVersionRef(name, str(mv.version), mv.run_id or None, model_id)
        with tempfile.TemporaryDirectory(prefix="centernet-model-") as tmp:
            path = download_version_checkpoint(client, ref, tmp)
            model, spec, _ = load_checkpoint_model(path, text)
        return LoadedModel(model, spec, text, run_id=ref.run_id, version=ref, tracking_uri=uri)
    if text.startswith(("models:", "runs:")):
        raise UserError(f"{text}: expected runs:/RUN_ID, models:/NAME/VERSION or models:/NAME@ALIAS")
    if "://" in text:  # a checkpoint in object storage (s3://, gs://, ...): MLflow's artifact clients fetch it
        import mlflow.artifacts

        with tempfile.TemporaryDirectory(prefix="centernet-model-") as tmp:
            try:
                path = mlflow.artifacts.download_artifacts(artifact_uri=text, dst_path=tmp)
            except Exception as exc:  # noqa: BLE001 - each storage client raises its own errors
                raise UserError(f"{text}: cannot download ({str(exc).splitlines()[0][:160]})") from None
            model, spec, _ = load_checkpoint_model(path, text)
        return LoadedModel(model, spec, text)
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = Path(cwd or Path.cwd()) / path
    model, spec, _ = load_checkpoint_model(path, text)
    return LoadedModel(model, spec, text)

