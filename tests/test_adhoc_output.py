"""`fracbench train` and `fracbench audit` keep one-off output out of the committed results.

The tables, figures and report read ``results/<dataset>/runs/*/seed*/record.json``; an ad-hoc
run written there would change the committed leaderboard. By default both commands write to
``results/adhoc/<dataset>/`` instead (git-ignored); ``--results`` / ``--out`` still choose any folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracbench.cli import main
from fracbench.data.synthetic import SyntheticSpec, generate


def _snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout's results/ with one committed record of the synthetic dataset."""
    res = tmp_path / "results"
    run = res / "synthetic" / "runs" / "paper_cnn_honest" / "seed0"
    run.mkdir(parents=True)
    (run / "record.json").write_text(json.dumps({"schema_version": 1, "experiment": "paper_cnn_honest",
                                                 "status": "complete"}))
    monkeypatch.setenv("FRACBENCH_RESULTS", str(res))
    return res


@pytest.mark.slow
def test_train_writes_outside_the_committed_runs(results: Path, tmp_path: Path) -> None:
    data = generate(SyntheticSpec(count=60, size=48, seed=1), tmp_path / "syn")
    before = _snapshot(results / "synthetic")
    assert main(["train", "--model", "tiny_cnn", "--dataset", "synthetic", "--data-dir", str(data), "--epochs", "1",
                 "--image-size", "32", "--quiet"]) == 0
    assert _snapshot(results / "synthetic") == before  # runs/, tables/ ... untouched
    rec = results / "adhoc" / "synthetic" / "runs" / "train_tiny_cnn_honest" / "seed0" / "record.json"
    assert json.loads(rec.read_text())["status"] == "complete"
    assert (results / "adhoc" / ".gitignore").read_text().splitlines()[-1] == "*"
    # what the tables read for this dataset is still the one committed record
    from fracbench.results import find_records

    assert [d.relative_to(results).as_posix() for d, _ in find_records(results / "synthetic")] == [
        "synthetic/runs/paper_cnn_honest/seed0"]


def test_train_results_option_still_chooses(results: Path, tmp_path: Path) -> None:
    data = generate(SyntheticSpec(count=60, size=48, seed=1), tmp_path / "syn")
    assert main(["train", "--model", "tiny_cnn", "--dataset", "synthetic", "--data-dir", str(data), "--epochs", "1",
                 "--image-size", "32", "--results", str(tmp_path / "mine"), "--name", "x", "--quiet"]) == 0
    assert (tmp_path / "mine" / "runs" / "x" / "seed0" / "record.json").exists()
    assert not (results / "adhoc").exists()


def test_audit_writes_outside_the_committed_results(results: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ("fractured", "not fractured"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    before = _snapshot(results)
    assert main(["audit", "imagefolder", "--data-dir", str(tmp_path / "imgs"), "--quiet"]) == 0
    after = _snapshot(results)
    new = sorted(set(after) - set(before))
    assert {k: after[k] for k in before} == before
    assert new == ["adhoc/.gitignore", "adhoc/imagefolder/audit/audit.html", "adhoc/imagefolder/audit/audit.json"]
