"""What people see: tables for people, JSON for programs, a progress bar in a terminal.

rich draws tables and the progress bar (it handles terminal width, colour and non-terminals);
when stdout is not a terminal, progress turns into plain, occasional lines.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
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
    "canceled", "terminated", "disabled",
)
DONE_STATUSES = ("completed", "failed", "canceled", "terminated", "disabled")

console = Console()
err_console = Console(stderr=True)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], *,
                title: str | None = None) -> None:
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table)
    if not rows:
        console.print("(none)")


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

    def update(self, counts: dict[str, int], running: int | None = None) -> None:
        if not self.enabled:
            return
        total = sum(counts.values())
        done = sum(counts.get(s, 0) for s in DONE_STATUSES)
        failed = sum(counts.get(s, 0) for s in ("failed", "canceled", "terminated"))
        active = counts.get("running", 0) + counts.get("pending", 0)
        elapsed = max(time.monotonic() - self._started, 1e-9)
        detail = f"failed {failed}  running {active}  {done / elapsed:.1f} jobs/s"
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total, completed=done, detail=detail)
            return
        now = time.monotonic()
        if (done, total) != self._last and (now - self._last_line >= 5 or done == total):
            self._last_line = now
            self._last = (done, total)
            print(f"{self.label}: {done}/{total} done, {detail}", flush=True)


def failed_rows(results: Iterable[dict[str, Any]], log_dir: str) -> list[dict[str, Any]]:
    return [
        {
            "job_id": r.get("job_id"), "name": r.get("job_name"), "status": r.get("status"),
            "return_code": r.get("return_code"),
            "log": f"{log_dir}/job_stdio/job_wf{r.get('workflow_id', '')}_j{r.get('job_id')}"
                   f"_r{r.get('run_id')}_a{r.get('attempt')}.e",
        }
        for r in results
    ]
