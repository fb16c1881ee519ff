"""Dynamic jobs through the API: ``POST /workflows/{id}/jobs`` grows a live workflow.

A real in-process server on 127.0.0.1 with a SQLite file; restarts read the rows back."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from conftest import Api

from torc_net.server import Running
from torc_net.store.schema import SCHEMA_VERSION

StartFn = Callable[..., Awaitable[Running]]


async def _claim(api: Api, wf: int, cn: int, limit: int = 100) -> list[dict[str, Any]]:
    out = await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim", {"limit": limit})
    return out["jobs"]  # type: ignore[no-any-return]


async def _complete(api: Api, wf: int, cn: int, jobs: list[dict[str, Any]],
                    rc: int = 0) -> None:
    await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/complete", {"results": [
        {"job_id": j["id"], "attempt": j["attempt"], "run_id": j["run_id"],
         "return_code": rc, "exec_time_s": 0.1} for j in jobs]})


async def _register(api: Api, wf: int) -> int:
    return int((await api.ok("POST", f"/workflows/{wf}/compute_nodes",
                             {"hostname": "h", "num_cpus": 8}, status=201))["id"])


async def _statuses(api: Api, wf: int) -> dict[str, str]:
    page = await api.ok("GET", f"/workflows/{wf}/jobs?limit=1000")
    return {j["name"]: j["status"] for j in page["items"]}


def _fan_spec() -> dict[str, Any]:
    """An all-to-all stage (8 x 8) that the compiler turns into a barrier, then ``orch``."""
    return {"name": "grow", "jobs": [
        {"name": "p{i}", "command": "true", "parameters": {"i": "1:8"}},
        {"name": "c{i}", "command": "true", "parameters": {"i": "1:8"},
         "depends_on_regexes": ["^p[0-9]+$"]},
        {"name": "orch", "command": "true"},
    ]}


async def test_a_running_job_adds_jobs_blocked_on_itself(api: Api) -> None:
    wf, cn, claimed = await _claimed_fan(api)
    assert {j["name"] for j in claimed} == {f"p{i}" for i in range(1, 9)} | {"orch"}
    orch = next(j for j in claimed if j["name"] == "orch")
    added = await api.ok("POST", f"/workflows/{wf}/jobs", {"after": orch["id"], "spec": {
        "jobs": [{"name": "gen1_{k}", "command": "echo {k}", "parameters": {"k": "1:3"},
                  "input_user_data": ["seed"]},
                 {"name": "gen1_sum", "command": "true", "depends_on_regexes": ["^gen1_[0-9]$"],
                  "output_files": ["out"]}],
        "files": [{"name": "out", "path": "/tmp/out.txt"}],
        "user_data": [{"name": "seed", "data": {"x": 1}}]}})
    assert added["iteration"] == 1 and added["after"] == orch["id"]
    ids = [j["id"] for j in added["jobs"]]
    assert [j["name"] for j in added["jobs"]] == ["gen1_1", "gen1_2", "gen1_3", "gen1_sum"]
    assert min(ids) > max(j["id"] for j in claimed)  # a new range, above every id so far
    assert added["status"]["total"] == 21
    st = await _statuses(api, wf)
    assert {st[f"gen1_{k}"] for k in (1, 2, 3)} == {"blocked"} and st["gen1_sum"] == "blocked"
    job = await api.ok("GET", f"/workflows/{wf}/jobs/{ids[3]}")
    assert job["iteration"] == 1 and sorted(job["depends_on"]) == sorted([orch["id"], *ids[:3]])
    assert job["output_files"] == [added["files"][0]["id"]]
    first = await api.ok("GET", f"/workflows/{wf}/jobs/{ids[0]}")
    assert first["input_user_data"] == [added["user_data"][0]["id"]]
    ud = await api.ok("GET", f"/workflows/{wf}/user_data/{added['user_data'][0]['id']}")
    assert ud["data"] == {"x": 1}
    wf_json = await api.ok("GET", f"/workflows/{wf}")
    assert len(wf_json["job_id_ranges"]) == 2 and wf_json["num_jobs"] == 21
    # The orchestrator finishes: its iteration becomes ready, runs, the workflow completes.
    await _complete(api, wf, cn, claimed)
    while True:
        jobs = await _claim(api, wf, cn)
        if not jobs:
            break
        await _complete(api, wf, cn, jobs)
    status = await api.ok("GET", f"/workflows/{wf}/status")
    assert status["is_complete"] and status["counts"]["completed"] == 21
    events = await api.ok("GET", f"/workflows/{wf}/events?limit=100")
    assert any(e["kind"] == "jobs_added" for e in events["items"])


async def _claimed_fan(api: Api) -> tuple[int, int, list[dict[str, Any]]]:
    """The fan workflow, a runner, and what it claimed (p1..p8 and orch)."""
    wf = (await api.ok("POST", "/workflows", {"spec": _fan_spec()}, status=201))["id"]
    cn = await _register(api, wf)
    return wf, cn, await _claim(api, wf, cn)


async def test_growth_survives_a_restart_and_barriers_keep_their_place(
        start_inprocess: StartFn, tmp_path: Path) -> None:
    running = await start_inprocess()
    api = Api(running.port)
    wf, cn, claimed = await _claimed_fan(api)
    orch = next(j for j in claimed if j["name"] == "orch")
    await api.ok("POST", f"/workflows/{wf}/jobs", {"after": orch["id"], "spec": {"jobs": [
        {"name": "a{i}", "command": "true", "parameters": {"i": "1:8"}},
        {"name": "b{i}", "command": "true", "parameters": {"i": "1:8"},
         "depends_on_regexes": ["^a[0-9]+$"]}]}})  # a barrier of its own
    # The old barrier still stands between p* and c*: complete p*, not orch.
    await _complete(api, wf, cn, [j for j in claimed if j["name"] != "orch"])
    before = await _statuses(api, wf)
    assert {before[f"c{i}"] for i in range(1, 9)} == {"ready"}
    assert {before[f"a{i}"] for i in range(1, 9)} == {"blocked"}
    await api.aclose()
    running.shutdown.set()
    with trio.fail_after(20):
        await running.stopped.wait()

    running = await start_inprocess()
    api = Api(running.port)
    try:
        assert await _statuses(api, wf) == before
        await _complete(api, wf, cn, [orch])
        assert {(await _statuses(api, wf))[f"a{i}"] for i in range(1, 9)} == {"ready"}
        while jobs := await _claim(api, wf, cn):
            await _complete(api, wf, cn, jobs)
        status = await api.ok("GET", f"/workflows/{wf}/status")
        assert status["is_complete"] and status["counts"]["completed"] == 33
        # Ids go on above the grown range; deleting the workflow removes every range's rows.
        other = (await api.ok("POST", "/workflows", {"spec": {"name": "o", "jobs": [
            {"name": "x", "command": "true"}]}}, status=201))["id"]
        grown_ids = (await api.ok("GET", f"/workflows/{wf}"))["job_id_ranges"]
        other_first = (await api.ok("GET", f"/workflows/{other}"))["job_id_base"]
        assert other_first > grown_ids[-1][1]
        await api.ok("DELETE", f"/workflows/{wf}")
    finally:
        await api.aclose()
    with sqlite3.connect(tmp_path / "torc.db") as conn:
        for table in ("jobs", "barriers", "edges", "id_ranges", "files", "user_data"):
            assert conn.execute(f"SELECT count(*) FROM {table} WHERE workflow_id=?",
                                (wf,)).fetchone()[0] == 0, table


async def test_refused_additions_change_nothing(start_inprocess: StartFn) -> None:
    running = await start_inprocess(max_jobs_per_workflow=12)
    api = Api(running.port)
    try:
        spec = {"name": "r", "max_iterations": 2, "jobs": [
            {"name": "root", "command": "true"}]}
        wf = (await api.ok("POST", "/workflows", {"spec": spec}, status=201))["id"]
        root = (await api.ok("GET", f"/workflows/{wf}/jobs"))["items"][0]["id"]
        before = await api.ok("GET", f"/workflows/{wf}")
        one = {"jobs": [{"name": "x", "command": "true"}]}
        for body, status, words in (
            ({"spec": {"jobs": [], "actions": []}}, 422, "'actions': not in a fragment"),
            ({"spec": {"jobs": []}}, 422, "spec.jobs: give a list of at least one job"),
            ({"spec": {"jobs": [{"name": "y"}]}}, 422, "jobs[0] 'y': command"),
            ({"spec": {"jobs": [{"name": "y", "command": "true", "depends_on": ["nope"]}]}},
             422, "nope"),
            ({"spec": {"jobs": [{"name": "y", "command": "true",
                                 "failure_handler": "nope"}]}}, 422, "nope"),
            ({"spec": one, "after": root + 999}, 404, f"after: no job {root + 999}"),
            ({"spec": {"jobs": [{"name": "y{i}", "command": "true",
                                 "parameters": {"i": "1:20"}}]}}, 422, "room for 11 more jobs"),
        ):
            reply = await api.post(f"/workflows/{wf}/jobs", body)
            assert reply.status == status, (body, reply.body)
            assert words in str(reply.body), (words, reply.body)
        # Iterations along a lineage: 1, 2, then the third spawn is refused.
        gen1 = await api.ok("POST", f"/workflows/{wf}/jobs", {"spec": one, "after": root})
        gen2 = await api.ok("POST", f"/workflows/{wf}/jobs",
                            {"spec": {"jobs": [{"name": "x2", "command": "true"}]},
                             "after": gen1["jobs"][0]["id"]})
        assert (gen1["iteration"], gen2["iteration"]) == (1, 2)
        reply = await api.post(f"/workflows/{wf}/jobs", {"spec": one,
                                                         "after": gen2["jobs"][0]["id"]})
        assert reply.status == 409 and "max_iterations" in str(reply.body)
        assert (await api.ok("GET", f"/workflows/{wf}"))["num_jobs"] == 3
        await api.ok("POST", f"/workflows/{wf}/cancel", {})
        reply = await api.post(f"/workflows/{wf}/jobs", {"spec": one})
        assert reply.status == 409 and "canceled" in str(reply.body)
        after = await api.ok("GET", f"/workflows/{wf}")
        assert after["num_jobs"] == 3 and before["job_id_base"] == after["job_id_base"]
    finally:
        await api.aclose()


async def test_a_version_5_database_is_migrated_with_its_barriers(
        start_inprocess: StartFn, tmp_path: Path) -> None:
    """Version 5 stored a barrier by its node index (num_jobs + ordinal)."""
    running = await start_inprocess()
    api = Api(running.port)
    wf, cn, claimed = await _claimed_fan(api)
    await _complete(api, wf, cn, [j for j in claimed if j["name"].startswith("p")])
    before = await _statuses(api, wf)
    await api.aclose()
    running.shutdown.set()
    with trio.fail_after(20):
        await running.stopped.wait()
    db = tmp_path / "torc.db"
    with sqlite3.connect(db) as conn:
        n = conn.execute("SELECT num_jobs FROM workflows WHERE id=?", (wf,)).fetchone()[0]
        assert conn.execute("SELECT count(*) FROM barriers").fetchone()[0] == 1
        conn.execute("UPDATE barriers SET node = node + ?", (n,))
        rows = conn.execute("SELECT up, down FROM edges WHERE up < 0 OR down < 0").fetchall()
        assert rows
        conn.execute("DELETE FROM edges WHERE up < 0 OR down < 0")
        conn.executemany("INSERT INTO edges (workflow_id, up, down) VALUES (?,?,?)",
                         [(wf, u if u >= 0 else n - 1 - u, d if d >= 0 else n - 1 - d)
                          for u, d in rows])
        conn.execute("UPDATE meta SET value='5' WHERE key='schema_version'")
    running = await start_inprocess()
    api = Api(running.port)
    try:
        assert await _statuses(api, wf) == before
        await _complete(api, wf, cn, [j for j in claimed if j["name"] == "orch"])
        while jobs := await _claim(api, wf, cn):
            await _complete(api, wf, cn, jobs)
        assert (await api.ok("GET", f"/workflows/{wf}/status"))["is_complete"]
    finally:
        await api.aclose()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] \
            == str(SCHEMA_VERSION)
        assert conn.execute("SELECT node FROM barriers").fetchall() == [(0,)]


async def test_the_feed_hears_a_growth_and_fresh_counts(server: Running, api: Api) -> None:
    from torc_net.client import open_event_feed

    wf = (await api.ok("POST", "/workflows", {"spec": {"name": "f", "jobs": [
        {"name": "root", "command": "true"}]}}, status=201))["id"]
    async with open_event_feed(api.base_url, wf) as feed:
        first = await feed.__anext__()
        assert first["type"] == "counts" and first["counts"]["ready"] == 1
        await api.ok("POST", f"/workflows/{wf}/jobs", {"spec": {"jobs": [
            {"name": "x{i}", "command": "true", "parameters": {"i": "1:3"}}]}, "after": None})
        seen: list[dict[str, Any]] = []
        with trio.fail_after(10):
            while not seen or seen[-1]["type"] != "counts":
                seen.append(await feed.__anext__())
    assert [m["event"] for m in seen if m["type"] == "workflow"] == ["jobs_added"]
    assert sum(m["type"] == "job_status" for m in seen) == 3
    assert seen[-1]["counts"]["ready"] == 4 and seen[-1]["counts"]["uninitialized"] == 0


async def test_concurrent_additions_get_distinct_ranges(api: Api) -> None:
    wf = (await api.ok("POST", "/workflows", {"spec": {"name": "c", "jobs": [
        {"name": "root", "command": "true"}]}}, status=201))["id"]
    answers: list[dict[str, Any]] = []

    async def add(k: int) -> None:
        answers.append(await api.ok("POST", f"/workflows/{wf}/jobs", {"spec": {"jobs": [
            {"name": f"w{k}_{{i}}", "command": "true", "parameters": {"i": "1:5"}}]}}))

    async with trio.open_nursery() as nursery:
        for k in range(8):
            nursery.start_soon(add, k)
    ids = sorted(j["id"] for a in answers for j in a["jobs"])
    assert len(ids) == len(set(ids)) == 40
    page = await api.ok("GET", f"/workflows/{wf}/jobs?limit=1000")
    assert page["total"] == 41 and {j["status"] for j in page["items"]} == {"ready"}
    assert sorted(j["id"] for j in page["items"])[1:] == ids
