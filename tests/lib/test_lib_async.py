"""The async API under Trio (pytest-trio), against a real server in the test's loop: the
same operations as the blocking ones, and the blocking ones refused inside Trio."""

from __future__ import annotations

from pathlib import Path

import lib_tasks
import pytest
import trio

import torc_trio
from torc_net.server import Running
from torc_trio import AsyncClient, Workflow


def url_of(server: Running) -> str:
    return f"http://127.0.0.1:{server.port}/torc-service/v1"


async def test_run_map_and_client_under_trio(server: Running, workdir: Path) -> None:
    url = url_of(server)
    wf = Workflow("async")
    first = wf.add_job("first", "true")
    wf.add_job("second", "true", depends_on=[first])
    result = await wf.run_async(url=url, jobs=2, poll_interval=0.2)
    assert result.ok and result.counts["completed"] == 2
    assert len(await result.results_async()) == 2
    values = await torc_trio.map_async(lib_tasks.square, [{"x": i} for i in range(3)], url=url,
                                       postprocess=lib_tasks.total, poll_interval=0.2)
    assert values == torc_trio.MapResult([0, 1, 4], 5)
    async with AsyncClient(url) as client:
        assert [w["name"] for w in await client.workflows()] == ["async", "square"]
        assert (await client.status(result.workflow_id))["is_complete"]
        assert {j["name"] for j in await client.jobs(result.workflow_id, "completed")} == \
            {"first", "second"}
        data = await client.user_data(result.workflow_id + 1)
        assert data["square_postprocess.result"] == 5


async def test_cancel_reset_and_watch(server: Running, workdir: Path) -> None:
    url = url_of(server)
    wf = Workflow("watched")
    a = wf.add_job("a", "true")
    wf.add_job("b", "true", depends_on=[a])
    async with AsyncClient(url) as client:
        wid = await wf.create_async(url)
        seen: list[dict[str, object]] = []
        async with client.watch(wid) as events:
            async for event in events:
                seen.append(event)
                if event["type"] == "counts":
                    await client.cancel(wid)
        assert seen[0]["type"] == "counts"
        assert seen[-1]["type"] == "workflow" and seen[-1]["event"] == "canceled"
        status = await client.reset_status(wid)
        assert not status["is_canceled"] and status["counts"]["ready"] == 1
        # a job id of another workflow is refused, and changes nothing
        with pytest.raises(torc_trio.ApiError) as info:
            await client.reset_status(wid, job_ids=[10**6])
        assert info.value.status == 404
        # the feed of a workflow then run here shows each change to its end
        run = trio.Event()

        async def follow() -> list[tuple[str, str]]:
            changes = []
            async with client.watch(wid) as events:
                async for event in events:
                    if event["type"] == "counts":
                        run.set()
                    elif event["type"] == "job_status":
                        changes.append((str(event["name"]), str(event["new"])))
            return changes

        changes: list[tuple[str, str]] = []
        async with trio.open_nursery() as nursery:
            async def collect() -> None:
                changes.extend(await follow())

            nursery.start_soon(collect)
            await run.wait()
            result = await client.run(wid, jobs=1, poll_interval=0.2)
        assert result.ok
        assert ("a", "completed") in changes and ("b", "completed") in changes


async def test_blocking_calls_inside_trio_name_the_async_form(workdir: Path) -> None:
    with pytest.raises(RuntimeError, match=r"await run_async\(\.\.\.\)"):
        Workflow("x").run()
    with pytest.raises(RuntimeError, match=r"await map_async"):
        torc_trio.map(lib_tasks.square, [{"x": 1}])


async def test_add_jobs_to_a_live_workflow(server: Running, workdir: Path) -> None:
    url = url_of(server)
    wf = Workflow("grows")
    wf.add_job("seed", "true")
    async with AsyncClient(url) as client:
        wid = await wf.create_async(url)
        [seed] = await client.jobs(wid)
        more = Workflow("more")
        a = more.add_job("a", "true")
        more.add_job("b", "true", depends_on=[a])
        added = await client.add_jobs(wid, more)  # no after: ready at once
        assert added.iteration == 1 and set(added.jobs) == {"a", "b"}
        status = {j["name"]: j["status"] for j in await client.jobs(wid)}
        assert status == {"seed": "ready", "a": "ready", "b": "blocked"}
        after = await client.add_jobs(wid, {"jobs": [{"name": "c", "command": "true"}]},
                                      after=seed["id"])
        assert after.jobs.keys() == {"c"}
        assert (await client.workflow(wid))["num_jobs"] == 4
        with pytest.raises(torc_trio.SpecError, match="fragment: 'actions'"):
            await client.add_jobs(wid, {"jobs": [], "actions": []})
        result = await client.run(wid, jobs=2, poll_interval=0.2)
        assert result.ok and result.total == 4
