"""Bone Fracture Multi-Region X-ray Data: the kind of public set on which a small CNN scores ~99%."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fracbench.data.base import DATASETS, Listing
from fracbench.data.imagefolder import ImageFolder


@DATASETS.register("multiregion")
class MultiRegion(ImageFolder):
    """Bone Fracture Multi-Region X-ray Data: binary "fractured" / "not fractured" radiographs.

    About 9,700 images in ``train/`` and ``test/`` folders, each with class folders ``fractured/``
    and ``not fractured/`` (the layout the paper describes, and about its training-set size),
    gathered from web figures, journal figures, FracAtlas radiographs and many rotated, zoomed and
    mirrored copies of the same few hundred radiographs. Most test files are exact copies of
    training files. fracbench keeps the release's own train/test split as the **published split**
    (validation carved from the training groups that have no copy in test, recorded in the manifest, so
    every test image keeps the copies in train the release gave it) and also deals a **grouped split**
    in which no exact or near-duplicate group crosses train/val/test
    (``fracbench.data.manifest.SPLIT_MODES``).

    Citation: Rodrigo, B. M. "Bone Fracture Multi-Region X-ray Data", Kaggle dataset
    (bmadushanirodrigo/fracture-multi-region-x-ray-data), and the original sources of its images.
    License: ODC-By 1.0 (as listed on Kaggle); research use.
    URL: https://www.kaggle.com/datasets/bmadushanirodrigo/fracture-multi-region-x-ray-data
    """

    name = "multiregion"
    citation = "Rodrigo, B. M., Bone Fracture Multi-Region X-ray Data, Kaggle (bmadushanirodrigo)"
    license = "ODC-By 1.0"
    url = "https://www.kaggle.com/datasets/bmadushanirodrigo/fracture-multi-region-x-ray-data"
    default_split = "published"  # the release's own train/test, as a user of this set trains on it
    split_modes = ("published", "grouped")

    @classmethod
    def looks_like(cls, root: Path) -> bool:
        return all((root / s / c).is_dir() for s in ("train", "test") for c in ("fractured", "not fractured"))

    def scan(self) -> Listing:
        if not self.looks_like(self.root):
            raise FileNotFoundError(
                f"{self.root}: not the multiregion layout (expected train/ and test/, each with 'fractured' and "
                "'not fractured' folders). Download the Kaggle release and pass --data-dir to the folder holding "
                "train/ and test/.")
        listing = super().scan()
        records = [replace(r, source=self.name) for r in listing.records]
        return Listing(records, list(listing.faults))
