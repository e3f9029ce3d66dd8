"""Planted copies: known transforms of known radiographs, the ground truth copy finding is measured on.

``plant(pixels, kind, rng)`` returns one copy of a 2-D uint8 radiograph made the way leaky public
sets make theirs (turns with black corners or an enlarged frame, 90-degree turns, mirrors, zooms,
crops and shifts, brightness and contrast changes, re-encoding, resizing). The benchmark
(benchmarks/test_copies.py) and the tests use it on real or synthetic radiographs; the kinds and
their ranges are those the detector promises to find (fracbench.copies).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np

KINDS = ("byte", "reencode", "resize", "brightness_contrast", "turn_3_15", "turn_15_45", "turn_90",
         "mirror", "mirror_turn", "zoom", "crop_shift")


def _pil(px: np.ndarray):
    from PIL import Image

    return Image.fromarray(px)


def _arr(img) -> np.ndarray:
    return np.asarray(img.convert("L"), dtype=np.uint8)


def _turn(px: np.ndarray, deg: float, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    return _arr(_pil(px).rotate(deg, resample=Image.Resampling.BILINEAR, expand=bool(rng.integers(2)), fillcolor=0))


def _zoom(px: np.ndarray, z: float, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """Crop a window 1/z of each side (its centre moved by dx, dy of the side) and scale it back."""
    from PIL import Image

    h, w = px.shape
    ch, cw = h / z, w / z
    cx = np.clip(w / 2 + dx * w, cw / 2, w - cw / 2)
    cy = np.clip(h / 2 + dy * h, ch / 2, h - ch / 2)
    box = (int(cx - cw / 2), int(cy - ch / 2), int(cx + cw / 2), int(cy + ch / 2))
    return _arr(_pil(px).crop(box).resize((w, h), Image.Resampling.BILINEAR))


def _signed(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi) * rng.choice([-1, 1]))


def _jpeg(px: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    _pil(px).save(buf, "JPEG", quality=q)
    buf.seek(0)
    from PIL import Image

    return _arr(Image.open(buf))


def _bc(px: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    c = 1 + _signed(rng, 0.08, 0.20)
    b = _signed(rng, 0.08, 0.20) * 255
    return np.clip(px.astype(np.float32) * c + b, 0, 255).astype(np.uint8)


_MAKERS: dict[str, Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, dict]]] = {
    "byte": lambda px, r: (px, {}),
    "reencode": lambda px, r: (_jpeg(px, int(r.integers(60, 90))), {}),
    "resize": lambda px, r: (lambda s: (_arr(_pil(px).resize((max(8, int(px.shape[1] * s)), max(8, int(px.shape[0] * s))))),
                                        {"scale": s}))(float(r.uniform(0.5, 0.9))),
    "brightness_contrast": lambda px, r: (_bc(px, r), {}),
    "turn_3_15": lambda px, r: (lambda d: (_turn(px, d, r), {"angle": d}))(_signed(r, 3, 15)),
    "turn_15_45": lambda px, r: (lambda d: (_turn(px, d, r), {"angle": d}))(_signed(r, 15, 45)),
    "turn_90": lambda px, r: (lambda k: (np.ascontiguousarray(np.rot90(px, k)), {"angle": 90 * k}))(int(r.integers(1, 4))),
    "mirror": lambda px, r: (np.ascontiguousarray(np.fliplr(px) if r.integers(2) else np.flipud(px)), {}),
    "mirror_turn": lambda px, r: (lambda d: (_turn(np.ascontiguousarray(np.fliplr(px)), d, r), {"angle": d}))(_signed(r, 3, 45)),
    "zoom": lambda px, r: (lambda z: (_zoom(px, z), {"zoom": z}))(float(r.uniform(1.05, 1.3))),
    "crop_shift": lambda px, r: (lambda z, dx, dy: (_zoom(px, z, dx, dy), {"zoom": z, "shift": (dx, dy)}))(
        float(r.uniform(1.05, 1.2)), _signed(r, 0.02, 0.06), _signed(r, 0.02, 0.06)),
}


def plant(pixels: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """One copy of ``pixels`` of the given kind, and its parameters (angle, zoom, ...)."""
    if kind not in _MAKERS:
        raise ValueError(f"unknown copy kind {kind!r}; expected one of {', '.join(KINDS)}")
    out, params = _MAKERS[kind](pixels, rng)
    return np.ascontiguousarray(out), {"kind": kind, **params}
