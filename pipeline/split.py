"""How samples are divided among DDP ranks and loader workers: contiguous, balanced ranges.

One rule for every data source: rank ``r`` of ``R`` takes the ``r``-th of ``R`` contiguous ranges of
the epoch's sample order (sizes differ by at most one), and loader worker ``w`` of ``W`` the same
split of its rank's range. Every sample is seen exactly once per epoch, nothing is padded or
dropped (``torch.utils.data.DistributedSampler`` pads by repeating samples, which would count
validation images twice, or drops them with ``drop_last``).
"""

from __future__ import annotations


def balanced_range(total: int, parts: int, index: int) -> tuple[int, int]:
    """``[start, stop)`` of part ``index`` when ``total`` items are cut into ``parts`` balanced ranges."""
    if parts < 1 or not 0 <= index < parts:
        raise ValueError(f"index must be in 0..parts-1, got index={index!r} parts={parts!r}")
    base, extra = divmod(total, parts)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def shares(total: int, parts: int) -> list[int]:
    """Items each of ``parts`` ranges gets (balanced; differ by at most one)."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts!r}")
    return [b - a for a, b in (balanced_range(total, parts, r) for r in range(parts))]
