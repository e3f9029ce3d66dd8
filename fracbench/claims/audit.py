"""``fracbench audit``: why a fracture classifier can score 99.8% on a leaky dataset.

Everything the data itself can tell before any model is trained:

* exact duplicates, counted twice: by file SHA-256 (byte-identical files) and by SHA-256 of the
  decoded pixels (the same picture stored in different bytes);
* near copies (fracbench.copies): re-encoded copies by perceptual hashes under all eight
  rotations/flips, turned (any angle), zoomed, cropped and mirrored copies by alignment, each
  member confirmed against an earlier one;
* copies across the given split (the user's own folders, kept image by image) and across
  fracbench's grouped re-split (``fracbench audit --split given|grouped``);
* duplicate groups that cross the splits of a manifest (fracbench's own, where there must be
  none, or a user's, e.g. a naive random split, whose leaks this shows);
* groups whose members carry different labels (each one named);
* metadata that disagrees with the folders, truncated and unreadable files;
* class balance per split and per body part, with the majority-class accuracy beside it.

``audit(prepared, manifest)`` is pure computation on the prepared dataset (its index holds the
decoded thumbnails); ``decode_group_images`` reads the duplicate groups' files at the edge for a
finer pixel check and the report's thumbnails; ``write_audit`` writes audit.json and a
self-contained audit.html atomically.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fracbench.copies import dihedral
from fracbench.copies.groups import CLOSE, MAX_PIXEL_DIFF, MIN_CLOSE_SHARE, confirm_pair
from fracbench.data import Prepared
from fracbench.data.base import SPLITS
from fracbench.data.manifest import Manifest
from fracbench.io import atomic_write_json, atomic_write_text

AUDIT_VERSION = 1
COMPARE = 64  # side of the square images compared pixel by pixel (decoded at the edge)
THUMB_PX = 96  # longest side of the report's thumbnails
# the eight transforms in fracbench.data.index.dihedral order (np.rot90 turns counter-clockwise)
TRANSFORMS = ("identity", "horizontal flip", "rot90", "rot90 + flip", "rot180", "vertical flip", "rot270",
              "rot270 + flip")
FILE_FAULTS = ("truncated", "unreadable", "decode_warning", "not_an_image")
SPLIT_FAULTS = ("group_crosses_given_splits",)
# a confirmed pair's pixels: FracAtlas' re-encoded copies differ by < 3 grey levels at 32 px; at the
# finer 64 px comparison JPEG noise averages out less, so the bound is looser by the same factor as dedup's
CONFIRM_MEAN = {32: MAX_PIXEL_DIFF, COMPARE: 2 * MAX_PIXEL_DIFF}


# --------------------------------------------------------------------------------------------
# the pure middle
# --------------------------------------------------------------------------------------------


def _rel(path: str, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return path


def _hash_groups(keys: Sequence[str], ok: np.ndarray) -> list[list[int]]:
    by: dict[str, list[int]] = defaultdict(list)
    for i in np.flatnonzero(ok):
        if keys[i]:
            by[keys[i]].append(int(i))
    return sorted((m for m in by.values() if len(m) > 1), key=lambda m: m[0])


def _compare(a: np.ndarray, b: np.ndarray) -> tuple[int, float, float]:
    """(transform t, mean |a - t(b)|, share of pixels within CLOSE levels) for the best of the 8 transforms."""
    best = (0, float("inf"), 0.0)
    a16 = a.astype(np.int16)
    for t, tb in enumerate(dihedral(b)):
        if tb.shape != a.shape:
            continue
        d = np.abs(a16 - tb.astype(np.int16))
        m = float(d.mean())
        if m < best[1]:
            best = (t, m, float((d <= CLOSE).mean()))
    return best


def _split_lookup(manifest: Manifest, root: Path) -> tuple[dict[str, str], dict[str, str]]:
    by_id = {r.id: r.split for r in manifest.rows}
    by_path = {r.path: r.split for r in manifest.rows}
    return by_id, by_path


def _split_of(rec, by_id: Mapping[str, str], by_path: Mapping[str, str], root: Path) -> str:
    s = by_id.get(rec.id)
    if s is None:
        s = by_path.get(_rel(rec.path, root), "not in manifest")
    return s


def _balance(counter: Mapping[str, int]) -> dict[str, Any]:
    pos, neg = int(counter.get("fractured", 0)), int(counter.get("not_fractured", 0))
    n = pos + neg
    return {"fractured": pos, "not_fractured": neg, "total": n, "fractured_share": pos / n if n else None,
            "majority_accuracy": max(pos, neg) / n if n else None}


def crossing_groups(groups: Sequence[Sequence[int]], records, manifest: Manifest, root: Path) -> list[dict]:
    """The duplicate groups (member indices) whose members sit in more than one split of ``manifest``."""
    by_id, by_path = _split_lookup(manifest, root)
    out = []
    for members in groups:
        splits = [_split_of(records[i], by_id, by_path, root) for i in members]
        present = sorted({s for s in splits if s in SPLITS}, key=SPLITS.index)
        if len(present) > 1:
            out.append({"ids": [records[i].id for i in members], "splits": splits, "split_set": present})
    return out


def _exact_duplicates(idx) -> dict[str, Any]:
    """Exact duplicates, by file bytes and by decoded pixels, counted separately."""
    recs = idx.records
    file_groups = _hash_groups(idx.file_sha256, idx.ok)
    pixel_groups = _hash_groups(idx.pixel_sha256, idx.ok)
    file_pairs = {(a, b) for g in file_groups for a in g for b in g if a < b}
    pixel_only = [g for g in pixel_groups if any((a, b) not in file_pairs for a in g for b in g if a < b)]

    def summary(groups: list[list[int]]) -> dict[str, int]:
        n = sum(len(g) for g in groups)
        return {"groups": len(groups), "images": n, "redundant_copies": n - len(groups)}

    return {
        "by_file_hash": summary(file_groups),
        "by_pixel_hash": summary(pixel_groups),
        "pixel_identical_but_different_files": summary(pixel_only),
        "file_hash_groups": [[recs[i].id for i in g] for g in file_groups],
        "pixel_hash_groups": [[recs[i].id for i in g] for g in pixel_groups],
    }


KEYPOINT_TRIES = 6  # earlier members (closest thumbnails first) tried with the keypoint check


def _closest_member(idx, i: int, earlier: Sequence[int], pixels: Mapping[int, np.ndarray] | None, limit: float,
                    matcher: Any) -> dict[str, Any]:
    """How member ``i`` of a group is a copy of one earlier member: identical file, identical pixels,
    pixels under a turn/flip, or (for turned/zoomed/cropped copies) keypoints confirmed by pixel correlation."""
    cands = []
    for j in earlier:
        if idx.file_sha256[i] == idx.file_sha256[j]:
            cands.append((0, 0.0, j, "file", 0, 0.0, 1.0))
        elif idx.pixel_sha256[i] == idx.pixel_sha256[j]:
            cands.append((1, 0.0, j, "pixels", 0, 0.0, 1.0))
        else:
            a = pixels.get(j) if pixels else None
            b = pixels.get(i) if pixels else None
            if a is None or b is None:
                a, b = idx.thumbs[j], idx.thumbs[i]
            t, mean, close = _compare(b, a)  # member i ~ transform t of member j
            cands.append((2, mean, j, "near", t, mean, close))
    cands.sort()
    _, _, j, how, t, mean, close = cands[0]
    out = {"match_of": j, "match": how, "transform": TRANSFORMS[t] if how == "near" else "identical",
           "mean_abs_diff": round(mean, 3), "close_share": round(close, 4),
           "confirmed": how != "near" or (mean <= limit and close >= MIN_CLOSE_SHARE)}
    if not out["confirmed"] and matcher is not None:
        for c in cands[:KEYPOINT_TRIES]:
            chk = confirm_pair(matcher, i, c[2])
            if chk.confirmed:
                out.update(match_of=c[2], match="keypoints", transform=f"turned/zoomed/cropped/mirrored ({chk.method})",
                           mean_abs_diff=None, close_share=None, confirmed=True, inliers=chk.inliers,
                           correlation=round(chk.ncc, 4))
                break
    return out


def _duplicate_groups(prepared: Prepared, split_of: Sequence[str], root: Path,
                      pixels: Mapping[int, np.ndarray] | None) -> tuple[list[dict], dict[str, Any]]:
    """Every copy group (fracbench.copies), each member tied to an earlier one and confirmed."""
    idx = prepared.index
    recs = idx.records
    size = COMPARE if pixels else 32
    limit = CONFIRM_MEAN.get(size, MAX_PIXEL_DIFF)
    matcher = None
    if any(g.kind == "near" for g in prepared.duplicates) and getattr(idx, "mids", None) is not None:
        from fracbench.copies import Matcher

        matcher = Matcher(idx.mids)
    groups_out = []
    transforms: Counter[str] = Counter()
    unconfirmed = 0
    for gi, g in enumerate(prepared.duplicates):
        members = list(g.members)
        labels = [int(recs[i].label) for i in members]
        splits = [split_of[i] for i in members]
        rows = []
        for k, i in enumerate(members):
            row = {"index": i, "id": recs[i].id, "path": _rel(recs[i].path, root), "label": labels[k],
                   "part": recs[i].part, "split": splits[k], "shape": [int(v) for v in idx.shapes[i]]}
            if k:
                m = _closest_member(idx, i, members[:k], pixels, limit, matcher)
                unconfirmed += not m["confirmed"]
                if m["match"] in ("near", "keypoints"):
                    transforms[m["transform"]] += 1
                row.update(m, match_of=recs[m["match_of"]].id)
            rows.append(row)
        present = sorted({s for s in splits if s in SPLITS}, key=SPLITS.index)
        groups_out.append({
            "group": gi + 1, "kind": g.kind, "size": len(members), "members": rows,
            "labels": sorted(set(labels)), "conflicting_labels": len(set(labels)) > 1,
            "splits": present, "crosses_splits": len(present) > 1,
        })
    n_near = sum(1 for g in groups_out if g["kind"] == "near")
    summary = {
        "total": len(groups_out),
        "exact": len(groups_out) - n_near,
        "near": n_near,
        "images": sum(g["size"] for g in groups_out),
        "redundant_copies": sum(g["size"] - 1 for g in groups_out),
        "near_pairs_by_transform": dict(sorted(transforms.items())),
        "pixel_check": {"size": size, "mean_abs_diff_max": limit, "close_levels": CLOSE,
                        "close_share_min": MIN_CLOSE_SHARE, "unconfirmed_pairs": unconfirmed},
    }
    return groups_out, summary


def _verified(prepared: Prepared, manifest: Manifest) -> dict[str, Any]:
    """Test images with a copy in train by the split verifier (fracbench.copies.verify_split): found afresh,
    without the copy groups, so it checks them as well as the split."""
    from fracbench.claims.anatomy import verified_crossings

    recs = prepared.index.records
    res = verified_crossings(prepared, manifest)
    return {"test_images_with_a_copy_in_train": len(res.crossings), "test_images": res.queries,
            "searched": f"{res.base_images} train images by hashes; the {res.candidates_per_query} most similar "
                        "aligned turn by turn",
            "pairs": [{"test": recs[c.query].id, "train": recs[c.base].id, "how": c.how} for c in res.crossings]}


def _leaks(groups_out: Sequence[dict], manifest: Manifest) -> dict[str, Any]:
    """Evaluation images with a copy in train, and the groups that cross the splits of ``manifest``."""
    leaked: Counter[str] = Counter()
    for g in groups_out:
        if "train" in g["splits"]:
            for m in g["members"]:
                if m["split"] in ("val", "test"):
                    leaked[m["split"]] += 1
    split_sizes = Counter(r.split for r in manifest.rows)
    crossing = [g for g in groups_out if g["crosses_splits"]]
    return {
        "groups_crossing_splits": len(crossing),
        "val_images_with_a_copy_in_train": int(leaked["val"]),
        "test_images_with_a_copy_in_train": int(leaked["test"]),
        "test_share_with_a_copy_in_train": leaked["test"] / split_sizes["test"] if split_sizes.get("test") else None,
    }


def _faults(prepared: Prepared, root: Path) -> dict[str, Any]:
    """Faults of files, of metadata against folders, and of splits."""
    faults = [f.as_dict() for f in prepared.faults]
    for f in faults:
        f["path"] = _rel(f["path"], root)
    file_faults = [f for f in faults if f["kind"] in FILE_FAULTS]
    return {
        "counts": dict(sorted(Counter(f["kind"] for f in faults).items())),
        "files": file_faults,
        "truncated": sum(f["kind"] == "truncated" for f in file_faults),
        "unreadable": sum(f["kind"] == "unreadable" for f in file_faults),
        "metadata": [f for f in faults if f["kind"] not in FILE_FAULTS + SPLIT_FAULTS],
        "splits": [f for f in faults if f["kind"] in SPLIT_FAULTS],
    }


def _class_balance(manifest: Manifest) -> dict[str, Any]:
    """Class balance per split and per body part, with the majority-class accuracy beside it."""
    by_split: dict[str, Counter] = defaultdict(Counter)
    by_part: dict[str, Counter] = defaultdict(Counter)
    by_part_split: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for r in manifest.rows:
        cls = "fractured" if r.label else "not_fractured"
        part = r.part or "unknown"
        by_split[r.split][cls] += 1
        by_part[part][cls] += 1
        by_part_split[part][r.split][cls] += 1
    total: Counter = Counter()
    for c in by_split.values():
        total.update(c)
    return {
        "overall": _balance(total),
        "by_split": {s: _balance(c) for s, c in sorted(by_split.items(), key=lambda kv: _split_key(kv[0]))},
        "by_part": {p: _balance(c) for p, c in sorted(by_part.items())},
        "by_part_and_split": {p: {s: _balance(c) for s, c in sorted(d.items(), key=lambda kv: _split_key(kv[0]))}
                              for p, d in sorted(by_part_split.items())},
    }


def audit(prepared: Prepared, manifest: Manifest | None = None,
          pixels: Mapping[int, np.ndarray] | None = None, overlap: Prepared | None = None,
          split_mode: str | None = None) -> dict[str, Any]:
    """Everything the audit reports, as plain data (JSON-ready; paths relative to the dataset root).

    ``manifest`` is the split to check for leaks (default: fracbench's own). ``pixels`` maps record
    indices of duplicate-group members to square grayscale arrays (``decode_group_images``) for the
    pixel comparison; without it the index's 32 px thumbnails are compared. ``overlap`` is a second
    prepared dataset whose images are looked for in this one, by content (fracbench.claims.anatomy).
    """
    from fracbench.claims.anatomy import dataset_anatomy

    idx = prepared.index
    recs = idx.records
    root = Path(prepared.dataset.root)
    own = prepared.manifest
    manifest = manifest or own
    given = manifest is not own and split_mode is None  # a manifest the user gave, not one of fracbench's modes
    by_id, by_path = _split_lookup(manifest, root)
    split_of = [_split_of(r, by_id, by_path, root) for r in recs]

    groups_out, group_summary = _duplicate_groups(prepared, split_of, root, pixels)
    conflicting = [{"group": g["group"], "kind": g["kind"], "ids": [m["id"] for m in g["members"]],
                    "labels": [m["label"] for m in g["members"]], "paths": [m["path"] for m in g["members"]],
                    "splits": [m["split"] for m in g["members"]]}
                   for g in groups_out if g["conflicting_labels"]]
    crossing = [{"group": g["group"], "kind": g["kind"], "ids": [m["id"] for m in g["members"]],
                 "splits": [m["split"] for m in g["members"]], "labels": [m["label"] for m in g["members"]]}
                for g in groups_out if g["crosses_splits"]]
    leaks = _leaks(groups_out, manifest)
    leaks["verified"] = _verified(prepared, manifest)
    own_crossing = len(crossing_groups([g.members for g in prepared.duplicates], recs, own, root)) if given \
        else len(crossing)
    split_sizes = Counter(r.split for r in manifest.rows)
    return {
        "audit_version": AUDIT_VERSION,
        "dataset": prepared.name,
        "root": str(root),
        "images_found": len(recs),
        "images_readable": int(idx.ok.sum()),
        "manifest": {"source": "given" if given else "fracbench",
                     "split_mode": None if given else (split_mode or prepared.split_mode),
                     "fingerprint": manifest.fingerprint, "images": len(manifest.rows),
                     "splits": {s: int(split_sizes.get(s, 0)) for s in SPLITS}},
        "exact_duplicates": _exact_duplicates(idx),
        "duplicate_groups": group_summary,
        "groups": groups_out,
        "conflicting_label_groups": conflicting,
        "crossing_groups": crossing,
        "leaks": {**leaks, "fracbench_manifest_groups_crossing": own_crossing},
        "faults": _faults(prepared, root),
        "class_balance": _class_balance(manifest),
        "anatomy": dataset_anatomy(prepared, overlap=overlap),
    }


def _split_key(s: str) -> tuple[int, str]:
    return (SPLITS.index(s) if s in SPLITS else len(SPLITS), s)


# --------------------------------------------------------------------------------------------
# the edges: decoding the groups' images, writing the report
# --------------------------------------------------------------------------------------------


def _png_data_uri(pixels: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def decode_group_images(prepared: Prepared, compare: int = COMPARE,
                        thumb: int = THUMB_PX) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Decode every duplicate-group member once: (square ``compare`` px arrays, ``thumb`` px PNG data URIs)."""
    from PIL import Image

    from fracbench.data.decode import DecodeError, decode_image

    squares: dict[int, np.ndarray] = {}
    uris: dict[int, str] = {}
    for g in prepared.duplicates:
        for i in g.members:
            if i in squares:
                continue
            try:
                px = decode_image(prepared.index.records[i].path).pixels
            except (DecodeError, OSError):
                continue  # changed since indexing: the index thumbnail is used instead
            im = Image.fromarray(px)
            squares[i] = np.asarray(im.resize((compare, compare), Image.Resampling.BILINEAR, reducing_gap=3.0))
            t = im.copy()
            t.thumbnail((thumb, thumb), Image.Resampling.LANCZOS)
            uris[i] = _png_data_uri(np.asarray(t))
    return squares, uris


def default_out(dataset: str) -> Path:
    from fracbench.paths import default_results_dir

    return default_results_dir() / dataset / "audit"


def write_audit(report: dict[str, Any], out: str | Path, thumbnails: Mapping[int, str] | None = None) -> list[Path]:
    """audit.json and audit.html in ``out``, each written atomically."""
    out = Path(out)
    public = dict(report)
    public["root"] = "<data-dir>"  # keep results free of local paths
    return [atomic_write_json(out / "audit.json", public),
            atomic_write_text(out / "audit.html", render_html(public, thumbnails or {}))]


# --------------------------------------------------------------------------------------------
# HTML (one offline page: inline CSS, images as data URIs)
# --------------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#1d1d1f;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
.warn{color:#a40000;font-weight:600}.ok{color:#1a7f37;font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:.8em}.card{border:1px solid #ddd;border-radius:6px;padding:.5em .8em;min-width:9em}
.card b{display:block;font-size:1.5em}
.group{border:1px solid #ddd;border-radius:6px;margin:.6em 0;padding:.5em}
.group.conflict{border-color:#a40000;background:#fff5f5}.group.cross{border-left:6px solid #d97706}
.members{display:flex;flex-wrap:wrap;gap:.6em}.member{text-align:center;font-size:12px;max-width:140px}
.member img{display:block;margin:0 auto 2px;background:#000;max-width:96px;max-height:96px}
small{color:#555}code{font-size:12px}
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _balance_rows(items: Mapping[str, Mapping[str, Any]], head: str) -> str:
    rows = [f"<tr><th>{_e(head)}</th><th>fractured</th><th>not fractured</th><th>total</th>"
            "<th>fractured share</th><th>majority-class accuracy</th></tr>"]
    for k, b in items.items():
        rows.append(f"<tr><td>{_e(k)}</td><td class=n>{b['fractured']}</td><td class=n>{b['not_fractured']}</td>"
                    f"<td class=n>{b['total']}</td><td class=n>{_pct(b['fractured_share'])}</td>"
                    f"<td class=n>{_pct(b['majority_accuracy'])}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def render_html(report: dict[str, Any], thumbnails: Mapping[int, str]) -> str:
    """The audit as one self-contained HTML page (no external resources)."""
    r = report
    ex, dg, lk, fl = r["exact_duplicates"], r["duplicate_groups"], r["leaks"], r["faults"]
    label = {0: "not fractured", 1: "fractured"}
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>fracbench audit: {_e(r['dataset'])}"
             f"</title><style>{_CSS}</style></head><body>",
             f"<h1>fracbench audit: {_e(r['dataset'])}</h1>",
             f"<p>{r['images_found']} images found, {r['images_readable']} readable; split checked: "
             f"{'the given manifest' if r['manifest']['source'] == 'given' else 'fracbench’s own manifest'} "
             f"(<code>{_e(r['manifest']['fingerprint'][:16])}</code>, {r['manifest']['images']} images).</p>"]

    def card(value: Any, text: str, bad: bool = False) -> str:
        return f"<div class=card><b class={'warn' if bad else 'ok'}>{_e(value)}</b>{_e(text)}</div>"

    parts.append("<div class=cards>" + "".join([
        card(ex["by_file_hash"]["groups"], "exact groups by file hash", ex["by_file_hash"]["groups"] > 0),
        card(ex["by_pixel_hash"]["groups"], "exact groups by pixel hash", ex["by_pixel_hash"]["groups"] > 0),
        card(dg["near"], "near-duplicate groups (rotations/flips included)", dg["near"] > 0),
        card(len(r["conflicting_label_groups"]), "groups with conflicting labels", bool(r["conflicting_label_groups"])),
        card(lk["groups_crossing_splits"], "groups crossing splits", lk["groups_crossing_splits"] > 0),
        card(fl["truncated"], "truncated files", fl["truncated"] > 0),
        card(fl["unreadable"], "unreadable files", fl["unreadable"] > 0),
        card(len(fl["metadata"]), "metadata disagreements", bool(fl["metadata"])),
    ]) + "</div>")

    parts.append("<h2>Duplicates</h2><table><tr><th>kind</th><th>groups</th><th>images</th><th>redundant copies</th></tr>")
    for name, key in (("identical files (file SHA-256)", "by_file_hash"), ("identical pixels (pixel SHA-256)",
                                                                           "by_pixel_hash"),
                      ("identical pixels, different files", "pixel_identical_but_different_files")):
        s = ex[key]
        parts.append(f"<tr><td>{_e(name)}</td><td class=n>{s['groups']}</td><td class=n>{s['images']}</td>"
                     f"<td class=n>{s['redundant_copies']}</td></tr>")
    parts.append(f"<tr><td>all duplicate groups (exact {dg['exact']}, near {dg['near']})</td><td class=n>{dg['total']}"
                 f"</td><td class=n>{dg['images']}</td><td class=n>{dg['redundant_copies']}</td></tr></table>")
    pc = dg["pixel_check"]
    tr = ", ".join(f"{k}: {v}" for k, v in dg["near_pairs_by_transform"].items()) or "none"
    parts.append(f"<p>Near-duplicate pairs by the rotation/flip that matches them: {_e(tr)}. Pixel check at "
                 f"{pc['size']}×{pc['size']} px under that transform: mean absolute difference ≤ "
                 f"{pc['mean_abs_diff_max']} grey levels and ≥ {100 * pc['close_share_min']:.0f}% of pixels within "
                 f"{pc['close_levels']} levels; pairs not confirmed: {pc['unconfirmed_pairs']}.</p>")

    parts.append("<h2>Leaks across the split</h2>")
    if lk["groups_crossing_splits"]:
        parts.append(f"<p class=warn>{lk['groups_crossing_splits']} duplicate groups have members in more than one "
                     f"split: {lk['test_images_with_a_copy_in_train']} test and {lk['val_images_with_a_copy_in_train']}"
                     f" validation images have a copy in train ({_pct(lk['test_share_with_a_copy_in_train'])} of the "
                     "test split).</p>")
    else:
        parts.append("<p class=ok>No duplicate group crosses the splits of this manifest.</p>")
    if r["manifest"]["source"] == "given":
        parts.append(f"<p>For comparison, fracbench’s own manifest of this dataset has "
                     f"{lk['fracbench_manifest_groups_crossing']} crossing groups.</p>")

    parts.append(_anatomy_html(r.get("anatomy")))
    parts.append("<h2>Groups with conflicting labels</h2>")
    if r["conflicting_label_groups"]:
        parts.append("<table><tr><th>group</th><th>kind</th><th>images (label, split)</th></tr>")
        for c in r["conflicting_label_groups"]:
            who = "; ".join(f"{i} ({label.get(lab, lab)}, {s})" for i, lab, s in zip(c["ids"], c["labels"],
                                                                                    c["splits"]))
            parts.append(f"<tr><td><a href='#g{c['group']}'>#{c['group']}</a></td><td>{_e(c['kind'])}</td>"
                         f"<td>{_e(who)}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p class=ok>None.</p>")

    parts.append("<h2>Files and metadata</h2>")
    for title, items in (("Truncated and unreadable files", fl["files"]), ("Metadata against folders", fl["metadata"]),
                         ("Split faults", fl["splits"])):
        parts.append(f"<h3>{_e(title)} ({len(items)})</h3>")
        if items:
            parts.append("<table><tr><th>kind</th><th>file</th><th>detail</th></tr>" + "".join(
                f"<tr><td>{_e(f['kind'])}</td><td><code>{_e(f['path'])}</code></td><td>{_e(f['detail'])}</td></tr>"
                for f in items) + "</table>")

    cb = r["class_balance"]
    parts.append("<h2>Class balance</h2>")
    parts.append(_balance_rows({"all": cb["overall"], **cb["by_split"]}, "split"))
    parts.append(_balance_rows(cb["by_part"], "body part"))
    parts.append("<p><small>Majority-class accuracy: what always answering the commoner class scores. An accuracy "
                 "should be read against it.</small></p>")

    parts.append(f"<h2>Every duplicate group ({dg['total']})</h2>")
    for g in r["groups"]:
        cls = "group" + (" conflict" if g["conflicting_labels"] else "") + (" cross" if g["crosses_splits"] else "")
        flags = []
        if g["conflicting_labels"]:
            flags.append("<span class=warn>conflicting labels</span>")
        if g["crosses_splits"]:
            flags.append(f"<span class=warn>crosses {', '.join(g['splits'])}</span>")
        parts.append(f"<div class='{cls}' id='g{g['group']}'><b>#{g['group']}</b> {_e(g['kind'])}, {g['size']} "
                     f"images {' '.join(flags)}<div class=members>")
        for m in g["members"]:
            uri = thumbnails.get(m["index"]) or thumbnails.get(str(m["index"]))
            img = f"<img src='{uri}' alt='{_e(m['id'])}'>" if uri else "<div>(no thumbnail)</div>"
            how = ""
            if "match" in m:
                if m["match"] == "file":
                    what = f"same file as {m['match_of']}"
                elif m["match"] == "pixels":
                    what = f"same pixels as {m['match_of']}"
                elif m["match"] == "keypoints":
                    what = (f"turned/zoomed/cropped copy of {m['match_of']}, {m['inliers']} keypoints agree, "
                            f"pixel correlation {m['correlation']:.3f}")
                else:
                    what = (f"{'near copy' if m['transform'] == 'identity' else m['transform']} of {m['match_of']}, "
                            f"diff {m['mean_abs_diff']:.2f}")
                how = f"<br><small>{_e(what)}</small>"
            parts.append(f"<div class=member>{img}<code>{_e(m['id'])}</code><br>{_e(label.get(m['label'], m['label']))}"
                         f", {_e(m['split'])}{how}</div>")
        parts.append("</div></div>")
    parts.append("<p><small>fracbench audit; research software, not a medical device.</small></p></body></html>\n")
    return "".join(parts)


def _anatomy_html(an: dict[str, Any] | None) -> str:
    """Copies across the splits of each split mode, the file formats and the cross-dataset overlap."""
    if not an:
        return ""
    out = ["<h2>Copies across splits, by split mode</h2><table><tr><th>split mode</th><th>train / val / test</th>"
           "<th>test images with an exact copy in train</th><th>with an exact or near copy</th>"
           "<th>nearest-train similarity (median)</th></tr>"]
    for mode, m in an["split_modes"].items():
        nn = m["nn_similarity"]["median"]
        out.append(f"<tr><td>{_e(mode)}</td><td>{' / '.join(str(m['splits'][s]) for s in SPLITS)}</td>"
                   f"<td class=n>{m['test_exact_in_train']} of {m['test_images']} ({_pct(m['test_exact_in_train_share'])})"
                   f"</td><td class=n>{m['test_near_in_train']} ({_pct(m['test_near_in_train_share'])})</td>"
                   f"<td class=n>{'—' if nn is None else f'{nn:.3f}'}</td></tr>")
    out.append("</table><h3>File formats (the tutorial divides by its .jpg count)</h3><table><tr><th>split</th>"
               "<th>files by suffix</th><th>images</th><th>.jpg count</th></tr>")
    for split, f in an["formats"].items():
        out.append(f"<tr><td>{_e(split)}</td><td>{_e(', '.join(f'{k} {v}' for k, v in f['by_suffix'].items()))}</td>"
                   f"<td class=n>{f['images']}</td><td class=n>{f['tutorial_jpg_count']}</td></tr>")
    out.append("</table>")
    ov = an.get("overlap")
    if ov:
        out.append(f"<p>Images of {_e(ov['dataset'])} that also occur here, found by content: {ov['shared']} of "
                   f"{ov['images']} ({ov['shared_exact']} exact, {ov['shared_near']} near copies).</p>")
    return "".join(out)


def print_audit(report: dict[str, Any]) -> None:
    """A rich summary on the console."""
    from rich.table import Table

    from fracbench.progress import console

    r = report
    ex, dg, lk, fl = r["exact_duplicates"], r["duplicate_groups"], r["leaks"], r["faults"]
    m = r["manifest"]
    how = {"given": "a manifest you gave"}.get(m["source"]) or f"split mode {m.get('split_mode')}"
    sizes = ", ".join(f"{k} {v}" for k, v in m["splits"].items())
    console.print(f"[bold]audit of {r['dataset']}[/]: {r['images_found']} images, {r['images_readable']} readable; "
                  f"split: {how} ({sizes}; {m['fingerprint'][:12]})")
    t = Table("finding", "count", "detail", title="Duplicates and leaks")
    for name, key in (("exact, by file hash", "by_file_hash"), ("exact, by pixel hash", "by_pixel_hash"),
                      ("pixel-identical, different files", "pixel_identical_but_different_files")):
        s = ex[key]
        t.add_row(name, str(s["groups"]), f"{s['images']} images, {s['redundant_copies']} redundant copies")
    t.add_row("duplicate groups", str(dg["total"]), f"{dg['exact']} exact, {dg['near']} near; {dg['images']} images")
    t.add_row("near pairs by transform", str(sum(dg["near_pairs_by_transform"].values())),
              ", ".join(f"{k} {v}" for k, v in dg["near_pairs_by_transform"].items()) or "-")
    t.add_row("pairs not confirmed by pixels", str(dg["pixel_check"]["unconfirmed_pairs"]),
              f"at {dg['pixel_check']['size']} px")
    style = "red" if lk["groups_crossing_splits"] else "green"
    t.add_row(f"[{style}]groups crossing splits[/]", str(lk["groups_crossing_splits"]),
              f"{lk['test_images_with_a_copy_in_train']} test / {lk['val_images_with_a_copy_in_train']} val images "
              "with a copy in train")
    if lk.get("verified"):
        v = lk["verified"]
        style = "red" if v["test_images_with_a_copy_in_train"] else "green"
        t.add_row(f"[{style}]test images with a copy in train (verifier)[/]", str(v["test_images_with_a_copy_in_train"]),
                  f"of {v['test_images']}, found afresh without the groups: {v['searched']}")
    if r["manifest"]["source"] == "given":
        t.add_row("  (fracbench's own manifest)", str(lk["fracbench_manifest_groups_crossing"]), "")
    t.add_row("groups with conflicting labels", str(len(r["conflicting_label_groups"])),
              "; ".join("/".join(c["ids"]) for c in r["conflicting_label_groups"]) or "-")
    t.add_row("truncated files", str(fl["truncated"]), "")
    t.add_row("unreadable files", str(fl["unreadable"]), "")
    for kind, n in Counter(f["kind"] for f in fl["metadata"]).items():
        ex_f = next(f for f in fl["metadata"] if f["kind"] == kind)
        t.add_row(f"metadata: {kind}", str(n), f"{ex_f['path']}: {ex_f['detail']}")
    console.print(t)
    if r.get("anatomy"):
        print_anatomy(r["anatomy"])
    cb = r["class_balance"]
    t = Table("split / body part", "fractured", "not fractured", "fractured share", "majority-class acc.",
              title="Class balance")
    for k, b in [("all", cb["overall"]), *cb["by_split"].items(), *cb["by_part"].items()]:
        t.add_row(k, str(b["fractured"]), str(b["not_fractured"]), _pct(b["fractured_share"]),
                  _pct(b["majority_accuracy"]))
    console.print(t)


def print_anatomy(an: dict[str, Any]) -> None:
    """Copies across the splits of each split mode, the format mix and the cross-dataset overlap."""
    from rich.table import Table

    from fracbench.progress import console

    t = Table("split mode", "train / val / test", "test with an exact copy in train", "exact or near copy in train",
              "nearest-train similarity (median)", title="Copies across splits")
    for mode, m in an["split_modes"].items():
        nn = m["nn_similarity"]["median"]
        t.add_row(mode, " / ".join(str(m["splits"][s]) for s in SPLITS),
                  f"{m['test_exact_in_train']} of {m['test_images']} ({_pct(m['test_exact_in_train_share'])})",
                  f"{m['test_near_in_train']} ({_pct(m['test_near_in_train_share'])})",
                  "—" if nn is None else f"{nn:.3f}")
    console.print(t)
    eg = an.get("exact_file_groups")
    if eg:
        console.print(f"byte-identical file groups: {eg['within_one_split']} within one split, "
                      f"{eg['across_splits']} across splits")
    t = Table("split", "files by suffix", "images", "the tutorial's .jpg count", "accuracy scale", title="File formats")
    for split, f in an["formats"].items():
        t.add_row(split, ", ".join(f"{k} {v}" for k, v in f["by_suffix"].items()), str(f["images"]),
                  str(f["tutorial_jpg_count"]), "—" if f["accuracy_scale"] is None else f"x{f['accuracy_scale']:.3f}")
    console.print(t)
    ov = an.get("overlap")
    if ov:
        console.print(f"images of {ov['dataset']} that also occur here (by content): {ov['shared']} of {ov['images']} "
                      f"({ov['shared_exact']} exact, {ov['shared_near']} near copies)")


def load_report(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
