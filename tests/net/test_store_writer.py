"""The writer process (torc_net.store.core, Rule 9): a file database's group commits run in a
process of their own, with the same promises as in the server's thread: nothing is
acknowledged before it is on disk, a change that cannot be stored fails alone, ids never go
back, and the server survives the writer's death."""

from __future__ import annotations

import argparse
import os
import select
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
import pytest
import trio
import trio.testing
from conftest import WRITERS, Api, OpenStore, ServerProcess, simple_spec, wait_for

from torc_net.config import add_serve_arguments, config_from_args
from torc_net.server import Running
from torc_net.store import Change, Store, StoreError
from torc_net.store.schema import read_next_ids
from torc_net.store.writer_link import WriterLink


def node_row(cn: int, wf: int) -> tuple[object, ...]:
    """A compute_nodes row (id, workflow, hostname, pid, cpus, memory, gpus, nodes, slurm id,
    created_at, lease)."""
    return (cn, wf, "h", None, None, None, None, None, None, 0.0, None)


async def test_the_writer_process_uses_the_durable_settings(open_store: OpenStore
                                                             ) -> None:
    store = await open_store("process")
    assert store.writer is not None
    change = store.change(frozenset({1}))
    change.events.append((1, 0.0, "hello", None))
    await change.wait()
    assert store.writer.hello is not None
    assert store.writer.hello["journal_mode"] == "wal"
    assert store.writer.hello["synchronous"] == 2  # FULL: synced before it is acknowledged
    assert store.writer.hello["pid"] == store.writer.pid != os.getpid()
    # What it committed is what the server's own connection reads.
    assert store.db.execute("SELECT kind FROM events").fetchall() == [("hello",)]


@pytest.mark.parametrize("writer", WRITERS)
async def test_a_batch_bigger_than_the_pipe_is_stored_whole(
        open_store: OpenStore, writer: str) -> None:
    """Several MiB in one change. The writer process is paused while the batch is handed
    over, so the pipe fills (1 MiB) and the writer task must write the rest as the child
    reads it."""
    store = await open_store(writer)
    first = store.change(frozenset({1}))  # the process has started and said hello
    await first.wait()
    child = psutil.Process(store.writer.pid) if store.writer is not None else None
    if child is not None:
        child.suspend()
    change = store.change(frozenset({1}))
    change.events.extend((1, float(i), "big", f"{i:0200d}") for i in range(30_000))
    small = store.change(frozenset({2}))
    small.events.append((2, 0.0, "small", None))
    with trio.fail_after(30):
        async with trio.open_nursery() as waiting:
            waiting.start_soon(change.wait)
            await trio.testing.wait_all_tasks_blocked()
            if child is not None:
                assert store.writer is not None and store.writer.sending
                child.resume()
        await small.wait()
    counts = dict(store.db.execute("SELECT kind, count(*) FROM events GROUP BY kind"))
    assert counts == {"big": 30_000, "small": 1}


async def _answer_waiting(open_store: OpenStore, nursery: trio.Nursery
                          ) -> tuple[Store, WriterLink, Change]:
    """A store whose writer task waits for the answer to a change ``a`` that the writer
    process has written but Trio has not read yet (the caller must not yield to Trio, or
    the writer task takes it itself)."""
    store = await open_store("process")
    link = store.writer
    assert link is not None
    first = store.change(frozenset({1}))  # the process has started and said hello
    await first.wait()
    a = store.change(frozenset({1}))
    a.events.append((1, 0.0, "a", None))
    nursery.start_soon(a.wait)  # hands `a` over
    await trio.testing.wait_all_tasks_blocked()  # the writer task waits for its answer
    assert select.select([link._in_fd], [], [], 10)[0]  # the answer is there
    return store, link, a


async def test_the_rest_of_a_batch_a_request_handed_over_is_written(
        open_store: OpenStore, nursery: trio.Nursery) -> None:
    """The writer task waits for an answer; a request's change takes that answer first and
    hands over a batch the pipe cannot hold at once. The writer task must stop waiting for an
    answer that cannot come and write the rest."""
    store, link, a = await _answer_waiting(open_store, nursery)
    # Still without yielding to Trio: the child stops, and the next change's _pump takes the
    # answer and hands over a big batch, of which the pipe takes 1 MiB.
    child = psutil.Process(link.pid)
    child.suspend()
    big = store.change(frozenset({2}))
    big.events.extend((2, float(i), "big", f"{i:0200d}") for i in range(30_000))
    store._pump()
    assert a.batch is not None and a.batch.done.is_set() and link.sending
    child.resume()
    with trio.fail_after(30):
        await big.wait()
    counts = dict(store.db.execute("SELECT kind, count(*) FROM events GROUP BY kind"))
    assert counts == {"a": 1, "big": 30_000}


async def test_a_store_closes_while_its_writer_task_waited_for_an_answer_taken(
        open_store: OpenStore, nursery: trio.Nursery) -> None:
    """A change took the answer the writer task was waiting for: the task must stop waiting
    on the pipe, or closing the store (which closes the pipe; the fixture does, after the
    test) kills it with ClosedResourceError (a rare CI failure; at a server's shutdown, a
    crash)."""
    store, _, a = await _answer_waiting(open_store, nursery)
    store._pump()  # a change's _pump takes it
    assert a.batch is not None and a.batch.done.is_set()
    await trio.testing.wait_all_tasks_blocked()


@pytest.mark.parametrize("writer", WRITERS)
async def test_ids_saved_with_commits_and_writes_never_go_back(
        open_store: OpenStore, tmp_path: Path, writer: str) -> None:
    """Batches and the server connection's own writes interleave; the high-water mark on
    disk is the newest, whichever of them wrote last."""
    store = await open_store(writer)
    waits = []
    for k in range(60):
        cn = store.allocate("compute_node")
        change = store.change(frozenset({1}))
        change.compute_nodes.append(node_row(cn, 1))
        waits.append(change)
        if k % 7 == 3:
            store.allocate("compute_node", 5)  # used by the write below, say
            await store.write(lambda db: None)
    for change in waits:
        await change.wait()
    await store.flush()
    expected = store.next_ids["compute_node"]
    assert read_next_ids(store.db)["compute_node"] == expected
    assert store.db.execute("SELECT count(*) FROM compute_nodes").fetchone()[0] == 60


async def test_the_server_goes_on_when_the_writer_process_dies(
        open_store: OpenStore) -> None:
    """Its batch fails as a transient error (its workflows are reloaded from disk); every
    later batch commits in the server's thread."""
    store = await open_store("process")
    lost: list[set[int]] = []
    store.on_lost = lost.append
    assert store.writer is not None
    first = store.change(frozenset({1}))
    first.events.append((1, 0.0, "first", None))
    await first.wait()
    child = psutil.Process(store.writer.pid)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    doomed = store.change(frozenset({2}))
    doomed.events.append((2, 0.0, "doomed", None))
    with pytest.raises(StoreError) as caught, trio.fail_after(10):
        await doomed.wait()
    assert caught.value.transient
    assert lost == [{2}]
    assert store.writer is None
    after = store.change(frozenset({2}))
    after.events.append((2, 0.0, "after", None))
    await after.wait()
    kinds = [r[0] for r in store.db.execute("SELECT kind FROM events ORDER BY id")]
    assert kinds == ["first", "after"]


async def test_a_closed_store_leaves_no_writer_process(tmp_path: Path,
                                                      nursery: trio.Nursery) -> None:
    store = Store(str(tmp_path / "db.sqlite"))
    await trio.to_thread.run_sync(store.open_sync)
    await nursery.start(store.run_writer)
    assert store.writer is not None
    child = psutil.Process(store.writer.pid)
    change: Change = store.change(frozenset({1}))
    change.events.append((1, 0.0, "one", None))
    await change.wait()
    await store.flush()
    await store.aclose()
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    try:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    finally:
        conn.close()


async def test_a_killed_server_takes_its_writer_with_it(
        start_server: Callable[..., Awaitable[ServerProcess]], tmp_path: Path) -> None:
    """SIGKILL leaves the writer process no server to answer: it sees its stdin close and
    exits, leaving the database to the next server."""
    db = tmp_path / "torc.db"
    proc = await start_server("--database", str(db))
    api = Api(proc.port)
    wf = (await api.ok("POST", "/workflows", {"spec": simple_spec(3)}, status=201))["id"]
    await api.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "h"}, status=201)
    await api.aclose()
    server = psutil.Process(proc.process.pid)
    (writer,) = [c for c in server.children() if "torc_net.store.writer" in c.cmdline()]
    await proc.kill9()
    await wait_for(lambda: not writer.is_running() or writer.status() == psutil.STATUS_ZOMBIE,
                   timeout_s=10)
    proc2 = await start_server("--database", str(db))
    api2 = Api(proc2.port)
    nodes = await api2.ok("GET", f"/workflows/{wf}/compute_nodes")
    assert nodes["total"] == 1
    await api2.aclose()
    assert await proc2.stop() == 0


async def test_serve_writer_option(start_inprocess: Callable[..., Awaitable[Running]],
                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--writer`` (or TORC_SERVER_WRITER) chooses; a server answers the same either way."""
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert config_from_args(parser.parse_args([])).writer == "process"
    assert config_from_args(parser.parse_args(["--writer", "thread"])).writer == "thread"
    monkeypatch.setenv("TORC_SERVER_WRITER", "thread")
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert config_from_args(parser.parse_args([])).writer == "thread"
    monkeypatch.setenv("TORC_SERVER_WRITER", "elsewhere")
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    with pytest.raises(SystemExit, match="TORC_SERVER_WRITER"):
        config_from_args(parser.parse_args([]))
    for writer in ("process", "thread"):
        server = await start_inprocess(writer=writer, database=str(tmp_path / f"{writer}.db"))
        assert (server.store.writer is not None) == (writer == "process")
        api = Api(server.port)
        wf = (await api.ok("POST", "/workflows", {"spec": simple_spec(4)}, status=201))["id"]
        cn = (await api.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "h"},
                           status=201))["id"]
        jobs = (await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim",
                             {"limit": 4}))["jobs"]
        reply = await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim", {
            "limit": 0, "results": [{"job_id": j["id"], "attempt": j["attempt"],
                                     "run_id": j["run_id"], "return_code": 0} for j in jobs]})
        assert reply["accepted"] == 4
        status = await api.ok("GET", f"/workflows/{wf}/status")
        assert status["counts"]["completed"] == 4 and status["is_complete"]
        await api.aclose()


def test_a_writer_whose_server_is_gone_exits_quietly(tmp_path: Path) -> None:
    """A server that stops before reading the hello (a command that wrote nothing) leaves
    the writer a closed pipe: it exits 0 without a traceback on the terminal."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "torc_net.store.writer", str(tmp_path / "x.db"), "full"],
            stdin=subprocess.DEVNULL, stdout=write, stderr=subprocess.PIPE, text=True,
            timeout=60)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (0, "")
