"""A folder of class subfolders: the layout the paper (and torchvision's ImageFolder) uses."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from fracbench.data.base import DATASETS, Dataset, Fault, ImageRecord, Listing, is_image_file

_POSITIVE = {"fractured", "fracture", "fractures", "positive", "abnormal", "1", "yes", "broken"}
_NEGATIVE = {
    "notfractured", "nonfractured", "nofracture", "unfractured", "notfracture", "nonfracture",
    "normal", "negative", "0", "no", "healthy",
}
_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                "test": "test", "testing": "test"}


def class_label(folder_name: str) -> int | None:
    """1, 0 or None for a class folder name: any case, spaces, underscores or hyphens."""
    key = re.sub(r"[\s_\-]+", "", folder_name.strip().lower())
    if key in _POSITIVE:
        return 1
    if key in _NEGATIVE:
        return 0
    return None


@DATASETS.register("imagefolder")
class ImageFolder(Dataset):
    """Your own images, one folder per class (``fractured/`` and ``not fractured/``, ...).

    Class folder names are recognised in any case with spaces, underscores or hyphens:
    fractured / fracture / positive / abnormal / 1 against not fractured / non_fractured /
    no fracture / normal / negative / 0. When the root holds train/, val/ (or valid/) and test/
    folders, those splits are kept as given. Files: .jpg .jpeg .png .bmp .tif .dcm.
    Each image is its own group until duplicate detection merges copies.

    License and citation: those of your images.
    """

    name = "imagefolder"

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        return bool(cls._class_dirs(root)) or any(
            cls._class_dirs(d) for d in cls._split_dirs(root).values()
        )

    @staticmethod
    def _class_dirs(root: Path) -> dict[Path, int]:
        if not root.is_dir():
            return {}
        out = {}
        for d in sorted(root.iterdir()):
            if d.is_dir() and (lab := class_label(d.name)) is not None:
                out[d] = lab
        return out

    @staticmethod
    def _split_dirs(root: Path) -> dict[str, Path]:
        if not root.is_dir():
            return {}
        return {_SPLIT_NAMES[d.name.lower()]: d for d in sorted(root.iterdir())
                if d.is_dir() and d.name.lower() in _SPLIT_NAMES}

    def scan(self) -> Listing:
        root = self.root
        faults: list[Fault] = []
        splits = self._split_dirs(root)
        tops: list[tuple[str, Path]] = [(s, d) for s, d in splits.items()] if splits else [("", root)]
        used = set(splits.values())
        for d in sorted(p for p in root.iterdir() if splits and p.is_dir() and p not in used and not p.name.startswith(".")):
            taken = _SPLIT_NAMES.get(d.name.lower())
            why = (f"a second {taken} folder beside {splits[taken].name}/" if taken
                   else "not a train/val/test folder, and the root holds split folders")
            faults.append(Fault(str(d), "bad_layout", f"{why}; skipped"))
        records: list[ImageRecord] = []
        for split, top in tops:
            classes = self._class_dirs(top)
            if not classes:
                faults.append(Fault(str(top), "bad_layout", "no class folders (e.g. fractured/ and not_fractured/) found"))
            labels = set(classes.values())
            if classes and labels != {0, 1}:
                faults.append(Fault(str(top), "bad_layout", f"only one class present: {sorted(d.name for d in classes)}"))
            for d in sorted(p for p in top.iterdir() if p.is_dir() and p not in classes and p.name.lower() not in _SPLIT_NAMES):
                faults.append(Fault(str(d), "unknown_class_folder", "folder name is not a recognised class; skipped"))
            for d, label in classes.items():
                files = sorted(p for p in d.rglob("*") if p.is_file())
                stems = Counter(p.relative_to(root).with_suffix("").as_posix() for p in files if is_image_file(p))
                for path in files:
                    if not is_image_file(path):
                        if not path.name.startswith("."):
                            faults.append(Fault(str(path), "not_an_image", f"suffix {path.suffix!r} is not an image type; skipped"))
                        continue
                    rel = path.relative_to(root).with_suffix("").as_posix()
                    if stems[rel] > 1:  # a.png beside a.jpg: keep the suffix so that ids stay unique
                        rel = path.relative_to(root).as_posix()
                    records.append(
                        ImageRecord(id=rel, path=str(path), label=label, group=rel, source=self.name, split=split)
                    )
        return Listing(records, faults)
