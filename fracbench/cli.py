"""The ``fracbench`` command: argparse subcommands; ``main(argv=None)`` runs in-process for tests.

Heavy imports (torch, gradio, matplotlib) happen inside the subcommand that needs them, so
``fracbench --help``, ``fracbench list`` and ``fracbench tables`` start fast.

Every command writes what it was asked for (listings, result tables, the paths of files it was
asked to produce, JSON with ``--json``) to stdout and progress, status lines, warnings and errors
to stderr; tables are TSV when stdout is not a terminal (see fracbench.output).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from fracbench.output import print_json, print_result, print_table, stdout_console
from fracbench.progress import console, set_quiet

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Handler]] = []


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]) -> Callable[[Handler], Handler]:
    """Register a subcommand: its name, one-line help, an argument configurator and a handler."""

    def deco(fn: Handler) -> Handler:
        _COMMANDS.append((name, help, configure, fn))
        return fn

    return deco


def common() -> argparse.ArgumentParser:
    """Options every (sub)command accepts, wherever they are written on the line."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress display")
    return parent


def _data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    if required:
        p.add_argument("dataset", help="dataset name (see `fracbench data list`)")
    p.add_argument("--data-dir", help="dataset folder (default: the download location)")
    p.add_argument("--manifest", help="use this manifest CSV instead of computing the split")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/test split")


# ---------------------------------------------------------------- data
def _configure_data(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", required=True)
    lst = sub.add_parser("list", help="registered datasets", parents=[common()])
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info = sub.add_parser("info", help="counts per split, label and body part, and every fault found",
                          parents=[common()])
    _data_args(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of tables")
    split = sub.add_parser("split", help="write the train/val/test manifest", parents=[common()])
    _data_args(split)
    split.add_argument("--out", help="manifest CSV path (default: results/manifests/<dataset>.csv)")
    sg = sub.add_parser("subgroups", help="write per-image subgroups (hardware, body part, view) as CSV",
                        parents=[common()])
    sg.add_argument("dataset", help="dataset name (see `fracbench data list`)")
    sg.add_argument("--data-dir", help="dataset folder (default: the download location)")
    sg.add_argument("--out", help="CSV path (default: results/<dataset>/data/<dataset>-subgroups.csv)")
    dl = sub.add_parser("download", help="download a public dataset into the data home", parents=[common()])
    dl.add_argument("dataset", choices=["fracatlas", "mura"])
    dl.add_argument("--data-dir", help="where to put it (default: FRACBENCH_DATA or the user cache)")


@command("data", "datasets: list, info, split, subgroups, download", _configure_data)
def _data(args: argparse.Namespace) -> int:
    from fracbench.data import DATASETS, prepare

    if args.data_command == "list":
        rows = [{"dataset": name, "description": (DATASETS.get(name).__doc__ or "").strip().splitlines()[0],
                 "license": DATASETS.get(name).license or "-"} for name in DATASETS]
        _print_records(rows, args.json)
        return 0
    if args.data_command == "download":
        if args.dataset == "mura":
            console.print("MURA needs registration: request it at https://stanfordmlgroup.github.io/competitions/mura/ "
                          "then pass --data-dir PATH/TO/MURA-v1.1 to fracbench.")
            return 2
        from pathlib import Path

        from fracbench.data.download import download_fracatlas

        dest = download_fracatlas(Path(args.data_dir) if args.data_dir else None)
        console.print(f"FracAtlas is at {dest} (CC BY 4.0; cite Abedeen et al., Scientific Data 2023).")
        return 0
    if args.data_command == "subgroups":
        return _data_subgroups(args)
    prepared = prepare(args.dataset, args.data_dir, seed=args.split_seed, manifest_path=args.manifest,
                       progress=not args.quiet)
    if args.data_command == "split":
        from fracbench.paths import default_results_dir

        out = args.out or default_results_dir() / "manifests" / f"{prepared.name}.csv"
        prepared.manifest.write(out)
        print_result(f"wrote {out}: {len(prepared.manifest.rows)} images, "
                     f"fingerprint {prepared.manifest.fingerprint[:16]}")
        return 0
    from fracbench.claims.summary import summarize

    summary = summarize(prepared)
    if args.json:
        print_json(summary)
    else:
        _print_summary(summary)
    return 0


def _data_subgroups(args: argparse.Namespace) -> int:
    """Write the dataset's subgroups CSV (reads metadata only, no images); exit 2 when it has none."""
    from fracbench.claims.subgroups import subgroups_path, write_subgroups
    from fracbench.data import open_dataset
    from fracbench.paths import default_results_dir

    ds = open_dataset(args.dataset, args.data_dir)
    groups = ds.subgroups()
    if not groups:
        console.print(f"{ds.name}: its metadata has no subgroups (hardware, body part, view); nothing written.")
        return 2
    out = args.out or subgroups_path(default_results_dir() / ds.name, ds.name)
    write_subgroups(out, groups)
    print_result(f"wrote {out}: {len(groups)} images")
    return 0


def _print_records(rows: list[dict], as_json: bool) -> None:
    """A listing on stdout: JSON (a list of objects) with --json, else a table keyed on its first column."""
    if as_json:
        print_json(rows)
    elif rows:
        print_table(list(rows[0]), [[str(v) for v in r.values()] for r in rows])


def _print_summary(s: dict) -> None:
    from rich.table import Table

    out = stdout_console()
    out.print(f"[bold]{s['dataset']}[/] at {s['root']}: {s['images_found']} images found, "
                  f"{s['images_in_manifest']} in the manifest (fingerprint {s['manifest_fingerprint'][:16]})")
    t = Table("split", "fractured", "not fractured", "total", title="Images per split")
    for split, c in s["splits"].items():
        t.add_row(split, str(c.get("fractured", 0)), str(c.get("not_fractured", 0)), str(sum(c.values())))
    out.print(t)
    t = Table("body part", "fractured", "not fractured", title="Images per body part")
    for part, c in s["body_parts"].items():
        t.add_row(part, str(c.get("fractured", 0)), str(c.get("not_fractured", 0)))
    out.print(t)
    t = Table("fault", "count", title="Faults found (reported, not fatal)")
    t.add_column("example", overflow="fold")
    for kind, n in s["fault_counts"].items():
        ex = next(f for f in s["faults"] if f["kind"] == kind)
        t.add_row(kind, str(n), f"{ex['path']}: {ex['detail']}")
    t.add_row("duplicate groups", str(s["duplicate_group_count"]), f"{s['duplicate_images']} images in them")
    t.add_row("groups with conflicting labels", str(len(s["conflicting_label_groups"])),
              "; ".join(",".join(g["ids"]) for g in s["conflicting_label_groups"][:3]))
    eg = s.get("exact_file_groups")
    if eg:
        t.add_row("byte-identical groups across splits", str(eg["across_splits"]),
                  f"{eg['within_one_split']} more within one split")
    out.print(t)
    t = Table("split mode", "test images", "with an exact copy in train", "with an exact or near copy in train",
              title=f"Copies across splits (this manifest: {s.get('split_mode', '?')})")
    for mode, c in (s.get("split_modes") or {}).items():
        t.add_row(mode, str(c["test_images"]), str(c["test_exact_in_train"]), str(c["test_near_in_train"]))
    out.print(t)
    t = Table("split", "files by suffix", "images", "the tutorial's .jpg count", title="File formats")
    for split, f in (s.get("formats") or {}).items():
        t.add_row(split, ", ".join(f"{k} {v}" for k, v in f["by_suffix"].items()), str(f["images"]),
                  str(f["tutorial_jpg_count"]))
    out.print(t)


# ---------------------------------------------------------------- experiments
def _configure_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="wildcard filter, e.g. 'paper_*'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


@command("list", "registered experiments (baselines/*.yaml)", _configure_list)
def _list(args: argparse.Namespace) -> int:
    from fracbench.training.experiments import load_all

    reg = load_all()
    rows = []
    for name in reg.list(args.pattern):
        e = reg.get(name)
        rows.append({"experiment": name, "model": e.model, "protocol": e.protocol, "paper table": e.table or "-",
                     "seeds": len(e.seeds), "title": e.title})
    _print_records(rows, args.json)
    return 0


def _configure_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="wildcard filter, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


@command("models", "registered models", _configure_models)
def _models(args: argparse.Namespace) -> int:
    from fracbench.models import MODELS

    rows = []
    for name in MODELS.list(args.pattern):
        m = MODELS.get(name)
        rows.append({"model": name, "input px": m.default_size, "Grad-CAM layer": m.cam_layer,
                     "description": m.description})
    _print_records(rows, args.json)
    return 0


def _configure_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", help="experiment names or wildcards (see `fracbench list`)")
    p.add_argument("--all", action="store_true", help="run every registered experiment")
    p.add_argument("--dataset", help="dataset name (default: FracAtlas if downloaded, else synthetic)")
    p.add_argument("--data-dir", help="dataset folder")
    p.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "full"],
                   help="smoke: CI-sized; cpu: every experiment within an hour on 2 cores; full: the paper's epochs")
    p.add_argument("--seeds", type=int, help="run seeds 0..N-1 instead of the experiment's own list")
    p.add_argument("--results", help="results folder (default: results/ of the checkout)")
    p.add_argument("--device", help="cpu, cuda, ... (default: auto)")
    p.add_argument("--no-tables", action="store_true", help="do not regenerate tables at the end")
    p.add_argument("--external-data-dir", action="append", default=[], metavar="DATASET=PATH",
                   help="folder of a dataset that experiments test on externally (e.g. fracatlas=PATH); repeatable")
    p.add_argument("--no-report", action="store_true",
                   help="do not write the HTML report (figures and report.html) at the end")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "channels_last"],
                   help="fp32 (default, for reproduction); bf16 autocast (CUDA and CPU); channels_last memory format")
    p.add_argument("--plan", action="store_true",
                   help="print each experiment x seed's estimated wall time on this machine and the total; train nothing")
    g = p.add_argument_group("jobs", "--launcher submitit: one job per experiment x seed (SLURM when srun is found, "
                             "else side by side on this machine); records and tables as a local run's")
    g.add_argument("--launcher", default="local", choices=["local", "submitit"],
                   help="local (default): one after another in this process; submitit: one job per trajectory")
    g.add_argument("--slurm-partition", help="SLURM partition of the jobs")
    g.add_argument("--gpus-per-job", type=int, help="GPUs per job (default: 1 when CUDA is present, else 0)")
    g.add_argument("--cpus-per-job", type=int, help="CPU cores (torch threads) per job (default: cores / max-parallel "
                   "here, 8 on SLURM)")
    g.add_argument("--timeout-min", type=int, default=24 * 60, help="each job's time limit in minutes (default 1440)")
    g.add_argument("--max-parallel", type=int, help="jobs at a time (default: one per GPU, else cores / 2)")


def _launch_options(args: argparse.Namespace):
    from fracbench.app.launch import LaunchOptions

    return LaunchOptions(args.launcher, partition=args.slurm_partition, gpus_per_job=args.gpus_per_job,
                         cpus_per_job=args.cpus_per_job, timeout_min=args.timeout_min, max_parallel=args.max_parallel)


@command("run", "reproduce: run experiments x seeds on one manifest (resumable)", _configure_run)
def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fracbench.paths import default_results_dir
    from fracbench.runs.runner import run_experiments, select

    if not args.all and not args.names:
        console.print("name experiments to run, or use --all (see `fracbench list`)")
        return 2
    if args.plan:
        from fracbench.runs.runner import plan_run

        plan_run(select(args.names, args.all), dataset=args.dataset, data_dir=args.data_dir, profile=args.profile,
                 n_seeds=args.seeds, device=args.device, progress=not args.quiet, precision=args.precision,
                 run_all=args.all, launch=_launch_options(args))
        return 0
    results = Path(args.results) if args.results else None
    external = {}
    for item in args.external_data_dir:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            console.print(f"--external-data-dir {item!r}: expected DATASET=PATH, e.g. fracatlas=~/data/fracatlas")
            return 2
        external[name] = path
    outcomes = run_experiments(select(args.names, args.all), dataset=args.dataset, data_dir=args.data_dir,
                               profile=args.profile, n_seeds=args.seeds, results=results, device=args.device,
                               progress=not args.quiet, run_all=args.all, external_data=external,
                               precision=args.precision, launch=_launch_options(args))
    done = [o.record for o in outcomes if o.record]
    if results is None:
        dataset = done[0]["dataset"] if done else (args.dataset or "synthetic")
        results = default_results_dir() / dataset
    judges_nothing = run_judges_nothing(args.profile, done, args.dataset)
    if judges_nothing:
        console.print(judges_nothing, markup=False, highlight=False)
    if not args.no_tables:
        try:
            from fracbench.claims.tables import write_tables

            paths = write_tables(results)
            console.print(f"tables written to {results / 'tables'} ({len(paths)} files)")
        except Exception as exc:  # tables are derived; a problem there must not hide the runs' outcome
            console.print(f"[yellow]tables not written:[/] {exc}")
    if not args.no_report:
        write_run_report(results, args.data_dir)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def run_judges_nothing(profile: str, records: list, dataset: str | None = None) -> str:
    """The one line a smoke-profile or synthetic-data run prints in its summary ("" for a real run)."""
    what = []
    if profile == "smoke":
        what.append("smoke profile")
    synthetic = sorted({str(r.get("dataset")) for r in records if str(r.get("dataset", "")).startswith("synthetic")})
    if synthetic or (not records and (dataset or "").startswith("synthetic")):
        what.append("synthetic data")
    if not what:
        return ""
    return (f"{' on '.join(what).capitalize()}: these numbers judge nothing; the run tests the machinery, not the "
            "paper (no claim is judged by them).")


def write_run_report(results, data_dir: str | None = None):
    """Figures and ``report.html`` for ``results`` after a run; prints ``Report: <path>`` to stdout.

    The report is derived from the records; a problem writing it is said on stderr (with the
    command that retries it) and never changes the run's exit status. Returns the path, or None.
    """
    from fracbench.claims.report import write_report

    try:
        _draw_figures(results, data_dir)
        path = write_report(results)
    except Exception as exc:
        console.print(f"[yellow]report not written:[/] {exc} (retry with `fracbench report --results {results}`)",
                      highlight=False)
        return None
    print_result(f"Report: {path}")
    return path


def _configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="paper_cnn")
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--data-dir")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--protocol", choices=["as_published", "honest"], default="honest")
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--augment", choices=["none", "flip", "radiograph"])
    p.add_argument("--weights", help="local pretrained weights (never downloaded)")
    p.add_argument("--device")
    p.add_argument("--resume", action="store_true", help="continue from the last finished epoch")
    p.add_argument("--results", help="results folder (default: results/adhoc/<dataset>/, which the tables do not "
                   "read; `fracbench run` writes the benchmark's records)")
    p.add_argument("--name", help="experiment name for the record (default: train_<model>_<protocol>)")


@command("train", "train one model (a single run with a full record)", _configure_train)
def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fracbench import results as R
    from fracbench.config import TrainConfig
    from fracbench.data import prepare
    from fracbench.data.cache import build_cache
    from fracbench.models import MODELS
    from fracbench.paths import adhoc_dir
    from fracbench.training.train import fit

    MODELS.get(args.model)  # fail fast, with close matches, before any data work
    cfg = TrainConfig(model=args.model, protocol=args.protocol, seed=args.seed).replace(
        epochs=args.epochs, image_size=args.image_size, batch_size=args.batch_size, lr=args.lr,
        augment=args.augment, weights=args.weights, device=args.device)
    prepared = prepare(args.dataset, args.data_dir, progress=not args.quiet)
    cache = build_cache(prepared.manifest, cfg.image_size, progress=not args.quiet)
    name = args.name or f"train_{args.model}_{args.protocol}"
    # one-off runs stay out of results/<dataset>/runs, which the committed tables are built from
    results = Path(args.results) if args.results else adhoc_dir(prepared.name)
    out = R.run_dir(results, name, args.seed)
    rec = fit(cfg, cache, out, experiment=name, resume=args.resume, progress=not args.quiet)
    m = rec["metrics"]["test"]
    console.print(f"{name}: test AUROC {m['auroc']:.3f} [{m['auroc_ci95'][0]:.3f}, {m['auroc_ci95'][1]:.3f}], "
                  f"accuracy {m['accuracy']:.3f} (majority class {m['majority_accuracy']:.3f}); record in {out}")
    return 0


def _configure_tables(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", action="append", metavar="DIR",
                   help="a results folder (results/<dataset>/); repeat it for several. Default: every "
                        "results/<dataset>/ of the checkout that holds runs/. With several folders (or the "
                        "default), the cross-dataset tables (claims beside the multiregion splits, the leak "
                        "table across splits) are also written, into the folders' parent tables/")
    p.add_argument("--cross-out", metavar="DIR", help="where the cross-dataset tables go (default: results/tables/)")


@command("tables", "write the paper's Tables 1-3, the leaderboard, the claims and leak tables from records",
         _configure_tables)
def _tables(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fracbench.claims.tables import write_cross_tables, write_tables

    given = [Path(p) for p in args.results or []]
    for p in given:
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: no such results folder; pass results/<dataset>/ (one with runs/)")
    folders = given or results_folders()
    if not folders:
        console.print("no records found: run `fracbench run --all` first")
        return 2
    for results in folders:
        for path in write_tables(results):
            print_result(str(path))
    if len(given) != 1:  # the default (every dataset) or several folders: the tables across them too
        for path in write_cross_tables(folders, args.cross_out):
            print_result(str(path))
    return 0


def results_folders() -> list:
    """Every results/<dataset>/ folder that holds run records."""
    from fracbench.paths import default_results_dir

    return sorted(p.parent for p in default_results_dir().glob("*/runs") if p.is_dir())


# ---------------------------------------------------------------- predict and demo
def _configure_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively); every "
                   "file is either predicted (PNG, JPEG, DICOM, TIFF, BMP, GIF, WebP, ...) or listed as skipped "
                   "with the reason")
    p.add_argument("--checkpoint", help="checkpoint .safetensors (default: the best under --results by validation AUROC "
                   "within one dataset, see --dataset)")
    p.add_argument("--dataset", help="choose the default checkpoint among this dataset's (default: fracatlas when "
                   "present); never a leaked, split-mode or external-test experiment")
    p.add_argument("--results", help="where to look for checkpoints (default: results/ of the checkout)")
    p.add_argument("--csv", help="also write one row per file (file, status, p_fracture, decision, warning, reason, "
                   "ood, ood_distance) to this CSV; decision reads 'no decision: ...' for an image too small, of "
                   "extreme aspect ratio or out of distribution")
    p.add_argument("--json", action="store_true", help="print the summary and every file's result as JSON")
    p.add_argument("--cam", metavar="DIR", help="write a Grad-CAM overlay PNG for each image into DIR")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--allow-pickle", action="store_true",
                   help="accept a .pt/.pth checkpoint (read with weights_only=True); only for files you trust")


def _predict_cell(result, field: str):
    from rich.text import Text

    value = getattr(result, field)
    if field in ("p_fracture", "ood_distance"):
        return "" if value is None or value != value else f"{value:.3f}"  # value != value: nan
    if field == "decision" and value == "fractured":
        return Text(value, style="bold red")
    if field == "decision" and value.startswith("no decision"):
        return Text(value, style="yellow")
    if field == "warning" and value:
        return Text(value, style="yellow")
    return "" if value is None else str(value)


def predict_counts(results) -> dict[str, int]:
    """How many files were given, predicted, predicted with a warning, and skipped."""
    predicted = [r for r in results if r.predicted]
    return {"files": len(results), "predicted": len(predicted),
            "with_warning": sum(1 for r in predicted if r.warning), "skipped": len(results) - len(predicted)}


@command("predict", "P(fracture) of image files or folders with a trained checkpoint", _configure_predict)
def _predict(args: argparse.Namespace) -> int:
    import csv
    import io
    from pathlib import Path

    from rich.markup import escape

    from fracbench.io import atomic_write_text
    from fracbench.paths import default_results_dir
    from fracbench.serving.checkpoint import load_checkpoint
    from fracbench.serving.predict import RESULT_FIELDS, best_checkpoint, predict_files

    path = args.checkpoint
    if path is None:
        results = Path(args.results) if args.results else default_results_dir()
        path = best_checkpoint(results, args.dataset)
        if path is None:
            console.print(f"[red]error:[/] no checkpoint under {results}; train one (`fracbench train`) "
                          "or pass --checkpoint")
            return 2
    ck = load_checkpoint(path, allow_pickle=args.allow_pickle)
    found = predict_files(ck, args.paths, batch_size=args.batch_size, progress=not args.quiet)
    counts = predict_counts(found)
    if args.json:
        print_json({"checkpoint": str(ck.path), "model": ck.meta.get("model"), "threshold": ck.threshold,
                    **counts, "results": [r.as_dict() for r in found]})
    else:
        print_table(RESULT_FIELDS, [[_predict_cell(r, f) for f in RESULT_FIELDS] for r in found],
                    title=f"{ck.meta.get('model')} from {ck.path} (threshold {ck.threshold:.3f})")
    for r in found:  # also on stderr, where a person watching a pipe or a log sees them
        if r.warning:
            console.print(f"[yellow]warning:[/] {escape(r.file)}: {escape(r.warning)}", highlight=False)
    console.print(f"{counts['files']} files: {counts['predicted']} predicted ({counts['with_warning']} with a "
                  f"warning), {counts['skipped']} skipped", highlight=False)
    console.print("Research software, not a medical device: do not use for diagnosis.")
    if args.csv:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(RESULT_FIELDS)
        for r in found:
            row = r.as_dict()
            for key in ("p_fracture", "ood_distance"):
                if row[key] is not None:
                    row[key] = f"{row[key]:.6f}"
            w.writerow(["" if row[f] is None else row[f] for f in RESULT_FIELDS])
        atomic_write_text(args.csv, buf.getvalue())
        console.print(f"wrote {args.csv}", markup=False, highlight=False)
    rows = [{"file": r.file} for r in found if r.predicted]
    scored = [{"file": r.file} for r in found if r.predicted and r.p_fracture is not None]
    if args.cam and scored:
        _write_cams(ck, scored, Path(args.cam))
    return 0 if rows else 1


def _write_cams(ck, rows: list[dict], out) -> None:
    import io
    from pathlib import Path

    from PIL import Image

    from fracbench.data.decode import DecodeError, decode_image
    from fracbench.io import atomic_write_bytes
    from fracbench.serving.cam import gradcam, overlay

    used: set[str] = set()
    for r in rows:
        src = Path(r["file"])
        name = f"{src.stem}_cam.png"
        k = 1
        while name in used:
            k += 1
            name = f"{src.stem}_{k}_cam.png"
        used.add(name)
        try:
            px = decode_image(src).pixels
        except DecodeError as exc:  # changed since it was predicted
            console.print(f"[yellow]no Grad-CAM for {src}:[/] {exc.reason}")
            continue
        heat, _ = gradcam(ck, px)
        buf = io.BytesIO()
        Image.fromarray(overlay(px, heat)).save(buf, format="PNG")
        atomic_write_bytes(out / name, buf.getvalue())
    console.print(f"Grad-CAM overlays in {out}")


def _configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="default model (default: the best under --results; if none, a tiny model "
                   "is trained on synthetic data first)")
    p.add_argument("--results", help="where to look for checkpoints (default: results/ of the checkout)")
    p.add_argument("--dataset", help="choose the default model among this dataset's checkpoints (default: fracatlas "
                   "when present); the model picker still offers every checkpoint, labelled with dataset and split")
    p.add_argument("--share", action="store_true", help="try to create a public gradio.live link (needs network)")
    p.add_argument("--auth", metavar="USER:PASS", help="require this login")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for the local network)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--allow-pickle", action="store_true", help="accept .pt/.pth checkpoints you trust")
    p.add_argument("--lookup-data", metavar="DATASET[:PATH]",
                   help="answer 'is this image in the training set?' against this dataset's exact and near-copy "
                        "index (e.g. multiregion:~/data/multiregion)")


@command("demo", "web demo: upload an X-ray, see P(fracture), the decision and Grad-CAM", _configure_demo)
def _demo(args: argparse.Namespace) -> int:
    from fracbench.app.demo import launch

    launch(args.checkpoint, share=args.share, auth=args.auth, host=args.host, port=args.port,
           results=args.results, allow_pickle=args.allow_pickle, progress=not args.quiet,
           lookup_data=args.lookup_data, dataset=args.dataset,
           echo=lambda line: console.print(line, markup=False, highlight=False))
    return 0


# ---------------------------------------------------------------- audit
def _configure_audit(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="dataset name (see `fracbench data list`)")
    p.add_argument("--data-dir", help="dataset folder (default: the download location)")
    p.add_argument("--manifest", help="check this split (a fracbench manifest CSV, e.g. a naive random split) for "
                   "leaks instead of fracbench's own")
    p.add_argument("--split-seed", type=int, default=0, help="seed of fracbench's own split")
    p.add_argument("--split", choices=("given", "grouped"), default="given",
                   help="which split the detailed leak check reads: 'given' (default) keeps the folder's own "
                        "train/val/test image by image, as you made it; 'grouped' is fracbench's re-split where no "
                        "copy group crosses splits. Copies across both are always summarised, the given split first")
    p.add_argument("--overlap-with", metavar="DATASET[=PATH]",
                   help="also report which images of this other dataset occur here, by content (e.g. fracatlas=PATH)")
    p.add_argument("--out", help="folder for audit.json and audit.html (default: results/adhoc/<dataset>/audit/, "
                   "outside the committed results)")
    p.add_argument("--json", action="store_true", help="also print the JSON report")


@command("audit", "data audit: exact/near duplicates, leaks across splits, label conflicts, faults, balance",
         _configure_audit)
def _audit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fracbench.claims.audit import audit, decode_group_images, print_audit, write_audit
    from fracbench.data import prepare
    from fracbench.data.manifest import Manifest
    from fracbench.paths import adhoc_dir

    prepared = prepare(args.dataset, args.data_dir, seed=args.split_seed, progress=not args.quiet)
    if args.manifest:
        manifest = Manifest.read(args.manifest, prepared.name, prepared.dataset.root)
    elif args.split == "grouped":
        manifest = prepared.manifest_for("grouped", seed=args.split_seed)
    else:
        manifest = None
    other = None
    if args.overlap_with:
        name, _, path = args.overlap_with.partition("=")
        other = prepare(name, path or None, progress=not args.quiet)
    squares, thumbs = decode_group_images(prepared)
    report = audit(prepared, manifest, pixels=squares, overlap=other,
                   split_mode="grouped" if args.split == "grouped" and not args.manifest else None)
    out = Path(args.out) if args.out else adhoc_dir(prepared.name) / "audit"
    paths = write_audit(report, out, thumbs)
    if args.json:
        print(json.dumps(report, indent=2))
    print_audit(report)
    console.print("wrote " + ", ".join(str(p) for p in paths))
    return 0


# ---------------------------------------------------------------- check
def _configure_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", metavar="DATA_DIR", help="a folder of class folders (optionally inside train/ and "
                   "test|val|valid/ folders), or a registered dataset name (see `fracbench data list`)")
    p.add_argument("--claim", action="append", default=[], metavar="METRIC=VALUE", required=True,
                   help="a claimed test result to check, e.g. accuracy=0.998 or auroc=99%%; repeat for several")
    p.add_argument("--split", choices=("given", "grouped"), default="given",
                   help="'given' (default): the folders' own train/test as you made them; 'grouped': fracbench's "
                        "re-split where no copy group crosses train/val/test")
    p.add_argument("--test-folder", metavar="NAME", help="the folder held out as the test split (default: test/, "
                   "testing/; with only train/ and val|valid/, val)")
    p.add_argument("--data-dir", help="dataset folder when DATA_DIR is a registered dataset name")
    p.add_argument("--out", help="folder for check.json and check.html (default: results/adhoc/<dataset>/check/)")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the summary")
    p.add_argument("--fail-on-leak", action="store_true",
                   help="exit 3 when a claim is explained by copies or the test split holds copies of train images")
    p.add_argument("--train", metavar="MODEL", help="also train MODEL (see `fracbench models`) on the given split and "
                   "on the grouped re-split, and report its accuracy and AUROC overall, on the test images with a "
                   "copy in train and on those without (two-class sets)")
    p.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "full"],
                   help="training budget of --train, as in `fracbench run --profile` (default: cpu); a reduced "
                        "budget is named in every trained verdict")
    p.add_argument("--device", help="device for --train (default: cuda when available, else cpu)")


@command("check", "test an accuracy claim on any class-folder set: copies across train/test, what memorising "
         "alone scores, the majority class; verdict per claim and an HTML page", _configure_check)
def _check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fracbench.claims import check as C
    from fracbench.data import DATASETS, prepare
    from fracbench.paths import adhoc_dir
    from fracbench.registry import UnknownNameError
    from fracbench.results import git_state

    try:
        claims = C.parse_claims(args.claim)
        if args.train:
            C.train_config(args.train, args.profile)  # an unknown model fails here, with close matches
    except (ValueError, UnknownNameError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    if args.data in DATASETS and not Path(args.data).is_dir():
        name, data_dir = args.data, args.data_dir
    else:
        if not Path(args.data).is_dir():
            console.print(f"[red]error:[/] {args.data}: no such folder and no registered dataset of that name")
            return 2
        name, data_dir = "imagefolder", args.data
    prepared = prepare(name, data_dir, progress=not args.quiet, test_folder=args.test_folder)
    report = C.check(prepared, claims, split=args.split)
    out = Path(args.out) if args.out else adhoc_dir(prepared.name) / "check"
    if args.train:
        try:
            trained = C.train_check(prepared, args.train, args.profile, out, device=args.device,
                                  progress=not args.quiet)
        except ValueError as exc:
            console.print(f"[red]error:[/] {exc}")
            return 2
        report = C.add_training(report, trained)
    git = git_state()
    cmd = ["fracbench", "check", args.data if name != "imagefolder" else "<data-dir>",
           *[f"--claim={c}" for c in args.claim], f"--split={args.split}"]
    if args.test_folder:
        cmd.append(f"--test-folder={args.test_folder}")
    if args.train:
        cmd += [f"--train={args.train}", f"--profile={args.profile}"]
    prov = {"command": " ".join(cmd), "git_commit": git["git_commit"], "git_dirty": git["git_dirty"],
            "data_dir": "<data-dir>"}
    paths = C.write_check(prepared, report, out, prov)
    if args.json:
        print_json({**report, "provenance": prov})
    else:
        C.print_check(report, echo=print_result)  # the answer is the command's output: on stdout even with --quiet
        console.print("wrote " + ", ".join(str(p) for p in paths))
    return report["fail_on_leak_would_exit"] if args.fail_on_leak else 0


# ---------------------------------------------------------------- figures and report
def _configure_figures(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", help="results folder (default: every results/<dataset>/ of the checkout)")
    p.add_argument("--data-dir", help="dataset folder, for the grid of correct and wrong test predictions "
                   "(default: the download location or the synthetic cache, when present)")


def _figure_folders(args: argparse.Namespace) -> list:
    from pathlib import Path

    return [Path(args.results)] if args.results else results_folders()


def _draw_figures(results, data_dir: str | None) -> list:
    import json as _json
    from pathlib import Path

    from fracbench.claims.figures import find_data_root, write_figures

    root = Path(data_dir) if data_dir else None
    if root is None:
        try:
            dataset = _json.loads(next((results / "data").glob("*.json")).read_text())["dataset"]
            root = find_data_root(dataset)
        except (StopIteration, OSError, ValueError, KeyError):
            root = None
    return write_figures(results, data_root=root,
                         echo=lambda line: console.print(line, markup=False, highlight=False))


@command("figures", "learning curves, ROC/PR, confusion matrices and example predictions as PNGs",
         _configure_figures)
def _figures(args: argparse.Namespace) -> int:
    folders = _figure_folders(args)
    if not folders:
        console.print("no records found: run `fracbench run --all` first")
        return 2
    for results in folders:
        paths = _draw_figures(results, args.data_dir)
        console.print(f"{len(paths)} figures written to {results / 'figures'}")
    return 0


def _configure_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", action="append", metavar="DIR",
                   help="a results folder (results/<dataset>/); repeat it for several. Default: every "
                        "results/<dataset>/ of the checkout. Each folder gets its own report.html; with several "
                        "(or the default), one more page shows them side by side (results/report.html)")
    p.add_argument("--out", metavar="FILE", help="where the side-by-side page goes (default: results/report.html)")
    p.add_argument("--data-dir", help="dataset folder, for the example grid (see `fracbench figures`)")
    p.add_argument("--no-refresh", action="store_true", help="do not regenerate tables and figures first")


@command("report", "one self-contained HTML page: what was run, the data, tables and figures", _configure_report)
def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fracbench.claims.report import write_report, write_reports

    given = [Path(p) for p in args.results or []]
    for p in given:
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: no such results folder; pass results/<dataset>/ (one with runs/)")
    folders = given or results_folders()
    if not folders:
        console.print("no records found: run `fracbench run --all` first")
        return 2
    for results in folders:
        if not args.no_refresh:
            from fracbench.claims.tables import write_tables

            write_tables(results)
            _draw_figures(results, args.data_dir)
        print_result(f"Report: {write_report(results)}")
    if len(given) != 1:
        if not args.no_refresh:
            from fracbench.claims.tables import write_cross_tables

            write_cross_tables(folders)
        print_result(f"Report: {write_reports(folders, args.out)}")
    return 0


def _configure_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a run's checkpoints/best.safetensors")
    p.add_argument("--out", required=True, help="folder to copy it (and its run record) into")


@command("export-checkpoint", "copy a small checkpoint with its run record (e.g. for the demo)", _configure_export)
def _export(args: argparse.Namespace) -> int:
    from fracbench.serving.checkpoint import export_checkpoint

    console.print(f"wrote {export_checkpoint(args.checkpoint, args.out)}")
    return 0


def _configure_localise(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a fracbench checkpoint (.safetensors)")
    p.add_argument("--dataset", default="fracatlas", help="a dataset with fracture boxes (fracatlas)")
    p.add_argument("--data-dir", help="dataset folder")
    p.add_argument("--split", default="test", help="which split of the manifest to score")
    p.add_argument("--synthetic", type=int, default=100, help="also score N freshly rendered synthetic fractures")


@command("localise", "Grad-CAM pointing game: share of fractured images whose heatmap peak is inside a true box",
         _configure_localise)
def _localise(args: argparse.Namespace) -> int:
    import numpy as np

    from fracbench.data import prepare
    from fracbench.data.decode import DecodeError, decode_image
    from fracbench.data.synthetic import render_case
    from fracbench.io import atomic_write_json
    from fracbench.serving.cam import pointing_game
    from fracbench.serving.checkpoint import load_checkpoint

    ck = load_checkpoint(args.checkpoint)
    prepared = prepare(args.dataset, args.data_dir, progress=not args.quiet)
    split = {r.id: r.split for r in prepared.manifest.rows}
    wanted = [r for r in prepared.listing.records if r.boxes and split.get(r.id) == args.split]

    def real():
        for r in wanted:
            try:
                yield decode_image(r.path).pixels, r.boxes
            except DecodeError:
                continue

    out = {"checkpoint": ck.meta.get("experiment", ck.meta["model"]),
           args.dataset: {**pointing_game(ck, real()), "images": f"{args.split} split, fractured images with boxes"}}
    if args.synthetic:
        rng = np.random.default_rng(2024)
        size = max(ck.image_size, 224)
        cases = [render_case(rng, size, True, 1.0) for _ in range(args.synthetic)]
        # its own key: with --dataset synthetic the dataset's entry must not be overwritten
        out["rendered"] = {**pointing_game(ck, cases), "images": f"{args.synthetic} rendered fractured images"}
    from fracbench import results as R

    out["environment"] = {**R.environment("cpu"), "created": R.now_iso(),
                          "manifest_sha256": prepared.manifest.fingerprint}
    path = ck.path.with_name("pointing_game.json")
    atomic_write_json(path, out)
    meta = dict(ck.meta, pointing_game=out[args.dataset])
    atomic_write_json(ck.path.with_suffix(".json"), meta)
    for name in (args.dataset, "rendered"):
        if name in out:
            o = out[name]
            console.print(f"{name}: {o['hits']}/{o['n']} heatmap peaks inside a true box (rate {o['rate']:.3f})")
    console.print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------- out-of-distribution guard
def _configure_ood(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["attach", "eval"],
                   help="attach: fit the checkpoint's reference on a dataset's train split (threshold from val) and "
                        "write it into its sidecar; eval: how well it separates the test split from non-radiographs")
    p.add_argument("checkpoint", help="a fracbench checkpoint (.safetensors)")
    p.add_argument("--dataset", default="fracatlas", help="the dataset the checkpoint was trained on")
    p.add_argument("--data-dir", help="dataset folder")
    p.add_argument("--manifest", help="the manifest the checkpoint was trained on (default: fracbench's split)")
    p.add_argument("--out", default=None, help="eval: output folder (default: results/ood)")


@command("ood", "out-of-distribution guard: attach a checkpoint's reference, or evaluate it", _configure_ood)
def _ood(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fracbench.data import prepare
    from fracbench.data.manifest import Manifest
    from fracbench.paths import default_results_dir

    prepared = prepare(args.dataset, args.data_dir, progress=not args.quiet)
    manifest = Manifest.read(args.manifest, prepared.name, prepared.dataset.root) if args.manifest \
        else prepared.manifest
    if args.action == "attach":
        from fracbench.data.cache import build_cache
        from fracbench.serving.checkpoint import load_checkpoint
        from fracbench.serving.ood import attach_reference

        ck = load_checkpoint(args.checkpoint)
        ref = attach_reference(ck.path, build_cache(manifest, ck.image_size, progress=not args.quiet))
        print_result(f"{ck.path.with_suffix('.json')}: OOD reference from {ref['fit_images']} train images, "
                     f"threshold {ref['threshold']:.4g} (95th percentile of {ref['calibration_images']} val images)")
        return 0
    from fracbench.serving.ood_eval import evaluate

    out = Path(args.out) if args.out else default_results_dir() / "ood"
    if not args.manifest:
        path = out / f"{prepared.name}-manifest.csv"
        manifest.write(path)
    else:
        path = Path(args.manifest)
    res = evaluate(args.checkpoint, prepared.name, path, prepared.dataset.root, out_dir=out, progress=not args.quiet)
    print_result(f"Wrote {out / 'ood_eval.json'} (AUROC {res.get('auroc', float('nan')):.3f})")
    return 0


# ---------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    from fracbench import __version__

    parser = argparse.ArgumentParser(
        prog="fracbench",
        description="Reproduce, and honestly measure, deep-learning fracture detection on X-rays. "
                    "Research software, not a medical device.",
    )
    parser.add_argument("--version", action="version", version=f"fracbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help, configure, fn in _COMMANDS:
        p = sub.add_parser(name, help=help, description=help, parents=[common()])
        configure(p)
        p.set_defaults(handler=fn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from fracbench.registry import UnknownNameError

    args = build_parser().parse_args(argv)
    args.quiet = bool(getattr(args, "quiet", False))
    set_quiet(args.quiet)
    try:
        return int(args.handler(args) or 0)
    except (UnknownNameError, FileNotFoundError, ValueError, RuntimeError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        console.print("interrupted; finished work is saved and a rerun resumes it")
        return 130


if __name__ == "__main__":
    sys.exit(main())
