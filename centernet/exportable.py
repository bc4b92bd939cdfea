"""Graph-export wrappers: a detector as a module with plain tensor outputs (ONNX, TorchScript).

``HeadOutputs`` gives the prediction heads of the final stack as a tuple; ``DecodedOutputs`` also
runs the peak extraction (3x3 max-pool, top-K over C*H*W) of :func:`centernet.decode.decode`, so
the graph ends in boxes, scores and classes. Both take the normalised float input
(:func:`centernet.transforms.normalize_image` of the letterboxed BGR image).
"""

from __future__ import annotations

from torch import Tensor, nn

from centernet.decode import decode

HEAD_NAMES = ("hm", "wh", "reg")
DECODED_NAMES = ("boxes", "scores", "classes")


class HeadOutputs(nn.Module):
    """x ``[B, 3, H, W]`` -> (hm logits ``[B, C, H/4, W/4]``, wh ``[B, 2, ...]``, reg ``[B, 2, ...]``)
    of the last stack."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.model(x)[-1]  # the last stack's heads
        return out["hm"], out["wh"], out["reg"]


class DecodedOutputs(nn.Module):
    """x ``[B, 3, H, W]`` -> (boxes ``[B, K, 4]`` x1 y1 x2 y2 in input pixels, scores ``[B, K]``,
    classes ``[B, K]`` int64 contiguous indices), sorted by score."""

    def __init__(self, model: nn.Module, k: int = 100, down_ratio: int = 4):
        super().__init__()
        self.model = model
        self.k = int(k)
        self.down_ratio = int(down_ratio)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.model(x)[-1]
        dets = decode(out["hm"], out["wh"], out["reg"], k=self.k)  # [B, K, 6] output-map px
        return dets[..., :4] * self.down_ratio, dets[..., 4], dets[..., 5].long()
