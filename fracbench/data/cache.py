"""Decode cache: each image decoded once per (manifest, image size), kept in a memory-mapped array.

The tutorial pipeline decodes and resizes every JPEG in every epoch; fracbench decodes each image
once into ``<cache>/decoded/<key>.u8`` (N x size x size uint8, in manifest row order) and every
later epoch and experiment reads from it. The key hashes the manifest fingerprint, the image size
and the preprocessing version, so a change to either makes a new cache. Filling is resumable: a
bitmap of finished rows is saved as the work goes, and a killed fill restarts where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fracbench.data.manifest import Manifest
from fracbench.io import atomic_write_bytes, atomic_write_json
from fracbench.paths import cache_dir

PREPROCESS_VERSION = 1  # bump when decoding or resizing changes
CHUNK = 256  # rows between saves of the progress bitmap

# counts decodes done by this process, so a test can prove a second epoch decodes nothing
DECODE_COUNTER = {"n": 0}


def resize_square(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size, ignoring aspect ratio as the tutorial's Resize((150, 150)) does."""
    from PIL import Image

    if pixels.shape == (size, size):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0),
                      dtype=np.uint8)


@dataclass
class DecodedCache:
    """Decoded, resized images of one manifest, aligned with its rows."""

    manifest: Manifest
    size: int
    path: Path
    array: np.ndarray  # (N, size, size) uint8 memmap
    labels: np.ndarray  # (N,) int64
    splits: np.ndarray  # (N,) str
    failed: dict[int, str] = field(default_factory=dict)  # row -> reason (decoded as zeros)
    decoded_now: int = 0  # images decoded by this call (0 when the cache was complete)

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)


def cache_key(manifest: Manifest, size: int) -> str:
    return hashlib.sha256(f"{manifest.fingerprint}|{size}|v{PREPROCESS_VERSION}".encode()).hexdigest()[:20]


def _decode_row(path: Path, size: int) -> tuple[np.ndarray | None, str]:
    from fracbench.data.decode import DecodeError, decode_image

    try:
        px = decode_image(path).pixels
    except DecodeError as exc:
        return None, exc.reason
    return resize_square(px, size), ""


def build_cache(manifest: Manifest, size: int, root: Path | None = None, progress: bool = True,
                workers: int = 2) -> DecodedCache:
    """Return the cache for (manifest, size), decoding only rows not yet done."""
    from fracbench.progress import track

    root = root or cache_dir() / "decoded"
    key = cache_key(manifest, size)
    data_path = root / f"{key}.u8"
    done_path = root / f"{key}.done.npy"
    meta_path = root / f"{key}.json"
    n = len(manifest.rows)
    root.mkdir(parents=True, exist_ok=True)
    shape = (n, size, size)
    fresh = not data_path.exists() or data_path.stat().st_size != n * size * size
    if fresh:
        with open(data_path, "wb") as fh:
            fh.truncate(n * size * size)
        done = np.zeros(n, bool)
    else:
        try:
            done = np.load(done_path, allow_pickle=False)
            if done.shape != (n,):
                done = np.zeros(n, bool)
        except (OSError, ValueError):
            done = np.zeros(n, bool)
    failed: dict[int, str] = {}
    if meta_path.exists() and not fresh:  # a new array starts with no failures
        try:
            failed = {int(k): v for k, v in json.loads(meta_path.read_text()).get("failed", {}).items()}
        except (OSError, ValueError):
            failed = {}
    arr = np.memmap(data_path, dtype=np.uint8, mode="r+" if not done.all() else "r", shape=shape)
    todo = np.flatnonzero(~done)
    decoded_now = 0
    if len(todo):
        import io

        with ThreadPoolExecutor(max(1, workers)) as pool:
            for start in track(range(0, len(todo), CHUNK), f"Decoding {len(todo)} images at {size}px",
                               total=(len(todo) + CHUNK - 1) // CHUNK, enabled=progress):
                rows = todo[start:start + CHUNK]
                paths = [manifest.abspath(manifest.rows[i]) for i in rows]
                for i, (px, reason) in zip(rows, pool.map(lambda p: _decode_row(p, size), paths)):
                    if px is None:
                        failed[int(i)] = reason
                        arr[i] = 0
                    else:
                        arr[i] = px
                        failed.pop(int(i), None)  # failed before, readable now
                    done[i] = True
                decoded_now += len(rows)
                DECODE_COUNTER["n"] += len(rows)
                arr.flush()
                # the failures first, then the bitmap: a row marked done always has its failure recorded
                _write_meta(meta_path, manifest, size, n, failed)
                buf = io.BytesIO()
                np.save(buf, done, allow_pickle=False)
                atomic_write_bytes(done_path, buf.getvalue())
        arr = np.memmap(data_path, dtype=np.uint8, mode="r", shape=shape)
    labels = np.array([r.label for r in manifest.rows], dtype=np.int64)
    splits = np.array([r.split for r in manifest.rows])
    return DecodedCache(manifest, size, data_path, arr, labels, splits, failed, decoded_now)


def _write_meta(path: Path, manifest: Manifest, size: int, n: int, failed: dict[int, str]) -> None:
    atomic_write_json(path, {"manifest": manifest.fingerprint, "size": size, "n": n,
                             "failed": {str(k): v for k, v in sorted(failed.items())}})
