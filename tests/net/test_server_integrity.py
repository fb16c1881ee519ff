"""The server's promises under bad input and failing storage: validate in full, then mutate;
acknowledge only what is committed; a failure in one request never costs another.

Each test here reproduces something that was observed against a real `torc-trio serve` and
failed before the change that fixed it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
from conftest import WRITERS, Api, OpenStore, ServerProcess, simple_spec, wait_for

from torc_net.config import add_serve_arguments, config_from_args
from torc_net.server import Running
from torc_net.store import Change, Store, StoreError
from torc_net.store.schema import SCHEMA_VERSION

StartFn = Callable[..., Awaitable[Running]]
StartServer = Callable[..., Awaitable[ServerProcess]]


async def create(api: Api, spec: dict) -> int:  # type: ignore[type-arg]
    return int((await api.ok("POST", "/workflows", {"spec": spec}, status=201))["id"])


async def register(api: Api, wf: int, hostname: str = "h") -> int:
    reply = await api.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": hostname},
                         status=201)
    return int(reply["id"])


def result(job: dict, rc: int = 0) -> dict:  # type: ignore[type-arg]
    return {"job_id": job["id"], "attempt": job["attempt"], "run_id": job["run_id"],
            "return_code": rc}


# ---------------------------------------------------------------------------------------------
# A change that cannot be stored fails alone


async def _bad_then_next(store: Store, writer: str, workflows: list[int]) \
        -> tuple[Change, list[Change]]:
    """A change SQLite refuses (workflow 5 registers one compute node twice), being
    committed, and changes to ``workflows`` made meanwhile: they wait in the next batch."""
    row = (9, 5, "h", None, None, None, None, None, None, 0.0, None)
    bad = store.change(frozenset({5}))
    bad.compute_nodes.extend([row, row])
    if writer == "process":  # `bad` goes to the writer process as it starts to wait
        assert bad.batch is not None and bad.batch.pump is not None
        bad.batch.pump()
    async with store.limiter:  # a writer thread takes `bad`, then waits for a thread
        await trio.testing.wait_all_tasks_blocked()
        later = [store.change(frozenset({wf})) for wf in workflows]
    return bad, later


@pytest.mark.parametrize("writer", WRITERS)
async def test_a_change_that_cannot_be_stored_fails_alone(open_store: OpenStore,
                                                          writer: str) -> None:
    """Within one group commit, the change SQLite refuses fails, with the later changes to
    its workflow; every other change commits (the whole batch used to fail with it)."""
    store = await open_store(writer)
    lost: list[set[int]] = []
    store.on_lost = lost.append
    first = store.change(frozenset({1}))
    first.events.append((1, 0.0, "first", None))
    # Same primary key twice: the second insert breaks the UNIQUE constraint.
    bad = store.change(frozenset({2}))
    row = (7, 2, "h", None, None, None, None, None, None, 0.0, None)
    bad.compute_nodes.extend([row, row])
    after_bad = store.change(frozenset({2}))  # made on top of the failed one in memory
    after_bad.events.append((2, 0.0, "after", None))
    other = store.change(frozenset({3}))
    other.events.append((3, 0.0, "other", None))
    outcomes = []
    for change in (first, bad, after_bad, other):
        try:
            await change.wait()
            outcomes.append("ok")
        except StoreError as exc:
            outcomes.append("transient" if exc.transient else "failed")
    assert outcomes == ["ok", "failed", "transient", "ok"]
    assert lost == [{2}]
    kinds = [r[0] for r in store.db.execute("SELECT kind FROM events ORDER BY id")]
    assert kinds == ["first", "other"]
    assert store.db.execute("SELECT count(*) FROM compute_nodes").fetchone()[0] == 0


@pytest.mark.parametrize("writer", WRITERS)
async def test_later_changes_to_a_failed_workflow_in_the_next_batch_fail_too(
        open_store: OpenStore, writer: str) -> None:
    """A change queued while the failing commit ran was made on top of the failed one in
    memory: it must not be written either."""
    store = await open_store(writer)
    bad, next_batch = await _bad_then_next(store, writer, [5, 6])
    for c in next_batch:
        c.events.append((next(iter(c.workflows)), 0.0, "next", None))
    with trio.fail_after(10):
        with pytest.raises(StoreError):
            await bad.wait()
        outcomes = []
        for c in next_batch:
            try:
                await c.wait()
                outcomes.append("ok")
            except StoreError:
                outcomes.append("failed")
    assert outcomes == ["failed", "ok"]
    assert store.db.execute("SELECT workflow_id FROM events").fetchall() == [(6,)]


@pytest.mark.parametrize("writer", WRITERS)
async def test_a_next_batch_of_only_failed_changes_is_answered(open_store: OpenStore,
                                                              writer: str) -> None:
    """When every change waiting in the next batch was made on top of the failed one, no
    commit is left to wake them: they must hear their error at once, not wait forever."""
    store = await open_store(writer)
    bad, later = await _bad_then_next(store, writer, [5, 5])
    with trio.fail_after(10):
        with pytest.raises(StoreError):
            await bad.wait()
        for change in later:
            with pytest.raises(StoreError, match="earlier change"):
                await change.wait()
    # And the store goes on.
    ok = store.change(frozenset({6}))
    ok.events.append((6, 0.0, "ok", None))
    with trio.fail_after(10):
        await ok.wait()


# ---------------------------------------------------------------------------------------------
# A full disk: nothing unstored is acknowledged, leased, or later called a duplicate


def _fill(path: Path) -> None:
    """Write zeros into ``path`` until the file system is full."""
    chunk = b"\0" * (64 * 1024)
    with path.open("ab", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        small = b"\0" * 512
        try:
            while True:
                f.write(small)
        except OSError:
            pass


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB file system (tmpfs) to fill up; needs root (CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_full_disk_loses_nothing_acknowledged(start_server: StartServer,
                                                    small_disk: Path) -> None:
    """Against a full file system (observed: claims answered 503 still leased 3,000 jobs;
    completions answered 503 were called duplicates on retry and lost at restart)."""
    db = str(small_disk / "torc.db")
    proc = await start_server("--database", db)
    api = Api(proc.port)
    wf = await create(api, simple_spec(3000, name="big"))
    cn = await register(api, wf)
    base = f"/workflows/{wf}/compute_nodes/{cn}"
    first = (await api.ok("POST", f"{base}/claim", {"limit": 2000}))["jobs"]
    await api.aclose()
    assert await proc.stop() == 0
    # Full, with a little room to open the database (its -shm file), then full again.
    _fill(small_disk / "filler1")
    with (small_disk / "filler1").open("r+b") as f:
        f.truncate(max(0, f.seek(0, os.SEEK_END) - 512 * 1024))
    proc = await start_server("--database", db)
    api = Api(proc.port)
    assert (await api.ok("GET", f"/workflows/{wf}/status"))["counts"]["pending"] == 2000
    _fill(small_disk / "filler2")

    done = [result(j) for j in first]
    reply = await api.post(f"{base}/complete", {"results": done})
    assert reply.status == 503, reply.body
    assert reply.headers.get("retry-after")
    reply = await api.post(f"{base}/claim", {"limit": 1000, "held_job_ids": [
        j["id"] for j in first]})
    assert reply.status == 503, reply.body

    async def status() -> dict:  # type: ignore[type-arg]
        """The workflow's counts once it answers again (it reloads from disk first)."""
        with trio.fail_after(30):
            while True:
                reply = await api.get(f"/workflows/{wf}/status")
                if reply.status == 200:
                    return reply.body["counts"]  # type: ignore[no-any-return]
                assert reply.status == 503, reply.body
                await trio.sleep(0.05)

    counts = await status()
    assert counts["pending"] == 2000 and counts["completed"] == 0 and counts["ready"] == 1000

    (small_disk / "filler1").unlink()
    (small_disk / "filler2").unlink()
    reply = await api.ok("POST", f"{base}/complete", {"results": done})
    assert (reply["accepted"], reply["duplicates"]) == (2000, 0)
    rest = await api.ok("POST", f"{base}/claim", {"limit": 1000})
    assert len(rest["jobs"]) == 1000
    await api.aclose()
    assert await proc.stop() == 0

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM results").fetchone()[0] == 2000
        by_status = dict(conn.execute(  # current values: job_states' where there is a row
            "SELECT coalesce(s.status, j.status), count(*) FROM jobs j"
            " LEFT JOIN job_states s ON s.id = j.id GROUP BY 1"))
    finally:
        conn.close()
    assert by_status == {5: 2000, 3: 1000}  # completed, pending


async def test_an_unstorable_value_costs_no_other_request(start_inprocess: StartFn,
                                                          tmp_path: Path) -> None:
    """Observed: a completion with return_code 2**70 got 503 yet left its job failed in
    memory; the honest retry was called a duplicate; and 17 of 25 completions from another
    client that shared its commit failed with it and were lost at restart."""
    server = await start_inprocess()
    api = Api(server.port)
    wf = await create(api, simple_spec(26))
    honest, faulty = await register(api, wf, "a"), await register(api, wf, "b")
    jobs = (await api.ok("POST", f"/workflows/{wf}/compute_nodes/{honest}/claim",
                         {"limit": 25}))["jobs"]
    (odd,) = (await api.ok("POST", f"/workflows/{wf}/compute_nodes/{faulty}/claim",
                           {"limit": 1}))["jobs"]
    replies: dict[int, object] = {}

    async def complete(cn: int, job: dict, rc: int) -> None:  # type: ignore[type-arg]
        reply = await api.post(f"/workflows/{wf}/compute_nodes/{cn}/complete",
                               {"results": [result(job, rc)]})
        replies[job["id"]] = (reply.status, reply.body)

    async with trio.open_nursery() as n:
        for job in jobs:
            n.start_soon(complete, honest, job, 0)
        n.start_soon(complete, faulty, odd, 2**70)
    status, body = replies.pop(odd["id"])  # type: ignore[misc]
    assert status == 400 and "results[0].return_code" in body["detail"], body
    assert all(r[0] == 200 and r[1]["accepted"] == 1 for r in replies.values()), replies
    counts = (await api.ok("GET", f"/workflows/{wf}/status"))["counts"]
    assert counts["completed"] == 25 and counts["pending"] == 1
    reply = await api.ok("POST", f"/workflows/{wf}/compute_nodes/{faulty}/complete",
                         {"results": [result(odd, 0)]})
    assert (reply["accepted"], reply["duplicates"]) == (1, 0)
    await api.aclose()
    conn = sqlite3.connect(tmp_path / "torc.db")
    try:
        assert conn.execute("SELECT count(*) FROM results").fetchone()[0] == 26
    finally:
        conn.close()


async def test_a_refused_claim_changes_nothing(api: Api) -> None:
    """A claim carrying good results and an unknown held job id is refused whole: the results
    were applied before the held ids were checked."""
    wf = await create(api, simple_spec(2))
    cn = await register(api, wf)
    base = f"/workflows/{wf}/compute_nodes/{cn}"
    jobs = (await api.ok("POST", f"{base}/claim", {"limit": 2}))["jobs"]
    reply = await api.post(f"{base}/claim", {"results": [result(jobs[0])],
                                              "held_job_ids": [jobs[1]["id"], 99999]})
    assert reply.status == 404 and "held_job_ids[1]" in reply.body["detail"], reply.body
    counts = (await api.ok("GET", f"/workflows/{wf}/status"))["counts"]
    assert counts["pending"] == 2 and counts["completed"] == 0
    assert (await api.ok("GET", f"/workflows/{wf}/results"))["total"] == 0


# ---------------------------------------------------------------------------------------------
# Bounded work per request


async def test_parameter_expansion_is_bounded_before_expanding(api: Api,
                                                               start_inprocess: StartFn,
                                                               tmp_path: Path) -> None:
    """A 141-byte dry run with two 1:100000 parameters grew the server to 5 GB."""
    bomb = {"name": "bomb", "jobs": [{"name": "j_{a}_{b}", "command": "echo {a} {b}",
                                      "parameters": {"a": "1:100000", "b": "1:100000"}}]}
    with trio.fail_after(10):
        reply = await api.post("/workflows", {"spec": bomb, "dry_run": True})
    assert reply.status == 422, reply.body
    text = " ".join(reply.body["detail"])
    assert "10000000000" in text and "5000000" in text, text
    server = await start_inprocess(max_jobs_per_workflow=50,
                                   database=str(tmp_path / "small-limit.db"))
    api = Api(server.port)
    ok = {"name": "ok", "jobs": [{"name": "j{i}", "command": "true",
                                  "parameters": {"i": "1:50"}}]}
    assert (await api.ok("POST", "/workflows", {"spec": ok}, status=201))["jobs"] == 50
    ok["jobs"][0]["parameters"] = {"i": "1:51"}
    assert (await api.post("/workflows", {"spec": ok})).status == 422
    await api.aclose()


async def test_a_backtracking_regex_cannot_freeze_the_server(api: Api) -> None:
    """depends_on_regexes ["(a+)+b"] against a job named 34 a's and a '!' stalled every
    request, even /ping, and the server did not stop on SIGTERM."""
    spec = {"name": "redos", "jobs": [
        {"name": "a" * 34 + "!", "command": "true"},
        {"name": "victim", "command": "true", "depends_on_regexes": ["(a+)+b"]},
    ]}
    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            replies = []

            async def create_it() -> None:
                replies.append(await api.post("/workflows", {"spec": spec}))

            n.start_soon(create_it)
            assert (await api.get("/ping")).status == 200
    (reply,) = replies
    assert reply.status == 422 and "matches no job" in " ".join(reply.body["detail"])
    spec["jobs"][1]["depends_on_regexes"] = ["(a)\\1"]  # RE2 has no backreferences
    reply = await api.post("/workflows", {"spec": spec})
    assert reply.status == 422 and "depends_on_regexes" in " ".join(reply.body["detail"])


async def test_deep_json_is_a_400(api: Api) -> None:
    deep = b'{"spec": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    reply = await api.request("POST", "/workflows", raw=deep)
    assert reply.status == 400 and "nested deeper than 64" in reply.body["detail"], reply.body
    shallow = {"name": "d", "jobs": [{"name": "a", "command": "true"}],
               "user_data": [{"name": "u", "data": [[[[1]]]]}]}
    assert (await api.post("/workflows", {"spec": shallow, "dry_run": True})).status == 200
    nested: list = []  # type: ignore[type-arg]
    for _ in range(70):
        nested = [nested]
    shallow["user_data"][0]["data"] = nested
    reply = await api.post("/workflows", {"spec": shallow, "dry_run": True})
    assert reply.status == 400 and "spec.user_data[0].data" in reply.body["detail"], reply.body
    wf = await create(api, simple_spec(1, user_data=[{"name": "u", "data": 1}]))
    ud = (await api.ok("GET", f"/workflows/{wf}/user_data"))["items"][0]["id"]
    reply = await api.request("PUT", f"/workflows/{wf}/user_data/{ud}", {"data": nested})
    assert reply.status == 400 and reply.body["detail"].startswith("data[0]"), reply.body
    assert "nested deeper than 64" in reply.body["detail"]


async def test_values_the_store_cannot_hold_are_4xx_never_500(api: Api) -> None:
    """Each of these was a 500 (OverflowError, UnicodeEncodeError, RecursionError)."""
    wf = await create(api, {"name": "v", "jobs": [{"name": "a", "command": "true"}],
                            "actions": [{"trigger_type": "on_workflow_start",
                                         "action_type": "run_commands",
                                         "commands": ["true"]}]})
    cn = await register(api, wf)
    cases: list[tuple[str, str, object, int, str]] = [
        ("POST", "/workflows", {"spec": {"name": "m", "jobs": [
            {"name": "a", "command": "true", "resource_requirements": "r"}],
            "resource_requirements": [{"name": "r", "memory": "99999999999999999999999p"}]}},
         422, "memory"),
        ("POST", "/workflows", {"spec": {"name": "r", "jobs": [
            {"name": "a", "command": "true", "resource_requirements": "r"}],
            "resource_requirements": [{"name": "r", "runtime": "P99999999999999999999D"}]}},
         422, "runtime"),
        ("POST", "/workflows", {"spec": {"name": "s", "jobs": [
            {"name": "bad\ud800name", "command": "true"}]}}, 422, "surrogate"),
        ("GET", f"/workflows?offset={10**20}", None, 400, "offset"),
        ("GET", f"/workflows/{wf}/events?after={10**20}", None, 400, "after"),
        ("GET", f"/workflows/{wf}/results?offset={10**20}", None, 400, "offset"),
        ("POST", f"/workflows/{wf}/allocations", {"slurm_job_id": "1", "action_index": 2**70},
         400, "action_index"),
        ("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "h\ud800"}, 400, "hostname"),
        ("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim", b'{"walltime_s": 1e400}', 400,
         "walltime_s"),
        ("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim", b'{"walltime_s": NaN}', 400,
         "NaN"),
        ("POST", f"/workflows/{wf}/compute_nodes/{cn}/start", {"job_ids": [2**64]}, 400,
         "job_ids[0]"),
        ("GET", f"/workflows/{2**70}", None, 404, "workflow"),
    ]
    for method, path, body, status, word in cases:
        if isinstance(body, bytes):
            reply = await api.request(method, path, raw=body)
        else:
            reply = await api.request(method, path, body)
        assert reply.status == status, (path, body, reply.status, reply.body)
        assert word in str(reply.body["detail"]), (path, reply.body)
    raw = b'{"data": {"x": [1e999]}}'
    ud_wf = await create(api, simple_spec(1, user_data=[{"name": "u", "data": 1}]))
    ud = (await api.ok("GET", f"/workflows/{ud_wf}/user_data"))["items"][0]["id"]
    reply = await api.request("PUT", f"/workflows/{ud_wf}/user_data/{ud}", raw=raw)
    assert reply.status == 400 and reply.body["detail"].startswith("data.x[0]: a number"), \
        reply.body


async def test_a_slow_body_gets_408_and_frees_its_slot(start_inprocess: StartFn) -> None:
    """A body sent a byte every few seconds held a request slot for 120 s."""
    server = await start_inprocess(body_timeout_s=1.0)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(b"POST /torc-service/v1/workflows HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    with trio.fail_after(20):
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(4096)
        assert data.startswith(b"HTTP/1.1 408"), data
        await server.admission.wait_idle()
    await stream.aclose()


# ---------------------------------------------------------------------------------------------
# Durability and ids


async def test_file_databases_sync_every_commit_by_default(start_inprocess: StartFn,
                                                           tmp_path: Path) -> None:
    """WAL with synchronous=NORMAL made 0 fsyncs across 40 acknowledged commits, while the
    docs said nothing is acknowledged before it is durable."""
    server = await start_inprocess()
    assert server.store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert server.store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    fast = await start_inprocess(sync="normal", database=str(tmp_path / "fast.db"))
    assert fast.store.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert config_from_args(parser.parse_args([])).sync == "full"
    assert config_from_args(parser.parse_args(["--sync", "normal"])).sync == "normal"
    os.environ["TORC_SERVER_SYNC"] = "normal"
    try:
        parser = argparse.ArgumentParser()
        add_serve_arguments(parser)
        assert config_from_args(parser.parse_args([])).sync == "normal"
    finally:
        del os.environ["TORC_SERVER_SYNC"]


async def _restart(server: Running, start: StartFn, db: str) -> Running:
    server.shutdown.set()
    with trio.fail_after(20):
        await server.stopped.wait()
    return await start(database=db)


async def test_delete_removes_every_row_and_ids_are_never_reused(start_inprocess: StartFn,
                                                                 tmp_path: Path) -> None:
    """After deleting the newest workflow and restarting, the next workflow got its id and
    inherited its claimed actions and allocations (so `cancel` would scancel another
    workflow's Slurm jobs)."""
    db = str(tmp_path / "ids.db")
    server = await start_inprocess(database=db)
    api = Api(server.port)
    spec = simple_spec(2, actions=[{"trigger_type": "on_workflow_start",
                                    "action_type": "run_commands", "commands": ["true"]}])
    keep = await create(api, spec)
    gone = await create(api, spec)
    cn = await register(api, gone)
    await api.ok("POST", f"/workflows/{gone}/compute_nodes/{cn}/claim", {"limit": 1})
    claimed = await api.ok("POST", f"/workflows/{gone}/actions/claim", {})
    assert len(claimed["actions"]) == 1
    alloc = await api.ok("POST", f"/workflows/{gone}/allocations", {"slurm_job_id": "42"},
                         status=201)
    jobs = (await api.ok("GET", f"/workflows/{gone}/jobs"))["items"]
    await api.ok("DELETE", f"/workflows/{gone}")
    await api.aclose()
    server = await _restart(server, start_inprocess, db)
    conn = sqlite3.connect(db)
    try:
        for table in ("jobs", "events", "compute_nodes", "allocations", "actions_claimed",
                      "barriers", "edges", "results", "files", "user_data"):
            rows = conn.execute(f"SELECT count(*) FROM {table} WHERE workflow_id=?",
                                (gone,)).fetchone()[0]
            assert rows == 0, table
    finally:
        conn.close()
    api = Api(server.port)
    new = await create(api, spec)
    assert new == gone + 1
    assert all(not a["claimed"] for a in (await api.ok("GET", f"/workflows/{new}/actions"))
               ["items"])
    assert (await api.ok("GET", f"/workflows/{new}/allocations"))["total"] == 0
    assert await register(api, new) == cn + 1
    new_jobs = (await api.ok("GET", f"/workflows/{new}/jobs"))["items"]
    assert min(j["id"] for j in new_jobs) > max(j["id"] for j in jobs)
    alloc2 = await api.ok("POST", f"/workflows/{new}/allocations", {"slurm_job_id": "43"},
                          status=201)
    assert alloc2["id"] == alloc["id"] + 1
    assert (await api.ok("GET", f"/workflows/{keep}/status"))["total"] == 2
    await api.aclose()


async def test_a_version_1_database_is_migrated(start_inprocess: StartFn, tmp_path: Path) \
        -> None:
    """Version 1 kept no id marks and left allocations and claimed actions of deleted
    workflows behind: opening it adds the marks from the tables and drops the orphans."""
    db = str(tmp_path / "v1.db")
    server = await start_inprocess(database=db)
    api = Api(server.port)
    wf = await create(api, simple_spec(3))
    await api.aclose()
    server.shutdown.set()
    with trio.fail_after(20):
        await server.stopped.wait()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
        conn.execute("DELETE FROM meta WHERE key LIKE 'next_id.%'")
        conn.execute("INSERT INTO allocations (id, workflow_id, slurm_job_id, submitted_at)"
                     " VALUES (5, 77, '9', 0)")
        conn.execute("INSERT INTO actions_claimed (workflow_id, action_index, claimed_at)"
                     " VALUES (77, 0, 0)")
    conn.close()
    server = await start_inprocess(database=db)
    conn = sqlite3.connect(db)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        assert meta["schema_version"] == str(SCHEMA_VERSION)
        assert meta["next_id.workflow"] == str(wf + 1) and meta["next_id.job"] == "4"
        assert meta["next_id.allocation"] == "6"  # the orphan's id stays used
        assert conn.execute("SELECT count(*) FROM allocations").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM actions_claimed").fetchone()[0] == 0
    finally:
        conn.close()
    api = Api(server.port)
    assert await create(api, simple_spec(1)) == wf + 1
    await api.aclose()


# ---------------------------------------------------------------------------------------------
# Shutdown whatever clients do


async def test_a_subscriber_that_stops_reading_cannot_hold_shutdown(
        start_server: StartServer, tmp_path: Path) -> None:
    """A websocket subscriber with a small receive buffer that stopped reading kept the
    server alive for more than 25 s after SIGTERM with a 3 s grace period."""
    proc = await start_server("--database", str(tmp_path / "torc.db"),
                              "--shutdown-grace-seconds", "2")
    api = Api(proc.port)
    wf = await create(api, simple_spec(20_000, name="many"))
    cn = await register(api, wf)
    stream = await _stuck_subscriber(proc.port, wf)
    # 20,000 status changes, more than the subscriber's queue; it reads none of them.
    for _ in range(4):
        await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim", {"limit": 5000})
    await api.aclose()
    proc.signal(signal.SIGTERM)
    with trio.fail_after(20):
        status = await proc.process.wait()
    assert status == 0
    await stream.aclose()


async def _stuck_subscriber(port: int, wf: int) -> trio.SocketStream:
    """A websocket subscriber with a tiny receive buffer that never reads."""
    sock = trio.socket.socket()
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(
        f"GET /torc-service/v1/workflows/{wf}/events/ws HTTP/1.1\r\nHost: x\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
    with trio.fail_after(10):
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return stream


async def test_the_watchdog_hangs_up_on_a_subscriber_that_stopped_reading(
        start_inprocess: StartFn) -> None:
    """While serving, not only at shutdown: the stuck send holds a task and its buffers until
    the watchdog hangs up (after SEND_TIMEOUT_S; here asked at once)."""
    server = await start_inprocess()
    api = Api(server.port)
    wf = await create(api, simple_spec(20_000, name="many"))
    cn = await register(api, wf)
    stream = await _stuck_subscriber(server.port, wf)
    feed = server.service.feed
    await wait_for(lambda: feed.num_subscribers == 1)
    # 9,000 status messages (~1.3 MB): far more than the socket buffers hold, so the send is
    # stuck; and fewer than the subscriber's queue holds (10,000), so it is not closed for an
    # overflow first (4 claims of 5,000 overflowed it when its sender had not yet started)
    await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim", {"limit": 9000})
    hung_up: list[int] = []
    await wait_for(lambda: hung_up.append(feed.hang_up_stuck(server.port, older_than=0))
                   or hung_up[-1])
    await wait_for(lambda: feed.num_subscribers == 0)
    assert (await api.get("/ping")).status == 200
    await api.aclose()
    await stream.aclose()


async def test_a_version_7_database_keeps_its_jobs_states(start_inprocess: StartFn,
                                                          tmp_path: Path) -> None:
    """Up to version 7 a job's current status, attempt, holder and run were in its ``jobs``
    row; version 8 keeps them in ``job_states`` once they change. A version-7 file (its jobs
    in every state, no ``job_states`` rows) opens with every job where it was, and goes on."""
    db = str(tmp_path / "v7.db")
    server = await start_inprocess(database=db)
    api = Api(server.port)
    wf = await create(api, simple_spec(4))
    cn = (await api.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "h"},
                       status=201))["id"]
    base = f"/workflows/{wf}/compute_nodes/{cn}"
    jobs = (await api.ok("POST", f"{base}/claim", {"limit": 3}))["jobs"]
    done = [{"job_id": j["id"], "attempt": 1, "run_id": j["run_id"], "return_code": 0}
            for j in jobs[:2]]
    await api.ok("POST", f"{base}/complete", {"results": done})
    before = await api.ok("GET", f"/workflows/{wf}/jobs")
    await api.aclose()
    server.shutdown.set()
    with trio.fail_after(20):
        await server.stopped.wait()
    conn = sqlite3.connect(db)
    with conn:  # as version 7 kept it: the current values in the jobs rows
        assert conn.execute("SELECT count(*) FROM job_states").fetchone()[0] == 3
        conn.execute("UPDATE jobs SET (status, attempt, compute_node_id, run_id) = (SELECT"
                     " status, attempt, compute_node_id, run_id FROM job_states s"
                     " WHERE s.id = jobs.id) WHERE id IN (SELECT id FROM job_states)")
        conn.execute("DROP TABLE job_states")
        conn.execute("UPDATE meta SET value='7' WHERE key='schema_version'")
    conn.close()
    server = await start_inprocess(database=db)
    api = Api(server.port)
    assert await api.ok("GET", f"/workflows/{wf}/jobs") == before
    statuses = sorted(j["status"] for j in before["items"])
    assert statuses == ["completed", "completed", "pending", "ready"], statuses
    cn = (await api.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "h2"},
                       status=201))["id"]
    rest = (await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim",
                         {"limit": 5}))["jobs"]
    assert len(rest) == 1  # the ready one; the other runner still holds its job
    await api.aclose()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'"
                            ).fetchone()[0] == str(SCHEMA_VERSION) == "8"
    finally:
        conn.close()
