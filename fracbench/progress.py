"""Progress display (rich) shared by every long task; silent with --quiet or when disabled."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console

T = TypeVar("T")

class _Console(Console):
    """A rich console that never wraps a printed line when its output is not a terminal (a pipe, a log,
    a test): rich would break it at 80 columns, mid-phrase; a terminal still wraps at its width."""

    def print(self, *objects, soft_wrap: bool | None = None, **kwargs) -> None:  # type: ignore[override]
        if soft_wrap is None and not self.is_terminal:
            soft_wrap = True
        super().print(*objects, soft_wrap=soft_wrap, **kwargs)


console: Console = _Console(stderr=True)
_QUIET = [os.environ.get("FRACBENCH_QUIET", "") not in ("", "0")]


def set_quiet(quiet: bool) -> None:
    _QUIET[0] = quiet


def is_quiet() -> bool:
    return _QUIET[0]


def say(message: str) -> None:
    """One line of status for the user (suppressed by --quiet)."""
    if not _QUIET[0]:
        console.print(message)


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate with a rich progress bar (bar, count, elapsed, remaining)."""
    if not enabled or _QUIET[0]:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
