"""The real JobRunner against a real in-process server, on trio's MockClock.

The runner reads one clock, ``trio.current_time()``, so its leases, heartbeats, idle timeout
and allocation end can be tested without waiting: with ``autojump_clock``
(``MockClock(autojump_threshold=0)``) virtual time jumps to the next deadline whenever every
task is blocked. Real work (the server's database threads, the spawner, a job's process)
takes real time during which the clock may jump, so the assertions relate causes and effects
on the virtual clock rather than absolute times. Where a job must act on a signal before the
grace period's SIGKILL, the test keeps the loop busy (checkpoints, no sleep) so that virtual
time stands still until the job's effect shows.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.conftest import API
from torc_cli.resources import Resources
from torc_cli.runner import JobRunner, RunnerConfig, RunnerSummary
from torc_core.settings import MONITOR_OFF
from torc_net.client import TorcClient
from torc_net.server import Running

#: Virtual seconds: the whole test must be over long before (it fails, not hangs).
VIRTUAL_LIMIT_S = 100_000


class RecordingClient(TorcClient):
    """A real client that also notes, for each heartbeat, when it was sent and when the
    server had last answered (the heartbeat is due an interval after that)."""

    def __init__(self, base_url: str) -> None:
        # No per-attempt timeout: the clock may jump while the server's threads work.
        super().__init__(base_url, attempt_timeout_s=1e9)
        self.heartbeats: list[tuple[float, float]] = []
        self.changed = trio.Event()

    async def heartbeat(self, workflow_id: int, compute_node_id: int) -> dict[str, Any]:
        self.heartbeats.append((trio.current_time(), self.last_answer_at))
        self.changed.set()
        self.changed = trio.Event()
        return await super().heartbeat(workflow_id, compute_node_id)


async def setup(start: Callable[..., Awaitable[Running]], jobs: list[dict[str, Any]]) \
        -> tuple[RecordingClient, int]:
    server = await start()
    client = RecordingClient(f"http://127.0.0.1:{server.port}{API}")
    created = await client.create_workflow({
        "name": "clock", "jobs": jobs,
        "resource_requirements": [
            {"name": "big", "num_cpus": 64, "memory": "1g", "runtime": "PT10M"}]})
    return client, int(created["id"])


def make_runner(client: TorcClient, workflow_id: int, out: Path, **kw: Any) -> JobRunner:
    res = kw.pop("resources", Resources(cpus=1, memory_bytes=2**30, gpus=0, nodes=1))
    cfg = RunnerConfig(workflow_id=workflow_id, api_url=client.base_url, output_dir=out,
                       resources=res, handle_signals=False, monitor=MONITOR_OFF, **kw)
    return JobRunner(client, cfg)


#: a job no 1-CPU runner claims: the runner stays idle, the workflow incomplete
TOO_BIG = {"name": "big", "command": "true", "resource_requirements": "big"}


async def test_heartbeat_goes_out_an_interval_after_the_last_answer(
        autojump_clock: trio.testing.MockClock, start_inprocess: Callable[..., Awaitable[Running]],
        tmp_path: Path) -> None:
    client, wid = await setup(start_inprocess, [TOO_BIG])
    # Polls rarer than heartbeats: between polls nothing else reaches the server.
    runner = make_runner(client, wid, tmp_path / "out", poll_interval_s=1000.0)
    summary: list[RunnerSummary] = []
    with trio.fail_after(VIRTUAL_LIMIT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _collect(runner, summary))
            while len(client.heartbeats) < 3:
                await client.changed.wait()
            runner.stop("test over")
    interval = runner.state.heartbeat_s
    assert interval == 10.0  # the server's default lease (1800 s): the 10 s cap
    for sent, last_answer in client.heartbeats:
        assert sent == pytest.approx(last_answer + interval)
    assert summary[0].stop_reason == "test over"
    await client.aclose()


async def test_idle_timeout_ends_the_runner(
        autojump_clock: trio.testing.MockClock, start_inprocess: Callable[..., Awaitable[Running]],
        tmp_path: Path) -> None:
    client, wid = await setup(start_inprocess, [TOO_BIG])
    runner = make_runner(client, wid, tmp_path / "out", idle_timeout_s=300.0,
                         poll_interval_s=40.0)
    begin = trio.current_time()
    with trio.fail_after(VIRTUAL_LIMIT_S):
        summary = await runner.run()
    assert summary.stop_reason == "nothing to run for 300 s"
    assert summary.jobs_run == 0
    assert trio.current_time() - begin > 300.0  # virtual seconds: nothing really waited
    status = await client.workflow_status(wid)
    assert status["counts"].get("ready") == 1  # still there for a runner that fits it
    await client.aclose()


async def test_walltime_end_sends_the_termination_signal_before_the_end(
        autojump_clock: trio.testing.MockClock, start_inprocess: Callable[..., Awaitable[Running]],
        tmp_path: Path) -> None:
    started, signaled = tmp_path / "started", tmp_path / "signaled"
    command = (f"trap 'echo TERM > {signaled}; exit 0' TERM; echo > {started}; "
               "while :; do sleep 0.05; done")
    client, wid = await setup(start_inprocess, [{"name": "long", "command": command}])
    res = Resources(cpus=1, memory_bytes=2**30, gpus=0, nodes=1, end_time=time.time() + 600)
    runner = make_runner(client, wid, tmp_path / "out", resources=res, end_buffer_s=60.0)
    summary: list[RunnerSummary] = []
    seen_at: list[float] = []

    async def watch() -> None:
        await _busy_until(started.exists)  # virtual time stands still until the trap is set
        assert runner.state.terminate_at is not None
        await trio.sleep_until(runner.state.terminate_at)
        await _busy_until(signaled.exists)  # no jump to the grace period's SIGKILL
        seen_at.append(trio.current_time())

    with trio.fail_after(VIRTUAL_LIMIT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _collect(runner, summary))
            nursery.start_soon(watch)
    state = runner.state
    assert state.end_at is not None and state.terminate_at is not None
    assert state.end_at - state.terminate_at == pytest.approx(30.0)  # end_buffer_s / 2
    assert signaled.read_text().strip() == "TERM"
    assert seen_at[0] == pytest.approx(state.terminate_at)
    assert seen_at[0] < state.end_at
    assert summary[0].stop_reason == "allocation walltime ending"
    assert summary[0].terminated == 1
    await client.aclose()


async def _collect(runner: JobRunner, out: list[RunnerSummary]) -> None:
    out.append(await runner.run())


async def _busy_until(condition: Callable[[], bool]) -> None:
    """Wait for a real effect (a job's file) with the run queue never empty, so that the
    MockClock does not jump meanwhile."""
    while not condition():
        await trio.lowlevel.checkpoint()


async def test_runtime_limit_terminates_a_job_at_its_deadline(
        autojump_clock: trio.testing.MockClock, start_inprocess: Callable[..., Awaitable[Running]],
        tmp_path: Path) -> None:
    """The sampler's runtime limit (direct mode): a job stating a runtime gets the termination
    signal that long after it started, on the one clock; here a 2-minute limit is over in
    virtual time while the job (`sleep 600`) has barely started."""
    server = await start_inprocess()
    client = RecordingClient(f"http://127.0.0.1:{server.port}{API}")
    created = await client.create_workflow({
        "name": "limits", "execution_config": {"mode": "direct", "limit_resources": True},
        "resource_requirements": [{"name": "two_min", "runtime": "PT2M"}],
        "jobs": [{"name": "slow", "command": "exec sleep 600",
                  "resource_requirements": "two_min"}]})
    wid = int(created["id"])
    runner = make_runner(client, wid, tmp_path / "out")
    runner.cfg.monitor = None  # the workflow's own settings: its limits apply
    begin = trio.current_time()
    done: list[RunnerSummary] = []
    # Real work (spawning, reaping, the server's threads) lets the clock jump on through
    # heartbeats 10 s apart; on a busy machine that is many virtual hours, so the bound here
    # is wide (pytest's timeout bounds the real time).
    with trio.fail_after(VIRTUAL_LIMIT_S * 1000):
        await _collect(runner, done)
    summary = done[0]
    (result,) = [r async for r in client.iter_results(wid)]
    assert (result["status"], result["failure_cause"]) == ("terminated", "timeout")
    assert summary.terminated == 1
    assert trio.current_time() - begin >= 120.0  # the limit, in virtual seconds
    await client.aclose()


async def test_client_backs_off_until_its_patience_runs_out(
        autojump_clock: trio.testing.MockClock) -> None:
    """A server that is not there: the client retries with growing, capped pauses for
    ``wait_for_server_s`` of the one clock, then gives up (no real waiting)."""
    from torc_net.client import ServerUnreachable

    client = TorcClient("http://127.0.0.1:9/torc-service/v1", wait_for_server_s=600.0,
                        max_backoff_s=30.0)
    begin = trio.current_time()
    with pytest.raises(ServerUnreachable):
        await client.ping()
    waited = trio.current_time() - begin
    assert 600.0 <= waited <= 600.0 + 1.0
    assert client.requests >= 20  # 0.1, 0.2, ... capped at 30 s: many tries in 600 s
    assert client.retries == client.requests - 1
    await client.aclose()
