"""Near copies under small rotations, zoom, crop and mirroring: keypoints confirmed by pixels.

Popular public fracture sets are padded with copies of a few hundred source radiographs, each
turned by a few degrees, zoomed, cropped (black corners where the turn leaves no pixels) or
mirrored, then copied again ("1-rotated1-rotated2 - Copy (1).jpg"). A perceptual hash under the
eight 90-degree turns and flips (fracbench.data.dedup) does not see a 7-degree turn with a zoom.
This module does, in two steps:

1. **Candidates.** Each image's 128 px square (``ImageIndex.mids``) gives a small, blurred,
   centre-cropped descriptor (zero mean, unit norm); its 24 variants (8 turns/flips x 3 small
   angles) are compared with every other image's plain descriptor by cosine similarity, and the
   ``k`` most similar images above ``MIN_SIMILARITY`` become candidate pairs.
2. **Confirmation.** ORB keypoints of the pair (the first one under the turn/flip its best variant
   found) are matched (ratio test) and an affine transform is fitted with RANSAC; the second image
   is warped onto the first with it, and the pair is a copy only when enough keypoints agree
   (``MIN_INLIERS``), the warped images overlap (``MIN_OVERLAP``), their pixels agree (normalised
   cross-correlation ``MIN_NCC`` over the overlap) and so does their fine detail (``MIN_DETAIL``:
   the correlation of each image minus its 1-px blur).

Thresholds were calibrated by looking at candidate pairs in bands of inliers and correlation
(sheets of pairs, by eye). On multiregion, different radiographs of the same anatomy (two lateral
forearms with other side markers, two PA hands) reach 11-24 inliers and correlations of 0.86-0.91;
every pair seen at 0.93 or above was one radiograph turned, zoomed or cropped (markers, lead
letters and every bone edge agree). On FracAtlas, whose full-size radiographs are smooth at 128 px,
feet or knees of different patients in the same pose also reached 0.93-0.96; their fine detail
correlates at 0.0-0.35 (median 0.20), while multiregion's turned copies keep it at 0.42 or more in
95 of 100 pairs (median 0.80): hence ``MIN_DETAIL``. Pairs from one patient's repeated exposures
sit on both sides of it. Everything here is pure computation on arrays; OpenCV is imported lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

MID = 128  # side of the square image kept per record in the index for this check
DESC = 32  # the descriptor image side, before the centre crop
DESC_CROP = 20  # centre crop of the descriptor image: rotation corners and borders left out
ANGLES = (-10.0, 0.0, 10.0)  # small turns tried for each of the 8 dihedral variants (degrees)
K_CANDIDATES = 8  # most similar images checked per image
MIN_SIMILARITY = 0.80  # descriptor cosine below which a pair is not even a candidate (zoom lowers it)
MIN_INLIERS = 10  # RANSAC affine inliers among ORB matches
MIN_OVERLAP = 0.5  # share of the first image covered by non-black pixels of both after the warp
MIN_NCC = 0.93  # pixel correlation over the overlap that confirms a copy
MIN_DETAIL = 0.40  # correlation of the fine detail (image minus its blur, sigma 1 px) over the overlap
ORB_FEATURES = 300


@dataclass(frozen=True)
class PairCheck:
    """What the keypoint check found for one pair of images."""

    inliers: int
    ncc: float
    overlap: float
    transform: int = 0  # dihedral transform (fracbench.data.index.dihedral order) applied to the first image
    detail: float = 0.0  # correlation of the fine detail (high-pass) over the overlap

    @property
    def confirmed(self) -> bool:
        return (self.inliers >= MIN_INLIERS and self.overlap >= MIN_OVERLAP and self.ncc >= MIN_NCC
                and self.detail >= MIN_DETAIL)


def mid_image(pixels: np.ndarray) -> np.ndarray:
    """The MID x MID uint8 square (aspect ignored, as the training resize does) kept in the index."""
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((MID, MID), Image.Resampling.BOX), dtype=np.uint8)


def _cv2():
    import cv2

    cv2.setNumThreads(1)  # small images: threads cost more than they save, and tests share 2 cores
    return cv2


def _crop_norm(img: np.ndarray) -> np.ndarray:
    o = (DESC - DESC_CROP) // 2
    c = img[o:o + DESC_CROP, o:o + DESC_CROP].astype(np.float32).ravel()
    c = c - c.mean()
    return c / (np.linalg.norm(c) + 1e-6)


def _desc_image(mid: np.ndarray) -> np.ndarray:
    cv2 = _cv2()
    t = cv2.resize(mid, (DESC, DESC), interpolation=cv2.INTER_AREA).astype(np.float32)
    return cv2.GaussianBlur(t, (3, 3), 0)


def descriptor(mid: np.ndarray) -> np.ndarray:
    """The plain descriptor of one MID image: (DESC_CROP**2,) float32, zero mean, unit norm."""
    return _crop_norm(_desc_image(mid))


def descriptor_variants(mid: np.ndarray) -> np.ndarray:
    """(8 * len(ANGLES), DESC_CROP**2): the descriptor under each turn/flip and small angle.

    Variant ``v`` is dihedral transform ``v // len(ANGLES)`` (fracbench.data.index.dihedral order)
    turned by ``ANGLES[v % len(ANGLES)]``.
    """
    from fracbench.data.index import dihedral

    cv2 = _cv2()
    t = _desc_image(mid)
    out = []
    for d in dihedral(t):
        d = np.ascontiguousarray(d)
        for ang in ANGLES:
            if ang == 0:
                out.append(_crop_norm(d))
                continue
            m = cv2.getRotationMatrix2D((DESC / 2 - 0.5, DESC / 2 - 0.5), ang, 1.0)
            out.append(_crop_norm(cv2.warpAffine(d, m, (DESC, DESC), borderMode=cv2.BORDER_REFLECT)))
    return np.stack(out)


def descriptors(mids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain descriptors (N, D) and variants (N, V, D) of a stack of MID images."""
    if len(mids) == 0:
        d = DESC_CROP * DESC_CROP
        return np.zeros((0, d), np.float32), np.zeros((0, 8 * len(ANGLES), d), np.float32)
    return np.stack([descriptor(m) for m in mids]), np.stack([descriptor_variants(m) for m in mids])


def nearest(variants: np.ndarray, base: np.ndarray, k: int = K_CANDIDATES, exclude_self: bool = False,
            block: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each query (its variants), the ``k`` most similar rows of ``base``.

    Returns (indices (Q, k), similarities (Q, k), best variant (Q, k)), most similar first;
    ``exclude_self`` drops the query's own row (queries and base are the same images).
    """
    q, v, _ = variants.shape
    n = len(base)
    k = max(0, min(k, n - (1 if exclude_self else 0)))
    idx = np.zeros((q, k), np.int64)
    sim = np.zeros((q, k), np.float32)
    var = np.zeros((q, k), np.int64)
    if k == 0 or q == 0:
        return idx, sim, var
    for s in range(0, q, block):
        chunk = variants[s:s + block]
        scores = (chunk.reshape(-1, chunk.shape[-1]) @ base.T).reshape(len(chunk), v, n)
        best_v = scores.argmax(1)
        best = scores.max(1)
        if exclude_self:
            best[np.arange(len(chunk)), np.arange(s, s + len(chunk))] = -np.inf
        top = np.argpartition(-best, k - 1, axis=1)[:, :k]
        top_s = np.take_along_axis(best, top, 1)
        order = np.argsort(-top_s, axis=1, kind="stable")
        idx[s:s + len(chunk)] = np.take_along_axis(top, order, 1)
        sim[s:s + len(chunk)] = np.take_along_axis(top_s, order, 1)
        var[s:s + len(chunk)] = np.take_along_axis(best_v, idx[s:s + len(chunk)], 1)
    return idx, sim, var


class Matcher:
    """ORB features per (image, turn/flip), computed once, and the pair check."""

    def __init__(self, mids: Sequence[np.ndarray] | np.ndarray, others: Sequence[np.ndarray] | np.ndarray | None = None):
        cv2 = _cv2()
        self.mids = mids
        self.others = mids if others is None else others
        self.orb = cv2.ORB_create(nfeatures=ORB_FEATURES, edgeThreshold=12, patchSize=12, fastThreshold=8)
        self.bf = cv2.BFMatcher(cv2.NORM_HAMMING)
        self._feat: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray | None]] = {}

    def _image(self, side: int, i: int, t: int) -> np.ndarray:
        from fracbench.data.index import dihedral

        img = (self.mids if side == 0 else self.others)[i]
        return img if t == 0 else np.ascontiguousarray(dihedral(img)[t])

    def _features(self, side: int, i: int, t: int):
        key = (side, i, t)
        if key not in self._feat:
            kp, d = self.orb.detectAndCompute(self._image(side, i, t), None)
            self._feat[key] = (np.float32([p.pt for p in kp]).reshape(-1, 2), d)
        return self._feat[key]

    def check(self, i: int, j: int, transform: int = 0) -> PairCheck:
        """Is ``mids[i]`` (under dihedral ``transform``) a turned/zoomed/cropped copy of ``others[j]``?"""
        cv2 = _cv2()
        pa, da = self._features(0, i, transform)
        pb, db = self._features(1, j, 0)
        none = PairCheck(0, 0.0, 0.0, transform)
        if da is None or db is None or len(da) < 6 or len(db) < 6:
            return none
        good = [m[0] for m in self.bf.knnMatch(da, db, k=2) if len(m) == 2 and m[0].distance < 0.8 * m[1].distance]
        if len(good) < 6:
            return none
        src = pa[[g.queryIdx for g in good]]
        dst = pb[[g.trainIdx for g in good]]
        t, inl = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0)
        if t is None or inl is None:
            return none
        a = self._image(0, i, transform).astype(np.float32)
        b = self._image(1, j, 0).astype(np.float32)
        warped = cv2.warpAffine(b, t, (a.shape[1], a.shape[0]), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR,
                                borderValue=-1.0)
        # black corners left by a turn and the padding of the warp are not picture: leave them out
        mask = (warped >= 0) & (a > 8) & (warped > 8)
        overlap = float(mask.mean())
        if overlap < 0.05:
            return PairCheck(int(inl.sum()), 0.0, overlap, transform)
        ncc = _corr(a[mask], warped[mask])
        # smooth anatomy correlates across different patients; the fine detail (edges, texture, noise
        # grain) of one radiograph survives a turn and a zoom, and that of two radiographs does not
        inner = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        filled = np.where(warped < 0, a, warped).astype(np.float32)
        ha = a - cv2.GaussianBlur(a, (0, 0), 1.0)
        hb = filled - cv2.GaussianBlur(filled, (0, 0), 1.0)
        detail = _corr(ha[inner], hb[inner]) if inner.any() else 0.0
        return PairCheck(int(inl.sum()), ncc, overlap, transform, detail)


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum() + 1e-9))


def find_near_copies(mids: np.ndarray, rows: Sequence[int], same: Callable[[int, int], bool] | None = None,
                     join: Callable[[int, int], None] | None = None, k: int = K_CANDIDATES,
                     progress: bool = False) -> list[tuple[int, int, PairCheck]]:
    """Confirmed copy pairs among ``rows`` of ``mids`` (indices are into ``mids``).

    ``same(i, j)`` says whether two images are already known to be copies (a union-find over
    earlier stages and earlier pairs, updated through ``join(i, j)`` as each copy is confirmed):
    such pairs are not checked again, which keeps the work near-linear in sets with large groups.
    Pairs are checked most similar first.
    """
    rows = list(rows)
    if len(rows) < 2:
        return []
    base, variants = descriptors(mids[rows])
    idx, sim, var = nearest(variants, base, k=k, exclude_self=True)
    pairs = [(float(sim[a, c]), a, int(idx[a, c]), int(var[a, c]) // len(ANGLES))
             for a in range(len(rows)) for c in range(idx.shape[1]) if sim[a, c] >= MIN_SIMILARITY]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    matcher = Matcher(mids[rows])
    found: list[tuple[int, int, PairCheck]] = []
    seen: set[tuple[int, int]] = set()
    from fracbench.progress import track

    for _, a, b, t in track(pairs, "Checking near copies", total=len(pairs), enabled=progress):
        i, j = rows[a], rows[b]
        key = (min(i, j), max(i, j))
        if key in seen or (same is not None and same(i, j)):
            continue
        seen.add(key)
        chk = matcher.check(a, b, t)
        if chk.confirmed:
            found.append((i, j, chk))
            if join is not None:
                join(i, j)
    return found


def cross_copies(mids_a: np.ndarray, mids_b: np.ndarray, k: int = 3) -> list[tuple[int, int, PairCheck]]:
    """Confirmed pairs (i in a, j in b) between two sets of images: the same radiograph in two datasets."""
    if len(mids_a) == 0 or len(mids_b) == 0:
        return []
    base_b, _ = descriptors(mids_b)
    _, var_a = descriptors(mids_a)
    idx, sim, var = nearest(var_a, base_b, k=k)
    matcher = Matcher(mids_a, mids_b)
    out = []
    for a in range(len(mids_a)):
        for c in range(idx.shape[1]):
            if sim[a, c] < MIN_SIMILARITY:
                continue
            chk = matcher.check(a, int(idx[a, c]), int(var[a, c]) // len(ANGLES))
            if chk.confirmed:
                out.append((a, int(idx[a, c]), chk))
                break
    return out


def nearest_similarity(query_mids: np.ndarray, base_mids: np.ndarray) -> np.ndarray:
    """For each query image, the highest descriptor similarity to any base image (under turns/flips)."""
    if len(query_mids) == 0 or len(base_mids) == 0:
        return np.zeros(len(query_mids), np.float32)
    base, _ = descriptors(base_mids)
    _, var = descriptors(query_mids)
    _, sim, _ = nearest(var, base, k=1)
    return sim[:, 0]
