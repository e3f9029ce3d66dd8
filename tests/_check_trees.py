"""Synthetic radiographs for the check tests (the browser test imports them without the slow fixtures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def radiograph(seed: int, size: int = 160) -> np.ndarray:
    """A textured grey picture with bone-like bars, joints and a marker (tests/copies/test_copies.py's helper)."""
    rng = np.random.default_rng(seed)
    im = Image.new("L", (size, size), 30)
    d = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = rng.integers(20, size - 60, 2)
        w, h = rng.integers(12, 30), rng.integers(40, 120)
        d.rounded_rectangle([x0, y0, x0 + w, min(size - 5, y0 + h)], radius=6, fill=int(rng.integers(140, 230)))
    for _ in range(8):
        x, y = rng.integers(10, size - 30, 2)
        r = int(rng.integers(6, 18))
        d.ellipse([x, y, x + r, y + r], fill=int(rng.integers(100, 250)))
    d.text((int(rng.integers(10, 60)), int(rng.integers(10, 60))), f"R{seed}", fill=255)
    noise = rng.normal(0, 6, (size, size))
    return np.clip(np.asarray(im.filter(ImageFilter.GaussianBlur(1.2)), np.float64) + noise, 0, 255).astype(np.uint8)


def radiograph_png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(radiograph(seed)).save(path, format="PNG")
    return path
