"""The spawner: a small helper process that starts a runner's jobs, reaps them and reports.

Why a process of its own: ``posix_spawn`` (glibc's vfork-style clone) returns only once the
child has exec'd, and on a node whose cores are busy with jobs the new child first waits its
turn for a CPU: ~1 ms per spawn with 32 jobs on 2 cores. In the runner, that wait stalled
everything else (claims, reports, reaping) for ~70 % of its wall time, and spawns could not
overlap its other work. Here the wait costs nothing but this loop, which does nothing else;
the runner only writes requests and reads outcomes. Measured (5,000 ``true`` jobs, 32 at a
time, 2 cores, same minute): spawning from the runner's loop 1,100-1,250 jobs/s, through this
helper 1,270-1,330, xargs -P 32 1,250-1,330.

Run as a script (``python -S spawner.py FD``), standard library only, so that it starts in
~20 ms and stays small. It speaks over one Unix stream socket (``FD``), in frames of a 4-byte
little-endian length and a :mod:`marshal`-encoded value (both ends are this file's code; the
peer is our own parent):

* requests, one tuple per frame: ``("env", env_id, environment)`` (a base environment, sent
  once, that later spawns name), ``("spawn", token, executable, argv, env_id, changes,
  stdout, stderr, want_pid)`` (the job's environment is base ``env_id`` (0: empty) with
  ``changes``, where a value of None removes the variable; a path of None discards that
  stream; stderr equal to stdout shares its file; ``want_pid``: reply with the job's pid once
  started, for the runner's resource monitor), ``("signal", token, signum)`` (to the job's
  whole process group, if it has not been reaped);
* replies, a list of tuples per frame: ``("started", token, pid)`` (asked for),
  ``("exited", token, wait_status, exec_time_s)``,
  ``("failed", token, errno, message, file)`` (the job could not be started).

Why a base environment: a job's environment is the runner's (~40 variables) plus five of its
own, and sending, decoding and encoding all of it for every job was a tenth of this process's
CPU; the base is kept here encoded once, and a job costs only its own variables.

Each job runs in its own session (its group is the job), stdin from /dev/null, stdout and
stderr opened by the child before exec, default signal dispositions. A job that was signalled
gets SIGKILL to its group once reaped, for whatever it left behind. When the socket closes
(the runner is done, or died), every job still running gets SIGKILL to its group and the
spawner exits once all are reaped: jobs never outlive their runner.

It ignores SIGINT, SIGTERM and SIGHUP: a Ctrl-C in the terminal, or Slurm signalling every
process of an allocation, is for the runner, which terminates the jobs itself (with a grace
period) and then closes the socket.
"""

from __future__ import annotations

import marshal
import os
import select
import signal
import struct
import sys
import time
from typing import Any

HEADER = struct.Struct("<I")
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
#: Dispositions the spawner changes (or Python changes) that a job must not inherit.
_RESET = tuple(getattr(signal, name) for name in (
    "SIGPIPE", "SIGXFSZ", "SIGINT", "SIGTERM", "SIGHUP", "SIGCHLD") if hasattr(signal, name))


def frame(value: Any) -> bytes:
    payload = marshal.dumps(value)
    return HEADER.pack(len(payload)) + payload


def unframe(buf: bytearray) -> list[object]:
    """Remove and decode every complete frame at the start of ``buf``."""
    out: list[object] = []
    pos = 0
    while len(buf) - pos >= HEADER.size:
        (n,) = HEADER.unpack_from(buf, pos)
        if len(buf) - pos - HEADER.size < n:
            break
        out.append(marshal.loads(bytes(buf[pos + HEADER.size:pos + HEADER.size + n])))
        pos += HEADER.size + n
    del buf[:pos]
    return out


class Spawner:
    def __init__(self, sock_fd: int) -> None:
        self.fd = sock_fd
        os.set_inheritable(sock_fd, False)
        self.devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.devnull_w = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        #: env_id -> a base environment, encoded (os.posix_spawn takes bytes as they are)
        self.envs: dict[int, dict[bytes, bytes] | ValueError] = {0: {}}
        self.jobs: dict[int, tuple[int, float]] = {}  # pid -> (token, started)
        self.pids: dict[int, int] = {}  # token -> pid
        self.signalled: set[int] = set()  # pids
        self.replies: list[tuple[object, ...]] = []
        self.child_exited = False
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, self._on_sigchld)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)

    def _on_sigchld(self, signum: int, frame_: object) -> None:
        self.child_exited = True

    def run(self) -> None:
        buf = bytearray()
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        open_ = True
        while open_ or self.jobs:
            for fd, _ in poller.poll():
                if fd == self.wake_r:
                    try:
                        while os.read(self.wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                try:
                    data = os.read(self.fd, 1 << 16)
                except OSError:  # ECONNRESET: the runner closed with requests unread
                    data = b""
                if not data:  # the runner is gone: so are its jobs
                    open_ = False
                    poller.unregister(self.fd)
                    for pid in self.jobs:
                        _killpg(pid, signal.SIGKILL)
                    continue
                buf += data
                for request in unframe(buf):
                    self.handle(request)  # type: ignore[arg-type]
                    if self.child_exited:  # reaped between spawns, reported with the batch
                        self.reap()
            self.reap()
            if open_:
                self.flush()

    def handle(self, request: tuple[object, ...]) -> None:
        kind, token = request[0], int(request[1])  # type: ignore[call-overload]
        if kind == "spawn":
            executable, argv, env_id, changes, stdout, stderr, want_pid = request[2:9]
            try:
                env = self.environment(env_id, changes)
            except ValueError as exc:  # not encodable (a lone surrogate)
                self.replies.append(("failed", token, 22, str(exc), None))  # EINVAL
                return
            actions = [(os.POSIX_SPAWN_DUP2, self.devnull, 0),
                       self.output(1, stdout, None), self.output(2, stderr, stdout)]
            # The clock starts before the spawn: posix_spawn returns once the child has
            # exec'd, and on busy cores a short job may have run to its end by then.
            started = time.monotonic()
            try:
                pid = os.posix_spawn(executable, argv, env,  # type: ignore[arg-type]
                                     file_actions=actions, setsid=True, setsigdef=_RESET)
            except ValueError as exc:  # a NUL in an argument or the environment
                self.replies.append(("failed", token, 22, str(exc), None))  # EINVAL
                return
            except OSError as exc:
                paths = [p for p in (stdout, stderr) if p is not None]
                self.replies.append(("failed", token, *_diagnose(exc, *paths)))
                return
            self.jobs[pid] = (token, started)
            self.pids[token] = pid
            if want_pid:  # before its exit in the same batch: replies keep their order
                self.replies.append(("started", token, pid))
        elif kind == "env":
            try:
                self.envs[token] = {os.fsencode(k): os.fsencode(v)
                                    for k, v in request[2].items()}  # type: ignore[attr-defined]
            except ValueError as exc:  # every job given this base fails with it
                self.envs[token] = exc
        elif kind == "signal":
            pid = self.pids.get(token, 0)
            if pid:
                self.signalled.add(pid)
                _killpg(pid, int(request[2]))  # type: ignore[call-overload]

    def environment(self, env_id: Any, changes: Any) -> dict[bytes, bytes]:
        """A job's environment: the base ``env_id`` with ``changes`` (None: removed)."""
        base = self.envs[env_id]
        if isinstance(base, ValueError):
            raise base
        env = base.copy()
        for key, value in changes.items():
            if value is None:
                env.pop(os.fsencode(key), None)
            else:
                env[os.fsencode(key)] = os.fsencode(value)
        return env

    def output(self, fd: int, path: object, other: object) -> tuple[Any, ...]:
        """The file action for stdout/stderr: the file (None: discarded; the same path as
        stdout: one file with both, in the order written)."""
        if path is None:
            return (os.POSIX_SPAWN_DUP2, self.devnull_w, fd)
        if path == other:
            return (os.POSIX_SPAWN_DUP2, 1, fd)
        return (os.POSIX_SPAWN_OPEN, fd, path, _OPEN_FLAGS, 0o644)

    def reap(self) -> None:
        self.child_exited = False
        while self.jobs:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            token, started = self.jobs.pop(pid)
            del self.pids[token]
            if pid in self.signalled:
                self.signalled.discard(pid)
                _killpg(pid, signal.SIGKILL)  # leftovers in the job's group
            self.replies.append(("exited", token, status, time.monotonic() - started))

    def flush(self) -> None:
        if self.replies:
            data = frame(self.replies)
            self.replies = []
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(self.fd, view):]
                except OSError:  # EPIPE, ECONNRESET: the runner is gone; run() sees EOF next
                    return


def _diagnose(exc: OSError, *paths: Any) -> tuple[int, str, str | None]:
    """(errno, message, file) of a failed spawn. glibc reports only an errno, and Python names
    the executable in it; when an output file was the problem (its directory is gone, say),
    name that file instead."""
    for path in paths:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        except OSError as err:
            return err.errno or exc.errno or 5, err.strerror or str(err), str(path)
    return exc.errno or 5, exc.strerror or str(exc), exc.filename  # 5: EIO


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str]) -> int:
    Spawner(int(argv[1])).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
