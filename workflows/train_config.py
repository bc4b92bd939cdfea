"""The configuration of a training job: one declaration for flags, YAML keys, defaults and checks.

Every field is a ``centernet train`` option (``--help`` shows its default) and a key of
``--config FILE.yaml``; precedence is declared defaults < YAML file < flags. Defaults computed from
other fields (learning rate, milestones, pretrained weights) are resolved by the properties below.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from centernet.config_fields import from_mapping, setting

AMP_MODES = ("none", "bf16", "fp16")
BATCHNORM_MODES = ("batch", "frozen", "sync")
LR_SCHEDULES = ("step", "cosine")
PRETRAINED_KEYWORDS = ("imagenet", "none")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training job needs; validated on construction (``ValueError`` naming the field)."""

    data: str = setting(help="Training data: a shard directory (centernet precompute --out) or a COCO "
                             "directory (images/ + annotations.json); local path or s3:// URI.",
                        path=True, metavar="DIR")
    arch: str = setting("resnet18", help="Architecture (see `centernet.models.available_architectures`).")
    val_data: str | None = setting(None, help="Validation shard directory (precomputed with --no-augment) "
                                              "for COCO AP after each --eval-every epochs.", path=True,
                                   metavar="DIR")
    epochs: int = setting(140, help="Total epochs.")
    batch_size: int = setting(32, help="Batch size per worker.")
    lr: float | None = setting(None, help="Adam learning rate.",
                               default_text="1.25e-4 x global batch / 32 with pretrained weights (official), "
                                            "2e-3 x global batch / 32 from scratch (measured)")
    lr_schedule: str = setting("step", help="Learning-rate schedule after warmup: x0.1 steps or cosine.",
                               choices=LR_SCHEDULES)
    lr_steps: tuple[int, ...] | None = setting(None, help="Epochs after which the lr is multiplied by 0.1, "
                                                          "e.g. 90,120.", metavar="E1,E2",
                                               default_text="the official 90/140 and 120/140 of --epochs")
    warmup_steps: int | None = setting(None, help="Optimisation steps of linear lr warmup (0: none).",
                                       default_text="100 (centernet.schedule.DEFAULT_WARMUP_STEPS)")
    loss_weights: dict[str, float] = setting({"hm": 1.0, "wh": 0.1, "reg": 1.0},
                                             help="Loss weights, e.g. hm=1,wh=0.1,reg=1.", metavar="K=V,...")
    pretrained: str | None = setting(None, help="Backbone weights: imagenet (downloaded once from the official "
                                                "source, hash-checked), none (random init) or a file path.",
                                     default_text="imagenet for ResNet/DLA, none for Hourglass", path=True,
                                     metavar="imagenet|none|PATH")
    head_conv: int | None = setting(None, help="Channels of the heads' 3x3 conv.",
                                    default_text="the architecture's official value (64 ResNet, 256 DLA/Hourglass)")
    max_grad_norm: float | None = setting(None,  # centernet.schedule.DEFAULT_MAX_GRAD_NORM (test_train_config)
                                          help="Gradient-norm clipping threshold, e.g. 35 as mmdetection "
                                               "(a non-finite norm always skips the step).",
                                          default_text="none, as the official code")
    color_aug: bool = setting(True, help="Official colour augmentation of training images, on the device.",
                              flag="--color-aug/--no-color-aug")
    num_workers: int = setting(1, help="DDP workers (Ray Train actors).", flag="--workers")
    cpus_per_worker: int = setting(1, help="CPUs reserved per worker.")
    use_gpu: bool = setting(False, help="One GPU per worker (NCCL) or CPU (gloo).", flag="--gpu/--cpu")
    amp: str = setting("none", help="Mixed precision on GPU.", choices=AMP_MODES)
    channels_last: bool = setting(True, help="Channels-last layout of model and images on GPU (faster "
                                             "convolutions under --amp); no effect on CPU.",
                                  flag="--channels-last/--no-channels-last")
    compile: bool = setting(False, help="torch.compile the training model (its first steps wait for the "
                                        "compiler; pays off on GPU over long runs).",
                            flag="--compile/--no-compile")
    batchnorm: str = setting("batch", help="Batch norm: per-replica statistics, frozen running statistics, "
                                           "or SyncBatchNorm (GPU).", choices=BATCHNORM_MODES)
    seed: int = setting(0, help="Seed of initialisation, data order and augmentation.")
    input_size: int = setting(512, help="Input size for COCO-directory data (shards carry their own).")
    loader_workers: int = setting(1, help="DataLoader processes per worker.")
    max_steps_per_epoch: int | None = setting(None, help="Cap on steps per epoch (smoke runs).", flag="--max-steps")
    checkpoint_every: int = setting(1, help="Epochs between checkpoints (the last epoch always).")
    eval_every: int = setting(1, help="Epochs between validation runs (the last epoch always).")
    keep_checkpoints: int = setting(2, help="Checkpoints kept: the best by val AP (else the latest), plus the latest.")
    max_failures: int = setting(3, help="Restarts of the worker group after a worker dies (-1: forever).")
    storage_path: str = setting("ray_results", help="Checkpoints and run state: <storage-path>/<name> "
                                                    "(shared path or s3:// URI on a cluster).", path=True,
                                metavar="DIR")
    name: str | None = setting(None, help="Run name.", default_text="<arch>-<date>-<time>")
    experiment: str = setting("centernet", help="MLflow experiment.")
    preview_images: int = setting(4, help="Validation images drawn into MLflow at each evaluation.")
    log_every: int = setting(1, help="Optimisation steps between step metrics in MLflow.")

    def __post_init__(self) -> None:
        from centernet.losses import validate_loss_weights
        from centernet.models import available_architectures
        from centernet.transforms import check_input_size

        if not self.data:
            raise ValueError("data: a shard directory (or COCO directory) is required")
        if self.arch not in available_architectures():
            raise ValueError(f"arch: unknown architecture {self.arch!r}; valid: {', '.join(available_architectures())}")
        for name in ("epochs", "batch_size", "num_workers", "cpus_per_worker", "checkpoint_every",
                     "eval_every", "keep_checkpoints", "log_every"):
            _at_least(name, getattr(self, name), 1)
        for name in ("max_steps_per_epoch", "head_conv", "warmup_steps"):
            if getattr(self, name) is not None:
                _at_least(name, getattr(self, name), 1 if name != "warmup_steps" else 0)
        _at_least("loader_workers", self.loader_workers, 0)
        _at_least("preview_images", self.preview_images, 0)
        _at_least("max_failures", self.max_failures, -1)
        if self.lr is not None and not 0 < self.lr < 1:
            raise ValueError(f"lr: must be in (0, 1), got {self.lr!r}")
        if self.lr_steps is not None:
            steps = tuple(int(s) for s in self.lr_steps)
            if any(s < 1 for s in steps) or list(steps) != sorted(set(steps)):
                raise ValueError(f"lr_steps: must be increasing epochs >= 1, got {self.lr_steps!r}")
            object.__setattr__(self, "lr_steps", steps)
            if self.lr_schedule == "cosine":
                raise ValueError("lr_steps: milestones apply to --lr-schedule step only, not cosine")
        object.__setattr__(self, "loss_weights", validate_loss_weights(dict(self.loss_weights)))
        for name, allowed in (("amp", AMP_MODES), ("batchnorm", BATCHNORM_MODES), ("lr_schedule", LR_SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.amp != "none" and not self.use_gpu:
            raise ValueError(f"amp: {self.amp!r} needs --gpu (mixed precision runs on GPU only)")
        if self.batchnorm == "sync" and not self.use_gpu:
            raise ValueError("batchnorm: 'sync' needs --gpu (SyncBatchNorm has no CPU kernel)")
        check_input_size(self.input_size)
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm: must be > 0 or none, got {self.max_grad_norm!r}")
        if self.name is not None and (not self.name or "/" in self.name):
            raise ValueError(f"name: must be a non-empty string without '/', got {self.name!r}")

    # ------------------------------------------------------------------ computed defaults
    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_workers

    @property
    def pretrained_source(self) -> str:
        """``"imagenet"``, ``"none"`` or a weights path: the field, or the architecture's default."""
        from centernet.models.pretrained import default_pretrained

        return self.pretrained if self.pretrained is not None else default_pretrained(self.arch)

    @property
    def from_scratch(self) -> bool:
        return self.pretrained_source == "none"

    @property
    def effective_lr(self) -> float:
        from centernet.schedule import default_lr

        return float(self.lr) if self.lr is not None else default_lr(self.global_batch_size,
                                                                     pretrained=not self.from_scratch)

    @property
    def effective_lr_steps(self) -> tuple[int, ...]:
        from centernet.schedule import default_lr_steps

        return self.lr_steps if self.lr_steps is not None else default_lr_steps(self.epochs)

    @property
    def effective_warmup_steps(self) -> int:
        from centernet.schedule import DEFAULT_WARMUP_STEPS

        return self.warmup_steps if self.warmup_steps is not None else DEFAULT_WARMUP_STEPS

    @property
    def storage_uri(self) -> str:
        """The storage path made absolute (Ray Train needs absolute paths or URIs)."""
        if "://" in self.storage_path:
            return self.storage_path
        return str(Path(self.storage_path).expanduser().resolve())

    # ---------------------------------------------------------------------- conversions
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lr_steps"] = list(self.lr_steps) if self.lr_steps is not None else None
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "training config") -> TrainConfig:
        """Build from a plain mapping (YAML file, CLI); unknown keys and wrong types name the key."""
        return from_mapping(cls, data, source=source)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _at_least(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: must be an integer >= {low}, got {value!r}")


def load_config_file(path: str | Path, *, what: str = "config file", keys: str = "config keys") -> dict[str, Any]:
    """A YAML (or JSON) config file as a plain dict (``yaml.safe_load``); ``ValueError`` naming the
    file (``what`` it is) when it is missing, not YAML or not a mapping (of ``keys``)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read {what} ({exc})") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of {keys}, got {type(data).__name__}")
    return data
