"""Tiny on-disk dataset trees for the data tests (Pillow images of a few dozen pixels)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

FRACATLAS_COLUMNS = ("image_id", "hand", "leg", "hip", "shoulder", "mixed", "hardware", "multiscan", "fractured",
                     "fracture_count", "frontal", "lateral", "oblique")


def smooth(seed: int, size: int | tuple[int, int] = 64) -> np.ndarray:
    """A smooth random grey image (upsampled 8x8 noise): distinct per seed, stable under resizing."""
    h, w = (size, size) if isinstance(size, int) else size
    small = np.random.default_rng(seed).integers(0, 256, (8, 8)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), dtype=np.uint8)


def save(path: Path, pixels: np.ndarray, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, **kw)
    return path


def jpeg_bytes(pixels: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_truncated_jpeg(path: Path, seed: int, size: int = 96) -> Path:
    """A JPEG cut short in its scan data: Pillow decodes the part present (a "truncated" fault)."""
    detail = np.random.default_rng(seed).integers(0, 256, (size, size)).astype(np.uint8)
    data = jpeg_bytes(((detail.astype(np.int16) + smooth(seed, size)) // 2).astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


def _csv(path: Path, header: tuple[str, ...] | None, rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        if header:
            w.writerow(header)
        w.writerows(rows)


def fracatlas_tree(root: Path) -> Path:
    """A FracAtlas release in miniature, with one fault of each kind the scanner reports.

    * IMG0000001.jpg Fractured, hand, a COCO box, sizes agree.
    * IMG0000002.jpg Fractured, leg, but dataset.csv says fractured=0 (label_conflict), and the COCO
      entry says 40x30 while the file is 48x32 (annotation_size_mismatch).
    * IMG0000003.jpg Non_fractured, hip + shoulder (part "mixed").
    * IMG0000004.jpg Non_fractured, not in dataset.csv (not_in_metadata).
    * IMG0000009.jpg in dataset.csv, no file (missing_file).
    """
    save(root / "images" / "Fractured" / "IMG0000001.jpg", smooth(1, (32, 48)), quality=95)
    save(root / "images" / "Fractured" / "IMG0000002.jpg", smooth(2, (32, 48)), quality=95)
    save(root / "images" / "Non_fractured" / "IMG0000003.jpg", smooth(3, (32, 48)), quality=95)
    save(root / "images" / "Non_fractured" / "IMG0000004.jpg", smooth(4, (32, 48)), quality=95)
    #            image_id       hand leg hip sh mixed hw ms frac count fr lat obl
    _csv(root / "dataset.csv", FRACATLAS_COLUMNS, [
        ["IMG0000001.jpg", 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0],
        ["IMG0000002.jpg", 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
        ["IMG0000003.jpg", 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0],
        ["IMG0000009.jpg", 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
    ])
    coco = {
        "images": [
            {"id": 1, "file_name": "IMG0000001.jpg", "width": 48, "height": 32},
            {"id": 2, "file_name": "IMG0000002.jpg", "width": 40, "height": 30},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "bbox": [4, 5, 10.5, 8], "category_id": 1},
            {"id": 11, "image_id": 1, "bbox": [20, 6, 3, 4], "category_id": 1},
            {"id": 12, "image_id": 2, "bbox": [1, 1, 5, 5], "category_id": 1},
        ],
        "categories": [{"id": 1, "name": "fractured"}],
    }
    coco_path = root / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json"
    coco_path.parent.mkdir(parents=True, exist_ok=True)
    coco_path.write_text(json.dumps(coco), encoding="utf-8")
    return root


# (official split, part, patient, study, number of images)
MURA_STUDIES = [
    ("train", "XR_WRIST", "patient00001", "study1_positive", 2),
    ("train", "XR_WRIST", "patient00001", "study2_negative", 1),
    ("train", "XR_WRIST", "patient00002", "study1_negative", 2),
    ("train", "XR_WRIST", "patient00003", "study1_positive", 2),
    ("train", "XR_WRIST", "patient00004", "study1_negative", 1),
    ("train", "XR_WRIST", "patient00005", "study1_positive", 1),
    ("train", "XR_WRIST", "patient00006", "study1_negative", 2),
    ("train", "XR_ELBOW", "patient00007", "study1_positive", 2),
    ("train", "XR_ELBOW", "patient00008", "study1_negative", 1),
    ("train", "XR_ELBOW", "patient00009", "study1_negative", 2),
    ("valid", "XR_WRIST", "patient11185", "study1_positive", 2),
    ("valid", "XR_WRIST", "patient11186", "study1_negative", 1),
    ("valid", "XR_ELBOW", "patient11187", "study1_positive", 1),
]
MURA_CONFLICT = "train/XR_WRIST/patient00002/study1_negative"  # labelled 1 in train_labeled_studies.csv


def mura_tree(root: Path) -> Path:
    """A MURA-v1.1 release in miniature: every image distinct, CSV paths prefixed "MURA-v1.1/"."""
    seed = 100
    paths: dict[str, list[list[str]]] = {"train": [], "valid": []}
    studies: dict[str, list[list[object]]] = {"train": [], "valid": []}
    for official, part, patient, study, n in MURA_STUDIES:
        rel_study = f"{official}/{part}/{patient}/{study}"
        for k in range(1, n + 1):
            seed += 1
            save(root / rel_study / f"image{k}.png", smooth(seed, 40))
            paths[official].append([f"MURA-v1.1/{rel_study}/image{k}.png"])
        label = 1 if study.endswith("positive") else 0
        if rel_study == MURA_CONFLICT:
            label = 1 - label
        studies[official].append([f"MURA-v1.1/{rel_study}/", label])
    for official in ("train", "valid"):
        _csv(root / f"{official}_image_paths.csv", None, paths[official])
        _csv(root / f"{official}_labeled_studies.csv", None, studies[official])
    return root
