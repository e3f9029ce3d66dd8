"""Claim anatomy: where a 99.8% comes from on a leaky public set, and what is left without the leak.

The same model is trained on one dataset's *published* split (its release's own train/test
folders, copies across them included), on a *grouped* re-split in which no exact or near-duplicate
group crosses train/val/test, and tested *externally* on another dataset's test split (minus the
images the two datasets share). Beside each record go the numbers that explain it: how many test
images have an exact copy in train, how many an exact or near copy, and how close each test image's
nearest training image is.

Pure computation over a prepared dataset (its index and duplicate groups) and manifests; the
runner (fracbench.runs.runner's ``external`` kind) and the records are the edges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fracbench.data.manifest import Manifest, ManifestRow

SPLIT_TITLES = {
    "published": "published split (the release's own train/test folders)",
    "grouped": "grouped split (no duplicate or near-duplicate group crosses train/val/test)",
    "external": "external test (trained on the grouped split, tested on another dataset)",
}
NN_SIMILAR = 0.95  # polar-descriptor similarity (fracbench.copies) reported as "a very similar training image"


def _rows_by_index(prepared: Any, manifest: Manifest) -> dict[str, list[int]]:
    """Index positions (into prepared.index.records) of each split of ``manifest``, by record id."""
    pos = {r.id: i for i, r in enumerate(prepared.index.records)}
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for r in manifest.rows:
        if r.id in pos and r.split in out:
            out[r.split].append(pos[r.id])
    return out


def copy_shares(prepared: Any, manifest: Manifest) -> dict[str, Any]:
    """How many test images of ``manifest`` have an exact copy, or an exact or near copy, in its train split.

    Found afresh by the split verifier (fracbench.copies.verify_split), never with the groups that
    built the split: exact = the same file bytes or decoded pixels; near = also a re-encoded, turned,
    zoomed, cropped or mirrored copy confirmed by alignment. ``test_near_in_train_searched`` says what
    a test image was compared with before it counts as having no copy.
    """
    res = verified_crossings(prepared, manifest)
    rows = _rows_by_index(prepared, manifest)
    n = len(rows["test"])
    exact = sum(1 for c in res.crossings if c.how in ("file", "pixels"))
    near = len(res.crossings)
    return {"test_images": n,
            "test_exact_in_train": exact, "test_exact_in_train_share": exact / n if n else None,
            "test_near_in_train": near, "test_near_in_train_share": near / n if n else None,
            "test_near_in_train_searched": f"every train image by hashes; the {res.candidates_per_query} most "
                                           "similar aligned"}


_VERIFIED: dict[tuple[int, str], Any] = {}


def verified_crossings(prepared: Any, manifest: Manifest) -> Any:
    """The split verifier's crossings (test images with a copy in train) of ``manifest``: once per process, and
    remembered in the user cache by the images' content, the manifest's fingerprint and the copy rules."""
    from fracbench.copies import verify_split_cached

    key = (id(prepared.index), manifest.fingerprint)
    if key not in _VERIFIED:
        rows = _rows_by_index(prepared, manifest)
        _VERIFIED[key] = verify_split_cached(prepared.index, rows["test"], rows["train"], manifest.fingerprint)
    return _VERIFIED[key]


def heldout_crossings(prepared: Any, manifest: Manifest) -> Any:
    """The split verifier across the held-out boundary of ``manifest``: test images with a copy in train or in
    val (val chooses the checkpoint and the threshold, so a copy there reaches the test score too)."""
    from fracbench.copies import verify_split_cached

    key = (id(prepared.index), manifest.fingerprint, "train+val")
    if key not in _VERIFIED:
        rows = _rows_by_index(prepared, manifest)
        seen = list(rows["train"]) + list(rows.get("val", []))
        _VERIFIED[key] = verify_split_cached(prepared.index, rows["test"], seen, manifest.fingerprint + "|train+val")
    return _VERIFIED[key]


class SplitLeakError(RuntimeError):
    """A split fracbench dealt itself has a test image with a copy in train: the grouping missed a copy."""


def check_dealt_split(prepared: Any, manifest: Manifest, mode: str | None = None) -> None:
    """Fail when a split that fracbench dealt by copy group has a test image with a copy in train or val.

    Splits the user or the release made (the given folders, kept image by image) are not failed: their
    copies are the finding, reported by the audit and the records. Raises :class:`SplitLeakError` naming
    the crossing pairs (test image, train image, how found) and what to do.
    """
    if not prepared.dealt_by_fracbench(mode):
        return
    res = heldout_crossings(prepared, manifest)
    if not res.crossings:
        return
    recs = prepared.index.records
    pairs = "; ".join(f"{recs[c.query].id} ~ {recs[c.base].id} ({c.how})" for c in res.crossings[:20])
    more = f" (+{len(res.crossings) - 20} more)" if len(res.crossings) > 20 else ""
    raise SplitLeakError(
        f"the split verifier found {len(res.crossings)} test image(s) of manifest {manifest.fingerprint[:12]} with a "
        f"copy in train or val, although fracbench dealt it by copy group: {pairs}{more}. The copy groups missed these "
        "pairs; report it with `fracbench audit` output. Nothing was trained on this split.")


def nn_similarity(prepared: Any, manifest: Manifest) -> dict[str, Any]:
    """Each test image's highest descriptor similarity to any training image: median, 90th percentile, share >= NN_SIMILAR."""
    from fracbench.copies import nearest_similarity

    rows = _rows_by_index(prepared, manifest)
    sim = nearest_similarity(prepared.index.mids[rows["test"]], prepared.index.mids[rows["train"]])
    if not len(sim):
        return {"median": None, "p90": None, "share_above_threshold": None, "threshold": NN_SIMILAR}
    return {"median": float(np.median(sim)), "p90": float(np.percentile(sim, 90)),
            "share_above_threshold": float((sim >= NN_SIMILAR).mean()), "threshold": NN_SIMILAR}


def leak_info(prepared: Any, manifest: Manifest, split: str) -> dict[str, Any]:
    """What a record of an experiment on ``manifest`` carries under ``record["leak"]``."""
    return {"split": split, "split_title": SPLIT_TITLES.get(split, split), **copy_shares(prepared, manifest),
            "nn_similarity": nn_similarity(prepared, manifest)}


# ------------------------------------------------------------------------------------------------
# external test: train/val of one manifest, test of another dataset's
# ------------------------------------------------------------------------------------------------


@dataclass
class CombinedManifest(Manifest):
    """A manifest whose rows may live under other datasets' roots: path ``"<name>:<relative path>"``.

    The prefix keeps the fingerprint independent of where each dataset lies on disk.
    """

    roots: dict[str, Path] = field(default_factory=dict)

    def abspath(self, row: ManifestRow) -> Path:
        name, sep, rest = row.path.partition(":")
        if sep and name in self.roots:
            return self.roots[name] / rest
        return self.root / row.path


def shared_images(external: Any, base: Any, rows: Sequence[int]) -> dict[int, str]:
    """Which of ``external``'s index positions ``rows`` also occur in ``base`` (any split), and how.

    By content, never by name: the same file bytes or decoded pixels ("exact"), or a keypoint-
    confirmed turned/zoomed/cropped/re-encoded copy ("near", fracbench.copies.match_sets).
    """
    from fracbench.copies import match_sets

    found = match_sets(external.index, rows, base.index, np.flatnonzero(base.index.ok))
    return {c.query: "exact" if c.how in ("file", "pixels") else "near" for c in found.crossings}


def external_manifest(base_manifest: Manifest, external: Any, base: Any) -> tuple[CombinedManifest, dict[str, Any]]:
    """Train/val rows of ``base_manifest`` with the test rows of ``external`` that do not occur in ``base``.

    Returns the combined manifest and what the record says about it (the external dataset, its
    manifest fingerprint, how many of its test images were left out as shared, and why).
    """
    ext_m = external.manifest
    pos = {r.id: i for i, r in enumerate(external.index.records)}
    test_rows = [r for r in ext_m.rows if r.split == "test" and r.id in pos]
    shared = shared_images(external, base, [pos[r.id] for r in test_rows])
    name = ext_m.dataset
    kept = [ManifestRow(f"{name}:{r.id}", f"{name}:{r.path}", r.label, f"{name}:{r.group}", r.part, "test", r.sha256)
            for r in test_rows if pos[r.id] not in shared]
    rows = [r for r in base_manifest.rows if r.split in ("train", "val")] + kept
    # named after the training dataset (its results folder and tables); record["external"] says what was tested
    combined = CombinedManifest(base_manifest.dataset, base_manifest.root, rows,
                                roots={name: Path(ext_m.root)})
    kinds = list(shared.values())
    info = {"dataset": name, "manifest_sha256": ext_m.fingerprint, "test_images": len(test_rows),
            "excluded_overlap": len(shared), "excluded_exact": kinds.count("exact"),
            "excluded_near": kinds.count("near"),
            "excluded_ids": sorted(r.id for r in test_rows if pos[r.id] in shared)}
    return combined, info


# ------------------------------------------------------------------------------------------------
# what the audit and `data info` say about a dataset before any training
# ------------------------------------------------------------------------------------------------


def format_mix(prepared: Any, manifest: Manifest | None = None) -> dict[str, Any]:
    """File types per split, and what the tutorial's ``glob('**/*.jpg')`` counts of each split.

    The tutorial divides the number of correct answers by that count, so a split with other file
    types scores more than 100% of the images it counts.
    """
    from fracbench.training.protocols import jpg_count

    manifest = manifest or prepared.manifest
    by: dict[str, dict[str, int]] = {}
    paths: dict[str, list[str]] = {}
    for r in manifest.rows:
        ext = Path(r.path).suffix or "(none)"
        by.setdefault(r.split, {}).setdefault(ext, 0)
        by[r.split][ext] += 1
        paths.setdefault(r.split, []).append(r.path)
    out = {}
    for split, counts in by.items():
        n, jpg = sum(counts.values()), jpg_count(paths[split])
        out[split] = {"by_suffix": dict(sorted(counts.items())), "images": n, "tutorial_jpg_count": jpg,
                      "accuracy_scale": n / jpg if jpg else None}
    return out


def exact_groups_by_split(prepared: Any, manifest: Manifest | None = None) -> dict[str, Any]:
    """Byte-identical file groups that stay inside one split of ``manifest`` and those that span splits."""
    manifest = manifest or prepared.manifest
    split = {r.id: r.split for r in manifest.rows}
    idx = prepared.index
    by: dict[str, list[int]] = {}
    for i in np.flatnonzero(idx.ok):
        by.setdefault(idx.file_sha256[i], []).append(int(i))
    within = across = 0
    across_ids: list[list[str]] = []
    for members in by.values():
        if len(members) < 2:
            continue
        ids = [idx.records[i].id for i in members]
        if len({split.get(i, "") for i in ids}) > 1:
            across += 1
            across_ids.append(sorted(ids))
        else:
            within += 1
    return {"within_one_split": within, "across_splits": across, "across_split_groups": sorted(across_ids)}


def dataset_anatomy(prepared: Any, overlap: Any | None = None) -> dict[str, Any]:
    """Copies across the splits of each split mode the dataset offers, the format mix, and (given
    ``overlap``, another prepared dataset) which of its images occur in this one."""
    modes = {}
    for mode in prepared.dataset.split_modes:
        m = prepared.manifest_for(mode) if mode != prepared.split_mode else prepared.manifest
        modes[mode] = {"manifest_sha256": m.fingerprint, "splits": {s: sum(r.split == s for r in m.rows)
                                                                   for s in ("train", "val", "test")},
                       **copy_shares(prepared, m), "nn_similarity": nn_similarity(prepared, m)}
    out: dict[str, Any] = {"split_modes": modes, "formats": format_mix(prepared),
                           "exact_file_groups": exact_groups_by_split(prepared)}
    if overlap is not None:
        ok = [int(i) for i in np.flatnonzero(overlap.index.ok)]
        shared = shared_images(overlap, prepared, ok)
        ids = sorted(overlap.index.records[i].id for i in shared)
        out["overlap"] = {"dataset": overlap.name, "images": len(ok), "shared": len(shared),
                          "shared_exact": sum(v == "exact" for v in shared.values()),
                          "shared_near": sum(v == "near" for v in shared.values()), "shared_ids": ids}
    return out
