"""Leases on the server's one clock, driven by trio's MockClock: a runner that goes silent
loses its jobs when its lease ends (and not before), and one that heartbeats keeps them; no
real waiting. The clock is injected (``ServerConfig.clock``): wall-clock seconds, here a fixed
epoch plus the virtual time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
import trio.testing

from tests.conftest import API
from torc_net.client import TorcClient
from torc_net.server import Running

EPOCH = 1.9e9
LEASE_S = 600.0
T = TypeVar("T")


async def still(fn: Callable[[], Awaitable[T]]) -> T:
    """Await ``fn()`` with virtual time standing still: the run queue is never empty, so the
    MockClock does not jump while the server's threads do real work for the request (a jump
    there would expire a lease the request was about to renew)."""
    out: list[Any] = []

    async def run() -> None:
        out.append(await fn())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        while not out:
            await trio.lowlevel.checkpoint()
    return out[0]  # type: ignore[no-any-return]


async def _setup(start: Callable[..., Awaitable[Running]]) -> tuple[TorcClient, int, int]:
    server = await start(lease_s=LEASE_S, clock=lambda: EPOCH + trio.current_time())
    client = TorcClient(f"http://127.0.0.1:{server.port}{API}", attempt_timeout_s=1e9)
    wid = int((await still(lambda: client.create_workflow({
        "name": "leases", "jobs": [{"name": "a", "command": "true"}]})))["id"])
    cn = int((await still(lambda: client.register_compute_node(wid, hostname="h")))["id"])
    claimed = await still(lambda: client.claim_jobs(wid, cn, limit=1))
    assert len(claimed["jobs"]) == 1
    return client, wid, cn


async def _counts(client: TorcClient, wid: int) -> dict[str, int]:
    status = await still(lambda: client.workflow_status(wid))
    return {k: v for k, v in status["counts"].items() if v}


async def test_a_silent_runner_loses_its_job_when_the_lease_ends(
        autojump_clock: trio.testing.MockClock,
        start_inprocess: Callable[..., Awaitable[Running]]) -> None:
    client, wid, _ = await _setup(start_inprocess)
    await trio.sleep(LEASE_S - 10)
    assert await _counts(client, wid) == {"pending": 1}  # not before its end
    await trio.sleep(20)
    assert await _counts(client, wid) == {"ready": 1}  # given back, same attempt
    (job,) = [j async for j in client.iter_jobs(wid)]
    assert job["attempt"] == 1
    kinds = [e["kind"] for e in (await client.list_events(wid))["items"]]
    assert "leases_expired" in kinds
    await client.aclose()


async def test_heartbeats_keep_the_lease(
        autojump_clock: trio.testing.MockClock,
        start_inprocess: Callable[..., Awaitable[Running]]) -> None:
    client, wid, cn = await _setup(start_inprocess)
    for _ in range(5):  # 5 x 300 s: well past one lease, renewed each time
        await trio.sleep(LEASE_S / 2)
        await still(lambda: client.heartbeat(wid, cn))
    assert await _counts(client, wid) == {"pending": 1}
    await client.aclose()
