"""What copy finding keeps of each image: hashes, a thumbnail and a letterboxed square.

``encode(pixels)`` is the one place these facts are made (imagededup's ``encode_images``): the data
layer calls it once per decoded image and caches the result beside the decode.

The square (``MID`` px) keeps the image's aspect ratio, centred on black (letterbox). A copy turned
by any angle, zoomed, cropped or mirrored is then a similarity transform of its source in this
square, whatever the source's aspect, which is what both the rotation search of the candidates
(fracbench.copies.descriptors) and the keypoint check (fracbench.copies.confirm) assume. Squashing
to a square (as training does) would turn a rotation of a 373x454 radiograph into a shear.
"""

from __future__ import annotations

import hashlib

import numpy as np

THUMB = 32  # thumbnail side used for perceptual hashes and pixel confirmation of re-encodes
MID = 192  # side of the letterboxed square kept for descriptors and keypoints (a 45-degree turn in an
#             enlarged frame still leaves ~135 px of picture for the detail rule)
FEATURES_VERSION = 3  # 3: letterboxed 192 px squares (2: squashed 128 px squares)


def dihedral(a: np.ndarray) -> list[np.ndarray]:
    """The eight rotations and flips of a 2-D array, identity first (order: rot k, then its mirror)."""
    out = []
    for k in range(4):
        r = np.rot90(a, k)
        out.append(r)
        out.append(np.fliplr(r))
    return out


def phash64(thumb: np.ndarray) -> int:
    """DCT perceptual hash (as imagehash.phash) of a THUMBxTHUMB uint8 array, as an int."""
    from scipy.fft import dctn

    d = dctn(thumb.astype(np.float64), norm="ortho")[:8, :8]
    bits = (d > np.median(d)).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def thumb(pixels: np.ndarray) -> np.ndarray:
    """THUMB x THUMB uint8 (aspect ignored): the perceptual hash's input."""
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((THUMB, THUMB), Image.Resampling.BILINEAR), dtype=np.uint8)


def mid_image(pixels: np.ndarray, side: int = MID) -> np.ndarray:
    """``side`` x ``side`` uint8: the image scaled to fit, aspect kept, centred on black."""
    from PIL import Image

    h, w = pixels.shape[:2]
    s = side / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    small = np.asarray(Image.fromarray(pixels).resize((nw, nh), Image.Resampling.BOX), dtype=np.uint8)
    out = np.zeros((side, side), np.uint8)
    y, x = (side - nh) // 2, (side - nw) // 2
    out[y:y + nh, x:x + nw] = small
    return out


def pixel_sha256(pixels: np.ndarray) -> str:
    return hashlib.sha256(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()


def encode(pixels: np.ndarray) -> dict:
    """Every per-image fact copy finding needs, from decoded 2-D uint8 pixels.

    Returns ``pixel_sha256``, ``phash`` (the 8 dihedral hashes as decimal strings, identity first),
    ``thumb`` (THUMB square) and ``mid`` (MID letterboxed square).
    """
    t = thumb(pixels)
    return {"pixel_sha256": pixel_sha256(pixels), "phash": [str(phash64(v)) for v in dihedral(t)],
            "thumb": t, "mid": mid_image(pixels)}
