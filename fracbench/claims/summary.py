"""What ``fracbench data info`` reports: counts and every fault, as plain data."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from fracbench.data import Prepared


def summarize(p: Prepared) -> dict[str, Any]:
    """Counts per split, label and body part; faults by kind; duplicate groups (and label conflicts)."""
    m = p.manifest
    recs = p.index.records
    split_of = {r.id: r.split for r in m.rows}
    by_split: dict[str, Counter] = defaultdict(Counter)
    by_part: dict[str, Counter] = defaultdict(Counter)
    for r in m.rows:
        by_split[r.split]["fractured" if r.label else "not_fractured"] += 1
        by_part[r.part or "unknown"]["fractured" if r.label else "not_fractured"] += 1
    groups = []
    for g in p.duplicates:
        labels = sorted({recs[i].label for i in g.members})
        splits = sorted({split_of.get(recs[i].id, "excluded") for i in g.members})
        groups.append({
            "kind": g.kind,
            "ids": [recs[i].id for i in g.members],
            "paths": [recs[i].path for i in g.members],
            "labels": [recs[i].label for i in g.members],
            "splits": splits,
            "conflicting_labels": len(labels) > 1,
        })
    faults_by_kind = Counter(f.kind for f in p.faults)
    from fracbench.claims.anatomy import copy_shares, exact_groups_by_split, format_mix

    modes = {}
    for mode in p.dataset.split_modes:
        m_ = p.manifest_for(mode) if mode != p.split_mode else m
        modes[mode] = {"manifest_sha256": m_.fingerprint, **copy_shares(p, m_)}
    return {
        "dataset": p.name,
        "root": str(p.dataset.root),
        "images_found": len(recs),
        "images_in_manifest": len(m.rows),
        "manifest_fingerprint": m.fingerprint,
        "splits": {s: dict(c) for s, c in sorted(by_split.items())},
        "body_parts": {k: dict(c) for k, c in sorted(by_part.items())},
        "fault_counts": dict(sorted(faults_by_kind.items())),
        "faults": [f.as_dict() for f in p.faults],
        "duplicate_groups": groups,
        "duplicate_group_count": len(groups),
        "duplicate_images": sum(len(g["ids"]) for g in groups),
        "conflicting_label_groups": [g for g in groups if g["conflicting_labels"]],
        "near_duplicate_groups": sum(g["kind"] == "near" for g in groups),
        "split_mode": p.split_mode,
        "split_modes": modes,  # test images with an exact / exact-or-near copy in train, per split mode
        "exact_file_groups": exact_groups_by_split(p),
        "formats": format_mix(p),  # file types per split and the tutorial's .jpg count
    }
