"""``fracbench run``: every experiment x seed on one dataset's one manifest, resumable.

A run whose record exists for the same config, manifest and code version is skipped; a run
killed mid-way resumes from its last finished epoch; an experiment that fails is recorded with
its error and the rest go on. A lock keeps two runs from writing one results folder at once.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fracbench import results as R
from fracbench.experiments import PROFILES, Experiment, load_all
from fracbench.io import atomic_write_json
from fracbench.progress import console, say


class ResultsLocked(RuntimeError):
    """Another fracbench run holds the results folder."""


@contextlib.contextmanager
def results_lock(results: Path) -> Iterator[None]:
    """An exclusive, non-blocking lock on ``results/.lock`` (released when the process ends)."""
    import fcntl

    results.mkdir(parents=True, exist_ok=True)
    path = results / ".lock"
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise ResultsLocked(f"{results}: another `fracbench run` is writing here (lock {path}). Wait for it to "
                            "finish, or use --results with another folder.") from None
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


@dataclass
class Outcome:
    experiment: str
    seed: int
    status: str  # complete | skipped | failed
    record: dict[str, Any] | None
    error: str = ""


def select(names: Sequence[str], run_all: bool) -> list[Experiment]:
    reg = load_all()
    if run_all or not names:
        return [reg.get(n) for n in reg.list()]
    out: list[Experiment] = []
    for pattern in names:
        matched = reg.list(pattern)
        if not matched:
            reg.get(pattern)  # raises with close matches
        out += [reg.get(n) for n in matched if reg.get(n) not in out]
    return out


def is_current(record: dict[str, Any] | None, cfg_dict: dict[str, Any], manifest: str, code: str) -> bool:
    return bool(record) and record.get("status") == "complete" and record.get("config") == cfg_dict \
        and record.get("manifest_sha256") == manifest and record.get("code_version") == code


def run_experiments(experiments: Sequence[Experiment], *, dataset: str | None = None, data_dir: str | None = None,
                    profile: str = "cpu", n_seeds: int | None = None, results: Path | None = None,
                    device: str | None = None, progress: bool = True, split_seed: int = 0) -> list[Outcome]:
    """Run each experiment x seed on one manifest; return what happened to each."""
    from fracbench.data import find_default_dataset, prepare
    from fracbench.data.cache import build_cache
    from fracbench.data.summary import summarize
    from fracbench.paths import default_results_dir
    from fracbench.train import fit

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    if dataset is None and data_dir is None:
        dataset, found = find_default_dataset()
        data_dir = str(found) if found else None
        if dataset == "synthetic":
            say("No dataset given or found: running on the embedded [bold]synthetic[/] radiographs. For real data run "
                "`fracbench data download fracatlas`, or pass --dataset mura --data-dir PATH/TO/MURA-v1.1, or "
                "--dataset imagefolder --data-dir YOUR_FOLDER.")
    elif dataset is None:
        raise ValueError("--data-dir given without --dataset: say which layout it has (fracatlas, mura, imagefolder)")

    # one folder per dataset, so runs on different manifests never overwrite or mix with each other
    results = Path(results or default_results_dir() / dataset)
    outcomes: list[Outcome] = []
    with results_lock(results):
        prepared = prepare(dataset, data_dir, seed=split_seed, progress=progress)
        manifest = prepared.manifest
        manifest.write(results / "manifests" / f"{manifest.dataset}.csv")
        summary = summarize(prepared)
        summary["root"] = "<data-dir>"  # keep committed results free of local paths
        summary["faults"] = [{**f, "path": _relative(f["path"], prepared.dataset.root)} for f in summary["faults"]]
        for g in summary["duplicate_groups"]:
            g["paths"] = [_relative(p, prepared.dataset.root) for p in g["paths"]]
        summary["conflicting_label_groups"] = [g for g in summary["duplicate_groups"] if g["conflicting_labels"]]
        atomic_write_json(results / "data" / f"{manifest.dataset}.json", summary)
        say(f"{manifest.dataset}: {len(manifest.rows)} images, manifest {manifest.fingerprint[:12]}, "
            f"{len(prepared.faults)} faults reported (`fracbench data info {manifest.dataset}`)")
        code = R.code_version()
        caches: dict[int, Any] = {}
        for exp in experiments:
            for seed in exp.seeds_for(profile, n_seeds):
                outcomes.append(_run_one(exp, seed, profile, device, results, manifest, code, caches, progress,
                                         build_cache, fit))
    print_summary(outcomes)
    return outcomes


def _relative(path: str, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return path


def _run_one(exp, seed, profile, device, results, manifest, code, caches, progress, build_cache, fit) -> Outcome:
    out = R.run_dir(results, exp.name, seed)
    try:
        cfg = exp.train_config(profile, seed, device=device)
        existing = R.read_record(out)
    except Exception as exc:  # a bad experiment file or a damaged record: recorded, the rest go on
        return _failed(exp, seed, profile, out, exc)
    if is_current(existing, cfg.to_dict(), manifest.fingerprint, code):
        say(f"[dim]skip {exp.name} seed {seed}: record is current[/]")
        return Outcome(exp.name, seed, "skipped", existing)
    try:
        if cfg.image_size not in caches:
            caches[cfg.image_size] = build_cache(manifest, cfg.image_size, progress=progress)
        from fracbench.train import resumable

        resume = resumable(out, cfg, manifest.fingerprint)
        say(f"[bold]{exp.name}[/] seed {seed} ({profile} profile){' — resuming' if resume else ''}")
        record = fit(cfg, caches[cfg.image_size], out, experiment=exp.name, resume=resume, progress=progress,
                     extra={"profile": profile, "table": exp.table, "title": exp.title,
                            "profile_changes": exp.reduced(profile)})
        return Outcome(exp.name, seed, "complete", record)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        return _failed(exp, seed, profile, out, exc)


def _failed(exp, seed, profile, out, exc) -> Outcome:
    err = f"{type(exc).__name__}: {exc}"
    tb = traceback.format_exc(limit=6)
    console.print(f"[red]{exp.name} seed {seed} failed:[/] {err}")
    R.write_record(out, {"experiment": exp.name, "model": exp.model, "protocol": exp.protocol, "seed": seed,
                         "profile": profile, "status": "failed", "error": err, "traceback": tb,
                         "created": R.now_iso(), "code_version": R.code_version()})
    return Outcome(exp.name, seed, "failed", None, err)


def print_summary(outcomes: Sequence[Outcome]) -> None:
    from rich.table import Table

    t = Table("experiment", "seed", "status", "test AUROC", "sensitivity", "specificity", "accuracy",
              "majority acc.", "train s", title="fracbench run")
    for o in outcomes:
        m = (o.record or {}).get("metrics", {}).get("test", {})

        def f(k: str, m: dict = m) -> str:
            v = m.get(k)
            return "—" if v is None or v != v else f"{v:.3f}"

        t.add_row(o.experiment, str(o.seed), {"failed": f"[red]failed[/] {o.error[:60]}"}.get(o.status, o.status),
                  f("auroc"), f("sensitivity"), f("specificity"), f("accuracy"), f("majority_accuracy"),
                  str((o.record or {}).get("train_seconds", "—")))
    console.print(t)
