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
        if v.get("trained"):
            t = v["trained"]
            echo(f"  trained {t['model']} ({t['profile']} profile): {t['shown'].upper()}: {t['reason']}")
    echo(f"not checked: {report['claims'][0]['not_checked'] if report['claims'] else NOT_CHECKED}")
    for split, r in (report.get("trained") or {}).get("splits", {}).items():
        for sub in TRAINED_SUBSETS:
            m = r["metrics"][sub]
            echo(f"  {split} split, {sub.replace('_', ' ')} ({m['images']} test images): accuracy "
                 f"{_fmt(m['accuracy'])} {_ci(m['accuracy_ci'])}, AUROC {_fmt(m['auroc'])} {_ci(m['auroc_ci'])}")
    echo("")
    for s in report["summary"]:
        echo(s)
    held = report.get("held_out_folder")
    echo(f"split: {report['split']} ({report['split_title']})" + (f"; held-out folder: {held}/" if held else ""))
    imgs = report["images"]
    echo(f"images: train {imgs['train']}, val {imgs['val']}, test {imgs['test']}; classes: {', '.join(report['classes'])}")
    echo(f"copy groups with conflicting labels: {report['conflicting_label_groups']['count']}")


def figure_png(report: dict[str, Any]) -> bytes:
    """Test accuracy with CIs: copied test images, copy-free ones and the lookup baseline (and, after --train,
    the trained model's on the given and the grouped split); majority and claim lines."""
    from fracbench.claims.figures import Bar, accuracy_bars_png

    lk = report["lookup"]
    bars = [Bar(f"copied test images\n(n={lk['with_copy_in_train']['images']})", lk["with_copy_in_train"]["accuracy"],
                lk["with_copy_in_train"]["ci"], "#c0392b"),
            Bar(f"copy-free test images\n(n={lk['copy_free']['images']})", lk["copy_free"]["accuracy"],
                lk["copy_free"]["ci"], "#2e86c1"),
            Bar(f"lookup baseline,\nall test images (n={lk['images']})", lk["accuracy"], lk["ci"], "#7d3c98")]
    trained = report.get("trained")
    for split, color in (("given", "#d35400"), ("grouped", "#1e8449")):
        m = (trained or {}).get("splits", {}).get(split, {}).get("metrics", {}).get("all")
        if m:
            bars.append(Bar(f"{trained['model']}, {split}\nsplit (n={m['images']})", m["accuracy"], m["accuracy_ci"],
                            color))
    lines = [("majority class", report["majority"]["test_accuracy"], "#555", "--")]
    lines += [("claim", v["claim"], "#e67e22", "-") for v in report["claims"] if v["metric"] == "accuracy"]
    what = "memorising" + (f" and {trained['model']} ({trained['profile']} profile)" if trained else " only")
    return accuracy_bars_png(bars, lines, title=f"Test accuracy: {what} (95 % cluster-bootstrap CIs)")


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


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def _card(v: dict[str, Any]) -> Any:
    from fracbench.claims.report import Finding

    tone = "leak" if v["verdict"] in LEAK_VERDICTS else "ok" if v["verdict"] == "not explained by copies" else ""
    key = (f"memorising alone: {v['fracbench']:.3f} {_ci(v['ci'])}" if v["fracbench"] is not None else v["reason"])
    verdicts = [(v["verdict"], key)]
    t = v.get("trained")
    if t:
        verdicts.append((f"trained {t['model']}: {t['shown']}", ""))
    return Finding(f"{v['metric']} = {v['claim']:.4g}", tuple(verdicts), tone)


def _trained_table(trained: dict[str, Any]) -> str:
    e = html.escape
    rows = []
    for split, r in trained["splits"].items():
        for sub in TRAINED_SUBSETS:
            m = r["metrics"][sub]
            rows.append(f"<tr><td>{e(split)} ({e(r['split'])})</td><td>{e(sub.replace('_', ' '))}</td>"
                        f"<td class=n>{m['images']} / {m['groups']}</td>"
                        f"<td>{_fmt(m['accuracy'])} {_ci(m['accuracy_ci'])}</td>"
                        f"<td>{_fmt(m['auroc'])} {_ci(m['auroc_ci'])}</td></tr>")
    note = (f"{e(trained['model'])} at the {e(trained['profile'])} profile"
            + (f", a reduced budget ({e(trained['budget'])})" if trained["budget"] else "")
            + f"; config from {e(trained['config_from'])}; one seed, honest protocol (checkpoint and threshold "
              "chosen on validation). 95 % cluster-bootstrap CIs over copy groups.")
    return (f"<p>{note}</p><div class=scroll><table><thead><tr><th>split</th><th>test images</th>"
            "<th>images / groups</th><th>accuracy [95% CI]</th><th>AUROC [95% CI]</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def render_html(report: dict[str, Any], figure: bytes, pairs: Sequence[dict[str, str]] = (),
                provenance: dict[str, Any] | None = None) -> str:
    """One self-contained offline page (fracbench.claims.report.findings_page): verdicts, the figure and three
    sentences first; details below."""
    from fracbench.claims.report import claims_details_table, findings_page, pairs_html

    e = html.escape
    held = report.get("held_out_folder")
    not_checked = report["claims"][0]["not_checked"] if report["claims"] else NOT_CHECKED
    sub = (f"{e(report['dataset'])}: {e(report['split'])} split"
           + (f", held-out folder <b>{e(held)}/</b>" if held else "")
           + f"; {report['images']['test']} test images, {len(report['classes'])} classes. "
           + f"Not checked: {e(not_checked)}.")
    rows = []
    for v in report["claims"]:
        reason = f"{v['reason']}. Not checked: {v['not_checked']}"
        rows.append((v["metric"], f"{v['claim']:.4g}", f"{_fmt(v['fracbench'])} {_ci(v['ci'])}", v["verdict"], reason))
        if v.get("trained"):
            t = v["trained"]
            rows.append((f"{v['metric']} (trained {t['model']})", f"{v['claim']:.4g}", "see Trained model",
                         t["shown"], t["reason"]))
    claims_tbl = claims_details_table(rows, "fracbench (lookup baseline)")
    c, d, f, m = report["copies"], report["distinct_radiographs"], report["faults"], report["majority"]
    bal = "; ".join(f"{s}: " + ", ".join(f"{k} {v}" for k, v in b.items()) for s, b in report["class_balance"].items() if b)
    fmt = "; ".join(f"{s}: " + ", ".join(f"{k} {v}" for k, v in x["by_suffix"].items())
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
    facts_tbl = ('<div class="scroll"><table class="claimtab"><colgroup><col style="width:24%"><col></colgroup>'
                 + "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in facts) + "</table></div>")
    prov = provenance or {}
    prov_tbl = ('<div class="scroll"><table class="claimtab"><colgroup><col style="width:24%"><col></colgroup>'
                + "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in
                          {**prov, "manifest_sha256": report["manifest_sha256"]}.items()) + "</table></div>")
    sections = [("Claims", claims_tbl, True)]
    if report.get("trained"):
        sections.append((f"Trained model: {report['trained']['model']}", _trained_table(report["trained"]), False))
    sections.append(("Data facts", facts_tbl, False))
    if pairs:
        sections.append((f"Copy pairs across train and test (a few of {c['test_near_in_train']})",
                         pairs_html(pairs), False))
    sections.append(("Provenance", prov_tbl, False))
    return findings_page(title=f"fracbench check: {report['dataset']}",
                         heading="fracbench check: is the claim explained by copies?", sub=sub,
                         findings=[_card(v) for v in report["claims"]], figure=figure,
                         figure_alt="test accuracy of the lookup baseline", sentences=report["summary"],
                         sections=sections, footer="Research software, not a medical device.")


def write_check(prepared: Any, report: dict[str, Any], out: str | Path,
                provenance: dict[str, Any] | None = None) -> list[Path]:
    """check.json and check.html in ``out``, each written atomically (no local paths in either)."""
    from fracbench.io import atomic_write_json, atomic_write_text

    out = Path(out)
    prov = dict(provenance or {})
    public = {**report, "provenance": prov}
    page = render_html(report, figure_png(report), pair_thumbnails(prepared, report), prov)
    return [atomic_write_json(out / "check.json", public), atomic_write_text(out / "check.html", page)]


# ------------------------------------------------------------------------------------------------
# optional training (--train MODEL --profile P): the model on the given split and on the grouped re-split
# ------------------------------------------------------------------------------------------------

TRAIN_SPLITS = ("given", "grouped")
TRAIN_SEED = 0
# a model no experiment of baselines/ trains: its TrainConfig defaults at its native size, reduced per profile
# the way the paper CNN's experiments reduce (baselines/paper_cnn_honest.yaml)
GENERIC_PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"epochs": 2, "image_size": 64, "max_train_images": 96, "n_boot": 100},
    "cpu": {"epochs": 10},
    "full": {},
}
TRAINED_SUBSETS = ("all", "with_copy_in_train", "copy_free")


def train_config(model: str, profile: str, device: str | None = None) -> tuple[Any, str, str]:
    """(TrainConfig, budget clause, where the config comes from) of ``model`` at ``profile``.

    The config of the registered experiment that trains ``model`` under the honest protocol (else any that
    trains it), under ``profile``; a model no experiment trains gets its defaults at its native input size
    reduced by :data:`GENERIC_PROFILES`. The budget clause says what the profile cuts from the full
    configuration ("" when nothing), as the claims tables do ("2/50 epochs, 64 px (full 150), 1/5 seeds").
    Unknown model names raise with close matches (the model registry's message)."""
    from fracbench.config import TrainConfig
    from fracbench.models import MODELS
    from fracbench.training.experiments import PROFILES, load_all

    info = MODELS.get(model)
    if profile not in PROFILES:
        raise ValueError(f"--profile is one of {', '.join(PROFILES)}, not {profile!r}")
    reg = load_all()
    exps = [reg.get(n) for n in reg.list()]
    exps = [e for e in exps if e.model == model and e.kind == "train" and e.on_run_manifest]
    exps.sort(key=lambda e: (e.protocol != "honest", e.table == "hparam", e.name))  # the paper's config first
    if exps:
        exp = exps[0]
        full = exp.train_config("full", TRAIN_SEED).replace(protocol="honest", device=device)
        cfg = exp.train_config(profile, TRAIN_SEED).replace(protocol="honest", device=device)
        seeds, source = len(exp.seeds_for("full")), f"baselines experiment {exp.name} (honest protocol)"
    else:
        full = TrainConfig(model=model, protocol="honest", image_size=info.default_size, seed=TRAIN_SEED)
        full = full.replace(device=device)
        reduced = dict(GENERIC_PROFILES[profile])
        if "image_size" in reduced:  # a profile shrinks images, never enlarges a small model's
            reduced["image_size"] = min(reduced["image_size"], info.default_size)
        cfg = full.replace(**reduced)
        seeds, source = 1, f"fracbench's defaults for {model} ({info.default_size} px), reduced per profile"
    return cfg, budget_clause(cfg, full, seeds), source


def budget_clause(cfg: Any, full: Any, full_seeds: int = 1) -> str:
    """What ``cfg`` (one seed) cuts from ``full``: "" when it trains the full configuration."""
    parts = []
    if cfg.epochs < full.epochs:
        parts.append(f"{cfg.epochs}/{full.epochs} epochs")
    if cfg.image_size != full.image_size:
        parts.append(f"{cfg.image_size} px (full {full.image_size})")
    if cfg.max_train_images and (not full.max_train_images or cfg.max_train_images < full.max_train_images):
        parts.append(f"at most {cfg.max_train_images} training images")
    if full_seeds > 1:
        parts.append(f"1/{full_seeds} seeds")
    return ", ".join(parts)


def _seen(manifest: Any) -> Any:
    """``manifest`` with val counted as train (what a model could have been fitted or tuned on)."""
    from fracbench.data.manifest import Manifest

    return Manifest(manifest.dataset, manifest.root,
                    [replace(r, split="train") if r.split == "val" else r for r in manifest.rows])


def copied_test_ids(prepared: Any, manifest: Any) -> set[str]:
    """Ids of the test rows of ``manifest`` with an exact or near copy in its train or val rows (split verifier)."""
    from fracbench.claims.anatomy import verified_crossings

    recs = prepared.index.records
    return {recs[c.query].id for c in verified_crossings(prepared, _seen(manifest)).crossings}


def _nan_none(x: Any) -> float | None:
    return None if x is None or x != x else float(x)


def trained_metrics(y: Sequence[int], score: Sequence[float], threshold: float, groups: Sequence[str],
                    copied: Sequence[bool], n_boot: int = N_BOOT) -> dict[str, dict[str, Any]]:
    """Accuracy and AUROC (group-bootstrap 95% CIs over ``groups``) of a trained model's test scores: over
    every test image, over those with a copy in train (``copied``) and over the rest."""
    from fracbench.metrics import binary_metrics, bootstrap_ci

    y_a, s_a = np.asarray(y, dtype=np.int64), np.asarray(score, dtype=float)
    g_a, c_a = np.asarray(groups, dtype=object), np.asarray(copied, dtype=bool)
    out = {}
    for name, m in (("all", np.ones(len(y_a), bool)), ("with_copy_in_train", c_a), ("copy_free", ~c_a)):
        yy, ss, gg = y_a[m], s_a[m], [str(g) for g in g_a[m]]
        if not len(yy):
            out[name] = {"images": 0, "groups": 0, "accuracy": None, "accuracy_ci": None, "auroc": None,
                         "auroc_ci": None, "balanced_accuracy": None, "majority_accuracy": None}
            continue
        bm = binary_metrics(yy, ss, threshold)
        ci = {k: [_nan_none(v) for v in bootstrap_ci(yy, ss, k, threshold=threshold, n_boot=n_boot, groups=gg)]
              for k in ("accuracy", "auroc")}
        out[name] = {"images": int(len(yy)), "groups": len(set(gg)), "accuracy": float(bm["accuracy"]),
                     "accuracy_ci": ci["accuracy"] if None not in ci["accuracy"] else None,
                     "auroc": _nan_none(bm["auroc"]), "auroc_ci": ci["auroc"] if None not in ci["auroc"] else None,
                     "balanced_accuracy": _nan_none(bm["balanced_accuracy"]),
                     "majority_accuracy": float(bm["majority_accuracy"])}
    return out


def _evidence(m: dict[str, Any], metric: str, budget: str, name: str) -> Any:
    from fracbench.claims.tables.claims import Evidence

    if m.get(metric) is None:
        return Evidence(problem=f"{metric} undefined on {name} ({m.get('images', 0)} test images)")
    ci = m.get(f"{metric}_ci")
    return Evidence(m[metric], tuple(ci) if ci else None, "95% group-bootstrap CI", m["images"],
                    m["balanced_accuracy"], m["majority_accuracy"], n_groups=m["groups"], budget=budget)


def judge_trained(metric: str, value: float, trained: dict[str, Any]) -> dict[str, Any]:
    """A claim's verdict from the trained model's test results (the claims tables' split rule,
    :func:`fracbench.claims.tables.claims.judge_splits`): the given split is the published one, the grouped re-split
    the copy-free one, the given split's test images with a copy in train the copies. A reduced-budget
    profile carries its clause ("... at a reduced budget (2/50 epochs, ...)")."""
    from fracbench.claims.tables.claims import judge_splits

    b = trained.get("budget", "")
    given, grouped = trained["splits"].get("given"), trained["splits"].get("grouped")
    if given is None:
        from fracbench.claims.tables.claims import Evidence

        pub, copies = Evidence(problem="the given split was not trained"), None
    else:
        pub = _evidence(given["metrics"]["all"], metric, b, "the given split")
        copies = _evidence(given["metrics"]["with_copy_in_train"], metric, b, "the copied test images")
    grp = [("grouped split", _evidence(grouped["metrics"]["all"], metric, b, "the grouped split"))] if grouped else []
    v = judge_splits(value, pub, grp, copies)
    return {"model": trained["model"], "profile": trained["profile"], "verdict": v.verdict, "shown": v.shown,
            "reason": v.reason, "budget": v.budget}


def train_check(prepared: Any, model: str, profile: str, out: str | Path, *, splits: Sequence[str] = TRAIN_SPLITS,
                device: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Train ``model`` at ``profile`` on each of ``splits`` (fracbench.training.train.fit, records under
    ``out``/runs/check_<model>_<split>/seed0) and score its test predictions overall, on the test images with a
    copy in train and on those without."""
    from fracbench import results as R
    from fracbench.data.cache import build_cache
    from fracbench.training.train import fit

    cfg, budget, source = train_config(model, profile, device)
    if len(class_names(prepared)) != 2 or not getattr(prepared.dataset, "binary", True):
        raise ValueError(f"--train fits a two-class model; {prepared.name} has the classes "
                         f"{', '.join(class_names(prepared))}")
    result: dict[str, Any] = {"model": model, "profile": profile, "budget": budget, "config_from": source,
                              "config": cfg.to_dict(), "splits": {}}
    for split in splits:
        mode = _mode(prepared, split)
        manifest = prepared.manifest_for(mode)
        name = f"check_{model}_{split}"
        run = R.run_dir(Path(out), name, TRAIN_SEED)
        cache = build_cache(manifest, cfg.image_size, progress=progress)
        rec = fit(cfg, cache, run, experiment=name, progress=progress,
                  extra={"profile": profile, "check_split": mode, "budget": budget})
        copied = copied_test_ids(prepared, manifest)
        group = {r.id: r.group for r in manifest.rows}
        preds = [p for p in R.read_predictions(run) if p["split"] == "test"]
        thr = float(rec.get("threshold", 0.5))
        metrics = trained_metrics([p["label"] for p in preds], [p["score"] for p in preds], thr,
                                  [group.get(p["id"], p["id"]) for p in preds], [p["id"] in copied for p in preds],
                                  n_boot=cfg.n_boot)
        result["splits"][split] = {"split": mode, "manifest_sha256": manifest.fingerprint, "threshold": thr,
                                   "epochs_run": rec.get("epochs_run"), "record": f"runs/{name}/seed{TRAIN_SEED}",
                                   "metrics": metrics}
    return result


def add_training(report: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
    """``report`` with the trained results and each claim's trained verdict (``claims[i]["trained"]``)."""
    claims = [{**v, "trained": judge_trained(v["metric"], v["claim"], trained),
               "not_checked": trained_not_checked(trained)} for v in report["claims"]]
    return {**report, "trained": trained, "claims": claims}


def trained_not_checked(trained: dict[str, Any]) -> str:
    clause = f" at a reduced budget ({trained['budget']})" if trained.get("budget") else ""
    return (f"the paper's own model and training were not rerun: fracbench trained {trained['model']} "
            f"({trained['profile']} profile{clause}, one seed) on the given and the grouped split")
