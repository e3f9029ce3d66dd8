"""Predict with a saved checkpoint: files, folders or arrays, preprocessed exactly as in training.

Training reads images from the decode cache, which holds ``resize_square(decode_image(path))`` and
normalises batches with ``loader.to_input``; :func:`preprocess` is those same two calls, so a file
scored here gets the score it would get in a test split. Unreadable files are reported with the
decoder's reason and never stop the rest.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fracbench.checkpoint import CLASS_NAMES, Checkpoint

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")
"""Suffixes collected from folders (case-insensitive). Files named explicitly are always tried."""


def preprocess(pixels: np.ndarray, size: int, channels: int) -> torch.Tensor:
    """(H, W) uint8 grayscale -> (1, channels, size, size) float in [-1, 1], as training sees it."""
    from fracbench.data.cache import resize_square
    from fracbench.loader import to_input

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


def decision(p: float, threshold: float) -> str:
    """The class name at ``threshold``: fractured when ``p >= threshold`` (as the metrics count it)."""
    return CLASS_NAMES[1] if p >= threshold else CLASS_NAMES[0]


@torch.no_grad()
def _scores(checkpoint: Checkpoint, x: torch.Tensor) -> np.ndarray:
    model = checkpoint.model
    device = next(model.parameters()).device
    model.eval()
    logits = model(x.to(device)).float()
    return logits.softmax(1)[:, 1].cpu().numpy()


def predict_array(checkpoint: Checkpoint, pixels: np.ndarray) -> float:
    """P(fracture) of one decoded image."""
    return float(_scores(checkpoint, preprocess(pixels, checkpoint.image_size, checkpoint.channels))[0])


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[dict[str, str]]]:
    """Files named, plus image files found recursively in folders named (sorted); missing paths fail."""
    files: list[Path] = []
    failures: list[dict[str, str]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                failures.append({"file": str(p), "reason": f"no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder"})
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            failures.append({"file": str(p), "reason": "no such file or folder"})
    return files, failures


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def predict_paths(checkpoint: Checkpoint, paths: Iterable[str | os.PathLike[str]],
                  batch_size: int = 32) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Score every image in ``paths`` (files or folders, recursive).

    Returns ``(rows, failures)``: rows ``{file, p_fracture, decision, ood, ood_distance}`` in input order (folders
    sorted), failures ``{file, reason}`` for paths that do not exist and files that do not decode.
    """
    from fracbench.data.decode import DecodeError, decode_image
    from fracbench.ood import ood_columns

    files, failures = expand_paths(paths)
    rows: list[dict[str, Any]] = []
    for chunk in _batches(files, max(1, int(batch_size))):
        tensors, names = [], []
        for f in chunk:
            try:
                px = decode_image(f).pixels
            except DecodeError as exc:
                failures.append({"file": str(f), "reason": exc.reason + (f" ({exc.hint})" if exc.hint else "")})
                continue
            tensors.append(preprocess(px, checkpoint.image_size, checkpoint.channels))
            names.append(str(f))
        if not tensors:
            continue
        x = torch.cat(tensors)
        ood = ood_columns(checkpoint, x)  # {"ood", "ood_distance"} per image (see fracbench.ood)
        for name, p, extra in zip(names, _scores(checkpoint, x), ood):
            rows.append({"file": name, "p_fracture": float(p), "decision": decision(float(p), checkpoint.threshold),
                         **extra})
    return rows, failures


# --------------------------------------------------------------------------------------------
# finding checkpoints


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or "model" not in meta or "preprocessing" not in meta:
        return None
    return meta


def find_checkpoints(results_dir: str | os.PathLike[str]) -> list[tuple[Path, dict[str, Any]]]:
    """Every fracbench checkpoint (``.safetensors`` with a valid ``.json`` sidecar) under ``results_dir``."""
    root = Path(results_dir)
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.rglob("*.safetensors")):
        meta = _read_meta(p)
        if meta is not None:
            out.append((p, meta))
    return out


def run_record(path: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The run record a checkpoint came from: the sidecar's ``record`` pointer, else ``../record.json``."""
    path = Path(path)
    meta = meta if meta is not None else (_read_meta(path) or {})
    candidates = []
    if meta.get("record"):
        rec = Path(meta["record"])
        candidates.append(rec if rec.is_absolute() else path.parent / rec)
        candidates.append(rec)
    candidates.append(path.parent.parent / "record.json")  # runs/<exp>/seed<k>/checkpoints/best.*
    for c in candidates:
        try:
            rec = json.loads(c.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict):
            return rec
    return None


def val_auroc(path: str | os.PathLike[str], meta: dict[str, Any]) -> float:
    """Validation AUROC from the sidecar, else from the run record's metrics.val.auroc; nan if neither."""
    value = meta.get("val_auroc")
    if not _finite(value):
        rec = run_record(path, meta) or {}
        value = ((rec.get("metrics") or {}).get("val") or {}).get("auroc")
    return float(value) if _finite(value) else float("nan")


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def best_checkpoint(results_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest validation AUROC under ``results_dir``.

    When no checkpoint has a validation AUROC, the most recently written one; None when there is none.
    """
    # a derived dataset (e.g. the leak demo's rotated copies, "fracatlas+4copies") has a leaked
    # validation split by design: its AUROC must never win the demo's choice
    found = [(p, m) for p, m in find_checkpoints(results_dir) if "+" not in str(m.get("dataset", ""))]
    if not found:
        return None
    scored = [(val_auroc(p, m), p) for p, m in found]
    with_score = [(v, p) for v, p in scored if not math.isnan(v)]
    if with_score:
        return max(with_score, key=lambda t: (t[0], str(t[1])))[1]
    return max(found, key=lambda t: t[0].stat().st_mtime)[0]
