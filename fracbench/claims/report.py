"""``results/report.html``: one self-contained page with everything a results folder holds.

What was run (from the records: profile, dataset, manifest, hardware, torch, git commit, dates),
the dataset summary ``fracbench run`` wrote (results/data/<dataset>.json), every table (rendered
from fracbench.claims.tables' Table objects, built fresh from the records), every figure in
results/figures/ (embedded as base64 data URIs) and the environment. The page opens offline: CSS
is inline and nothing is fetched (no scripts, fonts, CDNs or links out). Every value taken from a
record, a summary or a table is HTML-escaped. Nothing time-dependent is added, so the same inputs
give the same page.

Several results folders (one per dataset): :func:`write_reports` writes one more page,
results/report.html, that shows them side by side: a summary row per dataset, the tables built across
them (claims beside the multiregion splits, the leak table across splits) and then each dataset's
sections in turn. A folder that is absent or holds no records is listed as "not run".
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fracbench.io import atomic_write_text

__all__ = ["DISCLAIMER", "render_report", "render_reports", "write_report", "write_reports"]

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
_FIGURE_ORDER = ("curves_", "roc_pr_", "confusion_", "subgroups_", "examples_")


def _page_head(title: str, measured_on: str) -> list[str]:
    """The top of a report page: doctype, title, style, heading and the research-software disclaimer."""
    return [
        "<!doctype html>",
        "<html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content=\"width=device-width, initial-scale=1\">",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p class=disclaimer>{_e(DISCLAIMER)}: these numbers measure models on {measured_on}; nothing here "
        "is fit for diagnosing anyone.</p>",
    ]


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
    """The report page as a string (see the module docstring)."""
    from fracbench import __version__
    from fracbench.claims.tables import load_runs

    results = Path(results)
    runs = load_runs(results)
    records = [r.record for r in runs]
    datasets = sorted({str(r.get("dataset")) for r in records if r.get("dataset")})
    summaries = _summaries(results)
    title = "fracbench report" + (f": {', '.join(datasets)}" if datasets else "")
    parts = [
        *_page_head(title, "a benchmark split"),
        "<nav><a href=\"#run\">What was run</a><a href=\"#data\">Dataset</a><a href=\"#tables\">Tables</a>"
        "<a href=\"#figures\">Figures</a><a href=\"#environment\">Environment</a></nav>",
        _machinery_banner(runs),
        _run_section(runs),
        _data_section(summaries, records),
        _tables_section(results, runs, baselines),
        _figures_section(Path(figures) if figures is not None else results / "figures"),
        _environment_section(records, __version__),
        f"<p class=muted>Written by fracbench {_e(__version__)} from the records under "
        f"<code>{_e(results.name or str(results))}/runs</code>. {_e(DISCLAIMER)}.</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


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
    nav = "".join(f"<a href=\"#{anchors[f]}top\">{_e(n)}</a>" for f, n in zip(folders, names, strict=True))
    parts = [
        *_page_head(title, "benchmark splits"),
        f"<nav><a href=\"#side-by-side\">Side by side</a><a href=\"#across-tables\">Across datasets</a>{nav}</nav>",
        _machinery_banner(every),
        _side_by_side(folders, runs, anchors),
        _render_tables(cross, "across-", "Tables across datasets"),
    ]
    for f, name in zip(folders, names, strict=True):
        a = anchors[f]
        parts.append(f"<hr><h1 id=\"{a}top\">{_e(name)}</h1>")
        if not runs[f]:
            parts.append(f"<p class=warn>not run: no records under <code>{_e(name)}/runs</code>.</p>")
            continue
        parts += [_run_section(runs[f], a), _data_section(_summaries(f), [r.record for r in runs[f]], a),
                  _tables_section(f, runs[f], baselines, a), _figures_section(f / "figures", a)]
    parts += [_environment_section([r.record for r in every], __version__),
              f"<p class=muted>Written by fracbench {_e(__version__)} from the records under "
              f"{', '.join(f'<code>{_e(n)}/runs</code>' for n in names)}. {_e(DISCLAIMER)}.</p>",
              "</body></html>"]
    return "\n".join(parts) + "\n"


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


def _machinery_banner(runs: Sequence[Any]) -> str:
    """A banner at the top of the page for smoke runs or synthetic data ("" otherwise)."""
    from fracbench.claims.tables.inputs import machinery_banner

    text = machinery_banner(runs)
    return f"<p class=disclaimer>{_e(text)}</p>" if text else ""


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
