""""Is this image in the training set?": an upload matched against a dataset's duplicate index.

The same facts the splitter uses (:mod:`fracbench.data.index`) answer the question, with the same
rules as :mod:`fracbench.data.dedup`: an exact copy shares the file SHA-256 or the decoded-pixel
SHA-256; a near copy has a perceptual hash within ``MAX_DISTANCE`` bits of one of the eight
rotations/flips of an indexed image, confirmed by comparing 32 px thumbnails under that transform.
Matches come back with the indexed image's label and split and its thumbnail (from the index, not
the file), so a leak is visible: the same picture in train and test.

Matchers are pluggable: :class:`Lookup` runs each :class:`Matcher` in ``matchers`` and keeps the
strongest match per indexed image, so a keypoint-based verifier for small rotations and crops can
be added without touching the others.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from fracbench.data.dedup import CLOSE, MAX_DISTANCE, MAX_PIXEL_DIFF, MIN_CLOSE_SHARE, _popcount
from fracbench.data.index import dihedral, phash64

TRANSFORMS = ("identity", "flipped", "rotated 90°", "rotated 90°, flipped", "rotated 180°", "rotated 180°, flipped",
              "rotated 270°", "rotated 270°, flipped")  # the order of index.dihedral
RANK = {"exact file": 0, "exact pixels": 1, "near duplicate": 2, "similar (not a copy)": 3}


@dataclass(frozen=True)
class Query:
    """One image to look up: decoded pixels, and the file's bytes when there is a file."""

    pixels: np.ndarray  # (H, W) uint8, as fracbench.data.decode returns
    data: bytes | None = None

    @property
    def file_sha256(self) -> str | None:
        return hashlib.sha256(self.data).hexdigest() if self.data is not None else None

    @property
    def pixel_sha256(self) -> str:
        px = self.pixels
        return hashlib.sha256(px.tobytes() + str(px.shape).encode()).hexdigest()  # as index.build_index

    @property
    def thumb(self) -> np.ndarray:
        from fracbench.data.index import _thumb

        return _thumb(self.pixels)


@dataclass(frozen=True)
class Match:
    """One indexed image that matches the query."""

    row: int  # index into the Lookup's entries
    kind: str  # a key of RANK
    id: str
    label: int
    split: str
    path: str  # relative to the dataset root
    thumb: np.ndarray  # (32, 32) uint8 from the index
    transform: str = "identity"  # how the indexed image was turned to match the query
    hash_distance: int = 0  # phash bits that differ (0 for exact)
    pixel_diff: float = 0.0  # mean absolute thumbnail difference, 0-255


class Matcher(Protocol):
    name: str

    def match(self, query: Query, lookup: Lookup) -> list[Match]: ...


@dataclass
class Lookup:
    """An index of one dataset's images with their labels and splits, and the matchers to run."""

    dataset: str
    ids: list[str]
    paths: list[str]
    labels: np.ndarray  # (N,) int
    splits: list[str]
    file_sha256: list[str]
    pixel_sha256: list[str]
    phash: np.ndarray  # (N, 8) uint64
    thumbs: np.ndarray  # (N, 32, 32) uint8
    matchers: list[Matcher] = field(default_factory=list)
    mids: np.ndarray | None = None  # (N, 128, 128) uint8: the keypoint check's squares (fracbench.data.nearcopy)

    def __len__(self) -> int:
        return len(self.ids)

    def match_of(self, row: int, kind: str, **kw) -> Match:
        return Match(row, kind, self.ids[row], int(self.labels[row]), self.splits[row], self.paths[row],
                     self.thumbs[row], **kw)

    def query(self, pixels: np.ndarray, data: bytes | None = None, nearest: int = 0) -> list[Match]:
        """Every indexed copy of ``pixels`` (strongest kind per image, exact first), then, if fewer than
        ``nearest`` were found, the most similar non-copies by hash distance, marked "similar (not a copy)"."""
        q = Query(np.asarray(pixels), data)
        best: dict[int, Match] = {}
        for m in self.matchers:
            for hit in m.match(q, self):
                old = best.get(hit.row)
                if old is None or RANK[hit.kind] < RANK[old.kind]:
                    best[hit.row] = hit
        out = sorted(best.values(), key=lambda m: (RANK[m.kind], m.hash_distance, m.pixel_diff, m.row))
        if len(out) < nearest and len(self):
            d, t = _hash_distances(self, q)
            for r in np.argsort(d, kind="stable"):
                if len(out) >= nearest:
                    break
                if int(r) not in best:
                    out.append(self.match_of(int(r), "similar (not a copy)", transform=TRANSFORMS[int(t[r])],
                                             hash_distance=int(d[r]), pixel_diff=_pixel_diff(self, q, int(r), int(t[r]))))
        return out


def _hash_distances(lookup: Lookup, q: Query) -> tuple[np.ndarray, np.ndarray]:
    """Per indexed image: the smallest phash distance over its 8 transforms, and which transform."""
    h0 = np.uint64(phash64(q.thumb))
    dist = _popcount(np.bitwise_xor(lookup.phash, h0))  # (N, 8)
    return dist.min(axis=1), dist.argmin(axis=1)


def _pixel_diff(lookup: Lookup, q: Query, row: int, t: int) -> float:
    return float(np.abs(q.thumb.astype(np.int16) - dihedral(lookup.thumbs[row])[t].astype(np.int16)).mean())


class ExactMatcher:
    """Byte-identical files (file SHA-256) and pixel-identical images (decoded-pixel SHA-256)."""

    name = "exact"

    def match(self, query: Query, lookup: Lookup) -> list[Match]:
        out = []
        fsha, psha = query.file_sha256, query.pixel_sha256
        for r in range(len(lookup)):
            if fsha is not None and lookup.file_sha256[r] == fsha:
                out.append(lookup.match_of(r, "exact file"))
            elif lookup.pixel_sha256[r] == psha:
                out.append(lookup.match_of(r, "exact pixels"))
        return out


@dataclass
class PerceptualMatcher:
    """Near copies under the 8 rotations/flips: phash candidates confirmed on thumbnails (dedup's rules)."""

    max_distance: int = MAX_DISTANCE
    max_pixel_diff: float = MAX_PIXEL_DIFF
    name: str = "perceptual"

    def match(self, query: Query, lookup: Lookup) -> list[Match]:
        if not len(lookup):
            return []
        d, t = _hash_distances(lookup, query)
        qt = query.thumb.astype(np.int16)
        out = []
        for r in np.flatnonzero(d <= self.max_distance):
            tj = dihedral(lookup.thumbs[r])[int(t[r])].astype(np.int16)
            diff = np.abs(qt - tj)
            if diff.mean() <= self.max_pixel_diff and (diff <= CLOSE).mean() >= MIN_CLOSE_SHARE:
                out.append(lookup.match_of(int(r), "near duplicate", transform=TRANSFORMS[int(t[r])],
                                           hash_distance=int(d[r]), pixel_diff=float(diff.mean())))
        return out


@dataclass
class KeypointMatcher:
    """Copies turned by a few degrees, zoomed or cropped (fracbench.data.nearcopy's rules): the most similar
    indexed images by descriptor, each confirmed by keypoints and pixel correlation."""

    k: int = 5  # candidates checked per query
    name: str = "keypoints"
    _base: np.ndarray | None = field(default=None, repr=False)

    def match(self, query: Query, lookup: Lookup) -> list[Match]:
        from fracbench.data import nearcopy as N

        if lookup.mids is None or not len(lookup):
            return []
        if self._base is None or len(self._base) != len(lookup):
            self._base = np.stack([N.descriptor(m) for m in lookup.mids])
        qm = N.mid_image(query.pixels)
        idx, sim, var = N.nearest(N.descriptor_variants(qm)[None], self._base, k=self.k)
        check = N.Matcher(qm[None], lookup.mids)
        out = []
        for c in range(idx.shape[1]):
            if sim[0, c] < N.MIN_SIMILARITY:
                continue
            chk = check.check(0, int(idx[0, c]), int(var[0, c]) // len(N.ANGLES))
            if chk.confirmed:
                out.append(lookup.match_of(int(idx[0, c]), "near duplicate",
                                           transform=f"turned/zoomed/cropped (pixel correlation {chk.ncc:.3f})"))
        return out


def default_matchers() -> list[Matcher]:
    return [ExactMatcher(), PerceptualMatcher(), KeypointMatcher()]


def build_lookup(prepared, matchers: Sequence[Matcher] | None = None) -> Lookup:
    """A :class:`Lookup` over every image of a prepared dataset that is in its manifest."""
    index = prepared.index
    manifest = prepared.manifest
    by_path = {str(manifest.abspath(r).resolve()): r for r in manifest.rows}
    keep, rows = [], []
    for i, rec in enumerate(index.records):
        row = by_path.get(str(Path(rec.path).resolve()))
        if index.ok[i] and row is not None:
            keep.append(i)
            rows.append(row)
    k = np.array(keep, dtype=np.int64)
    return Lookup(
        dataset=prepared.name,
        ids=[r.id for r in rows],
        paths=[r.path for r in rows],
        labels=np.array([r.label for r in rows], dtype=np.int64),
        splits=[_split_name(index.records[i].split, r.split) for i, r in zip(keep, rows)],
        file_sha256=[index.file_sha256[i] for i in keep],
        pixel_sha256=[index.pixel_sha256[i] for i in keep],
        phash=index.phash[k] if len(k) else np.zeros((0, 8), np.uint64),
        thumbs=index.thumbs[k] if len(k) else np.zeros((0, 32, 32), np.uint8),
        matchers=list(matchers) if matchers is not None else default_matchers(),
        mids=index.mids[k] if len(k) else None,
    )


def _split_name(given: str, assigned: str) -> str:
    # a copy found in two of a release's own split folders is moved to test by the manifest; show both
    if given and given != assigned:
        return f"{given} (dataset's folders); {assigned} (manifest)"
    return assigned


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``DATASET[:PATH]`` -> (dataset, path or None), as ``--lookup-data`` takes it."""
    name, sep, path = spec.partition(":")
    if not name or (sep and not path):
        raise ValueError(f"--lookup-data takes DATASET[:PATH], got {spec!r}")
    return name, path or None


def load_lookup(spec: str, results: str | os.PathLike[str] | None = None, progress: bool = True) -> Lookup:
    """Prepare the dataset named by ``spec`` (with its committed manifest under ``results``, when there
    is one, so the splits shown are the ones the models were trained on) and index it."""
    from fracbench.data import prepare
    from fracbench.paths import default_results_dir

    name, path = parse_spec(spec)
    committed = Path(results or default_results_dir()) / name / "manifests" / f"{name}.csv"
    return build_lookup(prepare(name, path, progress=progress,
                                manifest_path=committed if committed.is_file() else None))
