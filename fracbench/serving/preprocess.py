"""Pixels to the model's input, exactly as training sees them (one step of serving: checkpoint, preprocess, model).

Training reads images from the decode cache, which holds ``resize_square(decode_image(path))`` and
normalises batches with ``loader.to_input``; :func:`preprocess` is those same two calls.
"""

from __future__ import annotations

import numpy as np
import torch


def preprocess(pixels: np.ndarray, size: int, channels: int) -> torch.Tensor:
    """(H, W) uint8 grayscale -> (1, channels, size, size) float in [-1, 1], as training sees it."""
    from fracbench.data.cache import resize_square
    from fracbench.data.loader import to_input

    gray = as_gray_uint8(pixels)
    small = np.ascontiguousarray(resize_square(gray, size))
    if not small.flags.writeable:
        small = small.copy()
    return to_input(torch.from_numpy(small)[None], channels)


def as_gray_uint8(pixels: np.ndarray) -> np.ndarray:
    """Accept (H, W) uint8, or (H, W, 3|4) uint8 colour (reduced to luminance as the decoder does)."""
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {arr.dtype}; decode files with fracbench.data.decode")
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        from PIL import Image

        im = Image.fromarray(np.ascontiguousarray(arr))  # RGB or RGBA from the shape
        if im.mode == "RGBA":
            black = Image.new("RGBA", im.size, (0, 0, 0, 255))
            im = Image.alpha_composite(black, im)
        arr = np.asarray(im.convert("L"), dtype=np.uint8)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"expected an (H, W) grayscale image, got shape {arr.shape}")
    return arr
