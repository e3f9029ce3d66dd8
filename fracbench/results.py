"""Run records: the versioned schema, where they live, atomic writing, and finding them again.

One record per (experiment, seed) in ``results/runs/<experiment>/seed<k>/``:
record.json, epochs.jsonl, predictions.csv and config.yaml. Only this module, the tables, the
figures, the report and the checkpoint module write files.
"""

from __future__ import annotations

import csv
import datetime as _dt
import functools
import hashlib
import io
import json
import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fracbench.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from fracbench.paths import REPO_ROOT

SCHEMA_VERSION = 1
RECORD = "record.json"
EPOCHS = "epochs.jsonl"
PREDICTIONS = "predictions.csv"
CONFIG = "config.yaml"


def run_dir(results: str | Path, experiment: str, seed: int) -> Path:
    return Path(results) / "runs" / experiment / f"seed{seed}"


# what decides a result: the package and the experiment definitions (results/ and docs do not)
_RESULT_PATHS = ("fracbench", "baselines")


def git_state(repo_root: str | Path | None = None) -> dict[str, Any]:
    """The checkout's commit, whether the code or experiments differ from it, and a hash of that diff.

    A record made on a dirty tree still says exactly what ran: ``git_diff_sha256`` is the SHA-256 of
    ``git diff HEAD`` over fracbench/ and baselines/ (untracked files there are listed in the diff too).
    Without ``repo_root`` this is fracbench's own checkout, computed once per process (a run does not
    change its code); with one, that repository, computed afresh.
    """
    return _own_git_state() if repo_root is None else _git_state(Path(repo_root))


@functools.lru_cache(maxsize=1)
def _own_git_state() -> dict[str, Any]:
    return _git_state(REPO_ROOT)


def _git_state(root: Path) -> dict[str, Any]:
    import hashlib

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10,
                              check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        diff = git("diff", "HEAD", "--", *_RESULT_PATHS)
        untracked_names = git("ls-files", "--others", "--exclude-standard", "--", *_RESULT_PATHS)
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": False, "git_diff_sha256": None}
    # an untracked file's content decides a result as much as a tracked one's: hash it, not just its name
    untracked = "".join(f"{name}\n{hashlib.sha256((root / name).read_bytes()).hexdigest()}\n"
                        for name in untracked_names.splitlines() if (root / name).is_file())
    dirty = bool(diff.strip() or untracked_names.strip())
    digest = hashlib.sha256((diff + "\n--untracked--\n" + untracked).encode()).hexdigest() if dirty else None
    return {"git_commit": commit, "git_dirty": dirty, "git_diff_sha256": digest}


def git_commit() -> tuple[str, bool]:
    """The checkout's commit and whether it has uncommitted changes ("unknown" outside git)."""
    st = git_state()
    return st["git_commit"], st["git_dirty"]


# the modules whose code changes a training result; the demo, tables or report do not
TRAINING_SOURCES = ("training/train.py", "models/*.py", "metrics.py", "training/protocols.py", "config.py",
                    "serving/checkpoint.py", "data/*.py", "copies/*.py", "claims/leak.py", "claims/inflation.py",
                    "claims/summary.py")  # data/*.py holds loader.py; claims/summary.py was data/summary.py


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """fracbench's version plus a hash of its source: what decides whether a record is still current.

    A content hash rather than the git commit, so committing results does not make them stale;
    the commit is recorded beside it.
    """
    import hashlib

    from fracbench import __version__

    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parent
    for path in sorted(p for pattern in TRAINING_SOURCES for p in pkg.glob(pattern)):
        h.update(path.relative_to(pkg).as_posix().encode())
        h.update(path.read_bytes())
    return f"{__version__}+src.{h.hexdigest()[:12]}"


def environment(device: str = "cpu") -> dict[str, Any]:
    import torch

    name = platform.processor() or platform.machine()
    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return {
        **git_state(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def write_record(directory: Path, record: dict[str, Any]) -> Path:
    record = {"schema_version": SCHEMA_VERSION, **record}
    return atomic_write_json(Path(directory) / RECORD, record)


def write_predictions(directory: Path, rows: Iterable[Sequence[Any]]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "split", "label", "score"])
    for r in rows:
        # full precision (repr round-trips a float exactly): metrics and ROC curves recompute from this file
        w.writerow([r[0], r[1], int(r[2]), repr(float(r[3]))])
    return atomic_write_bytes(Path(directory) / PREDICTIONS, buf.getvalue().encode())


def write_epochs(directory: Path, epochs: list[dict[str, Any]]) -> Path:
    text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in epochs)
    return atomic_write_text(Path(directory) / EPOCHS, text)


def write_config(directory: Path, config_yaml: str) -> Path:
    return atomic_write_text(Path(directory) / CONFIG, config_yaml)


def read_record(directory: Path) -> dict[str, Any] | None:
    p = Path(directory) / RECORD
    try:
        rec = json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ValueError(f"{p}: damaged record ({exc}); delete it and rerun that experiment") from exc
    if rec.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{p}: schema version {rec.get('schema_version')}, this fracbench reads {SCHEMA_VERSION}")
    return rec


def read_epochs(directory: Path) -> list[dict[str, Any]]:
    p = Path(directory) / EPOCHS
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def read_predictions(directory: Path) -> list[dict[str, Any]]:
    p = Path(directory) / PREDICTIONS
    with p.open(newline="") as fh:
        return [{"id": r["id"], "split": r["split"], "label": int(r["label"]), "score": float(r["score"])}
                for r in csv.DictReader(fh)]


def find_records(results: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every record under results/runs, sorted by experiment then seed."""
    out = []
    for p in sorted(Path(results).glob("runs/*/seed*/" + RECORD)):
        rec = read_record(p.parent)
        if rec is not None:
            out.append((p.parent, rec))
    return sorted(out, key=lambda t: (t[1].get("experiment", ""), t[1].get("seed", 0)))


def manifest_rows(run: str | Path, sha256: str | None) -> list[dict[str, str]] | None:
    """The rows of a record's manifest: the CSV under ``<results>/manifests/`` whose sha256 is the record's
    ``manifest_sha256`` (``run`` is the record's folder, ``<results>/runs/<experiment>/seed<k>``); None when
    it is not there."""
    folder = Path(run).parent.parent.parent / "manifests"
    for path in sorted(folder.glob("*.csv")) if sha256 and folder.is_dir() else []:
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() == sha256:
            return list(csv.DictReader(data.decode("utf-8").splitlines()))
    return None


def prediction_groups(run: str | Path, record: dict[str, Any], split: str = "test") -> list[str] | None:
    """The manifest's duplicate group of each ``split`` row of the record's predictions.csv, in file order
    (the unit the cluster bootstrap resamples); None when the manifest or a row of it is missing."""
    rows = manifest_rows(run, record.get("manifest_sha256"))
    if rows is None or not (Path(run) / PREDICTIONS).exists():
        return None
    group = {r["id"]: r["group"] for r in rows}
    ids = [p["id"] for p in read_predictions(Path(run)) if p["split"] == split]
    if any(i not in group for i in ids):
        return None
    return [group[i] for i in ids]
