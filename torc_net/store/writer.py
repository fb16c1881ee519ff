"""The writer process: it commits the server's group-commit batches on a connection of its own.

Why: a commit is SQLite work done under Python's GIL (binding every value of every row), so
in the server's own thread it could never overlap the event loop: each took its turn, and
the request handlers of the next batch waited for it. In a process of its own, a commit runs
on another core while the loop answers the next requests. Measured (BENCHMARKS.md, "A
writer process"; three interleaved rounds against the thread): ``bench_server.py`` 1.32x,
1.74x and 1.27x the jobs/s at batch 1, 32 and 256; ``bench_burst.py`` request latency p99
1,212 -> 935 ms.

What stays in the server: the connection it reads with, workflow creation (rows built
lazily, millions at a time) and every batch that grows a workflow, snapshots, and the whole
store of an in-memory database. Two connections never write at once: a write on the
server's connection waits for the writer's answer and holds the next batch back until it is
done (:mod:`.core`, Rules 1 and 9); reads go on meanwhile and see what was committed (WAL).

Protocol, on the child's stdin and stdout: frames of a 4-byte little-endian length and a
pickle (the server's end is :mod:`.writer_link`, in the same Python and package, so nothing
foreign is ever unpickled).
The child first says hello: ``{"pid", "journal_mode", "synchronous"}``, or ``{"error"}`` when
it cannot open the database (the server then commits in its thread). Then, for each batch,
the server sends ``(changes, ids)`` (:func:`pack`) and the child answers with the changes it
could not store: ``{index: (message, transient)}``, empty when all are durable.

The child exits when its stdin closes: at the server's shutdown, or when the server dies by
any means (even SIGKILL). It ignores SIGINT and SIGTERM, which a terminal or a service
manager sends the whole process group: the server decides when the last batch is written.
"""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
import struct
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO

from .changes import Change, commit

_LENGTH = struct.Struct("<I")

#: The fields of a :class:`~.changes.Change` a writer stores (the rest is for the server:
#: its sequence, feed messages, outcome and batch). ``grown`` is not among them: a growth's
#: rows are lazy iterables, committed in the server's thread.
ROW_FIELDS = ("jobs", "job_resources", "barriers", "runs", "leases", "compute_nodes",
              "results", "events", "file_mtimes", "user_data", "user_data_changed",
              "actions_claimed", "allocations", "allocation_states", "deleted")


def connect(path: str, sync: str) -> sqlite3.Connection:
    """A connection with the store's settings: WAL and the chosen sync for a file."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


def frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def frame_length(head: bytes) -> int:
    return int(_LENGTH.unpack(head)[0])


HEAD_SIZE = _LENGTH.size


def pack(changes: Sequence[Change], ids: dict[str, int] | None) -> bytes:
    """One batch as a frame: each change as its workflows and its rows."""
    return frame(([(c.workflows, *[getattr(c, name) for name in ROW_FIELDS])
                   for c in changes], ids))


def unpack(value: Any) -> tuple[list[Change], dict[str, int] | None]:
    rows, ids = value
    return [Change(r[0], **dict(zip(ROW_FIELDS, r[1:], strict=True))) for r in rows], ids


def _read_frame(stream: BinaryIO) -> Any:
    head = stream.read(HEAD_SIZE)
    if len(head) < HEAD_SIZE:
        return None
    n = frame_length(head)
    data = stream.read(n)
    if len(data) < n:
        return None
    return pickle.loads(data)  # our own server, through our own pipe


def _send(fd: int, value: Any) -> None:
    data = memoryview(frame(value))
    while data:
        data = data[os.write(fd, data):]


def main(argv: Sequence[str]) -> int:
    """``python -m torc_net.store.writer PATH SYNC``: serve batches until stdin closes."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    path, sync = argv
    # Answers go straight to the descriptor: nothing is left buffered for a closed pipe to
    # refuse at exit.
    out = sys.stdout.fileno()
    stdin = sys.stdin.buffer
    try:
        try:
            db = connect(path, sync)
            hello: dict[str, Any] = {
                "pid": os.getpid(),
                "journal_mode": db.execute("PRAGMA journal_mode").fetchone()[0],
                "synchronous": db.execute("PRAGMA synchronous").fetchone()[0],
            }
        except sqlite3.Error as exc:
            _send(out, {"error": f"{path}: {exc}"})
            return 1
        try:
            _send(out, hello)
            while (batch := _read_frame(stdin)) is not None:
                changes, ids = unpack(batch)
                failed = commit(db, changes, ids)
                _send(out, {i: (str(e), e.transient) for i, e in failed.items()})
        finally:
            db.close()
    except BrokenPipeError:  # the server is gone (a command that wrote nothing, say)
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
