"""``POST /workflows/{id}/jobs/resources`` through a real server: new requirements are what the
next claims pack by and what the claim answers and job rows say (also after a restart); each
change is an event; a refused request (unknown job, a pending or running one, nothing to
change) changes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from conftest import Api, ServerProcess

GB = 1 << 30

Start = Callable[..., Awaitable[ServerProcess]]


def spec() -> dict[str, Any]:
    return {"name": "res", "resource_requirements": [
        {"name": "small", "num_cpus": 1, "memory": "1g", "runtime": "PT10M"}],
        "jobs": [{"name": f"j{i}", "command": "true", "resource_requirements": "small"}
                 for i in range(3)]}


async def create(api: Api) -> tuple[int, dict[str, int]]:
    wf = (await api.ok("POST", "/workflows", {"spec": spec()}, status=201))["id"]
    page = await api.ok("GET", f"/workflows/{wf}/jobs")
    return wf, {j["name"]: j["id"] for j in page["items"]}


async def register(api: Api, wf: int) -> int:
    cn = await api.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "h"}, status=201)
    return int(cn["id"])


async def claim(api: Api, wf: int, cn: int, memory: int, **more: Any) -> list[dict[str, Any]]:
    answer = await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim",
                          {"limit": 10, "cpus": 8, "memory_bytes": memory, **more})
    jobs: list[dict[str, Any]] = answer["jobs"]
    return jobs


async def rows(api: Api, wf: int) -> dict[str, tuple[int, int, int, str]]:
    page = await api.ok("GET", f"/workflows/{wf}/jobs")
    return {j["name"]: (j["num_cpus"], j["memory_bytes"], j["runtime_s"], j["status"])
            for j in page["items"]}


async def test_new_memory_is_packed_claimed_stored_and_recorded(start_server: Start,
                                                                tmp_path: Path) -> None:
    db = tmp_path / "torc.db"
    proc = await start_server("--database", str(db))
    api = Api(proc.port)
    wf, ids = await create(api)
    answer = await api.ok("POST", f"/workflows/{wf}/jobs/resources", {
        "jobs": [{"job_id": ids["j0"], "memory_bytes": 3 * GB, "runtime_s": 1800},
                 {"job_id": ids["j1"], "memory_bytes": GB}],  # its current value
        "reason": "test: measured peak"})
    assert answer == {"changed": [{
        "job_id": ids["j0"], "job_name": "j0",
        "old": {"num_cpus": 1, "memory_bytes": GB, "runtime_s": 600},
        "new": {"num_cpus": 1, "memory_bytes": 3 * GB, "runtime_s": 1800}}], "unchanged": 1}
    events = [e for e in (await api.ok("GET", f"/workflows/{wf}/events"))["items"]
              if e["kind"] == "job_resources"]
    assert [e["data"] for e in events] == [{
        "job_id": ids["j0"], "job_name": "j0", "reason": "test: measured peak",
        "old": {"num_cpus": 1, "memory_bytes": GB, "runtime_s": 600},
        "new": {"num_cpus": 1, "memory_bytes": 3 * GB, "runtime_s": 1800}}]

    # The rows say it after a restart, and the restored engine packs by it.
    await api.aclose()
    assert await proc.stop() == 0
    proc2 = await start_server("--database", str(db))
    api2 = Api(proc2.port)
    assert (await rows(api2, wf))["j0"] == (1, 3 * GB, 1800, "ready")
    cn = await register(api2, wf)
    small = await claim(api2, wf, cn, 2 * GB)
    assert sorted(j["name"] for j in small) == ["j1", "j2"]
    cn2 = await register(api2, wf)
    assert await claim(api2, wf, cn2, 2 * GB) == []
    big = await claim(api2, wf, cn2, 3 * GB)
    assert [(j["name"], j["memory_bytes"], j["runtime_s"]) for j in big] == [
        ("j0", 3 * GB, 1800)]
    await api2.aclose()


async def test_refusals_change_nothing(api: Api) -> None:
    wf, ids = await create(api)
    cn = await register(api, wf)
    held = await claim(api, wf, cn, GB)  # one job of 1 GiB fits
    assert len(held) == 1
    running = held[0]
    idle = [i for n, i in sorted(ids.items()) if i != running["id"]]
    before = await rows(api, wf)
    events_before = (await api.ok("GET", f"/workflows/{wf}/events"))["total"]

    reply = await api.post(f"/workflows/{wf}/jobs/resources", {"jobs": [
        {"job_id": idle[0], "memory_bytes": 2 * GB},
        {"job_id": running["id"], "memory_bytes": 2 * GB}]})
    assert reply.status == 409, reply.body
    assert f"job {running['id']}" in reply.body["detail"]

    reply = await api.post(f"/workflows/{wf}/jobs/resources", {"jobs": [
        {"job_id": idle[0], "memory_bytes": 2 * GB}, {"job_id": 999_999, "num_cpus": 2}]})
    assert reply.status == 404 and "999999" in reply.body["detail"], reply.body

    reply = await api.post(f"/workflows/{wf}/jobs/resources", {"jobs": [
        {"job_id": idle[0], "memory_bytes": 2 * GB}, {"job_id": idle[1]}]})
    assert reply.status == 422 and str(idle[1]) in reply.body["detail"], reply.body

    reply = await api.post(f"/workflows/{wf}/jobs/resources", {"jobs": [
        {"job_id": idle[0], "memory_bytes": 2 * GB}, {"job_id": idle[0], "num_cpus": 2}]})
    assert reply.status == 422, reply.body

    for bad in ({"jobs": []}, {"jobs": [{"job_id": idle[0], "num_cpus": 0}]},
                {"jobs": [{"job_id": idle[0], "memory_bytes": -1}]}):
        reply = await api.post(f"/workflows/{wf}/jobs/resources", bad)
        assert reply.status in (400, 422), (bad, reply.status, reply.body)

    assert await rows(api, wf) == before
    assert (await api.ok("GET", f"/workflows/{wf}/events"))["total"] == events_before
    # The other runner still gets the idle jobs by their old 1 GiB.
    cn2 = await register(api, wf)
    assert sorted(j["id"] for j in await claim(api, wf, cn2, 2 * GB)) == idle
