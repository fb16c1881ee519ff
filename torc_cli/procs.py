"""Running one job's process under supervision.

Each job runs as ``bash -c COMMAND`` in its own session (so it leads a process group of its
own), with stdin from /dev/null and stdout/stderr in files. Termination signals the *whole
group*: SIGTERM first, SIGKILL after a grace period, and SIGKILL once more at the end for
anything the job left behind in its group. No orphans survive a terminated job.

Fast path (Linux, ``os.pidfd_open``): the job is started with ``os.posix_spawn`` from the event
loop's thread (glibc's vfork-style clone: no copy of the runner's page tables, and the child
opens its own stdout/stderr files and calls ``setsid`` before it execs), and its exit is awaited
on a pidfd registered with Trio's epoll and reaped with ``waitpid`` here. Measured on 2 cores
with thousands of ``true`` jobs, this costs the runner about a third of the CPU time of
``subprocess.Popen`` in a worker thread (the thread hop, the GIL hand-offs and Popen's
Python-level bookkeeping were most of the runner's time; see BENCHMARKS.md), and CPU time is
what bounds throughput when the jobs themselves keep every core busy.
Elsewhere it falls back to ``trio.run_process``.
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

_FAST = hasattr(os, "pidfd_open") and hasattr(os, "posix_spawn")


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
    """One job's process; ``terminate()`` ends it (and its group) from any task.

    ``executable`` is the resolved path of ``argv[0]`` (the runner resolves ``bash`` once);
    without it the spawn searches ``PATH``.
    """

    __slots__ = (
        "_scope",
        "_terminate_requested",
        "argv",
        "env",
        "executable",
        "grace_s",
        "stderr_path",
        "stdout_path",
    )

    def __init__(self, argv: list[str], *, env: Mapping[str, str], stdout_path: str,
                 stderr_path: str, grace_s: float = 5.0, executable: str | None = None) -> None:
        self.argv = argv
        self.env = env
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self.grace_s = grace_s
        self.executable = executable
        self._scope: trio.CancelScope | None = None
        self._terminate_requested = False

    def terminate(self) -> None:
        self._terminate_requested = True
        if self._scope is not None:
            self._scope.cancel()

    async def run(self) -> ProcessOutcome:
        if _FAST and self.executable is not None:
            return await self._run_spawn()
        return await self._run_trio()

    # -- fast path ---------------------------------------------------------------------------

    async def _run_spawn(self) -> ProcessOutcome:
        started = time.monotonic()
        assert self.executable is not None
        pid = _posix_spawn(self.argv, self.executable, self.env, self.stdout_path,
                           self.stderr_path)
        status: int | None = None
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # cannot happen for our own unreaped child; be safe: reap in a thread
            pidfd = -1
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                if self._terminate_requested:
                    scope.cancel()
                status = await _wait_exit(pid, pidfd)
            if status is None:  # terminate() was called
                with trio.CancelScope(shield=True):
                    status = await self._kill_group(pid, pidfd)
        except BaseException:  # cancelled from outside (runner shutting down), interrupted
            if status is None:
                with trio.CancelScope(shield=True):
                    status = await self._kill_group(pid, pidfd)
            raise
        finally:
            self._scope = None
            if pidfd >= 0:
                trio.lowlevel.notify_closing(pidfd)
                os.close(pidfd)
            if self._terminate_requested:
                _killpg(pid, signal.SIGKILL)  # leftovers in the job's group
        elapsed = time.monotonic() - started
        return ProcessOutcome(return_code=os.waitstatus_to_exitcode(status),
                              terminated=self._terminate_requested, exec_time_s=elapsed)

    async def _kill_group(self, pid: int, pidfd: int) -> int:
        _killpg(pid, signal.SIGTERM)
        with trio.move_on_after(self.grace_s):
            return await _wait_exit(pid, pidfd)
        _killpg(pid, signal.SIGKILL)
        return await _wait_exit(pid, pidfd)

    # -- portable path -----------------------------------------------------------------------

    async def _run_trio(self) -> ProcessOutcome:
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
                        [self.executable or self.argv[0], *self.argv[1:]],
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


_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def _posix_spawn(argv: list[str], executable: str, env: Mapping[str, str], stdout_path: str,
                 stderr_path: str) -> int:
    """Start ``argv`` in a new session with stdin from /dev/null and stdout/stderr in the two
    files (created by the child before it execs); its pid. A file that cannot be opened, or an
    executable that cannot run, raises OSError here (glibc reports the child's error)."""
    actions = [
        (os.POSIX_SPAWN_DUP2, _devnull(), 0),
        (os.POSIX_SPAWN_OPEN, 1, stdout_path, _OPEN_FLAGS, 0o644),
        (os.POSIX_SPAWN_OPEN, 2, stderr_path, _OPEN_FLAGS, 0o644),
    ]
    return os.posix_spawn(executable, argv, env, file_actions=actions, setsid=True)


def seal_inherited_fds() -> None:
    """Make every descriptor above stderr close-on-exec.

    ``posix_spawn`` has no ``close_fds``: a job would inherit whatever inheritable descriptors
    the runner was started with (Python's own are never inheritable). Called once per runner.
    """
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in fds:
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:  # the directory's own descriptor, already closed
                pass


_DEVNULL: list[int] = []


def _devnull() -> int:
    """One shared read-only /dev/null descriptor for every job's stdin (close-on-exec here;
    the child gets it dup2'ed onto fd 0)."""
    if not _DEVNULL:
        _DEVNULL.append(os.open(os.devnull, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)))
    return _DEVNULL[0]


async def _wait_exit(pid: int, pidfd: int) -> int:
    """Wait for our child ``pid`` to exit and reap it; its wait status."""
    if pidfd < 0:
        return (await trio.to_thread.run_sync(os.waitpid, pid, 0, abandon_on_cancel=True))[1]
    while True:
        await trio.lowlevel.wait_readable(pidfd)
        got, status = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 -- WNOHANG: never blocks
        if got == pid:
            return status
