"""Fixtures of the benchmark suite (``pytest benchmarks --benchmark-only``; see BENCHMARKS.md).

The default test run never collects this folder (pyproject's ``testpaths`` is ``["tests"]``).
Benchmark files are named ``bench_*.py`` and collected by the hook below; their functions are
``test_*`` as usual.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _benchlib import FRACATLAS_DEV, SIZES, SMOKE, TARGETS

SKIP_TRUNCATED = ("truncated", "decode_warning")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    # a file named on the command line is collected by pytest itself, whatever its name
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_configure(config: pytest.Config) -> None:
    if SMOKE:
        # Smoke mode only checks that the suite runs, often on a busy CI machine: one thread, since
        # OpenMP threads that must share their cores with another job spin and run several times slower.
        import torch

        torch.set_num_threads(1)


def pytest_report_header(config: pytest.Config) -> list[str]:
    mode = ("smoke (synthetic data, tiny sizes, one thread; numbers mean nothing)" if SMOKE
            else "full (FracAtlas dev copy)")
    return [f"fracbench benchmarks: {mode}; targets {'asserted' if TARGETS else 'recorded only'}"]


@pytest.fixture(scope="session", autouse=True)
def bench_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """FRACBENCH_CACHE from the environment, else a temporary folder for the whole run."""
    env = os.environ.get("FRACBENCH_CACHE")
    if env:
        yield Path(env)
    else:
        cache = tmp_path_factory.mktemp("fracbench-cache")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("FRACBENCH_CACHE", str(cache))
            yield cache


@pytest.fixture(scope="session")
def measured() -> dict[Any, Any]:
    """Figures one benchmark leaves for another to compare against (e.g. the tutorial's images/s)."""
    return {}


@dataclass
class BenchData:
    """The prepared dataset, its decode cache at the paper's size, and the rows benchmarks use."""

    source: str  # "fracatlas" or "synthetic"
    manifest: Any  # fracbench.data.manifest.Manifest
    cache: Any  # fracbench.data.cache.DecodedCache at SIZES.image
    rows: np.ndarray  # training rows every pipeline can read cleanly, in a fixed shuffled order
    test_rows: np.ndarray  # test rows, likewise
    workdir: Path
    _caches: dict[tuple[int, int], tuple[Any, np.ndarray]] = field(default_factory=dict)

    def path(self, row: int) -> Path:
        return self.manifest.abspath(self.manifest.rows[int(row)])

    def label(self, row: int) -> int:
        return int(self.manifest.rows[int(row)].label)

    def cache_for(self, size: int, rows: np.ndarray) -> tuple[Any, np.ndarray]:
        """A decode cache holding ``rows`` at ``size`` and the rows to read from it.

        The session cache when the size matches; otherwise a cache of just those rows (a
        sub-manifest), so a 224 px benchmark does not decode the whole dataset again.
        """
        if size == self.cache.size:
            return self.cache, np.asarray(rows)
        key = (size, hash(tuple(int(r) for r in rows)))
        if key not in self._caches:
            from fracbench.data.cache import build_cache
            from fracbench.data.manifest import Manifest

            sub = Manifest(self.manifest.dataset, self.manifest.root, [self.manifest.rows[int(r)] for r in rows])
            self._caches[key] = (build_cache(sub, size, progress=False), np.arange(len(rows)))
        return self._caches[key]


def _prepare() -> tuple[str, Any, list]:
    from fracbench.data import prepare

    if SMOKE:
        from fracbench.data.synthetic import Synthetic, SyntheticSpec

        ds = Synthetic.ensure(SyntheticSpec(count=96, size=128, seed=7))
        p = prepare("synthetic", ds.root, progress=False)
        return "synthetic", p.manifest, p.faults
    root = FRACATLAS_DEV
    if not ((root / "dataset.csv").is_file() and (root / "images" / "Fractured").is_dir()):
        pytest.skip(f"FracAtlas dev copy not found at {root}: the full benchmarks run on it "
                    "(FRACBENCH_BENCH_SMOKE=1 runs the synthetic smoke subset instead)")
    p = prepare("fracatlas", root, progress=False)
    return "fracatlas", p.manifest, p.faults


@pytest.fixture(scope="session")
def bench_data(tmp_path_factory: pytest.TempPathFactory, bench_cache_dir: Path) -> BenchData:
    """Manifest and decode cache (150 px; 64 px in smoke mode), built once for the session.

    The benchmark rows leave out images the decoder read only partly (truncated JPEGs): the
    tutorial's PIL loader stops on those, so no pipeline is timed on them.
    """
    from fracbench.data.cache import build_cache

    source, manifest, faults = _prepare()
    cache = build_cache(manifest, SIZES.image, progress=False)
    partial = {str(Path(f.path).resolve()) for f in faults if f.kind in SKIP_TRUNCATED}

    def clean(split: str) -> np.ndarray:
        rows = [int(i) for i in cache.indices(split) if int(i) not in cache.failed
                and str(manifest.abspath(manifest.rows[int(i)]).resolve()) not in partial]
        return np.random.default_rng(0).permutation(np.asarray(rows, dtype=np.int64))

    rows, test_rows = clean("train"), clean("test")
    if len(rows) < SIZES.batch or len(test_rows) == 0:
        pytest.skip(f"{source}: too few readable images for the benchmarks "
                    f"({len(rows)} train, {len(test_rows)} test)")
    return BenchData(source, manifest, cache, rows, test_rows, tmp_path_factory.mktemp("bench-work"))


@pytest.fixture(scope="session")
def bench_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Untrained paper_cnn and resnet18 checkpoints at the benchmark sizes (latency does not depend on training).

    Laid out as a results folder (runs/<name>/seed0/checkpoints/best.safetensors) so the demo finds them.
    """
    import torch

    from fracbench.models import create_model
    from fracbench.serving.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("bench-results")
    out = {}
    for name, size in (("paper_cnn", SIZES.image), ("resnet18", SIZES.resnet_image)):
        torch.manual_seed(0)
        run = root / "runs" / f"bench_{name}" / "seed0"
        out[name] = save_checkpoint(run / "checkpoints" / "best", create_model(name, image_size=size),
                                    model_name=name, model_kwargs={}, image_size=size, channels=3, threshold=0.5,
                                    extra={"experiment": f"bench_{name}"})
    out["_results"] = root
    return out
