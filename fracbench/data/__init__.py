"""Datasets, decoding, duplicate detection, manifests and the decode cache.

Adding a dataset is one module with one ``@DATASETS.register("name")`` class; import it below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fracbench.data import fracatlas, imagefolder, multiregion, mura, synthetic  # noqa: F401  (registers datasets)
from fracbench.data.base import DATASETS, Dataset, Fault, ImageRecord, Listing

__all__ = ["DATASETS", "Dataset", "Fault", "ImageRecord", "Listing", "Prepared", "find_default_dataset",
           "open_dataset", "prepare"]


def open_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, test_folder: str | None = None) -> Dataset:
    """The dataset ``name`` at ``data_dir`` (default: where ``fracbench data download`` puts it).

    ``test_folder``: the folder held out as the test split, for folder datasets (imagefolder and its kin).
    """
    from fracbench.paths import data_home

    cls = DATASETS.get(name)
    if name == "synthetic":
        from fracbench.data.synthetic import Synthetic

        if data_dir and Synthetic.looks_like(Path(data_dir)):
            return Synthetic(data_dir)  # an already generated set, whatever its spec
        return Synthetic.ensure(root=Path(data_dir) if data_dir else None)
    root = Path(data_dir) if data_dir else data_home() / name
    if not root.exists():
        hint = {
            "fracatlas": "Run `fracbench data download fracatlas`, or pass --data-dir PATH to an unpacked copy.",
            "multiregion": "Download 'Bone Fracture Multi-Region X-ray Data' from Kaggle and pass --data-dir to the "
                           "folder holding train/ and test/.",
            "mura": "MURA needs registration at https://stanfordmlgroup.github.io/competitions/mura/ ; "
                    "pass --data-dir PATH/TO/MURA-v1.1.",
        }.get(name, "Pass --data-dir PATH.")
        raise FileNotFoundError(f"{root}: no {name} data there. {hint}")
    if test_folder:
        from fracbench.data.imagefolder import ImageFolder

        if not issubclass(cls, ImageFolder):
            raise ValueError(f"{name} has its own split; a held-out folder can only be named for a class-folder set")
        return cls(root, test_folder=test_folder)
    return cls(root)


def find_default_dataset() -> tuple[str, Path | None]:
    """The first real dataset found in the data home, else ("synthetic", None)."""
    from fracbench.paths import data_home

    home = data_home()
    for name in ("fracatlas", "mura"):
        root = home / name
        if root.exists() and DATASETS.get(name).looks_like(root):
            return name, root
    return "synthetic", None


@dataclass
class Prepared:
    """A scanned, indexed and split dataset: what every experiment on it starts from."""

    dataset: Dataset
    manifest: Manifest  # noqa: F821
    listing: Listing
    index: ImageIndex  # noqa: F821
    duplicates: list = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)  # listing + decoding + split faults
    split_mode: str = "given"  # how ``manifest`` was split (fracbench.data.manifest.SPLIT_MODES)
    _other: dict = field(default_factory=dict, repr=False)  # manifests of other split modes, dealt on demand

    @property
    def name(self) -> str:
        return self.dataset.name

    def dealt_by_fracbench(self, mode: str | None = None) -> bool:
        """Whether the test split of ``mode`` (default: the prepared one) was dealt by fracbench by copy group
        (a grouped re-split, or a dataset without its own test folder), rather than kept as given."""
        return dealt_by_fracbench(mode or self.split_mode, self.index.records)

    def manifest_for(self, mode: str | None = None, seed: int = 0) -> Manifest:  # noqa: F821
        """The manifest under split ``mode`` (default: the one prepared); other modes are dealt on demand."""
        from fracbench.data.manifest import deal_verified

        if mode is None or mode == self.split_mode:
            return self.manifest
        if mode not in self.dataset.split_modes:
            raise ValueError(f"{self.name} offers the split modes {', '.join(self.dataset.split_modes)}, not {mode!r}")
        key = (mode, seed)
        if key not in self._other:
            manifest, _, self.duplicates = deal_verified(self.name, self.dataset.root, self.index, self.duplicates,
                                                         seed=seed, mode=mode, dealt=self.dealt_by_fracbench(mode))
            self._other[key] = manifest
        return self._other[key]


def dealt_by_fracbench(mode: str, records: list[ImageRecord]) -> bool:
    """Whether split ``mode`` of these records has its test split dealt by fracbench by copy group: a grouped
    re-split, or a dataset without a test folder of its own (the given modes keep one image by image)."""
    return mode == "grouped" or not any(r.split == "test" for r in records)


def prepare(name: str, data_dir: str | os.PathLike[str] | None = None, seed: int = 0,
            progress: bool = True, manifest_path: str | os.PathLike[str] | None = None,
            test_folder: str | None = None) -> Prepared:
    """Scan, decode once, find duplicates and split (or read the given manifest); ``test_folder``: see open_dataset."""
    from fracbench.copies import find_copies
    from fracbench.data.index import build_index
    from fracbench.data.manifest import Manifest, deal_verified

    ds = open_dataset(name, data_dir, test_folder=test_folder)
    listing = ds.scan()
    index = build_index(listing.records, progress=progress)
    dups = find_copies(index, progress=progress, cache_names=[r.path for r in index.records])
    mode = ds.default_split
    if manifest_path:
        manifest = Manifest.read(manifest_path, ds.name, ds.root)
        split_faults: list[Fault] = []
    else:
        # a split fracbench deals by copy group is checked by the split verifier, and its finds join their groups
        manifest, split_faults, dups = deal_verified(ds.name, ds.root, index, dups, seed=seed, mode=mode,
                                                     dealt=dealt_by_fracbench(mode, index.records))
    faults = list(listing.faults) + list(index.faults) + split_faults
    return Prepared(ds, manifest, listing, index, dups, faults, split_mode=mode)
