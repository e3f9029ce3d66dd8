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


HELD_OUT_NAMES = ("test", "testing", "val", "valid", "validation")  # what a held-out folder is usually called


def _key(folder_name: str) -> str:
    return re.sub(r"[\s_\-]+", "", folder_name.strip().lower())


def _has_images(d: Path) -> bool:
    return any(p.is_file() and is_image_file(p) for p in d.rglob("*"))


@DATASETS.register("imagefolder")
class ImageFolder(Dataset):
    """Your own images, one folder per class: ``fractured/`` and ``not fractured/``, or any class names.

    When every class folder name is a fracture name (any case, spaces, underscores or hyphens:
    fractured / fracture / positive / abnormal / 1 against not fractured / non_fractured /
    no fracture / normal / negative / 0), labels are 1 = fractured, 0 = not fractured. Otherwise
    (``Covid/ Normal/ Viral Pneumonia/``, grades ``0/``-``4/``, ...) the labels are class indices in
    sorted folder order and ``classes`` names them; folders of the same name in different split
    folders are one class. An empty folder is no class (reported). When the root holds train/,
    val/ (or valid/) and test/ folders, those splits are kept as given; with only train/ and val/
    (or valid/), val is the held-out (test) folder; ``test_folder`` names the held-out folder
    explicitly (``held_out`` says which one was used). Files: .jpg .jpeg .png .bmp .tif .dcm.
    Each image is its own group until duplicate detection merges copies.

    License and citation: those of your images.
    """

    name = "imagefolder"

    def __init__(self, root, test_folder: str | None = None) -> None:
        super().__init__(root)
        self.test_folder = test_folder
        self.classes: list[str] = []  # label -> class name, set by scan()
        self.binary = True  # fracture names: label 1 = fractured
        self.held_out: str | None = None  # the folder (relative to root) kept as the test split, set by scan()

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        return bool(cls._class_dirs(root)) or any(
            cls._class_dirs(d) for d in cls._split_dirs(root).values()
        )

    @staticmethod
    def _class_dirs(root: Path) -> dict[Path, int]:
        """The recognised fracture class folders of ``root`` (kept for looks_like and callers)."""
        if not root.is_dir():
            return {}
        out = {}
        for d in sorted(root.iterdir()):
            if d.is_dir() and (lab := class_label(d.name)) is not None:
                out[d] = lab
        return out

    @staticmethod
    def _candidate_dirs(top: Path) -> list[Path]:
        return [d for d in sorted(top.iterdir()) if d.is_dir() and not d.name.startswith(".")
                and d.name.lower() not in _SPLIT_NAMES]

    @staticmethod
    def _split_dirs(root: Path, test_folder: str | None = None) -> dict[str, Path]:
        if not root.is_dir():
            return {}
        dirs = [d for d in sorted(root.iterdir()) if d.is_dir()]
        out: dict[str, Path] = {}
        for d in dirs:  # the later of two names for one split wins (valid/ over val/); the other is reported
            if d.name.lower() in _SPLIT_NAMES:
                out[_SPLIT_NAMES[d.name.lower()]] = d
        if test_folder:
            named = [d for d in dirs if d.name == test_folder] or [d for d in dirs if d.name.lower() == test_folder.lower()]
            if not named:
                raise FileNotFoundError(f"{root}: no folder {test_folder!r} to hold out as the test split "
                                        f"(folders: {', '.join(d.name for d in dirs) or 'none'})")
            out = {s: d for s, d in out.items() if d != named[0] and s != "test"}
            out["test"] = named[0]
            return out
        if "test" not in out and "val" in out and "train" in out:  # train/ + val/: val is what is held out
            out["test"] = out.pop("val")
        return out

    def scan(self) -> Listing:
        root = self.root
        faults: list[Fault] = []
        splits = self._split_dirs(root, self.test_folder)
        tops: list[tuple[str, Path]] = [(s, d) for s, d in splits.items()] if splits else [("", root)]
        self.held_out = splits["test"].name if "test" in splits else None
        used = set(splits.values())
        for d in sorted(p for p in root.iterdir() if splits and p.is_dir() and p not in used and not p.name.startswith(".")):
            taken = _SPLIT_NAMES.get(d.name.lower())
            why = (f"a second {taken} folder beside {splits[taken].name}/" if taken and taken in splits
                   else "a second held-out folder" if taken
                   else "not a train/val/test folder, and the root holds split folders")
            faults.append(Fault(str(d), "bad_layout", f"{why}; skipped: move its images into the split folders, "
                                                        "or name the held-out folder with --test-folder"))
        # class folders with images, per split; empty ones are reported and hold no class
        per_top: dict[str, list[Path]] = {}
        for split, top in tops:
            dirs = []
            for d in self._candidate_dirs(top):
                if _has_images(d):
                    dirs.append(d)
                else:
                    faults.append(Fault(str(d), "unknown_class_folder" if class_label(d.name) is None else "empty_class_folder",
                                        "no images in it; skipped: put images in it or remove it"))
            per_top[split] = dirs
        names: dict[str, str] = {}  # normalised name -> shown name (first seen)
        for dirs in per_top.values():
            for d in dirs:
                names.setdefault(_key(d.name), d.name)
        self.binary = bool(names) and all(class_label(n) is not None for n in names.values())
        if self.binary:
            self.classes = ["not fractured", "fractured"]
            label_of = {k: class_label(n) for k, n in names.items()}
        else:
            order = sorted(names, key=lambda k: (names[k].lower(), names[k]))
            self.classes = [names[k] for k in order]
            label_of = {k: i for i, k in enumerate(order)}
        records: list[ImageRecord] = []
        for split, top in tops:
            dirs = per_top[split]
            if not dirs:
                faults.append(Fault(str(top), "bad_layout", "no class folders with images (e.g. fractured/ and "
                                                           "not_fractured/, or one folder per class) found"))
                continue
            labels = {label_of[_key(d.name)] for d in dirs}
            if len(labels) < 2:
                faults.append(Fault(str(top), "bad_layout", f"only one class present: {sorted(d.name for d in dirs)}"))
            for d in dirs:
                label = int(label_of[_key(d.name)])
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
