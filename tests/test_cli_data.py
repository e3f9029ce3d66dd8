"""`fracbench data list|info|split|download`, run in-process through fracbench.cli.main."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fracbench import progress
from fracbench.cli import main
from fracbench.data.synthetic import SyntheticSpec, generate

pytestmark = pytest.mark.usefixtures("fresh_cache")


@pytest.fixture(autouse=True)
def _keep_quiet_setting() -> Iterator[None]:
    # main() sets the process-wide --quiet flag; put it back for the tests that follow
    quiet = progress.is_quiet()
    yield
    progress.set_quiet(quiet)


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines at the console width


def test_data_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list"]) == 0
    out = capsys.readouterr()
    names = [line.split("\t")[0] for line in out.out.splitlines()[1:]]  # TSV on stdout when piped
    assert {"fracatlas", "mura", "imagefolder", "synthetic"} <= set(names)
    assert out.err == ""
    assert main(["data", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [d["dataset"] for d in listed] == names and all(d["description"] for d in listed)


def test_data_info_synthetic_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = generate(SyntheticSpec(count=24, size=64, seed=1), tmp_path / "syn")
    assert main(["data", "info", "synthetic", "--data-dir", str(root), "--json", "--quiet"]) == 0
    out = capsys.readouterr()
    s = json.loads(out.out)  # stdout holds the JSON and nothing else
    assert s["dataset"] == "synthetic" and s["images_found"] == s["images_in_manifest"] == 24
    assert s["fault_counts"] == {} and s["faults"] == []
    assert sum(sum(c.values()) for c in s["splits"].values()) == 24
    assert len(s["manifest_fingerprint"]) == 64
    assert out.err == ""  # --quiet: no progress display


@pytest.mark.slow
def test_data_info_synthetic_default(capsys: pytest.CaptureFixture[str]) -> None:
    # no --data-dir: the default synthetic set is generated into the (temporary) cache
    assert main(["data", "info", "synthetic", "--json", "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["images_found"] == SyntheticSpec().count and s["images_in_manifest"] == SyntheticSpec().count


def test_data_split_writes_the_same_manifest_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = generate(SyntheticSpec(count=24, size=64, seed=1), tmp_path / "syn")
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["data", "split", "synthetic", "--data-dir", str(root), "--out", str(a), "--quiet"]) == 0
    assert main(["data", "split", "synthetic", "--data-dir", str(root), "--out", str(b), "--quiet"]) == 0
    assert a.read_bytes() == b.read_bytes()
    out = capsys.readouterr()
    assert out.out.splitlines()[-1].startswith(f"wrote {b}: 24 images, fingerprint ")  # the result: stdout
    assert main(["data", "info", "synthetic", "--data-dir", str(root), "--manifest", str(a), "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["images_in_manifest"] == 24


def test_data_download_mura_says_where_to_get_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "download", "mura"]) == 2
    err = _flat(capsys.readouterr().err)
    assert "https://stanfordmlgroup.github.io/competitions/mura/" in err
    assert "registration" in err and "--data-dir" in err


def test_data_info_missing_dir_names_the_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "info", "fracatlas", "--data-dir", "/nonexistent"]) == 2
    err = _flat(capsys.readouterr().err)
    assert "error:" in err and "/nonexistent" in err
    assert "fracbench data download fracatlas" in err  # and says what to do


def test_data_info_unknown_dataset_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "info", "fracatlass", "--quiet"]) == 2
    assert "Did you mean 'fracatlas'" in _flat(capsys.readouterr().err)
