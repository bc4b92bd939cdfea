"""Tiny precomputed shards on which a search's trials learn something in a dozen steps (shared by
the Tune tests and benchmarks/tune.py)."""

from __future__ import annotations

from pathlib import Path

STEPS_PER_EPOCH = 12


def make_shards(root: Path) -> tuple[Path, Path]:
    """48 training / 8 validation images of one large shape each, 64 x 64, stored without
    augmentation: 12 steps of batch 4 at lr 1e-2 (:data:`TRIAL_OPTIONS`) give every trial a val AP
    above 0 after its first epoch, so ASHA's rungs compare real numbers. Ray runs for the
    precompute only (a search starts its own, with the dashboard)."""
    from centernet.synthetic import make_synthetic_coco
    from pipeline.precompute import precompute
    from pipeline.ray_local import local_ray
    from pipeline.schema import PrecomputeSettings

    kwargs = dict(image_size=(64, 64), objects_per_image=(1, 1), object_size=(24, 40), category_ids=(1,))
    train = make_synthetic_coco(root / "coco_train", 48, seed=0, **kwargs)
    val = make_synthetic_coco(root / "coco_val", 8, seed=1, **kwargs)
    with local_ray(num_cpus=2, dashboard=False):
        for data, out in ((train, "train"), (val, "val")):
            precompute(data.images_dir, data.annotations, root / out, PrecomputeSettings.of(input_size=64, augment=False),
                       chunk_size=8, progress=False)
    return root / "train", root / "val"


# The training options of the trials on these shards (from scratch, no warmup, no colour noise).
TRIAL_OPTIONS = {"arch": "resnet18", "pretrained": "none", "batch_size": 4, "lr": 1e-2, "warmup_steps": 0,
                 "loader_workers": 0, "preview_images": 0, "color_aug": False, "max_steps_per_epoch": STEPS_PER_EPOCH}


def cli_flags(options: dict) -> list[str]:
    """``TRIAL_OPTIONS``-style values as ``centernet tune`` flags."""
    flags = {"max_steps_per_epoch": "--max-steps", "color_aug": "--no-color-aug"}
    out: list[str] = []
    for key, value in options.items():
        flag = flags.get(key, "--" + key.replace("_", "-"))
        out += [flag] if isinstance(value, bool) else [flag, str(value)]
    return out
