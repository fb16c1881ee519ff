"""Every endpoint of docs/api.md against a real in-process server with a SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from conftest import Api, simple_spec

STATUSES = ["uninitialized", "blocked", "ready", "pending", "running", "completed", "failed",
            "canceled", "terminated", "disabled", "pending_failed"]


async def create(api: Api, spec: dict[str, Any]) -> int:
    body = await api.ok("POST", "/workflows", {"spec": spec}, status=201)
    return int(body["id"])


async def register(api: Api, wf: int) -> int:
    body = await api.ok("POST", f"/workflows/{wf}/compute_nodes",
                        {"hostname": "h", "pid": 1, "num_cpus": 4, "memory_bytes": 10**9,
                         "num_gpus": 0, "num_nodes": 1, "slurm_job_id": "77"}, status=201)
    assert body["lease_s"] > 0
    return int(body["id"])


async def test_service_routes(api: Api) -> None:
    assert await api.ok("GET", "/ping") == {"status": "ok"}
    assert await api.ok("GET", "/version") == {
        "version": "0.1.0", "api": "v1", "url": f"http://127.0.0.1:{api.port}/torc-service/v1",
        "url_file": None}
    doc = await api.ok("GET", "/openapi.json")
    assert doc["openapi"].startswith("3.1")
    reply = await api.get("/no/such/route")
    assert reply.status == 404 and reply.body["error"] == "not found"
    reply = await api.request("DELETE", "/ping")
    assert reply.status == 405 and "error" in reply.body


async def test_create_get_list_delete(api: Api, tmp_path: Path) -> None:
    spec = simple_spec(3, chain=True, description="d", user="alice")
    dry = await api.ok("POST", "/workflows", {"spec": spec, "dry_run": True})
    assert dry == {"id": None, "name": "wf", "jobs": 3, "dependencies": 2, "barriers": 0,
                   "files": 0, "user_data": 0, "warnings": []}
    assert (await api.ok("GET", "/workflows"))["total"] == 0
    created = await api.ok("POST", "/workflows", {"spec": spec}, status=201)
    wf = created["id"]
    assert created["jobs"] == 3 and created["dependencies"] == 2
    got = await api.ok("GET", f"/workflows/{wf}")
    assert got["name"] == "wf" and got["user"] == "alice" and got["description"] == "d"
    assert got["num_jobs"] == 3 and got["run_id"] == 1 and got["is_complete"] is False
    assert got["is_canceled"] is False and isinstance(got["spec_settings"], dict)
    listed = await api.ok("GET", "/workflows?offset=0&limit=10")
    assert listed["total"] == 1 and listed["items"][0]["id"] == wf
    status = await api.ok("GET", f"/workflows/{wf}/status")
    assert list(status["counts"]) == STATUSES
    assert status["counts"]["ready"] == 1 and status["counts"]["blocked"] == 2
    assert status["total"] == 3
    events = await api.ok("GET", f"/workflows/{wf}/events")
    assert [e["kind"] for e in events["items"]] == ["created", "initialized"]
    assert await api.ok("DELETE", f"/workflows/{wf}") == {"id": wf, "deleted": True}
    assert (await api.get(f"/workflows/{wf}")).status == 404
    assert (await api.ok("GET", "/workflows"))["total"] == 0
    conn = sqlite3.connect(tmp_path / "torc.db")
    try:
        for table in ("workflows", "jobs", "edges", "events"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
    finally:
        conn.close()


async def test_bad_input_is_never_a_500(api: Api) -> None:
    cases = [
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (b'{"spec": 5}', 400),
        (b'{"spec": {}, "dry_run": "yes"}', 400),
        (b"\xff\xfe", 400),
    ]
    for raw, status in cases:
        reply = await api.request("POST", "/workflows", raw=raw,
                                  headers=[("Content-Type", "application/json")])
        assert reply.status == status, (raw, reply.body)
        assert set(reply.body) == {"error", "detail"}
    reply = await api.post("/workflows", {"spec": {"name": "x", "jobs": [
        {"name": "a", "command": "true", "depends_on": ["nope"]}]}})
    assert reply.status == 422 and reply.body["error"] == "invalid spec"
    assert isinstance(reply.body["detail"], list) and "nope" in reply.body["detail"][0]
    reply = await api.post("/workflows", {"spec": {"name": "cyc", "jobs": [
        {"name": "a", "command": "true", "depends_on": ["b"]},
        {"name": "b", "command": "true", "depends_on": ["a"]}]}})
    assert reply.status == 422 and "cycle" in reply.body["detail"][0]
    assert (await api.ok("GET", "/workflows"))["total"] == 0  # nothing half-created
    for path in ("/workflows/999", "/workflows/999/status", "/workflows/999/jobs"):
        assert (await api.get(path)).status == 404
    reply = await api.get("/workflows?limit=abc")
    assert reply.status == 400 and "limit" in reply.body["detail"]


async def test_body_too_large(api: Api) -> None:
    raw = b'{"spec": "' + b"x" * (64 * 1024 * 1024 + 10) + b'"}'
    reply = await api.request("POST", "/workflows", raw=raw)
    assert reply.status == 413 and reply.body["error"] == "body too large"
    assert (await api.ok("GET", "/workflows"))["total"] == 0


async def test_jobs_files_user_data(api: Api) -> None:
    spec = {
        "name": "files",
        "files": [{"name": "in", "path": "/tmp/in.txt"}, {"name": "out", "path": "/tmp/o.txt"}],
        "user_data": [{"name": "cfg", "data": {"a": 1}}],
        "jobs": [
            {"name": "make", "command": "make", "input_files": ["in"], "output_files": ["out"],
             "input_user_data": ["cfg"]},
            {"name": "use", "command": "use", "input_files": ["out"]},
        ],
    }
    wf = await create(api, spec)
    jobs = await api.ok("GET", f"/workflows/{wf}/jobs")
    assert jobs["total"] == 2
    make, use = jobs["items"]
    files = await api.ok("GET", f"/workflows/{wf}/files")
    assert [f["name"] for f in files["items"]] == ["in", "out"]
    fin, fout = (f["id"] for f in files["items"])
    assert make["input_files"] == [fin] and make["output_files"] == [fout]
    assert use["depends_on"] == [make["id"]] and use["status"] == "blocked"
    assert make["status"] == "ready" and make["num_cpus"] == 1
    ready = await api.ok("GET", f"/workflows/{wf}/jobs?status=ready")
    assert [j["name"] for j in ready["items"]] == ["make"]
    assert (await api.get(f"/workflows/{wf}/jobs?status=bogus")).status == 400
    # The documented enum exactly (the client lowercases what a user typed); empty is no value.
    for query in ("status=READY", "status=", "limit=", "offset="):
        reply = await api.get(f"/workflows/{wf}/jobs?{query}")
        assert reply.status == 400 and query.split("=")[0] in reply.body["detail"], query
    one = await api.ok("GET", f"/workflows/{wf}/jobs/{use['id']}")
    assert one["name"] == "use"
    assert (await api.get(f"/workflows/{wf}/jobs/{use['id'] + 100}")).status == 404
    assert (await api.ok("GET", f"/workflows/{wf}/files/{fin}"))["path"] == "/tmp/in.txt"
    assert (await api.get(f"/workflows/{wf}/files/{fin + 100}")).status == 404
    await api.ok("POST", f"/workflows/{wf}/files/mtimes", {"mtimes": {str(fin): 12.5}})
    assert (await api.ok("GET", f"/workflows/{wf}/files/{fin}"))["st_mtime"] == 12.5
    reply = await api.post(f"/workflows/{wf}/files/mtimes", {"mtimes": {str(fin): "x"}})
    assert reply.status == 400
    uds = await api.ok("GET", f"/workflows/{wf}/user_data")
    ud = uds["items"][0]
    assert ud["name"] == "cfg" and ud["data"] == {"a": 1} and ud["is_ephemeral"] is False
    put = await api.ok("PUT", f"/workflows/{wf}/user_data/{ud['id']}", {"data": [1, 2]})
    assert put["data"] == [1, 2]
    assert (await api.ok("GET", f"/workflows/{wf}/user_data/{ud['id']}"))["data"] == [1, 2]
    assert (await api.request("PUT", f"/workflows/{wf}/user_data/{ud['id']}", {})).status == 400
    disabled = await api.ok("POST", f"/workflows/{wf}/jobs/{make['id']}/disable")
    assert disabled["status"] == "disabled"
    assert (await api.ok("GET", f"/workflows/{wf}/jobs/{use['id']}"))["status"] == "ready"
    reply = await api.post(f"/workflows/{wf}/jobs/{make['id']}/disable")
    assert reply.status == 409
    # Named by its id, as users know it (the engine's index differs once ids are global).
    assert reply.body["detail"] == f"job {make['id']}: cannot disable: it is disabled"


async def run_all(api: Api, wf: int, cn: int, rc: int = 0) -> list[dict[str, Any]]:
    claimed = await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim", {"limit": 100})
    results = [{"job_id": j["id"], "attempt": j["attempt"], "run_id": j["run_id"],
                "return_code": rc, "status": "completed" if rc == 0 else "failed",
                "exec_time_s": 0.5} for j in claimed["jobs"]]
    if results:
        await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/complete",
                     {"results": results})
    return claimed["jobs"]


async def test_runner_protocol(api: Api) -> None:
    wf = await create(api, simple_spec(3, chain=True))
    cn = await register(api, wf)
    base = f"/workflows/{wf}/compute_nodes/{cn}"
    nodes = await api.ok("GET", f"/workflows/{wf}/compute_nodes")
    assert nodes["total"] == 1 and nodes["items"][0]["slurm_job_id"] == "77"
    hb = await api.ok("POST", f"{base}/heartbeat")
    assert hb == {"is_complete": False, "is_canceled": False, "active": True}
    claim = await api.ok("POST", f"{base}/claim", {"limit": 10, "cpus": 4,
                                                    "memory_bytes": 10**9})
    assert [j["name"] for j in claim["jobs"]] == ["job0"]
    job = claim["jobs"][0]
    assert job["attempt"] == 1 and job["run_id"] == 1 and job["command"] == "echo 0"
    assert claim["counts"]["pending"] == 1
    assert (await api.ok("POST", f"{base}/start", {"job_ids": [job["id"]]})) == {"started": 1}
    assert (await api.post(f"{base}/start", {"job_ids": ["x"]})).status == 400
    result = {"job_id": job["id"], "attempt": 1, "run_id": 1, "return_code": 0,
              "status": "completed", "exec_time_s": 1.5}
    done = await api.ok("POST", f"{base}/complete", {"results": [result]})
    assert done == {"accepted": 1, "duplicates": 0, "is_complete": False, "is_canceled": False}
    again = await api.ok("POST", f"{base}/complete", {"results": [result]})
    assert again["accepted"] == 0 and again["duplicates"] == 1
    results = await api.ok("GET", f"/workflows/{wf}/results")
    assert results["total"] == 1
    r = results["items"][0]
    assert r["job_name"] == "job0" and r["status"] == "completed" and r["exec_time_s"] == 1.5
    assert r["slurm_job_id"] == "77" and r["compute_node_id"] == cn
    bad = dict(result, return_code="zero")
    reply = await api.post(f"{base}/complete", {"results": [result, bad]})
    assert reply.status == 400 and reply.body["detail"] == (
        "results[1].return_code: expected integer, got string")
    reply = await api.post(f"{base}/complete", {"results": [dict(result, job_id=10**6)]})
    assert reply.status == 404
    assert (await api.post(f"{base}/claim", {"limit": -1})).status == 400
    assert (await api.post(f"/workflows/{wf}/compute_nodes/999/claim", {})).status == 404
    # The next job: fail it; its dependent is canceled.
    claim = await api.ok("POST", f"{base}/claim", {"limit": 10})
    failed = claim["jobs"][0]
    done = await api.ok("POST", f"{base}/complete", {"results": [
        {"job_id": failed["id"], "attempt": 1, "run_id": 1, "return_code": 3,
         "status": "failed", "exec_time_s": 0.1}]})
    assert done["is_complete"] is True
    status = await api.ok("GET", f"/workflows/{wf}/status")
    assert status["counts"]["completed"] == 1 and status["counts"]["failed"] == 1
    assert status["counts"]["canceled"] == 1 and status["is_complete"] is True
    failed_results = await api.ok("GET", f"/workflows/{wf}/results?status=failed")
    assert [x["return_code"] for x in failed_results["items"]] == [3]
    kinds = [e["kind"] for e in (await api.ok("GET", f"/workflows/{wf}/events"))["items"]]
    assert "compute_node_registered" in kinds and kinds[-1] == "completed"
    # Reset the failed part and run again (new run id).
    reset = await api.ok("POST", f"/workflows/{wf}/reset_status", {"failed_only": True})
    assert reset["run_id"] == 2 and reset["counts"]["ready"] == 1
    assert reset["counts"]["completed"] == 1
    await run_all(api, wf, cn)
    await run_all(api, wf, cn)
    assert (await api.ok("GET", f"/workflows/{wf}/status"))["counts"]["completed"] == 3
    released = await api.ok("POST", f"{base}/deactivate")
    assert released == {"released": []}
    assert (await api.post(f"{base}/claim", {})).status == 409
    assert (await api.ok("POST", f"{base}/heartbeat"))["active"] is False


async def test_deactivate_releases_and_cancel(api: Api) -> None:
    wf = await create(api, simple_spec(4))
    cn = await register(api, wf)
    claim = await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim", {"limit": 2})
    ids = sorted(j["id"] for j in claim["jobs"])
    released = await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/deactivate")
    assert released["released"] == ids
    cn2 = await register(api, wf)
    await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn2}/claim", {"limit": 1})
    reply = await api.post(f"/workflows/{wf}/reinitialize", {})
    assert reply.status == 409  # a job is pending
    status = await api.ok("POST", f"/workflows/{wf}/cancel")
    assert status["is_canceled"] is True and status["counts"]["canceled"] == 4
    claim = await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn2}/claim", {"limit": 5})
    assert claim["jobs"] == [] and claim["is_canceled"] is True


async def test_reinitialize_with_changed_files(api: Api) -> None:
    spec = {
        "name": "re",
        "files": [{"name": "in", "path": "/tmp/in"}],
        "jobs": [{"name": "a", "command": "a", "input_files": ["in"]},
                 {"name": "b", "command": "b"}],
    }
    wf = await create(api, spec)
    fid = (await api.ok("GET", f"/workflows/{wf}/files"))["items"][0]["id"]
    await api.ok("POST", f"/workflows/{wf}/files/mtimes", {"mtimes": {str(fid): 1.0}})
    cn = await register(api, wf)
    await run_all(api, wf, cn)
    assert (await api.ok("GET", f"/workflows/{wf}/status"))["is_complete"] is True
    same = await api.ok("POST", f"/workflows/{wf}/reinitialize",
                        {"dry_run": True, "file_mtimes": {str(fid): 1.0}})
    assert same["jobs"] == [] and same["dry_run"] is True
    plan = await api.ok("POST", f"/workflows/{wf}/reinitialize",
                        {"dry_run": True, "file_mtimes": {str(fid): 2.0}})
    jobs = (await api.ok("GET", f"/workflows/{wf}/jobs"))["items"]
    assert plan["jobs"] == [jobs[0]["id"]]
    done = await api.ok("POST", f"/workflows/{wf}/reinitialize",
                        {"file_mtimes": {str(fid): 2.0}})
    assert done["jobs"] == [jobs[0]["id"]] and done["run_id"] == 2
    status = await api.ok("GET", f"/workflows/{wf}/status")
    assert status["counts"]["ready"] == 1 and status["counts"]["completed"] == 1
    assert (await api.ok("GET", f"/workflows/{wf}/files/{fid}"))["st_mtime"] == 2.0
    reply = await api.post(f"/workflows/{wf}/reinitialize", {"file_mtimes": {"999": 1.0}})
    assert reply.status == 404


async def test_initialize_endpoint(api: Api) -> None:
    wf = await create(api, simple_spec(2))
    status = await api.ok("POST", f"/workflows/{wf}/initialize")
    assert status["counts"]["ready"] == 2
