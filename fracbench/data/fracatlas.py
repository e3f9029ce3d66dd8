"""FracAtlas, read from its release layout."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from fracbench.data.base import DATASETS, Box, Dataset, Fault, ImageRecord, Listing, is_image_file

_PARTS = ("hand", "leg", "hip", "shoulder")
_VIEWS = ("frontal", "lateral", "oblique")
SUBGROUP_ATTRIBUTES = ("hardware", "part", "view")  # the columns of results/<ds>/data/<ds>-subgroups.csv
_COCO = Path("Annotations") / "COCO JSON" / "COCO_fracture_masks.json"


@DATASETS.register("fracatlas")
class FracAtlas(Dataset):
    """FracAtlas: musculoskeletal radiographs for fracture classification, localisation and segmentation.

    4,083 radiographs (717 fractured) of hand, leg, hip and shoulder from three Bangladeshi hospitals,
    with COCO/YOLO/VOC fracture annotations.

    Citation: Abedeen I., Rahman M.A., Prottyasha F.Z., Ahmed T., Chowdhury T.M., Shatabda S.
    "FracAtlas: A Dataset for Fracture Classification, Localization and Segmentation of
    Musculoskeletal Radiographs." Scientific Data 10, 521 (2023). doi:10.1038/s41597-023-02432-4
    License: CC BY 4.0.  URL: https://doi.org/10.6084/m9.figshare.22363012 (figshare article 22363012).
    Get it with ``fracbench data download fracatlas``.

    The label comes from the folder (images/Fractured vs images/Non_fractured); each disagreement
    with dataset.csv's ``fractured`` column, each image missing from the CSV or the folders, and
    each COCO annotation whose image size disagrees with the file is reported as a fault.
    FracAtlas has no patient identifiers, so the group is the image itself until duplicate
    detection (fracbench.data.dedup) merges copies into one group.
    """

    name = "fracatlas"
    citation = "Abedeen et al., Scientific Data 10, 521 (2023). doi:10.1038/s41597-023-02432-4"
    license = "CC BY 4.0"
    url = "https://doi.org/10.6084/m9.figshare.22363012"

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        return (root / "dataset.csv").is_file() and (root / "images" / "Fractured").is_dir()

    def scan(self) -> Listing:
        root = self.root
        faults: list[Fault] = []
        if not self.looks_like(root):
            raise FileNotFoundError(
                f"{root}: not a FracAtlas folder (expected dataset.csv and images/Fractured, images/Non_fractured). "
                "Run `fracbench data download fracatlas` or pass --data-dir pointing at the unpacked release."
            )
        meta = self._read_csv(root / "dataset.csv", faults)
        boxes, sizes = self._read_coco(root / _COCO, faults)

        records: list[ImageRecord] = []
        seen: set[str] = set()
        for folder, label in (("Fractured", 1), ("Non_fractured", 0)):
            d = root / "images" / folder
            if not d.is_dir():
                faults.append(Fault(str(d), "missing_folder", "expected folder is absent"))
                continue
            for path in sorted(p for p in d.iterdir() if p.is_file() and is_image_file(p)):
                name = path.name
                if name in seen:
                    faults.append(Fault(str(path), "duplicate_id", f"{name} is in both image folders"))
                    continue
                seen.add(name)
                row = meta.get(name)
                part = ""
                if row is None:
                    faults.append(Fault(str(path), "not_in_metadata", "image is missing from dataset.csv"))
                else:
                    part = _part(row)
                    csv_label = row.get("fractured", "").strip()
                    if csv_label not in ("0", "1"):
                        faults.append(Fault(str(path), "bad_metadata", f"dataset.csv fractured={csv_label!r}"))
                    elif int(csv_label) != label:
                        faults.append(
                            Fault(
                                str(path),
                                "label_conflict",
                                f"folder says {folder} (label {label}) but dataset.csv says fractured={csv_label}; "
                                "the folder label is used",
                            )
                        )
                    count = row.get("fracture_count", "").strip()
                    if count.isdigit() and (int(count) > 0) != (csv_label == "1"):
                        faults.append(
                            Fault(str(path), "metadata_inconsistent", f"fractured={csv_label} but fracture_count={count}")
                        )
                if name in sizes:
                    sizes[name] = (sizes[name][0], sizes[name][1], str(path))
                records.append(
                    ImageRecord(
                        id=Path(name).stem,
                        path=str(path),
                        label=label,
                        group=Path(name).stem,
                        source=self.name,
                        part=part,
                        boxes=tuple(boxes.get(name, ())),
                    )
                )
        for name in sorted(set(meta) - seen):
            faults.append(Fault(str(root / "images" / name), "missing_file", "listed in dataset.csv but no image file"))
        self._check_coco_sizes(sizes, faults)
        return Listing(records, faults)

    def subgroups(self) -> dict[str, dict[str, str]]:
        """Image id (file stem, as in the manifest) -> hardware, body part and view from dataset.csv.

        hardware: "present" | "absent" (metal implants, plates, nails: a possible shortcut, as nearly
        every image with hardware is fractured); part: hand, leg, hip, shoulder, or "mixed" when the CSV
        marks several; view: the views marked, joined by "+" (e.g. "frontal+lateral"). A part or view
        the CSV leaves blank reads "unknown".
        """
        path = self.root / "dataset.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: FracAtlas dataset.csv not found; pass --data-dir pointing at the "
                                    "unpacked release (it holds dataset.csv and images/)")
        out: dict[str, dict[str, str]] = {}
        for name, row in sorted(self._read_csv(path, []).items()):
            views = [v for v in _VIEWS if row.get(v, "0").strip() == "1"]
            out[Path(name).stem] = {
                "hardware": "present" if row.get("hardware", "0").strip() == "1" else "absent",
                "part": _part(row) or "unknown",
                "view": "+".join(views) or "unknown",
            }
        return out

    @staticmethod
    def _read_csv(path: Path, faults: list[Fault]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        with path.open(newline="", encoding="utf-8-sig") as fh:
            for row in csv.DictReader(fh):
                name = (row.get("image_id") or "").strip()
                if not name:
                    faults.append(Fault(str(path), "bad_metadata", f"row without image_id: {row}"))
                elif name in out:
                    faults.append(Fault(str(path), "duplicate_id", f"{name} appears twice in dataset.csv"))
                else:
                    out[name] = row
        return out

    @staticmethod
    def _read_coco(path: Path, faults: list[Fault]) -> tuple[dict[str, list[Box]], dict[str, tuple]]:
        if not path.is_file():
            faults.append(Fault(str(path), "missing_annotations", "COCO annotations absent; no fracture boxes"))
            return {}, {}
        try:
            coco = json.loads(path.read_text(encoding="utf-8"))
            names = {img["id"]: img["file_name"] for img in coco["images"]}
            sizes = {img["file_name"]: (int(img["width"]), int(img["height"])) for img in coco["images"]}
            boxes: dict[str, list[Box]] = {}
            for ann in coco["annotations"]:
                x, y, w, h = (float(v) for v in ann["bbox"])
                boxes.setdefault(names[ann["image_id"]], []).append((x, y, w, h))
        except (ValueError, KeyError, TypeError) as exc:
            faults.append(Fault(str(path), "bad_annotations", f"cannot read COCO JSON: {exc}"))
            return {}, {}
        return boxes, sizes

    @staticmethod
    def _check_coco_sizes(sizes: dict[str, tuple], faults: list[Fault]) -> None:
        from PIL import Image  # header read only; cheap

        for _name, entry in sorted(sizes.items()):
            if len(entry) < 3:
                continue
            w, h, path = entry
            try:
                with Image.open(path) as im:
                    actual = im.size
                    orientation = im.getexif().get(0x0112, 1)
            except Exception:  # unreadable files are reported by the decoder
                continue
            # fracbench's decoder applies the EXIF orientation; 5-8 swap width and height
            decoded = (actual[1], actual[0]) if orientation in (5, 6, 7, 8) else actual
            if actual == (w, h) and decoded == (w, h):
                continue
            if decoded == (w, h):
                detail = (f"COCO says {w}x{h}; the file stores {actual[0]}x{actual[1]} with EXIF orientation "
                          f"{orientation}, which fracbench applies, so the boxes fit the decoded image but not "
                          "a reader that ignores EXIF orientation")
            elif actual == (w, h):
                detail = (f"COCO says {w}x{h} as the file stores it, but EXIF orientation {orientation} turns the "
                          f"decoded image to {decoded[0]}x{decoded[1]}; its boxes do not fit the decoded image")
            else:
                detail = f"COCO says {w}x{h} but the file is {actual[0]}x{actual[1]}; its boxes may be misplaced"
            faults.append(Fault(path, "annotation_size_mismatch", detail))


def _part(row: dict[str, str]) -> str:
    parts = [p for p in _PARTS if row.get(p, "0").strip() == "1"]
    if row.get("mixed", "0").strip() == "1" or len(parts) > 1:
        return "mixed"
    return parts[0] if parts else ""
