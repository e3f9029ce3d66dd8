"""Predict with a saved checkpoint: files, folders or arrays, preprocessed exactly as in training.

Training reads images from the decode cache, which holds ``resize_square(decode_image(path))`` and
normalises batches with ``loader.to_input``; :func:`preprocess` is those same two calls, so a file
scored here gets the score it would get in a test split. Every file given is accounted for: it is
either predicted (with a warning when only part of it could be decoded) or skipped with a one-line
reason and what to do about it; none stops the rest.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fracbench.serving.checkpoint import CLASS_NAMES, Checkpoint
from fracbench.serving.preprocess import as_gray_uint8, preprocess  # noqa: F401  (predict's API)

PREDICTED, SKIPPED = "predicted", "skipped"


@dataclass(frozen=True)
class FileResult:
    """What happened to one file given to predict: predicted, or skipped with a one-line reason.

    ``status`` is "predicted" (``decision`` set; ``warning`` non-empty when the image was only partly
    decodable, repaired or implausible) or "skipped" (``reason`` says why and what to do).
    ``decision`` is a class name only for a plausible input the OOD guard does not flag; otherwise it
    reads "no decision: image too small", "no decision: extreme aspect ratio" (no ``p_fracture``:
    the model is not run) or "no decision: out of distribution" (``p_fracture`` is the model's
    output, shown but not acted on). The CSV, the JSON summary and the table have one column per field, in this order,
    so a new field (e.g. an out-of-distribution warning) appears in all of them by adding it here.
    """

    file: str
    status: str
    p_fracture: float | None = None
    decision: str = ""
    warning: str = ""
    reason: str = ""
    ood: str = ""  # "in distribution", "out of distribution" or "no OOD reference" (fracbench.serving.ood)
    ood_distance: float | None = None  # feature-space distance to the training images

    @property
    def predicted(self) -> bool:
        return self.status == PREDICTED

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

RESULT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(FileResult))

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")

SKIP_REASONS: dict[str, str] = {
    ".svg": "SVG is a vector format: export it to PNG",
    ".svgz": "SVG is a vector format: export it to PNG",
    ".eps": "EPS is a vector format: export it to PNG",
    ".ps": "PostScript is a vector format: export it to PNG",
    ".ai": "Illustrator files are a vector format: export it to PNG",
    ".pdf": "PDF is a document, not an image: export the X-ray to PNG",
    ".heic": "HEIC/HEIF photos are not supported: convert it to PNG or JPEG",
    ".heif": "HEIC/HEIF photos are not supported: convert it to PNG or JPEG",
    ".avif": "AVIF images are not supported: convert it to PNG or JPEG",
}
"""Suffixes refused before reading, with the reason and what to do (checked case-insensitively)."""

MIN_SIDE = 32
"""Images with a side under this many pixels get no decision (the model would see a few pixels blown up)."""
MAX_ASPECT = 8.0
"""Images longer than this many times their width (or the reverse) get no decision (squashed to a square)."""
NO_DECISION = "no decision: "
TOO_SMALL = "image too small"
EXTREME_ASPECT = "extreme aspect ratio"
OOD_STATUS = "out of distribution"

TRUNCATED_WARNING = "truncated: only the part of the image present was decoded, so the score may be wrong; " \
    "re-export or re-download it"


def raster_suffixes() -> frozenset[str]:
    """Suffixes decoded without sniffing: the decoder's Pillow formats, plus DICOM."""
    from PIL import Image

    from fracbench.data.decode import PILLOW_FORMATS

    Image.init()
    return frozenset(e for e, f in Image.registered_extensions().items() if f in PILLOW_FORMATS) | set(DICOM_SUFFIXES)

def decision(p: float, threshold: float) -> str:
    """The class name at ``threshold``: fractured when ``p >= threshold`` (as the metrics count it)."""
    return CLASS_NAMES[1] if p >= threshold else CLASS_NAMES[0]


def implausible(shape: Sequence[int]) -> str:
    """Why an image of ``shape`` (H, W, ...) is no input for the model ("" when it is plausible):
    :data:`EXTREME_ASPECT` beyond :data:`MAX_ASPECT`:1, else :data:`TOO_SMALL` under :data:`MIN_SIDE` px on a side."""
    h, w = int(shape[0]), int(shape[1])
    if max(h, w) > MAX_ASPECT * min(h, w):
        return EXTREME_ASPECT
    if min(h, w) < MIN_SIDE:
        return TOO_SMALL
    return ""


def implausible_warning(shape: Sequence[int]) -> str:
    """The one-line warning for an implausible image ("" when it is plausible)."""
    why = implausible(shape)
    h, w = int(shape[0]), int(shape[1])
    if why == TOO_SMALL:
        return f"{w} x {h} px is under {MIN_SIDE} px on a side: not a radiograph the model can judge; no decision"
    if why == EXTREME_ASPECT:
        return (f"{w} x {h} px is more than {MAX_ASPECT:g}:1: squashed to a square it is no radiograph the model "
                "can judge; no decision")
    return ""


def final_decision(p: float | None, threshold: float, ood: str = "", why_implausible: str = "") -> str:
    """The ``decision`` column: the class at ``threshold``, or "no decision: <why>" for an implausible
    image or one the OOD guard flags (``ood`` == "out of distribution")."""
    if why_implausible:
        return NO_DECISION + why_implausible
    if ood == OOD_STATUS:
        return NO_DECISION + OOD_STATUS
    if p is None:
        return NO_DECISION + "no score"
    return decision(p, threshold)


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


def describe_error(exc: Any) -> str:
    """One line for a :class:`~fracbench.data.decode.DecodeError`: its reason once, then its advice."""
    return f"{exc.reason}; {exc.hint}" if exc.hint else str(exc.reason)


def describe_warnings(warnings: Sequence[str]) -> str:
    """The decoder's warnings as one line; a truncated file gets the advice to re-export it."""
    return "; ".join(TRUNCATED_WARNING if w.startswith("truncated") else w for w in warnings)


def skip_reason(path: Path) -> str:
    """Why the file at ``path`` is not even tried ("" when it should be decoded).

    Raster suffixes the decoder reads are tried as they are (a damaged one then fails with the
    decoder's reason); known vector, document and unsupported photo formats are refused with what
    to do; anything else is tried only when its first bytes are a DICOM or Pillow image header,
    so a ``.txt`` is "not an image" rather than a damaged image.
    """
    suffix = path.suffix.lower()
    if suffix in SKIP_REASONS:
        return SKIP_REASONS[suffix]
    if suffix in raster_suffixes():
        return ""
    return "" if _looks_like_image(path) else (
        f"not an image: {suffix}" if suffix else "not an image (no file suffix, and not an image inside)")


def _looks_like_image(path: Path) -> bool:
    from PIL import Image

    from fracbench.data.decode import PILLOW_FORMATS, is_dicom_bytes

    try:
        with path.open("rb") as fh:
            if is_dicom_bytes(fh.read(132)):
                return True
    except OSError:
        return True  # unreadable: let the decoder say why (permissions, ...)
    try:
        with Image.open(path, formats=[f for f in PILLOW_FORMATS if f in Image.OPEN]):
            return True  # header only; pixels are decoded (and checked) later
    except Exception:
        return False


_HIDDEN_FILE = "hidden file (name starts with '.'); pass it by name to include it"
_HIDDEN_FOLDER = "hidden folder, not searched; pass it by name to include it"


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, str]]:
    """Every entry under ``paths`` with the reason it is skipped ("" = decode it), in order.

    Folders are searched recursively in name order. Nothing is dropped: hidden files and folders,
    links to folders, non-image files, missing paths and empty folders each come back with a
    reason, so every file given is accounted for in predict's output. A file named explicitly is
    tried even when hidden.
    """
    out: list[tuple[Path, str]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = list(_walk(p))
            out.extend(found if found else [(p, "empty folder: no files in it")])
        elif p.is_file():
            out.append((p, skip_reason(p)))
        else:
            out.append((p, _not_a_file(p)))
    return out


def _not_a_file(p: Path) -> str:
    if p.is_symlink() and not p.exists():
        return "broken link: its target does not exist"
    if not p.exists():
        return "no such file or folder"
    return "not a regular file (a device, socket or pipe)"


def _walk(folder: Path) -> Iterator[tuple[Path, str]]:
    try:
        entries = sorted(folder.iterdir(), key=lambda e: e.name)
    except OSError as exc:
        yield folder, f"cannot list this folder ({exc.strerror or exc}); check its permissions"
        return
    for e in entries:
        hidden = e.name.startswith(".")
        if e.is_dir():
            if hidden:
                yield e, _HIDDEN_FOLDER
            elif e.is_symlink():
                yield e, "link to a folder, not followed; pass its target to include it"
            else:
                yield from _walk(e)
        elif e.is_file():
            yield e, _HIDDEN_FILE if hidden else skip_reason(e)
        else:
            yield e, _not_a_file(e)


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def predict_files(checkpoint: Checkpoint, paths: Iterable[str | os.PathLike[str]], batch_size: int = 32,
                  progress: bool = False) -> list[FileResult]:
    """One :class:`FileResult` for every entry under ``paths`` (see :func:`expand_paths`), in order.

    Files are decoded as training decodes them and scored in batches; a file that does not decode
    is skipped with the decoder's reason and advice, and never stops the rest. A partly decodable
    (truncated) file is scored with a ``warning``; an image unlike the training radiographs gets
    ``ood`` = "out of distribution" (fracbench.serving.ood) and no decision; an image under :data:`MIN_SIDE`
    px on a side or beyond :data:`MAX_ASPECT`:1 is not scored at all (a warning and no decision).
    """
    from fracbench.data.decode import DecodeError, decode_image
    from fracbench.progress import track
    from fracbench.serving.ood import ood_columns

    entries = expand_paths(paths)
    results: list[FileResult | None] = [
        FileResult(str(p), SKIPPED, reason=reason) if reason else None for p, reason in entries]
    todo = [i for i, r in enumerate(results) if r is None]
    chunks = list(_batches(todo, max(1, int(batch_size))))
    for chunk in track(chunks, "predicting", total=len(chunks), enabled=progress):
        tensors, done = [], []
        for i in chunk:
            name = str(entries[i][0])
            try:
                decoded = decode_image(entries[i][0])
            except DecodeError as exc:
                results[i] = FileResult(name, SKIPPED, reason=describe_error(exc))
                continue
            warning = describe_warnings(decoded.warnings)
            why = implausible(decoded.pixels.shape)
            if why:
                warning = "; ".join(w for w in (implausible_warning(decoded.pixels.shape), warning) if w)
                results[i] = FileResult(name, PREDICTED, None, final_decision(None, checkpoint.threshold, "", why),
                                        warning)
                continue
            tensors.append(preprocess(decoded.pixels, checkpoint.image_size, checkpoint.channels))
            done.append((i, name, warning))
        if not tensors:
            continue
        x = torch.cat(tensors)
        ood = ood_columns(checkpoint, x)  # {"ood", "ood_distance"} per image (see fracbench.serving.ood)
        for (i, name, warning), p, extra in zip(done, _scores(checkpoint, x), ood):
            verdict = final_decision(float(p), checkpoint.threshold, extra["ood"])
            results[i] = FileResult(name, PREDICTED, float(p), verdict, warning, **extra)
    return [r for r in results if r is not None]


def predict_paths(checkpoint: Checkpoint, paths: Iterable[str | os.PathLike[str]],
                  batch_size: int = 32) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """:func:`predict_files` split in two: rows ``{file, p_fracture, decision, warning, ood, ood_distance}``
    of the files predicted, and ``{file, reason}`` of those skipped (both in input order)."""
    results = predict_files(checkpoint, paths, batch_size)
    rows = [{"file": r.file, "p_fracture": r.p_fracture, "decision": r.decision, "warning": r.warning,
             "ood": r.ood, "ood_distance": r.ood_distance} for r in results if r.predicted]
    return rows, [{"file": r.file, "reason": r.reason} for r in results if not r.predicted]


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


def leaky_checkpoint(path: str | os.PathLike[str], meta: dict[str, Any]) -> bool:
    """Whether the checkpoint comes from a split whose evaluation images have copies in its training images:
    the leak demo (a derived dataset, by the sidecar or the record's kind) or a record whose test images
    have an exact or near copy in train (``record["leak"]``)."""
    if "+" in str(meta.get("dataset", "")):
        return True
    rec = run_record(path, meta) or {}
    if rec.get("kind") == "leak_demo" or "+" in str(rec.get("dataset", "")):
        return True
    return bool((rec.get("leak") or {}).get("test_near_in_train"))


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


DEMO_DATASET = "fracatlas"
"""The dataset whose checkpoints the demo and ``predict`` choose their default model from, when present."""


def checkpoint_dataset(path: str | os.PathLike[str], meta: dict[str, Any]) -> str:
    """The dataset a checkpoint was trained on: its run record's, else its sidecar's ("" when unknown)."""
    rec = run_record(path, meta) or {}
    return str(rec.get("dataset") or meta.get("dataset") or "")


def checkpoint_split(path: str | os.PathLike[str], meta: dict[str, Any]) -> str:
    """The split mode a checkpoint's run used: record["leak"]["split"] (published, grouped, naive, external)
    for the claim-anatomy and leak-demo experiments, "" for a run on the dataset's own manifest split."""
    rec = run_record(path, meta) or {}
    leak = rec.get("leak") if isinstance(rec.get("leak"), dict) else {}
    return str(leak.get("split") or ("external" if rec.get("kind") == "external" else ""))


def default_eligible(path: str | os.PathLike[str], meta: dict[str, Any]) -> bool:
    """Whether a checkpoint may be the default model: not leaky (:func:`leaky_checkpoint`), not from a
    split-mode experiment (multiregion's published or grouped split, the leak demo's naive or grouped split)
    and not an external-test experiment (trained on one dataset, tested on another)."""
    if leaky_checkpoint(path, meta):
        return False
    rec = run_record(path, meta) or {}
    return rec.get("kind") not in ("external", "leak_demo") and not checkpoint_split(path, meta)


def best_checkpoint(results_dir: str | os.PathLike[str], dataset: str | None = None) -> Path | None:
    """The default checkpoint under ``results_dir``: the highest validation AUROC within one dataset.

    Validation AUROCs of different datasets are never compared: the dataset is ``dataset``, else
    :data:`DEMO_DATASET` (FracAtlas) when it has an eligible checkpoint, else the dataset of the most
    recently written eligible checkpoint. Only :func:`default_eligible` checkpoints count (never a leaked
    split, a split-mode or an external experiment). Within the dataset, when no checkpoint has a
    validation AUROC, the most recently written one; None when there is none.
    """
    found = [(p, m) for p, m in find_checkpoints(results_dir) if default_eligible(p, m)]
    if not found:
        return None
    by_ds: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for p, m in found:
        by_ds.setdefault(checkpoint_dataset(p, m), []).append((p, m))
    if dataset is None:
        dataset = DEMO_DATASET if DEMO_DATASET in by_ds else \
            checkpoint_dataset(*max(found, key=lambda t: (t[0].stat().st_mtime, str(t[0]))))
    found = by_ds.get(dataset, [])
    if not found:
        return None
    scored = [(val_auroc(p, m), p) for p, m in found]
    with_score = [(v, p) for v, p in scored if not math.isnan(v)]
    if with_score:
        return max(with_score, key=lambda t: (t[0], str(t[1])))[1]
    return max(found, key=lambda t: t[0].stat().st_mtime)[0]
