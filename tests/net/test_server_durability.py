"""Durability: kill -9 and restart, snapshots (SIGUSR1, timer, rotation), restart from one,
graceful SIGTERM, and lease expiry after a restart."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
from conftest import Api, ServerProcess, simple_spec

Start = Callable[..., Awaitable[ServerProcess]]


async def test_kill9_keeps_every_acknowledged_change(start_server: Start, tmp_path: Path) \
        -> None:
    db = tmp_path / "torc.db"
    proc = await start_server("--database", str(db))
    api = Api(proc.port)
    # Ten independent jobs feeding one final job.
    spec = simple_spec(10)
    spec["jobs"].append({"name": "final", "command": "done", "depends_on_regexes": ["job.*"]})
    wf = (await api.ok("POST", "/workflows", {"spec": spec}, status=201))["id"]
    cn = (await api.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "h"},
                       status=201))["id"]
    claim = await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim", {"limit": 7})
    jobs = claim["jobs"]
    assert len(jobs) == 7
    done = jobs[:5]
    await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/start",
                 {"job_ids": [j["id"] for j in jobs]})
    reply = await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/complete", {"results": [
        {"job_id": j["id"], "attempt": 1, "run_id": 1, "return_code": 0 if k else 1,
         "status": "completed" if k else "failed", "exec_time_s": 0.1}
        for k, j in enumerate(done)]})
    assert reply["accepted"] == 5
    before = await api.ok("GET", f"/workflows/{wf}/jobs")
    await api.aclose()
    await proc.kill9()

    proc2 = await start_server("--database", str(db))
    api2 = Api(proc2.port)
    status = await api2.ok("GET", f"/workflows/{wf}/status")
    assert status["counts"]["completed"] == 4
    assert status["counts"]["failed"] == 1
    assert status["counts"]["running"] == 2  # still held by the runner (lease not expired)
    assert status["counts"]["ready"] == 3
    assert status["counts"]["canceled"] == 1  # the final job: job0 failed
    after = await api2.ok("GET", f"/workflows/{wf}/jobs")
    assert after == before
    results = await api2.ok("GET", f"/workflows/{wf}/results")
    assert sorted(r["job_id"] for r in results["items"]) == sorted(j["id"] for j in done)
    # The runner re-reports one result (duplicate) and finishes the rest: counted once.
    running = [j for j in jobs[5:]]
    reply = await api2.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/complete", {"results": [
        {"job_id": j["id"], "attempt": 1, "run_id": 1, "return_code": 0,
         "status": "completed", "exec_time_s": 0.1} for j in [*done[1:2], *running]]})
    assert reply == {"accepted": 2, "duplicates": 1, "is_complete": False, "is_canceled": False}
    claim = await api2.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim", {"limit": 10})
    assert len(claim["jobs"]) == 3
    await api2.aclose()
    assert await proc2.stop() == 0


async def test_restart_expires_old_leases(start_server: Start, tmp_path: Path) -> None:
    db = tmp_path / "torc.db"
    proc = await start_server("--database", str(db), "--lease-seconds", "1")
    api = Api(proc.port)
    wf = (await api.ok("POST", "/workflows", {"spec": simple_spec(2)}, status=201))["id"]
    cn = (await api.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "h"},
                       status=201))["id"]
    claim = await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim", {"limit": 2})
    assert len(claim["jobs"]) == 2
    await api.aclose()
    await proc.kill9()
    await trio.sleep(1.2)
    proc2 = await start_server("--database", str(db), "--lease-seconds", "1")
    api2 = Api(proc2.port)
    with trio.fail_after(10):
        while True:
            status = await api2.ok("GET", f"/workflows/{wf}/status")
            if status["counts"]["ready"] == 2:
                break
            await trio.sleep(0.1)
    # A late report from the old runner still counts (nothing finished is lost).
    j = claim["jobs"][0]
    reply = await api2.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/complete", {"results": [
        {"job_id": j["id"], "attempt": 1, "run_id": 1, "return_code": 0,
         "status": "completed", "exec_time_s": 0.1}]})
    assert reply["accepted"] == 1
    events = await api2.ok("GET", f"/workflows/{wf}/events")
    assert "leases_expired" in [e["kind"] for e in events["items"]]
    await api2.aclose()


def _count_results(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM results").fetchone()[0])
    finally:
        conn.close()


async def test_in_memory_snapshots_rotation_and_restart(start_server: Start, tmp_path: Path) \
        -> None:
    snap = tmp_path / "snaps" / "torc.db"
    env = {"TORC_SERVER_SNAPSHOT_PATH": str(snap), "TORC_SERVER_SNAPSHOT_KEEP": "2"}
    proc = await start_server("--database", ":memory:", env=env)
    api = Api(proc.port)
    wf = (await api.ok("POST", "/workflows", {"spec": simple_spec(5, chain=True)},
                       status=201))["id"]
    cn = (await api.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "h"},
                       status=201))["id"]
    seen = 0
    for round_ in range(3):
        claim = await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim", {"limit": 1})
        j = claim["jobs"][0]
        await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/complete", {"results": [
            {"job_id": j["id"], "attempt": 1, "run_id": 1, "return_code": 0,
             "status": "completed", "exec_time_s": 0.1}]})
        proc.signal(signal.SIGUSR1)
        with trio.fail_after(10):
            seen, line = await proc.wait_line("TORC_SNAPSHOT_DONE=", after=seen)
        seen += 1
        assert Path(line.split("=", 1)[1]) == snap
        assert _count_results(snap) == round_ + 1
    # KEEP=2: the current snapshot and one older copy, nothing else.
    assert sorted(p.name for p in snap.parent.iterdir()) == ["torc.db", "torc.db.1"]
    assert _count_results(snap.parent / "torc.db.1") == 2
    await api.aclose()
    await proc.kill9()

    # A snapshot is a database the server resumes from.
    proc2 = await start_server("--database", str(snap))
    api2 = Api(proc2.port)
    status = await api2.ok("GET", f"/workflows/{wf}/status")
    assert status["counts"]["completed"] == 3 and status["counts"]["ready"] == 1
    claim = await api2.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim", {"limit": 5})
    assert [j["name"] for j in claim["jobs"]] == ["job3"]
    await api2.aclose()


async def test_snapshot_timer(start_server: Start, tmp_path: Path) -> None:
    snap = tmp_path / "timer" / "snap.db"
    env = {"TORC_SERVER_SNAPSHOT_PATH": str(snap)}
    proc = await start_server("-d", ":memory:", "--snapshot-interval-seconds", "0.3", env=env)
    with trio.fail_after(10):
        first, _ = await proc.wait_line("TORC_SNAPSHOT_DONE=")
        await proc.wait_line("TORC_SNAPSHOT_DONE=", after=first + 1)
    assert snap.exists()
    assert await proc.stop() == 0


async def test_sigterm_exits_cleanly_and_commits(start_server: Start, tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    snap = tmp_path / "file-snap.db"
    proc = await start_server("--database", str(db),
                              env={"TORC_SERVER_SNAPSHOT_PATH": str(snap)})
    api = Api(proc.port)
    wf = (await api.ok("POST", "/workflows", {"spec": simple_spec(3)}, status=201))["id"]
    # SIGUSR1 snapshots a file database too.
    proc.signal(signal.SIGUSR1)
    with trio.fail_after(10):
        await proc.wait_line("TORC_SNAPSHOT_DONE=")
    conn = sqlite3.connect(snap)
    try:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 3
    finally:
        conn.close()
    await api.aclose()
    assert await proc.stop() == 0
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM jobs WHERE workflow_id=?", (wf,)).fetchone()[
            0] == 3
    finally:
        conn.close()


async def test_sigterm_drains_in_flight_requests(start_server: Start, tmp_path: Path) -> None:
    db = tmp_path / "drain.db"
    proc = await start_server("--database", str(db), "--shutdown-grace-seconds", "5")
    body = json.dumps({"spec": simple_spec(2, name="drained")}).encode()
    stream = await trio.open_tcp_stream("127.0.0.1", proc.port)
    async with stream:
        await stream.send_all(
            b"POST /torc-service/v1/workflows HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body[:10]
        )
        await trio.sleep(0.2)  # the request is in flight
        proc.signal(signal.SIGTERM)
        await trio.sleep(0.2)
        await stream.send_all(body[10:])
        response = b""
        with trio.fail_after(10):
            async for chunk in stream:
                response += chunk
    assert response.startswith(b"HTTP/1.1 201"), response[:200]
    with trio.fail_after(20):
        assert await proc.process.wait() == 0
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT name FROM workflows").fetchall() == [("drained",)]
    finally:
        conn.close()


def _snapshots(snap: Path) -> list[str]:
    """The snapshot and its rotated copies (not the lock of a server that started from it)."""
    return sorted(p.name for p in snap.parent.iterdir() if not p.name.endswith(".lock"))


async def test_in_memory_writes_a_last_snapshot_and_starts_from_one(start_server: Start,
                                                                    tmp_path: Path) -> None:
    """A clean shutdown of an in-memory server snapshots what changed since the last one;
    --load-snapshot starts an in-memory server from that file; with nothing changed, the
    shutdown writes nothing (no rotation of good copies for a server that only read)."""
    snap = tmp_path / "snaps" / "torc.db"
    env = {"TORC_SERVER_SNAPSHOT_PATH": str(snap), "TORC_SERVER_SNAPSHOT_KEEP": "3"}
    proc = await start_server("-d", ":memory:", env=env)
    api = Api(proc.port)
    wf = (await api.ok("POST", "/workflows", {"spec": simple_spec(4)}, status=201))["id"]
    await api.aclose()
    assert await proc.stop() == 0
    assert any(line == f"TORC_SNAPSHOT_DONE={snap}" for line in proc.lines), proc.lines
    assert _snapshots(snap) == ["torc.db"]

    proc = await start_server("-d", ":memory:", "--load-snapshot", str(snap), env=env)
    api = Api(proc.port)
    status = await api.ok("GET", f"/workflows/{wf}/status")
    assert status["counts"]["ready"] == 4
    await api.aclose()
    assert await proc.stop() == 0
    assert not any(line.startswith("TORC_SNAPSHOT_DONE=") for line in proc.lines)
    assert _snapshots(snap) == ["torc.db"]

    proc = await start_server("-d", ":memory:", "--load-snapshot", str(snap), env=env)
    api = Api(proc.port)
    wf2 = (await api.ok("POST", "/workflows", {"spec": simple_spec(2)}, status=201))["id"]
    assert wf2 == wf + 1  # ids go on from the snapshot
    await api.aclose()
    assert await proc.stop() == 0
    assert _snapshots(snap) == ["torc.db", "torc.db.1"]
    conn = sqlite3.connect(snap)
    try:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 6
    finally:
        conn.close()


async def test_a_snapshot_clears_a_stale_wal_beside_it(start_server: Start,
                                                       tmp_path: Path) -> None:
    """A -wal file left beside the target (by a file server that crashed there) would be
    applied by SQLite to the new snapshot; it goes when the snapshot replaces the file."""
    snap = tmp_path / "torc.db"
    stale = sqlite3.connect(snap)
    stale.execute("PRAGMA journal_mode=WAL")
    stale.execute("CREATE TABLE junk (x)")
    stale.execute("INSERT INTO junk VALUES (1)")
    stale.commit()
    stale.close()  # a clean close removes the WAL: put one back, as a crash would leave it
    (tmp_path / "torc.db-wal").write_bytes(b"left behind")
    proc = await start_server("-d", ":memory:", env={"TORC_SERVER_SNAPSHOT_PATH": str(snap)})
    api = Api(proc.port)
    await api.ok("POST", "/workflows", {"spec": simple_spec(1)}, status=201)
    await api.aclose()
    assert await proc.stop() == 0
    assert not (tmp_path / "torc.db-wal").exists()
    conn = sqlite3.connect(snap)
    try:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1
    finally:
        conn.close()


def test_load_snapshot_is_for_memory(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "torc_net.server", "-d", str(tmp_path / "f.db"),
                           "--port", "0", "--load-snapshot", "x.db"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "--load-snapshot is for -d :memory:" in proc.stderr
    assert not (tmp_path / "f.db").exists()


async def test_one_server_per_database(start_server: Start, tmp_path: Path) -> None:
    """A second server on a database that one serves is refused at start, naming the
    holder; once the first is gone (even by kill -9) the database can be served again."""
    db = tmp_path / "one.db"
    first = await start_server("--database", str(db))
    with trio.fail_after(60):
        second = await trio.run_process(
            [sys.executable, "-m", "torc_net.server", "-d", str(db), "--port", "0"],
            capture_stdout=True, capture_stderr=True, check=False)
    assert second.returncode == 2
    stderr = second.stderr.decode()
    assert "in use by another torc-trio server" in stderr
    assert f"pid {first.process.pid}" in stderr
    await first.kill9()
    again = await start_server("--database", str(db))
    assert await again.stop() == 0
