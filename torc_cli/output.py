"""What people see: tables for people, JSON for programs, a progress bar in a terminal.

rich draws tables and the progress bar (it handles terminal width, colour and non-terminals);
when stdout is not a terminal, progress turns into plain, occasional lines.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

STATUS_ORDER = (
    "uninitialized", "blocked", "ready", "pending", "running", "completed", "failed",
    "canceled", "terminated", "disabled", "pending_failed",
)
DONE_STATUSES = ("completed", "failed", "canceled", "terminated", "disabled")

console = Console()
err_console = Console(stderr=True)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_json_line(value: Any) -> None:
    """One compact object per line, for streams (``watch -f json``) that a program reads
    line by line."""
    sys.stdout.write(json.dumps(value, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def format_value(key: str, value: Any) -> str:
    """A value for people: times (``*_at``) in local ISO format, no owner as ``-``."""
    if value is None:
        return "-" if key in ("user", "owner") else ""
    if key.endswith("_at") and isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value).astimezone().isoformat(timespec="seconds")
    return str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], *,
                title: str | None = None) -> None:
    """A table that never breaks a word: in a terminal, a cell too long for the screen ends
    with '…' (``-f json`` has every value whole); anywhere else (a pipe, a file) the table is
    as wide as its longest row."""
    tty = sys.stdout.isatty()
    if not rows:  # headings over nothing read as a broken table
        print(f"{title}: none" if title else "none")
        return
    table = Table(title=title, show_lines=False, min_width=len(title or "") + 2)
    for column in columns:
        table.add_column(column, overflow="ellipsis", no_wrap=True)
    for row in rows:
        table.add_row(*(format_value(c, row.get(c)) for c in columns))
    target = console if tty else Console(width=_natural_width(table, rows, columns),
                                         color_system=None)
    target.print(table)


def _natural_width(table: Table, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> int:
    """Wide enough for every cell on one line (borders and padding included)."""
    widths = [max([len(c), *(len(format_value(c, r.get(c))) for r in rows)]) for c in columns]
    return max(sum(w + 3 for w in widths) + 1, len(table.title or "") + 4, 20)


def print_counts(counts: dict[str, int], *, title: str) -> None:
    rows = [{"status": s, "jobs": counts.get(s, 0)} for s in STATUS_ORDER if counts.get(s)]
    rows.append({"status": "total", "jobs": sum(counts.values())})
    print_table(rows, ["status", "jobs"], title=title)


class ProgressView:
    """done/total, failed, running, rate and ETA; a bar in a terminal, lines otherwise."""

    def __init__(self, label: str, *, enabled: bool = True) -> None:
        self.label = label
        self.enabled = enabled
        self.tty = sys.stdout.isatty()
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._last_line = 0.0
        self._started = time.monotonic()
        self._last: tuple[int, int] = (-1, -1)
        self._done0: int | None = None  # done when first seen: the rate is of what we saw
        self._unprinted = ""  # the latest plain line, when it was held back

    def __enter__(self) -> ProgressView:
        if self.enabled and self.tty:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=console, transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=None, detail="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        elif self._unprinted:  # the plain lines end with where things stand
            print(self._unprinted, flush=True)

    def log(self, line: str) -> None:
        """A line above the bar (or just a line, without one)."""
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)

    def update(self, counts: dict[str, int], running: int | None = None) -> None:
        """``running``: the processes the caller runs itself, when it knows (the server's
        count lags behind for short jobs, and its pending jobs are claimed, not running)."""
        if not self.enabled:
            return
        total = sum(counts.values())
        done = sum(counts.get(s, 0) for s in DONE_STATUSES)  # finished, however
        active = counts.get("running", 0) if running is None else running
        if self._done0 is None:
            self._done0 = done
            self._started = time.monotonic()
        elapsed = max(time.monotonic() - self._started, 1e-9)
        # The words add up: finished = completed + failed + canceled + terminated + disabled.
        parts = [f"{counts.get(s, 0)} {s}" for s in DONE_STATUSES
                 if counts.get(s) or s in ("completed", "failed")]
        detail = (f"({', '.join(parts)}), running {active}, "
                  f"{(done - self._done0) / elapsed:.1f} jobs/s")
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total, completed=done, detail=detail)
            return
        line = f"{self.label}: {done}/{total} finished {detail}"
        now = time.monotonic()
        if (done, total) != self._last and (now - self._last_line >= 5 or done == total):
            self._last_line = now
            self._last = (done, total)
            self._unprinted = ""
            print(line, flush=True)
        elif (done, total) != self._last:
            self._unprinted = line  # printed on exit if nothing newer is
