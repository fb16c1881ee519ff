"""Selective reset through the real server: ``reset_status`` with ``job_ids`` reruns those jobs
and everything downstream of them while a real runner keeps another branch running."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
import trio_websocket
from conftest import Api, ServerProcess, simple_spec

# Branch a: a1 -> a2. Branch b: b0 -> b1 -> b2, where b1 runs until the test creates GATE.
WAIT = 'while [ ! -e "{gate}" ]; do sleep 0.05; done'


def branches_spec(gate: Path) -> dict[str, Any]:
    return {"name": "branches", "jobs": [
        {"name": "a1", "command": "true"},
        {"name": "a2", "command": "true", "depends_on": ["a1"]},
        {"name": "b0", "command": "true"},
        {"name": "b1", "command": WAIT.format(gate=gate), "depends_on": ["b0"]},
        {"name": "b2", "command": "true", "depends_on": ["b1"]},
    ]}


async def jobs_by_name(api: Api, wf: int) -> dict[str, dict[str, Any]]:
    page = await api.ok("GET", f"/workflows/{wf}/jobs?limit=100")
    return {j["name"]: j for j in page["items"]}


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 60) -> None:
    """Poll the server until ``check()`` holds (a real runner's progress announces nothing
    the test could wait on otherwise)."""
    with trio.fail_after(timeout_s):
        while not await check():  # noqa: ASYNC110 -- the state is another process's
            await trio.sleep(0.05)


Start = Callable[..., Awaitable[ServerProcess]]


def runner_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TORC_")}


async def test_reset_jobs_while_another_branch_runs(api: Api, tmp_path: Path) -> None:
    gate = tmp_path / "GATE"
    wf = (await api.ok("POST", "/workflows", {"spec": branches_spec(gate)}, status=201))["id"]
    ids = {name: j["id"] for name, j in (await jobs_by_name(api, wf)).items()}
    runner: dict[str, Any] = {}

    async def run_runner() -> None:
        runner["proc"] = await trio.run_process(
            [sys.executable, "-m", "torc_cli.main", "--url", api.base_url,
             "-o", str(tmp_path / "out"), "run", str(wf), "-j", "4", "--poll-interval", "0.2"],
            cwd=tmp_path, env=runner_env(), check=False, capture_stdout=True,
            capture_stderr=True, stdin=b"")

    async def statuses() -> dict[str, str]:
        return {name: j["status"] for name, j in (await jobs_by_name(api, wf)).items()}

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_runner)

        async def a_done_b1_running() -> bool:
            s = await statuses()
            return (s["a1"], s["a2"], s["b1"]) == ("completed", "completed", "running")

        await until(a_done_b1_running)
        b1_before = (await jobs_by_name(api, wf))["b1"]
        assert (b1_before["run_id"], b1_before["attempt"]) == (1, 1)

        # Resetting the running job's upstream (or the job itself) is refused, naming it,
        # and changes nothing.
        before = (await statuses(), (await api.ok("GET", f"/workflows/{wf}/status"))["run_id"])
        events_before = (await api.ok("GET", f"/workflows/{wf}/events"))["total"]
        for chosen in ([ids["b0"]], [ids["a1"], ids["b1"]]):
            refused = await api.post(f"/workflows/{wf}/reset_status", {"job_ids": chosen})
            assert refused.status == 409, refused.body
            assert refused.body["detail"].startswith(f"job {ids['b1']}: "), refused.body
        after = (await statuses(), (await api.ok("GET", f"/workflows/{wf}/status"))["run_id"])
        assert after == before
        assert (await api.ok("GET", f"/workflows/{wf}/events"))["total"] == events_before

        # Reset a1 (and so a2) while b1 runs; watch the feed say so.
        url = f"ws://127.0.0.1:{api.port}/torc-service/v1/workflows/{wf}/events/ws"
        async with trio_websocket.open_websocket_url(url) as ws:
            with trio.fail_after(10):
                assert json.loads(await ws.get_message())["type"] == "counts"
            answer = await api.ok("POST", f"/workflows/{wf}/reset_status",
                                  {"job_ids": [ids["a1"]]})
            changes = []
            with trio.fail_after(10):
                while (m := json.loads(await ws.get_message()))["type"] == "job_status":
                    changes.append((m["name"], m["old"], m["new"]))
        assert m == {"type": "workflow", "workflow_id": wf, "event": "reset", "ts": m["ts"]}
        assert changes == [("a1", "completed", "uninitialized"),
                           ("a2", "completed", "uninitialized"),
                           ("a1", "uninitialized", "ready"),
                           ("a2", "uninitialized", "blocked")]
        assert answer["jobs"] == [ids["a1"], ids["a2"]] and answer["run_id"] == 2
        b1 = (await jobs_by_name(api, wf))["b1"]
        assert (b1["status"], b1["compute_node_id"], b1["attempt"], b1["run_id"]) == \
            ("running", b1_before["compute_node_id"], 1, 1)

        async def a_rerun() -> bool:
            results = (await api.ok("GET", f"/workflows/{wf}/results?run_id=2"))["items"]
            return {r["job_id"] for r in results} >= {ids["a1"], ids["a2"]}

        await until(a_rerun)
        assert (await statuses())["b1"] == "running"  # still undisturbed
        gate.touch()

    proc = runner["proc"]
    assert proc.returncode == 0, proc.stderr.decode()
    assert set((await statuses()).values()) == {"completed"}
    results = (await api.ok("GET", f"/workflows/{wf}/results?limit=100"))["items"]
    runs = sorted((r["job_id"], r["run_id"], r["status"]) for r in results)
    assert runs == sorted([
        (ids["a1"], 1, "completed"), (ids["a1"], 2, "completed"),
        (ids["a2"], 1, "completed"), (ids["a2"], 2, "completed"),
        (ids["b0"], 1, "completed"),
        (ids["b1"], 1, "completed"),  # reported for the run it was claimed in, and counted
        (ids["b2"], 2, "completed"),  # claimed after the reset: the new run
    ])
    events = (await api.ok("GET", f"/workflows/{wf}/events"))["items"]
    reset = [e["data"] for e in events if e["kind"] == "reset"]
    assert reset == [{"failed_only": False, "job_ids": [ids["a1"]], "num_chosen": 1,
                      "num_reset": 2, "run_id": 2}]


async def test_refused_requests_change_nothing(api: Api) -> None:
    wf = (await api.ok("POST", "/workflows", {"spec": simple_spec(3, chain=True)},
                       status=201))["id"]
    job0 = (await jobs_by_name(api, wf))["job0"]["id"]
    path = f"/workflows/{wf}/reset_status"

    async def state() -> tuple[Any, ...]:
        return ((await api.ok("GET", f"/workflows/{wf}/status")),
                (await api.ok("GET", f"/workflows/{wf}/events"))["total"])

    before = await state()
    unknown = await api.post(path, {"job_ids": [job0, job0 + 100, job0 + 7]})
    assert unknown.status == 404
    assert unknown.body["detail"] == f"job_ids: no job {job0 + 7}, {job0 + 100} in workflow {wf}"
    both = await api.post(path, {"job_ids": [job0], "failed_only": True})
    assert both.status == 422 and "not both" in both.body["detail"]
    empty = await api.post(path, {"job_ids": []})
    assert empty.status == 422 and "at least one" in empty.body["detail"]
    for bad in ([0], ["1"], [job0] * 1_000_001):
        assert (await api.post(path, {"job_ids": bad})).status == 400
    assert await state() == before
    # A job of another workflow is not this workflow's.
    other = (await api.ok("POST", "/workflows", {"spec": simple_spec(1)}, status=201))["id"]
    other_job = (await jobs_by_name(api, other))["job0"]["id"]
    assert (await api.post(path, {"job_ids": [other_job]})).status == 404
    assert await state() == before
    # null: not a selective reset (the whole-workflow reset as before)
    whole = await api.ok("POST", path, {"job_ids": None})
    assert "jobs" not in whole and whole["run_id"] == 2


async def test_repeated_and_unordered_ids_reset_once(api: Api) -> None:
    wf = (await api.ok("POST", "/workflows", {"spec": simple_spec(3, chain=True)},
                       status=201))["id"]
    ids = {n: j["id"] for n, j in (await jobs_by_name(api, wf)).items()}
    answer = await api.ok("POST", f"/workflows/{wf}/reset_status",
                          {"job_ids": [ids["job2"], ids["job1"], ids["job2"]]})
    # Nothing had run: the jobs come back as they were (job0 ready, the rest blocked).
    assert answer["jobs"] == [ids["job1"], ids["job2"]]
    assert answer["counts"]["ready"] == 1 and answer["counts"]["blocked"] == 2
    assert answer["run_id"] == 2


async def test_a_job_running_through_a_reset_keeps_its_run_across_a_restart(
        start_server: Start, tmp_path: Path) -> None:
    """The run a job was claimed in is stored with it: after kill -9 and a restart, its
    report still counts for that run, from whichever runner sends it (as before the
    restart), and the reset job reruns in the new run."""
    db = tmp_path / "torc.db"
    proc = await start_server("--database", str(db))
    api = Api(proc.port)
    wf = (await api.ok("POST", "/workflows", {"spec": simple_spec(2)}, status=201))["id"]
    ids = {n: j["id"] for n, j in (await jobs_by_name(api, wf)).items()}
    cns = [(await api.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "h"},
                         status=201))["id"] for _ in range(2)]
    base = [f"/workflows/{wf}/compute_nodes/{cn}" for cn in cns]
    (held,) = (await api.ok("POST", f"{base[0]}/claim", {"limit": 1}))["jobs"]
    await api.ok("POST", f"{base[0]}/start", {"job_ids": [held["id"]]})
    (other,) = (await api.ok("POST", f"{base[1]}/claim", {"limit": 1}))["jobs"]
    await api.ok("POST", f"{base[1]}/complete", {"results": [
        {"job_id": other["id"], "attempt": 1, "run_id": 1, "return_code": 0}]})
    answer = await api.ok("POST", f"/workflows/{wf}/reset_status", {"job_ids": [other["id"]]})
    assert answer["jobs"] == [other["id"]] and answer["run_id"] == 2
    await api.aclose()
    await proc.kill9()

    proc2 = await start_server("--database", str(db))
    api2 = Api(proc2.port)
    job = {j["id"]: j for j in (await jobs_by_name(api2, wf)).values()}[held["id"]]
    assert (job["status"], job["run_id"], job["compute_node_id"]) == ("running", 1, cns[0])
    reply = await api2.ok("POST", f"{base[1]}/complete", {"results": [
        {"job_id": held["id"], "attempt": 1, "run_id": 1, "return_code": 0}]})
    assert (reply["accepted"], reply["duplicates"]) == (1, 0)
    (again,) = (await api2.ok("POST", f"{base[1]}/claim", {"limit": 5}))["jobs"]
    assert (again["id"], again["run_id"]) == (other["id"], 2)
    reply = await api2.ok("POST", f"{base[1]}/complete", {"results": [
        {"job_id": other["id"], "attempt": 1, "run_id": 2, "return_code": 0}]})
    assert reply["accepted"] == 1 and reply["is_complete"]
    assert sorted(ids.values()) == sorted([held["id"], other["id"]])
    await api2.aclose()
    assert await proc2.stop() == 0
