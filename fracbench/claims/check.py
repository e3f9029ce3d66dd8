"""``fracbench check``: test an accuracy claim on any class-folder set before anyone trains a model.

The question a reader asks of "99.8 % accuracy" is whether the test set allows it without learning
anything: how many test images have a copy in train (found by content, by the split verifier), and what
*memorising alone* scores — the **lookup baseline**, which answers each test image with the label of its
copy in train and every other one with the training majority class. A claim inside or below the lookup
baseline's interval is explained by copies; one below the majority class is explained by the class
balance; one above both is not explained by copies (no model is trained here, so nothing more is said).

:func:`check` is pure (a prepared dataset in, a dict out); :func:`write_check` and :func:`render_html`
are the edges. Exit codes of the command: 0, 2 for usage errors, 3 with ``--fail-on-leak`` when a claim
is explained by copies or the test split holds copies.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

CHECK_METRICS = ("accuracy", "auroc")
VERDICTS = ("explained by copies", "below the majority class", "no better than chance",
            "needs the .jpg denominator", "not explained by copies", "no evidence", "not checked")
LEAK_VERDICTS = ("explained by copies", "needs the .jpg denominator")  # --fail-on-leak exits 3 on these
EXIT_LEAK = 3
N_BOOT = 1000
NOT_CHECKED = ("no model trained: this check measures what the data alone allows (fracbench check trains "
               "nothing; `fracbench run` trains on a fracture split)")


def parse_claims(items: Sequence[str]) -> list[tuple[str, float]]:
    """``["accuracy=0.998", "auroc=99%"]`` -> ``[("accuracy", 0.998), ("auroc", 0.99)]``; ValueError says what is wrong."""
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or not name or not value.strip():
            raise ValueError(f"--claim {item!r}: write METRIC=VALUE, e.g. accuracy=0.998")
        if name not in CHECK_METRICS:
            raise ValueError(f"--claim {item!r}: fracbench check tests {', '.join(CHECK_METRICS)}, not {name!r}")
        v = value.strip()
        try:
            x = float(v[:-1]) / 100 if v.endswith("%") else float(v)
        except ValueError:
            raise ValueError(f"--claim {item!r}: {v!r} is not a number (0.998 or 99.8%)") from None
        if x > 1 and not v.endswith("%") and x <= 100:
            x /= 100  # 99.8 means 99.8 %
        if not 0 <= x <= 1:
            raise ValueError(f"--claim {item!r}: a rate lies in [0, 1] (or 0-100 %)")
        out.append((name, x))
    if not out:
        raise ValueError("give at least one claim: --claim accuracy=0.998")
    return out


# ------------------------------------------------------------------------------------------------
# intervals
# ------------------------------------------------------------------------------------------------


def _group_bootstrap_mean(values: np.ndarray, groups: Sequence[str], n_boot: int = N_BOOT,
                          seed: int = 0) -> tuple[float, float]:
    """Percentile interval of a mean over images, resampling whole groups (for class counts other than two)."""
    gid = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    g = int(gid.max()) + 1
    sums = np.bincount(gid, weights=values, minlength=g)
    counts = np.bincount(gid, minlength=g).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, g, size=(n_boot, g))
    est = sums[draws].sum(1) / counts[draws].sum(1)
    lo, hi = np.percentile(est, [2.5, 97.5])
    return float(lo), float(hi)


def _accuracy(y: np.ndarray, pred: np.ndarray, groups: list[str], binary: bool) -> dict[str, Any]:
    n = len(y)
    if n == 0:
        return {"images": 0, "groups": 0, "accuracy": None, "ci": None}
    correct = (pred == y).astype(float)
    if binary and len(set(y.tolist())) == 2:
        from fracbench.metrics import bootstrap_ci

        ci = bootstrap_ci(y, pred.astype(float), "accuracy", threshold=0.5, n_boot=N_BOOT, groups=groups)
    else:
        ci = _group_bootstrap_mean(correct, groups)
    return {"images": n, "groups": len(set(groups)), "accuracy": float(correct.mean()), "ci": [ci[0], ci[1]]}


# ------------------------------------------------------------------------------------------------
# the check
# ------------------------------------------------------------------------------------------------


def _mode(prepared: Any, split: str) -> str:
    from fracbench.data.manifest import IMAGE_BY_IMAGE

    if split == "given":
        return prepared.split_mode if prepared.split_mode in IMAGE_BY_IMAGE else "given"
    if split == "grouped":
        return "grouped"
    raise ValueError(f"--split is given or grouped, not {split!r}")


def class_names(prepared: Any) -> list[str]:
    ds = prepared.dataset
    names = list(getattr(ds, "classes", []) or [])
    labels = sorted({int(r.label) for r in prepared.index.records})
    if not names:
        names = ["not fractured", "fractured"]
    while labels and len(names) <= labels[-1]:
        names.append(str(len(names)))
    return names


def check(prepared: Any, claims: Sequence[tuple[str, float]], split: str = "given") -> dict[str, Any]:
    """Everything ``fracbench check`` reports about ``claims`` on ``prepared`` under ``split`` (given|grouped)."""
    from fracbench.claims.anatomy import copy_shares, format_mix, verified_crossings
    from fracbench.claims.tables.claims import MIN_TEST_GROUPS, Evidence, too_few
    from fracbench.data.manifest import SPLIT_MODES, Manifest

    mode = _mode(prepared, split)
    manifest = prepared.manifest_for(mode)
    recs = prepared.index.records
    pos = {r.id: i for i, r in enumerate(recs)}
    names = class_names(prepared)
    binary = bool(getattr(prepared.dataset, "binary", True)) and len(names) == 2
    rows = {s: [r for r in manifest.rows if r.split == s] for s in ("train", "val", "test")}
    # what a model could have seen: train and val (a val carved from your train folder is still your train folder)
    seen = Manifest(manifest.dataset, manifest.root,
                    [replace(r, split="train") if r.split == "val" else r for r in manifest.rows])
    test, train = rows["test"], rows["train"] + rows["val"]
    if not test or not train:
        raise ValueError(f"{prepared.name}: the {mode} split has {len(train)} train and {len(test)} test images; "
                         "a check needs both (a train/ and a test/ folder, or images fracbench can split)")

    # class balance and the majority class
    balance = {s: {names[k]: v for k, v in sorted(Counter(r.label for r in rs).items())} for s, rs in rows.items()}
    train_major = Counter(r.label for r in train).most_common(1)[0][0]
    test_counts = Counter(r.label for r in test)
    test_major, test_major_n = max(test_counts.items(), key=lambda kv: (kv[1], -kv[0]))
    majority = {"train_majority_class": names[train_major], "test_majority_class": names[test_major],
                "test_accuracy": test_major_n / len(test)}

    # copies across train and test (the split verifier, never the groups) and the lookup baseline
    res = verified_crossings(prepared, seen)
    shares = copy_shares(prepared, seen)
    by_query = res.by_query()
    y = np.array([r.label for r in test], dtype=np.int64)
    groups = [r.group for r in test]
    copied = np.array([pos[r.id] in by_query for r in test], dtype=bool)
    copy_label = np.array([recs[by_query[pos[r.id]].base].label if pos[r.id] in by_query else -1 for r in test])
    pred = np.where(copied, copy_label, train_major)
    overall = _accuracy(y, pred, groups, binary)
    sub = {name: _accuracy(y[m], pred[m], [g for g, k in zip(groups, m) if k], binary)
           for name, m in (("copied", copied), ("copy_free", ~copied))}
    lookup: dict[str, Any] = {
        "rule": f"each test image gets the label of its copy in train (the split verifier's match), every other "
                f"one the training majority class ({names[train_major]!r})",
        **overall, "with_copy_in_train": sub["copied"], "copy_free": sub["copy_free"],
        "copy_label_disagrees": int((copied & (copy_label != y)).sum())}
    if binary and len(set(y.tolist())) == 2:
        from fracbench.metrics import binary_metrics, bootstrap_ci

        score = np.where(copied, copy_label, 0.5).astype(float)
        lookup["auroc"] = float(binary_metrics(y, score)["auroc"])
        lookup["auroc_ci"] = list(bootstrap_ci(y, score, "auroc", n_boot=N_BOOT, groups=groups))
        lookup["auroc_score"] = "1 or 0 for the copy's label, 0.5 (no information) for a test image without a copy"

    # distinct radiographs, conflicting labels, faults, formats
    ok = int(np.count_nonzero(prepared.index.ok))
    in_groups = {i for g in prepared.duplicates for i in g.members}
    conflicts = []
    for g in prepared.duplicates:
        labs = sorted({int(recs[i].label) for i in g.members})
        if len(labs) > 1:
            conflicts.append({"images": len(g.members), "classes": [names[k] for k in labs],
                              "ids": [recs[i].id for i in g.members[:6]]})
    fault_kinds = Counter(f.kind for f in prepared.faults)
    undecodable = sum(v for k, v in fault_kinds.items() if k in ("unreadable", "decode_error"))
    fmt = format_mix(prepared, manifest)
    test_fmt = fmt.get("test", {})
    test_group_n = len(set(groups))
    few = too_few(Evidence(n_images=len(test), n_groups=test_group_n))

    facts = {
        "images": {s: len(rs) for s, rs in rows.items()} | {"total": len(manifest.rows)},
        "train_for_lookup": "train and val (every image a model could have been fitted or tuned on)",
        "classes": names, "binary_fracture_labels": binary, "class_balance": balance, "majority": majority,
        "copies": {**shares, "test_groups": test_group_n,
                   "pairs": [{"test": recs[c.query].id, "train": recs[c.base].id, "how": c.how}
                             for c in res.crossings]},
        "distinct_radiographs": {"decoded_images": ok, "copy_groups": len(prepared.duplicates),
                                 "images_in_copy_groups": len(in_groups & set(np.flatnonzero(prepared.index.ok).tolist())),
                                 "distinct": len(prepared.duplicates) + ok - len(in_groups)},
        "conflicting_label_groups": {"count": len(conflicts), "groups": conflicts[:20]},
        "faults": {"undecodable": undecodable, "truncated": fault_kinds.get("truncated", 0),
                   "by_kind": dict(sorted(fault_kinds.items()))},
        "formats": fmt,
    }
    verdicts = [judge_claim(metric, value, lookup, majority["test_accuracy"], int(copied.sum()), test_fmt, few,
                            names[test_major], binary) for metric, value in claims]
    return {
        "dataset": prepared.name, "split": mode, "split_title": SPLIT_MODES.get(mode, mode),
        "held_out_folder": getattr(prepared.dataset, "held_out", None),
        "manifest_sha256": manifest.fingerprint, "min_test_groups": MIN_TEST_GROUPS,
        "claims": verdicts, "lookup": lookup, **facts,
        "leak": bool(res.crossings), "fail_on_leak_would_exit": EXIT_LEAK if leak_found(verdicts, res.crossings) else 0,
        "summary": summary_sentences(facts, lookup, majority),
    }


def leak_found(verdicts: Sequence[dict[str, Any]], crossings: Sequence[Any]) -> bool:
    return bool(crossings) or any(v["verdict"] in LEAK_VERDICTS for v in verdicts)


def _ci(ci: Sequence[float] | None) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "[-]"


def judge_claim(metric: str, value: float, lookup: dict[str, Any], majority: float, n_copied: int,
                test_fmt: dict[str, Any], few: str, majority_class: str, binary: bool) -> dict[str, Any]:
    """One claim's verdict against the lookup baseline and the majority class (pure rules, no data)."""
    out: dict[str, Any] = {"metric": metric, "claim": value, "not_checked": NOT_CHECKED}
    if metric == "auroc":
        if not binary or "auroc" not in lookup:
            return {**out, "verdict": "not checked", "fracbench": None, "ci": None,
                    "reason": "AUROC needs two classes in the test split; this set has other labels"}
        key, ci, base = lookup["auroc"], lookup["auroc_ci"], 0.5
        out.update(fracbench=key, ci=ci)
        mem = f"memorising alone scores {key:.3f} {_ci(ci)}"
        if value <= base:
            return {**out, "verdict": "no better than chance", "reason": f"an AUROC of {value:.3f} is chance level (0.5)"}
    else:
        key, ci, base = lookup["accuracy"], lookup["ci"], majority
        out.update(fracbench=key, ci=ci)
        mem = f"memorising alone scores {key:.3f} {_ci(ci)}"
        if value <= base:
            return {**out, "verdict": "below the majority class",
                    "reason": f"always answering {majority_class!r} scores {base:.3f} on this test split; the claim "
                              f"({value:.3f}) is no better ({mem})"}
    if n_copied and value <= ci[1]:
        note = f" (on {few})" if few else ""
        return {**out, "verdict": "explained by copies",
                "reason": f"{mem}: the claim lies inside or below that interval; {n_copied} test images have a copy "
                          f"in train or val{note}"}
    scale = test_fmt.get("accuracy_scale")
    if metric == "accuracy" and n_copied and scale and scale > 1 and value <= ci[1] * scale:
        jpg = test_fmt.get("tutorial_jpg_count")
        return {**out, "verdict": "needs the .jpg denominator",
                "reason": f"{mem} over every test image; divided by the {jpg} .jpg test files (the tutorial's "
                          f"count of {test_fmt.get('images')} test images) it scores {key * scale:.3f} "
                          f"[{ci[0] * scale:.3f}, {ci[1] * scale:.3f}], which reaches the claim"}
    if few:
        return {**out, "verdict": "no evidence", "reason": f"{mem}, below the claim, but on {few}"}
    return {**out, "verdict": "not explained by copies",
            "reason": f"{mem}, below the claim: a model must do better than looking up copies"
                      + ("" if n_copied else " (no test image has a copy in train)")}


def summary_sentences(facts: dict[str, Any], lookup: dict[str, Any], majority: dict[str, Any]) -> list[str]:
    """Three sentences on where a test accuracy on this split comes from."""
    c = facts["copies"]
    n, k = c["test_images"], c["test_near_in_train"]
    share = f"{100 * k / n:.1f} %" if n else "-"
    s1 = (f"{k} of the {n} test images ({share}) have an exact or near copy among the training and validation "
          f"images, found by content; the test "
          f"split holds {c['test_groups']} independent radiograph groups.")
    s2 = (f"Answering each copied test image with its training copy's label, and every other one with the training "
          f"majority class ({majority['train_majority_class']!r}), scores {lookup['accuracy']:.3f} "
          f"{_ci(lookup['ci'])}; always answering {majority['test_majority_class']!r} scores "
          f"{majority['test_accuracy']:.3f}.")
    d, f = facts["distinct_radiographs"], facts["faults"]
    t = facts["formats"].get("test", {})
    scale = t.get("accuracy_scale")
    jpg = (f"the tutorial's .jpg-only denominator counts {t.get('tutorial_jpg_count')} of {t.get('images')} test "
           f"files, scaling accuracy by x{scale:.3f}" if scale and scale != 1 else
           "every test file is .jpg, so the tutorial's .jpg-only denominator changes nothing"
           if scale else "no test file is .jpg, so the tutorial's .jpg-only accuracy is undefined")
    s3 = (f"The {d['decoded_images']} readable images are {d['distinct']} distinct radiographs; {f['undecodable']} "
          f"files are undecodable and {f['truncated']} truncated; {jpg}.")
    return [s1, s2, s3]


# ------------------------------------------------------------------------------------------------
# edges: terminal, files, HTML
# ------------------------------------------------------------------------------------------------


def print_check(report: dict[str, Any], echo: Any = print) -> None:
    """The answer first: one line per claim, then the facts behind it."""
    for v in report["claims"]:
        echo(f"{v['metric']} = {v['claim']:.4g}: {v['verdict'].upper()}: {v['reason']}")
    echo(f"not checked: {NOT_CHECKED}")
    echo("")
    for s in report["summary"]:
        echo(s)
    held = report.get("held_out_folder")
    echo(f"split: {report['split']} ({report['split_title']})" + (f"; held-out folder: {held}/" if held else ""))
    imgs = report["images"]
    echo(f"images: train {imgs['train']}, val {imgs['val']}, test {imgs['test']}; classes: {', '.join(report['classes'])}")
    echo(f"copy groups with conflicting labels: {report['conflicting_label_groups']['count']}")


def figure_png(report: dict[str, Any]) -> bytes:
    """Test accuracy with CIs: copied test images, copy-free ones and the lookup baseline; majority and claim lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lk = report["lookup"]
    bars = [(f"test images with a copy\nin train (n={lk['with_copy_in_train']['images']})", lk["with_copy_in_train"]),
            (f"copy-free test images\n(n={lk['copy_free']['images']})", lk["copy_free"]),
            (f"lookup baseline,\nall test images (n={lk['images']})", lk)]
    fig, ax = plt.subplots(figsize=(6.4, 3.3), dpi=100)
    for x, (_label, a) in enumerate(bars):
        if a.get("accuracy") is None:
            ax.text(x, 0.05, "none", ha="center", color="#666")
            continue
        acc, (lo, hi) = a["accuracy"], a["ci"]
        ax.bar(x, acc, color=["#c0392b", "#2e86c1", "#7d3c98"][x], width=0.6, alpha=0.85)
        ax.errorbar(x, acc, yerr=[[acc - lo], [hi - acc]], color="black", capsize=5, lw=1.2)
        ax.text(x, min(acc + 0.03, 1.02), f"{acc:.3f}", ha="center", va="bottom", fontsize=8)
    ax.axhline(report["majority"]["test_accuracy"], color="#555", ls="--", lw=1,
               label=f"majority class ({report['majority']['test_accuracy']:.3f})")
    for v in report["claims"]:
        if v["metric"] == "accuracy":
            ax.axhline(v["claim"], color="#e67e22", lw=1.5, label=f"claim ({v['claim']:.3f})")
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("test accuracy (memorising only)")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("What looking up copies in train scores (95 % cluster-bootstrap CIs)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def pair_thumbnails(prepared: Any, report: dict[str, Any], n: int = 6, side: int = 96) -> list[dict[str, str]]:
    """A few (test, train) copy pairs as small PNG data URIs, from the index's letterboxed squares."""
    from PIL import Image

    pos = {r.id: i for i, r in enumerate(prepared.index.records)}
    out = []
    for p in report["copies"]["pairs"][:n]:
        uris = []
        for key in ("test", "train"):
            im = Image.fromarray(prepared.index.mids[pos[p[key]]]).resize((side, side), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=True)
            uris.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"))
        out.append({**p, "test_uri": uris[0], "train_uri": uris[1]})
    return out


_CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1360px;padding:12px 20px;color:#222;line-height:1.35}
h1{font-size:1.3em;margin:4px 0}
.sub{color:#555;font-size:.9em;margin:0 0 8px}
.claims{display:flex;flex-wrap:wrap;gap:8px;margin:6px 0}
.claim{border:2px solid #888;border-radius:6px;padding:6px 10px;flex:1 1 300px;min-width:0}
.claim.leak{border-color:#c0392b;background:#fdf2f1}.claim.ok{border-color:#1e8449;background:#f1faf3}
.claim .v{font-weight:700;font-size:1.1em}.claim .k{font-size:.92em}
.first{display:grid;grid-template-columns:minmax(0,640px) minmax(0,1fr);gap:16px;align-items:start}
.first img{width:100%;max-width:640px;height:auto}
.why p{margin:0 0 6px}
details{margin:8px 0;border-top:1px solid #ddd;padding-top:4px}summary{cursor:pointer;font-weight:600}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;table-layout:fixed;width:100%;font-size:.9em}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top;overflow-wrap:normal;word-break:normal}
.pairs{display:flex;flex-wrap:wrap;gap:10px}.pair{font-size:.75em;width:200px;overflow-wrap:anywhere}
.note{color:#666;font-size:.85em}
"""


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def render_html(report: dict[str, Any], figure: bytes, pairs: Sequence[dict[str, str]] = (),
                provenance: dict[str, Any] | None = None) -> str:
    """One self-contained offline page: verdicts, the figure and three sentences first; details below."""
    e = html.escape
    cards = []
    for v in report["claims"]:
        cls = "leak" if v["verdict"] in LEAK_VERDICTS else "ok" if v["verdict"] == "not explained by copies" else ""
        key = (f"memorising alone: {v['fracbench']:.3f} {_ci(v['ci'])}" if v["fracbench"] is not None else v["reason"])
        cards.append(f'<div class="claim {cls}"><div>{e(v["metric"])} = {v["claim"]:.4g}</div>'
                     f'<div class="v">{e(v["verdict"])}</div><div class="k">{e(key)}</div></div>')
    held = report.get("held_out_folder")
    sub = (f"{e(report['dataset'])}: {e(report['split'])} split"
           + (f", held-out folder <b>{e(held)}/</b>" if held else "")
           + f"; {report['images']['test']} test images, {len(report['classes'])} classes. "
           + f"Not checked: {e(NOT_CHECKED)}.")
    fig = "data:image/png;base64," + base64.b64encode(figure).decode("ascii")
    first = (f'<h1>fracbench check: is the claim explained by copies?</h1><p class="sub">{sub}</p>'
             f'<div class="claims" id="verdicts">{"".join(cards)}</div>'
             f'<div class="first"><img id="figure" alt="test accuracy of the lookup baseline" src="{fig}">'
             f'<div class="why"><b>Where the number comes from</b>'
             + "".join(f"<p>{e(s)}</p>" for s in report["summary"]) + "</div></div>")
    rows = "".join(
        f"<tr><td>{e(v['metric'])}</td><td>{v['claim']:.4g}</td><td>{_fmt(v['fracbench'])} {_ci(v['ci'])}</td>"
        f"<td><details><summary>{e(v['verdict'])}</summary>{e(v['reason'])}. Not checked: {e(v['not_checked'])}"
        f"</details></td></tr>" for v in report["claims"])
    claims_tbl = ('<div class="scroll"><table><colgroup><col style="width:10%"><col style="width:10%">'
                  '<col style="width:22%"><col></colgroup><tr><th>claim</th><th>paper</th>'
                  f'<th>fracbench (lookup baseline)</th><th>verdict (click for the reason)</th></tr>{rows}</table></div>')
    c, d, f, m = report["copies"], report["distinct_radiographs"], report["faults"], report["majority"]
    bal = "; ".join(f"{s}: " + ", ".join(f"{e(k)} {v}" for k, v in b.items()) for s, b in report["class_balance"].items() if b)
    fmt = "; ".join(f"{s}: " + ", ".join(f"{e(k)} {v}" for k, v in x["by_suffix"].items())
                    + f" (.jpg count {x['tutorial_jpg_count']})" for s, x in report["formats"].items())
    facts = [
        ("split", f"{report['split']}: {report['split_title']}"),
        ("held-out folder", f"{held}/" if held else "none (fracbench dealt the test split)"),
        ("images", ", ".join(f"{k} {v}" for k, v in report["images"].items())),
        ("classes", ", ".join(report["classes"]) + (" (fracture labels)" if report["binary_fracture_labels"] else "")),
        ("class balance", bal),
        ("majority class", f"{m['test_majority_class']} ({m['test_accuracy']:.3f} of the test images); training "
                           f"majority {m['train_majority_class']}"),
        ("test images with a copy in train", f"{c['test_near_in_train']} exact or near ({c['test_exact_in_train']} "
                                             f"exact) of {c['test_images']}; searched: {c['test_near_in_train_searched']}"),
        ("independent test groups", str(c["test_groups"])),
        ("distinct radiographs", f"{d['distinct']} in {d['decoded_images']} readable images ({d['copy_groups']} copy "
                                 f"groups holding {d['images_in_copy_groups']} images, the rest single)"),
        ("copy groups with conflicting labels", str(report["conflicting_label_groups"]["count"])),
        ("undecodable / truncated files", f"{f['undecodable']} / {f['truncated']}"),
        ("file formats", fmt),
        ("lookup rule", report["lookup"]["rule"]),
    ]
    facts_tbl = ('<div class="scroll"><table><colgroup><col style="width:24%"><col></colgroup>'
                 + "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in facts) + "</table></div>")
    pair_html = "".join(
        f'<div class="pair"><img src="{p["test_uri"]}" alt="test"> <img src="{p["train_uri"]}" alt="train">'
        f'<div>test {e(p["test"])}<br>train {e(p["train"])} ({e(p["how"])})</div></div>' for p in pairs)
    prov = provenance or {}
    prov_tbl = ('<div class="scroll"><table><colgroup><col style="width:24%"><col></colgroup>'
                + "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in
                          {**prov, "manifest_sha256": report["manifest_sha256"]}.items()) + "</table></div>")
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport "
            "content='width=device-width'><title>fracbench check: " + e(report["dataset"]) + "</title><style>"
            + _CSS + "</style></head><body>" + first
            + f"<details open><summary>Claims</summary>{claims_tbl}</details>"
            + f"<details><summary>Data facts</summary>{facts_tbl}</details>"
            + (f"<details><summary>Copy pairs across train and test (a few of {c['test_near_in_train']})</summary>"
               f'<div class="pairs">{pair_html}</div></details>' if pairs else "")
            + f"<details><summary>Provenance</summary>{prov_tbl}</details>"
            + '<p class="note">Research software, not a medical device.</p></body></html>')


def write_check(prepared: Any, report: dict[str, Any], out: str | Path,
                provenance: dict[str, Any] | None = None) -> list[Path]:
    """check.json and check.html in ``out``, each written atomically (no local paths in either)."""
    from fracbench.io import atomic_write_json, atomic_write_text

    out = Path(out)
    prov = dict(provenance or {})
    public = {**report, "provenance": prov}
    page = render_html(report, figure_png(report), pair_thumbnails(prepared, report), prov)
    return [atomic_write_json(out / "check.json", public), atomic_write_text(out / "check.html", page)]
