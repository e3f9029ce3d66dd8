"""Copies between two sets of images, found afresh: the split verifier, the external test, the lookup.

``match_sets`` asks, for each query image, whether any image of a base set is a copy of it, without
using any grouping: the same file bytes or pixels, a thumbnail re-encode (perceptual hash), or an
aligned copy among the ``k`` base images most similar to it by the polar descriptors. Alignment
tries the polar rotation search first and keypoints second (the grouping tries them the other way
round), and stops at the first confirmed copy.

``verify_split`` is the independent check after any split is dealt: it never reads the groups
that built the split, so a copy the grouping missed shows up here as a test image with a copy in
train, and a run on a split that fracbench dealt itself fails with the crossing pairs listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fracbench.copies.features import dihedral
from fracbench.copies.groups import MAX_DISTANCE, Encoded, popcount, thumbs_match

VERIFY_K = 8  # base candidates aligned per query image (most similar first)


@dataclass(frozen=True)
class Crossing:
    """Query image ``query`` has a copy ``base`` in the base set."""

    query: int  # index into the query set's images
    base: int  # index into the base set's images
    how: str  # "file", "pixels", "hash" or "aligned"
    ncc: float = 1.0
    detail: float = 1.0


@dataclass
class Matches:
    """What ``match_sets`` found, and what it looked at (a "no copy" is always "among these")."""

    crossings: list[Crossing] = field(default_factory=list)
    queries: int = 0
    base_images: int = 0
    candidates_per_query: int = VERIFY_K

    def by_query(self) -> dict[int, Crossing]:
        return {c.query: c for c in self.crossings}


def match_sets(q: Encoded, q_rows: Sequence[int], b: Encoded, b_rows: Sequence[int], k: int = VERIFY_K,
               aligned: bool = True, progress: bool = False) -> Matches:
    """For each query row, the first copy found among the base rows (or none)."""
    from fracbench.progress import track

    q_rows = [int(i) for i in q_rows if q.ok[i]]
    b_rows = [int(i) for i in b_rows if b.ok[i]]
    out = Matches(queries=len(q_rows), base_images=len(b_rows), candidates_per_query=k)
    if not q_rows or not b_rows:
        return out
    files = {b.file_sha256[i]: i for i in b_rows}
    pixels = {b.pixel_sha256[i]: i for i in b_rows}
    found: dict[int, Crossing] = {}
    for i in q_rows:
        if q.file_sha256[i] in files:
            found[i] = Crossing(i, files[q.file_sha256[i]], "file")
        elif q.pixel_sha256[i] in pixels:
            found[i] = Crossing(i, pixels[q.pixel_sha256[i]], "pixels")
    rest = [i for i in q_rows if i not in found]
    if rest:
        bh = b.phash[b_rows]  # (m, 8)
        for s in range(0, len(rest), 256):
            chunk = rest[s:s + 256]
            dist = popcount(np.bitwise_xor(q.phash[chunk, 0][:, None, None], bh[None]))  # (c, m, 8)
            best_t = dist.argmin(2)
            best = dist.min(2)
            for r, i in enumerate(chunk):
                for c in np.argsort(best[r], kind="stable"):
                    if best[r, c] > MAX_DISTANCE:
                        break
                    j = b_rows[int(c)]
                    if thumbs_match(q.thumbs[i], dihedral(b.thumbs[j])[int(best_t[r, c])]):
                        found[i] = Crossing(i, j, "hash")
                        break
    rest = [i for i in q_rows if i not in found]
    if aligned and rest:
        from fracbench.copies import descriptors as D
        from fracbench.copies.confirm import Matcher

        dq = [D.describe(q.mids[i][None]) for i in rest]
        db = [D.describe(b.mids[j][None], query=False) for j in b_rows]
        inv_q = tuple(np.stack([d[f][0] for d in dq]) for f in range(len(dq[0])))
        base = tuple(np.stack([d[f][0, 0] for d in db]) for f in range(len(db[0])))
        idx, _ = D.shortlist(inv_q, base, k)
        qm = np.asarray([q.mids[i] for i in rest])
        bm_rows = sorted({int(c) for c in idx.ravel()})
        bpos = {c: n for n, c in enumerate(bm_rows)}
        matcher = Matcher(qm, np.asarray([b.mids[b_rows[c]] for c in bm_rows]))
        for a in track(range(len(rest)), "Aligning candidate copies", total=len(rest), enabled=progress):
            for c in idx[a]:
                bj = bpos[int(c)]
                chk = matcher.check_polar(a, bj)
                if not chk.confirmed:
                    chk = matcher.check_any(a, bj)
                if chk.confirmed:
                    found[rest[a]] = Crossing(rest[a], b_rows[int(c)], "aligned", chk.ncc, chk.detail)
                    break
    out.crossings = sorted(found.values(), key=lambda c: c.query)
    return out


def verify_split(enc: Encoded, test_rows: Sequence[int], train_rows: Sequence[int], k: int = VERIFY_K,
                 progress: bool = False) -> Matches:
    """Test images with a copy in train, found without the groups that built the split."""
    return match_sets(enc, test_rows, enc, train_rows, k=k, progress=progress)


def verify_split_cached(enc: Encoded, test_rows: Sequence[int], train_rows: Sequence[int], key: str,
                        progress: bool = False) -> Matches:
    """``verify_split``, remembered in the user cache under ``key`` (the caller's name for the split, e.g. its
    manifest fingerprint) together with the images' content hashes and the copy rules."""
    import hashlib
    import json

    from fracbench.copies.groups import rules_fingerprint
    from fracbench.io import atomic_write_json
    from fracbench.paths import cache_dir

    h = hashlib.sha256(f"{rules_fingerprint()}|{key}|{VERIFY_K}".encode())
    for i in list(test_rows) + ["|"] + list(train_rows):
        h.update(f"{enc.file_sha256[i]}|{enc.pixel_sha256[i]}\n".encode() if i != "|" else b"|")
    path = cache_dir() / "verify" / f"{h.hexdigest()[:24]}.json"
    try:
        raw = json.loads(path.read_text())
        return Matches([Crossing(**c) for c in raw["crossings"]], raw["queries"], raw["base_images"],
                       raw["candidates_per_query"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or damaged: verify again
    res = verify_split(enc, test_rows, train_rows, progress=progress)
    atomic_write_json(path, {"crossings": [c.__dict__ for c in res.crossings], "queries": res.queries,
                             "base_images": res.base_images, "candidates_per_query": res.candidates_per_query})
    return res


def nearest_similarity(query_mids: np.ndarray, base_mids: np.ndarray) -> np.ndarray:
    """For each query image, the highest polar-descriptor similarity to any base image (any turn, mirror, zoom)."""
    from fracbench.copies import descriptors as D

    if len(query_mids) == 0 or len(base_mids) == 0:
        return np.zeros(len(query_mids), np.float32)
    inv_q = D.invariant(D.encode_polar(np.asarray(query_mids)))
    base = D.invariant(D.encode_polar(np.asarray(base_mids), shifts=False))[:, 0]
    _, sim = D.shortlist(inv_q, base, 1)
    return sim[:, 0]
