"""Where a command's output goes: its data on stdout, progress and logs on stderr.

Every command follows one rule: what the command was asked for (a listing, a table of results, the
path of the file it produced, JSON with ``--json``) is written to stdout; progress bars, status
lines, warnings and errors go to stderr (:data:`fracbench.progress.console`). So ``fracbench list |
grep paper`` works and a log of stdout holds only results.

Tables never cut a name. On a terminal they are rich tables whose key columns are at least as wide
as their longest value (folded, never cut with an ellipsis, when even that does not fit); when
stdout is not a terminal (a pipe, a file, a test) they are plain tab-separated lines with a header
row, one record a line, so rows can be told apart and parsed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fracbench.progress import console as log_console

Cell = str | Text
"""A table cell: plain text (never parsed as rich markup, so a file name like ``a[1].png`` is safe)
or a styled :class:`rich.text.Text`."""

_KEY_MAX_FRACTION = 0.6  # a key column never reserves more than this share of the terminal width


def stdout_console() -> Console:
    """A rich console on the current ``sys.stdout`` (looked up at each write, so capture works)."""
    return Console(highlight=False)


def is_terminal() -> bool:
    """True when stdout is an interactive terminal (tables drawn), False for pipes and files (TSV)."""
    return stdout_console().is_terminal


def _plain(cell: Cell) -> str:
    text = cell.plain if isinstance(cell, Text) else str(cell)
    return " ".join(text.replace("\t", " ").splitlines())  # one record, one line


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Cell]], *, title: str | None = None,
                key_columns: Sequence[int] = (0,), plain: bool | None = None,
                console: Console | None = None) -> None:
    """Print a table of data to stdout: a rich table on a terminal, TSV otherwise.

    ``key_columns`` (indices) hold names that identify a row (experiment, file); on a terminal they
    are never cut. ``plain`` forces TSV (True) or a drawn table (False); by default it is TSV unless
    stdout is a terminal. The title is context, not data: above a drawn table, on stderr with TSV.
    """
    rows = [list(r) for r in rows]
    out = console if console is not None else stdout_console()
    if plain is None:
        plain = not out.is_terminal
    if plain:
        if title:
            log_console.print(title, markup=False, highlight=False)
        lines = ["\t".join(columns)] + ["\t".join(_plain(c) for c in r) for r in rows]
        out.file.write("\n".join(lines) + "\n")
        out.file.flush()
        return
    table = Table(title=title)
    for i, name in enumerate(columns):
        if i in key_columns:
            longest = max([len(name)] + [len(_plain(r[i])) for r in rows])
            width = min(longest, max(10, int(out.width * _KEY_MAX_FRACTION)))
            table.add_column(name, overflow="fold", min_width=width)
        else:
            table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(*(c if isinstance(c, Text) else Text(str(c)) for c in r))
    out.print(table)


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON to stdout, and nothing else there."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_result(line: str) -> None:
    """One line of data on stdout (e.g. the path of a file the command wrote), never wrapped or styled."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
