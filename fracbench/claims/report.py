"""``results/report.html``: one self-contained page with everything a results folder holds, findings first.

The page opens with the answer (:func:`findings_page`, the layout ``fracbench check`` uses for check.html):
each headline claim of the paper with its verdicts and key number, read back from the claims table; one
figure, test accuracy with 95% CIs on the published split's test images with a copy in train and on the
copy-free ones, on the grouped split, on the external test and of the lookup baseline (the committed
example check, results/check/<dataset>/check.json), with the majority-class and the paper's lines; and
three sentences on where the number comes from. The detail follows in folded sections: a compact claims
table (the reason behind a click), every table (rendered from fracbench.claims.tables' Table objects, built fresh
from the records), every figure in results/figures/, the audit of the example checks with thumbnails of
copy pairs, and provenance last (what was run: profile, dataset, manifest, hardware, torch, git commit,
dates; the dataset summary ``fracbench run`` wrote; the environment). The page opens offline: CSS is
inline, images are data URIs and nothing is fetched (no scripts, fonts, CDNs or links out). Every value
taken from a record, a summary or a table is HTML-escaped. Nothing time-dependent is added, so the same
inputs give the same page.

Several results folders (one per dataset): :func:`write_reports` writes one more page,
results/report.html, that shows them side by side: the findings across them first, then the tables built
across them (claims beside the multiregion splits, the leak table across splits), each dataset's tables
and figures, the audit, and provenance with a summary row per dataset. A folder that is absent or holds no
records is listed as "not run".
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fracbench.io import atomic_write_text

__all__ = ["DISCLAIMER", "Finding", "claims_details_table", "findings_page", "pairs_html", "render_report",
           "render_reports", "write_report", "write_reports"]

DISCLAIMER = "Research software, not a medical device"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;color:#1d1d1f;padding:0 1em}
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:2.2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{margin-top:1.6em}
.disclaimer{border-left:6px solid #a40000;background:#fff5f5;padding:.6em .9em;font-weight:600}
nav a{margin-right:1em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
td,th{border:1px solid #ddd;padding:.25em .55em;text-align:left;vertical-align:top;min-width:4.5em}
th{background:#f4f4f6}tr:nth-child(even) td{background:#fafafa}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td.long{min-width:16em}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em}dl.kv dt{font-weight:600}dl.kv dd{margin:0}
ul.notes{font-size:12.5px;color:#333}
figure{margin:1.4em 0;border:1px solid #e4e4e4;border-radius:6px;padding:.6em}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:13px;color:#444;margin-top:.4em}
.warn{color:#a40000;font-weight:600}.muted{color:#666}
code{font-size:12px;background:#f4f4f6;padding:0 .2em;border-radius:3px}
"""
# the findings-first layout shared by `fracbench check` (check.html) and `fracbench report` (report.html)
FINDINGS_CSS = """
body{max-width:1360px;margin:.5em auto}
.findings h1{font-size:1.35em;margin:0 0 2px}.findings .sub{color:#555;font-size:.9em;margin:0 0 6px}
.claims{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:6px;margin:6px 0}
.claim{border:2px solid #888;border-radius:6px;padding:4px 8px;min-width:0;font-size:12.5px;line-height:1.3}
.claim.leak{border-color:#c0392b;background:#fdf2f1}.claim.ok{border-color:#1e8449;background:#f1faf3}
.claim .v{font-weight:700;font-size:1.05em}.claim .k{color:#333}
.first{display:grid;grid-template-columns:minmax(0,640px) minmax(0,1fr);gap:16px;align-items:start}
.first img{width:100%;max-width:640px;height:auto;display:block}
.why p{margin:0 0 6px}
details.fold{margin:8px 0;border-top:1px solid #ddd;padding-top:4px}details.fold>summary{cursor:pointer;font-weight:600;
font-size:1.1em}
table.claimtab{table-layout:fixed;width:100%}table.claimtab td,table.claimtab th{overflow-wrap:anywhere}
details.fold table{width:100%;font-size:12px}details.fold td,details.fold th{min-width:0;padding:.2em .35em}
details.fold td{overflow-wrap:anywhere}details.fold th{hyphens:auto;overflow-wrap:anywhere}
details.fold td.n{white-space:normal;overflow-wrap:normal}details.fold td.long{min-width:9em}
.pairs{display:flex;flex-wrap:wrap;gap:10px}.pair{font-size:.75em;width:200px;overflow-wrap:anywhere}
"""
_FIGURE_ORDER = ("curves_", "roc_pr_", "confusion_", "subgroups_", "examples_")


# --------------------------------------------------------------------------------------------
# The findings-first page (check.html and report.html)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One claim on the first screen: what was claimed, and each verdict with its key number."""

    title: str  # e.g. "accuracy = 0.998" or "Experiment: 0.998 (experiment_test_accuracy)"
    verdicts: tuple[tuple[str, str], ...]  # (verdict, key number or reason), the first one in bold
    tone: str = ""  # "leak" (red), "ok" (green) or "" (grey)


def findings_page(*, title: str, heading: str, sub: str, findings: Sequence[Finding], figure: bytes | None,
                  figure_alt: str, sentences: Sequence[str], sections: Sequence[tuple[str, str, bool]],
                  footer: str = "", css: str = "") -> str:
    """One self-contained offline page: the findings first (each claim's verdict and key number, one figure,
    three sentences on where the number comes from), then the detail in folded sections.

    ``sub`` and each section's body are HTML (the caller escapes what it puts in them); ``sections`` is
    (summary, body, open) in order, provenance last."""
    cards = []
    for f in findings:
        lines = "".join(f'<div class="{"v" if i == 0 else "k"}">{_e(v)}</div>'
                        + (f'<div class="k">{_e(k)}</div>' if k else "") for i, (v, k) in enumerate(f.verdicts))
        cards.append(f'<div class="claim {_e(f.tone)}"><div>{_e(f.title)}</div>{lines}</div>')
    fig = (f'<img id="figure" alt="{_e(figure_alt)}" src="data:image/png;base64,'
           f'{base64.b64encode(figure).decode("ascii")}">' if figure else
           '<p id="figure" class=muted>No figure: no record or check holds the numbers it draws.</p>')
    why = "".join(f"<p>{_e(s)}</p>" for s in sentences)
    folded = "".join(f'<details class="fold"{" open" if is_open else ""}><summary>{_e(summary)}</summary>{body}'
                     f"</details>" for summary, body, is_open in sections)
    return ("<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_CSS}{FINDINGS_CSS}{css}</style></head><body>\n"
            f'<section class="findings"><h1>{_e(heading)}</h1><p class="sub">{sub}</p>'
            f'<div class="claims" id="verdicts">{"".join(cards)}</div>'
            f'<div class="first">{fig}<div class="why"><b>Where the number comes from</b>{why}</div></div></section>\n'
            f"{folded}\n<p class=muted>{footer or _e(DISCLAIMER) + '.'}</p>\n</body></html>\n")


def claims_details_table(rows: Sequence[Sequence[str]], fracbench: str = "fracbench") -> str:
    """The compact claims table: claim, paper, fracbench, verdict, with the reason behind a click on the verdict.
    ``rows``: (claim, paper, fracbench, verdict, reason) as text."""
    body = "".join(
        f"<tr><td>{_e(c)}</td><td class=n>{_e(p)}</td><td>{_e(f)}</td><td><details><summary>{_e(v)}</summary>"
        f"{_e(r)}</details></td></tr>" for c, p, f, v, r in rows)
    return ('<div class=scroll><table class="claimtab"><colgroup><col style="width:22%"><col style="width:9%">'
            '<col style="width:22%"><col></colgroup><thead><tr><th>claim</th><th>paper</th>'
            f"<th>{_e(fracbench)}</th><th>verdict (click for the reason)</th></tr></thead><tbody>{body}</tbody>"
            "</table></div>")


def pairs_html(pairs: Sequence[Mapping[str, str]]) -> str:
    """Copy pairs as thumbnails side by side (test, train: PNG data URIs) with their ids, escaped."""
    return '<div class="pairs">' + "".join(
        f'<div class="pair"><img src="{_e(p["test_uri"])}" alt="test"> <img src="{_e(p["train_uri"])}" alt="train">'
        f'<div>test {_e(p["test"])}<br>train {_e(p["train"])} ({_e(p["how"])})</div></div>' for p in pairs) + "</div>"


def write_report(results: Path, out: Path | None = None, *, baselines: Path | None = None,
                 figures: Path | None = None) -> Path:
    """Write the report of ``results`` to ``out`` (default results/report.html); returns its path.

    Tables are built from the records now; figures are read from ``figures`` (default
    results/figures/) as they are; regenerate them first with fracbench.claims.figures.write_figures.
    """
    results = Path(results)
    out = Path(out) if out is not None else results / "report.html"
    page = render_report(results, baselines=baselines, figures=figures)
    return atomic_write_text(out, page)


def render_report(results: Path, *, baselines: Path | None = None, figures: Path | None = None) -> str:
    """The report page as a string (see the module docstring): findings first, detail folded below."""
    from fracbench import __version__
    from fracbench.claims.tables import load_runs

    results = Path(results)
    runs = load_runs(results)
    records = [r.record for r in runs]
    datasets = sorted({str(r.get("dataset")) for r in records if r.get("dataset")})
    summaries = _summaries(results)
    title = "fracbench report" + (f": {', '.join(datasets)}" if datasets else "")
    tables = _build_tables(results, runs, baselines)
    name = results.name or str(results)
    fig_dir = Path(figures) if figures is not None else results / "figures"
    sections = [*_findings_sections(tables, baselines),
                ("Tables", _render_tables(tables), False),
                ("Figures", _figures_section(fig_dir), False),
                ("Audit: copies across train and test", _audit_section([results.parent / "check" / name]), False),
                ("Provenance: what was run, the data, the environment",
                 "\n".join([_run_section(runs), _data_section(summaries, records),
                            _environment_section(records, __version__)]), False)]
    return _findings_first(title, "a benchmark split", runs, tables, baselines, name,
                           results.parent / "check" / name / "check.json", sections,
                           f"Written by fracbench {_e(__version__)} from the records under "
                           f"<code>{_e(name)}/runs</code>. {_e(DISCLAIMER)}.")


def _findings_first(title: str, measured_on: str, runs: Sequence[Any], tables: Sequence[tuple[str, Any]],
                    baselines: Path | None, dataset: str, lookup: Path, sections: Sequence[tuple[str, str, bool]],
                    footer: str) -> str:
    """The findings-first page of ``fracbench report``: each headline claim's verdicts and key number, the
    figure (copied and copy-free test images, grouped split, external test, lookup baseline, majority-class
    and paper lines) and three sentences; then ``sections`` folded."""
    from fracbench.claims.figures import Bar, accuracy_bars_png
    from fracbench.claims.tables.headline import anatomy_numbers, anatomy_sentences, cell_number
    from fracbench.claims.tables.inputs import HEADLINE_TEST_CLAIM
    from fracbench.claims.tables.splits import ANATOMY_DATASET, is_split_run

    claims = _claim_lines(tables)
    headline = _headline_ids(baselines)
    findings = [_finding(c) for c in claims if c.claim in headline]
    paper = _headline_paper(baselines)
    try:
        check = json.loads(lookup.read_text(encoding="utf-8")) if lookup.is_file() else None
    except (OSError, ValueError):
        check = None
    nums = anatomy_numbers(list(runs), check)
    where = ANATOMY_DATASET if any(is_split_run(r) for r in runs) else dataset
    bars = [Bar(f"copied test\nimages (n={nums['copied'].images or 0})", nums["copied"].value, nums["copied"].ci,
                "#c0392b", nums["copied"].note),
            Bar(f"copy-free test\nimages (n={nums['copy_free'].images or 0})", nums["copy_free"].value,
                nums["copy_free"].ci, "#2e86c1", nums["copy_free"].note),
            Bar(f"grouped split\n(n={nums['grouped'].images or 0})", nums["grouped"].value, nums["grouped"].ci,
                "#1e8449", nums["grouped"].note),
            Bar(f"external test\n(n={nums['external'].images or 0})", nums["external"].value, nums["external"].ci,
                "#d35400", nums["external"].note),
            Bar(f"lookup baseline,\nno model (n={nums['lookup'].images or 0})", nums["lookup"].value,
                nums["lookup"].ci, "#7d3c98", nums["lookup"].note)]
    row = next((c for c in claims if c.claim == HEADLINE_TEST_CLAIM), None)
    own = cell_number(row.fracbench if row is not None else "", f"the paper's CNN on {dataset}'s own split")
    majority = nums["majority"].value
    if all(b.value is None for b in bars[:4]):  # no claim-anatomy records here: this dataset's own numbers
        bars = [Bar(f"paper's CNN on\n{dataset}'s own split", own.value, own.ci, "#2e86c1", "not run"), bars[4]]
        majority = (check or {}).get("majority", {}).get("test_accuracy")
    lines = []
    if majority is not None:
        lines.append(("majority class", float(majority), "#555", "--"))
    if paper is not None:
        lines.append(("paper", paper, "#e67e22", "-"))
    drawn = any(b.value is not None for b in bars)
    figure = accuracy_bars_png(bars, lines, title=f"{where}: test accuracy of the paper's CNN and of a lookup "
                                                  "(95% CIs)") if drawn else None
    sub = (f"{_e(DISCLAIMER)}: these numbers measure models on {_e(measured_on)}; nothing here is fit for "
           f"diagnosing anyone. {len(findings)} headline claims, {len(runs)} records."
           + (f" <b>{_e(_machinery_text(runs))}</b>" if _machinery_text(runs) else ""))
    return findings_page(title=title, heading=f"{title}: is the paper's accuracy reproduced, and where does it "
                                              "come from?", sub=sub, findings=findings, figure=figure,
                         figure_alt="test accuracy on the copied and copy-free test images, the grouped split, the "
                                    "external test and the lookup baseline",
                         sentences=anatomy_sentences(nums, paper, where, own), sections=sections, footer=footer)


def _machinery_text(runs: Sequence[Any]) -> str:
    from fracbench.claims.tables.inputs import machinery_banner

    return machinery_banner(runs)


def _claim_lines(tables: Sequence[tuple[str, Any]]) -> list[Any]:
    from fracbench.claims.tables.headline import claim_lines

    table = next((t for n, t in tables if n == "claims" and not isinstance(t, str)), None)
    return claim_lines(list(table.columns), [list(map(str, r)) for r in table.rows]) if table is not None else []


def _claims_file(baselines: Path | None) -> Path:
    from fracbench.claims import tables as T
    from fracbench.training.experiments import baselines_dir

    return (Path(baselines) if baselines is not None else baselines_dir()) / T.CLAIMS_FILE


def _headline_ids(baselines: Path | None) -> set[str]:
    from fracbench.claims import tables as T

    path = _claims_file(baselines)
    return {c.id for c in T.load_claims(path) if c.headline} if path.exists() else set()


def _headline_paper(baselines: Path | None) -> float | None:
    from fracbench.claims import tables as T
    from fracbench.claims.tables.inputs import HEADLINE_TEST_CLAIM

    path = _claims_file(baselines)
    c = next((c for c in T.load_claims(path) if c.id == HEADLINE_TEST_CLAIM), None) if path.exists() else None
    return float(c.value) if c is not None else None


_LEAKY = ("reached only", "reached on the published split", "explained by copies")
_GOOD = ("reproduced", "reached without copies")


def _finding(c: Any) -> Finding:
    try:
        paper = f"{float(c.paper) * 100:.2f}%"
    except ValueError:
        paper = c.paper
    verdicts = []
    for i, (where, v, _reason) in enumerate(c.verdicts):
        shown = v if not where or where in v else f"{where}: {v}"
        verdicts.append((shown, f"fracbench {c.fracbench}" if i == 0 and c.fracbench not in ("", "—") else ""))
    first = c.verdicts[0][1] if c.verdicts else ""
    tone = "leak" if first.startswith(_LEAKY) else "ok" if first.startswith(_GOOD) else ""
    return Finding(f"{paper}: {c.where} ({c.claim})", tuple(verdicts) or (("no verdict", ""),), tone)


def _findings_sections(tables: Sequence[tuple[str, Any]], baselines: Path | None) -> list[tuple[str, str, bool]]:
    """The compact claims table (claim, paper, fracbench, verdict; the reason behind a click)."""
    claims = _claim_lines(tables)
    if not claims:
        return [("Claims", "<p class=warn>No claims table: no claims file or no records.</p>", False)]
    headline = _headline_ids(baselines)
    rows = [(f"{c.claim}{' (headline)' if c.claim in headline else ''}: {c.where}", c.paper, c.fracbench,
             "; ".join(v if not w or w in v else f"{w}: {v}" for w, v, _ in c.verdicts) or "—",
             " | ".join(f"{w or 'verdict'}: {r}" for w, _, r in c.verdicts if r) or "—") for c in claims]
    return [(f"Claims: every number in the paper ({len(rows)})", claims_details_table(rows), False)]


_PAIR = re.compile(r'<div class="pair"><img src="(data:image/png;base64,[A-Za-z0-9+/=]+)" alt="test"> '
                   r'<img src="(data:image/png;base64,[A-Za-z0-9+/=]+)" alt="train"><div>test ([^<]*)<br>'
                   r"train ([^<]*) \(([^()<]*)\)</div></div>")


def _audit_section(check_dirs: Sequence[Path]) -> str:
    """What `fracbench check` found in each committed example check (check.json), with its copy-pair
    thumbnails (read back from its check.html, every value re-escaped)."""
    out = []
    for d in check_dirs:
        try:
            rep = json.loads((d / "check.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        c, lk = rep.get("copies") or {}, rep.get("lookup") or {}
        out.append(f"<h3>{_e(rep.get('dataset', d.name))}: {_e(rep.get('split', ''))} split "
                   f"(<code>results/check/{_e(d.name)}/</code>)</h3>")
        out.append(_kv([
            ("test images with a copy in train or val",
             f"{c.get('test_near_in_train', '—')} of {c.get('test_images', '—')} (exact: {c.get('test_exact_in_train', '—')})"),
            ("independent test groups", c.get("test_groups", "—")),
            ("lookup baseline (no model)", f"{_fmt(lk.get('accuracy'))} {_fmt_ci(lk.get('ci'))}"),
            ("majority class", _fmt((rep.get("majority") or {}).get("test_accuracy"))),
            ("copy groups with conflicting labels", (rep.get("conflicting_label_groups") or {}).get("count", "—")),
        ]))
        try:
            page = (d / "check.html").read_text(encoding="utf-8")
        except OSError:
            page = ""
        pairs = [{"test_uri": a, "train_uri": b, "test": html.unescape(t), "train": html.unescape(r),
                  "how": html.unescape(h)} for a, b, t, r, h in _PAIR.findall(page)]
        if pairs:
            out.append(f"<p>A few of the copy pairs (test, train):</p>{pairs_html(pairs)}")
    return "\n".join(out) or ("<p class=muted>No example check under results/check/: run <code>fracbench check"
                              "</code> (README, \u201cCheck a claim on your data\u201d).</p>")


def _fmt_ci(ci: Any) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if isinstance(ci, (list, tuple)) and len(ci) == 2 else ""


def write_reports(folders: Sequence[Path], out: Path | None = None, *, baselines: Path | None = None) -> Path:
    """Write the side-by-side page of several results folders to ``out`` (default: <parent>/report.html,
    i.e. results/report.html for results/<dataset>/); returns its path."""
    folders = [Path(f) for f in folders]
    if not folders:
        raise ValueError("no results folder given: pass at least one results/<dataset>/ folder")
    out = Path(out) if out is not None else folders[0].parent / "report.html"
    return atomic_write_text(out, render_reports(folders, baselines=baselines))


def render_reports(folders: Sequence[Path], *, baselines: Path | None = None) -> str:
    """The side-by-side page of several results folders as a string (see the module docstring)."""
    from fracbench import __version__
    from fracbench.claims import tables as T
    from fracbench.training.experiments import baselines_dir

    folders = [Path(f) for f in folders]
    runs = {f: T.load_runs(f) for f in folders}
    every = [r for rs in runs.values() for r in rs]
    names = [f.name or str(f) for f in folders]
    anchors = {f: f"ds-{_slug(f.name or str(i))}-" for i, f in enumerate(folders)}
    title = f"fracbench report: {', '.join(names)} side by side"
    bdir = Path(baselines) if baselines is not None else baselines_dir()
    exps = T.load_experiments(bdir)
    claims = T.load_claims(bdir / T.CLAIMS_FILE) if (bdir / T.CLAIMS_FILE).exists() else []
    try:
        cross: list[tuple[str, Any]] = [(t.name, t) for t in T.build_cross_tables(runs, exps, claims)]
    except Exception as exc:  # one refusing table must not hide the datasets' own sections
        cross = [("across datasets", f"{type(exc).__name__}: {exc}")]
    per_folder, provenance = [], [_side_by_side(folders, runs, anchors)]
    for f, name in zip(folders, names, strict=True):
        a = anchors[f]
        if not runs[f]:
            per_folder.append(f"<h2 id=\"{a}top\">{_e(name)}</h2><p class=warn>not run: no records under "
                              f"<code>{_e(name)}/runs</code>.</p>")
            continue
        per_folder += [f"<h2 id=\"{a}top\">{_e(name)}</h2>", _tables_section(f, runs[f], baselines, a),
                       _figures_section(f / "figures", a)]
        provenance += [f"<hr><h2>{_e(name)}</h2>", _run_section(runs[f], a),
                       _data_section(_summaries(f), [r.record for r in runs[f]], a)]
    provenance.append(_environment_section([r.record for r in every], __version__))
    root = folders[0].parent
    checks = sorted(p for p in (root / "check").glob("*") if (p / "check.json").is_file())
    sections = [*_findings_sections(cross, baselines),
                ("Tables across datasets", _render_tables(cross, "across-", "Tables across datasets"), False),
                ("Each dataset's tables and figures", "\n".join(per_folder), False),
                ("Audit: copies across train and test", _audit_section(checks), False),
                ("Provenance: what was run, the data, the environment", "\n".join(provenance), False)]
    from fracbench.claims.tables.splits import ANATOMY_DATASET

    return _findings_first(title, "benchmark splits", every, cross, baselines, ANATOMY_DATASET,
                           root / "check" / ANATOMY_DATASET / "check.json", sections,
                           f"Written by fracbench {_e(__version__)} from the records under "
                           f"{', '.join(f'<code>{_e(n)}/runs</code>' for n in names)}. {_e(DISCLAIMER)}.")


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s.lower()) or "x"


def _side_by_side(folders: Sequence[Path], runs: Mapping[Path, Sequence[Any]], anchors: Mapping[Path, str]) -> str:
    """One row per results folder: what its records hold (or "not run")."""
    cols = ["results folder", "records", "experiments", "profile", "dataset", "manifest fingerprint",
            "test images", "section"]
    rows = []
    for f in folders:
        records = [r.record for r in runs.get(f, [])]
        if not records:
            rows.append([f.name, "not run", "—", "—", "—", "—", "—", "—"])
            continue
        done = [r for r in records if r.get("status", "complete") == "complete"]
        tests = sorted({int((r.get("counts") or {}).get("test", 0)) for r in done})
        rows.append([f.name, f"{len(records)} ({len(done)} complete)", len({r.get("experiment") for r in records}),
                     ", ".join(_distinct(records, "profile")) or "—", ", ".join(_distinct(records, "dataset")) or "—",
                     ", ".join(x[:16] for x in _distinct(done, "manifest_sha256")) or "—",
                     ", ".join(map(str, tests)) or "—", f"#{anchors[f]}top"])
    return ("<h2 id=side-by-side>Side by side</h2>" + _table(cols, rows)
            + "<p class=muted>The tables across datasets put their numbers in one table: the claims table with "
              "the multiregion splits beside each headline accuracy claim, and the leak table with a row per "
              "dataset, split and protocol.</p>")


# --------------------------------------------------------------------------------------------
# Small HTML helpers
# --------------------------------------------------------------------------------------------


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _looks_numeric(s: str) -> bool:
    """A number, 'mean ± sd' or 'point [lo, hi]': right-aligned. Anything with a letter is text."""
    t = s.strip().lstrip("+-−")
    return bool(t) and (t[0].isdigit() or t.startswith(".")) and not any(c.isalpha() for c in t)


def _table(columns: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in row:
            s = "—" if c is None else str(c)
            cls = " class=n" if _looks_numeric(s) else " class=long" if len(s) > 60 else ""
            cells.append(f"<td{cls}>{_e(s)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<div class=scroll><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _kv(items: Iterable[tuple[str, Any]]) -> str:
    return "<dl class=kv>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) + "</dl>"


def _distinct(records: Iterable[Mapping[str, Any]], key: str) -> list[str]:
    return sorted({str(r.get(key)) for r in records if r.get(key) not in (None, "")})


def _fmt(v: Any, nd: int = 3) -> str:
    if isinstance(v, bool) or v is None:
        return "—" if v is None else str(v)
    if isinstance(v, float):
        return "undefined" if v != v else f"{v:.{nd}f}"
    return str(v)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def _run_section(runs: Sequence[Any], anchor: str = "") -> str:
    out = [f"<h2 id={anchor}run>What was run</h2>"]
    if not runs:
        return out[0] + "<p class=warn>No run records found: run <code>fracbench run --all</code> first.</p>"
    records = [r.record for r in runs]
    done = [r for r in records if r.get("status", "complete") == "complete"]
    failed = [r for r in records if r.get("status", "complete") != "complete"]
    created = sorted(str(r["created"]) for r in records if r.get("created"))
    commits = sorted({f"{r['git_commit']}{' (with uncommitted changes)' if r.get('git_dirty') else ''}"
                      for r in records if r.get("git_commit")})
    devices = sorted({f"{r.get('device', '?')}: {r.get('device_name', '?')}" for r in done})
    out.append(_kv([
        ("records", f"{len(records)} ({len(done)} complete, {len(failed)} failed) over "
                    f"{len({r.get('experiment') for r in records})} experiments"),
        ("profile", ", ".join(_distinct(records, "profile")) or "—"),
        ("dataset", ", ".join(_distinct(records, "dataset")) or "—"),
        ("manifest fingerprint", ", ".join(_distinct(done, "manifest_sha256")) or "—"),
        ("hardware / device", "; ".join(devices) or "—"),
        ("torch", ", ".join(_distinct(done, "torch")) or "—"),
        ("git commit", ", ".join(commits) or "—"),
        ("code version", ", ".join(_distinct(records, "code_version")) or "—"),
        ("dates", f"{created[0]} to {created[-1]}" if created else "—"),
    ]))
    if len(_distinct(done, "manifest_sha256")) > 1:
        out.append("<p>More than one manifest: the leak demonstration builds its own split of rotated copies; "
                   "every other experiment shares the run's manifest (the tables refuse to mix them).</p>")
    cols = ["experiment", "seed", "status", "profile", "dataset", "protocol", "model", "epochs run",
            "selected epoch", "threshold", "test AUROC", "test accuracy", "device", "train s", "created"]
    rows = []
    for r in sorted(records, key=lambda r: (str(r.get("experiment")), int(r.get("seed", 0)))):
        test = (r.get("metrics") or {}).get("test") or {}
        status = str(r.get("status", "complete"))
        if status != "complete":
            status += f": {str(r.get('error', ''))[:160]}"
        rows.append([r.get("experiment"), r.get("seed"), status, r.get("profile"), r.get("dataset"),
                     r.get("protocol"), r.get("model"), r.get("epochs_run"), r.get("selected_epoch"),
                     _fmt(r.get("threshold")), _fmt(test.get("auroc")), _fmt(test.get("accuracy")),
                     r.get("device_name") or r.get("device"), r.get("train_seconds"), r.get("created")])
    out.append("<h3>Runs</h3>" + _table(cols, rows))
    out.append("<p class=muted>test accuracy: at the record's threshold over every test image (the tables show "
               "what each protocol reports).</p>")
    return "\n".join(out)


def _summaries(results: Path) -> list[dict[str, Any]]:
    out = []
    for p in sorted((results / "data").glob("*.json")):
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            out.append(data)
    return out


def _data_section(summaries: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]],
                  anchor: str = "") -> str:
    out = [f"<h2 id={anchor}data>Dataset</h2>"]
    if not summaries:
        out.append("<p class=warn>No dataset summary (results/data/&lt;dataset&gt;.json): it is written by "
                   "<code>fracbench run</code>.</p>")
        return "\n".join(out)
    used = {str(r.get("manifest_sha256")) for r in records}
    for s in summaries:
        fp = str(s.get("manifest_fingerprint", ""))
        out.append(f"<h3>{_e(s.get('dataset', '?'))}</h3>")
        out.append(_kv([
            ("images found", s.get("images_found", "—")),
            ("images in the manifest", s.get("images_in_manifest", "—")),
            ("manifest fingerprint", fp or "—"),
            ("records on this manifest", sum(1 for r in records if str(r.get("manifest_sha256")) == fp)),
        ]))
        if fp and used and fp not in used:
            out.append("<p class=warn>No record was made on this manifest: the summary describes another split "
                       "than the runs.</p>")
        splits = s.get("splits") or {}
        if splits:
            rows = [[k, v.get("fractured", 0), v.get("not_fractured", 0), sum(v.values())]
                    for k, v in splits.items()]
            rows.append(["all", sum(r[1] for r in rows), sum(r[2] for r in rows), sum(r[3] for r in rows)])
            out.append("<h4>Images per split and label</h4>"
                       + _table(["split", "fractured", "not fractured", "total"], rows))
        parts = s.get("body_parts") or {}
        if parts:
            rows = [[k or "(none)", v.get("fractured", 0), v.get("not_fractured", 0), sum(v.values())]
                    for k, v in parts.items()]
            out.append("<h4>Images per body part and label</h4>"
                       + _table(["body part", "fractured", "not fractured", "total"], rows))
        faults = s.get("fault_counts") or {}
        examples = {}
        for f in s.get("faults") or []:
            examples.setdefault(f.get("kind"), f)
        rows = [[k, n, f"{examples.get(k, {}).get('path', '')}: {examples.get(k, {}).get('detail', '')}"
                 if k in examples else "—"] for k, n in faults.items()]
        rows.append(["duplicate groups", s.get("duplicate_group_count", 0),
                     f"{s.get('duplicate_images', 0)} images in them"])
        conflicts = s.get("conflicting_label_groups") or []
        rows.append(["groups with conflicting labels", len(conflicts),
                     "; ".join(",".join(map(str, g.get("ids", []))) for g in conflicts[:3]) or "—"])
        out.append("<h4>Faults found (reported, not fatal)</h4>" + _table(["fault", "count", "example"], rows))
    return "\n".join(out)


def _build_tables(results: Path, runs: Sequence[Any], baselines: Path | None) -> list[tuple[str, Any]]:
    """(name, Table or the error text) for every table fracbench.claims.tables builds."""
    from fracbench.claims import tables as T
    from fracbench.training.experiments import baselines_dir

    bdir = Path(baselines) if baselines is not None else baselines_dir()
    exps = T.load_experiments(bdir)
    claims = T.load_claims(bdir / T.CLAIMS_FILE) if (bdir / T.CLAIMS_FILE).exists() else []
    try:
        return [(t.name, t) for t in T.build_tables(runs, exps, claims)] + _folder_tables(results, runs)
    except Exception:  # one table refusing (mixed manifests) must not hide the others
        pass
    builders = [("table1", T.table1), ("table2", T.table2), ("table3", T.table3), ("leaderboard", T.leaderboard),
                ("claims", lambda r, e: T.claims_table(r, e, claims)), ("leak", T.leak_table),
                ("protocol", T.protocol_table),
                ("leak_splits", lambda r, e: T.leak_splits_table({T.dataset_label(r): r}))]
    out: list[tuple[str, Any]] = []
    for name, build in builders:
        try:
            out.append((name, build(runs, exps)))
        except Exception as exc:
            out.append((name, f"{type(exc).__name__}: {exc}"))
    return out + _folder_tables(results, runs)


def _folder_tables(results: Path, runs: Sequence[Any]) -> list[tuple[str, Any]]:
    """The tables that also read the folder's data files (the subgroup table), or why they were not built."""
    from fracbench.claims import tables as T

    try:
        return [(t.name, t) for t in T.folder_tables(results, runs)]
    except Exception as exc:  # a damaged subgroups file must not hide the other tables
        return [("subgroups", f"{type(exc).__name__}: {exc}")]


def _tables_section(results: Path, runs: Sequence[Any], baselines: Path | None, anchor: str = "") -> str:
    return _render_tables(_build_tables(results, runs, baselines), anchor)


def _render_tables(tables: Sequence[tuple[str, Any]], anchor: str = "", heading: str = "Tables") -> str:
    """A section of tables: (name, Table or the text of why it was not built)."""
    out = [f"<h2 id={anchor}tables>{_e(heading)}</h2>",
           "<p class=muted>Columns headed “paper …” hold the paper's numbers; “fracbench …” columns hold this "
           "rerun's. The same tables are in results/tables/ as Markdown, CSV and LaTeX.</p>"]
    for name, table in tables:
        if isinstance(table, str):
            out.append(f"<h3 id=\"{anchor}table-{_e(name)}\">{_e(name)}</h3><p class=warn>not built: {_e(table)}</p>")
            continue
        out.append(f"<h3 id=\"{anchor}table-{_e(table.name)}\">{_e(table.title)}</h3>")
        if getattr(table, "banner", ""):
            out.append(f"<p class=disclaimer>{_e(table.banner)}</p>")
        out.append(_table(table.columns, table.rows))
        if table.footnotes:
            out.append("<ul class=notes>" + "".join(f"<li>{_e(f)}</li>" for f in table.footnotes) + "</ul>")
    return "\n".join(out)


def _figure_key(p: Path) -> tuple[int, str]:
    for i, prefix in enumerate(_FIGURE_ORDER):
        if p.name.startswith(prefix):
            return i, p.name
    return len(_FIGURE_ORDER), p.name


def _figures_section(folder: Path, anchor: str = "") -> str:
    from fracbench.claims.figures import caption

    out = [f"<h2 id={anchor}figures>Figures</h2>"]
    pngs = sorted(folder.glob("*.png"), key=_figure_key) if folder.is_dir() else []
    if not pngs:
        out.append("<p class=warn>No figures: run <code>fracbench figures</code> (or <code>fracbench report</code> "
                   "without --no-refresh).</p>")
        return "\n".join(out)
    if not any(p.name.startswith("examples_") for p in pngs):
        out.append("<p class=muted>No grid of correct and wrong test predictions: the images were not available "
                   "when the figures were made (<code>fracbench figures --data-dir DIR</code> draws it).</p>")
    for p in pngs:
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        out.append(f"<figure id=\"{anchor}fig-{_e(p.stem)}\"><img alt=\"{_e(p.stem)}\" src=\"data:image/png;base64,{data}\">"
                   f"<figcaption><b>{_e(p.name)}</b>: {_e(caption(p.name))}</figcaption></figure>")
    return "\n".join(out)


def _environment_section(records: Sequence[Mapping[str, Any]], version: str) -> str:
    out = ["<h2 id=environment>Environment</h2>"]
    keys = ("python", "torch", "platform", "device", "device_name", "cpu_count", "torch_threads", "code_version",
            "git_commit", "git_dirty")
    combos: dict[tuple[str, ...], list[str]] = {}
    for r in records:
        if r.get("status", "complete") != "complete":
            continue
        combo = tuple(_fmt(r.get(k)) for k in keys)
        combos.setdefault(combo, []).append(f"{r.get('experiment')}/seed{r.get('seed')}")
    if not combos:
        out.append("<p class=muted>No complete record to take the environment from.</p>")
    else:
        rows = [[*combo, f"{len(names)}: {', '.join(names[:6])}{' …' if len(names) > 6 else ''}"]
                for combo, names in sorted(combos.items())]
        out.append("<p>Where the runs were made (from their records):</p>"
                   + _table([k.replace("_", " ") for k in keys] + ["runs"], rows))
    out.append(_kv([("report written by", f"fracbench {version}")]))
    return "\n".join(out)
