"""Descriptors that see a copy whatever its turn, zoom or mirror: polar samples of the square.

Each letterboxed square (fracbench.copies.features.MID) is blurred, shrunk to ``SIDE`` px and
sampled on ``RINGS`` circles around its centre at ``ANGLES`` angles. In these polar samples a turn
by any angle is a circular shift along the angle axis and a mirror is its reversal, so:

- the magnitudes of each ring's Fourier transform along the angle (``invariant``) do not change
  under any turn or mirror: one vector per image, compared by cosine, shortlists candidates among
  thousands of images at the cost of one matrix product;
- the circular cross-correlation of two polar samples (``polar_score``), maximised over shifts,
  the mirror and a few zooms (``SCALES``: the query sampled on wider circles), scores a pair as if
  every turn had been tried, and also says which turn and mirror fit best.

Zoom is handled on the query side only: every image is a query against every other, so a pair
where one image is the other zoomed by up to 1.3x is seen from the zoomed side. The rings stop at
``R_MAX`` so that the widest query ring stays inside the square.
"""

from __future__ import annotations

import numpy as np

SIDE = 64  # the square is shrunk to this side before polar sampling
RINGS = 16  # circles sampled
ANGLES = 64  # samples per circle (5.6 degrees apart)
R_MIN, R_MAX = 2.0, 22.0  # radii of the innermost and outermost circle at SIDE px
SCALES = (1.0, 1.1, 1.2, 1.3)  # query zooms tried (R_MAX * 1.3 = 28.6 < SIDE / 2)
BLUR = 1.2  # Gaussian sigma (px at SIDE) before sampling: tolerance to small shifts and re-encoding
HARMONICS = ANGLES // 2 + 1


def _cv2():
    import cv2

    cv2.setNumThreads(1)  # small images: threads cost more than they save, and tests share 2 cores
    return cv2


def _small(mid: np.ndarray) -> np.ndarray:
    cv2 = _cv2()
    t = cv2.resize(mid, (SIDE, SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    return cv2.GaussianBlur(t, (0, 0), BLUR)


_RING = np.linspace(R_MIN, R_MAX, RINGS, dtype=np.float32)[:, None]
_THETA = (2 * np.pi * np.arange(ANGLES, dtype=np.float32) / ANGLES)[None, :]


def centre(small: np.ndarray) -> tuple[float, float]:
    """The intensity centroid (x, y): it moves, turns and zooms with the picture, unlike the frame's centre."""
    w = np.maximum(small - np.percentile(small, 10), 0)
    tot = float(w.sum())
    if tot <= 0:
        return SIDE / 2 - 0.5, SIDE / 2 - 0.5
    ys, xs = np.mgrid[0:SIDE, 0:SIDE]
    return float((w * xs).sum() / tot), float((w * ys).sum() / tot)


def polar(mid: np.ndarray, scale: float = 1.0, small: np.ndarray | None = None,
          at: tuple[float, float] | None = None) -> np.ndarray:
    """(RINGS, ANGLES) float32 polar samples of one square around its centroid, zero mean and unit norm."""
    cv2 = _cv2()
    small = _small(mid) if small is None else small
    cx, cy = centre(small) if at is None else at
    r = _RING * scale
    mx = (cx + r * np.cos(_THETA)).astype(np.float32)
    my = (cy + r * np.sin(_THETA)).astype(np.float32)
    p = cv2.remap(small, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    p = p - p.mean()
    return (p / (np.linalg.norm(p) + 1e-6)).astype(np.float32)


def _invariant(p: np.ndarray) -> np.ndarray:
    m = np.abs(np.fft.rfft(p, axis=-1)).reshape(*p.shape[:-2], -1)
    m = m - m.mean(-1, keepdims=True)
    return (m / (np.linalg.norm(m, axis=-1, keepdims=True) + 1e-6)).astype(np.float32)


SHIFTS = tuple((dx, dy) for dy in (-3.0, 0.0, 3.0) for dx in (-3.0, 0.0, 3.0) if dx or dy)  # px at SIDE


def encode_polar(mids: np.ndarray, shifts: bool = True) -> np.ndarray:
    """(N, V, RINGS, ANGLES): every square's polar samples around the frame's centre at each query zoom
    (variant 0: scale 1, centred: the base descriptor), then, with ``shifts``, at each zoom around
    centres moved by ``SHIFTS`` (crops and shifts move the picture in the frame)."""
    c = SIDE / 2 - 0.5
    centres = [(c, c)] + ([(c + dx, c + dy) for dx, dy in SHIFTS] if shifts else [])
    out = np.zeros((len(mids), len(centres) * len(SCALES), RINGS, ANGLES), np.float32)
    for i, m in enumerate(mids):
        small = _small(m)
        v = 0
        for at in centres:
            for sc in SCALES:
                out[i, v] = polar(m, sc, small, at)
                v += 1
    return out


def encode_centroid(mids: np.ndarray) -> np.ndarray:
    """(N, S, RINGS, ANGLES): every square's polar samples around its intensity centroid, at each query zoom
    (variant 0: scale 1, the base). A crop or shift moves the picture in the frame, and the frame-centred
    samples with it (``SHIFTS`` only reach 3 px); the centroid moves with the picture."""
    out = np.zeros((len(mids), len(SCALES), RINGS, ANGLES), np.float32)
    for i, m in enumerate(mids):
        small = _small(m)
        at = centre(small)
        for v, sc in enumerate(SCALES):
            out[i, v] = polar(m, sc, small, at)
    return out


def describe(mids: np.ndarray, query: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The shortlist descriptors of squares: invariant vectors around the frame centre (with shifts) and around
    the intensity centroid, each (N, V, RINGS * HARMONICS) with variant 0 the base. Two families because each
    misses what the other sees: the frame centre is stable under turns and zooms about it, the centroid under
    crops and shifts (BENCHMARKS.md, Copy finding). ``query=False``: the bases only (variant 0), for images
    that are only ever compared against."""
    mids = np.asarray(mids)
    if not query:
        return invariant(encode_polar(mids, shifts=False))[:, :1], invariant(encode_centroid(mids))[:, :1]
    return invariant(encode_polar(mids)), invariant(encode_centroid(mids))


def invariant(polars: np.ndarray) -> np.ndarray:
    """Turn- and mirror-invariant vectors (..., RINGS * HARMONICS) of polar samples, unit norm."""
    return _invariant(polars)


def shortlist(query_inv: np.ndarray, base_inv: np.ndarray, m: int, exclude: np.ndarray | None = None,
              block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For each query (its zooms' invariant vectors, (Q, S, D)), the ``m`` most similar base rows.

    ``query_inv`` and ``base_inv`` may also be tuples of descriptor families (``describe``), paired in order:
    a pair's score is then its best over the families.

    ``exclude`` (Q, N) bool, or a callable-free mask built by the caller, removes base rows a query
    must not be paired with (itself, members of its own group). Returns indices (Q, m') and
    similarities, most similar first; m' = min(m, N).
    """
    fams_q = query_inv if isinstance(query_inv, (tuple, list)) else (query_inv,)
    fams_b = base_inv if isinstance(base_inv, (tuple, list)) else (base_inv,)
    q = fams_q[0].shape[0]
    n = len(fams_b[0])
    m = max(0, min(m, n))
    idx = np.zeros((q, m), np.int64)
    sim = np.full((q, m), -np.inf, np.float32)
    if m == 0 or q == 0:
        return idx, sim
    for a in range(0, q, block):
        scores = None
        for fq, fb in zip(fams_q, fams_b):  # the best score over descriptor families
            chunk = fq[a:a + block]
            sc = (chunk.reshape(-1, chunk.shape[-1]) @ fb.T).reshape(len(chunk), chunk.shape[1], n).max(1)
            scores = sc if scores is None else np.maximum(scores, sc)
        if exclude is not None:
            scores[exclude[a:a + block]] = -np.inf
        top = np.argpartition(-scores, m - 1, axis=1)[:, :m]  # type: ignore[operator]
        top_s = np.take_along_axis(scores, top, 1)
        order = np.argsort(-top_s, axis=1, kind="stable")
        idx[a:a + len(chunk)] = np.take_along_axis(top, order, 1)
        sim[a:a + len(chunk)] = np.take_along_axis(top_s, order, 1)
    return idx, sim


def polar_score(query: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best circular correlation of query polars against base polars, pair by pair.

    ``query`` (P, S, RINGS, ANGLES) (each pair's query at every zoom), ``base`` (P, RINGS, ANGLES)
    (scale 1). Returns per pair: the score (correlation of unit-norm samples, 1 = identical), the
    zoom index, whether the mirror won, and the turn in degrees that maps the query onto the base.
    """
    fb = np.fft.rfft(base, axis=-1)[:, None]  # (P, 1, R, H)
    fq = np.fft.rfft(query, axis=-1)  # (P, S, R, H)
    fqm = np.fft.rfft(query[..., ::-1], axis=-1)  # mirror: angle reversed
    plain = np.fft.irfft((np.conj(fq) * fb).sum(-2), n=ANGLES, axis=-1)  # (P, S, A)
    mirr = np.fft.irfft((np.conj(fqm) * fb).sum(-2), n=ANGLES, axis=-1)
    both = np.stack([plain, mirr], 1)  # (P, 2, S, A)
    flat = both.reshape(len(base), -1)
    best = flat.argmax(1)
    score = flat[np.arange(len(base)), best]
    mirror, zoom, shift = np.unravel_index(best, both.shape[1:])
    return score.astype(np.float32), zoom, mirror.astype(bool), shift * (360.0 / ANGLES)
