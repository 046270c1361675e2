"""Tables for people, drawn with rich: colours and the terminal's width on a terminal, plain
columns without trailing blanks anywhere else (a pipe, a file, a test)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from tuningd.client.jobs import Row

# Off a terminal nothing is cut to fit: a pipe gets whole lines.
_PIPE_WIDTH = 10_000

STATE_STYLES = {
    "queued": "cyan", "submitting": "cyan", "pending": "blue", "running": "bold blue",
    "cancelling": "yellow", "succeeded": "green", "failed": "bold red", "cancelled": "yellow",
}


def console(file: Any = None) -> Console:
    """A console on stdout (or `file`) that takes job text literally (no markup, no emoji)."""
    out = file if file is not None else sys.stdout
    terminal = bool(getattr(out, "isatty", lambda: False)())
    return Console(file=out, highlight=False, markup=False, emoji=False, soft_wrap=False,
                   width=None if terminal else _PIPE_WIDTH)


def to_text(renderable: RenderableType) -> str:
    """A renderable as plain text, each line without trailing blanks."""
    plain = Console(width=_PIPE_WIDTH, highlight=False, markup=False, emoji=False,
                    color_system=None, force_terminal=False)
    with plain.capture() as captured:
        plain.print(renderable)
    return "\n".join(line.rstrip() for line in captured.get().splitlines())


def show(renderable: RenderableType, out: Console | None = None) -> None:
    """Print a table: styled on a terminal, plain text elsewhere."""
    out = out or console()
    if out.is_terminal:
        out.print(renderable)
    else:
        out.file.write(to_text(renderable) + "\n")


def grid(headers: Sequence[str], rows: Sequence[Sequence[str | Text]], *,
         title: str | None = None) -> Table:
    """A borderless table of text cells (taken as they are: no markup)."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold",
                  title=title, title_justify="left", title_style="bold")
    for header in headers:
        table.add_column(header, no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in row))
    return table


def job_table(rows: Sequence[Row], *, with_place: bool = False,
              title: str | None = None) -> Table:
    """The jobs table of list, submit and watch: short id, state, sub-state, priority, queue
    position, age or run time, (project/location,) display name and reason."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold",
                  title=title, title_justify="left", title_style="bold")
    for header in ("ID", "STATE", "SUB-STATE", "PRIORITY", "QUEUE", "AGE"):
        table.add_column(header, no_wrap=True)
    if with_place:
        table.add_column("PROJECT/LOCATION", no_wrap=True, overflow="ellipsis")
    # On a narrow terminal the name and the reason give way first.
    table.add_column("DISPLAY NAME", no_wrap=True, overflow="ellipsis", min_width=8)
    table.add_column("REASON", no_wrap=True, overflow="ellipsis", min_width=8, style="red")
    for row in rows:
        cells = [Text(row.short_id), Text(row.state, style=STATE_STYLES.get(row.state, "")),
                 Text(row.substate or "-"), Text(row.priority), Text(row.position or "-"),
                 Text(row.age)]
        if with_place:
            cells.append(Text(row.place))
        cells += [Text(row.name or "-"), Text(row.reason)]
        table.add_row(*cells)
    return table
