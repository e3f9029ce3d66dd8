"""Is this pair one radiograph? Align the two squares, then compare their pixels and fine detail.

Two ways to align, so that the grouping and the split verifier do not lean on one method:

- ``Matcher.check``: ORB keypoints (turn-invariant) of the pair, matched with a ratio test, a
  similarity transform (turn, uniform zoom, shift) fitted with RANSAC, refined by ECC
  (OpenCV's enhanced correlation coefficient, which maximises the correlation directly).
- ``Matcher.check_polar``: no keypoints; the polar rotation search of fracbench.copies.descriptors
  gives the turn, mirror and zoom, which start the same ECC refinement.

Either way the verdict is the same pixel rule (``PairCheck.confirmed``): the aligned pictures
overlap (``MIN_OVERLAP`` of the smaller picture), correlate (``MIN_NCC``) and, on their edges, so
does their fine detail (``MIN_DETAIL``: each image minus its 1-px blur, on the 30% of pixels
with the most detail, so flat film noise does not dilute it). Smooth anatomy of two patients in
one pose correlates at 0.93 or more; the fine detail of two radiographs does not.

The comparison runs in the coarser of the two frames, with the finer image blurred first: a copy
shrunk by a 45-degree turn inside an enlarged frame would otherwise lose its detail to aliasing.
Black fill (letterbox, turned corners) and saturated pixels (brightness pushed to white) carry no
evidence and are left out. Thresholds: BENCHMARKS.md, "Copy finding", measured on planted copies
of FracAtlas radiographs and on the look-alike pairs among FracAtlas's distinct radiographs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fracbench.copies.features import dihedral

MIN_INLIERS = 10  # RANSAC similarity inliers among ORB matches
MIN_OVERLAP = 0.5  # share of the smaller picture's informative pixels that the aligned pair shares
MIN_NCC = 0.95  # pixel correlation over the overlap
MIN_DETAIL = 0.65  # fine-detail correlation on the overlap's most detailed pixels
EDGE_SHARE = 0.30  # share of overlap pixels (most detail first) the detail correlation is taken on
ORB_FEATURES = 300
DETAIL_SIGMA = 1.5  # px: the high-pass that keeps a radiograph's own detail (edges, grain) through a turn
ECC_ITERATIONS = 30  # refinement steps (most pairs converge in fewer)
MIN_ROUGH_NCC = 0.8  # correlation before refinement under which a pair is not refined: true copies start at
#                      0.86 or more (1st percentile 0.94), 86% of look-alike candidates below 0.8
DARK, BRIGHT = 8, 247  # pixel values at or beyond which a pixel is fill or saturated: no evidence


@dataclass(frozen=True)
class PairCheck:
    """What the check found for one pair of images."""

    inliers: int  # keypoint inliers (0 for the polar alignment)
    ncc: float
    overlap: float
    transform: int = 0  # dihedral transform (fracbench.copies.features.dihedral order) of the first image
    detail: float = 0.0
    method: str = "orb"  # "orb" or "polar"

    @property
    def confirmed(self) -> bool:
        return ((self.method == "polar" or self.inliers >= MIN_INLIERS) and self.overlap >= MIN_OVERLAP
                and self.ncc >= MIN_NCC and self.detail >= MIN_DETAIL)


def _cv2():
    import cv2

    cv2.setNumThreads(1)  # small images: threads cost more than they save, and tests share 2 cores
    return cv2


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum() + 1e-9))


def _refine(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """ECC refinement of ``t`` (a's coordinates to b's); the start when ECC does not converge."""
    cv2 = _cv2()
    try:
        _, w = cv2.findTransformECC(a, b, t.astype(np.float32), cv2.MOTION_AFFINE,
                                    (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITERATIONS, 1e-4),
                                    (a > DARK).astype(np.uint8), 3)
    except cv2.error:
        return t
    return w


def _rough_ncc(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> float:
    """Pixel correlation of the pair aligned by ``t`` before refinement, at a quarter of the pixels."""
    cv2 = _cv2()
    w = cv2.warpAffine(b, t, (a.shape[1], a.shape[0]), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR, borderValue=-1.0)
    m = (w > DARK) & (a > DARK) & (w < BRIGHT) & (a < BRIGHT)
    m[1::2, :] = False
    m[:, 1::2] = False
    return _corr(a[m], w[m]) if m.sum() > 50 else 0.0


def compare(a: np.ndarray, b: np.ndarray, t: np.ndarray, inliers: int = 0, transform: int = 0,
            method: str = "orb") -> PairCheck:
    """Pixel verdict on ``a`` and ``b`` (float32 squares) aligned by ``t`` (a's coordinates to b's)."""
    cv2 = _cv2()
    sc = float(np.sqrt(abs(np.linalg.det(t[:, :2]))))
    if sc < 1.0:  # a holds the picture at the larger scale: compare in b's (coarser) frame
        t = cv2.invertAffineTransform(t)
        a, b = b, a
        sc = 1.0 / max(sc, 1e-3)
    if sc > 1.05:  # b is shrunk onto a: blur it first, or its fine detail aliases
        b = cv2.GaussianBlur(b, (0, 0), 0.5 * np.sqrt(sc * sc - 1))
    if _rough_ncc(a, b, t) < MIN_ROUGH_NCC:  # far from a copy even before refinement: spare the ECC
        return PairCheck(inliers, 0.0, 0.0, transform, 0.0, method)
    t = _refine(a, b, t)
    warped = cv2.warpAffine(b, t, (a.shape[1], a.shape[0]), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR,
                            borderValue=-1.0)
    info_a = (a > DARK) & (a < BRIGHT)
    info_w = (warped > DARK) & (warped < BRIGHT)
    mask = info_a & info_w
    overlap = float(mask.sum() / max(1, min(info_a.sum(), info_w.sum())))
    if mask.mean() < 0.05:
        return PairCheck(inliers, 0.0, overlap, transform, 0.0, method)
    # the edges of fill and of the warp are where a sub-pixel shift shows most: leave a margin
    mask = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    if mask.sum() < 50:
        return PairCheck(inliers, 0.0, overlap, transform, 0.0, method)
    ncc = _corr(a[mask], warped[mask])
    filled = np.where(warped < 0, a, warped).astype(np.float32)
    ha = a - cv2.GaussianBlur(a, (0, 0), DETAIL_SIGMA)
    hb = filled - cv2.GaussianBlur(filled, (0, 0), DETAIL_SIGMA)
    mag = np.abs(ha) + np.abs(hb)
    edge = mask & (mag >= np.quantile(mag[mask], 1 - EDGE_SHARE))
    detail = _corr(ha[edge], hb[edge]) if edge.sum() > 50 else 0.0
    return PairCheck(inliers, ncc, overlap, transform, detail, method)


class Matcher:
    """Features per (image, turn/flip), computed once, and the pair checks.

    ``mids`` are the first images of pairs, ``others`` (default: the same) the second.
    """

    def __init__(self, mids: Sequence[np.ndarray] | np.ndarray, others: Sequence[np.ndarray] | np.ndarray | None = None):
        cv2 = _cv2()
        self.mids = mids
        self.others = mids if others is None else others
        self.orb = cv2.ORB_create(nfeatures=ORB_FEATURES, edgeThreshold=12, patchSize=12, fastThreshold=8)
        self.bf = cv2.BFMatcher(cv2.NORM_HAMMING)
        self._feat: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray | None]] = {}
        self._polar: dict[tuple[int, int], np.ndarray] = {}

    def _image(self, side: int, i: int, t: int) -> np.ndarray:
        img = (self.mids if side == 0 else self.others)[i]
        return img if t == 0 else np.ascontiguousarray(dihedral(img)[t])

    def _features(self, side: int, i: int, t: int):
        key = (side, i, t)
        if key not in self._feat:
            kp, d = self.orb.detectAndCompute(self._image(side, i, t), None)
            self._feat[key] = (np.float32([p.pt for p in kp]).reshape(-1, 2), d)
        return self._feat[key]

    def check(self, i: int, j: int, transform: int = 0) -> PairCheck:
        """Is ``mids[i]`` (under dihedral ``transform``) a turned/zoomed/cropped copy of ``others[j]``? (keypoints)"""
        cv2 = _cv2()
        pa, da = self._features(0, i, transform)
        pb, db = self._features(1, j, 0)
        none = PairCheck(0, 0.0, 0.0, transform)
        if da is None or db is None or len(da) < 6 or len(db) < 6:
            return none
        good = [m[0] for m in self.bf.knnMatch(da, db, k=2) if len(m) == 2 and m[0].distance < 0.8 * m[1].distance]
        if len(good) < 6:
            return none
        t, inl = cv2.estimateAffinePartial2D(pa[[g.queryIdx for g in good]], pb[[g.trainIdx for g in good]],
                                             method=cv2.RANSAC, ransacReprojThreshold=3.0)
        if t is None or inl is None or int(inl.sum()) < MIN_INLIERS:
            return PairCheck(0 if inl is None else int(inl.sum()), 0.0, 0.0, transform)
        return compare(self._image(0, i, transform).astype(np.float32), self._image(1, j, 0).astype(np.float32),
                       t, int(inl.sum()), transform)

    def check_any(self, i: int, j: int) -> PairCheck:
        """``check`` as it is and mirrored (ORB sees any turn but not a mirror): the better verdict."""
        best = None
        for t in (0, 1):
            c = self.check(i, j, t)
            if c.confirmed:
                return c
            if best is None or c.ncc > best.ncc:
                best = c
        return best

    def check_polar(self, i: int, j: int) -> PairCheck:
        """Is ``mids[i]`` a copy of ``others[j]``? Aligned by the polar rotation search, no keypoints."""
        from fracbench.copies import descriptors as D

        cv2 = _cv2()
        if (0, i) not in self._polar:
            self._polar[(0, i)] = D.encode_polar(np.asarray(self.mids[i])[None], shifts=False)[0]
        if (1, j) not in self._polar:
            self._polar[(1, j)] = D.encode_polar(np.asarray(self.others[j])[None], shifts=False)[0, 0]
        qa, pb = self._polar[(0, i)], self._polar[(1, j)]
        _, zoom, mirror, deg = D.polar_score(qa[None], pb[None])
        t = 5 if mirror[0] else 0  # the polar mirror reverses the angle (y -> -y): flipud, dihedral 5
        a = self._image(0, i, t).astype(np.float32)
        b = self._image(1, j, 0).astype(np.float32)
        side = a.shape[0]
        c = (side / 2 - 0.5, side / 2 - 0.5)
        best = PairCheck(0, 0.0, 0.0, t, 0.0, "polar")
        # the polar samples are taken in image coordinates (y down); try both senses of the turn
        for sign in (1.0, -1.0):
            m = cv2.getRotationMatrix2D(c, sign * float(deg[0]), 1.0 / D.SCALES[int(zoom[0])])
            chk = compare(a, b, m.astype(np.float32), 0, t, "polar")
            if chk.confirmed:
                return chk
            if chk.ncc > best.ncc:
                best = chk
        return best
