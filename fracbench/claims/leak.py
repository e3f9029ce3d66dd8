"""The leak demonstration: rotated/flipped copies of each radiograph, split two ways.

Popular public fracture sets ship several rotated and mirrored copies of every radiograph. Split
such a set at image level at random, as a naive pipeline does, and copies of one radiograph land
in train and in test: the test set then partly measures recall of training images. fracbench
builds such a set from the run's own dataset (each source image decoded once, through the decode
cache; the copies written as PNGs to ``<cache>/leak/<key>/``), splits it (a) at image level at
random and (b) grouped by source image (and by fracbench's duplicate groups), and trains the same
model on both (fracbench.runs.runner's ``leak_demo`` kind).

The middle is pure: ``select_sources``, ``naive_splits``, ``grouped_splits`` and ``leak_stats``;
``write_copies`` is the edge that writes files.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fracbench.data.base import SPLITS
from fracbench.data.manifest import DEFAULT_FRACTIONS, Manifest, ManifestRow, deal

LEAK_VERSION = 1
# np.rot90 turns counter-clockwise; the copies are made from the decoded, resized square image
TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda a: a,
    "rot90": lambda a: np.rot90(a, 1),
    "rot180": lambda a: np.rot90(a, 2),
    "rot270": lambda a: np.rot90(a, 3),
    "hflip": np.fliplr,
    "vflip": np.flipud,
}
DEFAULT_COPIES = ("identity", "rot90", "hflip", "rot270")
VARIANTS = {  # variant name -> (split, protocol)
    "naive_as_published": ("naive", "as_published"),
    "naive_honest": ("naive", "honest"),
    "grouped_as_published": ("grouped", "as_published"),
    "grouped_honest": ("grouped", "honest"),
}
SPLIT_TITLES = {"naive": "(a) image-level random split", "grouped": "(b) split grouped by source image"}


@dataclass(frozen=True)
class LeakSet:
    """The copies on disk and the two manifests over them."""

    root: Path
    copies: tuple[str, ...]
    sources: int
    naive: Manifest
    grouped: Manifest

    def manifest(self, split: str) -> Manifest:
        return {"naive": self.naive, "grouped": self.grouped}[split]


def variant_name(experiment: str, variant: str) -> str:
    return f"{experiment}__{variant}"


def select_sources(rows: Sequence[ManifestRow], n: int = 0, balance: bool = False, seed: int = 0,
                   exclude: set[int] | None = None) -> list[int]:
    """Indices into ``rows`` of the source images: all of them (n=0), or ``n`` drawn per class.

    ``balance`` draws n/2 of each class (as the balanced public sets are); otherwise each class keeps
    its share. The draw depends on ``seed`` only, so every training seed sees the same sources.
    """
    exclude = exclude or set()
    by_label: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if i not in exclude:
            by_label[int(r.label)].append(i)
    total = sum(len(v) for v in by_label.values())
    if not n or n >= total:
        return sorted(i for v in by_label.values() for i in v)
    rng = np.random.default_rng(seed)
    out: list[int] = []
    labels = sorted(by_label)
    for k, lab in enumerate(labels):
        pool = by_label[lab]
        if balance:
            want = n // len(labels) + (1 if k < n % len(labels) else 0)
        else:
            want = round(n * len(pool) / total)
        want = min(want, len(pool))
        out += [pool[j] for j in rng.choice(len(pool), size=want, replace=False)]
    return sorted(out)


def _deal(n_images: Sequence[int], order: Sequence[int], fractions: Sequence[float]) -> dict[int, str]:
    """Give each item (in ``order``) to the split furthest below its share of images."""
    share = {s: fractions[k] for k, s in enumerate(SPLITS)}
    return deal([n_images[i] for i in order], SPLITS, share, items=order)


def naive_splits(n: int, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[str]:
    """Image-level random split (as ``random_split`` on the whole folder): each copy on its own."""
    perm = np.random.default_rng(seed).permutation(n)
    a = round(fractions[0] * n)
    b = a + round(fractions[1] * n)
    out = [""] * n
    for pos, i in enumerate(perm):
        out[int(i)] = "train" if pos < a else "val" if pos < b else "test"
    return out


def grouped_splits(groups: Sequence[str], labels: Sequence[int], seed: int = 0,
                   fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[str]:
    """Split with every group on one side, stratified by label: no source (or duplicate) crosses."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    names = sorted(members)
    strata: dict[int, list[int]] = defaultdict(list)
    for k, g in enumerate(names):
        strata[max(int(labels[i]) for i in members[g])].append(k)
    sizes = [len(members[g]) for g in names]
    split_of: dict[int, str] = {}
    rng = np.random.default_rng(seed)
    for lab in sorted(strata):
        order = [strata[lab][j] for j in rng.permutation(len(strata[lab]))]
        split_of.update(_deal(sizes, order, fractions))
    out = [""] * len(groups)
    for k, g in enumerate(names):
        for i in members[g]:
            out[i] = split_of[k]
    return out


def leak_stats(manifest: Manifest) -> dict[str, object]:
    """How many sources have copies in more than one split, and how many test images have a copy in train."""
    splits_of: dict[str, set[str]] = defaultdict(set)
    for r in manifest.rows:
        splits_of[r.group].add(r.split)
    crossing = sum(1 for s in splits_of.values() if len(s) > 1)
    test = [r for r in manifest.rows if r.split == "test"]
    leaked = sum(1 for r in test if "train" in splits_of[r.group])
    return {"sources": len(splits_of), "sources_crossing_splits": crossing, "test_images": len(test),
            "test_images_with_a_copy_in_train": leaked,
            "test_share_with_a_copy_in_train": leaked / len(test) if test else None}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def leak_key(manifest: Manifest, sources: Sequence[int], copies: Sequence[str], size: int) -> str:
    h = hashlib.sha256(f"{manifest.fingerprint}|{size}|{','.join(copies)}|v{LEAK_VERSION}|".encode())
    h.update(",".join(manifest.rows[i].id for i in sources).encode())
    return h.hexdigest()[:16]


def write_copies(manifest: Manifest, images: np.ndarray, sources: Sequence[int], copies: Sequence[str],
                 root: Path) -> list[tuple[ManifestRow, str, str, str]]:
    """Write every copy of every source as a PNG under ``root``.

    Returns (source row, copy name, path relative to ``root``, file SHA-256) per copy.

    ``images`` holds the decoded square images aligned with ``manifest.rows`` (a DecodedCache's array).
    A folder completed before (``done.json`` lists the same files) is reused as it is.
    """
    from PIL import Image

    from fracbench.io import atomic_write_bytes, completed_files, mark_completed

    bad = [c for c in copies if c not in TRANSFORMS]
    if bad:
        raise ValueError(f"unknown copy transforms {bad}; known: {', '.join(TRANSFORMS)}")
    plan = []
    for i in sources:
        r = manifest.rows[i]
        cls = "fractured" if r.label else "not_fractured"
        for c in copies:
            plan.append((i, c, f"{cls}/{_safe(r.id)}__{c}.png"))
    files = [p for _, _, p in plan]
    if completed_files(root, files, LEAK_VERSION) == files:
        shas = [hashlib.sha256((root / p).read_bytes()).hexdigest() for p in files]
    else:
        shas = []
        for i, c, rel in plan:
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(TRANSFORMS[c](np.asarray(images[i])))).save(
                buf, format="PNG", compress_level=1)
            data = buf.getvalue()
            atomic_write_bytes(root / rel, data)
            shas.append(hashlib.sha256(data).hexdigest())
        mark_completed(root, files, files, LEAK_VERSION, copies=list(copies))
    return [(manifest.rows[i], c, rel, sha) for (i, c, rel), sha in zip(plan, shas)]


def build_leak_set(manifest: Manifest, images: np.ndarray, *, size: int, copies: Sequence[str] = DEFAULT_COPIES,
                   sources: int = 0, balance: bool = False, seed: int = 0, exclude: set[int] | None = None,
                   root: Path | None = None, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> LeakSet:
    """Copies of the chosen sources on disk, and the naive and grouped manifests over them."""
    from fracbench.paths import cache_dir

    copies = tuple(copies)
    chosen = select_sources(manifest.rows, sources, balance, seed, exclude)
    if not chosen:
        raise ValueError("leak demo: no readable source images")
    key = leak_key(manifest, chosen, copies, size)
    root = Path(root) if root else cache_dir() / "leak" / key
    made = write_copies(manifest, images, chosen, copies, root)
    naive = naive_splits(len(made), seed, fractions)
    grouped = grouped_splits([m[0].group for m in made], [m[0].label for m in made], seed, fractions)
    name = f"{manifest.dataset}+{len(copies)}copies"

    def rows(splits: list[str]) -> list[ManifestRow]:
        # the group column names the source (merged with its duplicates) in both manifests; only (b) honours it
        out = [ManifestRow(f"{src.id}__{c}", rel, int(src.label), src.group, src.part, s, sha)
               for (src, c, rel, sha), s in zip(made, splits)]
        out.sort(key=lambda r: (SPLITS.index(r.split), r.id))
        return out

    return LeakSet(root, copies, len(chosen), Manifest(name, root, rows(naive)), Manifest(name, root, rows(grouped)))
