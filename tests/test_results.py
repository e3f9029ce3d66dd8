"""fracbench.results: the git state a record carries, checked on a temporary repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from fracbench import results as R


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=root,
                          capture_output=True, text=True, check=True, timeout=30).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "fracbench").mkdir(parents=True)
    (root / "baselines").mkdir()
    (root / "fracbench" / "train.py").write_text("EPOCHS = 3\n")
    (root / "baselines" / "a.yaml").write_text("name: a\n")
    (root / "README.md").write_text("docs\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "init")
    return root


def test_clean_checkout(repo: Path) -> None:
    st = R.git_state(repo)
    assert st == {"git_commit": _git(repo, "rev-parse", "HEAD").strip(), "git_dirty": False, "git_diff_sha256": None}


def test_a_change_to_the_code_is_named_by_its_diff(repo: Path) -> None:
    (repo / "fracbench" / "train.py").write_text("EPOCHS = 4\n")
    first = R.git_state(repo)
    assert first["git_dirty"] is True and re.fullmatch(r"[0-9a-f]{64}", first["git_diff_sha256"])
    assert R.git_state(repo) == first  # the same diff, the same hash
    (repo / "fracbench" / "train.py").write_text("EPOCHS = 5\n")
    assert R.git_state(repo)["git_diff_sha256"] != first["git_diff_sha256"]  # another diff, another hash
    (repo / "fracbench" / "train.py").write_text("EPOCHS = 4\n")
    assert R.git_state(repo) == first  # back to the first diff
    (repo / "fracbench" / "train.py").write_text("EPOCHS = 3\n")
    assert R.git_state(repo)["git_dirty"] is False


def test_untracked_experiment_files_count_by_content(repo: Path) -> None:
    new = repo / "baselines" / "new.yaml"
    new.write_text("name: new\nepochs: 1\n")
    one = R.git_state(repo)
    assert one["git_dirty"] is True and one["git_diff_sha256"]
    new.write_text("name: new\nepochs: 2\n")
    two = R.git_state(repo)
    assert two["git_dirty"] is True and two["git_diff_sha256"] != one["git_diff_sha256"]


def test_changes_outside_code_and_experiments_do_not_count(repo: Path) -> None:
    (repo / "README.md").write_text("other docs\n")
    (repo / "notes.txt").write_text("untracked, not code\n")
    assert R.git_state(repo)["git_dirty"] is False


def test_outside_git(tmp_path: Path) -> None:
    assert R.git_state(tmp_path) == {"git_commit": "unknown", "git_dirty": False, "git_diff_sha256": None}


def test_the_no_argument_call_is_this_checkout_and_cached() -> None:
    a = R.git_state()
    assert a is R.git_state()  # computed once per process
    assert a["git_commit"] == _git(Path(R.__file__).resolve().parents[1], "rev-parse", "HEAD").strip()
