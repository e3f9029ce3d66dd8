"""Dataset faults on the real FracAtlas dev copy: every one is reported, none stops a run.

FracAtlas as published has 59 truncated JPEGs, one image filed under both Fractured and
Non_fractured (a label conflict) and one COCO annotation whose size disagrees with its image.
``prepare()`` finds them; this checks that ``fracbench data info --json`` reports every single one
of them, and that ``fracbench train`` on the same folder runs to a complete record regardless.

Skips with a reason when ../shared/data/fracatlas is absent. The decode passes are cached in one
FRACBENCH_CACHE for the module, so each image is decoded once per purpose (about a minute in all).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fracbench import progress
from fracbench import results as R
from fracbench.cli import main

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

IMAGES = 3471
TRUNCATED = 59


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fracatlas-faults-cache")


@pytest.fixture(autouse=True)
def _shared_cache(module_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("FRACBENCH_CACHE", str(module_cache))
    quiet = progress.is_quiet()  # main() sets --quiet process-wide; put it back afterwards
    yield
    progress.set_quiet(quiet)


@pytest.fixture(scope="module")
def _memo() -> dict[str, Any]:
    return {}


@pytest.fixture
def prepared_faults(fracatlas_root: Path, _memo: dict[str, Any]) -> list[dict[str, str]]:
    """Every fault prepare() finds, as the dicts `data info --json` prints."""
    if "faults" not in _memo:
        from fracbench.data import prepare

        _memo["faults"] = [f.as_dict() for f in prepare("fracatlas", fracatlas_root, progress=False).faults]
    return _memo["faults"]


@pytest.fixture
def info(fracatlas_root: Path, capsys: pytest.CaptureFixture[str], _memo: dict[str, Any]) -> dict[str, Any]:
    if "info" not in _memo:
        capsys.readouterr()
        rc = main(["data", "info", "fracatlas", "--data-dir", str(fracatlas_root), "--json", "--quiet"])
        out = capsys.readouterr().out
        assert rc == 0
        _memo["info"] = json.loads(out)
    return _memo["info"]


def _key(f: dict[str, str]) -> tuple[str, str, str]:
    return (f["path"], f["kind"], f["detail"])


def test_every_fault_prepare_finds_is_in_data_info(prepared_faults: list[dict[str, str]],
                                                   info: dict[str, Any]) -> None:
    reported = sorted(map(_key, info["faults"]))
    found = sorted(map(_key, prepared_faults))
    assert reported == found  # every one, each once, with its detail
    counts: dict[str, int] = {}
    for f in prepared_faults:
        counts[f["kind"]] = counts.get(f["kind"], 0) + 1
    assert info["fault_counts"] == counts


def test_the_known_faults_are_among_them(prepared_faults: list[dict[str, str]]) -> None:
    kinds = [f["kind"] for f in prepared_faults]
    assert kinds.count("truncated") == TRUNCATED
    (conflict,) = [f for f in prepared_faults if f["kind"] == "label_conflict"]
    assert Path(conflict["path"]).name == "IMG0003298.jpg" and conflict["detail"]
    (mismatch,) = [f for f in prepared_faults if f["kind"] == "annotation_size_mismatch"]
    assert Path(mismatch["path"]).name == "IMG0002628.jpg" and mismatch["detail"]
    for f in prepared_faults:
        assert f["path"] and f["detail"], f  # each names its file and says what is wrong


def test_train_runs_through_every_fault(fracatlas_root: Path, tmp_path: Path, info: dict[str, Any],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--model", "tiny_cnn", "--dataset", "fracatlas", "--data-dir", str(fracatlas_root),
               "--epochs", "1", "--image-size", "32", "--results", str(tmp_path), "--quiet"])
    capsys.readouterr()
    assert rc == 0
    (record_path,) = list(tmp_path.rglob(R.RECORD))
    record = json.loads(record_path.read_text())
    assert record["status"] == "complete" and record["dataset"] == "fracatlas"
    assert record["manifest_sha256"] == info["manifest_fingerprint"]
    # the truncated files were kept (decoded as far as they go), nothing was dropped on the way
    counts = record["counts"]
    assert counts["train"] + counts["val"] + counts["test"] == info["images_in_manifest"] == IMAGES
    assert 0.0 <= record["metrics"]["test"]["auroc"] <= 1.0
