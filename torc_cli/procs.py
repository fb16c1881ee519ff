"""Job processes: started, watched, terminated and reaped many at a time by one task.

Each job runs as ``bash -c COMMAND`` in its own session (so it leads a process group of its
own), with stdin from /dev/null and stdout/stderr in files. Terminating a job signals its
*whole group*: SIGTERM first, SIGKILL after a grace period, and SIGKILL once more once it has
exited, for anything it left behind in its group. No orphans survive a terminated job.

Why a table rather than a task per process: a runner with thousands of short jobs spends its
CPU time per job, and on a node whose cores are busy with those jobs that time is what bounds
throughput. So a job costs one ``os.posix_spawn`` (glibc's vfork-style clone: no copy of the
runner's page tables; the child opens its own output files and calls ``setsid`` before it
execs) and, on Linux >= 5.3, one pidfd in a private epoll set that Trio watches as a single
descriptor. One task (:meth:`ProcessTable.run`) reaps whatever exited and calls the job's
callback; it also sends the SIGKILLs whose grace period ran out. No task, cancel scope or Trio
registration per job. (Measured on 2 cores, 10,000 ``true`` jobs: ``subprocess.Popen`` in a
worker thread cost the runner ~0.8 ms of CPU per job, a Trio task with its own pidfd ~0.4 ms;
see BENCHMARKS.md.)

Kernels without pidfds (RHEL 8's 4.18): each child is waited for by a thread from Trio's
thread cache, which hands the exit back to the loop; everything else is the same.

When :meth:`ProcessTable.run` is cancelled (the runner is stopping, or failed), every process
still running is terminated as above before it returns: structured concurrency holds for the
jobs too.
"""

from __future__ import annotations

import math
import os
import select
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio


@dataclass(slots=True)
class ProcessOutcome:
    return_code: int
    terminated: bool
    exec_time_s: float


ExitCallback = Callable[[ProcessOutcome], None]

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
#: Python ignores these; a job must not inherit that (``yes | head`` relies on SIGPIPE).
#: subprocess.Popen's ``restore_signals`` resets the same ones.
_RESTORED_SIGNALS = tuple(getattr(signal, n) for n in ("SIGPIPE", "SIGXFZ", "SIGXFSZ")
                          if hasattr(signal, n))


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _pidfds_work() -> bool:
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # ENOSYS: an older kernel
        return False
    return True


PIDFDS = _pidfds_work()


@dataclass(slots=True)
class _Child:
    pid: int
    pidfd: int  # -1: waited for by a thread
    started: float
    on_exit: ExitCallback
    terminated: bool = False


class ProcessTable:
    """The running processes of one runner (use from the Trio thread only)."""

    def __init__(self, *, grace_s: float = 5.0, use_pidfds: bool = PIDFDS) -> None:
        self.grace_s = grace_s
        self._use_pidfds = use_pidfds
        self._epoll = select.epoll() if use_pidfds else None
        self._wake_r = self._wake_w = -1
        if self._epoll is not None:
            # Written to when a kill deadline is set, so that run() wakes up for it.
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._epoll.register(self._wake_r, select.EPOLLIN)
        self._by_pid: dict[int, _Child] = {}
        self._by_fd: dict[int, _Child] = {}
        #: Terminated children still running: when their group gets SIGKILL.
        self._kill_at: dict[int, float] = {}
        self._changed = trio.Event()  # without pidfds: a thread reaped a child, or a deadline
        self._reaped: list[tuple[int, int]] = []  # (pid, wait status) from waiter threads
        self._token: trio.lowlevel.TrioToken | None = None

    def __len__(self) -> int:
        return len(self._by_pid)

    def spawn(self, argv: list[str], *, executable: str, env: Mapping[str, str],
              stdout_path: str, stderr_path: str, on_exit: ExitCallback) -> int:
        """Start ``argv`` in a new session; ``on_exit`` is called (from :meth:`run`) once it
        has exited and been reaped. Returns the pid. A file that cannot be opened, or an
        executable that cannot run, raises OSError here (glibc reports the child's error)."""
        actions = [
            (os.POSIX_SPAWN_DUP2, _devnull(), 0),
            (os.POSIX_SPAWN_OPEN, 1, stdout_path, _OPEN_FLAGS, 0o644),
            (os.POSIX_SPAWN_OPEN, 2, stderr_path, _OPEN_FLAGS, 0o644),
        ]
        pid = os.posix_spawn(executable, argv, env, file_actions=actions, setsid=True,
                             setsigdef=_RESTORED_SIGNALS)
        child = _Child(pid, -1, time.monotonic(), on_exit)
        self._by_pid[pid] = child
        if self._epoll is not None:
            child.pidfd = os.pidfd_open(pid)  # our unreaped child: cannot fail for ESRCH
            self._by_fd[child.pidfd] = child
            self._epoll.register(child.pidfd, select.EPOLLIN)
        else:
            if self._token is None:
                self._token = trio.lowlevel.current_trio_token()
            token = self._token

            def waited(result: Any) -> None:
                token.run_sync_soon(self._thread_reaped, pid, result.unwrap()[1])

            trio.lowlevel.start_thread_soon(lambda: os.waitpid(pid, 0), waited)
        return pid

    def terminate(self, pid: int) -> None:
        """SIGTERM to the job's group now, SIGKILL after the grace period (if still there)."""
        child = self._by_pid.get(pid)
        if child is None or child.terminated:
            return
        child.terminated = True
        self._kill_at[pid] = time.monotonic() + self.grace_s
        _killpg(pid, signal.SIGTERM)
        self._poke()

    def terminate_all(self) -> None:
        for pid in list(self._by_pid):
            self.terminate(pid)

    async def run(self) -> None:
        """Reap exited children and deliver their outcomes until cancelled; then terminate
        and reap whatever is still running (shielded, bounded by the grace period)."""
        try:
            while True:
                await self._wait_for_events()
        finally:
            if self._by_pid:
                # Bounded: a process stuck in the kernel may outlive even SIGKILL for a while.
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + self.grace_s + 10
                    self.terminate_all()
                    while self._by_pid:
                        await self._wait_for_events()

    def close(self) -> None:
        """Release the descriptors (after :meth:`run` has returned)."""
        for fd in (*self._by_fd, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._by_fd.clear()
        self._wake_r = self._wake_w = -1
        if self._epoll is not None:
            self._epoll.close()

    async def wait(self, argv: list[str], *, executable: str, env: Mapping[str, str],
                   stdout_path: str, stderr_path: str) -> ProcessOutcome:
        """Run one process to its end (needs :meth:`run` going); terminated if cancelled."""
        done = trio.Event()
        box: list[ProcessOutcome] = []

        def on_exit(outcome: ProcessOutcome) -> None:
            box.append(outcome)
            done.set()

        pid = self.spawn(argv, executable=executable, env=env, stdout_path=stdout_path,
                         stderr_path=stderr_path, on_exit=on_exit)
        try:
            await done.wait()
        finally:
            if not box:
                self.terminate(pid)
                with trio.CancelScope(shield=True):
                    await done.wait()
        return box[0]

    # ------------------------------------------------------------------------------------------

    async def _wait_for_events(self) -> None:
        deadline = min(self._kill_at.values(), default=math.inf)
        if deadline < math.inf:
            deadline = trio.current_time() + max(0.0, deadline - time.monotonic())
        with trio.move_on_at(deadline):
            if self._epoll is not None:
                await trio.lowlevel.wait_readable(self._epoll.fileno())
            else:
                self._changed = trio.Event()
                if not self._reaped:
                    await self._changed.wait()
        self._reap()
        now = time.monotonic()
        for pid, kill_at in list(self._kill_at.items()):
            if kill_at <= now:
                del self._kill_at[pid]
                _killpg(pid, signal.SIGKILL)

    def _poke(self) -> None:
        """Wake :meth:`run` (a kill deadline was set)."""
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:  # already poked
                pass
        self._changed.set()

    def _reap(self) -> None:
        if self._epoll is not None:
            for fd, _ in self._epoll.poll(0):
                if fd == self._wake_r:
                    try:
                        while os.read(fd, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                child = self._by_fd.pop(fd)
                self._epoll.unregister(fd)
                os.close(fd)
                _, status = os.waitpid(child.pid, 0)  # it has exited: does not block
                self._finish(child, status)
        reaped, self._reaped = self._reaped, []
        for pid, status in reaped:
            self._finish(self._by_pid[pid], status)

    def _thread_reaped(self, pid: int, status: int) -> None:
        self._reaped.append((pid, status))
        self._changed.set()

    def _finish(self, child: _Child, status: int) -> None:
        del self._by_pid[child.pid]
        self._kill_at.pop(child.pid, None)
        if child.terminated:
            _killpg(child.pid, signal.SIGKILL)  # leftovers in the job's group
        child.on_exit(ProcessOutcome(
            return_code=os.waitstatus_to_exitcode(status), terminated=child.terminated,
            exec_time_s=time.monotonic() - child.started,
        ))


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
