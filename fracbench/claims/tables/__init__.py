"""Records in, tables out: the paper's Tables 1-3, a leaderboard and a claim-by-claim verdict.

Every table is built from run records alone (``results/runs/<experiment>/seed<k>/``, read through
fracbench.results) plus the experiments' YAML and baselines/claims.yaml, and written as Markdown,
CSV and LaTeX. A column holding the paper's numbers is headed "paper ..."; a column holding
fracbench's is headed "fracbench ...". Over several seeds a cell shows "mean ± sd" (sample sd over
the seeds present); one seed shows the value alone. Output is deterministic: rows are sorted, numbers
are rounded to a fixed number of decimals and nothing time-dependent is written, so the same records
give byte-identical files.

Intervals. A test-set metric of one run is shown as "point [lo, hi]" with the run's 95% bootstrap
interval (``<metric>_ci95`` in the record). Over several seeds the point is the mean over seeds and
the interval is the envelope of the seeds' intervals (lowest lower bound, highest upper bound): it
covers both test-set sampling and seed-to-seed variation, and never looks narrower than a single
run's interval. Per-epoch values (train loss and accuracy, test accuracy) have no bootstrap
interval; over several seeds the claims table uses their range over seeds instead.

A table refuses records made on different manifests (``MixedManifestError``): numbers from two
splits cannot stand in one column.

Several results folders (one per dataset, results/<dataset>/): :func:`write_cross_tables` writes the
tables that need more than one, into results/tables/: the claims table of the main dataset with the
multiregion splits beside each headline accuracy claim, and the leak table across splits and datasets
(fracbench.claims.tables.splits). A folder that is absent makes its cells read "not run".
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fracbench.claims.tables.claims_table import claims_table
from fracbench.claims.tables.inputs import (
    CLAIM_KINDS,
    CLAIMS_FILE,
    CROSS_TABLE_NAMES,
    EPOCH_METRICS,
    KNOWN_METRICS,
    PROTOCOL_EFFECTS,
    RECORD_METRICS,
    TABLE_NAMES,
    Claim,
    MixedManifestError,
    Run,
    check_manifests,
    load_claims,
    load_experiments,
    load_runs,
    machinery_banner,
    provenance_notes,
)
from fracbench.claims.tables.leaderboard import leaderboard
from fracbench.claims.tables.leak import leak_table
from fracbench.claims.tables.paper_tables import table1, table2, table3
from fracbench.claims.tables.protocol import protocol_table
from fracbench.claims.tables.render import Table
from fracbench.claims.tables.splits import (
    ANATOMY_DATASET,
    SPLIT_ROWS,
    is_split_run,
    leak_splits_table,
    split_claims_table,
)
from fracbench.claims.tables.subgroups import load_groups, subgroups_table
from fracbench.io import atomic_write_text
from fracbench.training.experiments import baselines_dir

__all__ = [
    "ANATOMY_DATASET",
    "CLAIMS_FILE",
    "CLAIM_KINDS",
    "CROSS_TABLE_NAMES",
    "EPOCH_METRICS",
    "KNOWN_METRICS",
    "PROTOCOL_EFFECTS",
    "RECORD_METRICS",
    "TABLE_NAMES",
    "Claim",
    "MixedManifestError",
    "Run",
    "Table",
    "build_cross_tables",
    "build_tables",
    "dataset_label",
    "folder_tables",
    "check_manifests",
    "claims_table",
    "leaderboard",
    "leak_splits_table",
    "leak_table",
    "load_claims",
    "load_experiments",
    "load_runs",
    "primary_folder",
    "protocol_table",
    "table1",
    "table2",
    "split_claims_table",
    "subgroups_table",
    "table3",
    "write_cross_tables",
    "write_tables",
]


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def build_tables(runs: Sequence[Run], experiments: Any, claims: Sequence[Claim]) -> list[Table]:
    """Every table; each carries the smoke/synthetic banner when such runs are among ``runs``."""
    banner = machinery_banner(runs)
    tables = [table1(runs, experiments, claims), table2(runs, experiments), table3(runs, experiments),
            leaderboard(runs, experiments), claims_table(runs, experiments, claims), leak_table(runs, experiments, claims),
            protocol_table(runs, experiments), leak_splits_table({dataset_label(runs): runs})]
    for table in tables:
        table.banner = banner
    return tables


def folder_tables(results: Path, runs: Sequence[Run]) -> list[Table]:
    """Tables that also read a results folder's committed data files: the subgroup table (a one-line
    note when the folder has no subgroups file); each carries the smoke/synthetic banner when due."""
    groups, source = load_groups(Path(results))
    tables = [subgroups_table(runs, groups, source)]
    for table in tables:
        table.banner = machinery_banner(runs)
    return tables


def dataset_label(runs: Sequence[Run]) -> str:
    """The dataset(s) of a folder's records, for a table row (external test sets left out)."""
    names = sorted({str(r.record.get("dataset")) for r in runs
                    if r.record.get("dataset") and not isinstance(r.record.get("external"), dict)})
    return ", ".join(names) or "unknown dataset"


def _inputs(baselines: Path | None) -> tuple[dict[str, Any], list[Claim]]:
    bdir = Path(baselines) if baselines is not None else baselines_dir()
    claims = load_claims(bdir / CLAIMS_FILE) if (bdir / CLAIMS_FILE).exists() else []
    return load_experiments(bdir), claims


def _write(tables: Sequence[Table], out: Path) -> list[Path]:
    paths = []
    for table in tables:
        for ext, text in (("md", table.to_markdown()), ("csv", table.to_csv()), ("tex", table.to_latex())):
            paths.append(atomic_write_text(out / f"{table.name}.{ext}", text))
    return sorted(paths)


def write_tables(results: Path, out: Path | None = None, *, baselines: Path | None = None) -> list[Path]:
    """Write results/tables/<name>.{md,csv,tex} for each of TABLE_NAMES and the subgroup table; returns the paths."""
    results = Path(results)
    experiments, claims = _inputs(baselines)
    runs = load_runs(results)
    return _write([*build_tables(runs, experiments, claims), *folder_tables(results, runs)],
                  Path(out) if out is not None else results / "tables")


PRIMARY_DATASET = "fracatlas"  # the dataset whose runs the claims table judges the paper on


def primary_folder(folders: Sequence[Path], runs: Mapping[Path, Sequence[Run]]) -> Path | None:
    """The folder the cross-dataset claims table is built on: results/fracatlas when given, else the
    first folder with a record that is not a claim-anatomy (split) record; None when there is none."""
    named = [f for f in folders if Path(f).name == PRIMARY_DATASET]
    if named:
        return named[0]
    return next((f for f in folders if any(not is_split_run(r) for r in runs.get(f, []))), None)


def build_cross_tables(runs: Mapping[Path, Sequence[Run]], experiments: Any, claims: Sequence[Claim]) -> list[Table]:
    """The tables over several results folders (folder -> its runs): claims with the multiregion splits,
    and the leak table across splits and datasets. Each carries the smoke/synthetic banner when due."""
    folders = list(runs)
    primary = primary_folder(folders, runs)
    main = [r for r in runs.get(primary, []) if not is_split_run(r)] if primary is not None else []
    split = [r for rs in runs.values() for r in rs if is_split_run(r)]
    label = Path(primary).name if primary is not None else ""
    split_names = [n for _, _, n in SPLIT_ROWS]
    claimed = sorted({c.experiment for c in claims if c.experiment})
    tables = [split_claims_table(main, split, experiments, claims, dataset=label),
              leak_splits_table({Path(f).name: rs for f, rs in runs.items()}, expect=[ANATOMY_DATASET])]
    # the per-dataset tables' provenance footnote (profile, epochs, seeds, changes from the paper's configuration)
    # for every experiment whose records feed the table
    tables[0].footnotes += provenance_notes([*main, *split], experiments, [*claimed, *split_names])
    tables[1].footnotes += provenance_notes(split, experiments, split_names)
    banner = machinery_banner([r for rs in runs.values() for r in rs])
    for table in tables:
        table.banner = banner
    return tables


def write_cross_tables(folders: Sequence[Path], out: Path | None = None, *,
                       baselines: Path | None = None) -> list[Path]:
    """Write <parent>/tables/{claims,leak_splits}.{md,csv,tex} over several results folders.

    ``out`` defaults to the tables/ folder beside the results folders (results/tables/ for
    results/<dataset>/); a results folder with no records is read as "not run".
    """
    folders = [Path(f) for f in folders]
    if not folders:
        raise ValueError("no results folder given: pass at least one results/<dataset>/ folder")
    experiments, claims = _inputs(baselines)
    runs = {f: load_runs(f) for f in folders}
    return _write(build_cross_tables(runs, experiments, claims),
                  Path(out) if out is not None else folders[0].parent / "tables")
