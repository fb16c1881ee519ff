"""Hanging up on clients at shutdown (torc_net.hangup) touches only sockets: a server stopped
with connections still open leaves nothing of its own open, so another server in the same
process can take over its database (the duplicate of every other descriptor it looked at, the
database's lock file among them, used to stay open)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from conftest import Api

from torc_net.server import Running


async def test_a_server_stopped_with_open_connections_lets_the_next_one_start(
        start_inprocess: Callable[..., Awaitable[Running]], tmp_path: Path) -> None:
    first = await start_inprocess()
    api = Api(first.port)
    try:
        assert (await api.get("/ping")).status == 200  # a kept-alive connection stays open
        first.shutdown.set()
        await first.stopped.wait()
        second = await start_inprocess()  # the same database file
        again = Api(second.port)
        try:
            assert (await again.get("/ping")).status == 200
        finally:
            await again.aclose()
    finally:
        await api.aclose()
