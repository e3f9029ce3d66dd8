"""Exact and near-duplicate images: groups that must never be split apart.

Exact duplicates share a file SHA-256 or a decoded-pixel SHA-256. Near-duplicates have perceptual
hashes within ``max_distance`` bits under one of the eight rotations/flips (so a rotated or
mirrored copy is caught), and are confirmed by comparing their thumbnails pixel by pixel under
that same transform. Copies turned by a few degrees, zoomed or cropped are then found by keypoint
matching confirmed by pixel correlation (fracbench.data.nearcopy), and join the same groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fracbench.data.index import ImageIndex, dihedral

# Calibrated on FracAtlas by looking at candidate pairs: re-encoded and truncated copies have a
# mean thumbnail difference under 3 grey levels with >= 90% of pixels within 6 levels, while
# different radiographs of the same anatomy (similar hashes) differ by 4-20 levels.
MAX_DISTANCE = 12  # phash bits (of 64) that may differ for a near-duplicate candidate
MAX_PIXEL_DIFF = 3.0  # mean absolute thumbnail difference (0-255) that confirms a candidate
MIN_CLOSE_SHARE = 0.90  # share of thumbnail pixels within CLOSE levels that confirms a candidate
CLOSE = 6


@dataclass(frozen=True)
class DuplicateGroup:
    members: tuple[int, ...]  # indices into the index's records
    kind: str  # "exact" when all members are byte- or pixel-identical, else "near"


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    b = x.view(np.uint8).reshape(*x.shape, 8)
    return np.unpackbits(b, axis=-1).sum(axis=-1)


class _UnionFind:
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


DEDUP_VERSION = 1  # bump when the rules change: cached groups of the old rules are not reused


def find_duplicates(index: ImageIndex, max_distance: int = MAX_DISTANCE,
                    max_pixel_diff: float = MAX_PIXEL_DIFF, keypoints: bool = True,
                    progress: bool = False, use_cache: bool = True) -> list[DuplicateGroup]:
    """Groups of two or more images that are copies of one another, sorted by first member.

    ``keypoints`` adds the check for turned/zoomed/cropped copies (fracbench.data.nearcopy). The groups
    are remembered in the user cache, keyed by every image's path and content hashes and the rules'
    settings, so a second ``prepare`` of the same files does not search again.
    """
    key = _cache_key(index, max_distance, max_pixel_diff, keypoints) if use_cache else None
    cached = _read_cached(key)
    if cached is not None:
        return cached
    groups = _find_duplicates(index, max_distance, max_pixel_diff, keypoints, progress)
    _write_cached(key, groups)
    return groups


def _cache_key(index: ImageIndex, max_distance: int, max_pixel_diff: float, keypoints: bool) -> str:
    import hashlib

    from fracbench.data import nearcopy as N

    h = hashlib.sha256(f"v{DEDUP_VERSION}|{max_distance}|{max_pixel_diff}|{MIN_CLOSE_SHARE}|{CLOSE}|{keypoints}|"
                       f"{N.MIN_SIMILARITY}|{N.MIN_INLIERS}|{N.MIN_OVERLAP}|{N.MIN_NCC}|{N.MIN_DETAIL}|"
                       f"{N.K_CANDIDATES}".encode())
    for rec, ok, f, p in zip(index.records, index.ok, index.file_sha256, index.pixel_sha256):
        h.update(f"{rec.path}|{bool(ok)}|{f}|{p}\n".encode())
    return h.hexdigest()[:24]


def _read_cached(key: str | None) -> list[DuplicateGroup] | None:
    import json

    from fracbench.paths import cache_dir

    if key is None:
        return None
    try:
        raw = json.loads((cache_dir() / "dedup" / f"{key}.json").read_text())
        return [DuplicateGroup(tuple(int(i) for i in g["members"]), str(g["kind"])) for g in raw]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none yet, or damaged: search again


def _write_cached(key: str | None, groups: list[DuplicateGroup]) -> None:
    from fracbench.io import atomic_write_json
    from fracbench.paths import cache_dir

    if key is not None:
        atomic_write_json(cache_dir() / "dedup" / f"{key}.json",
                          [{"members": list(g.members), "kind": g.kind} for g in groups])


def _find_duplicates(index: ImageIndex, max_distance: int, max_pixel_diff: float, keypoints: bool,
                     progress: bool) -> list[DuplicateGroup]:
    n = len(index.records)
    ok = np.flatnonzero(index.ok)
    uf = _UnionFind(n)
    exact_pairs: set[tuple[int, int]] = set()
    for key_list in (index.file_sha256, index.pixel_sha256):
        first: dict[str, int] = {}
        for i in ok:
            k = key_list[i]
            if k in first:
                uf.union(first[k], int(i))
                exact_pairs.add((first[k], int(i)))
            else:
                first[k] = int(i)

    # near duplicates: identity hash of i against all 8 transform hashes of j (j > i)
    h0 = index.phash[ok, 0]
    ht = index.phash[ok]
    block = 512
    for start in range(0, len(ok), block):
        a = h0[start:start + block, None, None]
        dist = _popcount(np.bitwise_xor(a, ht[None, :, :]))  # (b, m, 8)
        best_t = dist.argmin(axis=2)
        best = dist.min(axis=2)
        rows, cols = np.nonzero(best <= max_distance)
        for r, c in zip(rows, cols):
            i, j = int(ok[start + r]), int(ok[c])
            if j <= i or uf.find(i) == uf.find(j):
                continue
            t = int(best_t[r, c])
            # hash of transform t of j matches i, so compare i with transform t of j
            tj = dihedral(index.thumbs[j])[t]
            diff = np.abs(index.thumbs[i].astype(np.int16) - tj.astype(np.int16))
            if diff.mean() <= max_pixel_diff and (diff <= CLOSE).mean() >= MIN_CLOSE_SHARE:
                uf.union(i, j)

    if keypoints and len(ok) > 1:
        from fracbench.data.nearcopy import find_near_copies

        find_near_copies(index.mids, ok, same=lambda a, b: uf.find(a) == uf.find(b), join=uf.union,
                         progress=progress)

    members: dict[int, list[int]] = {}
    for i in ok:
        members.setdefault(uf.find(int(i)), []).append(int(i))
    groups = []
    for m in members.values():
        if len(m) < 2:
            continue
        exact = all(index.file_sha256[m[0]] == index.file_sha256[k] or index.pixel_sha256[m[0]] == index.pixel_sha256[k]
                    for k in m[1:])
        groups.append(DuplicateGroup(tuple(sorted(m)), "exact" if exact else "near"))
    return sorted(groups, key=lambda g: g.members[0])
