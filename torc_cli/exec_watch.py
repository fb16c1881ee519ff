"""What `torc-trio exec` adds around a run for GNU parallel's habits: ``--joblog``, ``--halt``
and ``-k`` (``--keep-order``).

All three follow the jobs as they end, through the runner's one hook
(:attr:`~torc_cli.runner.RunnerConfig.on_job_end`), which is called on the runner's task for
every attempt. The hook does only in-memory work (a line into a buffered file, a counter, a
path into a dict); one task of ours beside the runner flushes the job log and prints ``-k``
output whenever the hook has left something (printing in a worker thread: a terminal or a pipe
that is slow to read must not stall the runner). No server round trip is added.

A job's sequence number (the joblog's ``Seq``, the ``-k`` order) is its position in the
workflow: ``exec`` creates its jobs in input order, and a workflow's job ids are consecutive in
that order, so it is ``id - first id + 1`` (the first id is asked once, before the run).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .exits import InputError
from .procs import describe_exit
from .runner import JobRunner, RunnerSummary

# ---------------------------------------------------------------------------------------------
# --halt


@dataclass(frozen=True, slots=True)
class Halt:
    """``--halt now|soon,fail=N|fail=P%``: after N failed jobs (or P% of all jobs), start no
    new job; ``now`` also terminates the running ones."""

    now: bool
    count: int = 0
    percent: float = 0.0
    text: str = ""

    def threshold(self, total: int) -> float:
        return self.count if not self.percent else total * self.percent / 100


_HALT = re.compile(r"(now|soon),fail=(?:(\d+)|(\d+(?:\.\d+)?)%)")
_HALT_HELP = ("expected now,fail=N, soon,fail=N, now,fail=P%, soon,fail=P%, never, or "
              "parallel's numbers 0, 1 (soon,fail=1), 2 (now,fail=1), 1-99%")


def parse_halt(text: str) -> Halt | None:
    """The condition, or None for never. Raises :class:`InputError` naming what is wrong."""
    value = text.strip()
    if value in ("never", "0"):
        return None
    if value in ("1", "2"):
        return Halt(now=value == "2", count=1, text=text)
    legacy = re.fullmatch(r"(\d+(?:\.\d+)?)%", value)
    if legacy:
        value = f"soon,fail={legacy.group(1)}%"
    m = _HALT.fullmatch(value)
    if m is None:
        when, _, why = value.partition(",")
        if when in ("now", "soon") and why.split("=")[0] in ("success", "done"):
            raise InputError(f"--halt {text}: only fail=... conditions are supported "
                             f"(success= and done= are not)")
        raise InputError(f"--halt {text!r}: {_HALT_HELP}")
    now = m.group(1) == "now"
    if m.group(2) is not None:
        count = int(m.group(2))
        if count < 1:
            raise InputError(f"--halt {text}: fail=N needs N >= 1 (never halting is 'never')")
        return Halt(now=now, count=count, text=text)
    percent = float(m.group(3))
    if not 0 < percent <= 100:
        raise InputError(f"--halt {text}: the percentage must be more than 0 and at most 100")
    return Halt(now=now, percent=percent, text=text)


# ---------------------------------------------------------------------------------------------
# --joblog


JOBLOG_HEADER = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n"


def joblog_path(text: str) -> tuple[Path, bool]:
    """The file, and whether to append (``+FILE``, as parallel's ``--joblog +FILE``).
    Raises :class:`InputError` for a folder that does not exist (before anything runs)."""
    append = text.startswith("+")
    path = Path(text[1:] if append else text)
    if not str(path) or path.is_dir():
        raise InputError(f"--joblog {text}: expected a file path")
    if not path.parent.is_dir():
        raise InputError(f"--joblog {text}: no such folder {path.parent}")
    return path, append


class JobLog:
    """GNU parallel's job log: a header, then one tab-separated line per finished attempt,
    in the order they finish. Buffered; :meth:`flush` writes what has accumulated."""

    def __init__(self, path: Path, *, append: bool = False) -> None:
        self.path = path
        try:
            self._file: io.TextIOWrapper | None = open(
                path, "a" if append else "w", encoding="utf-8", newline="\n")
            if self._file.tell() == 0:
                self._file.write(JOBLOG_HEADER)
        except OSError as exc:
            raise InputError(f"--joblog {path}: cannot write: {exc.strerror}") from None
        self.error = ""

    def write(self, seq: int, start: float, runtime: float, received: int, return_code: int,
              command: str, *, signaled: bool = False) -> None:
        if self._file is None:
            return
        # Killed by signal N (recorded as 128 + N; negative in results stored before that):
        # parallel logs it as exit 0, signal N.
        exitval, sig = return_code, 0
        if return_code < 0 or (signaled and 128 < return_code < 128 + 65):
            exitval, sig = 0, abs(return_code) if return_code < 0 else return_code - 128
        command = command.replace("\n", "\\n")
        self._file.write(f"{seq}\t:\t{start:.3f}\t{runtime:10.3f}\t0\t{received}\t{exitval}\t"
                         f"{sig}\t{command}\n")

    def flush(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
        except OSError as exc:  # a full disk: say so once, keep running the jobs
            self.error = f"--joblog {self.path}: cannot write: {exc.strerror}"
            print(f"torc-trio: warning: {self.error}; the job log stops here",
                  file=sys.stderr)
            self._file = None

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None


# ---------------------------------------------------------------------------------------------
# the watch


def _copy_out(paths: list[str]) -> bool:
    """Copy each file to standard output, in order (a missing one is skipped: a job that
    could not start has none). False if the reader went away."""
    try:
        sys.stdout.flush()
        out = sys.stdout.buffer
        for path in paths:
            try:
                f = open(path, "rb")
            except OSError:
                continue
            with f:
                shutil.copyfileobj(f, out)
        out.flush()
    except BrokenPipeError:
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return False
    return True


class ExecWatch:
    """``--joblog``, ``--halt`` and ``-k`` for one ``exec`` run."""

    def __init__(self, *, output_dir: Path, workflow_id: int, total_jobs: int,
                 retries: int = 0, halt: Halt | None = None, joblog: JobLog | None = None,
                 keep_order: bool = False) -> None:
        self.output_dir = output_dir
        self.workflow_id = workflow_id
        self.total_jobs = total_jobs
        self.retries = retries
        self.halt = halt
        self.joblog = joblog
        self.keep_order = keep_order
        self.failed = 0
        self.halted = False
        self.output_closed = False
        self._threshold = halt.threshold(total_jobs) if halt is not None else 0.0
        self._runner: JobRunner | None = None
        self._first_id = 1
        self._wake = trio.Event()
        self._done = False
        self._finished: dict[int, str] = {}  # -k: seq -> stdout file, waiting for its turn
        self._next = 1  # -k: the next seq to print
        self._to_print: list[str] = []

    async def run(self, runner: JobRunner) -> RunnerSummary:
        """``runner.run()``, with the task that writes the log and prints beside it."""
        self._runner = runner
        page = await runner.client.list_jobs(self.workflow_id, limit=1)
        if page.get("items"):
            self._first_id = int(page["items"][0]["id"])
        try:
            async with trio.open_nursery() as nursery:
                if self.joblog is not None or self.keep_order:
                    nursery.start_soon(self._writer)
                summary = await runner.run()
                # What never got its turn (a job halted before it ran): the rest, in order.
                self._to_print += [self._finished[k] for k in sorted(self._finished)]
                self._finished.clear()
                self._done = True
                self._wake.set()
        finally:
            if self.joblog is not None:
                self.joblog.close()
        return summary

    def job_ended(self, job: dict[str, Any], result: dict[str, Any]) -> None:
        """The runner's ``on_job_end``: in-memory work only."""
        status = result["status"]
        attempt = int(result["attempt"])
        # A failed attempt is retried (its job runs again) while attempts <= --retries.
        final = status != "failed" or attempt > self.retries
        seq = int(result["job_id"]) - self._first_id + 1
        stdout = result.get("stdout_path") or ""  # "": not kept
        if self.joblog is not None:
            runtime = float(result["exec_time_s"])
            try:
                received = os.stat(stdout).st_size
            except OSError:
                received = 0
            self.joblog.write(seq, time.time() - runtime, runtime, received,
                              int(result["return_code"]), str(job.get("command", "")),
                              signaled=result.get("failure_cause") in ("signal", "oom",
                                                                       "timeout"))
            self._wake.set()
        if status == "failed" and final:
            self.failed += 1
            if self.halt is not None and not self.halted and self.failed >= self._threshold:
                self._halt(job, result)
        if self.keep_order and final:
            self._finished[seq] = stdout
            while self._next in self._finished:
                self._to_print.append(self._finished.pop(self._next))
                self._next += 1
            if self._to_print:
                self._wake.set()

    def _halt(self, job: dict[str, Any], result: dict[str, Any]) -> None:
        assert self.halt is not None and self._runner is not None
        self.halted = True
        code = int(result["return_code"])
        how = describe_exit(code)
        count = "" if self.failed == 1 else f" ({self.failed} failed jobs)"
        then = ("terminating the running jobs" if self.halt.now
                else "letting the running jobs finish")
        reason = (f"--halt {self.halt.text}: {job.get('name')} (id {result['job_id']}) "
                  f"failed with {how}{count}; no new job starts, {then}")
        print(f"torc-trio: halting: {reason}", file=sys.stderr, flush=True)
        self._runner.stop(f"halted ({reason})", terminate=self.halt.now)

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            if self.joblog is not None:
                self.joblog.flush()
            batch, self._to_print = self._to_print, []
            if batch and not self.output_closed:
                if not await trio.to_thread.run_sync(_copy_out, batch):
                    self.output_closed = True
                    if self._runner is not None:
                        self._runner.stop("the output was closed (-k)")
            if self._done and not self._to_print:
                return
