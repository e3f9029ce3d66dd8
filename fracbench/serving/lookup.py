""""Is this image in the training set?": an upload matched against a dataset's copy index.

The same facts the splitter uses (:mod:`fracbench.data.index`) answer the question, with the same
detector (:mod:`fracbench.copies`): an exact copy shares the file SHA-256 or the decoded-pixel
SHA-256; a re-encoded copy has a perceptual hash within ``MAX_DISTANCE`` bits of one of the eight
rotations/flips of an indexed image, confirmed on 32 px thumbnails; a turned (any angle), zoomed,
cropped or mirrored copy is among the indexed images most similar by the polar descriptors and is
confirmed by alignment and pixels. Matches come back with the indexed image's label and split (from
the manifest the checkpoint was trained on, found by its fingerprint) and its thumbnail, so a leak
is visible: the same picture in train and test. A miss is reported with what was searched
(:meth:`Lookup.searched`): "no copy found among N candidates", never a bare "no copy".

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

from fracbench.copies import dihedral, phash64
from fracbench.copies import thumb as copy_thumb
from fracbench.copies.groups import CLOSE, MAX_DISTANCE, MAX_PIXEL_DIFF, MIN_CLOSE_SHARE
from fracbench.copies.groups import popcount as _popcount

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
        return copy_thumb(self.pixels)


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
    mids: np.ndarray | None = None  # (N, MID, MID) uint8: letterboxed squares (fracbench.copies.features)
    manifest_note: str = ""  # which manifest the splits come from

    def __len__(self) -> int:
        return len(self.ids)

    def searched(self) -> str:
        """What a lookup compares an image with: the words behind "no copy found among ..."."""
        k = max((getattr(m, "k", 0) for m in self.matchers), default=0)
        aligned = f"; the {min(k, len(self))} most similar aligned turn by turn" if k and self.mids is not None else ""
        return (f"{len(self)} indexed images of {self.dataset} (exact bytes and pixels, perceptual hashes under "
                f"8 turns/flips{aligned})")

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
    """Copies turned by any angle, zoomed, cropped or mirrored (fracbench.copies): the ``k`` indexed images most
    similar by the polar descriptors, each aligned (polar rotation search, then keypoints) and confirmed by pixels."""

    k: int = 8  # candidates aligned per query
    name: str = "keypoints"
    _base: np.ndarray | None = field(default=None, repr=False)

    def match(self, query: Query, lookup: Lookup) -> list[Match]:
        from fracbench.copies import descriptors as D
        from fracbench.copies import mid_image
        from fracbench.copies.confirm import Matcher as PairMatcher

        if lookup.mids is None or not len(lookup):
            return []
        if self._base is None or len(self._base) != len(lookup):
            self._base = D.invariant(D.encode_polar(lookup.mids, shifts=False))[:, 0]
        qm = mid_image(query.pixels)
        idx, _ = D.shortlist(D.invariant(D.encode_polar(qm[None])), self._base, self.k)
        check = PairMatcher(qm[None], lookup.mids)
        out = []
        for c in idx[0]:
            chk = check.check_polar(0, int(c))
            if not chk.confirmed:
                chk = check.check_any(0, int(c))
            if chk.confirmed:
                out.append(lookup.match_of(int(c), "near duplicate",
                                           transform=f"turned/zoomed/cropped/mirrored (aligned by {chk.method}; "
                                                     f"pixel correlation {chk.ncc:.3f}, detail {chk.detail:.2f})"))
        return out


def default_matchers() -> list[Matcher]:
    return [ExactMatcher(), PerceptualMatcher(), KeypointMatcher()]


def build_lookup(prepared, matchers: Sequence[Matcher] | None = None, manifest=None, manifest_note: str = "") -> Lookup:
    """A :class:`Lookup` over every image of a prepared dataset that is in ``manifest`` (default: its own)."""
    index = prepared.index
    manifest = manifest if manifest is not None else prepared.manifest
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
        manifest_note=manifest_note,
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


def checkpoint_manifest_sha(checkpoint: str | os.PathLike[str]) -> str | None:
    """The fingerprint of the manifest a checkpoint was trained on: its record's ``manifest_sha256``
    (the record beside it, or the one its sidecar names); None when no record says."""
    import json

    p = Path(checkpoint)
    candidates = [p.parent / "record.json"]
    try:
        side = json.loads(p.with_suffix(".json").read_text())
        if isinstance(side.get("record"), str):
            candidates.insert(0, (p.parent / side["record"]))
        if isinstance(side.get("record"), dict) and side["record"].get("manifest_sha256"):
            return str(side["record"]["manifest_sha256"])
    except (OSError, ValueError):
        pass
    for c in candidates:
        try:
            sha = json.loads(c.read_text()).get("manifest_sha256")
        except (OSError, ValueError, AttributeError):
            continue
        if sha:
            return str(sha)
    return None


def find_manifest(results: Path, name: str, sha256: str) -> Path | None:
    """The committed manifest of dataset ``name`` whose bytes have fingerprint ``sha256``."""
    folder = results / name / "manifests"
    for path in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        if hashlib.sha256(path.read_bytes()).hexdigest() == sha256:
            return path
    return None


def load_lookup(spec: str, results: str | os.PathLike[str] | None = None, progress: bool = True,
                manifest_sha: str | None = None) -> Lookup:
    """Prepare the dataset named by ``spec`` and index it, with the splits of the manifest whose
    fingerprint is ``manifest_sha`` (a checkpoint's, see :func:`checkpoint_manifest_sha`), so the
    splits shown are the ones that model was trained on. Without one, or when that manifest is not
    under ``results``, the dataset's committed ``<dataset>.csv`` (or a fresh split), and the lookup says so."""
    from fracbench.data import prepare
    from fracbench.paths import default_results_dir

    name, path = parse_spec(spec)
    res = Path(results or default_results_dir())
    committed = res / name / "manifests" / f"{name}.csv"
    chosen = find_manifest(res, name, manifest_sha) if manifest_sha else None
    if chosen is not None:
        note = f"splits from the checkpoint's own manifest {chosen.name} ({manifest_sha[:12]})"
    elif manifest_sha:
        note = (f"the checkpoint's manifest {manifest_sha[:12]} is not under {res / name / 'manifests'}: "
                f"splits shown are {'the committed ' + committed.name if committed.is_file() else 'a fresh split'}, "
                "not necessarily the ones the model was trained on")
    else:
        note = f"splits from {'the committed ' + committed.name if committed.is_file() else 'a fresh split'}"
    use = chosen or (committed if committed.is_file() else None)
    prepared = prepare(name, path, progress=progress, manifest_path=use)
    return build_lookup(prepared, manifest_note=note)
