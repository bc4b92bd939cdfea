"""The data contract between precompute and training: shard format, exact targets, splitting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.ipc as ipc
import pytest
import ray
import torch
from torch.utils.data import DataLoader

from centernet.batch import collate_samples
from centernet.color import ColorAugment
from centernet.data import CategoryMap
from centernet.engine import move_batch
from centernet.heatmap import dense_heatmap
from centernet.synthetic import make_synthetic_coco
from centernet.targets import encode
from centernet.transforms import normalize_batch, transform_boxes
from pipeline.loader import describe_data, make_loader
from pipeline.precompute import precompute
from pipeline.reader import ShardDataset, decode_row, iter_samples, read_manifest, samples_per_rank
from pipeline.schema import SCHEMA_VERSION, PrecomputeSettings

TRAIN = PrecomputeSettings.of(input_size=128, views=2, seed=3)  # raw images (the default)
VAL = PrecomputeSettings.of(input_size=128, augment=False, views=1, radius_variant="corrected", image_format="jpg")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shards")
    ds = make_synthetic_coco(root / "data", 23, seed=5, image_size=(96, 200), category_ids=(3, 7, 11))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        precompute(ds.images_dir, ds.annotations, root / "train", TRAIN, chunk_size=5, progress=False)
        precompute(ds.images_dir, ds.annotations, root / "val", VAL, chunk_size=8, progress=False)
    finally:
        ray.shutdown()
    return {"train": root / "train", "val": root / "val", "annotations": ds.annotations, "coco": root / "data"}


@pytest.mark.parametrize("split", ["train", "val"])
def test_targets_read_back_equal_encode_of_stored_boxes(shards, split):
    manifest = read_manifest(shards[split])
    settings = PrecomputeSettings.from_dict(manifest["settings"])
    n = 0
    for s in iter_samples(shards[split]):
        t = encode(s["boxes"], s["classes"], manifest["num_classes"], s["hm"].shape[1:],
                   max_objs=settings.max_objs, min_overlap=settings.sample.min_overlap,
                   radius_variant=settings.sample.radius_variant)
        for key in ("hm", "wh", "reg", "ind", "mask"):
            assert t[key].dtype == s[key].dtype and np.array_equal(t[key], s[key]), key
        ones = set(np.flatnonzero(s["hm"].reshape(-1) == 1.0).tolist())
        hw = s["hm"].shape[1] * s["hm"].shape[2]
        centers = {int(c) * hw + int(i) for c, i, m in zip(s["classes"], s["ind"], s["mask"]) if m}
        assert ones == centers  # exactly 1.0 if and only if an object center
        assert s["image"].shape == (128, 128, 3) and s["image"].dtype == np.uint8
        assert s["affine"].shape == (2, 3)
        n += 1
    assert n == manifest["num_samples"] == 23 * (2 if split == "train" else 1)


def test_every_input_image_is_in_the_output_or_rejected(shards):
    images = {im["id"] for im in json.loads(shards["annotations"].read_text())["images"]}
    for split in ("train", "val"):
        out = {s["image_id"] for s in iter_samples(shards[split])}
        rejected = {json.loads(line)["image_id"] for line in
                    (shards[split] / "rejects.jsonl").read_text().splitlines()}
        assert images <= out | rejected


def test_val_affine_maps_boxes_back_to_the_original_annotations(shards):
    coco = json.loads((shards["val"] / "annotations.clean.json").read_text())
    by_image: dict[int, list] = {}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        by_image.setdefault(a["image_id"], []).append([x, y, x + w, y + h])
    for s in iter_samples(shards["val"]):
        assert s["view"] == 0
        np.testing.assert_allclose(transform_boxes(s["boxes"], s["affine"]), by_image[s["image_id"]], atol=1e-2)


def test_shards_are_arrow_ipc_with_zstd_and_manifest_is_complete(shards):
    manifest = read_manifest(shards["train"])
    for key in ("schema_version", "settings_hash", "settings", "classes", "input_size", "num_samples",
                "counts", "stats", "shards", "source_annotations", "clean_annotations"):
        assert key in manifest, key
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert CategoryMap.from_dict(manifest["classes"]).category_ids == (3, 7, 11)
    assert manifest["input_size"] == 128 and manifest["split"] == "train"
    for key in ("radius_histogram", "objects_per_image_histogram", "center_collisions", "truncated_objects"):
        assert key in manifest["stats"], key
    files = sorted(p.name for p in shards["train"].glob("part-*.arrow"))
    assert files == [s["file"] for s in manifest["shards"]] == [f"part-{i:05d}.arrow" for i in range(5)]
    total = 0
    for entry in manifest["shards"]:
        reader = ipc.open_file(str(shards["train"] / entry["file"]))
        assert reader.num_record_batches >= 1
        assert reader.read_all().num_rows == entry["num_samples"]
        total += entry["num_samples"]
    # zstd: the same table written uncompressed is larger
    table = ipc.open_file(str(shards["train"] / files[0])).read_all()
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    assert (shards["train"] / files[0]).stat().st_size < 0.8 * sink.getvalue().size
    paths = [str(shards["train"] / f) for f in files]
    assert pads.dataset(paths, format="arrow").count_rows() == total == manifest["num_samples"]


def test_shard_dataset_yields_what_is_stored_and_collates_sparse(shards):
    ds = ShardDataset(shards["train"], shuffle=True, seed=1, buffer_size=8)
    loader = DataLoader(ds, batch_size=4, num_workers=0, collate_fn=collate_samples)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 128, 128) and batch["image"].dtype == torch.uint8
    assert "hm" not in batch and batch["hm_shape"] == (3, 32, 32)
    assert batch["hm_index"].dtype == torch.int64 and batch["hm_value"].dtype == torch.float32
    assert batch["hm_index"].shape == batch["hm_value"].shape and batch["hm_index"].dim() == 1
    assert int(batch["hm_index"].min()) >= 0 and int(batch["hm_index"].max()) < 4 * 3 * 32 * 32
    assert batch["wh"].shape == (4, 128, 2) and batch["wh"].dtype == torch.float32
    assert batch["reg"].shape == (4, 128, 2) and batch["reg"].dtype == torch.float32
    assert batch["ind"].shape == (4, 128) and batch["ind"].dtype == torch.int64
    assert batch["mask"].shape == (4, 128) and batch["mask"].dtype == torch.uint8
    assert batch["image_id"].shape == (4,) and batch["image_id"].dtype == torch.int64
    assert batch["affine"].shape == (4, 2, 3) and batch["affine"].dtype == torch.float32
    # on the device: the dense heatmaps of iter_samples, and the normalised images
    by_view = {(s["image_id"], tuple(np.round(s["affine"].reshape(-1), 3))): s for s in iter_samples(shards["train"])}
    moved = move_batch(batch, "cpu")
    assert moved["hm"].shape == (4, 3, 32, 32) and moved["image"].is_contiguous()
    for b in range(4):
        s = by_view[(int(batch["image_id"][b]), tuple(np.round(batch["affine"][b].double().numpy().reshape(-1), 3)))]
        assert torch.equal(moved["hm"][b], torch.from_numpy(s["hm"]))
        assert torch.equal(moved["image"][b], normalize_batch(torch.from_numpy(s["image"]).permute(2, 0, 1)[None])[0])
    # per sample: one decoder (decode_row) under both iter_samples and the tensors
    for split in ("train", "val"):
        samples = list(iter_samples(shards[split]))
        tensors = list(ShardDataset(shards[split], shuffle=False))
        assert len(samples) == len(tensors)
        for t, s in zip(tensors, samples):
            assert t["image"].dtype == torch.uint8 and t["image"].shape == (3, 128, 128)
            assert torch.equal(t["image"], torch.from_numpy(s["image"]).permute(2, 0, 1))
            assert np.array_equal(dense_heatmap(t), s["hm"])
            assert torch.equal(t["ind"], torch.from_numpy(s["ind"]))
            assert torch.equal(t["wh"], torch.from_numpy(s["wh"]))
            assert torch.allclose(t["affine"].double(), torch.from_numpy(s["affine"]))


def test_decode_row_is_the_one_decoder(shards):
    from pipeline.reader import _Shards
    from pipeline.schema import PrecomputeSettings

    manifest = read_manifest(shards["val"])
    settings = PrecomputeSettings.from_dict(manifest["settings"])
    raw = next(_Shards(shards["val"], manifest, False).rows(0, 0, 1))
    row = decode_row(raw, settings, 3)
    sample = next(iter_samples(shards["val"]))
    assert row["image"].shape == (128, 128, 3) and np.array_equal(row["image"], sample["image"])
    assert row["hm_shape"] == (3, 32, 32) and np.array_equal(dense_heatmap(row), sample["hm"])
    assert row["wh"].shape == (128, 2) and row["boxes"].shape[1] == 4 and row["affine"].shape == (2, 3)
    assert set(sample) == {"image", "hm", "wh", "reg", "ind", "mask", "boxes", "classes", "image_id", "view",
                           "affine"}


@pytest.mark.parametrize("kind", ["shards", "coco"])
def test_rank_loaders_batch_both_kinds_alike_and_colour_only_training(shards, kind):
    path = shards["train"] if kind == "shards" else shards["coco"]
    info = describe_data(path, input_size=128)
    assert info.kind == kind
    train = make_loader(info, rank=1, world_size=2, batch_size=3, train=True, seed=4)
    val = make_loader(info, rank=0, world_size=2, batch_size=3, train=False, seed=4)
    assert isinstance(train.color, ColorAugment) and train.color.seed == 4
    assert val.color is None
    assert make_loader(info, rank=0, world_size=1, batch_size=3, train=True, color_aug=False).color is None
    train.set_epoch(2)  # reaches the colour augmentation too
    assert train.color.epoch == 2
    for loader in (train, val):
        batch = next(iter(loader))
        assert "hm" not in batch and batch["hm_shape"] == (3, 32, 32)
        assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (3, 3, 128, 128)
        assert batch["image_id"].shape == batch["view"].shape == (3,)
        moved = move_batch(batch, "cpu", color=loader.color)
        assert moved["hm"].shape == (3, 3, 32, 32) and moved["image"].dtype == torch.float32
        assert moved["hm"].max() == 1.0


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_ranks_and_workers_cover_each_sample_exactly_once(shards, world_size, num_workers):
    counts = samples_per_rank(shards["train"], world_size)
    seen = []
    for epoch in (0, 1):
        per_epoch = []
        for rank in range(world_size):
            ds = ShardDataset(shards["train"], rank=rank, world_size=world_size, shuffle=True, seed=2,
                              buffer_size=4)
            ds.set_epoch(epoch)
            assert len(ds) == counts[rank]
            loader = DataLoader(ds, batch_size=None, num_workers=num_workers)
            ids = [(int(s["image_id"]), *s["affine"].reshape(-1).tolist()) for s in loader]  # view identity
            assert len(ids) == counts[rank]
            per_epoch.extend(ids)
        assert len(per_epoch) == 46 and len(set(per_epoch)) == 46
        seen.append(per_epoch)
    assert sum(counts) == 46 and max(counts) - min(counts) <= 1
    if world_size == 1 and num_workers == 0:
        assert seen[0] != seen[1]  # reshuffled per epoch


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_training_reads_one_view_of_each_image_per_epoch_cycling_through_them(shards, world_size):
    # 23 images x 2 views: each epoch is one pass over the images, views (epoch + image id) % 2
    assert describe_data(shards["train"]).views == 2 and describe_data(shards["train"]).images_per_epoch == 23
    views_seen: dict[int, set[int]] = {}
    for epoch in (0, 1):
        ids = []
        for rank in range(world_size):
            ds = ShardDataset(shards["train"], rank=rank, world_size=world_size, shuffle=True, seed=2,
                              buffer_size=4, one_view_per_epoch=True)
            ds.set_epoch(epoch)
            for s in DataLoader(ds, batch_size=None, num_workers=2):
                image_id, view = int(s["image_id"]), int(s["view"])
                assert view == (epoch + image_id) % 2
                ids.append(image_id)
                views_seen.setdefault(image_id, set()).add(view)
            assert abs(len(ds) - 23 / world_size) <= 1
        assert sorted(ids) == sorted(set(ids)) and len(ids) == 23  # every image once
    assert all(v == {0, 1} for v in views_seen.values())  # two epochs: both augmentations of each
    loader = make_loader(describe_data(shards["train"]), rank=0, world_size=1, batch_size=50, train=True)
    assert len(next(iter(loader))["image_id"]) == 23  # what training gets


def test_reader_refuses_unknown_schema_or_settings_hash(shards, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shards["val"], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(ValueError, match="schema version.*centernet precompute --images"):
        ShardDataset(copy)
    (copy / "manifest.json").write_text(json.dumps({**manifest, "settings_hash": "0123456789abcdef"}))
    with pytest.raises(ValueError, match="settings hash.*centernet precompute"):
        list(iter_samples(copy))
    (copy / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a finished precompute output"):
        read_manifest(copy)
