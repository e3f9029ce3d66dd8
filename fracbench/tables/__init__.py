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
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fracbench.experiments import baselines_dir
from fracbench.io import atomic_write_text
from fracbench.tables.claims_table import claims_table
from fracbench.tables.inputs import (
    CLAIM_KINDS,
    CLAIMS_FILE,
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
)
from fracbench.tables.leaderboard import leaderboard
from fracbench.tables.leak import leak_table
from fracbench.tables.paper_tables import table1, table2, table3
from fracbench.tables.protocol import protocol_table
from fracbench.tables.render import Table

__all__ = [
    "CLAIMS_FILE",
    "CLAIM_KINDS",
    "EPOCH_METRICS",
    "KNOWN_METRICS",
    "PROTOCOL_EFFECTS",
    "RECORD_METRICS",
    "TABLE_NAMES",
    "Claim",
    "MixedManifestError",
    "Run",
    "Table",
    "build_tables",
    "check_manifests",
    "claims_table",
    "leaderboard",
    "leak_table",
    "load_claims",
    "load_experiments",
    "load_runs",
    "protocol_table",
    "table1",
    "table2",
    "table3",
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
            protocol_table(runs, experiments)]
    for table in tables:
        table.banner = banner
    return tables


def write_tables(results: Path, out: Path | None = None, *, baselines: Path | None = None) -> list[Path]:
    """Write results/tables/{table1,table2,table3,leaderboard,claims,leak,protocol}.{md,csv,tex}; returns the paths."""
    results = Path(results)
    out = Path(out) if out is not None else results / "tables"
    bdir = Path(baselines) if baselines is not None else baselines_dir()
    runs = load_runs(results)
    experiments = load_experiments(bdir)
    claims = load_claims(bdir / CLAIMS_FILE) if (bdir / CLAIMS_FILE).exists() else []
    paths = []
    for table in build_tables(runs, experiments, claims):
        for ext, text in (("md", table.to_markdown()), ("csv", table.to_csv()), ("tex", table.to_latex())):
            paths.append(atomic_write_text(out / f"{table.name}.{ext}", text))
    return sorted(paths)
