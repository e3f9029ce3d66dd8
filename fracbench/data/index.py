"""One decoding pass over a dataset: file hashes, copy-finding features, faults.

Every image is decoded once here (and remembered in the cache, keyed by path, size and mtime),
giving what splitting, copy finding, ``data info`` and the audit need: a file SHA-256, the
features of fracbench.copies.encode (decoded-pixel SHA-256, perceptual hashes of the eight
turns/flips, a thumbnail, a letterboxed square), the decoded shape and the decoder's faults.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fracbench.copies import MID, THUMB
from fracbench.copies import encode as encode_copy_features
from fracbench.copies.features import FEATURES_VERSION
from fracbench.data.base import Fault, ImageRecord
from fracbench.io import atomic_write_bytes, atomic_write_json
from fracbench.paths import cache_dir

INDEX_VERSION = 10 + FEATURES_VERSION  # the cache layout (10) and the copy features it holds


@dataclass
class ImageIndex:
    """Per-record facts, aligned with ``records``; rows of unreadable images have ok=False."""

    records: list[ImageRecord]
    ok: np.ndarray  # (N,) bool: the image decoded (possibly truncated)
    file_sha256: list[str]
    pixel_sha256: list[str]
    phash: np.ndarray  # (N, 8) uint64: perceptual hash of each dihedral transform (0 = identity)
    thumbs: np.ndarray  # (N, THUMB, THUMB) uint8
    mids: np.ndarray  # (N, MID, MID) uint8: letterboxed squares (fracbench.copies.features)
    shapes: np.ndarray  # (N, 2) int: decoded height, width
    faults: list[Fault]  # unreadable and truncated files


def _describe(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def build_index(records: Sequence[ImageRecord], progress: bool = True, use_cache: bool = True) -> ImageIndex:
    """Decode every record once (or reuse the cached facts) and hash it."""
    from fracbench.data.decode import DecodeError, decode_image
    from fracbench.progress import track

    n = len(records)
    ok = np.zeros(n, bool)
    fsha = [""] * n
    psha = [""] * n
    ph = np.zeros((n, 8), np.uint64)
    thumbs = np.zeros((n, THUMB, THUMB), np.uint8)
    mids = np.zeros((n, MID, MID), np.uint8)
    shapes = np.zeros((n, 2), np.int64)
    faults: list[Fault] = []

    store = _IndexStore(records) if use_cache else None
    for i in track(range(n), "Indexing images", total=n, enabled=progress):
        rec = records[i]
        try:
            stamp = _describe(rec.path)
        except OSError as exc:
            faults.append(Fault(rec.path, "unreadable", f"cannot open: {exc.strerror or exc}"))
            continue
        cached = store.get(rec.path, stamp) if store else None
        if cached is None:
            try:
                data = Path(rec.path).read_bytes()
                decoded = decode_image(rec.path)
            except (DecodeError, OSError) as exc:
                cached = {"ok": False, "fault": ["unreadable", str(getattr(exc, "reason", exc))]}
            else:
                px = decoded.pixels
                cached = {"ok": True, "file_sha256": hashlib.sha256(data).hexdigest(), **encode_copy_features(px),
                          "shape": list(px.shape[:2]), "warnings": list(decoded.warnings)}
            if store:
                store.put(rec.path, stamp, cached)
        if not cached["ok"]:
            kind, detail = cached["fault"]
            faults.append(Fault(rec.path, kind, f"{detail}; excluded from the manifest"))
            continue
        ok[i] = True
        fsha[i], psha[i] = cached["file_sha256"], cached["pixel_sha256"]
        ph[i] = np.array([int(v) for v in cached["phash"]], dtype=np.uint64)
        thumbs[i] = cached["thumb"]
        mids[i] = cached["mid"]
        shapes[i] = cached["shape"]
        for w in cached.get("warnings", []):
            kind = "truncated" if w.startswith("truncated") else "decode_warning"
            faults.append(Fault(rec.path, kind, w))
    if store:
        store.save()
    return ImageIndex(list(records), ok, fsha, psha, ph, thumbs, mids, shapes, faults)


class _IndexStore:
    """The cached per-file facts of one dataset root: a JSON table plus an .npy of thumbnails."""

    def __init__(self, records: Sequence[ImageRecord]) -> None:
        roots = sorted({str(Path(r.path).parent.parent) for r in records})
        key = hashlib.sha256(("\n".join(roots) + f"|v{INDEX_VERSION}").encode()).hexdigest()[:16]
        self.dir = cache_dir() / "index"
        self.meta_path = self.dir / f"{key}.json"
        self.thumb_path = self.dir / f"{key}.thumbs.npy"
        self.mid_path = self.dir / f"{key}.mids.npy"
        self.entries: dict[str, dict] = {}
        self.thumbs: list[np.ndarray] = []
        self.mids: list[np.ndarray] = []
        self.dirty = False
        try:
            meta = json.loads(self.meta_path.read_text())
            thumbs = np.load(self.thumb_path, allow_pickle=False)
            mids = np.load(self.mid_path, allow_pickle=False)
            if meta.get("version") == INDEX_VERSION and len(thumbs) == meta["n_thumbs"] == len(mids):
                self.entries = meta["entries"]
                self.thumbs = list(thumbs)
                self.mids = list(mids)
        except (OSError, ValueError, KeyError):
            pass  # no cache yet, or a damaged one: rebuild

    def get(self, path: str, stamp: tuple[int, int]) -> dict | None:
        e = self.entries.get(path)
        if e is None or e.get("stamp") != list(stamp):
            return None
        out = dict(e)
        if out["ok"]:
            out["thumb"] = self.thumbs[out["thumb_idx"]]
            out["mid"] = self.mids[out["thumb_idx"]]
        return out

    def put(self, path: str, stamp: tuple[int, int], entry: dict) -> None:
        e = {k: v for k, v in entry.items() if k not in ("thumb", "mid")}
        e["stamp"] = list(stamp)
        if entry["ok"]:
            e["thumb_idx"] = len(self.thumbs)
            self.thumbs.append(entry["thumb"])
            self.mids.append(entry["mid"])
        self.entries[path] = e
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        import io

        for path, items, side in ((self.thumb_path, self.thumbs, THUMB), (self.mid_path, self.mids, MID)):
            buf = io.BytesIO()
            arr = np.stack(items) if items else np.zeros((0, side, side), np.uint8)
            np.save(buf, arr, allow_pickle=False)
            atomic_write_bytes(path, buf.getvalue())
        arr = self.thumbs
        atomic_write_json(self.meta_path, {"version": INDEX_VERSION, "n_thumbs": len(arr), "entries": self.entries})
