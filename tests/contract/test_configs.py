"""Every recipe in configs/ loads and validates (no step runs), and the official ones carry the
published hyper-parameters (global batch = workers x batch size), the paper's AP and the hardware."""

from __future__ import annotations

from pathlib import Path

import pytest

from workflows.flow.config import load_pipeline_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
# recipe: arch, input size, global batch, lr, epochs, lr steps, the paper's number
OFFICIAL = {
    "coco_resdcn18": ("resdcn18", 512, 114, 5e-4, 140, (90, 120), "28.1"),
    "coco_dla34": ("dla34", 512, 128, 5e-4, 140, (90, 120), "37.4"),
    "coco_hourglass104": ("hourglass104", 512, 24, 2.5e-4, 50, (40,), "40.3"),
    "pascal_resdcn18_384": ("resdcn18", 384, 32, 1.25e-4, 70, (45, 60), "75.7"),
}


def test_every_recipe_is_checked():
    assert {p.stem for p in CONFIGS.glob("*.yaml")} == {*OFFICIAL, "demo"}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_recipe_has_the_published_numbers(name, tmp_path):
    arch, size, batch, lr, epochs, steps, paper = OFFICIAL[name]
    path = CONFIGS / f"{name}.yaml"
    cfg = load_pipeline_config(path, cwd=tmp_path)
    t = cfg.train
    assert (t.arch, t.global_batch_size, t.epochs, t.effective_lr_steps) == (arch, batch, epochs, steps)
    assert t.effective_lr == pytest.approx(lr) and t.use_gpu
    assert cfg.precompute.train.input_size == cfg.precompute.val.input_size == size
    assert cfg.precompute.train.augment and not cfg.precompute.val.augment
    assert cfg.data.synthetic is None and cfg.tune is None and cfg.name == name
    text = path.read_text()
    assert paper in text and "GPU" in text and "placeholder" in text


def test_demo_recipe_is_small_and_synthetic(tmp_path):
    cfg = load_pipeline_config(CONFIGS / "demo.yaml", cwd=tmp_path)
    assert cfg.data.synthetic is not None and cfg.train.pretrained == "none" and not cfg.train.use_gpu
    assert cfg.precompute.train.input_size == 128 and cfg.evaluate.flip
    # relative paths are resolved against the directory the command is typed in
    assert cfg.data.shards == str(tmp_path / "demo_output" / "shards")
    assert cfg.train.data == str(tmp_path / "demo_output" / "shards" / "train")


def test_overrides_and_errors_name_the_key(tmp_path):
    path = CONFIGS / "demo.yaml"
    cfg = load_pipeline_config(path, ["train.epochs=3", "precompute.train.views=2", "data.synthetic.seed=7"],
                               cwd=tmp_path)
    assert (cfg.train.epochs, cfg.precompute.train.views, cfg.data.synthetic.seed) == (3, 2, 7)
    for override, named in (("train.epoch=3", "unknown key 'epoch'"), ("train.epochs=many", "epochs: expected an integer"),
                            ("precompute.val.augment=true", "precompute.val.augment"),
                            ("train.data=elsewhere", "train.data: set by the pipeline"),
                            ("bogus=1", "unknown key 'bogus'"), ("epochs", "expected key.sub=value"),
                            ("data.dir=s3://bucket/data", "data.dir: s3://bucket/data: the synthetic dataset")):
        with pytest.raises(ValueError, match=named.replace(".", r"\.")) as info:
            load_pipeline_config(path, [override], cwd=tmp_path)
        assert "\n" not in str(info.value)
