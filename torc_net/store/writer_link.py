"""The server's end of the writer process (:mod:`.writer`): start it, hand it batches, take
its answers, stop it.

Why non-blocking and synchronous: the store hands the writer its next batch the moment the
previous one is answered, from whichever request task notices first (:meth:`Store._pump
<torc_net.store.core.Store._pump>`). Trio looks at file descriptors only between two passes
over its runnable tasks, and under a burst a pass takes a few hundred milliseconds; a writer
that waited for the next pass to hear its answer sat idle that long (measured: commits of 35
changes "taking" 130-290 ms, BENCHMARKS.md, "A writer process"). So reading an answer and
writing a batch are plain non-blocking system calls; only what does not fit into the pipe at
once is left to the store's writer task, which also waits when there is nothing else to do.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from . import writer as wp
from .changes import Change, StoreError

log = logging.getLogger("torc_net.store")

#: Bytes a pipe holds before a write would wait (Linux allows up to 1 MiB unprivileged):
#: most batches then go in one call.
PIPE_SIZE = 1 << 20


class WriterGone(Exception):
    """The writer process ended (or could not open the database): whether the batch it had
    was stored is unknown."""


class WriterLink:
    """One writer process. Trio thread only; one batch at a time (the store sees to it)."""

    def __init__(self, path: str, sync: str) -> None:
        # The child imports this package from where the server did, whatever its sys.path.
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "torc_net.store.writer", path, sync],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
        self.pid = self.proc.pid
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._out_fd = self.proc.stdin.fileno()
        self._in_fd = self.proc.stdout.fileno()
        for fd in (self._out_fd, self._in_fd):
            os.set_blocking(fd, False)
        try:
            fcntl.fcntl(self._out_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # pragma: no cover - a lower system limit: smaller writes
            pass
        self._out = bytearray()
        self._out_pos = 0
        self._in = bytearray()
        #: what the child said once it had opened the database (tests and diagnostics)
        self.hello: dict[str, Any] | None = None
        self.closed = False

    # -----------------------------------------------------------------------------------------
    # Without waiting

    def send(self, changes: list[Change], ids: dict[str, int] | None) -> None:
        """Queue a batch (see :func:`.writer.pack`) and write what the pipe takes now."""
        self._out += wp.pack(changes, ids)
        self.write_some()

    @property
    def sending(self) -> bool:
        """Part of a batch is still to be written."""
        return self._out_pos < len(self._out)

    def write_some(self) -> None:
        out = self._out
        try:
            while self._out_pos < len(out):
                self._out_pos += os.write(self._out_fd, memoryview(out)[self._out_pos:])
        except BlockingIOError:
            return
        except OSError as exc:  # EPIPE: it ended
            raise WriterGone(f"the writer process (pid {self.pid}) ended: {exc}") from exc
        out.clear()
        self._out_pos = 0

    def answer(self) -> dict[int, StoreError] | None:
        """The answer to the batch sent, if it has come: the changes that failed, with why."""
        buf = self._in
        while True:
            value = self._frame()
            if value is not None:
                if self.hello is None:
                    if "error" in value:
                        raise WriterGone(value["error"])
                    self.hello = value
                    continue
                return {i: StoreError(message, transient=transient)
                        for i, (message, transient) in value.items()}
            try:
                data = os.read(self._in_fd, 1 << 16)
            except BlockingIOError:
                return None
            except OSError as exc:  # pragma: no cover - a pipe does not fail otherwise
                raise WriterGone(f"the writer process (pid {self.pid}): {exc}") from exc
            if not data:
                raise WriterGone(f"the writer process (pid {self.pid}) ended")
            buf += data

    def _frame(self) -> Any:
        buf = self._in
        if len(buf) < wp.HEAD_SIZE:
            return None
        end = wp.HEAD_SIZE + wp.frame_length(bytes(buf[:wp.HEAD_SIZE]))
        if len(buf) < end:
            return None
        value = pickle.loads(buf[wp.HEAD_SIZE:end])  # our own child, through our own pipe
        del buf[:end]
        return value

    # -----------------------------------------------------------------------------------------
    # Waiting (the store's writer task)

    async def wait_writable(self) -> None:
        await trio.lowlevel.wait_writable(self._out_fd)

    async def wait_readable(self) -> None:
        await trio.lowlevel.wait_readable(self._in_fd)

    # -----------------------------------------------------------------------------------------
    # Stopping

    def close_pipes(self) -> None:
        """Close its stdin (it exits once it has read everything). From the trio thread if a
        task may still wait on the pipes (Trio must hear that they close)."""
        if self.closed:
            return
        self.closed = True
        for fd in (self._out_fd, self._in_fd):
            try:
                trio.lowlevel.notify_closing(fd)
            except RuntimeError:  # not in the trio thread: nothing there can wait on them
                pass
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.stdout.close()

    def reap(self, timeout: float = 30) -> None:
        """Wait for it to exit (blocking: from a thread, or for a child known to be ending)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:  # pragma: no cover - a commit stuck for 30 s
            log.error("the writer process (pid %d) did not exit; killing it", self.pid)
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """End it now (it is beyond use): its batch's fate is unknown."""
        self.close_pipes()
        self.proc.kill()
        self.reap()
