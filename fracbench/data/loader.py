"""Batches straight from the decode cache: no per-image Python work in the training loop.

A batch is one fancy-indexed read of the memory-mapped uint8 array, converted to float and
normalised as the tutorial does ((x/255 - 0.5) / 0.5), grayscale repeated to ``channels``.
Augmentation works on whole batches on the model's device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from fracbench.data.cache import DecodedCache

KEEP_LIMIT_BYTES = 1 << 30  # the most a kept evaluation set may hold (1 GiB of float batches)


class BatchLoader:
    """Iterates (x, y, rows) over ``rows`` of a decoded cache."""

    def __init__(self, cache: DecodedCache, rows: np.ndarray, batch_size: int, channels: int = 3,
                 shuffle: bool = False, generator: torch.Generator | None = None,
                 rank: int = 0, world_size: int = 1, keep: bool = False) -> None:
        self.cache = cache
        # keep: a fixed (unshuffled) evaluation set read and converted once, its batches reused on every pass
        # while they fit KEEP_LIMIT_BYTES; the batches are never written to (callers make new tensors)
        self.keep = keep and not shuffle
        self._kept: list[tuple[torch.Tensor, torch.Tensor, np.ndarray]] | None = None
        self.rows = np.asarray(rows, dtype=np.int64)
        self.batch_size = batch_size
        self.channels = channels
        self.shuffle = shuffle
        self.generator = generator
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return math.ceil(self._per_rank() / self.batch_size)

    def _per_rank(self) -> int:
        return math.ceil(len(self.rows) / self.world_size)

    def epoch_rows(self) -> np.ndarray:
        rows = self.rows
        if self.shuffle:
            perm = torch.randperm(len(rows), generator=self.generator).numpy()
            rows = rows[perm]
        if self.world_size > 1:
            # as DistributedSampler: pad by wrapping, then take every world_size-th row
            total = self._per_rank() * self.world_size
            rows = np.concatenate([rows, rows[: total - len(rows)]])[self.rank::self.world_size]
        return rows

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
        if self._kept is not None:
            yield from self._kept
            return
        if not self.keep:
            yield from self._read()
            return
        kept: list[tuple[torch.Tensor, torch.Tensor, np.ndarray]] = []
        size, fits = 0, True
        for batch in self._read():
            size += batch[0].element_size() * batch[0].nelement()
            fits = fits and size <= KEEP_LIMIT_BYTES
            if fits:
                kept.append(batch)
            yield batch
        self._kept = kept if fits else None  # a pass broken off early keeps nothing

    def _read(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
        rows = self.epoch_rows()
        for start in range(0, len(rows), self.batch_size):
            idx = rows[start:start + self.batch_size]
            order = np.argsort(idx, kind="stable")  # sorted reads are kinder to the page cache
            block = np.empty((len(idx),) + self.cache.array.shape[1:], np.uint8)
            block[order] = self.cache.array[idx[order]]
            x = to_input(torch.from_numpy(block), self.channels)
            y = torch.from_numpy(self.cache.labels[idx])
            yield x, y, idx


def to_input(u8: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, H, W) uint8 -> (B, C, H, W) float normalised to [-1, 1] as the tutorial's Normalize(0.5, 0.5)."""
    x = u8.to(torch.float32).div_(127.5).sub_(1.0).unsqueeze(1)
    return x.expand(-1, channels, -1, -1).contiguous() if channels > 1 else x


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Horizontal flip of each image with probability 1/2 (the tutorial's RandomHorizontalFlip)."""
    mask = torch.rand(x.shape[0], generator=generator) < 0.5
    if mask.any():
        m = mask.to(x.device)
        x = torch.where(m[:, None, None, None], x.flip(-1), x)
    return x


def radiograph_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip, rotation within +-10 degrees, scale 0.9-1.1, contrast 0.8-1.2 and brightness +-0.1."""
    b = x.shape[0]
    x = random_flip(x, generator)
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(10)
    scale = 0.9 + torch.rand(b, generator=generator) * 0.2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros(b)], 1), torch.stack([sin, cos, torch.zeros(b)], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    contrast = (0.8 + torch.rand(b, generator=generator) * 0.4).to(x.device)[:, None, None, None]
    bright = ((torch.rand(b, generator=generator) * 2 - 1) * 0.1).to(x.device)[:, None, None, None]
    return (x * contrast + bright).clamp_(-1, 1)


AUGMENTS = {"none": None, "flip": random_flip, "radiograph": radiograph_augment}
