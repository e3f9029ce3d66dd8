"""Shared test fixtures: a private fracbench cache, and the location of the FracAtlas dev copy."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

REPO_ROOT = Path(__file__).resolve().parents[1]
# CI clones the repository with ../shared beside it; never copy the data into the repository
FRACATLAS_DEV = REPO_ROOT / ".." / "shared" / "data" / "fracatlas"


# Hypothesis profiles: "default" for CI-sized property tests; "longfuzz" raises every @given test that
# does not fix its own max_examples to 10,000 (select it with HYPOTHESIS_PROFILE=longfuzz). The
# 10,000-example fuzz tests in tests/test_fuzz.py are marked `longfuzz` and run with `pytest -m longfuzz`.
settings.register_profile("longfuzz", max_examples=10_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect `longfuzz` tests unless the -m expression names them (`pytest -m longfuzz`)."""
    if "longfuzz" in (config.getoption("markexpr", "") or ""):
        return
    keep = [item for item in items if item.get_closest_marker("longfuzz") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("longfuzz")])
        items[:] = keep


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point FRACBENCH_CACHE at a temporary folder for the whole run: no test writes to ~/.cache.

    Session-wide so module-scoped fixtures (built before any function-scoped one) use it too.
    """
    cache = tmp_path_factory.mktemp("fracbench-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRACBENCH_CACHE", str(cache))
        yield cache


@pytest.fixture
def fresh_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A FRACBENCH_CACHE of this test's own, for tests that count decodes or cache hits."""
    cache = tmp_path_factory.mktemp("fracbench-cache-fn")
    monkeypatch.setenv("FRACBENCH_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def fracatlas_root() -> Path:
    """The read-only FracAtlas dev copy at ../shared/data/fracatlas (skips the test when absent)."""
    root = FRACATLAS_DEV.resolve()
    if not ((root / "dataset.csv").is_file() and (root / "images" / "Fractured").is_dir()):
        pytest.skip(f"FracAtlas dev copy not found at {root}: real-data test skipped")
    return root


def die_after_saves(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Make training raise KeyboardInterrupt right after its ``n``-th resume state (last.pt) is written."""
    import fracbench.training.train as T

    real_save = T._save_last
    calls = {"n": 0}

    def dying_save(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt  # killed right after that epoch was saved

    monkeypatch.setattr(T, "_save_last", dying_save)
