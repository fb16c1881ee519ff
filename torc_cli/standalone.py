"""The standalone (ephemeral) server: started for one command, shut down when it ends.

It runs as a child process (``python -m torc_net.server`` on 127.0.0.1, a free port; see
:func:`torc_cli.early.start_server_process`) so the server and the runner each get a core of
their own. :func:`ephemeral_server` supervises it under the caller's nursery: it learns the
port from the child's stdout (and keeps that pipe drained), and on exit, also on Ctrl-C,
SIGTERM or an error, sends it SIGTERM (which makes it commit and exit), then SIGKILL if it does
not go within a bound. The process is usually started by :mod:`torc_cli.main` before the CLI's
own imports, so that both start-ups overlap; it is handed over here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from .early import start_server_process


class StandaloneError(Exception):
    pass


@dataclass(slots=True, kw_only=True)
class StandaloneOptions:
    database: str  # a path; with in_memory, where the server starts from and snapshots to
    in_memory: bool = False
    snapshot_interval_s: float | None = None
    log_level: str = "warning"
    extra_args: tuple[str, ...] = ()


def stop_server_process(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """SIGTERM, wait, SIGKILL (blocking; for the paths outside Trio)."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@asynccontextmanager
async def ephemeral_server(options: StandaloneOptions,
                           started: subprocess.Popen[bytes] | None = None) -> AsyncIterator[str]:
    """Supervise a server child (``started``, or one started now); yield its API URL; stop it
    on exit."""
    proc = started or start_server_process(
        options.database, in_memory=options.in_memory,
        snapshot_interval_s=options.snapshot_interval_s, log_level=options.log_level,
        extra_args=options.extra_args)
    assert proc.stdout is not None
    stdout = trio.lowlevel.FdStream(os.dup(proc.stdout.fileno()))
    send, receive = trio.open_memory_channel[str](16)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_lines, stdout, send)
            port: int | None = None
            with trio.move_on_after(60):
                async for line in receive:
                    if line.startswith("TORC_SERVER_PORT="):
                        port = int(line.split("=", 1)[1])
                        break
            if port is None:
                raise StandaloneError(
                    f"the standalone server did not start (database {options.database}); "
                    f"exit code {proc.poll()}"
                )
            yield f"http://127.0.0.1:{port}/torc-service/v1"
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await _stop(proc)
            await stdout.aclose()
            if proc.stdout is not None:
                proc.stdout.close()


async def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    if proc.poll() is None:
        # A worker thread runs the blocking stop; the caller is shielded while it does.
        await trio.to_thread.run_sync(stop_server_process, proc, timeout_s)


async def _read_lines(stdout: trio.lowlevel.FdStream, send: trio.MemorySendChannel[str]) -> None:
    """Pass the server's stdout lines on (the port line), and keep its pipe drained."""
    buffer = b""
    async with send:
        async for chunk in stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace").strip()
                try:
                    send.send_nowait(text)
                except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                if text.startswith("TORC_SNAPSHOT_DONE="):
                    print(text, file=sys.stderr, flush=True)
