"""Job processes: started, watched, terminated and reaped many at a time.

Each job runs as ``bash -c COMMAND`` in its own session (so it leads a process group of its
own), with stdin from /dev/null and stdout/stderr in files. Terminating a job signals its
*whole group*: SIGTERM first, SIGKILL after a grace period, and SIGKILL once more once it has
exited, for anything it left behind in its group. No orphans survive a terminated job.

The processes are started and reaped by the runner's spawners, small helper processes
(:mod:`torc_cli.spawner`; why: a vfork-style spawn blocks its caller until the child has
exec'd, and that must not stall the runner). There are :data:`SPAWNERS` of them (fewer when
fewer jobs can run at once: :func:`spawner_count`), and each job goes to the one with the
fewest jobs: while one spawner waits for its child to exec (milliseconds when the cores are
busy: the child waits for a CPU like every other process), another can start the next job. With
one, that wait capped the rate of a whole runner (measured on a 2-core host with other work on
it, 4,000 ``true`` jobs 32 at a time, the spawners driven directly: one spawner 325-375 jobs/s,
two 737-845, four 850-892, xargs -P 32 302-413 in the same minutes; with the whole test in one
cpu cgroup, where the jobs' sessions get no scheduler autogroup of their own and so no larger
share than xargs's jobs: one 515-727, two 966-1077, xargs 857-927). Three since 2026-12-04: on
an otherwise idle host three cost nothing against two (10,000 ``true`` through
``bench_exec.py``, 5 interleaved rounds: torc-trio with two / with three 1.002 on tmpfs, 1.001
on ext4; four: 1.014 and 1.006), and with the two cores taken by two busy processes (``yes``),
the waits are longer and more spawners overlap more of them: two 518 jobs/s, three 711, four
848, xargs 696.

The table is the runner's side of it: :meth:`ProcessTable.spawn` writes a request and returns
a handle at once, and :meth:`ProcessTable.run` reads the outcomes (a task per spawner) and
calls each job's callback; one more task sends the SIGKILLs whose grace period ran out. No
task, cancel scope, pidfd or Trio registration per job. A spawn that fails (an output file
that cannot be created) is delivered like an exit, with :attr:`ProcessOutcome.error` set.

When :meth:`ProcessTable.run` is cancelled (the runner is stopping, or failed), every process
still running is terminated as above before it returns: structured concurrency holds for the
jobs too. If the runner dies without that, each spawner sees its socket close and kills every
job's group.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .alarm import Alarm
from .spawner import frame, unframe

SPAWNER = str(Path(__file__).with_name("spawner.py"))


@dataclass(slots=True)
class ProcessOutcome:
    #: The exit status, or 128 + N for a process killed by signal N: the one convention of
    #: shells, srun and Torc (137 is SIGKILL), so a code means the same whoever reports it.
    return_code: int
    terminated: bool
    exec_time_s: float
    #: The process could not be started (return_code 127): an output file that cannot be
    #: created, an executable that cannot run, too many processes.
    error: OSError | None = None
    #: The signal that killed the process itself (None: it exited), for the result's
    #: failure_cause: a shell reporting 137 for a child is an exit, not a signal.
    signal: int | None = None


def describe_exit(code: int) -> str:
    """'exit code 3', 'exit code 137 (killed by SIGKILL)'; a negative code (results stored
    before the 128 + N convention) as 'killed by SIGTERM'."""
    if code < 0 or 128 < code < 128 + 65:
        signum = -code if code < 0 else code - 128
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return f"killed by {name}" if code < 0 else f"exit code {code} (killed by {name})"
    return f"exit code {code}"


def exit_code(wait_status: int) -> tuple[int, int | None]:
    """(return code, killing signal) of a wait status: 128 + N for signal N."""
    if os.WIFSIGNALED(wait_status):
        signum = os.WTERMSIG(wait_status)
        return 128 + signum, signum
    return os.waitstatus_to_exitcode(wait_status), None


ExitCallback = Callable[[ProcessOutcome], None]


@dataclass(slots=True)
class _Child:
    on_exit: ExitCallback
    link: _Link  # its spawner
    terminated: bool = False


class SpawnerFailed(RuntimeError):
    """A spawner process died (someone killed it): the outcomes of the jobs it was running
    are unknown, and those jobs may still run, orphaned. The runner stops; the server's
    leases put its jobs back in time."""


#: Spawner processes per runner (the module docstring says why more than one).
SPAWNERS = 3


def spawner_count(max_parallel: int | None) -> int:
    """The spawners a runner starts: :data:`SPAWNERS`, or one per job when fewer can run at
    once (``-j``): a spawner's wait overlaps only the other spawners' starts, so ``-j 1`` has
    no use for a second one."""
    if max_parallel is None or max_parallel < 1:
        return SPAWNERS
    return min(SPAWNERS, max_parallel)


class SpawnerProcess:
    """A started spawner process and our end of its socket. Closing is idempotent; a
    spawner whose socket closes exits, killing whatever it still runs."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.proc = proc
        self.sock = sock

    @classmethod
    def start(cls) -> SpawnerProcess:
        ours, theirs = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-S", SPAWNER, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        return cls(proc, ours)

    def close(self) -> None:
        """Close our end and wait for the spawner to exit (blocking: it exits at once unless
        it still has jobs to kill and reap)."""
        self.sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()



class Spawners:
    """A runner's spawner processes. Started by :class:`ProcessTable` when it runs, or
    earlier by whoever will run it (:meth:`start`, then ``ProcessTable(spawners=...)``):
    `run` and `exec` start them before they create the workflow, so that their interpreters'
    start-up (~50-100 ms on busy cores) is not between the first claim and the first job."""

    def __init__(self, members: list[SpawnerProcess]) -> None:
        self.members = members

    @classmethod
    def start(cls, count: int = SPAWNERS) -> Spawners:
        members: list[SpawnerProcess] = []
        try:
            for _ in range(count):
                members.append(SpawnerProcess.start())
        except BaseException:
            cls(members).close()
            raise
        return cls(members)

    def close(self) -> None:
        for member in self.members:
            member.close()

    def __enter__(self) -> Spawners:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Link:
    """Our side of one spawner: requests not yet written, replies not yet decoded, and how
    many of its jobs have not reported (a new job goes to the spawner with fewest)."""

    __slots__ = ("jobs", "out", "pending", "sock", "wrote")

    def __init__(self) -> None:
        self.sock: socket.socket | None = None  # once started
        self.out = bytearray()
        self.pending = bytearray()
        self.wrote = trio.Event()  # set when out gains data, for its writer task
        self.jobs = 0


class ProcessTable:
    """The running processes of one runner (use from the Trio thread only)."""

    def __init__(self, *, grace_s: float = 5.0, spawners: Spawners | None = None,
                 count: int = SPAWNERS) -> None:
        """``spawners``: started already (else :meth:`run` starts ``count``)."""
        self.grace_s = grace_s
        self._live: dict[int, _Child] = {}  # token -> child, until its outcome is delivered
        self._next_token = 1
        self._next_env = 1  # 0: the spawners' empty base environment
        #: Terminated children still running: when (Trio clock) their group gets SIGKILL.
        self._kill_at: dict[int, float] = {}
        self._alarm = Alarm()  # the SIGKILL task's sleep
        #: the helper processes (given, or started by run()), until close()
        self._spawners = spawners
        self._links = [_Link() for _ in (spawners.members if spawners else range(count))]
        self._eof = False
        #: token -> pid of the jobs spawned with ``want_pid``, once started, until reaped
        self._pids: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._live)

    def base_environment(self, env: Mapping[str, str]) -> int:
        """Send ``env`` to the spawner once, as a base for the environments of later
        :meth:`spawn` calls (``base_env``); returns its id. Why: a job's environment is
        mostly the runner's, and sending all of it per job was a tenth of the spawner's
        CPU (it keeps the base encoded)."""
        env_id = self._next_env
        self._next_env += 1
        for link in self._links:
            self._send(link, ("env", env_id, dict(env)))
        return env_id

    def spawn(self, argv: list[str], *, executable: str, env: Mapping[str, str | None],
              stdout_path: str | None, stderr_path: str | None,
              on_exit: ExitCallback, want_pid: bool = False, base_env: int = 0) -> int:
        """Start ``argv`` in a new session; ``on_exit`` is called (from :meth:`run`) once it
        has exited and been reaped, or, with ``error`` set, if it could not start. Returns
        the job's handle for :meth:`terminate`. Its environment is ``env``, or with
        ``base_env`` (:meth:`base_environment`) that base changed by ``env`` (a value of None
        removes the variable). ``want_pid``: learn its pid (:meth:`pid_of`), for the resource
        monitor; off, no reply costs a job anything."""
        token = self._next_token
        self._next_token += 1
        link = min(self._links, key=_jobs)
        link.jobs += 1
        self._live[token] = _Child(on_exit, link)
        self._send(link, ("spawn", token, executable, list(argv), base_env, dict(env),
                          stdout_path, stderr_path, want_pid))
        return token

    def pid_of(self, token: int) -> int | None:
        """The pid of a job spawned with ``want_pid`` while it runs (None before the spawner
        has said, or once it has been reaped: never a pid that may be reused)."""
        return self._pids.get(token)

    def terminate(self, token: int, *, grace_s: float | None = None,
                  signum: int = signal.SIGTERM) -> None:
        """``signum`` (SIGTERM; a workflow's ``termination_signal`` at the end of an
        allocation) to the job's group now, SIGKILL after the grace period (if still there).
        Again, with a shorter ``grace_s``, brings the SIGKILL forward (a second Ctrl-C)."""
        child = self._live.get(token)
        if child is None:
            return
        kill_at = trio.current_time() + (self.grace_s if grace_s is None else grace_s)
        if child.terminated:
            if kill_at >= self._kill_at.get(token, math.inf):
                return
        else:
            child.terminated = True
            self._send(child.link, ("signal", token, int(signum)))
        self._kill_at[token] = kill_at
        self._alarm.bring_forward(kill_at)

    def terminate_all(self, *, grace_s: float | None = None) -> None:
        for token in list(self._live):
            self.terminate(token, grace_s=grace_s)

    async def run(self) -> None:
        """Deliver outcomes until cancelled; then terminate whatever is still running and
        deliver those outcomes too (shielded, bounded by the grace period)."""
        self._start()
        # The writers outlive a cancellation of run(): the terminations must go out.
        writers = [trio.CancelScope(shield=True) for _ in self._links]

        async def write(link: _Link, scope: trio.CancelScope) -> None:
            with scope:
                await self._write_requests(link)

        async with trio.open_nursery() as nursery:
            for link, scope in zip(self._links, writers, strict=True):
                nursery.start_soon(write, link, scope)
            try:
                await self._serve(until_done=False)
            finally:
                try:
                    if self._live and not self._eof:
                        # Bounded: a process stuck in the kernel may outlive even SIGKILL.
                        with trio.CancelScope(shield=True) as scope:
                            scope.deadline = trio.current_time() + self.grace_s + 10
                            self.terminate_all()
                            await self._serve(until_done=True)
                finally:
                    for scope in writers:
                        scope.cancel()

    def close(self) -> None:
        """Stop the spawners (after :meth:`run` has returned): each exits once its socket
        closes, killing anything still running."""
        if self._spawners is not None:
            self._spawners.close()
            self._spawners = None

    async def wait(self, argv: list[str], *, executable: str, env: Mapping[str, str],
                   stdout_path: str | None, stderr_path: str | None) -> ProcessOutcome:
        """Run one process to its end (needs :meth:`run` going); terminated if cancelled.
        Raises the OSError of a process that could not start."""
        done = trio.Event()
        box: list[ProcessOutcome] = []

        def on_exit(outcome: ProcessOutcome) -> None:
            box.append(outcome)
            done.set()

        token = self.spawn(argv, executable=executable, env=env, stdout_path=stdout_path,
                           stderr_path=stderr_path, on_exit=on_exit)
        try:
            await done.wait()
        finally:
            if not box:
                self.terminate(token)
                with trio.CancelScope(shield=True):
                    await done.wait()
        if box[0].error is not None:
            raise box[0].error
        return box[0]

    # ------------------------------------------------------------------------------------------

    def _start(self) -> None:
        """Connect each link to its spawner (started now unless they were given)."""
        if self._spawners is None:
            self._spawners = Spawners.start(len(self._links))
        for link, member in zip(self._links, self._spawners.members, strict=True):
            link.sock = member.sock

    def _send(self, link: _Link, request: tuple[Any, ...]) -> None:
        link.out += frame(request)
        link.wrote.set()

    async def _write_requests(self, link: _Link) -> None:
        assert link.sock is not None
        while True:
            if not link.out:
                link.wrote = trio.Event()
                await link.wrote.wait()
            try:
                sent = link.sock.send(link.out)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(link.sock)
                continue
            except OSError:  # the spawner is gone: the reader reports it
                return
            del link.out[:sent]

    async def _serve(self, *, until_done: bool) -> None:
        """Read every spawner's outcomes and send the SIGKILLs that come due, until cancelled
        (``until_done``: until no job is left)."""
        if until_done and not self._live:
            return
        async with trio.open_nursery() as nursery:
            for link in self._links:
                nursery.start_soon(self._read_outcomes, link, nursery.cancel_scope, until_done)
            nursery.start_soon(self._kill_when_due)

    async def _read_outcomes(self, link: _Link, scope: trio.CancelScope,
                             until_done: bool) -> None:
        assert link.sock is not None
        while True:
            await trio.lowlevel.wait_readable(link.sock)
            self._receive(link)
            if until_done and not self._live:
                scope.cancel()

    async def _kill_when_due(self) -> None:
        """SIGKILL to each terminated job whose grace period ran out (:meth:`terminate`
        brings this task's wait forward)."""
        while True:
            await self._alarm.sleep_until(min(self._kill_at.values(), default=math.inf))
            now = trio.current_time()
            for token, kill_at in list(self._kill_at.items()):
                if kill_at <= now:
                    del self._kill_at[token]
                    self._send(self._live[token].link, ("signal", token, int(signal.SIGKILL)))

    def _receive(self, link: _Link) -> None:
        assert link.sock is not None
        while True:
            try:
                data = link.sock.recv(1 << 16)
            except BlockingIOError:
                break
            if not data:  # only close() closes the socket: the spawner died
                self._eof = True
                raise SpawnerFailed(f"a job spawner exited unexpectedly; {link.jobs} job(s) "
                                    "had not reported")
            link.pending += data
        for replies in unframe(link.pending):
            for reply in replies:  # type: ignore[attr-defined]
                self._deliver(reply)

    def _deliver(self, reply: tuple[Any, ...]) -> None:
        kind, token = reply[0], reply[1]
        if kind == "started":
            self._pids[token] = reply[2]
            return
        self._pids.pop(token, None)
        child = self._live.pop(token)
        child.link.jobs -= 1
        self._kill_at.pop(token, None)
        if kind == "exited":
            code, signum = exit_code(reply[2])
            outcome = ProcessOutcome(return_code=code, terminated=child.terminated,
                                     exec_time_s=reply[3], signal=signum)
        else:
            outcome = ProcessOutcome(return_code=127, terminated=False, exec_time_s=0.0,
                                     error=OSError(*reply[2:5]))
        child.on_exit(outcome)


def _jobs(link: _Link) -> int:
    return link.jobs
