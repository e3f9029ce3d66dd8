"""Data: an epoch that decodes every image (the tutorial's way) against an epoch read from the decode cache.

* cold: fracbench's decoder and resize (``decode_image`` + ``resize_square``, what a cache fill
  does per image) over the training images, one after another as the tutorial's
  ``DataLoader(num_workers=0)`` does, nothing kept between rounds. The files themselves are
  probably in the OS page cache (the dataset was just indexed), so this is decode cost, not disk.
* cached: one ``BatchLoader`` pass over the same rows of the memory-mapped cache, including the
  float conversion and normalisation (``to_input``).

The cached benchmark reopens the cache as a later epoch or experiment does and asserts that nothing
is decoded again (``DECODE_COUNTER`` unchanged).
"""

from __future__ import annotations

import numpy as np
import torch
from _benchlib import SIZES, describe, median, run_pedantic, time_calls

from fracbench.data.cache import DECODE_COUNTER, build_cache, resize_square
from fracbench.data.decode import decode_image
from fracbench.data.loader import BatchLoader


def _cold_epoch(paths, size: int):
    def epoch() -> int:
        for p in paths:
            resize_square(decode_image(p).pixels, size)
        return len(paths)

    return epoch


def test_cold_decode_epoch(benchmark, bench_data, measured) -> None:
    paths = [bench_data.path(r) for r in bench_data.rows]
    size = bench_data.cache.size
    times = run_pedantic(benchmark, _cold_epoch(paths, size), group="data-epoch", rounds=SIZES.decode_rounds)
    seconds = median(times)
    measured["cold_epoch_s"] = seconds
    describe(benchmark, data=bench_data.source, images=len(paths), image_size=size,
             epoch_seconds=round(seconds, 4), images_per_s=round(len(paths) / seconds, 1))


def test_cached_epoch(benchmark, bench_data, measured) -> None:
    rows = bench_data.rows
    size = bench_data.cache.size
    before = DECODE_COUNTER["n"]
    # what a second epoch, or the next experiment, does: open the cache for the same manifest and size
    reopened = build_cache(bench_data.manifest, size, progress=False)
    assert reopened.decoded_now == 0
    loader = BatchLoader(reopened, rows, SIZES.batch, 3, shuffle=True, generator=torch.Generator().manual_seed(0))

    def epoch() -> int:
        n = 0
        for x, _, _ in loader:
            n += x.shape[0]
        return n

    times = run_pedantic(benchmark, epoch, group="data-epoch", rounds=SIZES.epoch_rounds, warmup=1)
    assert DECODE_COUNTER["n"] == before, "a cached epoch decoded images"
    seconds = median(times)
    cold = measured.get("cold_epoch_s")
    if cold is None:  # test_cold_decode_epoch deselected: measure the cold side here
        paths = [bench_data.path(r) for r in rows]
        cold = median(time_calls(_cold_epoch(paths, size), rounds=SIZES.decode_rounds))
    describe(benchmark, data=bench_data.source, images=len(rows), image_size=size,
             epoch_seconds=round(seconds, 4), images_per_s=round(len(rows) / seconds, 1),
             cold_epoch_seconds=round(cold, 4), cold_over_cached=round(cold / seconds, 1),
             cache_mib=round(np.prod(reopened.array.shape) / 2**20, 1), decodes_during_epochs=0)
