"""The standalone (ephemeral) server: started for one command, shut down when it ends.

It runs as a child process (``torc-trio serve`` on 127.0.0.1, a free port) so the server and the
runner each get a core of their own. It is supervised by the caller's nursery: on exit, also on
Ctrl-C, SIGTERM or an error, it gets SIGTERM (which makes it commit and exit), then SIGKILL if
it does not go within a bound.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio


class StandaloneError(Exception):
    pass


@dataclass(slots=True, kw_only=True)
class StandaloneOptions:
    database: str  # a path, or ":memory:"
    snapshot_interval_s: float | None = None
    log_level: str = "warning"
    extra_args: tuple[str, ...] = ()


async def _stop_server(proc: trio.Process) -> None:
    try:
        proc.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        return
    with trio.move_on_after(20):
        await proc.wait()
        return
    proc.kill()


@asynccontextmanager
async def ephemeral_server(options: StandaloneOptions) -> AsyncIterator[str]:
    """Start a server child process; yield its API URL; stop it on exit."""
    if options.database != ":memory:":
        Path(options.database).parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "torc_net.server",
        "--database", options.database, "--host", "127.0.0.1", "--port", "0",
        "--log-level", options.log_level, *options.extra_args,
    ]
    if options.snapshot_interval_s:
        argv += ["--snapshot-interval-seconds", str(options.snapshot_interval_s)]
    send, receive = trio.open_memory_channel[str](16)
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(
                trio.run_process, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=None, check=False, deliver_cancel=_stop_server,
                # Its own process group: a Ctrl-C in the terminal reaches us, and we stop it in
                # order (runner first, then the server), instead of both dying at once.
                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        )
        nursery.start_soon(_read_lines, proc, send)
        port: int | None = None
        with trio.move_on_after(60):
            async for line in receive:
                if line.startswith("TORC_SERVER_PORT="):
                    port = int(line.split("=", 1)[1])
                    break
        if port is None:
            nursery.cancel_scope.cancel()
            raise StandaloneError(
                f"the standalone server did not start (database {options.database}); "
                f"exit code {proc.returncode}"
            )
        try:
            yield f"http://127.0.0.1:{port}/torc-service/v1"
        finally:
            nursery.cancel_scope.cancel()


async def _read_lines(proc: trio.Process, send: trio.MemorySendChannel[str]) -> None:
    """Pass the server's stdout lines on (the port line), and keep its pipe drained."""
    assert proc.stdout is not None
    buffer = b""
    async with send:
        async for chunk in proc.stdout:
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
