"""Atomic file writing: a temporary file in the same folder, fsync, then rename.

Everything fracbench writes (records, manifests, tables, checkpoints) goes through here, so a
run killed at any point leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _file_mode() -> int:
    # mkstemp creates files 0600; results are meant to be read by others, as a plain open() would allow
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_MODE = _file_mode()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    # numpy scalars and paths appear in metrics and configs
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


DONE = "done.json"  # marks a derived folder (leak copies, a mixed-format tree) as completely written


def completed_files(root: str | os.PathLike[str], planned: list[str], version: int) -> list[str] | None:
    """The files a derived folder under ``root`` holds when it was completed for exactly this plan and
    version (its ``done.json`` says so and every file it lists exists); None when it must be (re)built."""
    from pathlib import Path

    root = Path(root)
    try:
        done = json.loads((root / DONE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(done, dict) or done.get("version") != version or done.get("planned") != planned:
        return None
    written = done.get("files")
    if not isinstance(written, list) or not all((root / p).exists() for p in written):
        return None
    return written


def mark_completed(root: str | os.PathLike[str], planned: list[str], written: list[str], version: int,
                   **extra: Any) -> None:
    """Record that the derived folder under ``root`` holds ``written`` (of ``planned``): the last write."""
    from pathlib import Path

    atomic_write_json(Path(root) / DONE, {"version": version, "planned": planned, "files": written, **extra})
