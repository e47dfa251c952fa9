"""The console that CLI tables print to."""

from __future__ import annotations

from typing import Any

from rich.console import Console

#: Columns a table gets when stdout is not a terminal (a pipe, a file, a CI log).
PIPED_WIDTH = 200


def table_console(**options: Any) -> Console:
    """The terminal's width on a terminal; wide when piped, so that ids and columns are never cut short
    (rich draws 80 columns when it cannot ask a terminal). ``options`` go to :class:`rich.console.Console`."""
    console = Console(**options)
    return console if console.is_terminal else Console(width=max(console.width, PIPED_WIDTH), **options)
