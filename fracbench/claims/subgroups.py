"""The subgroups file: per image, the attributes a score is split by (hardware, body part, view).

Written beside a results folder's data summary as results/<dataset>/data/<dataset>-subgroups.csv
(by ``fracbench data subgroups`` and by every run), so that subgroup tables are built from committed
files alone, without the dataset. Columns: ``id`` then one column per attribute, in a fixed order.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path

from fracbench.io import atomic_write_text

ATTRIBUTES = ("hardware", "part", "view")  # the columns after id, in this order


def subgroups_path(results: str | Path, dataset: str) -> Path:
    """Where a results folder keeps a dataset's subgroups file."""
    return Path(results) / "data" / f"{dataset}-subgroups.csv"


def write_subgroups(path: str | Path, groups: Mapping[str, Mapping[str, str]]) -> Path:
    """Write id -> attributes as CSV (rows sorted by id), atomically; a missing attribute is written blank."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", *ATTRIBUTES])
    for image_id in sorted(groups):
        w.writerow([image_id, *(groups[image_id].get(a, "") for a in ATTRIBUTES)])
    return atomic_write_text(path, buf.getvalue())


def read_subgroups(path: str | Path) -> dict[str, dict[str, str]]:
    """The file written by :func:`write_subgroups`; a clear error when it is damaged."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("id", *ATTRIBUTES) if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a subgroups file (columns {', '.join(missing)} missing); "
                             "regenerate it with `fracbench data subgroups DATASET`")
        return {row["id"]: {a: row[a] for a in ATTRIBUTES} for row in reader if row.get("id")}
