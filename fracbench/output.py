"""Where a command's output goes: its data on stdout, progress and logs on stderr.

Every command follows one rule: what the command was asked for (a listing, a table of results, the
path of the file it produced, JSON with ``--json``) is written to stdout; progress bars, status
lines, warnings and errors go to stderr (:data:`fracbench.progress.console`). So ``fracbench list |
grep paper`` works and a log of stdout holds only results.

Tables never cut a name. On a terminal they are rich tables whose key columns are as wide as
their longest value (other columns wrap), or whole tab-separated rows when such a table cannot fit
the terminal (rich would cut the names or crop the columns on the right); when stdout is not a terminal (a pipe, a file, a test) they are always tab-separated
lines with a header row, one record a line, so rows can be told apart and parsed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fracbench.progress import _Console
from fracbench.progress import console as log_console

Cell = str | Text
"""A table cell: plain text (never parsed as rich markup, so a file name like ``a[1].png`` is safe)
or a styled :class:`rich.text.Text`."""


def stdout_console() -> Console:
    """A rich console on the current ``sys.stdout`` (looked up at each write, so capture works); its printed
    lines are not wrapped when stdout is not a terminal."""
    return _Console(highlight=False)


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

    ``key_columns`` (indices) hold names that identify a row (experiment, file); they are never
    cut or folded. ``plain`` forces TSV (True) or a drawn table (False); by default it is TSV unless
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
    keys = set(key_columns)
    if _min_table_width(columns, rows, keys) > out.width:
        # too narrow for a table that keeps the names whole (rich would cut or crop them): whole rows
        print_table(columns, rows, title=title, plain=True, console=out)
        return
    table = Table(title=title)
    for i, name in enumerate(columns):
        if i in keys:
            table.add_column(name, no_wrap=True, min_width=_longest(name, rows, i))
        else:
            table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(*(c if isinstance(c, Text) else Text(str(c)) for c in r))
    out.print(table)


def _longest(name: str, rows: Sequence[Sequence[Cell]], i: int) -> int:
    return max([len(name)] + [len(_plain(r[i])) for r in rows])


def _min_table_width(columns: Sequence[str], rows: Sequence[Sequence[Cell]], keys: set[int]) -> int:
    """The narrowest a rich table can be drawn without cutting: whole keys, others at their longest word."""
    total = 1 + 3 * len(columns)  # borders and one space of padding either side of each column
    for i, name in enumerate(columns):
        if i in keys:
            total += _longest(name, rows, i)
        else:
            total += max(len(w) for text in [name, *(_plain(r[i]) for r in rows)] for w in text.split() or [""])
    return total


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON to stdout, and nothing else there."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_result(line: str) -> None:
    """One line of data on stdout (e.g. the path of a file the command wrote), never wrapped or styled."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
