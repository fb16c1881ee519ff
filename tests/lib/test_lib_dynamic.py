"""Dynamic jobs from Python: a running job adds jobs to its own workflow through
current_job().spawn_jobs (POST /workflows/{id}/jobs with after = itself)."""

from __future__ import annotations

import os
from pathlib import Path

import lib_tasks
import pytest

import torc_trio
from torc_trio import Workflow


def test_an_orchestrator_spawns_three_generations_and_stops(workdir: Path) -> None:
    wf = Workflow("optimise")
    wf.add_call(lib_tasks.orchestrate, {"generation": 0, "last": 3}, name="orchestrate_0")
    result = wf.run(jobs=2, poll_interval=0.2)
    assert result.ok, result.counts
    assert result.total == 1 + 3 * 3  # each generation: two squares and an orchestrator
    assert result.value("orchestrate_0") == {"generation": 0, "values": None, "spawned": 1}
    assert result.value("orchestrate_1") == {"generation": 1, "values": [100, 121],
                                             "spawned": 2}
    assert result.value("orchestrate_3") == {"generation": 3, "values": [900, 961],
                                             "spawned": None}
    jobs = {j["name"]: j for j in torc_trio_jobs(result)}
    assert {n: j["iteration"] for n, j in jobs.items() if n.startswith("orchestrate")} == \
        {"orchestrate_0": 0, "orchestrate_1": 1, "orchestrate_2": 2, "orchestrate_3": 3}
    # each generation waited for the orchestrator that spawned it
    assert jobs["orchestrate_1"]["id"] in jobs["g2_square_0"]["depends_on"]


def torc_trio_jobs(result: torc_trio.RunResult) -> list[dict[str, object]]:
    async def read() -> list[dict[str, object]]:
        async with result._reopen() as client:
            return [j async for j in client.iter_jobs(result.workflow_id)]

    import trio

    return trio.run(read)


def test_max_iterations_bounds_a_lineage(workdir: Path) -> None:
    wf = Workflow("bounded", max_iterations=2)
    wf.add_call(lib_tasks.orchestrate, {"generation": 0, "last": 5}, name="orchestrate_0")
    result = wf.run(jobs=2, poll_interval=0.2)
    assert not result.ok
    assert result.counts["failed"] == 1  # the third spawn was refused
    [failed] = result.results(status="failed")
    assert failed["job_name"] == "orchestrate_2"
    tail = result.job_output(failed["job_id"])["stderr"]
    assert "409" in tail and "max_iterations" in tail


def test_spawn_jobs_refuses_a_bad_fragment_with_located_errors(server_url: str,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    client = torc_trio.connect(server_url)
    wf = Workflow("live")
    wf.add_job("parent", "true")
    wid = wf.create(server_url)
    [parent] = client.jobs(wid)
    monkeypatch.setenv("TORC_API_URL", server_url)
    monkeypatch.setenv("TORC_WORKFLOW_ID", str(wid))
    monkeypatch.setenv("TORC_JOB_ID", str(parent["id"]))
    job = torc_trio.current_job()
    bad = Workflow("bad")
    bad.add_job("child", "true", depends_on=["missing"])
    with pytest.raises(torc_trio.SpecError, match="depends_on: no job named 'missing'"):
        job.spawn_jobs(bad)
    assert len(client.jobs(wid)) == 1  # nothing was added
    good = Workflow("good")
    child = good.add_job("child", "true")
    good.add_job("grandchild", "true", depends_on=[child])
    spawned = job.spawn_jobs(good)
    assert spawned.iteration == 1 and set(spawned.jobs) == {"child", "grandchild"}
    jobs = {j["name"]: j for j in client.jobs(wid)}
    assert jobs["child"]["status"] == "blocked"  # waits for its parent
    assert parent["id"] in jobs["child"]["depends_on"]


def test_current_job_outside_a_job_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TORC_API_URL", "TORC_WORKFLOW_ID", "TORC_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(torc_trio.NotInJob, match="not inside a torc-trio job"):
        torc_trio.current_job()
    assert "TORC_JOB_ID" not in os.environ
