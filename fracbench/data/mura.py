"""MURA v1.1, read from its release layout (no download: it needs registration)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from fracbench.data.base import DATASETS, Dataset, Fault, ImageRecord, Listing, is_image_file

_STUDY = re.compile(r"^study\d+_(positive|negative)$")
_HOW_TO_GET = (
    "MURA needs registration: request it at https://stanfordmlgroup.github.io/competitions/mura/ , "
    "unpack MURA-v1.1 and pass --data-dir PATH/TO/MURA-v1.1"
)


@DATASETS.register("mura")
class MURA(Dataset):
    """MURA: a large dataset of musculoskeletal radiographs (v1.1).

    40,561 upper-extremity radiographs from 14,863 studies (12,173 patients), each study labelled
    normal or abnormal by radiologists. "Abnormal" is broader than "fractured" (it includes
    hardware, degenerative disease, lesions); fracbench reports it as label 1 and says so.

    Citation: Rajpurkar P., Irvin J., Bagul A., et al. "MURA: Large Dataset for Abnormality
    Detection in Musculoskeletal Radiographs." arXiv:1712.06957 (2017).
    License: Stanford University School of Medicine MURA Dataset Research Use Agreement
    (registration required; no redistribution).
    URL: https://stanfordmlgroup.github.io/competitions/mura/

    The group is the patient (so no patient crosses splits), the body part comes from the
    ``XR_<PART>`` folder, the label from the study folder name (``studyN_positive``), checked
    against ``*_labeled_studies.csv`` when present. The official ``valid`` split is fracbench's
    test split; fracbench splits ``train`` into train and val by patient.
    """

    name = "mura"
    citation = "Rajpurkar et al., MURA, arXiv:1712.06957 (2017)"
    license = "MURA Research Use Agreement (registration required)"
    url = "https://stanfordmlgroup.github.io/competitions/mura/"

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        return (root / "train").is_dir() and (root / "valid").is_dir() and any((root / "train").glob("XR_*"))

    def scan(self) -> Listing:
        root = self.root
        if not self.looks_like(root):
            raise FileNotFoundError(f"{root}: not a MURA-v1.1 folder (expected train/XR_*/ and valid/). {_HOW_TO_GET}")
        faults: list[Fault] = []
        records: list[ImageRecord] = []
        for official, split in (("train", ""), ("valid", "test")):
            studies = self._read_studies(root, official, faults)
            listed = self._read_paths(root, official, faults)
            seen: set[str] = set()
            for path in sorted((root / official).glob("XR_*/patient*/study*/*")):
                if not path.is_file() or not is_image_file(path):
                    continue
                study_dir, patient_dir, part_dir = path.parent, path.parent.parent, path.parent.parent.parent
                m = _STUDY.match(study_dir.name)
                if not m:
                    faults.append(Fault(str(path), "bad_layout", f"study folder {study_dir.name!r} is not studyN_positive|negative"))
                    continue
                label = 1 if m.group(1) == "positive" else 0
                rel_study = study_dir.relative_to(root).as_posix()
                if rel_study in studies and studies[rel_study] != label:
                    faults.append(
                        Fault(str(path), "label_conflict", f"folder says {m.group(1)}, {official}_labeled_studies.csv says {studies[rel_study]}")
                    )
                rel = path.relative_to(root).as_posix()
                seen.add(rel)
                if listed and rel not in listed:
                    faults.append(Fault(str(path), "not_in_metadata", f"not listed in {official}_image_paths.csv"))
                part = part_dir.name.removeprefix("XR_").lower()
                records.append(
                    ImageRecord(
                        id=f"{official}/{part}/{patient_dir.name}/{study_dir.name}/{path.stem}",
                        path=str(path),
                        label=label,
                        group=patient_dir.name,
                        source=self.name,
                        part=part,
                        split=split,
                    )
                )
            for rel in sorted(listed - seen):
                faults.append(Fault(str(root / rel), "missing_file", f"listed in {official}_image_paths.csv but absent"))
        return Listing(records, faults)

    @staticmethod
    def _csv_rows(root: Path, name: str) -> list[list[str]] | None:
        path = root / name
        if not path.is_file():
            return None
        with path.open(newline="", encoding="utf-8") as fh:
            return [row for row in csv.reader(fh) if row]

    @classmethod
    def _strip(cls, root: Path, rel: str) -> str:
        # CSV paths start with "MURA-v1.1/"; make them relative to root
        parts = Path(rel.strip()).parts
        if parts and parts[0] not in ("train", "valid"):
            parts = parts[1:]
        return Path(*parts).as_posix() if parts else ""

    @classmethod
    def _read_studies(cls, root: Path, official: str, faults: list[Fault]) -> dict[str, int]:
        rows = cls._csv_rows(root, f"{official}_labeled_studies.csv")
        if rows is None:
            faults.append(Fault(str(root / f"{official}_labeled_studies.csv"), "missing_metadata", "labels from folder names only"))
            return {}
        out: dict[str, int] = {}
        for row in rows:
            if len(row) >= 2 and row[1].strip() in ("0", "1"):
                out[cls._strip(root, row[0]).rstrip("/")] = int(row[1])
        return out

    @classmethod
    def _read_paths(cls, root: Path, official: str, faults: list[Fault]) -> set[str]:
        rows = cls._csv_rows(root, f"{official}_image_paths.csv")
        if rows is None:
            return set()
        return {cls._strip(root, row[0]) for row in rows}
