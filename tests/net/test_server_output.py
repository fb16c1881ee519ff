"""A job's output and resource samples for the dashboard (torc_net.api_output), through a real
in-process server: tails stored with results and answered; the server never opens a path a
result names unless it was started to read job files (``torc-trio dash``)."""

from __future__ import annotations

import itertools
import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from conftest import Api, simple_spec

from torc_cli.monitor import SCHEMA as METRICS_SCHEMA
from torc_cli.monitor import metrics_db_path
from torc_net.server import Running
from torc_net.store.schema import SCHEMA_VERSION

StartFn = Callable[..., Awaitable[Running]]
SECRET = "the-content-of-another-users-file-4f1c"


async def create(api: Api, spec: dict[str, Any]) -> tuple[int, list[int]]:
    wf = int((await api.ok("POST", "/workflows", {"spec": spec}, status=201))["id"])
    jobs = [j["id"] for j in (await api.ok("GET", f"/workflows/{wf}/jobs"))["items"]]
    return wf, jobs


async def claim(api: Api, wf: int, n: int) -> tuple[int, list[dict[str, Any]]]:
    cn = (await api.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "h"},
                       status=201))["id"]
    got = await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim", {"limit": n})
    return cn, got["jobs"]


def result(job: dict[str, Any], return_code: int = 1, **info: Any) -> dict[str, Any]:
    return {"job_id": job["id"], "attempt": job["attempt"], "run_id": job["run_id"],
            "return_code": return_code, "status": "completed" if return_code == 0 else "failed",
            **info}


async def complete(api: Api, wf: int, cn: int, *results: dict[str, Any]) -> None:
    reply = await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/complete",
                         {"results": list(results)})
    assert reply["accepted"] == len(results)


async def output(api: Api, wf: int, job_id: int, query: str = "") -> dict[str, Any]:
    return await api.ok("GET", f"/workflows/{wf}/jobs/{job_id}/output{query}")  # type: ignore[no-any-return]


def secret_file(tmp_path: Path, name: str = "secret.txt") -> Path:
    path = tmp_path / name
    path.write_text(f"first line\n{SECRET}\n")
    return path


# ---------------------------------------------------------------------------------------------
# Stored tails


async def test_tails_are_stored_and_answered_never_listed(api: Api) -> None:
    wf, (a, b) = await create(api, simple_spec(2))
    cn, jobs = await claim(api, wf, 2)
    job_a = next(j for j in jobs if j["id"] == a)
    await complete(api, wf, cn, result(job_a, stdout_tail="out é\n", stderr_tail="boom\n"))
    got = await output(api, wf, a)
    assert got == {"job_id": a, "run_id": 1, "attempt": 1, "stdout": "out é\n",
                   "stderr": "boom\n", "source": "result", "max_bytes": 16384}
    # A job without a result yet: nulls, no source.
    assert await output(api, wf, b) == {"job_id": b, "run_id": None, "attempt": None,
                                        "stdout": None, "stderr": None, "source": None,
                                        "max_bytes": 16384}
    # A page of results carries the other stored fields but not the tails.
    items = (await api.ok("GET", f"/workflows/{wf}/results"))["items"]
    assert len(items) == 1 and "stdout_path" in items[0]
    assert "stdout_tail" not in items[0] and "stderr_tail" not in items[0]
    # Unknown job, job of another workflow: 404.
    _, (c,) = await create(api, simple_spec(1, name="other"))
    for path in (f"/workflows/{wf}/jobs/{c}/output", f"/workflows/{wf}/jobs/999999/output",
                 f"/workflows/{wf}/jobs/{c}/resource_samples"):
        reply = await api.get(path)
        assert reply.status == 404, (path, reply.body)


async def test_a_tail_longer_than_16384_characters_is_refused_whole(api: Api) -> None:
    wf, (a, b) = await create(api, simple_spec(2))
    cn, jobs = await claim(api, wf, 2)
    ja, jb = sorted(jobs, key=lambda j: j["id"])
    for field in ("stdout_tail", "stderr_tail"):
        reply = await api.post(f"/workflows/{wf}/compute_nodes/{cn}/complete",
                               {"results": [result(ja, stdout_tail="ok"),
                                            result(jb, **{field: "x" * 16385})]})
        assert reply.status == 400, reply.body
        assert f"results[1].{field}" in str(reply.body["detail"])
    # Nothing of the refused request was recorded.
    assert (await api.ok("GET", f"/workflows/{wf}/results"))["total"] == 0
    assert (await output(api, wf, a))["source"] is None
    # The bound counts characters: 16384 two-byte characters are fine.
    await complete(api, wf, cn, result(ja, stdout_tail="é" * 16384),
                   result(jb, stderr_tail="x" * 16384))
    assert (await output(api, wf, a))["stdout"] == "é" * 16384
    assert (await output(api, wf, b))["stderr"] == "x" * 16384


async def test_run_and_attempt_choose_a_result(api: Api) -> None:
    spec = simple_spec(1, failure_handlers=[{"name": "retry", "rules": [
        {"exit_codes": [3], "max_retries": 2}]}])
    spec["jobs"][0]["failure_handler"] = "retry"
    wf, (a,) = await create(api, spec)
    cn, (job,) = await claim(api, wf, 1)
    await complete(api, wf, cn, result(job, 3, stdout_tail="first try\n"))
    got = await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim", {"limit": 1})
    (job2,) = got["jobs"]
    assert job2["attempt"] == 2
    await complete(api, wf, cn, result(job2, 0, stdout_tail="second try\n"))
    latest = await output(api, wf, a)
    assert (latest["attempt"], latest["stdout"]) == (2, "second try\n")
    first = await output(api, wf, a, "?attempt=1")
    assert (first["attempt"], first["run_id"], first["stdout"]) == (1, 1, "first try\n")
    assert (await output(api, wf, a, "?run_id=1&attempt=2"))["stdout"] == "second try\n"
    for query in ("?attempt=3", "?run_id=2"):
        reply = await api.get(f"/workflows/{wf}/jobs/{a}/output{query}")
        assert reply.status == 404 and "no result" in reply.body["detail"]
    for query in ("?attempt=x", "?attempt=0", "?run_id=-1"):
        reply = await api.get(f"/workflows/{wf}/jobs/{a}/output{query}")
        assert reply.status == 400 and query[1:].split("=")[0] in reply.body["detail"]


async def test_output_follows_ownership(start_inprocess: StartFn, tmp_path: Path) -> None:
    from torc_net.htpasswd_cli import add_user

    auth = tmp_path / "htpasswd"
    add_user(auth, "alice", "apw", rounds=4)
    add_user(auth, "bob", "bpw", rounds=4)
    server = await start_inprocess(auth_file=str(auth), read_job_files=True)
    alice, bob, anon = (Api(server.port, auth=("alice", "apw")),
                        Api(server.port, auth=("bob", "bpw")), Api(server.port))
    wf, (a,) = await create(alice, simple_spec(1))
    cn, (job,) = await claim(alice, wf, 1)
    await complete(alice, wf, cn, result(job, stdout_tail="alice's\n"))
    for route in ("output", "resource_samples"):
        assert (await bob.get(f"/workflows/{wf}/jobs/{a}/{route}")).status == 403
        assert (await anon.get(f"/workflows/{wf}/jobs/{a}/{route}")).status == 401
    assert (await output(alice, wf, a))["stdout"] == "alice's\n"
    for client in (alice, bob, anon):
        await client.aclose()


# ---------------------------------------------------------------------------------------------
# Paths named in results: read only by a read_job_files server


async def test_a_path_named_in_a_result_is_never_opened(api: Api, tmp_path: Path) -> None:
    secret = secret_file(tmp_path)
    wf, (a,) = await create(api, simple_spec(1))
    cn, (job,) = await claim(api, wf, 1)
    await complete(api, wf, cn, result(job, stdout_path=str(secret), stderr_path=str(secret)))
    reply = await api.get(f"/workflows/{wf}/jobs/{a}/output")
    assert reply.status == 200 and SECRET not in str(reply.body)
    assert reply.body["stdout"] is None and reply.body["source"] is None
    # A time-series database next to the named path is not read either.
    _metrics_db(tmp_path, wf, {a: [(1.0, 50.0, 10, 1)]})
    samples = await api.ok("GET", f"/workflows/{wf}/jobs/{a}/resource_samples")
    assert samples == {"job_id": a, "samples": [], "source": None}


async def test_read_job_files_reads_a_results_files(start_inprocess: StartFn,
                                                      tmp_path: Path) -> None:
    server = await start_inprocess(read_job_files=True)
    api = Api(server.port)
    out = secret_file(tmp_path, "job.o")
    err = tmp_path / "job.e"
    err.write_bytes(b"x" * 20000 + b"\ncut\nlast \xff line\n")  # longer than a tail
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    wf, _ = await create(api, simple_spec(4))
    cn, claimed = await claim(api, wf, 4)
    j0, j1, j2, j3 = sorted(claimed, key=lambda j: j["id"])
    await complete(api, wf, cn,
                   result(j0, stdout_path=str(out), stderr_path=str(err)),
                   # a stored tail wins over the files
                   result(j1, stdout_path=str(out), stdout_tail="sent\n"),
                   # a FIFO is not waited on (nor a missing file read)
                   result(j2, stdout_path=str(fifo), stderr_path=str(tmp_path / "gone")),
                   # combined: one file, answered once, as stdout
                   result(j3, stdout_path=str(out), stderr_path=str(out)))
    with trio.fail_after(10):
        got = await output(api, wf, j0["id"])
    assert got["source"] == "file" and got["stdout"] == f"first line\n{SECRET}\n"
    assert got["stderr"] == "cut\nlast \ufffd line\n"  # the cut first line dropped
    assert len(got["stderr"]) <= 16384
    assert (await output(api, wf, j1["id"]))["source"] == "result"
    got = await output(api, wf, j2["id"])
    assert (got["stdout"], got["stderr"], got["source"]) == (None, None, None)
    got = await output(api, wf, j3["id"])
    assert (got["stdout"], got["stderr"], got["source"]) == (out.read_text(), None, "file")
    await api.aclose()


# ---------------------------------------------------------------------------------------------
# Resource samples


def _metrics_db(out_dir: Path, wf: int, jobs: dict[int, list[tuple[float, float, int, int]]],
                host: str = "node_1", run: int = 1) -> Path:
    path = metrics_db_path(out_dir, wf, run, host)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        for statement in METRICS_SCHEMA:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO job_resource_samples (job_id, timestamp, cpu_percent, memory_bytes,"
            " num_processes) VALUES (?,?,?,?,?)",
            [(job, *s) for job, samples in jobs.items() for s in samples])
    conn.close()
    return path


async def test_resource_samples_from_the_runners_databases(start_inprocess: StartFn,
                                                            tmp_path: Path) -> None:
    server = await start_inprocess(read_job_files=True)
    api = Api(server.port)
    wf, (a, b, c) = await create(api, simple_spec(3))
    # Job a ran with its output in out/ (another directory than the database's); it was
    # sampled on two nodes (a retry), written out of order.
    out = tmp_path / "elsewhere" / "out"
    _metrics_db(out, wf, {a: [(20.0, 30.0, 300, 2), (10.0, 10.0, 100, 1)]}, host="n_1")
    _metrics_db(out, wf, {a: [(15.0, 20.0, 200, 3)], b: [(1.0, 1.0, 1, 1)]}, host="n2", run=1)
    _metrics_db(out, wf + 1, {a: [(99.0, 99.0, 99, 9)]})  # another workflow's: not read
    (out / "resource_utilization" / f"resource_metrics_x_{wf}_1.db").write_text("not sqlite")
    # Job c ran with stdio none (no paths): found through the database's directory.
    _metrics_db(tmp_path, wf, {c: [(float(t), 1.0, t, 1) for t in range(12_000)]})
    cn, claimed = await claim(api, wf, 3)
    ja, _, jc = sorted(claimed, key=lambda j: j["id"])
    stem = out / "job_stdio" / "0" / f"job_wf{wf}_j{a}_r1_a1"
    await complete(api, wf, cn, result(ja, stdout_path=f"{stem}.o", stderr_path=f"{stem}.e"),
                   result(jc))
    got = await api.ok("GET", f"/workflows/{wf}/jobs/{a}/resource_samples")
    assert got["source"] == "file"
    assert got["samples"] == [
        {"timestamp": t, "cpu_percent": cpu, "memory_bytes": mem, "num_processes": n}
        for t, cpu, mem, n in ((10.0, 10.0, 100, 1), (15.0, 20.0, 200, 3), (20.0, 30.0, 300, 2))]
    # Many samples are thinned evenly to 5,000, in time order, from the first.
    got = await api.ok("GET", f"/workflows/{wf}/jobs/{c}/resource_samples")
    times = [s["timestamp"] for s in got["samples"]]
    assert len(times) == 5000 and times == sorted(times) and times[0] == 0.0
    assert times[-1] > 11_000 and max(y - x for x, y in itertools.pairwise(times)) <= 3
    # No result (so no path) and nothing in the database's directory: none.
    assert (await api.ok("GET", f"/workflows/{wf}/jobs/{b}/resource_samples"))["samples"] == []
    await api.aclose()


# ---------------------------------------------------------------------------------------------
# The schema


async def test_a_version_4_database_gets_the_tail_columns(start_inprocess: StartFn,
                                                          tmp_path: Path) -> None:
    db = str(tmp_path / "v4.db")
    server = await start_inprocess(database=db)
    api = Api(server.port)
    wf, (a,) = await create(api, simple_spec(1))
    cn, (job,) = await claim(api, wf, 1)
    await complete(api, wf, cn, result(job, note="old"))
    await api.aclose()
    server.shutdown.set()
    with trio.fail_after(20):
        await server.stopped.wait()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("ALTER TABLE results DROP COLUMN stdout_tail")
        conn.execute("ALTER TABLE results DROP COLUMN stderr_tail")
        conn.execute("UPDATE meta SET value='4' WHERE key='schema_version'")
    conn.close()
    server = await start_inprocess(database=db)
    conn = sqlite3.connect(db)
    try:
        assert dict(conn.execute("SELECT key, value FROM meta"))["schema_version"] == \
            str(SCHEMA_VERSION) == "8"
        columns = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
        assert {"stdout_tail", "stderr_tail"} <= columns
    finally:
        conn.close()
    api = Api(server.port)
    got = await output(api, wf, a)
    assert (got["attempt"], got["stdout"], got["source"]) == (1, None, None)
    assert (await api.ok("GET", f"/workflows/{wf}/results"))["items"][0]["note"] == "old"
    await api.aclose()
