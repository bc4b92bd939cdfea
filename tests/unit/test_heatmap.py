"""The device renderer is bit-identical to ``encode``'s heatmap; collation keeps targets sparse; a
training step through the sparse path equals the dense path."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from centernet.batch import collate_samples, dense_heatmaps
from centernet.engine import move_batch, train_step
from centernet.heatmap import HeatmapCanvas, dense_heatmap, render_heatmaps
from centernet.losses import DEFAULT_LOSS_WEIGHTS, CenterNetLoss
from centernet.sample import SampleConfig, letterbox_view, make_sample
from centernet.synthetic import render_image
from centernet.targets import encode, encode_sparse
from centernet.transforms import normalize_image

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                   reason="needs a CUDA device"))]


def _boxes(rng: np.random.Generator, n: int, out_hw: tuple[int, int], num_classes: int, spread: float = 1.0):
    """``n`` boxes in output pixels, some reaching over the borders, sizes 0.5..60 px."""
    h, w = out_hw
    size = np.exp(rng.uniform(np.log(0.5), np.log(60), size=(n, 2)))
    center = rng.uniform(-6, 6, size=(n, 2)) + rng.uniform(0, 1, size=(n, 2)) * spread * [w, h]
    boxes = np.concatenate([center - size / 2, center + size / 2], axis=1).astype(np.float32)
    return boxes, rng.integers(0, num_classes, size=n)


def _scenes(rng: np.random.Generator, out_hw: tuple[int, int], num_classes: int):
    """(boxes, classes) of: an empty image, many classes, a pile of overlapping same-class objects,
    objects on every border and corner, more objects than max_objs, tiny (radius 0) objects."""
    h, w = out_hw
    yield np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    yield _boxes(rng, 40, out_hw, num_classes)
    pile, _ = _boxes(rng, 30, out_hw, num_classes, spread=0.15)
    yield pile, np.full(30, num_classes - 1)
    corners = np.array([[-8, -8, 6, 5], [w - 4, -3, w + 9, 7], [-5, h - 3, 4, h + 6], [w - 6, h - 6, w + 4, h + 3],
                        [w / 2 - 3, -9, w / 2 + 3, 2], [-2, h / 2, 1.5, h / 2 + 9], [0, 0, w - 1, h - 1]], np.float32)
    yield corners, rng.integers(0, 2, size=len(corners))
    yield _boxes(rng, 50, out_hw, 2)  # 50 objects, max_objs 16 in the test: 34 truncated
    tiny = np.array([[3, 3, 3.6, 3.4], [10.2, 4.1, 10.9, 5.0], [3.1, 3.1, 3.4, 3.3]], np.float32)
    yield tiny, np.array([0, 1, 0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("out_hw, num_classes, variant", [((32, 32), 80, "official"), ((24, 40), 3, "corrected")])
def test_renderer_is_bit_identical_to_encode(device, out_hw, num_classes, variant):
    rng = np.random.default_rng(7)
    samples, dense = [], []
    for _ in range(3):
        for boxes, classes in _scenes(rng, out_hw, num_classes):
            kw = dict(max_objs=16, radius_variant=variant)
            sparse = encode_sparse(boxes, classes, num_classes, out_hw, **kw)
            samples.append({**sparse, "hm_shape": (num_classes, *out_hw),
                            "image": np.zeros((3, 4 * out_hw[0], 4 * out_hw[1]), np.uint8)})
            dense.append(encode(boxes, classes, num_classes, out_hw, **kw)["hm"])
    batch = collate_samples(samples)
    assert "hm" not in batch and batch["hm_index"].dtype == torch.int64
    rendered = dense_heatmaps(batch, device)  # [B, C, H, W]
    assert rendered.device.type == device and rendered.shape == (len(dense), num_classes, *out_hw)
    expected = torch.from_numpy(np.stack(dense))
    assert torch.equal(rendered.cpu().view(torch.int32), expected.view(torch.int32))  # bit for bit
    assert int((rendered == 1.0).sum()) > 0 and float(rendered.max()) == 1.0


@pytest.mark.parametrize("device", DEVICES)
def test_renderer_takes_the_max_of_repeated_pixels_in_any_order(device):
    index = torch.tensor([5, 2, 5, 7, 2, 5], device=device)
    value = torch.tensor([0.25, 0.5, 0.75, 1.0, 0.125, 0.5], device=device)
    for perm in (torch.arange(6), torch.tensor([5, 4, 3, 2, 1, 0]), torch.tensor([2, 0, 4, 1, 5, 3])):
        out = render_heatmaps(index[perm.to(device)], value[perm.to(device)], (2, 1, 2, 2))
        assert out.tolist() == [[[[0.0, 0.0], [0.5, 0.0]]], [[[0.0, 0.75], [0.0, 1.0]]]]



def _sparse_batch(rng: np.random.Generator, b: int, shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Random sparse heatmaps of ``b`` samples: ``[P]`` flat indices (some repeated) and values in (0, 1]."""
    numel = b * shape[0] * shape[1] * shape[2]
    index = torch.from_numpy(rng.integers(0, numel, size=int(rng.integers(1, numel // 3))))  # [P] int64
    value = torch.from_numpy(rng.uniform(0.01, 1.0, size=len(index)).astype(np.float32))  # [P]
    return index, value


def test_canvas_reuses_dropped_buffers_and_equals_fresh_renders():
    rng = np.random.default_rng(11)
    canvas = HeatmapCanvas(slots=2)
    shape = (3, 2, 4, 5)
    first = canvas.render(*_sparse_batch(rng, *shape[:1], shape[1:]), shape)
    address = first.data_ptr()
    del first
    for _ in range(4):  # dropped each time: the one buffer comes back, cleared where it was written
        index, value = _sparse_batch(rng, 3, shape[1:])
        out = canvas.render(index, value, shape)
        assert out.data_ptr() == address
        assert torch.equal(out.view(torch.int32), render_heatmaps(index, value, shape).view(torch.int32))
        del out
    empty = canvas.render(torch.zeros(0, dtype=torch.int64), torch.zeros(0), shape)
    assert empty.data_ptr() == address and int(empty.count_nonzero()) == 0


def test_canvas_never_overwrites_a_batch_still_held():
    rng = np.random.default_rng(12)
    canvas = HeatmapCanvas(slots=2)
    shape = (2, 3, 4, 4)
    (ia, va), (ib, vb), (ic, vc), (id_, vd) = [_sparse_batch(rng, 2, shape[1:]) for _ in range(4)]
    a, b = canvas.render(ia, va, shape), canvas.render(ib, vb, shape)
    b_address = b.data_ptr()
    row = b[1]  # a view keeps its batch's buffer busy
    del b
    c = canvas.render(ic, vc, shape)  # a and b busy: a third buffer; the canvas keeps b's and c's
    assert len({a.data_ptr(), b_address, c.data_ptr()}) == 3
    assert torch.equal(row, render_heatmaps(ib, vb, shape)[1])
    del row
    d = canvas.render(id_, vd, shape)  # b's buffer is free now
    assert d.data_ptr() == b_address
    for out, (index, value) in ((a, (ia, va)), (c, (ic, vc)), (d, (id_, vd))):
        assert torch.equal(out, render_heatmaps(index, value, shape))


def test_canvas_is_exact_after_in_place_writes_to_a_batch_or_its_index():
    rng = np.random.default_rng(13)
    canvas = HeatmapCanvas(slots=1)
    shape = (1, 2, 3, 3)
    index, value = _sparse_batch(rng, 1, shape[1:])
    out = canvas.render(index, value, shape)
    out[0, 1].fill_(7.0)  # pixels the render did not write
    address = out.data_ptr()
    del out
    index2, value2 = _sparse_batch(rng, 1, shape[1:])
    out = canvas.render(index2, value2, shape)
    assert out.data_ptr() == address and torch.equal(out, render_heatmaps(index2, value2, shape))
    del out
    index2.fill_(0)  # the caller's index list changed in place: the canvas cleared from its own copy
    index3, value3 = _sparse_batch(rng, 1, shape[1:])
    assert torch.equal(canvas.render(index3, value3, shape), render_heatmaps(index3, value3, shape))
    with pytest.raises(ValueError, match="slots must be >= 1, got 0"):
        HeatmapCanvas(slots=0)

def test_dense_heatmap_of_one_sample_and_its_errors():
    boxes, classes = np.array([[2, 3, 12, 9], [4, 4, 9, 8]], np.float32), np.array([1, 1])
    sparse = encode_sparse(boxes, classes, 2, (16, 16))
    sample = {**sparse, "hm_shape": (2, 16, 16)}
    assert np.array_equal(dense_heatmap(sample), encode(boxes, classes, 2, (16, 16))["hm"])
    with pytest.raises(ValueError, match=r"must lie in 0..255 for hm_shape \(1, 16, 16\), got 325..393"):
        dense_heatmap({**sample, "hm_shape": (1, 16, 16)})


def test_collate_keeps_targets_sparse_and_names_bad_samples():
    image = np.zeros((3, 8, 8), np.uint8)
    good = {"image": image, "hm_index": np.array([0, 5]), "hm_value": np.array([1.0, 0.5], np.float32),
            "hm_shape": (2, 2, 2), "ind": np.zeros(4, np.int64)}
    batch = collate_samples([good, good])
    assert batch["hm_index"].tolist() == [0, 5, 8, 13] and batch["hm_shape"] == (2, 2, 2)
    assert batch["image"].shape == (2, 3, 8, 8) and batch["image"].dtype == torch.uint8
    assert batch["ind"].shape == (2, 4)
    with pytest.raises(ValueError, match="sample 1 has hm_shape"):
        collate_samples([good, {**good, "hm_shape": (3, 2, 2)}])
    with pytest.raises(ValueError, match=r"sample 1: hm_index values must lie in 0..7 .* got 0..8"):
        collate_samples([good, {**good, "hm_index": np.array([0, 8])}])
    with pytest.raises(ValueError, match="sample 0: hm_index"):
        collate_samples([{**good, "hm_value": np.ones(3, np.float32)}])



def test_collated_images_go_to_kept_buffers_only_when_the_last_batch_is_dropped():
    rng = np.random.default_rng(14)

    def samples() -> list[dict[str, torch.Tensor]]:  # channels-last uint8 views, as the readers give
        return [{"image": torch.from_numpy(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).permute(2, 0, 1)}
                for _ in range(3)]

    first_samples, second_samples = samples(), samples()
    first = collate_samples(first_samples)["image"]  # [3, 3, 6, 5]
    second = collate_samples(second_samples)["image"]  # first still held: another buffer
    assert first.data_ptr() != second.data_ptr() and first.stride() == (90, 1, 15, 3)
    for batch, group in ((first, first_samples), (second, second_samples)):
        assert torch.equal(batch, torch.stack([s["image"] for s in group]))
    address = first.data_ptr()
    del first
    third_samples = samples()
    third = collate_samples(third_samples)["image"]
    assert third.data_ptr() == address and torch.equal(third, torch.stack([s["image"] for s in third_samples]))
    assert torch.equal(second, torch.stack([s["image"] for s in second_samples]))

def test_training_step_through_the_sparse_path_equals_the_dense_path():
    from centernet.models import build_model

    config = SampleConfig(input_size=(64, 96))
    sparse_samples, dense_samples = [], []
    for i in range(4):
        rng = np.random.default_rng(i)
        image, objects = render_image(rng, 80, 120, 4, 2, (10, 40))
        boxes = np.array([b for b, _ in objects], np.float32)
        classes = np.array([c for _, c in objects])
        sparse_samples.append(make_sample(image, boxes, classes, 2, config, np.random.default_rng(100 + i)))
        # the dense path as the loaders did it before: dense encode + per-sample normalisation on the CPU
        view, out_boxes, _ = letterbox_view(image, boxes, config.input_size, config.down_ratio,
                                            np.random.default_rng(100 + i))
        dense_samples.append({**encode(out_boxes, classes, 2, config.output_size), "image": normalize_image(view)})
    dense = {k: torch.from_numpy(np.stack([s[k] for s in dense_samples])) for k in dense_samples[0]}
    sparse = move_batch(collate_samples(sparse_samples), "cpu")
    assert torch.equal(sparse["hm"], dense["hm"])
    torch.testing.assert_close(sparse["image"], dense["image"], atol=1e-5, rtol=0)
    torch.manual_seed(0)
    model = build_model("resnet18", 2)
    twin = copy.deepcopy(model)
    kw = dict(criterion=CenterNetLoss(), weights=DEFAULT_LOSS_WEIGHTS)
    a = train_step(model, sparse, optimizer=torch.optim.Adam(model.parameters(), 1e-3), **kw)
    b = train_step(twin, dense, optimizer=torch.optim.Adam(twin.parameters(), 1e-3), **kw)
    assert not a.skipped and not b.skipped
    for name in ("hm", "wh", "reg"):
        assert a.losses[name] == pytest.approx(b.losses[name], rel=1e-5, abs=1e-6), name
    assert a.total == pytest.approx(b.total, rel=1e-5)
    assert a.losses["hm"] > 0 and a.losses["wh"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pinned_channels_last_batch_on_cuda_equals_the_cpu_result():
    from centernet.color import ColorAugment

    config = SampleConfig(input_size=(64, 64))
    rng = np.random.default_rng(3)
    samples = []
    for i in range(4):
        image, objects = render_image(rng, 70, 90, 5, 3, (8, 40))
        boxes = np.array([b for b, _ in objects], np.float32)
        sample = make_sample(image, boxes, np.array([c for _, c in objects]), 3, config, np.random.default_rng(i))
        samples.append({**sample, "image_id": 10 + i})
    batch = collate_samples(samples)
    pinned = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    assert pinned["image"].is_pinned() and pinned["image"].stride() == batch["image"].stride()
    on_gpu = move_batch(pinned, "cuda", color=ColorAugment(5))
    on_cpu = move_batch(batch, "cpu", color=ColorAugment(5))
    assert torch.equal(on_gpu["hm"].cpu().view(torch.int32), on_cpu["hm"].view(torch.int32))
    assert on_gpu["image"].is_contiguous() and on_gpu["image"].device.type == "cuda"
    torch.testing.assert_close(on_gpu["image"].cpu(), on_cpu["image"], atol=1e-4, rtol=1e-5)
