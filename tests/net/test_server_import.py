"""The routes `workflows export` and `workflows import` use: a workflow's definitions, and the
import of earlier runs' results (the workflow's run moves past them, so its own results never
take an imported one's key)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from conftest import Api, ServerProcess, simple_spec

Start = Callable[..., Awaitable[ServerProcess]]

SPEC: dict[str, Any] = {
    **simple_spec(3, chain=True, name="defs"),
    "resource_requirements": [{"name": "small", "num_cpus": 2, "memory": "2g",
                               "runtime": "PT5M"}],
    "failure_handlers": [{"name": "again", "rules": [{"exit_codes": [3], "max_retries": 2}]}],
    "slurm_schedulers": [{"name": "short", "account": "acct", "walltime": "00:10:00"}],
    "actions": [{"trigger_type": "on_jobs_complete", "action_type": "run_commands",
                 "jobs": ["job2"], "commands": ["echo done"]}],
    "compute_node_wait_for_healthy_database_minutes": 5,
}


def result(job_id: int, run_id: int, attempt: int = 1, code: int = 0,
           status: str = "completed") -> dict[str, Any]:
    return {"job_id": job_id, "run_id": run_id, "attempt": attempt, "return_code": code,
            "status": status, "exec_time_s": 1.5, "completed_at": 1_700_000_000.0 + job_id}


async def _created(api: Api, spec: dict[str, Any]) -> tuple[int, list[int]]:
    wf = (await api.ok("POST", "/workflows", {"spec": spec}, status=201))["id"]
    jobs = [j["id"] for j in (await api.ok("GET", f"/workflows/{wf}/jobs"))["items"]]
    return wf, jobs


async def test_definitions_are_what_the_workflow_was_created_with(api: Api) -> None:
    wf, _ = await _created(api, {**SPEC, "jobs": [{**SPEC["jobs"][0], "resource_requirements":
                                                   "small", "failure_handler": "again",
                                                   "scheduler": "short"}, *SPEC["jobs"][1:]]})
    defs = await api.ok("GET", f"/workflows/{wf}/definitions")
    assert [(r["name"], r["num_cpus"], r["memory"], r["memory_bytes"], r["runtime_s"])
            for r in defs["resource_requirements"]] == [("small", 2, "2g", 2 << 30, 300)]
    assert defs["failure_handlers"][0]["name"] == "again"
    assert defs["failure_handlers"][0]["rules"][0]["exit_codes"] == [3]
    assert defs["slurm_schedulers"][0]["account"] == "acct"
    assert defs["actions"][0]["jobs"] == ["job2"]
    assert defs["settings"]["compute_node_settings"] == {
        "compute_node_wait_for_healthy_database_minutes": 5}
    assert (await api.get("/workflows/99/definitions")).status == 404


async def test_import_moves_the_run_past_the_imported_ones(api: Api) -> None:
    wf, (a, b, c) = await _created(api, SPEC)
    base = f"/workflows/{wf}"
    answer = await api.ok("POST", f"{base}/results/import", {"results": [
        result(a, 1), result(b, 1, code=3, status="failed"), result(b, 2),
        result(c, 2, code=-15, status="terminated")]})
    assert answer == {"imported": 4, "duplicates": 0, "run_id": 3}
    status = await api.ok("GET", f"{base}/status")
    assert status["run_id"] == 3
    assert status["counts"]["ready"] == 1 and status["counts"]["blocked"] == 2  # untouched
    listed = (await api.ok("GET", f"{base}/results"))["items"]
    assert sorted((r["job_id"], r["run_id"], r["return_code"], r["status"], r["compute_node_id"])
                  for r in listed) == [(a, 1, 0, "completed", None), (b, 1, 3, "failed", None),
                                       (b, 2, 0, "completed", None),
                                       (c, 2, -15, "terminated", None)]
    events = (await api.ok("GET", f"{base}/events"))["items"]
    assert events[-1]["kind"] == "results_imported"
    assert events[-1]["data"] == {"results": 4, "duplicates": 0, "run_id": 3}

    # Again: every key is recorded already; an earlier run leaves the run where it is.
    again = await api.ok("POST", f"{base}/results/import", {"results": [result(a, 1)]})
    assert again == {"imported": 0, "duplicates": 1, "run_id": 3}

    # The workflow's own first result is run 3's: no collision with the imported run 1 or 2.
    cn = (await api.ok("POST", f"{base}/compute_nodes", {"hostname": "h"}, status=201))["id"]
    claimed = (await api.ok("POST", f"{base}/compute_nodes/{cn}/claim", {"limit": 5}))["jobs"]
    assert [(j["id"], j["run_id"]) for j in claimed] == [(a, 3)]
    done = await api.ok("POST", f"{base}/compute_nodes/{cn}/complete",
                        {"results": [result(a, 3)]})
    assert done["accepted"] == 1
    runs = sorted((r["job_id"], r["run_id"]) for r in
                  (await api.ok("GET", f"{base}/results?job_id={a}"))["items"])
    assert runs == [(a, 1), (a, 3)]


async def test_import_refusals_change_nothing(api: Api) -> None:
    wf, (a, b, _) = await _created(api, SPEC)
    other, (foreign, *_) = await _created(api, {**SPEC, "name": "other"})
    base = f"/workflows/{wf}"
    reply = await api.post(f"{base}/results/import", {"results": [result(a, 1),
                                                                  result(foreign, 1)]})
    assert reply.status == 404 and "results[1].job_id" in reply.body["detail"]
    reply = await api.post(f"{base}/results/import", {"results": [result(a, 1, code=2)]})
    assert reply.status == 422 and "return code 2" in reply.body["detail"]
    reply = await api.post(f"{base}/results/import", {"results": [
        {**result(a, 1), "status": "done"}]})
    assert reply.status == 400 and "results[0].status" in reply.body["detail"]
    reply = await api.post(f"{base}/results/import", {"results": [result(a, 1 << 31)]})
    assert reply.status == 400 and "results[0].run_id" in reply.body["detail"]
    reply = await api.post(f"{base}/results/import", {"results": [
        {k: v for k, v in result(a, 1).items() if k != "completed_at"}]})
    assert reply.status == 400 and "completed_at: required" in reply.body["detail"]
    assert (await api.ok("GET", f"{base}/results"))["total"] == 0
    assert (await api.ok("GET", f"{base}/status"))["run_id"] == 1

    # A claimed job's runner reports for run 1: the run cannot move while it runs...
    cn = (await api.ok("POST", f"{base}/compute_nodes", {"hostname": "h"}, status=201))["id"]
    await api.ok("POST", f"{base}/compute_nodes/{cn}/claim", {"limit": 1})
    reply = await api.post(f"{base}/results/import", {"results": [result(b, 1)]})
    assert reply.status == 409 and "pending or running" in reply.body["detail"]
    assert (await api.ok("GET", f"{base}/results"))["total"] == 0
    # ... and an empty import is no change at all.
    assert await api.ok("POST", f"{base}/results/import", {"results": []}) == {
        "imported": 0, "duplicates": 0, "run_id": 1}
    assert (await api.ok("GET", f"/workflows/{other}/results"))["total"] == 0


async def test_imported_results_and_run_survive_a_restart(start_server: Start,
                                                          tmp_path: Path) -> None:
    db = tmp_path / "torc.db"
    proc = await start_server("--database", str(db))
    api = Api(proc.port)
    wf, (a, _, _) = await _created(api, SPEC)
    await api.ok("POST", f"/workflows/{wf}/results/import", {"results": [result(a, 4)]})
    await api.aclose()
    await proc.kill9()

    proc2 = await start_server("--database", str(db))
    api2 = Api(proc2.port)
    assert (await api2.ok("GET", f"/workflows/{wf}/status"))["run_id"] == 5
    items = (await api2.ok("GET", f"/workflows/{wf}/results"))["items"]
    assert [(r["job_id"], r["run_id"], r["exec_time_s"]) for r in items] == [(a, 4, 1.5)]
    await api2.aclose()
