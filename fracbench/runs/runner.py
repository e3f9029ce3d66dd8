"""``fracbench run``: every experiment x seed on one dataset's one manifest, resumable.

A run whose record exists for the same config, manifest and code version is skipped; a run
killed mid-way resumes from its last finished epoch; an experiment that fails is recorded with
its error and the rest go on. A lock keeps two runs from writing one results folder at once.

How one experiment x seed runs depends on the experiment's ``kind``: ``EXPERIMENT_KINDS`` maps
each kind to a runner function ``(RunContext, Experiment, seed) -> list[Outcome]``. "train" fits
once on the run's manifest; "leak_demo" builds rotated copies and fits on two splits of them under
both protocols; "protocol_inflation" fits once and measures what each tutorial habit adds.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fracbench import results as R
from fracbench.claims.subgroups import subgroups_path, write_subgroups
from fracbench.io import atomic_write_json
from fracbench.progress import console, say
from fracbench.registry import Registry
from fracbench.training.experiments import PROFILES, Experiment, load_all


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


def suite(experiments: Sequence[Experiment], dataset: str) -> list[Experiment]:
    """What ``run --all`` runs on ``dataset``: the experiments made for it, else those made for no dataset."""
    own = [e for e in experiments if dataset in e.datasets]
    return own or [e for e in experiments if not e.datasets]


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
                    device: str | None = None, progress: bool = True, split_seed: int = 0,
                    run_all: bool = False, external_data: dict[str, str] | None = None,
                    precision: str = "fp32", launch: Any = None) -> list[Outcome]:
    """Run each experiment x seed on one dataset; return what happened to each.

    ``run_all`` narrows ``experiments`` to the dataset's suite (``suite``); experiments named one
    by one that are made for other datasets are refused. ``external_data`` maps a dataset name to
    its folder for experiments that test on a second dataset (default: the data home).
    Experiments whose configs differ only in ``protocol`` are trained once (``shared_groups``).
    ``launch`` (a ``fracbench.app.launch.LaunchOptions``) with launcher "submitit" runs each trajectory
    (experiment or protocol twins x seed) as its own job; default: one after another in this process.
    """
    from fracbench.claims.summary import summarize
    from fracbench.config import PRECISIONS
    from fracbench.paths import default_results_dir
    from fracbench.runs.jobs import prepare_locked

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    dataset, data_dir = _resolve_dataset(dataset, data_dir)

    if run_all:
        experiments = suite(experiments, dataset)
    wrong = [e.name for e in experiments if not e.applies_to(dataset)]
    if wrong:
        raise ValueError(f"{', '.join(wrong)}: made for {', '.join(sorted({d for e in experiments for d in e.datasets}))}, "
                         f"not {dataset}; pass --dataset accordingly")
    # one folder per dataset, so runs on different manifests never overwrite or mix with each other
    results = Path(results or default_results_dir() / dataset)
    outcomes: list[Outcome] = []
    with results_lock(results):
        prepared = prepare_locked(dataset, data_dir, seed=split_seed, progress=progress)
        manifest = prepared.manifest = settled_manifest(prepared, results / "manifests" / f"{dataset}.csv",
                                                        prepared.manifest)
        manifest.write(results / "manifests" / f"{manifest.dataset}.csv")
        summary = summarize(prepared)
        summary["root"] = "<data-dir>"  # keep committed results free of local paths
        summary["faults"] = [{**f, "path": _relative(f["path"], prepared.dataset.root)} for f in summary["faults"]]
        for g in summary["duplicate_groups"]:
            g["paths"] = [_relative(p, prepared.dataset.root) for p in g["paths"]]
        summary["conflicting_label_groups"] = [g for g in summary["duplicate_groups"] if g["conflicting_labels"]]
        atomic_write_json(results / "data" / f"{manifest.dataset}.json", summary)
        if attrs := prepared.dataset.subgroups():  # for the subgroup tables (fracbench.claims.tables.subgroups)
            write_subgroups(subgroups_path(results, manifest.dataset), attrs)
        say(f"{manifest.dataset}: {len(manifest.rows)} images, manifest {manifest.fingerprint[:12]}, "
            f"{len(prepared.faults)} faults reported (`fracbench data info {manifest.dataset}`)")
        ctx = RunContext(prepared, manifest, profile, device, results, R.code_version(), progress,
                         precision=precision, external_data=dict(external_data or {}), split_seed=split_seed)
        groups = shared_groups(run_order(experiments), profile, n_seeds, ctx.overrides())
        units = [(group, seed) for group in groups for seed in group[0].seeds_for(profile, n_seeds)]
        if launch is not None and launch.launcher != "local":
            run_jobs = EXECUTORS.get(launch.launcher)  # registered by fracbench.app.launch (imported by the CLI)
            outcomes = run_jobs(ctx, units, launch, dataset=dataset, data_dir=data_dir, n_seeds=n_seeds)
        else:
            with _eta(ctx, groups, n_seeds) as advance:
                for group, seed in units:
                    outcomes += run_unit(ctx, group, seed)
                    advance(group, seed)
    print_summary(outcomes)
    return outcomes


def run_order(experiments: Sequence[Experiment]) -> list[Experiment]:
    """The experiments in the order they run: external tests last, since one may score another's finished
    fit of the same config instead of training (``run_external``); otherwise as given."""
    return sorted(experiments, key=lambda e: e.kind == "external")


def run_unit(ctx: RunContext, group: Sequence[Experiment], seed: int) -> list[Outcome]:
    """One trajectory: an experiment x seed, or protocol twins x seed trained once (one record per protocol)."""
    if len(group) > 1:
        return run_shared(ctx, group, seed)
    exp = group[0]
    try:
        run_kind = EXPERIMENT_KINDS.get(exp.kind)
    except KeyError as exc:  # an unknown kind: recorded as a failure, the rest go on
        return [_failed(exp, seed, ctx.profile, R.run_dir(ctx.results, exp.name, seed), exc)]
    return run_kind(ctx, exp, seed)


def _resolve_dataset(dataset: str | None, data_dir: str | None) -> tuple[str, str | None]:
    """The dataset to run on: the one given, else FracAtlas if downloaded, else the synthetic set (said)."""
    from fracbench.data import find_default_dataset

    if dataset is None and data_dir is None:
        dataset, found = find_default_dataset()
        data_dir = str(found) if found else None
        if dataset == "synthetic":
            say("No dataset given or found: running on the embedded [bold]synthetic[/] radiographs. For real data run "
                "`fracbench data download fracatlas`, or pass --dataset mura --data-dir PATH/TO/MURA-v1.1, or "
                "--dataset imagefolder --data-dir YOUR_FOLDER.")
    elif dataset is None:
        raise ValueError("--data-dir given without --dataset: say which layout it has (fracatlas, mura, imagefolder)")
    return dataset, data_dir


def plan_run(experiments: Sequence[Experiment], *, dataset: str | None = None, data_dir: str | None = None,
             profile: str = "cpu", n_seeds: int | None = None, device: str | None = None, progress: bool = True,
             split_seed: int = 0, precision: str = "fp32", run_all: bool = False, launch: Any = None) -> list[Any]:
    """``fracbench run --plan``: print each experiment x seed's estimated wall time and the total; train nothing.

    Reads the dataset (to count its splits) and calibrates each model once (cached); writes no record.
    With ``launch`` (launcher "submitit"), also the wall time of the jobs at its max_parallel at a time.
    """
    from fracbench.config import PRECISIONS
    from fracbench.runs.jobs import prepare_locked
    from fracbench.runs.plan import plan, print_plan

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    dataset, data_dir = _resolve_dataset(dataset, data_dir)
    if run_all:
        experiments = suite(experiments, dataset)
    prepared = prepare_locked(dataset, data_dir, seed=split_seed, progress=progress)
    manifest = prepared.manifest
    overrides = {"device": device, **PRECISIONS[precision]}
    rows = plan(shared_groups(run_order(experiments), profile, n_seeds, overrides), manifest, profile, n_seeds, overrides,
                manifest_for=lambda exp: prepared.manifest_for(exp.options_for(profile).get("split"), seed=split_seed))
    print_plan(rows, f"fracbench run --plan: {manifest.dataset}, {len(manifest.rows)} images, {profile} profile, "
                     f"{precision}")
    if launch is not None and launch.launcher == "submitit":
        from fracbench.output import print_result
        from fracbench.runs.jobs import parallel_wall, resolve
        from fracbench.runs.plan import _hms

        opts = resolve(launch, device)
        seconds = [r.seconds for r in rows]
        print_result(f"one job per row: wall time at {opts.max_parallel} jobs in parallel "
                     f"{_hms(parallel_wall(seconds, opts.max_parallel))} (sequential {_hms(sum(seconds))})")
        console.print(f"(each job estimated as if it had this machine's calibrated speed to itself; jobs sharing "
                      f"the CPU cores here ({opts.cpus_per_job} each) run slower than that)")
    return rows


@contextlib.contextmanager
def _eta(ctx: RunContext, groups: Sequence[Sequence[Experiment]], n_seeds: int | None) -> Iterator[Callable]:
    """A rich bar over experiments x seeds, weighted by each one's estimated seconds, with time remaining.

    Each fit's own bars are shown inside it (fracbench.training.train borrows it). Silent without progress.
    """
    from fracbench.progress import is_quiet

    if not ctx.progress or is_quiet():
        yield lambda group, seed: None
        return
    from rich.progress import BarColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    from fracbench.runs.plan import plan
    from fracbench.training import train as T

    try:
        rows = plan(groups, ctx.manifest, ctx.profile, n_seeds, ctx.overrides(), manifest_for=ctx.manifest_for)
        est = {(r.experiments, r.seed): r.seconds for r in rows}
    except Exception as exc:  # no estimate: count runs instead
        say(f"[dim]no time estimate ({type(exc).__name__}: {exc}); counting runs instead[/]")
        est = {}
    total = sum(est.values()) or sum(len(g[0].seeds_for(ctx.profile, n_seeds)) for g in groups)
    with Progress("[progress.description]{task.description}", BarColumn(), "{task.percentage:>3.0f}%",
                  TimeElapsedColumn(), "ETA", TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("experiments x seeds", total=total)

        def advance(group: Sequence[Experiment], seed: int) -> None:
            bar.advance(task, est.get((tuple(e.name for e in group), seed), 0.0 if est else 1.0))

        with T.borrowed_progress(bar):
            yield advance


@dataclass
class RunContext:
    """What every experiment kind's runner gets: the prepared dataset and where and how to run."""

    prepared: Any  # fracbench.data.Prepared
    manifest: Any  # fracbench.data.manifest.Manifest: the run's (shared) manifest
    profile: str
    device: str | None
    results: Path
    code: str  # fracbench.results.code_version() at the start of the run
    progress: bool = True
    memo: dict[Any, Any] = field(default_factory=dict)  # caches and derived data shared across seeds
    precision: str = "fp32"  # a name in fracbench.config.PRECISIONS
    external_data: dict[str, str] = field(default_factory=dict)  # dataset name -> folder, for external tests
    split_seed: int = 0

    def overrides(self) -> dict[str, Any]:
        """What the run changes in every experiment's config: the device and the precision's fields."""
        from fracbench.config import PRECISIONS

        return {"device": self.device, **PRECISIONS[self.precision]}

    def manifest_for(self, exp: Experiment) -> Any:
        """The manifest ``exp`` trains on: the run's, or the split mode its ``options.split`` names (written
        beside the run's manifest as <dataset>-<mode>.csv)."""
        mode = exp.options_for(self.profile).get("split")
        manifest = self.prepared.manifest_for(mode, seed=self.split_seed)  # the run's own when mode is None
        if manifest is not self.manifest and ("written", mode) not in self.memo:
            path = self.results / "manifests" / f"{manifest.dataset}-{mode}.csv"
            manifest = settled_manifest(self.prepared, path, manifest, mode)
            self.prepared._other[(mode, self.split_seed)] = manifest
            manifest.write(path)
            self.memo[("written", mode)] = True
        return manifest

    def cache(self, size: int, manifest: Any = None) -> Any:
        """The decode cache of ``manifest`` (default: the run's) at ``size``, built once per run (and, across
        processes sharing the cache, by one at a time: the others wait, then read it)."""
        from fracbench.data.cache import build_cache

        manifest = manifest or self.manifest
        return self.once(("cache", manifest.fingerprint, size), lambda: build_cache(manifest, size,
                                                                                    progress=self.progress))

    def once(self, key: Any, build: Callable[[], Any]) -> Any:
        """``memo[key]``, built by ``build()`` the first time under a lock on ``key`` shared by every process
        using this cache: jobs running side by side never write the same derived data at once."""
        if key not in self.memo:
            from fracbench.runs.jobs import file_lock, lock_path

            with file_lock(lock_path(*key)):
                self.memo[key] = build()
        return self.memo[key]


def settled_manifest(prepared: Any, path: Path, fresh: Any, mode: str | None = None) -> Any:
    """The manifest a run trains on, once the split verifier has seen it (fracbench.claims.anatomy.check_dealt_split):
    a split fracbench dealt with a copy across train and test stops the run here, before anything is trained,
    with the pairs named. ``path`` is where it will be written."""
    from fracbench.claims.anatomy import check_dealt_split

    check_dealt_split(prepared, fresh, mode)
    return fresh


KindRunner = Callable[[RunContext, Experiment, int], list["Outcome"]]
# launchers other than "local" (one trajectory after another in this process): "submitit" is added by
# fracbench.app.launch, which sits above the runner (it runs run_unit in each job)
EXECUTORS: Registry[Callable[..., list[Any]]] = Registry("launcher")
EXPERIMENT_KINDS: Registry[KindRunner] = Registry("experiment kind")


def _relative(path: str, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return path


@EXPERIMENT_KINDS.register("train")
def run_train(ctx: RunContext, exp: Experiment, seed: int) -> list[Outcome]:
    """One fit of the experiment's config on the run's manifest."""
    return [_run_one(exp, seed, ctx)]


def _run_one(exp: Experiment, seed: int, ctx: RunContext) -> Outcome:
    try:
        cfg = exp.train_config(ctx.profile, seed, **ctx.overrides())
    except Exception as exc:  # a bad experiment file: recorded, the rest go on
        return _failed(exp, seed, ctx.profile, R.run_dir(ctx.results, exp.name, seed), exc)
    manifest = ctx.manifest_for(exp)
    return _fit(ctx, exp, seed, exp.name, cfg, manifest, extra=_split_extra(ctx, exp, manifest))


def _split_extra(ctx: RunContext, exp: Experiment, manifest: Any) -> dict[str, Any]:
    """What a record of an experiment on a named split mode carries: its copies across splits (``leak``)."""
    split = exp.options_for(ctx.profile).get("split")
    if not split:
        return {}
    from fracbench.claims.anatomy import leak_info

    key = ("leak_info", manifest.fingerprint)
    if key not in ctx.memo:
        ctx.memo[key] = leak_info(ctx.prepared, manifest, split=split)
    return {"leak": ctx.memo[key]}


def _done(ctx: RunContext, exp: Experiment, seed: int, name: str, cfg: Any, manifest: Any, out: Path,
          current: Callable[[dict[str, Any]], bool] | None = None) -> Outcome | None:
    """The outcome of a run that need not run: "skipped" when its record in ``out`` is current (same config,
    manifest and code, and ``current(record)`` where given), "failed" when that record is damaged; else None."""
    try:
        existing = R.read_record(out)
    except Exception as exc:  # a damaged record: recorded, the rest go on
        return _failed(exp, seed, ctx.profile, out, exc, name)
    if is_current(existing, cfg.to_dict(), manifest.fingerprint, ctx.code) and (current is None or current(existing)):
        say(f"[dim]skip {name} seed {seed}: record is current[/]")
        return Outcome(name, seed, "skipped", existing)
    return None


def _fit(ctx: RunContext, exp: Experiment, seed: int, name: str, cfg: Any, manifest: Any,
         extra: dict[str, Any] | None = None, on_epoch: Callable[[Any], Any] | None = None,
         current: Callable[[dict[str, Any]], bool] | None = None) -> Outcome:
    """Fit ``cfg`` on ``manifest`` into results/runs/<name>/seed<k>/: skipped when current, resumed when
    interrupted, recorded as failed on an error. ``on_epoch(cache)`` makes fit's per-epoch hook;
    ``current(record)`` adds a condition for a record to count as current."""
    from fracbench.training.train import fit, resumable

    out = R.run_dir(ctx.results, name, seed)
    done = _done(ctx, exp, seed, name, cfg, manifest, out, current)
    if done is not None:
        return done
    try:
        cache = ctx.cache(cfg.image_size, manifest)
        resume = resumable(out, cfg, manifest.fingerprint)
        say(f"[bold]{name}[/] seed {seed} ({ctx.profile} profile){' — resuming' if resume else ''}")
        record = fit(cfg, cache, out, experiment=name, resume=resume, progress=ctx.progress,
                     extra={"profile": ctx.profile, "table": exp.table, "title": exp.title,
                            "profile_changes": exp.reduced(ctx.profile), **({"kind": exp.kind, "parent": exp.name}
                                                                            if exp.kind != "train" else {}),
                            **(extra or {})},
                     **({"on_epoch": on_epoch(cache)} if on_epoch else {}))
        return Outcome(name, seed, "complete", record)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        return _failed(exp, seed, ctx.profile, out, exc, name)


@EXPERIMENT_KINDS.register("external")
def run_external(ctx: RunContext, exp: Experiment, seed: int) -> list[Outcome]:
    """Train on the run's dataset (``options.split``) and test on another dataset's test split.

    Options: ``external`` (the dataset tested on, e.g. fracatlas; its folder from --external-data-dir
    or the data home) and ``split``. The external test images that also occur in the training
    dataset (any split; by content) are left out and counted in ``record["external"]``.
    """
    from fracbench.claims import anatomy

    opts = exp.options_for(ctx.profile)
    out = R.run_dir(ctx.results, exp.name, seed)
    try:
        cfg = exp.train_config(ctx.profile, seed, **ctx.overrides())
        name = str(opts["external"])
        key = ("external", name, opts.get("split"))
        if key not in ctx.memo:
            from fracbench.runs.jobs import prepare_locked as prepare

            try:
                ext = prepare(name, ctx.external_data.get(name), seed=ctx.split_seed, progress=ctx.progress)
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"{exc} (the external test set of {exp.name}; pass "
                                        f"--external-data-dir {name}=PATH)") from None
            combined, info = anatomy.external_manifest(ctx.manifest_for(exp), ext, ctx.prepared)
            # beside the others, so the record's manifest (and its copy groups, for the CIs) can be found by its sha
            combined.write(ctx.results / "manifests" / f"{ctx.manifest.dataset}-external-{name}.csv")
            leak = {"split": "external", "split_title": anatomy.SPLIT_TITLES["external"],
                    "test_images": sum(r.split == "test" for r in combined.rows),
                    "test_exact_in_train": 0, "test_exact_in_train_share": 0.0,
                    "test_near_in_train": 0, "test_near_in_train_share": 0.0,
                    "note": "test images that also occur in the training dataset were left out (record['external'])"}
            ctx.memo[key] = (combined, info, leak)
        combined, info, leak = ctx.memo[key]
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        return [_failed(exp, seed, ctx.profile, out, exc)]
    extra = {"external": info, "leak": leak}
    source = _finished_fit(ctx, cfg, ctx.manifest_for(exp), seed)
    if source is not None:
        scored = _score_fit(ctx, exp, seed, cfg, combined, source, extra)
        if scored is not None:
            return [scored]
    return [_fit(ctx, exp, seed, exp.name, cfg, combined, extra=extra)]


def _finished_fit(ctx: RunContext, cfg: Any, manifest: Any, seed: int) -> Path | None:
    """A run folder of this results folder holding a finished fit of ``cfg`` on ``manifest`` (same config,
    seed and manifest) with its checkpoint, e.g. the grouped split's honest run for the external test."""
    for rec_path in sorted((ctx.results / "runs").glob(f"*/seed{seed}/{R.RECORD}")):
        try:
            rec = R.read_record(rec_path.parent)
        except Exception:  # a damaged record is reported where it belongs, not here
            continue
        if (rec and rec.get("status") == "complete" and rec.get("manifest_sha256") == manifest.fingerprint
                and rec.get("config") == cfg.to_dict() and "trained_by" not in rec
                and (rec_path.parent / "checkpoints" / "best.safetensors").exists()):
            return rec_path.parent
    return None


def _score_fit(ctx: RunContext, exp: Experiment, seed: int, cfg: Any, manifest: Any, source: Path,
               extra: dict[str, Any]) -> Outcome | None:
    """``exp``'s record from the finished fit in ``source``, scored on ``manifest``'s test set (no training);
    None, having said why, when that fit cannot stand in for one of ``exp`` (then it is trained)."""
    from fracbench.training.train import RunSpec, score_fit

    out = R.run_dir(ctx.results, exp.name, seed)
    done = _done(ctx, exp, seed, exp.name, cfg, manifest, out)
    if done is not None:
        return done
    try:
        cache = ctx.cache(cfg.image_size, manifest)
        say(f"[bold]{exp.name}[/] seed {seed} ({ctx.profile} profile): scoring the fit of {source.parent.name} "
            f"(same config, training and validation images) on its test set; no training")
        spec = RunSpec(cfg, out, exp.name, {**_record_extra(ctx, exp), "kind": exp.kind, "parent": exp.name,
                                            **extra})
        return Outcome(exp.name, seed, "complete", score_fit(spec, cache, source, ctx.manifest_for(exp)))
    except ValueError as exc:
        say(f"[yellow]{exp.name} seed {seed}: cannot score {source.parent.name}'s fit ({exc}); training it[/]")
        return None
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        return _failed(exp, seed, ctx.profile, out, exc)


@EXPERIMENT_KINDS.register("leak_demo")
def run_leak_demo(ctx: RunContext, exp: Experiment, seed: int) -> list[Outcome]:
    """Rotated/flipped copies of the run's images, split (a) at image level and (b) by source; 4 fits.

    Options: ``copies`` (transform names, default identity, rot90, hflip, rot270), ``sources``
    (how many source images, 0 = all), ``balance`` (draw the sources half fractured, half not) and
    ``split_seed``. Records go to results/runs/<experiment>__<split>_<protocol>/seed<k>/.
    """
    from fracbench.claims import leak as L

    opts = exp.options_for(ctx.profile)
    try:
        base = exp.train_config(ctx.profile, seed, **ctx.overrides())
        key = ("leak", exp.name, base.image_size, repr(sorted(opts.items())))
        def build() -> Any:
            cache = ctx.cache(base.image_size)
            say(f"[bold]{exp.name}[/]: writing {len(opts.get('copies', L.DEFAULT_COPIES))} copies of each source image")
            return L.build_leak_set(
                ctx.manifest, cache.array, size=base.image_size, copies=opts.get("copies", L.DEFAULT_COPIES),
                sources=int(opts.get("sources", 0)), balance=bool(opts.get("balance", False)),
                seed=int(opts.get("split_seed", 0)), exclude=set(cache.failed))

        leak_set = ctx.once(key, build)  # jobs side by side: one writes the copies, the others wait
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        return [_failed(exp, seed, ctx.profile, R.run_dir(ctx.results, L.variant_name(exp.name, v), seed), exc,
                        L.variant_name(exp.name, v)) for v in L.VARIANTS]
    outcomes = []
    for variant, (split, protocol) in L.VARIANTS.items():
        manifest = leak_set.manifest(split)
        # beside the run's own manifest, so the records' group-bootstrap intervals recompute from committed files
        manifest.write(ctx.results / "manifests" / f"{manifest.dataset}-{split}.csv")
        info = {"variant": variant, "split": split, "split_title": L.SPLIT_TITLES[split],
                "copies": list(leak_set.copies), "source_images": leak_set.sources,
                "source_dataset": ctx.manifest.dataset, "source_manifest": ctx.manifest.fingerprint,
                **L.leak_stats(manifest)}
        outcomes.append(_fit(ctx, exp, seed, L.variant_name(exp.name, variant), base.replace(protocol=protocol),
                             manifest, extra={"leak": info}))
    return outcomes


@EXPERIMENT_KINDS.register("protocol_inflation")
def run_protocol_inflation(ctx: RunContext, exp: Experiment, seed: int) -> list[Outcome]:
    """One honest fit that also logs flipped test accuracy per epoch; then the three protocol effects.

    Options: ``png_share`` (share of the mixed folder's test images stored as PNG, default 1/3).
    The effects are added to the seed's record under ``protocol_effects``.
    """
    from fracbench.claims import inflation as I

    opts = exp.options_for(ctx.profile)
    out = R.run_dir(ctx.results, exp.name, seed)
    try:
        # per-epoch test metrics are what the effects are read from: always logged (they choose nothing)
        cfg = exp.train_config(ctx.profile, seed, **ctx.overrides()).replace(protocol="honest",
                                                                             log_test_each_epoch=True)
    except Exception as exc:
        return [_failed(exp, seed, ctx.profile, out, exc)]
    png_share = float(opts.get("png_share", 1 / 3))

    def hook(cache):
        return I.epoch_flip_logger(cache, cache.indices("test"), max(cfg.batch_size, 64), cfg.channels, seed,
                                   amp=cfg.amp, channels_last=cfg.channels_last)

    outcome = _fit(ctx, exp, seed, exp.name, cfg, ctx.manifest, on_epoch=hook,
                   current=lambda rec: rec.get("protocol_effects", {}).get("png_share") == png_share)
    if outcome.status != "complete":
        return [outcome]
    try:
        key = ("jpgmix", ctx.manifest.fingerprint, png_share)
        tree = ctx.once(key, lambda: I.build_mixed_tree(ctx.manifest, png_share))
        mixed = I.score_mixed_tree(out, tree, cfg.image_size, device=cfg.device, progress=ctx.progress)
        record = dict(outcome.record or {})
        effects = I.protocol_effects(R.read_epochs(out), int(record["selected_epoch"]), mixed)
        record["protocol_effects"] = {**effects, "png_share": png_share}
        record.pop("schema_version", None)
        R.write_record(out, record)
        return [Outcome(exp.name, seed, "complete", record)]
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        return [_failed(exp, seed, ctx.profile, out, exc)]


# Experiment fields that describe or label an experiment without changing how it trains; the resolved
# config (which folds in ``config`` and ``profiles``) is compared instead of those two.
_DESCRIPTIVE = frozenset({"name", "title", "protocol", "citation", "table", "notes", "paper", "path", "config",
                          "profiles"})


def _trajectory_key(exp: Experiment, profile: str, n_seeds: int | None, overrides: dict[str, Any]) -> str | None:
    """What must be equal for two experiments to share one training trajectory; None = never shares.

    Only "train" experiments share. Every other Experiment field (kind, dataset, options, and any
    field added later, e.g. one choosing a manifest) must be equal, as must the seeds and the resolved
    config apart from its protocol.
    """
    import dataclasses
    import json

    if exp.kind != "train":
        return None
    try:
        cfg = exp.train_config(profile, 0, **overrides).to_dict()
    except Exception:  # a bad experiment file: it runs alone and is recorded as failed there
        return None
    cfg.pop("protocol")
    rest = {f.name: getattr(exp, f.name) for f in dataclasses.fields(exp) if f.name not in _DESCRIPTIVE}
    return json.dumps([cfg, rest, list(exp.seeds_for(profile, n_seeds))], sort_keys=True, default=repr)


def shared_groups(experiments: Sequence[Experiment], profile: str, n_seeds: int | None = None,
                  overrides: dict[str, Any] | None = None) -> list[list[Experiment]]:
    """The experiments in run order, those that train identically (configs differing only in protocol,
    one of each protocol) grouped; a group stands where its first member stood."""
    groups: list[list[Experiment]] = []
    open_groups: dict[str, list[Experiment]] = {}
    for exp in experiments:
        key = _trajectory_key(exp, profile, n_seeds, overrides or {})
        group = open_groups.get(key) if key is not None else None
        if group is not None and all(e.protocol != exp.protocol for e in group):
            group.append(exp)
            continue
        groups.append([exp])
        if key is not None:
            open_groups[key] = groups[-1]
    return groups


def run_shared(ctx: RunContext, exps: Sequence[Experiment], seed: int) -> list[Outcome]:
    """Train ``exps`` (one per protocol, same config otherwise) once; write each one's record.

    Records that are already current are skipped; when only one experiment still needs a run it
    runs alone, as ``run_train`` would.
    """
    from fracbench.training.train import RunSpec, fit_shared, resumable

    try:
        cfgs = [e.train_config(ctx.profile, seed, **ctx.overrides()) for e in exps]
        outs = [R.run_dir(ctx.results, e.name, seed) for e in exps]
        existing = [R.read_record(o) for o in outs]
    except Exception:  # a bad experiment or a damaged record: each alone, where it is recorded
        return [o for e in exps for o in run_train(ctx, e, seed)]
    manifest = ctx.manifest_for(exps[0])  # shared_groups pairs only experiments with the same options
    todo = [i for i, rec in enumerate(existing) if not is_current(rec, cfgs[i].to_dict(), manifest.fingerprint,
                                                                  ctx.code)]
    for i in (i for i in range(len(exps)) if i not in todo):
        say(f"[dim]skip {exps[i].name} seed {seed}: record is current[/]")
    if len(todo) < 2:
        outcomes = {i: Outcome(exps[i].name, seed, "skipped", existing[i]) for i in range(len(exps)) if i not in todo}
        outcomes.update({i: run_train(ctx, exps[i], seed)[0] for i in todo})
        return [outcomes[i] for i in range(len(exps))]
    try:
        cache = ctx.cache(cfgs[0].image_size, manifest)
        resume = resumable(outs[0], cfgs, manifest.fingerprint)
        say(f"[bold]{' + '.join(e.name for e in exps)}[/] seed {seed} ({ctx.profile} profile, one shared "
            f"trajectory){' — resuming' if resume else ''}")
        specs = [RunSpec(c, o, e.name, {**_record_extra(ctx, e), **_split_extra(ctx, e, manifest)})
                 for c, o, e in zip(cfgs, outs, exps)]
        records = fit_shared(specs, cache, resume=resume, progress=ctx.progress)
        return [Outcome(e.name, seed, "complete", r) for e, r in zip(exps, records)]
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        return [_failed(e, seed, ctx.profile, o, exc) for e, o in zip(exps, outs)]


def _record_extra(ctx: RunContext, exp: Experiment) -> dict[str, Any]:
    """The fields a "train" experiment's record carries beyond what fit writes (as ``_fit`` adds them)."""
    return {"profile": ctx.profile, "table": exp.table, "title": exp.title, "profile_changes": exp.reduced(ctx.profile)}


def _failed(exp, seed, profile, out, exc, name: str | None = None) -> Outcome:
    name = name or exp.name
    err = f"{type(exc).__name__}: {exc}"
    tb = traceback.format_exc(limit=6)
    console.print(f"[red]{name} seed {seed} failed:[/] {err}")
    R.write_record(out, {"experiment": name, "model": exp.model, "protocol": exp.protocol, "seed": seed,
                         "profile": profile, "status": "failed", "error": err, "traceback": tb,
                         "created": R.now_iso(), "code_version": R.code_version()})
    return Outcome(name, seed, "failed", None, err)


def print_summary(outcomes: Sequence[Outcome]) -> None:
    """The run's results on stdout, one row per experiment x seed, full experiment names (see fracbench.output)."""
    from rich.text import Text

    from fracbench.output import print_table

    rows = []
    for o in outcomes:
        m = (o.record or {}).get("metrics", {}).get("test", {})

        def f(k: str, m: dict = m) -> str:
            v = m.get(k)
            return "—" if v is None or v != v else f"{v:.3f}"

        first_line = (o.error.strip().splitlines() or [""])[0][:200]  # "Type: message"; one row, one line
        status = Text.assemble(("failed", "red"), f" {first_line}") if o.status == "failed" else o.status
        rows.append([o.experiment, str(o.seed), status, f("auroc"), f("sensitivity"), f("specificity"),
                     f("accuracy"), f("majority_accuracy"), str((o.record or {}).get("train_seconds", "—"))])
    print_table(["experiment", "seed", "status", "test AUROC", "sensitivity", "specificity", "accuracy",
                 "majority acc.", "train s"], rows, title="fracbench run")
