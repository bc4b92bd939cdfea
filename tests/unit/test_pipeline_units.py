"""Pure functions of pipeline/: settings hash, manifest checks, splitting, sparse maps, geometry."""

from __future__ import annotations

import numpy as np
import pytest

from centernet.heatmap import dense_heatmap
from centernet.targets import encode
from centernet.transforms import transform_boxes
from pipeline.augment import letterbox_view, view_rng
from pipeline.precompute import encode_image
from pipeline.reader import decode_image
from pipeline.schema import IMAGE_FORMATS, SCHEMA_VERSION, PrecomputeSettings, check_manifest
from pipeline.shards import encode_rows, iter_raw_rows, open_shard, own_row, resolve, shard_metadata
from pipeline.split import balanced_range
from pipeline.stats import merge_stats


def test_settings_hash_changes_with_every_data_setting():
    base = PrecomputeSettings.of(input_size=128)
    variants = [dict(input_size=256), dict(radius_variant="corrected"), dict(min_overlap=0.5),
                dict(augment=False), dict(views=2), dict(seed=1), dict(max_objs=64),
                dict(image_format="png"), dict(image_format="jpg"), dict(scale_range=(0.5, 1.5))]
    hashes = {base.settings_hash} | {PrecomputeSettings.of(**{"input_size": 128, **v}).settings_hash
                                     for v in variants}
    assert len(hashes) == len(variants) + 1
    assert PrecomputeSettings.from_dict(base.to_dict()) == base
    assert PrecomputeSettings.of(input_size=128).settings_hash == base.settings_hash


@pytest.mark.parametrize("bad", [dict(input_size=100), dict(views=0), dict(augment=False, views=2),
                                 dict(radius_variant="exact"), dict(min_overlap=1.0), dict(image_format="webp")])
def test_settings_reject_bad_values(bad):
    with pytest.raises(ValueError):
        PrecomputeSettings.of(**bad)


def test_check_manifest_refuses_unknown_version_and_hash():
    s = PrecomputeSettings.of(input_size=128)
    good = {"schema_version": SCHEMA_VERSION, "settings": s.to_dict(), "settings_hash": s.settings_hash,
            "source": {"images_dir": "/data/img", "annotations": "/data/a.json"}}
    assert check_manifest(good, "d") == s
    with pytest.raises(ValueError, match="schema version 99.*centernet precompute --images /data/img"):
        check_manifest({**good, "schema_version": 99}, "d")
    with pytest.raises(ValueError, match="settings hash 'abc' is unknown.*centernet precompute"):
        check_manifest({**good, "settings_hash": "abc"}, "d")
    with pytest.raises(ValueError, match="not understood.*centernet precompute"):
        check_manifest({**good, "settings": {**s.to_dict(), "mosaic": True}}, "d")


def test_shards_with_stored_colour_augmentation_are_refused_with_the_rebuild_hint():
    """Version 1 shards stored colour-jittered images (settings color_jitter/lighting_std); colour
    augmentation now runs on the device, so they must be rebuilt."""
    s = PrecomputeSettings.of(input_size=128)
    old = {"schema_version": 1, "settings": {**s.to_dict(), "color_jitter": 0.4, "lighting_std": 0.1},
           "settings_hash": "0123456789abcdef", "source": {"images_dir": "/i", "annotations": "/a.json"}}
    assert SCHEMA_VERSION == 3 and "color_jitter" not in s.to_dict()
    with pytest.raises(ValueError, match="schema version 1 but this reader knows version 3.*centernet precompute"):
        check_manifest(old, "d")
    with pytest.raises(ValueError, match="precompute settings: unknown key 'color_jitter'"):
        PrecomputeSettings.from_dict(old["settings"])


def test_settings_nest_the_sample_config_of_the_in_process_path():
    """One declaration: the precompute settings embed centernet.sample.SampleConfig."""
    from centernet.sample import SampleConfig

    s = PrecomputeSettings.of(input_size=128, max_objs=64, views=2)
    assert s.sample == SampleConfig(input_size=(128, 128), max_objs=64)
    assert s.to_dict()["sample"]["max_objs"] == 64 and s.to_dict()["views"] == 2
    with pytest.raises(ValueError, match="precompute settings: sample: max_objs: expected an integer"):
        PrecomputeSettings.from_dict({"sample": {"max_objs": "many"}})
    with pytest.raises(ValueError, match="shards are square"):
        PrecomputeSettings.of(input_size=(128, 256))


@pytest.mark.parametrize("total", [0, 1, 7, 10, 101])
@pytest.mark.parametrize("parts", [1, 2, 3, 4])
def test_split_covers_each_index_once_balanced(total, parts):
    ranges = [balanced_range(total, parts, i) for i in range(parts)]
    covered = [j for a, b in ranges for j in range(a, b)]
    assert covered == list(range(total))
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_sparse_heatmap_roundtrip_is_exact_and_one_only_at_centers():
    boxes = np.array([[3.2, 4.1, 20.7, 18.0], [10, 10, 30, 31], [0, 0, 5, 5]], np.float32)
    classes = np.array([0, 2, 0])
    t = encode(boxes, classes, 3, (32, 32))
    flat = t["hm"].reshape(-1)
    idx = np.flatnonzero(flat).astype(np.int32)
    dense = dense_heatmap({"hm_index": idx, "hm_value": flat[idx], "hm_shape": (3, 32, 32)})
    assert np.array_equal(dense, t["hm"])
    ones = set(np.flatnonzero(dense.reshape(-1) == 1.0).tolist())
    centers = {int(c) * 32 * 32 + int(i) for c, i, m in zip(classes, t["ind"], t["mask"]) if m}
    assert ones == centers


def _image(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)


def test_letterbox_view_affine_maps_output_boxes_back_to_original():
    s = PrecomputeSettings.of(input_size=128)
    boxes = np.array([[10, 20, 60, 70], [100, 5, 150, 40]], np.float32)
    for rng in (None, *(view_rng(0, 5, v) for v in range(8))):
        image, out, back = letterbox_view(_image(120, 200), boxes, s, rng)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert back.shape == (2, 3)
        recovered = transform_boxes(out, back)  # [N, 4] original px; x1/x2 swapped when flipped
        if rng is None:
            np.testing.assert_allclose(recovered, boxes, atol=1e-3)
        np.testing.assert_allclose(np.sort(recovered[:, [0, 2]], axis=1), boxes[:, [0, 2]], atol=1e-3)
        np.testing.assert_allclose(recovered[:, [1, 3]], boxes[:, [1, 3]], atol=1e-3)


def test_plain_letterbox_of_square_image_is_a_pure_scale():
    s = PrecomputeSettings.of(input_size=128, augment=False, views=1)
    _, out, back = letterbox_view(_image(256, 256), np.array([[0, 0, 256, 256]], np.float32), s, None)
    np.testing.assert_allclose(out, [[0, 0, 32, 32]], atol=1e-4)  # 256 px -> 32 output px
    np.testing.assert_allclose(back, [[8, 0, 0], [0, 8, 0]], atol=1e-4)


def test_views_are_deterministic_per_seed_image_view():
    s = PrecomputeSettings.of(input_size=128)
    img = _image(100, 140)
    boxes = np.array([[10, 10, 50, 60]], np.float32)
    a = letterbox_view(img, boxes, s, view_rng(3, 7, 1))
    b = letterbox_view(img, boxes, s, view_rng(3, 7, 1))
    c = letterbox_view(img, boxes, s, view_rng(3, 7, 2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_shard_rows_roundtrip_and_bytes_are_deterministic(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"image_id": i, "view": 0, "image": bytes([i]) * 10, "affine": np.arange(6) * 0.5 + i,
             "boxes": rng.random(4 * i).astype(np.float32), "classes": np.arange(i, dtype=np.int32),
             "hm_index": np.arange(i, dtype=np.int32), "hm_value": np.ones(i, np.float32),
             "wh": np.zeros(8, np.float32), "reg": np.zeros(8, np.float32),
             "ind": np.arange(4, dtype=np.int64), "mask": np.ones(4, np.uint8)} for i in range(70)]
    data = encode_rows(rows, {"x": 1})
    assert data == encode_rows(rows, {"x": 1})
    path = tmp_path / "part-00000.arrow"
    path.write_bytes(data)
    fs, p = resolve(path)
    reader = open_shard(fs, p)
    assert shard_metadata(reader)["x"] == 1 and reader.num_record_batches == 2
    back = [r for b in range(reader.num_record_batches)
            for r in iter_raw_rows(reader.get_batch(b).slice(1))]  # slices must be respected
    assert [r["image_id"] for r in back] == [i for i in range(70) if i not in (0, 64)]
    for r in back:
        src = rows[r["image_id"]]
        for k in ("boxes", "classes", "hm_index", "ind"):
            assert np.array_equal(r[k], src[k]), k
        assert np.array_equal(r["affine"].reshape(-1), src["affine"]) and r["image"].tobytes() == src["image"]


def test_merge_stats_sums_histograms():
    a = {"samples": 2, "objects": 3, "radius_histogram": {"1": 2, "3": 1},
         "objects_per_image_histogram": {"1": 1, "2": 1}, "center_collisions": 1,
         "samples_with_collisions": 1, "truncated_objects": 0, "samples_truncated": 0, "degenerate_objects": 0}
    m = merge_stats([a, a])
    assert m["radius_histogram"] == {"1": 4, "3": 2} and m["objects"] == 6
    assert m["center_collisions"] == 2 and m["collision_fraction"] == pytest.approx(2 / 6)


@pytest.mark.parametrize("fmt", IMAGE_FORMATS)
def test_stored_image_formats_roundtrip(fmt):
    s = PrecomputeSettings.of(input_size=64, image_format=fmt)
    yy, xx = np.mgrid[0:64, 0:64]
    image = np.stack([xx * 4, yy * 4, (xx + yy) * 2], axis=-1).astype(np.uint8)  # [64, 64, 3] smooth BGR
    data = encode_image(image, s, "image 1 view 0")
    back = decode_image(np.frombuffer(data, np.uint8), fmt, 64)
    assert back.shape == (64, 64, 3) and back.dtype == np.uint8
    if fmt == "jpg":
        assert np.abs(back.astype(int) - image).max() <= 8  # lossy
    else:
        assert np.array_equal(back, image)  # raw and png are lossless
    with pytest.raises(ValueError, match="raw image has 12 bytes, expected 64x64x3"):
        decode_image(np.zeros(12, np.uint8), "raw", 64)
    with pytest.raises(ValueError, match="do not decode"):
        decode_image(b"not an image", "jpg")


def test_owned_rows_do_not_reference_the_record_batch(tmp_path):
    rows = [{"image_id": i, "view": 0, "image": bytes([i]) * 10, "affine": np.zeros(6),
             "boxes": np.ones(4, np.float32), "classes": np.zeros(1, np.int32),
             "hm_index": np.arange(3, dtype=np.int32), "hm_value": np.ones(3, np.float32),
             "wh": np.zeros(2, np.float32), "reg": np.zeros(2, np.float32),
             "ind": np.zeros(1, np.int64), "mask": np.ones(1, np.uint8)} for i in range(3)]
    path = tmp_path / "part-00000.arrow"
    path.write_bytes(encode_rows(rows, {}))
    raw = next(iter_raw_rows(open_shard(*resolve(path)).get_batch(0)))
    owned = own_row(raw)
    for k, v in owned.items():
        if isinstance(v, np.ndarray):
            assert v.base is None and v.flags.writeable, k
            assert np.array_equal(v, raw[k]), k
