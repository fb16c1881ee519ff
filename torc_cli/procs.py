"""Running one job's process under supervision.

Each job runs as ``bash -c COMMAND`` in its own session (so it leads a process group of its
own), with stdout/stderr in files. It is started with ``nursery.start(trio.run_process, ...)``
so the Process object is known: termination then signals the *whole group*, SIGTERM first,
SIGKILL after a grace period, and SIGKILL once more at the end for anything the job left behind
in its group. No orphans survive a terminated job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import trio


@dataclass(slots=True)
class ProcessOutcome:
    return_code: int
    terminated: bool
    exec_time_s: float


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def make_group_killer(grace_s: float):  # type: ignore[no-untyped-def]
    """A ``deliver_cancel`` for trio.run_process that signals the job's process group."""

    async def deliver_cancel(proc: trio.Process) -> None:
        _killpg(proc.pid, signal.SIGTERM)
        with trio.move_on_after(grace_s):
            await proc.wait()
        _killpg(proc.pid, signal.SIGKILL)

    return deliver_cancel


class JobProcess:
    """One job's process; ``terminate()`` ends it (and its group) from any task."""

    def __init__(self, argv: list[str], *, env: Mapping[str, str], stdout_path: str,
                 stderr_path: str, grace_s: float = 5.0) -> None:
        self.argv = argv
        self.env = env
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self.grace_s = grace_s
        self._scope: trio.CancelScope | None = None
        self._terminate_requested = False

    def terminate(self) -> None:
        self._terminate_requested = True
        if self._scope is not None:
            self._scope.cancel()

    async def run(self) -> ProcessOutcome:
        # Opening two local files is a few microseconds; a thread hop per job would cost more.
        out_fd = os.open(self.stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            err_fd = os.open(self.stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except BaseException:
            os.close(out_fd)
            raise
        started = time.monotonic()
        proc: trio.Process | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                if self._terminate_requested:
                    nursery.cancel_scope.cancel()
                proc = await nursery.start(
                    partial(
                        trio.run_process,
                        self.argv,
                        stdin=subprocess.DEVNULL,
                        stdout=out_fd,
                        stderr=err_fd,
                        env=dict(self.env),
                        start_new_session=True,
                        check=False,
                        deliver_cancel=make_group_killer(self.grace_s),
                    )
                )
        finally:
            os.close(out_fd)
            os.close(err_fd)
            if proc is not None and self._terminate_requested:
                _killpg(proc.pid, signal.SIGKILL)  # leftovers in the job's group
        elapsed = time.monotonic() - started
        if self._terminate_requested:
            code = proc.returncode if proc is not None and proc.returncode is not None else -15
            return ProcessOutcome(return_code=code, terminated=True, exec_time_s=elapsed)
        assert proc is not None and proc.returncode is not None
        return ProcessOutcome(return_code=proc.returncode, terminated=False, exec_time_s=elapsed)
