"""Where fracbench keeps caches and downloaded data (never inside the repository).

``FRACBENCH_CACHE`` overrides the cache root (default: ``$XDG_CACHE_HOME/fracbench`` or
``~/.cache/fracbench``); ``FRACBENCH_DATA`` overrides where datasets are downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    env = os.environ.get("FRACBENCH_CACHE")
    if env:
        root = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "fracbench"
    root.mkdir(parents=True, exist_ok=True)
    return root


def data_home() -> Path:
    env = os.environ.get("FRACBENCH_DATA")
    root = Path(env) if env else cache_dir() / "data"
    root.mkdir(parents=True, exist_ok=True)
    return root


def default_results_dir() -> Path:
    """results/ of the repository when run from a checkout, else ./results."""
    env = os.environ.get("FRACBENCH_RESULTS")
    if env:
        return Path(env)
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / "results"
    return Path.cwd() / "results"


def adhoc_dir(dataset: str) -> Path:
    """Where `fracbench train` and `fracbench audit` write by default: ``<results>/adhoc/<dataset>/``.

    Not ``<results>/<dataset>/``: the tables, figures and report read ``<results>/<dataset>/runs``,
    so a one-off run there would change the committed leaderboard. The folder carries its own
    ``.gitignore`` so nothing in it is committed by accident; ``--results``/``--out`` still choose any folder.
    """
    root = default_results_dir() / "adhoc"
    root.mkdir(parents=True, exist_ok=True)
    ignore = root / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# ad-hoc `fracbench train` / `fracbench audit` output: never committed\n*\n")
    return root / dataset
