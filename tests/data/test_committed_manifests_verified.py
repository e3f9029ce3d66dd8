"""Every committed manifest whose test split fracbench dealt passes the split verifier (test against train and
val), on the real images: the committed records were trained on splits with no copy across the held-out
boundary. The verifier never reads the manifests' groups; manifests of a given split (a release's own folders)
are not dealt by fracbench and are left to the audit, which counts their copies.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fracbench.paths import REPO_ROOT

SHARED = REPO_ROOT.parent / "shared" / "data"
pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _committed(dataset: str) -> list[tuple[Path, str | None]]:
    """(manifest, split mode) for the committed base and split-mode manifests of ``dataset`` (external tests,
    whose test images come from another dataset, are verified when they are built: left out here)."""
    folder = REPO_ROOT / "results" / dataset / "manifests"
    out: list[tuple[Path, str | None]] = []
    for p in sorted(folder.glob(f"{dataset}*.csv")):
        rest = p.stem.removeprefix(dataset)
        if rest == "":
            out.append((p, None))
        elif rest.startswith("-") and "-external-" not in p.stem:
            out.append((p, rest[1:]))
    return out


@pytest.mark.parametrize("dataset", ["fracatlas", "multiregion"])
def test_every_committed_dealt_manifest_passes_the_verifier(dataset):
    from fracbench.claims.anatomy import heldout_crossings
    from fracbench.data import prepare
    from fracbench.data.manifest import Manifest

    root = SHARED / dataset
    if not root.is_dir():
        pytest.skip(f"{root} is absent: the committed {dataset} manifests cannot be checked against its images")
    committed = _committed(dataset)
    if not committed:
        pytest.skip(f"no committed {dataset} manifest")
    prepared = prepare(dataset, root, progress=False)
    checked = 0
    for path, mode in committed:
        if not prepared.dealt_by_fracbench(mode):
            continue
        m = Manifest.read(path, dataset, root)
        res = heldout_crossings(prepared, m)
        recs = prepared.index.records
        pairs = [f"{recs[c.query].id} ~ {recs[c.base].id} ({c.how})" for c in res.crossings[:10]]
        assert res.crossings == [], f"{path.name}: test images with a copy in train or val: {pairs}"
        checked += 1
    assert checked >= 1  # fracatlas.csv (no test folder of its own) and multiregion-grouped.csv are dealt
