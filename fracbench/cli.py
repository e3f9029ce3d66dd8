"""The ``fracbench`` command: argparse subcommands; ``main(argv=None)`` runs in-process for tests.

Heavy imports (torch, gradio, matplotlib) happen inside the subcommand that needs them, so
``fracbench --help``, ``fracbench list`` and ``fracbench tables`` start fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

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
    sub.add_parser("list", help="registered datasets", parents=[common()])
    info = sub.add_parser("info", help="counts per split, label and body part, and every fault found",
                          parents=[common()])
    _data_args(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of tables")
    split = sub.add_parser("split", help="write the train/val/test manifest", parents=[common()])
    _data_args(split)
    split.add_argument("--out", help="manifest CSV path (default: results/manifests/<dataset>.csv)")
    dl = sub.add_parser("download", help="download a public dataset into the data home", parents=[common()])
    dl.add_argument("dataset", choices=["fracatlas", "mura"])
    dl.add_argument("--data-dir", help="where to put it (default: FRACBENCH_DATA or the user cache)")


@command("data", "datasets: list, info, split, download", _configure_data)
def _data(args: argparse.Namespace) -> int:
    from fracbench.data import DATASETS, prepare

    if args.data_command == "list":
        from rich.table import Table

        t = Table("dataset", "description", "license")
        for name in DATASETS:
            cls = DATASETS.get(name)
            t.add_row(name, (cls.__doc__ or "").strip().splitlines()[0], cls.license or "-")
        console.print(t)
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
    prepared = prepare(args.dataset, args.data_dir, seed=args.split_seed, manifest_path=args.manifest,
                       progress=not args.quiet)
    if args.data_command == "split":
        from fracbench.paths import default_results_dir

        out = args.out or default_results_dir() / "manifests" / f"{prepared.name}.csv"
        prepared.manifest.write(out)
        console.print(f"wrote {out}: {len(prepared.manifest.rows)} images, fingerprint {prepared.manifest.fingerprint[:16]}")
        return 0
    from fracbench.data.summary import summarize

    summary = summarize(prepared)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
    return 0


def _print_summary(s: dict) -> None:
    from rich.table import Table

    console.print(f"[bold]{s['dataset']}[/] at {s['root']}: {s['images_found']} images found, "
                  f"{s['images_in_manifest']} in the manifest (fingerprint {s['manifest_fingerprint'][:16]})")
    t = Table("split", "fractured", "not fractured", "total", title="Images per split")
    for split, c in s["splits"].items():
        t.add_row(split, str(c.get("fractured", 0)), str(c.get("not_fractured", 0)), str(sum(c.values())))
    console.print(t)
    t = Table("body part", "fractured", "not fractured", title="Images per body part")
    for part, c in s["body_parts"].items():
        t.add_row(part, str(c.get("fractured", 0)), str(c.get("not_fractured", 0)))
    console.print(t)
    t = Table("fault", "count", "example", title="Faults found (reported, not fatal)")
    for kind, n in s["fault_counts"].items():
        ex = next(f for f in s["faults"] if f["kind"] == kind)
        t.add_row(kind, str(n), f"{ex['path']}: {ex['detail']}")
    t.add_row("duplicate groups", str(s["duplicate_group_count"]), f"{s['duplicate_images']} images in them")
    t.add_row("groups with conflicting labels", str(len(s["conflicting_label_groups"])),
              "; ".join(",".join(g["ids"]) for g in s["conflicting_label_groups"][:3]))
    console.print(t)


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
    except (UnknownNameError, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        console.print("interrupted; finished work is saved and a rerun resumes it")
        return 130


if __name__ == "__main__":
    sys.exit(main())
