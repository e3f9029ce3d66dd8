"""Grad-CAM heatmaps (pytorch-grad-cam) on each model's registered target layer, and the pointing game.

The target is the "fractured" logit (``ClassifierOutputTarget(1)``) whatever the model predicts,
so the map always answers "what in this image raises the fracture score". pytorch-grad-cam
min-max scales each map to [0, 1]; a map with no positive evidence comes back all zeros.

Zero padding draws a frame. The convolutions pad with zeros, and 0 after normalisation is mid-grey:
along the border of a radiograph (dark background, about -1) every padded convolution sees an edge
that is not in the image, so the target layer's activations (and the Grad-CAM map) form a
rectangular frame along the image borders. Measured on 40 FracAtlas test radiographs with the demo
checkpoint: the outer 6 px band averaged 0.135 against 0.033 inside; with the same weights and
replicate padding, 0.035 against 0.043 (no frame): the frame is the padding, not the model.
:func:`padding_band` finds, per model, how far the padding reaches into the map (where the target
layer's activations on a uniform input differ between zero and replicate padding), and
:func:`cam_batch` replaces that band with the nearest values inside it before scaling to [0, 1].

The pointing game (Zhang et al., 2016) scores localisation with no threshold to tune: a fractured
image is a hit when the heatmap's maximum lies inside one of its true fracture boxes.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from fracbench.serving.checkpoint import Checkpoint
from fracbench.serving.preprocess import as_gray_uint8, preprocess

# pytorch-grad-cam registers hooks on the model for the duration of a call: one call at a time
# per process keeps concurrent demo requests from seeing each other's activations.
_LOCK = threading.Lock()
# model -> {input shape: band width in input pixels}
_BANDS: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[int, ...], int]] = weakref.WeakKeyDictionary()

Box = tuple[float, float, float, float]  # x, y, width, height in image pixels


def cam_batch(checkpoint: Checkpoint, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM of a preprocessed batch: ``(B, S, S)`` maps in [0, 1] at model resolution, and P(fracture)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from fracbench.models import get_cam_layer

    model = checkpoint.model
    layer = get_cam_layer(model, checkpoint.meta["model"])
    with _LOCK, torch.enable_grad():
        cam = GradCAM(model=model, target_layers=[layer])
        try:
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(1)] * x.shape[0])
            probs = cam.outputs.detach().float().softmax(1)[:, 1].cpu().numpy()
        finally:
            cam.activations_and_grads.release()
            model.zero_grad(set_to_none=True)
    maps = np.clip(np.nan_to_num(np.asarray(maps, dtype=np.float32), nan=0.0), 0.0, 1.0)
    band = padding_band(checkpoint, tuple(x.shape[1:]))
    return np.stack([fill_band(m, band) for m in maps]) if len(maps) else maps, probs


@torch.no_grad()
def padding_band(checkpoint: Checkpoint, input_shape: tuple[int, ...]) -> int:
    """How many pixels (at input resolution) along each border of the Grad-CAM map the convolutions' zero
    padding reaches: where the target layer's activations on a uniform black input differ between zero
    and replicate padding, plus one pixel of the bilinear upsampling's bleed. 0 for a model without padding,
    and for one whose padding reaches further than a sixth of the map (a deep network: no border band to
    separate from the rest)."""
    from fracbench.models import get_cam_layer

    model = checkpoint.model
    key = tuple(int(v) for v in input_shape)
    known = _BANDS.get(model)
    if known is not None and key in known:
        return known[key]
    probe = copy.deepcopy(model).eval()  # the served model is never changed, not even for a moment
    layer = get_cam_layer(probe, checkpoint.meta["model"])
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().float()))
    x = torch.full((1, *key), -1.0, device=next(probe.parameters()).device)  # black, as a radiograph's background
    try:
        probe(x)
        for m in probe.modules():
            if isinstance(m, torch.nn.Conv2d) and m.padding_mode == "zeros" and m.padding not in (0, (0, 0), "valid"):
                m.padding_mode = "replicate"
        probe(x)
    finally:
        handle.remove()
    band = 0
    if len(seen) >= 2 and seen[0].ndim == 4:
        diff = (seen[0] - seen[1]).abs().sum(dim=(0, 1)).cpu().numpy()
        ah, aw = diff.shape
        ys, xs = np.nonzero(diff > 1e-5 * max(1.0, float(seen[0].abs().max())))
        if len(ys):
            edge = np.minimum(np.minimum(ys, ah - 1 - ys), np.minimum(xs, aw - 1 - xs))  # to the nearest border
            reach = int(edge.max()) + 1
            # a deep network's padding reaches the whole map (no band to separate): leave such a map alone
            if reach <= min(ah, aw) // 6:
                band = int(np.ceil(reach * max(key[-2] / ah, key[-1] / aw))) + 1
    band = min(band, (min(key[-2:]) - 1) // 2)
    _BANDS.setdefault(model, {})[key] = band
    return band


def fill_band(heatmap: np.ndarray, band: int) -> np.ndarray:
    """The map with its outer ``band`` pixels replaced by the nearest values inside them, min-max scaled to
    [0, 1] again as pytorch-grad-cam scales it (a flat map, no evidence anywhere, comes back all zeros)."""
    if band <= 0:
        return heatmap
    inner = heatmap[band:-band, band:-band]
    out = np.pad(inner, band, mode="edge")
    out = out - float(out.min())
    top = float(out.max())
    return (out / top).astype(np.float32) if top > 1e-6 else np.zeros_like(heatmap)


def resize_map(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map to ``shape`` = (H, W), kept in [0, 1]."""
    from PIL import Image

    h, w = int(shape[0]), int(shape[1])
    if heatmap.shape == (h, w):
        return heatmap.astype(np.float32, copy=False)
    im = Image.fromarray(np.ascontiguousarray(heatmap, dtype=np.float32))  # mode F
    out = np.asarray(im.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def gradcam(checkpoint: Checkpoint, pixels: np.ndarray,
            out_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, float]:
    """Heatmap (H x W float32 in [0, 1], at the image's resolution unless ``out_shape``) and P(fracture)."""
    gray = as_gray_uint8(pixels)
    x = preprocess(gray, checkpoint.image_size, checkpoint.channels)
    maps, probs = cam_batch(checkpoint, x)
    return resize_map(maps[0], out_shape or gray.shape), float(probs[0])


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """Map [0, 1] to RGB uint8 with matplotlib's jet colormap."""
    import matplotlib

    lut = (matplotlib.colormaps["jet"](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)
    idx = np.clip(np.rint(np.asarray(heatmap, dtype=np.float32) * 255.0), 0, 255).astype(np.intp)
    return lut[idx]


def overlay(pixels: np.ndarray, heatmap: np.ndarray, opacity: float = 0.4) -> np.ndarray:
    """Blend the coloured heatmap over the image: (H, W, 3) uint8 at the image's resolution."""
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        base = np.repeat(as_gray_uint8(arr)[:, :, None], 3, axis=2)
    else:
        base = np.repeat(as_gray_uint8(arr)[:, :, None], 3, axis=2) if arr.shape[2] == 4 else arr[:, :, :3]
    heat = resize_map(np.asarray(heatmap, dtype=np.float32), base.shape[:2])
    a = float(np.clip(opacity, 0.0, 1.0))
    out = base.astype(np.float32) * (1.0 - a) + colorize(heat).astype(np.float32) * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _case(item: Any) -> tuple[np.ndarray, Sequence[Box]]:
    if hasattr(item, "pixels") and hasattr(item, "boxes"):  # a SyntheticCase
        return item.pixels, item.boxes
    pixels, boxes = item
    return pixels, boxes


def peak_in_boxes(heatmap: np.ndarray, image_shape: tuple[int, int], boxes: Sequence[Box]) -> bool:
    """Whether the heatmap's maximum lies in a box given in image pixels (boxes scaled to the map)."""
    mh, mw = heatmap.shape
    i, j = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    py, px = i + 0.5, j + 0.5  # centre of the peak cell, in heatmap coordinates
    sy, sx = mh / image_shape[0], mw / image_shape[1]
    for x, y, w, h in boxes:
        if x * sx <= px <= (x + w) * sx and y * sy <= py <= (y + h) * sy:
            return True
    return False


def box_area_fraction(image_shape: tuple[int, int], boxes: Sequence[Box]) -> float:
    """Area of the union of the boxes over the image area: the hit chance of a uniformly random peak."""
    h, w = int(image_shape[0]), int(image_shape[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"image shape {image_shape} has no area")
    mask = np.zeros((h, w), dtype=bool)
    for x, y, bw, bh in boxes:
        x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
        x1, y1 = min(w, int(np.ceil(x + bw))), min(h, int(np.ceil(y + bh)))
        if x1 > x0 and y1 > y0:
            mask[y0:y1, x0:x1] = True
    return float(mask.mean())


def centre_in_boxes(image_shape: tuple[int, int], boxes: Sequence[Box]) -> bool:
    """Whether the image centre lies in a box: the hit of a 'heatmap' that always points at the centre."""
    cy, cx = image_shape[0] / 2, image_shape[1] / 2
    return any(x <= cx <= x + w and y <= cy <= y + h for x, y, w, h in boxes)


def pointing_chance(hits: int, n: int, fractions: Sequence[float], centre_hits: int) -> dict[str, Any]:
    """The pointing game's chance rates and a verdict relative to each (pure).

    (a) a uniformly random peak hits with probability = the box area fraction; its rate over images is
    the mean fraction, with a 95% normal interval of that mean. (b) always pointing at the image centre:
    the share of images whose centre lies in a box, with a Wilson interval. The model's hit rate (Wilson
    interval) is "above chance" or "below chance" only when its interval and the chance interval do not
    overlap; otherwise "no evidence" of a difference.
    """
    from fracbench.metrics import wilson_ci

    def verdict(lo: float, hi: float, chance_lo: float, chance_hi: float) -> str:
        if lo > chance_hi:
            return "above chance"
        if hi < chance_lo:
            return "below chance"
        return "no evidence of a difference from chance (CIs overlap)"

    out: dict[str, Any] = {"rate_ci95": list(wilson_ci(hits, n)) if n else None}
    if not n:
        return {**out, "random_peak": None, "image_centre": None}
    fr = np.asarray(fractions, dtype=float)
    mean = float(fr.mean())
    half = 1.959963984540054 * float(fr.std(ddof=1)) / np.sqrt(n) if n > 1 else float("nan")
    rnd = [max(0.0, mean - half), min(1.0, mean + half)] if n > 1 else [0.0, 1.0]
    cen = list(wilson_ci(centre_hits, n))
    lo, hi = out["rate_ci95"]
    out["random_peak"] = {"rate": mean, "rate_ci95": rnd, "verdict": verdict(lo, hi, *rnd),
                          "what": "mean over images of the box area fraction (union of boxes / image area)"}
    out["image_centre"] = {"hits": centre_hits, "rate": centre_hits / n, "rate_ci95": cen,
                           "verdict": verdict(lo, hi, *cen), "what": "share of images whose centre lies in a box"}
    return out


def pointing_game(checkpoint: Checkpoint, images_with_boxes: Iterable[Any],
                  batch_size: int = 32) -> dict[str, Any]:
    """Share of fractured images whose heatmap peak falls inside a true box.

    ``images_with_boxes`` yields ``(pixels, boxes)`` pairs (boxes ``(x, y, w, h)`` in that image's
    pixels) or objects with ``.pixels`` and ``.boxes`` (synthetic cases). Images without boxes are
    not fractured and are skipped. ``empty`` counts maps with no positive evidence (all zero),
    which count as misses. ``rate`` is nan when no image had boxes. The chance rates and verdicts of
    :func:`pointing_chance` stand beside it (``random_peak``, ``image_centre``).
    """
    hits = n = empty = centre = 0
    fractions: list[float] = []
    pending: list[tuple[torch.Tensor, tuple[int, int], Sequence[Box]]] = []

    def flush() -> None:
        nonlocal hits, n, empty
        if not pending:
            return
        maps, _ = cam_batch(checkpoint, torch.cat([t for t, _, _ in pending]))
        for m, (_, shape, boxes) in zip(maps, pending):
            n += 1
            if not m.any():
                empty += 1
            elif peak_in_boxes(m, shape, boxes):
                hits += 1
        pending.clear()

    for item in images_with_boxes:
        pixels, boxes = _case(item)
        if not boxes:
            continue
        gray = as_gray_uint8(pixels)
        fractions.append(box_area_fraction(gray.shape, boxes))
        centre += centre_in_boxes(gray.shape, boxes)
        pending.append((preprocess(gray, checkpoint.image_size, checkpoint.channels), gray.shape, list(boxes)))
        if len(pending) >= batch_size:
            flush()
    flush()
    return {"hits": hits, "n": n, "rate": hits / n if n else float("nan"), "empty": empty,
            **pointing_chance(hits, n, fractions, centre)}
