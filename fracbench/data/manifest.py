"""Train/val/test manifests: stratified, grouped, deterministic, fingerprinted.

A manifest is a CSV (id, path, label, group, part, split, sha256) with paths relative to the
dataset root, so its bytes, and so its fingerprint, do not depend on where the data lives.
Groups (a patient, or a set of exact/near-duplicate images) never cross splits. Unreadable
images are left out (and reported); everything else is kept.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fracbench.copies import CopyGroup
from fracbench.data.base import SPLITS, Fault
from fracbench.data.index import ImageIndex
from fracbench.io import atomic_write_bytes

COLUMNS = ("id", "path", "label", "group", "part", "split", "sha256")
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)  # train, val, test


@dataclass(frozen=True)
class ManifestRow:
    id: str
    path: str  # relative to the manifest's root
    label: int
    group: str
    part: str
    split: str
    sha256: str


@dataclass
class Manifest:
    dataset: str
    root: Path
    rows: list[ManifestRow]

    def to_csv_bytes(self) -> bytes:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in self.rows:
            w.writerow([r.id, r.path, r.label, r.group, r.part, r.split, r.sha256])
        return buf.getvalue().encode("utf-8")

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.to_csv_bytes()).hexdigest()

    def abspath(self, row: ManifestRow) -> Path:
        return self.root / row.path

    def split_rows(self, split: str) -> list[ManifestRow]:
        return [r for r in self.rows if r.split == split]

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and label (labels "0" and "1" always present; other class indices when found)."""
        out: dict[str, dict[str, int]] = {s: {"0": 0, "1": 0} for s in SPLITS}
        for r in self.rows:
            per = out.setdefault(r.split, {"0": 0, "1": 0})
            per[str(r.label)] = per.get(str(r.label), 0) + 1
        return out

    def write(self, path: str | Path) -> Path:
        return atomic_write_bytes(path, self.to_csv_bytes())

    @classmethod
    def read(cls, path: str | Path, dataset: str, root: str | Path) -> Manifest:
        path = Path(path)
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise ValueError(f"{path}: not a fracbench manifest (columns {reader.fieldnames}, expected {COLUMNS})")
            rows = [
                ManifestRow(r["id"], r["path"], int(r["label"]), r["group"], r["part"], r["split"], r["sha256"])
                for r in reader
            ]
        bad = {r.split for r in rows} - set(SPLITS)
        if bad:
            raise ValueError(f"{path}: unknown split names {sorted(bad)}; expected {SPLITS}")
        return cls(dataset, Path(root), rows)


def _rel(path: str, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return Path(path).resolve().as_posix()


def deal(sizes: Sequence[int], splits: Sequence[str], share: Mapping[str, float],
         items: Sequence[Hashable] | None = None) -> dict[Hashable, str]:
    """Give each item, in order, to the split furthest below its share of images (ties: the earlier split).

    The one dealing rule of fracbench's splits (manifests and the leak demo): ``sizes[i]`` images
    go with item ``i``; ``share`` maps each split to its fraction of the total.
    """
    items = list(range(len(sizes))) if items is None else list(items)
    total = sum(sizes)
    got = dict.fromkeys(splits, 0)
    out: dict[Hashable, str] = {}
    for item, n in zip(items, sizes):
        s = max(splits, key=lambda s: (share[s] * total - got[s], -list(splits).index(s)))
        out[item] = s
        got[s] += n
    return out


SPLIT_MODES = {
    "given": "the dataset's own split folders kept image by image, copies across them included (and reported); "
             "val carved from train by duplicate group when there is no val folder, from the groups with no "
             "copy in the other given splits",
    "published": "a release's own split kept image by image: the same rule as \"given\", named for a public release",
    "grouped": "the dataset's own splits ignored: every duplicate group dealt to one split",
}
IMAGE_BY_IMAGE = ("given", "published")  # the modes that keep a dataset's own split folders as they are


def make_manifest(
    dataset: str,
    root: Path,
    index: ImageIndex,
    duplicates: list[CopyGroup],
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    mode: str = "given",
) -> tuple[Manifest, list[Fault]]:
    """Assign splits to every readable record; return the manifest and split-level faults.

    ``mode`` (``SPLIT_MODES``) says what happens to splits fixed by the dataset (MURA's official
    valid set, an image folder's train/val/test): "given" (or "published") keeps them image by image,
    as the user or the release made them, copies across them included (each crossing group is
    reported as a fault, and the audit counts them); "grouped" ignores them. A user's split is never
    re-dealt unless "grouped" is asked for. The remaining groups are shuffled by ``seed`` within strata of
    (label, body part) and dealt to the free splits so each reaches its share of images; a preset
    train split without a val split is the pool val is carved from.
    """
    if mode not in SPLIT_MODES:
        raise ValueError(f"unknown split mode {mode!r}; expected one of {', '.join(SPLIT_MODES)}")
    recs = index.records
    root = Path(root).resolve()
    faults: list[Fault] = []
    # group id: the dataset's group, merged across duplicate sets (union by the smallest member)
    parent: dict[str, str] = {}

    def find(g: str) -> str:
        while parent.get(g, g) != g:
            g = parent[g]
        return g

    for dup in duplicates:
        roots = sorted({find(recs[i].group) for i in dup.members})
        for other in roots[1:]:
            parent[other] = roots[0]
    gid = [find(r.group) for r in recs]
    given_of = ["" if mode == "grouped" else recs[k].split for k in range(len(recs))]
    # the unit dealt to a split: a duplicate group, or, when the dataset's folders are kept, a group's part
    # in one given split (so val carved from train takes whole groups of train, and test stays as given)
    unit = [(gid[k], given_of[k]) if mode in IMAGE_BY_IMAGE else (gid[k], "") for k in range(len(recs))]
    members: dict[tuple[str, str], list[int]] = defaultdict(list)
    for k in range(len(recs)):
        if index.ok[k]:
            members[unit[k]].append(k)

    preset_splits = {s for s in given_of if s}
    # a preset "train" without a preset "val" is a pool from which val is carved
    pool_from_train = "train" in preset_splits and "val" not in preset_splits
    fixed = {s for s in preset_splits if not (s == "train" and pool_from_train)}
    free = [s for s in SPLITS if s not in fixed]

    split_of: dict[tuple[str, str], str] = {}
    pool: list[tuple[str, str]] = []
    by_group: dict[str, set[str]] = defaultdict(set)
    for u, ks in members.items():
        by_group[u[0]].update(given_of[k] for k in ks if given_of[k])
    for g, present in sorted(by_group.items()):
        if len(present) > 1:
            k0 = next(k for u, ks in members.items() if u[0] == g for k in ks)
            faults.append(
                Fault(recs[k0].path, "group_crosses_given_splits",
                      f"group {g} has copies in the dataset's own splits {sorted(present)}: a leak in the given split")
            )
    for u, ks in members.items():
        given = {given_of[k] for k in ks if given_of[k] in fixed}
        if given:  # one given split per unit under the image-by-image modes; "grouped" has none
            split_of[u] = sorted(given, key=SPLITS.index)[-1]
        elif pool_from_train and by_group[u[0]] & fixed:
            # a train group with copies in a given split (the release's test) stays in train: carving it into
            # val would take the only copies of those test images out of train (a leak smaller than the
            # release's) and put copies of test images into the val set that chooses the checkpoint
            split_of[u] = "train"
        else:
            pool.append(u)

    if pool and free:
        share = {s: fractions[SPLITS.index(s)] for s in free}
        total = sum(share.values())
        share = {s: v / total for s, v in share.items()}
        strata: dict[tuple[int, str], list[tuple[str, str]]] = defaultdict(list)
        for u in sorted(pool):
            ks = members[u]
            strata[(max(recs[k].label for k in ks), recs[ks[0]].part)].append(u)
        for key in sorted(strata):
            units = strata[key]
            random.Random(f"{seed}|{key}").shuffle(units)
            split_of.update(deal([len(members[u]) for u in units], free, share, items=units))
    elif pool:
        for u in pool:
            split_of[u] = "train"

    rows = []
    for k, r in enumerate(recs):
        if not index.ok[k]:
            continue
        rows.append(ManifestRow(r.id, _rel(r.path, root), int(r.label), gid[k], r.part, split_of[unit[k]],
                                index.file_sha256[k]))
    rows.sort(key=lambda r: (SPLITS.index(r.split), r.id))
    return Manifest(dataset, root, rows), faults


REPAIR_ROUNDS = 3  # verify-and-merge rounds before a dealt split that still has copies across is given up on


def deal_verified(dataset: str, root: Path, index: ImageIndex, groups: list[CopyGroup], seed: int = 0,
                  fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, mode: str = "given",
                  dealt: bool = True) -> tuple[Manifest, list[Fault], list[CopyGroup]]:
    """``make_manifest``, then, when fracbench ``dealt`` the test split by copy group, the split verifier
    (fracbench.copies.verify_split, which never reads the groups): every copy it finds between a test image and
    a train or val image joins its group and the split is dealt again, until none crosses (at most
    ``REPAIR_ROUNDS``).

    Returns the manifest, its faults and the groups (with the verifier's pairs merged in). A split that still
    has copies across after the last round is returned as it is: the run's check (fracbench.claims.anatomy.
    check_dealt_split) then stops with the pairs named.
    """
    from fracbench.copies import verify_split_cached

    manifest, faults = make_manifest(dataset, root, index, groups, seed=seed, fractions=fractions, mode=mode)
    if not dealt:
        return manifest, faults, groups
    pos = {r.id: i for i, r in enumerate(index.records)}
    for _ in range(REPAIR_ROUNDS):
        test = [pos[r.id] for r in manifest.rows if r.split == "test" and r.id in pos]
        # the held-out boundary: a test image may have no copy in train nor in val (val chooses the checkpoint)
        seen = [pos[r.id] for r in manifest.rows if r.split in ("train", "val") and r.id in pos]
        res = verify_split_cached(index, test, seen, manifest.fingerprint + "|train+val")
        if not res.crossings:
            break
        groups = merge_pairs(groups, [(c.query, c.base) for c in res.crossings])
        manifest, faults = make_manifest(dataset, root, index, groups, seed=seed, fractions=fractions, mode=mode)
    return manifest, faults, groups


def merge_pairs(groups: Sequence[CopyGroup], pairs: Sequence[tuple[int, int]]) -> list[CopyGroup]:
    """``groups`` with each pair's two images (and their groups) joined; joined groups are "near"."""
    parent: dict[int, int] = {}

    def find(i: int) -> int:
        while parent.get(i, i) != i:
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    kind: dict[int, str] = {}
    for g in groups:
        for m in g.members[1:]:
            union(g.members[0], m)
    for g in groups:
        kind[find(g.members[0])] = g.kind
    merged_roots = set()
    for a, b in pairs:
        union(a, b)
        merged_roots.add(find(a))
    members: dict[int, list[int]] = defaultdict(list)
    for i in {m for g in groups for m in g.members} | {i for p in pairs for i in p}:
        members[find(i)].append(i)
    out = []
    for r, ms in members.items():
        if len(ms) > 1:
            k = "near" if r in {find(x) for x in merged_roots} else kind.get(r, "near")
            out.append(CopyGroup(tuple(sorted(ms)), k))
    return sorted(out, key=lambda g: g.members[0])
