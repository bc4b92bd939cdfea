"""Kill-and-rerun: an interrupted precompute, rerun, equals an uninterrupted one byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import ray

from centernet.synthetic import make_synthetic_coco
from pipeline.precompute import PrecomputeInterrupted, precompute
from pipeline.reader import read_manifest
from pipeline.schema import PrecomputeSettings

SETTINGS = PrecomputeSettings.of(input_size=128, views=2, seed=11)
OUTPUTS = ("manifest.json", "rejects.jsonl", "annotations.clean.json", "stats.png")


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_synthetic_coco(tmp_path_factory.mktemp("data"), 30, seed=7, image_size=(96, 160))


def _digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}


def test_interrupted_run_resumes_to_identical_output(dataset, tmp_path):
    ref = precompute(dataset.images_dir, dataset.annotations, tmp_path / "ref", SETTINGS, chunk_size=4,
                     workers=2, progress=False)
    assert ref.shards_written == 8 and ref.shards_skipped == 0
    out = tmp_path / "run"
    with pytest.raises(PrecomputeInterrupted):
        precompute(dataset.images_dir, dataset.annotations, out, SETTINGS, chunk_size=4, workers=2,
                   progress=False, stop_after_shards=3)
    finished = sorted(p.name for p in out.glob("part-*.arrow"))
    assert 3 <= len(finished) < 8
    assert not (out / "manifest.json").exists()  # an unfinished output is never described as finished
    with pytest.raises(FileNotFoundError, match="interrupted"):
        read_manifest(out)
    # what a kill leaves behind: a half-written temporary, and a damaged shard copied in by hand
    (out / "part-00007.arrow.tmp-deadbeef").write_bytes(b"half a shard")
    damaged = out / finished[0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    rerun = precompute(dataset.images_dir, dataset.annotations, out, SETTINGS, chunk_size=4, workers=2,
                       progress=False)
    assert rerun.shards_skipped == len(finished) - 1 and rerun.shards_written == 8 - rerun.shards_skipped
    assert _digests(out) == _digests(tmp_path / "ref")  # byte for byte, temporaries gone
    assert set(_digests(out)) == {f"part-{i:05d}.arrow" for i in range(8)} | set(OUTPUTS)


def test_rerun_with_same_settings_skips_everything_and_changed_settings_redo(dataset, tmp_path):
    out = tmp_path / "out"
    precompute(dataset.images_dir, dataset.annotations, out, SETTINGS, chunk_size=8, progress=False)
    before = _digests(out)
    again = precompute(dataset.images_dir, dataset.annotations, out, SETTINGS, chunk_size=8, progress=False)
    assert again.shards_written == 0 and again.shards_skipped == 4
    assert _digests(out) == before
    other = PrecomputeSettings.of(input_size=128, views=1, seed=11)
    changed = precompute(dataset.images_dir, dataset.annotations, out, other, chunk_size=16, progress=False)
    assert changed.shards_written == 2 and changed.shards_skipped == 0
    assert sorted(p.name for p in out.glob("part-*.arrow")) == ["part-00000.arrow", "part-00001.arrow"]
    assert read_manifest(out)["settings_hash"] == other.settings_hash
