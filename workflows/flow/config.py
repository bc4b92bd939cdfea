"""The pipeline config: one YAML file per recipe (``configs/*.yaml``), validated before any step runs.

Sections reuse the steps' own declarations, so every key is declared once: ``precompute.train`` and
``precompute.val`` are :class:`pipeline.schema.PrecomputeSettings`, ``train`` is
:class:`workflows.train_config.TrainConfig` (its ``data``/``val_data`` are the precomputed shards,
set by the pipeline), ``tune`` is :class:`workflows.tune_config.TuneConfig` (optional: no
``tune:``, no search). Unknown keys and wrong types are a ``ValueError`` naming the key. Paths are relative to the
directory ``centernet run`` is typed in, or URIs; ``--set key.sub=value`` overrides any key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from centernet.config_fields import field_info, from_mapping, setting, to_plain
from pipeline.schema import PrecomputeSettings
from workflows.train_config import TrainConfig, load_config_file
from workflows.tune_config import TuneConfig

# TrainConfig keys the pipeline sets itself: the training data are the shards it precomputed.
TRAIN_KEYS_SET_BY_PIPELINE = ("data", "val_data")


@dataclass(frozen=True)
class SyntheticData:
    """A generated dataset of shapes (``centernet.synthetic.make_synthetic_coco``)."""

    train_images: int = setting(600, help="Synthetic training images.")
    val_images: int = setting(100, help="Synthetic validation images.")
    seed: int = setting(0, help="Seed of the generated images (the validation split uses seed + 1).")

    def __post_init__(self) -> None:
        for name in ("train_images", "val_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.synthetic.{name}: must be >= 1, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class DataSection:
    """Where the images come from and where their shards go."""

    synthetic: SyntheticData | None = setting(None, help="Generate a synthetic dataset of shapes into "
                                                         "data.dir instead of reading one.")
    dir: str = setting("data", help="Where the synthetic dataset is written (train/, val/): a directory, on a "
                                    "cluster one every node sees (not a URI).", path=True)
    train_images: str | None = setting(None, help="Training image directory (COCO file_names are relative to it).",
                                       path=True)
    train_annotations: str | None = setting(None, help="Training COCO annotation JSON.", path=True)
    val_images: str | None = setting(None, help="Validation image directory.", path=True)
    val_annotations: str | None = setting(None, help="Validation COCO annotation JSON.", path=True)
    shards: str = setting("shards", help="Shard root: <shards>/train and <shards>/val (shared path or s3:// "
                                         "URI on a cluster).", path=True)
    chunk_size: int = setting(64, help="Images per precompute task and per shard.")
    workers: int | None = setting(None, help="Precompute tasks in flight per dataset (default: all CPUs).")

    def __post_init__(self) -> None:
        given = [n for n in ("train_images", "train_annotations", "val_images", "val_annotations")
                 if getattr(self, n)]
        if self.synthetic is not None and given:
            raise ValueError(f"data.{given[0]}: give either data.synthetic or the dataset paths, not both")
        if self.synthetic is not None and "://" in self.dir:
            raise ValueError(f"data.dir: {self.dir}: the synthetic dataset is written to a directory (on a cluster, "
                             "one every node sees), not a URI")
        if self.synthetic is None and len(given) != 4:
            missing = sorted({"train_images", "train_annotations", "val_images", "val_annotations"} - set(given))
            raise ValueError(f"data.{missing[0]}: required (or data.synthetic to generate a dataset)")
        if self.chunk_size < 1:
            raise ValueError(f"data.chunk_size: must be >= 1, got {self.chunk_size!r}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"data.workers: must be >= 1, got {self.workers!r}")

    def shard_dir(self, split: str) -> str:
        return f"{self.shards.rstrip('/')}/{split}"


@dataclass(frozen=True)
class PrecomputeSection:
    """The data settings of the training and the validation shards."""

    train: PrecomputeSettings = setting(PrecomputeSettings(), help="Training shards' settings.")
    val: PrecomputeSettings = setting(PrecomputeSettings(augment=False), help="Validation shards' settings "
                                                                              "(augment: false).")

    def __post_init__(self) -> None:
        if self.val.augment:
            raise ValueError("precompute.val.augment: must be false (validation images are stored once, unaugmented)")
        if self.val.input_size != self.train.input_size:
            raise ValueError(f"precompute.val.sample.input_size: {self.val.input_size} differs from "
                             f"precompute.train's {self.train.input_size}")


@dataclass(frozen=True)
class RegisterSection:
    """Registration of the trained model (``workflows.register.register_run``)."""

    name: str | None = setting(None, help="Registered model name (models:/NAME@champion).",
                               default_text="the pipeline's name")
    force_alias: bool = setting(False, help="Move @champion to the new version whatever its val AP.")


@dataclass(frozen=True)
class EvaluateSection:
    """Evaluation of the registered model on the validation shards (``workflows.evaluate``)."""

    flip: bool = setting(True, help="Flip test.")
    batch_size: int = setting(8, help="Images per forward pass.")
    device: str = setting("cpu", help="cpu or cuda.", choices=("cpu", "cuda"))


@dataclass(frozen=True)
class PredictSection:
    """Predictions drawn on a few validation images (``workflows.predict``)."""

    images: int = setting(8, help="Validation images to draw predictions on (0: none).")
    threshold: float = setting(0.3, help="Minimum score of a drawn detection.")
    device: str = setting("cpu", help="cpu or cuda.", choices=("cpu", "cuda"))


@dataclass(frozen=True)
class PipelineConfig:
    """A whole pipeline run: data, precompute settings, optional search, training and what follows."""

    train: TrainConfig = setting(help="Training (centernet train's keys; data and val_data are the shards).")
    name: str = setting("pipeline", help="Pipeline name: names the training run, the registered model and "
                                         "<results>/<name>.", default_text="the config file's name")
    results: str = setting("pipeline_results", help="Results directory: step outputs and the cache "
                                                    "(local path or s3:// URI).", path=True)
    retries: int = setting(2, help="Retries of a step after a transient failure (connection, timeout).")
    retry_delay_s: float = setting(10.0, help="Seconds between retries.")
    data: DataSection = setting(DataSection(synthetic=SyntheticData()), help="Data.")
    precompute: PrecomputeSection = setting(PrecomputeSection(), help="Data settings.")
    register: RegisterSection = setting(RegisterSection(), help="Registration.")
    evaluate: EvaluateSection = setting(EvaluateSection(), help="Evaluation.")
    predict: PredictSection = setting(PredictSection(), help="Predictions.")
    tune: TuneConfig | None = setting(None, help="The search before the final training (centernet tune's "
                                                 "keys); none: no search.")

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"name: must be a non-empty string without '/', got {self.name!r}")
        if self.retries < 0:
            raise ValueError(f"retries: must be >= 0, got {self.retries!r}")
        if self.retry_delay_s < 0:
            raise ValueError(f"retry_delay_s: must be >= 0, got {self.retry_delay_s!r}")

    @property
    def model_name(self) -> str:
        return self.register.name or self.name

    @property
    def results_dir(self) -> str:
        """``<results>/<name>``: this pipeline's step outputs and cache records."""
        return f"{self.results.rstrip('/')}/{self.name}"

    @property
    def cache_dir(self) -> str:
        """``<results>/<name>/cache``: Prefect's result and cache records of the steps."""
        return f"{self.results_dir}/cache"

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)


def parse_overrides(items: Sequence[str]) -> list[tuple[list[str], Any]]:
    """``["train.epochs=3", ...]`` -> ``[(["train", "epochs"], 3), ...]``; values are YAML
    (``3``, ``0.5``, ``true``, ``[128, 128]``, ``hm=1,wh=0.1``)."""
    import yaml

    out = []
    for item in items:
        key, sep, text = item.partition("=")
        path = [p for p in key.strip().split(".") if p]
        if not sep or not path:
            raise ValueError(f"--set {item!r}: expected key.sub=value, e.g. train.epochs=3")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        out.append((path, value))
    return out


def apply_overrides(values: Mapping[str, Any], overrides: Sequence[tuple[list[str], Any]]) -> dict[str, Any]:
    """A copy of ``values`` with each ``(path, value)`` set (intermediate sections created)."""
    import copy

    out = copy.deepcopy(dict(values))
    for path, value in overrides:
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"--set {'.'.join(path)}: {'.'.join(path[:i + 1])} is not a section")
            node = child
        node[path[-1]] = value
    return out


def build_config(values: Mapping[str, Any], *, default_name: str = "pipeline", source: str = "config",
                 cwd: str | Path | None = None, on_cluster: bool = False) -> PipelineConfig:
    """A validated :class:`PipelineConfig` from a plain mapping, its paths resolved against ``cwd``.
    ``ValueError`` naming the first bad key."""
    values = dict(values)
    values.setdefault("name", default_name)
    train = values.get("train")
    if not isinstance(train, Mapping):
        raise ValueError(f"{source}: train: expected a section of training keys (centernet train's options)")
    for key in TRAIN_KEYS_SET_BY_PIPELINE:
        if key in train:
            raise ValueError(f"{source}: train.{key}: set by the pipeline (the precomputed shards); remove it")
    data = from_mapping(DataSection, values.get("data", {}), source=f"{source}: data") if "data" in values \
        else DataSection(synthetic=SyntheticData())
    values["train"] = {**train, "data": data.shard_dir("train"), "val_data": data.shard_dir("val")}
    cfg = from_mapping(PipelineConfig, values, source=source)
    return resolve_paths(cfg, cwd=cwd, on_cluster=on_cluster)


def resolve_paths(obj: Any, *, cwd: str | Path | None, on_cluster: bool, prefix: str = "") -> Any:
    """``obj`` (a config dataclass) with every declared path field resolved against ``cwd``
    (URIs unchanged), nested sections included."""
    from workflows.errors import UserError
    from workflows.user_paths import resolve_user_path

    changes = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes[f.name] = resolve_paths(value, cwd=cwd, on_cluster=on_cluster, prefix=f"{name}.")
        elif field_info(f)["path"] and isinstance(value, str) and value:
            try:
                changes[f.name] = resolve_user_path(value, option=name, on_cluster=on_cluster, cwd=cwd)
            except UserError as exc:
                raise ValueError(str(exc)) from None
    return dataclasses.replace(obj, **changes) if changes else obj


def load_pipeline_config(path: str | Path, overrides: Sequence[str] = (), *, cwd: str | Path | None = None,
                         on_cluster: bool = False) -> PipelineConfig:
    """Read, override (``--set``) and validate a pipeline YAML file; ``ValueError`` naming the
    file and the bad key."""
    path = Path(path)
    values = apply_overrides(load_config_file(path), parse_overrides(overrides))
    try:
        return build_config(values, default_name=path.stem, source=str(path), cwd=cwd, on_cluster=on_cluster)
    except ValueError as exc:
        text = str(exc)
        raise ValueError(text if text.startswith(str(path)) else f"{path}: {text}") from None
