"""CPU batch buffers kept between batches, handed out again once nothing outside holds them.

On the CPU large blocks go back to the OS when freed, so a fresh batch buffer (25 MB of images,
168 MB of heatmaps at batch 32, 512x512, 80 classes) pays page faults and a zero fill every batch;
CUDA's caching allocator avoids that for device memory, :class:`KeptBuffers` for these CPU buffers.
A kept buffer is reused only when no tensor or view of it is alive outside (its storage's use
count), so a batch the caller still holds is never overwritten.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class Kept:
    """A buffer handed out by :meth:`KeptBuffers.take`: ``tensor`` ``[N]`` (a view: holding it
    keeps the buffer busy; uninitialised when new, else what its last user left in it) and
    ``state``, the caller's note about those contents, kept with the buffer (``None`` when new)."""

    tensor: Tensor
    slot: _Slot

    @property
    def state(self) -> Any:
        return self.slot.state

    @state.setter
    def state(self, value: Any) -> None:
        self.slot.state = value


@dataclass
class _Slot:
    buffer: Tensor  # [N]
    storage: int  # its StorageImpl, for the use count
    free_uses: int  # the storage's use count while only this slot holds it
    state: Any = None

    def is_free(self) -> bool:
        return torch._C._storage_Use_Count(self.storage) == self.free_uses


class KeptBuffers:
    """Up to ``slots`` CPU buffers (the most recently made), reused when free; thread-safe."""

    def __init__(self, slots: int = 2):
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots!r}")
        self.slots = int(slots)
        self._slots: list[_Slot] = []
        self._lock = threading.Lock()

    def take(self, numel: int, dtype: torch.dtype) -> Kept:
        """A ``[numel]`` ``dtype`` CPU buffer nobody else holds: a kept one, else a new one (kept
        in place of the oldest)."""
        with self._lock:
            for slot in self._slots:
                if slot.buffer.numel() == numel and slot.buffer.dtype == dtype and slot.is_free():
                    return Kept(slot.buffer.view(numel), slot)
            buffer = torch.empty(numel, dtype=dtype)  # [N]
            storage = buffer.untyped_storage()._cdata
            slot = _Slot(buffer, storage, torch._C._storage_Use_Count(storage))
            self._slots = [*self._slots, slot][-self.slots:]
            return Kept(buffer.view(numel), slot)
