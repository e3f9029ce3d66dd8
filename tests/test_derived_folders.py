"""fracbench.io.completed_files / mark_completed: when a derived folder (leak copies, mixed tree) is reused."""

from __future__ import annotations

from pathlib import Path

from fracbench.io import DONE, completed_files, mark_completed


def _folder(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "derived"
    planned = ["a/x.png", "b/y.jpg", "b/z.png"]
    for p in planned[:2]:
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(b"img")
    return root, planned


def test_a_completed_folder_is_reused_with_the_files_it_wrote(tmp_path: Path) -> None:
    root, planned = _folder(tmp_path)
    assert completed_files(root, planned, 1) is None  # never marked: build it
    mark_completed(root, planned, planned[:2], 1, copies=["identity"])  # z.png was unreadable: not written
    assert completed_files(root, planned, 1) == planned[:2]


def test_another_plan_version_a_missing_file_or_a_damaged_mark_means_rebuild(tmp_path: Path) -> None:
    root, planned = _folder(tmp_path)
    mark_completed(root, planned, planned[:2], 1)
    assert completed_files(root, planned[:2], 1) is None  # other plan
    assert completed_files(root, planned, 2) is None  # other version of the builder
    (root / planned[1]).unlink()
    assert completed_files(root, planned, 1) is None  # a listed file is gone
    (root / planned[1]).write_bytes(b"img")
    (root / DONE).write_text("{not json")
    assert completed_files(root, planned, 1) is None
