"""Copy groups: images that are one radiograph, found by content alone, never by name.

Three stages join images into groups (a union-find), each cheap enough for the images the
previous stages left apart:

1. **Exact**: the same file bytes or the same decoded pixels.
2. **Re-encoded or resized**: perceptual hashes within ``MAX_DISTANCE`` bits under one of the
   eight turns/flips of the thumbnail, confirmed pixel by pixel on the thumbnail.
3. **Turned, zoomed, cropped, mirrored, brightened**: candidates from the polar descriptors
   (fracbench.copies.descriptors), each image's most similar images outside its group, to a
   fixpoint (fracbench.copies.candidates); each candidate pair aligned by keypoints and, when that
   fails, by the polar rotation search, and confirmed by pixels (fracbench.copies.confirm).

Only one image of each exact set takes part in stage 3: fifty byte copies cost one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fracbench.copies.features import dihedral

# Calibrated on FracAtlas by looking at candidate pairs: re-encoded and truncated copies have a
# mean thumbnail difference under 3 grey levels with >= 90% of pixels within 6 levels, while
# different radiographs of the same anatomy (similar hashes) differ by 4-20 levels.
MAX_DISTANCE = 12  # phash bits (of 64) that may differ for a near-duplicate candidate
MAX_PIXEL_DIFF = 3.0  # mean absolute thumbnail difference (0-255) that confirms a candidate
MIN_CLOSE_SHARE = 0.90  # share of thumbnail pixels within CLOSE levels that confirms a candidate
CLOSE = 6
NEAR_MISS_NCC = 0.85  # a pair check correlating this well that fails one way is tried the other way round
RULES_VERSION = 4  # bump when any rule changes: cached groups of old rules are not reused


class Encoded(Protocol):
    """What copy finding reads of a set of images (fracbench.data.index.ImageIndex has it)."""

    ok: np.ndarray  # (N,) bool: decoded
    file_sha256: Sequence[str]
    pixel_sha256: Sequence[str]
    phash: np.ndarray  # (N, 8) uint64
    thumbs: np.ndarray  # (N, THUMB, THUMB) uint8
    mids: np.ndarray  # (N, MID, MID) uint8


@dataclass
class EncodedImages:
    """An :class:`Encoded` set made from pixels in memory (tests, benchmarks, one uploaded image)."""

    ok: np.ndarray
    file_sha256: list[str]
    pixel_sha256: list[str]
    phash: np.ndarray
    thumbs: np.ndarray
    mids: np.ndarray

    @classmethod
    def from_pixels(cls, images: Sequence[np.ndarray], files: Sequence[bytes | None] | None = None) -> EncodedImages:
        """Encode 2-D uint8 images; ``files`` (their bytes, when they are files) give the file hashes."""
        from fracbench.copies.features import MID, THUMB, encode

        feats = [encode(np.asarray(px, np.uint8)) for px in images]
        files = list(files) if files is not None else [None] * len(feats)
        fsha = [hashlib.sha256(b).hexdigest() if b is not None else f"pixels:{f['pixel_sha256']}"
                for b, f in zip(files, feats)]
        n = len(feats)
        return cls(np.ones(n, bool), fsha, [f["pixel_sha256"] for f in feats],
                   np.array([[int(v) for v in f["phash"]] for f in feats], np.uint64).reshape(n, 8),
                   np.stack([f["thumb"] for f in feats]) if n else np.zeros((0, THUMB, THUMB), np.uint8),
                   np.stack([f["mid"] for f in feats]) if n else np.zeros((0, MID, MID), np.uint8))


@dataclass(frozen=True)
class CopyGroup:
    members: tuple[int, ...]  # indices into the encoded images
    kind: str  # "exact" when all members are byte- or pixel-identical, else "near"


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def same(self, a: int, b: int) -> bool:
        return self.find(a) == self.find(b)


def popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    b = x.view(np.uint8).reshape(*x.shape, 8)
    return np.unpackbits(b, axis=-1).sum(axis=-1)


def thumbs_match(a: np.ndarray, b: np.ndarray) -> bool:
    """The thumbnail rule of stage 2: two THUMB squares are one picture re-encoded or resized."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return bool(diff.mean() <= MAX_PIXEL_DIFF and (diff <= CLOSE).mean() >= MIN_CLOSE_SHARE)


def _exact(enc: Encoded, uf: UnionFind) -> None:
    ok = np.flatnonzero(enc.ok)
    for keys in (enc.file_sha256, enc.pixel_sha256):
        first: dict[str, int] = {}
        for i in ok:
            k = keys[i]
            if k in first:
                uf.union(first[k], int(i))
            else:
                first[k] = int(i)


def _hashes(enc: Encoded, uf: UnionFind) -> None:
    ok = np.flatnonzero(enc.ok)
    h0 = enc.phash[ok, 0]
    ht = enc.phash[ok]
    block = 512
    for start in range(0, len(ok), block):
        dist = popcount(np.bitwise_xor(h0[start:start + block, None, None], ht[None, :, :]))  # (b, m, 8)
        best_t = dist.argmin(axis=2)
        rows, cols = np.nonzero(dist.min(axis=2) <= MAX_DISTANCE)
        for r, c in zip(rows, cols):
            i, j = int(ok[start + r]), int(ok[c])
            if j <= i or uf.same(i, j):
                continue
            # the hash of transform t of j matches i: compare i with transform t of j
            if thumbs_match(enc.thumbs[i], dihedral(enc.thumbs[j])[int(best_t[r, c])]):
                uf.union(i, j)


def _confirm_one_way(matcher: Any, i: int, j: int):
    chk = matcher.check_any(i, j)
    if chk.confirmed:
        return chk
    pol = matcher.check_polar(i, j)
    return pol if pol.confirmed or pol.ncc > chk.ncc else chk


def confirm_pair(matcher: Any, i: int, j: int):
    """The pair check of stage 3: keypoints (as is and mirrored), then the polar alignment; a near miss
    (pixels correlating at ``NEAR_MISS_NCC`` or more) is checked again the other way round.

    The two orders are not equivalent: keypoints are taken on the first image under a mirror, and the
    polar search zooms the first image only, so a mirrored turn or a zoomed crop can align one way only.
    """
    chk = _confirm_one_way(matcher, i, j)
    if chk.confirmed or chk.ncc < NEAR_MISS_NCC or matcher.others is not matcher.mids:
        return chk
    rev = _confirm_one_way(matcher, j, i)
    return rev if rev.confirmed or rev.ncc > chk.ncc else chk


def find_copies(enc: Encoded, keypoints: bool = True, progress: bool = False,
                cache_names: Sequence[str] | None = None) -> list[CopyGroup]:
    """Groups of two or more images that are copies of one another, sorted by first member.

    ``keypoints`` runs stage 3 (turned, zoomed, cropped, mirrored copies). With ``cache_names``
    (one name per image, e.g. its path) the groups are remembered in the user cache, keyed by the
    names, the content hashes and the rules, so a second call on the same files does not search again.
    """
    key = _cache_key(enc, keypoints, cache_names) if cache_names is not None else None
    cached = _read_cached(key)
    if cached is not None:
        return cached
    n = len(enc.ok)
    uf = UnionFind(n)
    _exact(enc, uf)
    _hashes(enc, uf)
    ok = np.flatnonzero(enc.ok)
    if keypoints and len(ok) > 1:
        _keypoints(enc, uf, ok, progress)
    groups = collect(enc, uf)
    _write_cached(key, groups)
    return groups


def _keypoints(enc: Encoded, uf: UnionFind, ok: np.ndarray, progress: bool) -> None:
    from fracbench.copies import descriptors as D
    from fracbench.copies.candidates import rounds
    from fracbench.copies.confirm import Matcher
    from fracbench.progress import track

    # one image per exact set: the others are its byte or pixel copies
    reps, seen_keys = [], set()
    for i in ok:
        k = enc.pixel_sha256[i]
        if k not in seen_keys:
            seen_keys.add(k)
            reps.append(int(i))
    reps_arr = np.asarray(reps, np.int64)
    described = [D.describe(enc.mids[i][None]) for i in track(reps, "Describing images", total=len(reps),
                                                               enabled=progress)]
    inv = []
    for f in range(len(described[0])):
        fam = np.stack([d[f][0] for d in described])
        full = np.zeros((len(enc.ok),) + fam.shape[1:], np.float32)
        full[reps_arr] = fam
        inv.append(full)
    matcher = Matcher(enc.mids)

    def check(i: int, j: int) -> bool:
        if confirm_pair(matcher, i, j).confirmed:
            uf.union(i, j)
            return True
        return False

    def report(r: int, npairs: int, njoined: int) -> None:
        if progress:
            from fracbench.progress import say

            say(f"Copy candidates, round {r + 1}: {npairs} pairs, {njoined} images joined")

    rounds(tuple(inv), uf.find, check, rows=reps_arr, on_round=report)


def collect(enc: Encoded, uf: UnionFind) -> list[CopyGroup]:
    members: dict[int, list[int]] = {}
    for i in np.flatnonzero(enc.ok):
        members.setdefault(uf.find(int(i)), []).append(int(i))
    groups = []
    for m in members.values():
        if len(m) < 2:
            continue
        exact = all(enc.file_sha256[m[0]] == enc.file_sha256[k] or enc.pixel_sha256[m[0]] == enc.pixel_sha256[k]
                    for k in m[1:])
        groups.append(CopyGroup(tuple(sorted(m)), "exact" if exact else "near"))
    return sorted(groups, key=lambda g: g.members[0])


def rules_fingerprint() -> str:
    """Every setting the groups depend on: cached groups and verifier results of other rules are not reused."""
    from fracbench.copies import candidates as K
    from fracbench.copies import confirm as C
    from fracbench.copies import descriptors as D
    from fracbench.copies import features as F

    parts = [RULES_VERSION, NEAR_MISS_NCC, MAX_DISTANCE, MAX_PIXEL_DIFF, MIN_CLOSE_SHARE, CLOSE, F.FEATURES_VERSION, F.MID,
             D.SIDE, D.RINGS, D.ANGLES, D.R_MIN, D.R_MAX, D.SCALES, D.BLUR, D.SHIFTS, K.K_CANDIDATES,
             C.MIN_INLIERS, C.MIN_OVERLAP, C.MIN_NCC, C.MIN_DETAIL, C.EDGE_SHARE, C.DETAIL_SIGMA, C.ORB_FEATURES,
             C.ECC_ITERATIONS, C.MIN_ROUGH_NCC]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _cache_key(enc: Encoded, keypoints: bool, names: Sequence[str]) -> str:
    h = hashlib.sha256(f"{rules_fingerprint()}|{keypoints}".encode())
    for name, ok, f, p in zip(names, enc.ok, enc.file_sha256, enc.pixel_sha256):
        h.update(f"{name}|{bool(ok)}|{f}|{p}\n".encode())
    return h.hexdigest()[:24]


def _read_cached(key: str | None) -> list[CopyGroup] | None:
    from fracbench.paths import cache_dir

    if key is None:
        return None
    try:
        raw = json.loads((cache_dir() / "copies" / f"{key}.json").read_text())
        return [CopyGroup(tuple(int(i) for i in g["members"]), str(g["kind"])) for g in raw]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none yet, or damaged: search again


def _write_cached(key: str | None, groups: list[CopyGroup]) -> None:
    from fracbench.io import atomic_write_json
    from fracbench.paths import cache_dir

    if key is not None:
        atomic_write_json(cache_dir() / "copies" / f"{key}.json",
                          [{"members": list(g.members), "kind": g.kind} for g in groups])
