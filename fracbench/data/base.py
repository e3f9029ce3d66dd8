"""What every dataset yields: image records, and the faults found while listing them."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from fracbench.registry import Registry

Box = tuple[float, float, float, float]  # x, y, width, height in pixels of the stored image

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageRecord:
    """One image. ``group`` is what must never be split apart (a patient, a duplicate set)."""

    id: str
    path: str  # absolute path of the image file
    label: int  # 1 = fractured, 0 = not fractured
    group: str
    source: str  # dataset name
    part: str = ""  # body part, "" when unknown
    boxes: tuple[Box, ...] = ()  # fracture boxes when known
    split: str = ""  # split fixed by the dataset itself ("" = fracbench assigns one)


@dataclass(frozen=True)
class Fault:
    """A problem with one file or one metadata row. Faults are reported, never fatal."""

    path: str
    kind: str  # e.g. unreadable, truncated, label_conflict, missing_file, not_in_metadata
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "kind": self.kind, "detail": self.detail}


@dataclass
class Listing:
    """The result of scanning a dataset root."""

    records: list[ImageRecord]
    faults: list[Fault] = field(default_factory=list)


class Dataset(ABC):
    """A public or local dataset laid out on disk under ``root``.

    Subclasses carry citation, license and URL in their docstring and set ``name``.
    """

    name: ClassVar[str]
    citation: ClassVar[str] = ""
    license: ClassVar[str] = ""
    url: ClassVar[str] = ""
    # how fracbench splits it by default, and the other manifests it offers (fracbench.data.manifest.SPLIT_MODES)
    default_split: ClassVar[str] = "given"
    split_modes: ClassVar[tuple[str, ...]] = ("given", "grouped")

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    @abstractmethod
    def scan(self) -> Listing:
        """List every image with its label and group, and every fault seen on the way."""

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        """True when ``root`` has this dataset's layout (used to find data automatically)."""
        return False

    def subgroups(self) -> dict[str, dict[str, str]]:
        """Image id -> {attribute: value} for subgroup analysis (e.g. hardware, body part, view).

        Empty for datasets whose metadata has no such attributes; subgroup tables then say so.
        """
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"


DATASETS: Registry[type[Dataset]] = Registry("dataset")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
