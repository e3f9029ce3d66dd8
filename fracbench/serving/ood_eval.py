"""How well the OOD guard separates real radiographs from things that are not radiographs.

In-distribution: a dataset's test split (never used to fit or calibrate the reference).
Out-of-distribution: images generated offline, nothing downloaded, in two kinds of family:

* simple probes: gradients, noise, extreme strips, text, flat images, 1/f colour noise;
* look-alikes, what a person might really upload instead of a radiograph: a radiograph photographed
  on a screen (perspective warp, colour cast, moiré, glare), a scanned page with a small radiograph
  on it (white page, text lines), a UI screenshot (flat panels, buttons, text; half of them with a
  radiograph in a viewer pane), a photo-like colour scene, an ultrasound-like speckle fan and a
  CT-like round slice. The screen, page and viewer families are built on real radiographs: the
  evaluated dataset's own test images when they can be read, else fracbench's synthetic ones.

Reports, per family, the recall (share of the family warned on) with a Wilson 95% CI, AUROC
(distance as the score, OOD = positive), and the false-warning rate on the *test* radiographs with
its Wilson CI. The threshold is calibrated on the validation split (the 95th percentile of its
distances), so the false-warning rate on that calibration set is 5% by construction: it is reported
as a calibration check, not as a performance figure.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ProbeFn = Callable[[np.random.Generator], np.ndarray]
LookAlikeFn = Callable[[np.random.Generator, np.ndarray], np.ndarray]  # (rng, base radiograph)


# --------------------------------------------------------------------------------------------
# probes (uint8, grayscale (H, W) or colour (H, W, 3))


def _gradient(rng: np.random.Generator) -> np.ndarray:
    h, w = (int(v) for v in rng.integers(200, 900, 2))
    kind = rng.integers(3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == 0:
        g = xx / max(w - 1, 1)
    elif kind == 1:
        g = yy / max(h - 1, 1)
    else:
        g = np.hypot(yy - h / 2, xx - w / 2) / math.hypot(h / 2, w / 2)
    if rng.random() < 0.5:
        g = 1 - g
    return (g * 255).astype(np.uint8)


def _gray_noise(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, tuple(int(v) for v in rng.integers(100, 700, 2)), dtype=np.uint8)


def _colour_noise(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (*(int(v) for v in rng.integers(100, 700, 2)), 3), dtype=np.uint8)


def _strip(rng: np.random.Generator) -> np.ndarray:
    long, short = int(rng.integers(2000, 5000)), int(rng.integers(5, 20))
    base = np.linspace(0, 255, long)[None, :] * np.ones((short, 1))
    base = base + rng.normal(0, 20, base.shape)
    px = np.clip(base, 0, 255).astype(np.uint8)
    return px if rng.random() < 0.5 else px.T.copy()


def _text(rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageDraw

    w, h = int(rng.integers(300, 800)), int(rng.integers(200, 600))
    bg = int(rng.integers(200, 256))
    im = Image.new("L", (w, h), bg)
    d = ImageDraw.Draw(im)
    words = ["invoice", "fracture", "hello", "total", "meeting", "cat", "radiograph", "lorem", "ipsum", "2024"]
    y = 10
    while y < h - 20:
        line = " ".join(rng.choice(words, int(rng.integers(3, 9))))
        d.text((10, y), line, fill=int(rng.integers(0, 80)))
        y += int(rng.integers(14, 30))
    return np.asarray(im, np.uint8)


def _flat(rng: np.random.Generator) -> np.ndarray:
    h, w = (int(v) for v in rng.integers(64, 800, 2))
    return np.full((h, w), int(rng.integers(0, 256)), np.uint8)


def _scene(rng: np.random.Generator) -> np.ndarray:
    """A colourful outdoor scene drawn with PIL: sky, sun, ground, houses, trees, a cat-like blob."""
    from PIL import Image, ImageDraw, ImageFilter

    w, h = int(rng.integers(400, 900)), int(rng.integers(300, 700))
    sky = np.linspace(rng.integers(80, 160, 3), rng.integers(180, 255, 3), h)
    arr = np.broadcast_to(sky[:, None, :], (h, w, 3)).astype(np.uint8).copy()
    im = Image.fromarray(arr)
    d = ImageDraw.Draw(im)
    horizon = int(h * rng.uniform(0.45, 0.7))
    d.rectangle([0, horizon, w, h], fill=tuple(int(v) for v in rng.integers((20, 90, 10), (90, 180, 70))))
    r = int(rng.integers(20, 60))
    cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, horizon // 2 + r + 1))
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 220, int(rng.integers(0, 120))))
    for _ in range(int(rng.integers(3, 12))):
        x0 = int(rng.integers(0, w - 40))
        bw, bh = int(rng.integers(30, 120)), int(rng.integers(30, 150))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        if kind == 0:  # a house with a roof
            d.rectangle([x0, horizon - bh, x0 + bw, horizon], fill=colour)
            d.polygon([(x0 - 5, horizon - bh), (x0 + bw // 2, horizon - bh - bw // 2), (x0 + bw + 5, horizon - bh)],
                      fill=(150, 40, 30))
        elif kind == 1:  # a tree
            d.rectangle([x0 + bw // 2 - 5, horizon - bh, x0 + bw // 2 + 5, horizon], fill=(90, 60, 30))
            d.ellipse([x0, horizon - bh - bw, x0 + bw, horizon - bh + 10], fill=(30, int(rng.integers(100, 200)), 40))
        else:  # an animal-ish blob with ears
            y0 = int(rng.integers(horizon, h - 30))
            d.ellipse([x0, y0, x0 + bw, y0 + bw // 2], fill=colour)
            d.polygon([(x0 + bw - 20, y0), (x0 + bw - 10, y0 - 20), (x0 + bw, y0)], fill=colour)
    return np.asarray(im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.5)))), np.uint8)


def _pink_noise(rng: np.random.Generator) -> np.ndarray:
    """Colour noise with a 1/f amplitude spectrum, as natural photographs have."""
    h, w = (int(v) for v in rng.integers(200, 600, 2))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w))
    chans = []
    for _ in range(3):
        phase = rng.uniform(0, 2 * np.pi, amp.shape)
        img = np.fft.irfft2(amp * np.exp(1j * phase), s=(h, w))
        img = (img - img.mean()) / (img.std() + 1e-9)
        chans.append(img)
    mix = rng.normal(0, 1, (3, 3)) * 0.5 + np.eye(3)  # correlated channels, as in photos
    arr = np.einsum("chw,dc->hwd", np.stack(chans), mix)
    arr = (arr - arr.min()) / (np.ptp(arr) + 1e-9)
    return (arr * 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# look-alikes: what a person might upload instead of a radiograph


def _fit(base: np.ndarray, long_side: int) -> np.ndarray:
    """``base`` (grayscale uint8) resized so its longer side is ``long_side``."""
    from PIL import Image

    h, w = base.shape[:2]
    s = long_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(base).resize(size, Image.Resampling.BILINEAR), np.uint8)


def _draw_lines(d: Any, rng: np.random.Generator, box: tuple[int, int, int, int], fill: Any, step: tuple[int, int]) -> None:
    """Lines of words (PIL's bitmap font) inside box = (x0, y0, x1, y1)."""
    words = ["patient", "report", "findings", "the", "of", "and", "impression", "normal", "study", "left", "right",
             "wrist", "no", "acute", "date", "2024", "page", "signed", "clinical", "history", "view", "AP"]
    x0, y0, x1, y1 = box
    y = y0
    while y < y1 - 10:
        n = int(rng.integers(3, max(4, (x1 - x0) // 40)))
        d.text((x0, y), " ".join(rng.choice(words, n))[: max(1, (x1 - x0) // 6)], fill=fill)
        y += int(rng.integers(*step))


def _screen_photo(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """A radiograph shown on a monitor and photographed: bezel, colour cast, moiré, glare, perspective."""
    import cv2

    shot = _fit(base, int(rng.integers(360, 560))).astype(np.float64)
    h, w = shot.shape
    bez = int(rng.integers(12, 40))
    screen = np.full((h + 2 * bez, w + 2 * bez), float(rng.integers(10, 40)))
    screen[bez:bez + h, bez:bez + w] = rng.uniform(15, 40) + shot * rng.uniform(0.7, 0.9)  # black level lifted
    sh, sw = screen.shape
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float64)
    # moiré: the camera's pixel grid beating against the screen's, a slow wave of fine stripes
    f1, f2 = rng.uniform(0.22, 0.35), rng.uniform(0.22, 0.35)
    a1, a2 = rng.uniform(0, np.pi), rng.uniform(0, np.pi)
    moire = (np.sin(2 * np.pi * f1 * (xx * np.cos(a1) + yy * np.sin(a1)))
             * np.sin(2 * np.pi * f2 * (xx * np.cos(a2) + yy * np.sin(a2))))
    screen = screen + rng.uniform(12, 30) * moire
    # glare: a soft bright blob where a window or lamp reflects
    gy, gx, gs = rng.uniform(0.1, 0.9) * sh, rng.uniform(0.1, 0.9) * sw, rng.uniform(0.12, 0.3) * max(sh, sw)
    glare = rng.uniform(60, 140) * np.exp(-((yy - gy) ** 2 + (xx - gx) ** 2) / (2 * gs * gs))
    cast = np.array([rng.uniform(0.75, 0.95), rng.uniform(0.9, 1.05), rng.uniform(1.0, 1.2)])  # monitors look blue
    rgb = np.clip((screen + glare)[..., None] * cast[None, None, :], 0, 255).astype(np.uint8)
    # perspective: the photo is taken at an angle, the screen lies on a room-coloured background
    out_w, out_h = int(sw * rng.uniform(1.15, 1.4)), int(sh * rng.uniform(1.15, 1.4))
    src = np.float32([[0, 0], [sw, 0], [sw, sh], [0, sh]])
    ox, oy = (out_w - sw) / 2, (out_h - sh) / 2
    jit = rng.uniform(-0.1, 0.1, (4, 2)) * np.array([sw, sh])
    dst = np.float32(src + np.array([ox, oy]) + jit)
    room = tuple(int(v) for v in rng.integers((60, 50, 40), (180, 160, 140)))
    warped = cv2.warpPerspective(rgb, cv2.getPerspectiveTransform(src, dst), (out_w, out_h),
                                 flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=room)
    noisy = warped.astype(np.float64) + rng.normal(0, rng.uniform(2, 6), warped.shape)  # sensor noise
    return cv2.GaussianBlur(np.clip(noisy, 0, 255).astype(np.uint8), (0, 0), rng.uniform(0.5, 1.2))


def _scanned_page(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """A scanned report page: white paper, lines of text, and a small radiograph printed on it."""
    from PIL import Image, ImageDraw

    w = int(rng.integers(600, 900))
    h = int(w * 1.414)
    paper = int(rng.integers(225, 256))
    im = Image.new("L", (w, h), paper)
    d = ImageDraw.Draw(im)
    m = int(w * 0.08)
    d.text((m, m // 2), "RADIOLOGY REPORT", fill=20)
    pic = _fit(base, int(w * rng.uniform(0.2, 0.38)))
    px, py = int(rng.integers(m, w - m - pic.shape[1])), int(rng.integers(m, h // 2))
    im.paste(Image.fromarray(pic), (px, py))
    d.rectangle([px - 1, py - 1, px + pic.shape[1], py + pic.shape[0]], outline=40)
    _draw_lines(d, rng, (m, m, w - m, py - 8), int(rng.integers(0, 70)), (14, 22))
    _draw_lines(d, rng, (m, py + pic.shape[0] + 16, w - m, h - m), int(rng.integers(0, 70)), (14, 22))
    arr = np.asarray(im.rotate(float(rng.uniform(-2, 2)), fillcolor=paper, resample=Image.Resampling.BILINEAR),
                     np.float64)
    return np.clip(arr + rng.normal(0, 3, arr.shape), 0, 255).astype(np.uint8)


def _ui_screenshot(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """A screenshot of an application: title bar, sidebar, flat panels, buttons, text; half hold a radiograph."""
    from PIL import Image, ImageDraw

    w, h = int(rng.integers(800, 1400)), int(rng.integers(500, 900))
    dark = rng.random() < 0.4
    bg = tuple(int(v) for v in (rng.integers(20, 50, 3) if dark else rng.integers(225, 256, 3)))
    fg = (230, 230, 230) if dark else (30, 30, 30)
    im = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(im)
    accent = tuple(int(v) for v in rng.integers(0, 256, 3))
    top = int(rng.integers(32, 60))
    d.rectangle([0, 0, w, top], fill=accent)
    d.text((12, top // 3), "fracture viewer - settings - help", fill=(255, 255, 255))
    side = int(w * rng.uniform(0.15, 0.25))
    d.rectangle([0, top, side, h], fill=tuple(max(0, c - 15) for c in bg))
    for i, y in enumerate(range(top + 20, h - 30, int(rng.integers(28, 44)))):
        d.text((14, y), f"item {i + 1}", fill=fg)
    x0, y0 = side + 20, top + 20
    if rng.random() < 0.5:  # a viewer pane with a radiograph in it
        pic = _fit(base, int(min(w - side - 40, h - top - 120) * rng.uniform(0.5, 0.9)))
        d.rectangle([x0 - 4, y0 - 4, x0 + pic.shape[1] + 4, y0 + pic.shape[0] + 4], fill=(0, 0, 0))
        im.paste(Image.fromarray(pic).convert("RGB"), (x0, y0))
        y0 += pic.shape[0] + 20
    for _ in range(int(rng.integers(2, 6))):  # panels of text
        pw, ph = int(rng.integers(150, 400)), int(rng.integers(60, 200))
        px, py = int(rng.integers(side + 10, max(side + 11, w - pw))), int(rng.integers(top + 10, max(top + 11, h - ph)))
        panel = tuple(int(min(255, c + (25 if dark else -12))) for c in bg)
        d.rounded_rectangle([px, py, px + pw, py + ph], radius=8, fill=panel, outline=tuple(min(255, c + 40) for c in panel))
        _draw_lines(d, rng, (px + 10, py + 8, px + pw - 10, py + ph - 6), fg, (14, 20))
    for _ in range(int(rng.integers(2, 6))):  # buttons
        bx, by = int(rng.integers(side + 10, w - 110)), int(rng.integers(top + 10, h - 40))
        d.rounded_rectangle([bx, by, bx + 100, by + 30], radius=6, fill=accent)
        d.text((bx + 20, by + 9), str(rng.choice(["OK", "Cancel", "Upload", "Analyse", "Save"])), fill=(255, 255, 255))
    return np.asarray(im, np.uint8)


def _ultrasound(rng: np.random.Generator) -> np.ndarray:
    """An ultrasound-like frame: a fan of speckle over dark background, attenuating with depth, with cysts."""
    from scipy.ndimage import gaussian_filter

    h, w = int(rng.integers(420, 620)), int(rng.integers(520, 800))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    apex_x, apex_y = w / 2 + rng.uniform(-20, 20), rng.uniform(10, 40)
    r = np.hypot(xx - apex_x, yy - apex_y)
    ang = np.arctan2(xx - apex_x, yy - apex_y)
    half, r0, r1 = np.deg2rad(rng.uniform(30, 45)), rng.uniform(20, 50), rng.uniform(0.8, 0.95) * (h - apex_y)
    fan = (np.abs(ang) < half) & (r > r0) & (r < r1)
    tissue = gaussian_filter(rng.normal(0, 1, (h, w)), rng.uniform(12, 30))
    tissue = 0.6 + 0.4 * (tissue - tissue.min()) / (np.ptp(tissue) + 1e-9)
    for _ in range(int(rng.integers(0, 3))):  # anechoic cysts
        cy, cx, a, b = rng.uniform(0.3, 0.8) * h, apex_x + rng.uniform(-0.2, 0.2) * w, rng.uniform(15, 50), rng.uniform(10, 35)
        tissue[((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 < 1] *= 0.1
    speckle = gaussian_filter(rng.rayleigh(1.0, (h, w)), (0.6, 1.5))  # speckle is elongated across the beam
    img = 110 * tissue * speckle * np.exp(-r / (rng.uniform(1.2, 2.5) * h))
    img = np.where(fan, np.clip(img * 1.6, 0, 255), 0.0)
    out = img.astype(np.uint8)
    for y in range(int(r0), int(r1), 40):  # the depth scale's ticks
        out[min(h - 1, y):min(h, y + 2), w - 20:w - 10] = 200
    return out


def _ct_slice(rng: np.random.Generator) -> np.ndarray:
    """A CT-like axial slice: a round body (chest or head) on black, with lungs, spine and ribs or a skull ring."""
    from scipy.ndimage import gaussian_filter

    n = int(rng.integers(384, 600))
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    cy, cx = n / 2 + rng.uniform(-10, 10), n / 2 + rng.uniform(-10, 10)
    img = np.zeros((n, n))
    if rng.random() < 0.5:  # chest
        a, b = n * rng.uniform(0.28, 0.34), n * rng.uniform(0.4, 0.46)
        body = ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2
        img[body < 1] = 70  # fat
        img[body < 0.8] = 115  # muscle and organs
        for side in (-1, 1):  # lungs
            lung = ((yy - cy + a * 0.05) / (a * 0.6)) ** 2 + ((xx - cx - side * b * 0.42) / (b * 0.33)) ** 2
            img[lung < 1] = 15
        img[(yy - cy - a * 0.7) ** 2 + (xx - cx) ** 2 < (a * 0.14) ** 2] = 235  # vertebra
        for t in np.linspace(0, 2 * np.pi, int(rng.integers(10, 16)), endpoint=False):  # ribs
            ry, rx = cy + 0.85 * a * np.sin(t), cx + 0.85 * b * np.cos(t)
            img[((yy - ry) / 6) ** 2 + ((xx - rx) / 10) ** 2 < 1] = 220
        img[(yy > cy + a + 12) & (yy < cy + a + 20) & (np.abs(xx - cx) < b * 1.1)] = 90  # the table
    else:  # head
        a = n * rng.uniform(0.3, 0.38)
        rr = np.hypot((yy - cy) / 1.15, xx - cx)
        img[rr < a] = 245  # skull
        img[rr < a * 0.92] = 105  # brain
        img[(np.abs(xx - cx) < 3) & (rr < a * 0.85)] = 60  # the falx
        for side in (-1, 1):  # ventricles
            img[((yy - cy) / (a * 0.25)) ** 2 + ((xx - cx - side * a * 0.12) / (a * 0.07)) ** 2 < 1] = 40
    img = gaussian_filter(img, 1.0) + rng.normal(0, rng.uniform(3, 8), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


# name -> (generator, whether it is built on a radiograph)
LOOK_ALIKES: dict[str, tuple[Callable[..., np.ndarray], bool]] = {
    "radiograph photographed on a screen": (_screen_photo, True),
    "scanned page with a small radiograph": (_scanned_page, True),
    "UI screenshot": (_ui_screenshot, True),
    "ultrasound-like speckle fan": (_ultrasound, False),
    "CT-like round slice": (_ct_slice, False),
}


PROBES: dict[str, ProbeFn] = {
    "gradient": _gradient,
    "gray noise": _gray_noise,
    "colour noise": _colour_noise,
    "strip (extreme aspect)": _strip,
    "text": _text,
    "flat": _flat,
    "photo-like scene": _scene,
    "1/f colour noise": _pink_noise,
}


LOOK_ALIKE_FAMILIES = ("photo-like scene", *LOOK_ALIKES)  # what the recall of the guard is judged on
BASE_SIZE = 384  # side of the synthetic radiographs the look-alikes are built on when no real one is given


def synthetic_bases(n: int = 8, seed: int = 0) -> list[np.ndarray]:
    """``n`` synthetic radiographs (fracbench.data.synthetic) to build the screen, page and viewer look-alikes on."""
    from fracbench.data.synthetic import render_case

    return [render_case(np.random.default_rng([seed, 9000, i]), BASE_SIZE, i % 2 == 0, 0.5).pixels for i in range(n)]


def fracatlas_bases(root: str | os.PathLike[str], n: int = 8) -> list[np.ndarray]:
    """``n`` FracAtlas radiographs read in place from ``root`` (the read-only copy; nothing is copied)."""
    from fracbench.data.decode import DecodeError, decode_image

    files = sorted((Path(root) / "images").rglob("*.jpg"))
    out: list[np.ndarray] = []
    for f in files[:: max(1, len(files) // (4 * n))]:
        try:
            out.append(decode_image(f).pixels)
        except DecodeError:
            continue
        if len(out) == n:
            break
    return out


def make_probes(per_family: int = 40, seed: int = 0,
                bases: list[np.ndarray] | None = None) -> dict[str, list[np.ndarray]]:
    """``per_family`` generated non-radiographs of each family (deterministic in ``seed`` and ``bases``).

    ``bases``: grayscale radiographs the screen, page and viewer look-alikes are built on (default
    :func:`synthetic_bases`); image ``k`` of a family uses ``bases[k % len(bases)]``.
    """
    bases = bases if bases else synthetic_bases(seed=seed)
    out = {name: [fn(np.random.default_rng([seed, i, k])) for k in range(per_family)]
           for i, (name, fn) in enumerate(PROBES.items())}
    for j, (name, (fn, on_base)) in enumerate(LOOK_ALIKES.items()):
        rngs = [np.random.default_rng([seed, 100 + j, k]) for k in range(per_family)]
        out[name] = [fn(r, bases[k % len(bases)]) if on_base else fn(r) for k, r in enumerate(rngs)]
    return out


# --------------------------------------------------------------------------------------------
# the evaluation


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def _pixel_distances(ck: Any, images: list[np.ndarray], batch: int = 64) -> np.ndarray:
    import torch

    from fracbench.serving.ood import features, ood_score, reference_of
    from fracbench.serving.predict import preprocess

    out = []
    for start in range(0, len(images), batch):
        x = torch.cat([preprocess(p, ck.image_size, ck.channels) for p in images[start:start + batch]])
        out.append(ood_score(reference_of(ck), features(ck.model, ck.meta["model"], x)))
    return np.concatenate(out) if out else np.zeros(0)


def probe_distances(ck: Any, probes: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """The guard's distance for every probe image of every family (``ck`` carries an OOD reference)."""
    return {name: _pixel_distances(ck, imgs) for name, imgs in probes.items()}


CALIBRATION_NOTE = ("The threshold is the {q:g}th percentile of the calibration ({split}) images' distances, so "
                    "the false-warning rate on that calibration set is {fw:g}% by construction (up to the "
                    "percentile's interpolation between two images): a check that the "
                    "threshold was calibrated as stated, not a performance figure. The performance figure is the "
                    "false-warning rate on the test radiographs, which played no part in fitting or calibration.")


def summarise(d_test: np.ndarray, d_probe: dict[str, np.ndarray], threshold: float, *,
              d_calib: np.ndarray | None = None, quantile: float = 0.95, calib_split: str = "val") -> dict[str, Any]:
    """Recall per family (Wilson 95% CIs), AUROC, test false warnings and the calibration check, from distances.

    A warning is a distance strictly above ``threshold`` (as :func:`fracbench.serving.ood.check_batch` decides).
    """
    from sklearn.metrics import roc_auc_score

    d_test = np.asarray(d_test, np.float64)
    k_false = int((d_test > threshold).sum())
    per: dict[str, Any] = {}
    for name, d in d_probe.items():
        d = np.asarray(d, np.float64)
        k = int((d > threshold).sum())
        ci = list(wilson(k, len(d)))
        per[name] = {"kind": "look-alike" if name in LOOK_ALIKE_FAMILIES else "simple probe",
                     "n": len(d), "warned": k, "recall": k / len(d) if len(d) else float("nan"), "recall_ci95": ci,
                     "warning_rate": k / len(d) if len(d) else float("nan"), "warning_rate_ci95": ci,
                     "auroc_vs_test": float(roc_auc_score(np.r_[np.zeros(len(d_test)), np.ones(len(d))],
                                                          np.r_[d_test, d])) if len(d) and len(d_test) else float("nan"),
                     "median_distance": float(np.median(d)) if len(d) else float("nan")}
    all_probe = np.concatenate([np.asarray(d, np.float64) for d in d_probe.values()]) if d_probe else np.zeros(0)
    look = [np.asarray(d_probe[n], np.float64) for n in d_probe if n in LOOK_ALIKE_FAMILIES]
    look_all = np.concatenate(look) if look else np.zeros(0)
    k_all, k_look = int((all_probe > threshold).sum()), int((look_all > threshold).sum())
    out: dict[str, Any] = {
        "threshold": float(threshold),
        "auroc": float(roc_auc_score(np.r_[np.zeros(len(d_test)), np.ones(len(all_probe))], np.r_[d_test, all_probe])),
        "false_warnings": k_false,
        "false_warning_rate": k_false / len(d_test),
        "false_warning_rate_ci95": list(wilson(k_false, len(d_test))),
        "probe_warning_rate": k_all / len(all_probe),
        "probe_warning_rate_ci95": list(wilson(k_all, len(all_probe))),
        "look_alike_recall": k_look / len(look_all) if len(look_all) else float("nan"),
        "look_alike_recall_ci95": list(wilson(k_look, len(look_all))),
        "families": per,
    }
    if d_calib is not None and len(d_calib):
        k_cal = int((np.asarray(d_calib) > threshold).sum())
        out["calibration_check"] = {
            "split": calib_split, "n": len(d_calib), "warned": k_cal, "false_warning_rate": k_cal / len(d_calib),
            "expected_by_construction": round(1 - quantile, 10),
            "note": CALIBRATION_NOTE.format(q=100 * quantile, split=calib_split, fw=round(100 * (1 - quantile), 6))}
    return out


def _portable(path: str | os.PathLike[str]) -> str:
    from fracbench.paths import REPO_ROOT

    p = Path(path).resolve()
    try:
        return p.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return p.name


def _test_bases(man: Any, n: int = 8) -> list[np.ndarray]:
    """Up to ``n`` of the manifest's test radiographs at full resolution (read in place, never copied)."""
    from fracbench.data.decode import DecodeError, decode_image

    out: list[np.ndarray] = []
    for row in man.split_rows("test"):
        try:
            out.append(decode_image(man.abspath(row)).pixels)
        except (DecodeError, OSError):
            continue
        if len(out) == n:
            break
    return out


def evaluate(checkpoint: str | os.PathLike[str], dataset: str, manifest: str | os.PathLike[str],
             data_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] = "results/ood",
             per_family: int = 40, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Evaluate the guard of ``checkpoint`` on ``dataset``'s test split against the probes and look-alikes.

    Uses the sidecar's reference when it has one; otherwise fits one on the manifest's train split
    and calibrates it on its val split (said in the output, the sidecar is left alone). The screen,
    page and viewer look-alikes are built on the dataset's own test radiographs (synthetic ones when
    none can be read). Writes ``out_dir/ood_eval.json`` and ``out_dir/ood_distances.png``; returns the JSON's content.
    """
    from fracbench.data.cache import build_cache
    from fracbench.data.manifest import Manifest
    from fracbench.io import atomic_write_json
    from fracbench.serving.checkpoint import load_checkpoint
    from fracbench.serving.ood import (
        _batches_features,
        _cache_batches,
        _usable_rows,
        fit_reference,
        ood_score,
    )

    ck = load_checkpoint(checkpoint)
    man = Manifest.read(manifest, dataset, data_dir)
    cache = build_cache(man, ck.image_size, progress=progress)
    source = "checkpoint sidecar"
    if ck.meta.get("ood_reference") is None:
        ck.meta["ood_reference"] = fit_reference(ck, cache, seed=seed)
        source = "fitted for this evaluation on the manifest's train split, calibrated on its val split"
    ref = ck.meta["ood_reference"]

    def distances(split: str) -> np.ndarray:
        rows = _usable_rows(cache, split)
        if not len(rows):
            return np.zeros(0)
        return ood_score(ref, _batches_features(ck.model, ck.meta["model"], _cache_batches(cache, rows, ck.channels)))

    d_test = distances("test")
    calib_split = str(ref.get("calibration_split", "val"))
    same_manifest = ref.get("manifest_sha256") in (None, man.fingerprint)
    d_calib = distances(calib_split) if same_manifest else None
    bases = _test_bases(man)
    base_note = (f"{len(bases)} of {dataset}'s test radiographs" if bases else
                 f"{len(synthetic_bases())} synthetic radiographs (fracbench.data.synthetic; no {dataset} test image "
                 "could be read)")
    probes = make_probes(per_family, seed, bases=bases or None)
    d_probe = probe_distances(ck, probes)
    thr = float(ref["threshold"])
    summary = summarise(d_test, d_probe, thr, d_calib=d_calib, quantile=float(ref.get("quantile", 0.95)),
                        calib_split=calib_split)
    if not same_manifest:
        summary["calibration_check"] = {"split": calib_split, "note": "not measured: the reference was calibrated on "
                                        "another manifest's split"}
    result = {
        "checkpoint": _portable(checkpoint),  # relative to the repository when inside it: no local paths
        "model": ck.meta["model"],
        "dataset": dataset,
        "manifest": _portable(manifest),
        "manifest_sha256": man.fingerprint,
        "reference_source": source,
        "reference": {k: ref.get(k) for k in ("method", "layer", "pool", "dim_in", "fit_images", "calibration_images",
                                              "quantile", "threshold", "shrinkage", "manifest_sha256")},
        "counts": {"test_radiographs": len(d_test), "probes": int(sum(len(d) for d in d_probe.values())),
                   "per_family": per_family,
                   "test_failed_to_decode": int(len(cache.indices("test")) - len(d_test))},
        "look_alike_base": base_note,
        **summary,
        "test_distance": {"median": float(np.median(d_test)), "p95": float(np.quantile(d_test, 0.95))},
        "seed": seed,
    }
    out = Path(out_dir)
    from fracbench import results as R

    result["environment"] = {**R.environment("cpu"), "created": R.now_iso()}  # commit, clean tree, hardware
    atomic_write_json(out / "ood_eval.json", result)
    _figure(out / "ood_distances.png", d_test, d_probe, thr, dataset)
    return result


def _figure(path: Path, d_test: np.ndarray, d_probe: dict[str, np.ndarray], thr: float, dataset: str) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fracbench.io import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.35 * (len(d_probe) + 1)))
    groups = [(f"{dataset} test radiographs", d_test)] + list(d_probe.items())
    data = [np.log10(np.maximum(d, 1e-3)) for _, d in groups]
    ax.boxplot(data, orientation="horizontal", tick_labels=[n for n, _ in groups], showfliers=True)
    ax.axvline(math.log10(max(thr, 1e-3)), color="red", linestyle="--", label=f"warning threshold {thr:.1f}")
    ax.set_xlabel("log10 Mahalanobis distance of pooled features")
    ax.set_title("OOD guard: feature distance from the training radiographs")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
