"""The official CenterNet colour augmentation, batched in torch and fused with the input normalisation.

Official (``src/lib/utils/image.py`` ``color_aug``, applied in ``ctdet.py`` to the float32 BGR image
after ``/ 255.`` and before ``(x - mean) / std``; training only): with ``gs`` the grayscale of the
image (``cv2.COLOR_BGR2GRAY`` weights 0.114 B + 0.587 G + 0.299 R) and ``m`` its mean, both taken
once from the image *before* any step, the three steps below run in a random order, each with its
own ``alpha = 1 + U(-0.4, 0.4)``, then PCA lighting adds ``eigvec @ (eigval * N(0, 0.1)^3)`` to the
B, G, R channels. Nothing is clipped.

- brightness: ``x <- alpha * x``
- contrast:   ``x <- alpha * x + (1 - alpha) * m``
- saturation: ``x <- alpha * x + (1 - alpha) * gs``

Here: identical formulas, constants (``EIG_VAL``, ``EIG_VEC``, 0.4, 0.1, the gray weights), the
per-sample random order, the per-step draws, no clipping, and the place in the pipeline (between
``/ 255`` and the COCO standardisation, training batches only). Different: (1) the random numbers
come from a seeded ``torch.Generator`` on the CPU (one draw per sample of the order, three alphas
and three lighting weights), not from numpy's ``RandomState`` and Python's ``random.shuffle``, so
the same seed does not give the official run's draws; (2) because every step is affine in ``x``
with ``gs`` and ``m`` fixed, the steps in their order are folded into one map per sample,
``x' = P x + Q m + R gs + L`` (:func:`color_coefficients`, float64), and that map is fused with
``/ 255`` and ``(x - mean) / std`` into one pass over the uint8 batch on the device
(:func:`to_network_input`). The result equals the official step-by-step float32 computation to
float32 rounding (not bit for bit); the parameters are the same on every device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from centernet.transforms import COCO_MEAN_BGR, COCO_STD_BGR, normalize_batch

# Official PCA lighting constants (``_eig_val``/``_eig_vec`` of the official datasets/dataset/coco.py,
# which ctdet.py passes to ``color_aug``), applied to the BGR channels as the official code does.
EIG_VAL = np.array([0.2141788, 0.01817699, 0.00341571], dtype=np.float32)
EIG_VEC = np.array([[-0.58752847, -0.69563484, 0.41340352],
                    [-0.5832747, 0.00994535, -0.81221408],
                    [-0.56089297, 0.71832671, 0.41158938]], dtype=np.float32)
GRAY_WEIGHTS_BGR = (0.114, 0.587, 0.299)  # cv2.COLOR_BGR2GRAY
COLOR_JITTER = 0.4  # official ``var`` of brightness, contrast and saturation
LIGHTING_STD = 0.1  # official ``alphastd``
BRIGHTNESS, CONTRAST, SATURATION = 0, 1, 2  # op ids in ColorParams.order / columns of ColorParams.alpha


@dataclass(frozen=True)
class ColorParams:
    """Random parameters of the colour augmentation of a batch of B images (CPU tensors).

    ``order`` ``[B, 3]`` int64: each row a permutation of (BRIGHTNESS, CONTRAST, SATURATION), the
    order the steps run in. ``alpha`` ``[B, 3]`` float64: the alpha of each op, by op id (not by
    position). ``lighting`` ``[B, 3]`` float64: the N(0, std) weights of the three PCA components.
    """

    order: Tensor
    alpha: Tensor
    lighting: Tensor

    def __post_init__(self) -> None:
        b = self.order.shape[0]
        for name in ("order", "alpha", "lighting"):
            if tuple(getattr(self, name).shape) != (b, 3):
                raise ValueError(f"ColorParams.{name} must be [B, 3] with B={b}, got "
                                 f"{tuple(getattr(self, name).shape)}")
        if b and not torch.equal(self.order.sort(dim=1).values, torch.arange(3).expand(b, 3)):
            raise ValueError(f"ColorParams.order rows must be permutations of (0, 1, 2), got {self.order.tolist()}")


def draw_color_params(batch_size: int, generator: torch.Generator, jitter: float = COLOR_JITTER,
                      lighting_std: float = LIGHTING_STD) -> ColorParams:
    """Per-sample parameters: a uniform random order, alphas ``1 + U(-jitter, jitter)``, lighting
    weights ``N(0, lighting_std)``, all from ``generator`` (a CPU generator)."""
    order = torch.rand(batch_size, 3, generator=generator, dtype=torch.float64).argsort(dim=1)  # [B, 3]
    alpha = 1.0 + jitter * (2.0 * torch.rand(batch_size, 3, generator=generator, dtype=torch.float64) - 1.0)
    lighting = lighting_std * torch.randn(batch_size, 3, generator=generator, dtype=torch.float64)
    return ColorParams(order, alpha, lighting)


def color_coefficients(params: ColorParams) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The official steps in each sample's order folded into ``x' = P x + Q m + R gs + L``.

    Returns float64 CPU tensors ``P``, ``Q``, ``R`` ``[B]`` and ``L`` ``[B, 3]`` (the lighting
    shift of the B, G, R channels). Tracking ``x_k = p x + q m + r gs`` through the steps:
    brightness ``(p, q, r) -> a (p, q, r)``; contrast ``-> (a p, a q + 1 - a, a r)``; saturation
    ``-> (a p, a q, a r + 1 - a)``.
    """
    b = params.order.shape[0]
    p = torch.ones(b, dtype=torch.float64)  # [B]
    q, r = torch.zeros_like(p), torch.zeros_like(p)
    for step in range(3):
        op = params.order[:, step]  # [B]
        a = params.alpha.to(torch.float64).gather(1, op[:, None])[:, 0]  # [B]
        q = a * q + torch.where(op == CONTRAST, 1.0 - a, 0.0)
        r = a * r + torch.where(op == SATURATION, 1.0 - a, 0.0)
        p = a * p
    weights = params.lighting.to(torch.float64) * torch.from_numpy(EIG_VAL.astype(np.float64))  # [B, 3]
    shift = weights @ torch.from_numpy(EIG_VEC.astype(np.float64)).T  # [B, 3]: eigvec @ (eigval * alpha)
    return p, q, r, shift


def _gray(images: Tensor) -> Tensor:
    """BGR ``[B, 3, H, W]`` (uint8 or float) -> ``[B, H, W]`` float32, cv2's BGR2GRAY weights."""
    wb, wg, wr = GRAY_WEIGHTS_BGR
    gray = torch.mul(images[:, 0], wb)  # [B, H, W] float32
    return gray.add_(images[:, 1], alpha=wg).add_(images[:, 2], alpha=wr)


def color_augment(images: Tensor, params: ColorParams) -> Tensor:
    """The official ``color_aug`` on float BGR images in [0, 1] ``[B, 3, H, W]`` -> ``[B, 3, H, W]``
    float32 (not clipped), with the given per-sample parameters."""
    if not images.is_floating_point():
        raise ValueError(f"color_augment takes float images in [0, 1], got dtype {images.dtype}")
    p, q, r, shift = (t.to(images.device, torch.float32) for t in color_coefficients(params))
    x = images.float()  # [B, 3, H, W]
    gray = _gray(x)  # [B, H, W]
    offset = q[:, None] * gray.mean(dim=(1, 2))[:, None] + shift  # [B, 3]
    return x * p.view(-1, 1, 1, 1) + gray[:, None] * r.view(-1, 1, 1, 1) + offset[:, :, None, None]


def _to_device(values: Tensor, device: torch.device) -> Tensor:
    """A small CPU tensor on ``device`` without a stream sync (pinned, non-blocking, for CUDA)."""
    if device.type == "cuda":
        values = values.pin_memory()
    return values.to(device, non_blocking=True)


def to_network_input(images: Tensor, params: ColorParams | None = None, *,
                     memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
    """uint8 BGR ``[B, 3, H, W]`` (any strides, e.g. channels-last) -> float32 ``[B, 3, H, W]`` in
    ``memory_format`` (contiguous unless asked, e.g. ``torch.channels_last`` for a channels-last
    model): ``/ 255``, with ``params`` the colour augmentation, then ``(x - mean) / std`` (COCO BGR
    statistics), on the images' device. Without ``params``: :func:`centernet.transforms.normalize_batch`."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 [B, 3, H, W], got {images.dtype} {tuple(images.shape)}")
    if params is None:
        return normalize_batch(images, memory_format)
    if params.order.shape[0] != images.shape[0]:
        raise ValueError(f"params are for {params.order.shape[0]} images, the batch has {images.shape[0]}")
    p, q, r, shift = color_coefficients(params)
    mean64 = torch.from_numpy(COCO_MEAN_BGR.astype(np.float64))  # [3]
    std64 = torch.from_numpy(COCO_STD_BGR.astype(np.float64))  # [3]
    # z = (P u/255 + Q m/255 + R g/255 + L - mean) / std with u, g = gray(u), m = mean(g) in 0..255
    coeffs = torch.stack([p[:, None] / (255.0 * std64), r[:, None] / (255.0 * std64),
                          q[:, None] / (255.0 * std64), (shift - mean64) / std64], dim=1)  # [B, 4, 3]
    scale, gray_w, mean_w, const = _to_device(coeffs.to(torch.float32), images.device).unbind(1)  # [B, 3]
    out = torch.empty(images.shape, dtype=torch.float32, device=images.device,
                      memory_format=memory_format)  # [B, 3, H, W]
    out.copy_(images)  # float32 0..255 (one pass over any input strides)
    gray = _gray(out)  # [B, H, W]
    offset = const + mean_w * gray.mean(dim=(1, 2))[:, None]  # [B, 3]
    torch.addcmul(offset[:, :, None, None], out, scale[:, :, None, None], out=out)  # in place
    return out.addcmul_(gray[:, None], gray_w[:, :, None, None])


class ColorAugment:
    """Training-time colour augmentation: ``augment(images_uint8, image_ids, views)`` -> augmented,
    normalised float32 images (:func:`to_network_input`).

    Each sample's parameters come from a CPU ``torch.Generator`` seeded by (seed, epoch, image id,
    view): they do not depend on the batch, loader worker or DDP rank the sample lands on, so a run
    is reproducible and N workers with batch B see exactly the colours 1 worker with batch N*B sees
    (as the geometric augmentation, fixed per (seed, image id, view) in the shards). Call
    :meth:`set_epoch` each epoch. ``jitter``/``lighting_std`` default to the official 0.4/0.1. Use it
    for training batches only (:func:`centernet.engine.move_batch` takes it as ``color``).
    """

    def __init__(self, seed: int = 0, *, jitter: float = COLOR_JITTER, lighting_std: float = LIGHTING_STD):
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
        if not lighting_std >= 0.0:
            raise ValueError(f"lighting_std must be >= 0, got {lighting_std!r}")
        self.seed = int(seed)
        self.jitter, self.lighting_std = float(jitter), float(lighting_std)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def draw(self, image_ids: Sequence[int], views: Sequence[int] | None = None) -> ColorParams:
        """The parameters of the samples (image id, view) of this epoch (views default to 0)."""
        views = [0] * len(image_ids) if views is None else views
        if len(views) != len(image_ids):
            raise ValueError(f"got {len(image_ids)} image ids but {len(views)} views")
        generator = torch.Generator()
        parts = []
        for image_id, view in zip(image_ids, views):
            i, v = int(image_id), int(view)
            words = np.random.SeedSequence([self.seed & 0xFFFFFFFF, self.epoch, i & 0xFFFFFFFF,
                                            (i >> 32) & 0xFFFFFFFF, v & 0xFFFFFFFF]).generate_state(2)
            generator.manual_seed(int(words[0]) << 31 ^ int(words[1]))
            parts.append(draw_color_params(1, generator, self.jitter, self.lighting_std))
        return ColorParams(*(torch.cat([getattr(p, f) for p in parts]).reshape(-1, 3)
                             for f in ("order", "alpha", "lighting")))

    def __call__(self, images: Tensor, image_ids: Sequence[int], views: Sequence[int] | None = None, *,
                 memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
        """uint8 BGR ``[B, 3, H, W]`` -> augmented, normalised float32 ``[B, 3, H, W]`` in ``memory_format``."""
        return to_network_input(images, self.draw(image_ids, views), memory_format=memory_format)
