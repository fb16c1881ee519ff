"""The SQLite store: schema, group commit, load on start, snapshots.

Theory of operation
-------------------
The server keeps each workflow's live state in a :class:`~torc_core.engine.Engine` in memory;
this module keeps the durable copy. Only the server process opens the database.

Rule 1: one connection, one writer. Every statement runs in a worker thread while holding
:attr:`Store.lock` (a ``trio.Lock``), so the connection is never used by two threads at once and
the trio thread never blocks on disk.

Rule 2: group commit. Request handlers never write. They add row changes to the *current*
:class:`Batch` (synchronously, right after ``engine.handle``, so rows follow engine order) and
await :meth:`Batch.wait`. The writer task swaps the batch out and commits everything in it as
ONE transaction; while that commit runs, the next batch fills up. Under load a commit carries
the changes of many requests, so the cost of an fsync is shared.

Rule 3: job rows coalesce. A batch keeps the *latest* (status, attempt, holder) per job, so a
job claimed and completed within one commit window is written once.

Rule 4: workflow creation is its own transaction (:meth:`Store.write`), serialized with the
writer, and the workflow becomes visible only after it committed: a failure leaves nothing.

Rule 5: a snapshot is ``sqlite3.Connection.backup`` into a temporary sibling file under the
same lock (so it is a committed, consistent state), then an atomic rename.

Rule 6: an in-memory store can start from a file (``load_from``: the last snapshot), copied in
with the same backup API before anything else happens; from then on it is an ordinary
in-memory store. That is what lets a standalone ``--in-memory`` run pick up where the last one
stopped.

Rule 7: one server per database. The store holds an exclusive lock on ``PATH.lock`` while it
is open (for an in-memory store, on the file it started from): a second server, say a second
standalone run in the same directory, is refused at start with the holder's pid, instead of
both allocating the same ids.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio

log = logging.getLogger("torc_net.store")

T = TypeVar("T")

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workflows (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    user TEXT,
    description TEXT,
    created_at REAL NOT NULL,
    job_id_base INTEGER NOT NULL,
    num_jobs INTEGER NOT NULL,
    num_barriers INTEGER NOT NULL,
    file_id_base INTEGER NOT NULL,
    num_files INTEGER NOT NULL,
    user_data_id_base INTEGER NOT NULL,
    num_user_data INTEGER NOT NULL,
    run_id INTEGER NOT NULL,
    is_canceled INTEGER NOT NULL,
    spec_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    workflow_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    command TEXT NOT NULL,
    invocation_script TEXT,
    status INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    compute_node_id INTEGER,
    num_cpus INTEGER NOT NULL,
    num_gpus INTEGER NOT NULL,
    num_nodes INTEGER NOT NULL,
    memory_bytes INTEGER NOT NULL,
    runtime_s INTEGER NOT NULL,
    resource_requirements TEXT,
    scheduler TEXT,
    scheduler_idx INTEGER NOT NULL,
    failure_handler TEXT,
    handler_idx INTEGER NOT NULL,
    supports_termination INTEGER NOT NULL,
    cancel_on_blocking_job_failure INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS barriers (
    workflow_id INTEGER NOT NULL,
    node INTEGER NOT NULL,
    status INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, node)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS edges (
    workflow_id INTEGER NOT NULL,
    up INTEGER NOT NULL,
    down INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, up, down)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    workflow_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    st_mtime REAL
);
CREATE TABLE IF NOT EXISTS user_data (
    id INTEGER PRIMARY KEY,
    workflow_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    data TEXT,
    is_ephemeral INTEGER NOT NULL,
    changed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS job_input_files (
    job_id INTEGER NOT NULL, ref_id INTEGER NOT NULL, PRIMARY KEY (job_id, ref_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_output_files (
    job_id INTEGER NOT NULL, ref_id INTEGER NOT NULL, PRIMARY KEY (job_id, ref_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_input_user_data (
    job_id INTEGER NOT NULL, ref_id INTEGER NOT NULL, PRIMARY KEY (job_id, ref_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_output_user_data (
    job_id INTEGER NOT NULL, ref_id INTEGER NOT NULL, PRIMARY KEY (job_id, ref_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    workflow_id INTEGER NOT NULL,
    job_id INTEGER NOT NULL,
    run_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    return_code INTEGER NOT NULL,
    status INTEGER NOT NULL,
    exec_time_s REAL NOT NULL,
    completed_at REAL NOT NULL,
    compute_node_id INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS results_key ON results (job_id, run_id, attempt);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    workflow_id INTEGER NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    data TEXT
);
CREATE INDEX IF NOT EXISTS events_wf ON events (workflow_id, id);
CREATE TABLE IF NOT EXISTS compute_nodes (
    id INTEGER PRIMARY KEY,
    workflow_id INTEGER NOT NULL,
    hostname TEXT NOT NULL,
    pid INTEGER,
    num_cpus INTEGER,
    memory_bytes INTEGER,
    num_gpus INTEGER,
    num_nodes INTEGER,
    slurm_job_id TEXT,
    created_at REAL NOT NULL,
    lease_deadline REAL,
    is_active INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS compute_nodes_wf ON compute_nodes (workflow_id);
CREATE TABLE IF NOT EXISTS allocations (
    id INTEGER PRIMARY KEY,
    workflow_id INTEGER NOT NULL,
    slurm_job_id TEXT NOT NULL,
    scheduler TEXT,
    action_index INTEGER,
    submitted_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'submitted'
);
CREATE INDEX IF NOT EXISTS allocations_wf ON allocations (workflow_id);
CREATE TABLE IF NOT EXISTS actions_claimed (
    workflow_id INTEGER NOT NULL,
    action_index INTEGER NOT NULL,
    claimed_at REAL NOT NULL,
    compute_node_id INTEGER,
    PRIMARY KEY (workflow_id, action_index)
) WITHOUT ROWID;
"""

LINK_TABLES = ("job_input_files", "job_output_files", "job_input_user_data", "job_output_user_data")


class StoreError(Exception):
    """A commit failed; the changes it carried are not durable."""


@dataclass(slots=True, eq=False)
class Batch:
    """The row changes of one commit window (see Rule 2 and Rule 3)."""

    #: statements that must run before the coalesced row updates (inserts, small updates)
    pre: list[tuple[str, Sequence[Any]]] = field(default_factory=list)
    #: job id -> (status, attempt, compute_node_id or None)
    jobs: dict[int, tuple[int, int, int | None]] = field(default_factory=dict)
    #: (workflow id, node) -> status
    barriers: dict[tuple[int, int], int] = field(default_factory=dict)
    #: workflow id -> (run_id, is_canceled)
    workflows: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: compute node id -> (lease_deadline, is_active)
    compute_nodes: dict[int, tuple[float | None, int]] = field(default_factory=dict)
    #: (workflow_id, job_id, run_id, attempt, return_code, status, exec_time_s, completed_at, cn)
    results: list[tuple[Any, ...]] = field(default_factory=list)
    #: (workflow_id, ts, kind, data_json)
    events: list[tuple[int, float, str, str | None]] = field(default_factory=list)
    #: statements that run last (deletes)
    post: list[tuple[str, Sequence[Any]]] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)
    error: BaseException | None = None

    def event(self, workflow_id: int, ts: float, kind: str, data: Any = None) -> None:
        self.events.append(
            (workflow_id, ts, kind, None if data is None else json.dumps(data, default=str))
        )

    def is_empty(self) -> bool:
        return not (
            self.pre
            or self.jobs
            or self.barriers
            or self.workflows
            or self.compute_nodes
            or self.results
            or self.events
            or self.post
        )

    async def wait(self) -> None:
        """Return once this batch is durable; raise StoreError if its commit failed."""
        await self.done.wait()
        if self.error is not None:
            raise StoreError(f"database commit failed: {self.error}") from self.error


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


class DatabaseLock:
    """An exclusive ``flock`` on ``PATH.lock``, held while a server owns ``PATH`` (Rule 7).

    A lock file beside the database rather than a lock on it: SQLite's own locks are POSIX
    record locks on the database file, which a second lock there could disturb. The file says
    who holds it, as one JSON object (``pid``, ``host``, and ``url`` once the server listens),
    so that a refused server can name the holder and a standalone command can talk to the
    server already running on its database (:func:`torc_cli.early.standalone_holder`). It
    stays after exit: removing it would let a third server lock a fresh file while a second
    still holds the old one."""

    #: Someone may hold the lock for an instant to look at it (a shared lock): retry that long.
    PATIENCE_S = 2.0

    def __init__(self, path: str) -> None:
        self.path = f"{path}.lock"
        self.holder: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname()}
        self.fd: int | None = None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:  # a folder we may read but not write: the database decides
            log.warning("%s: cannot create (%s); not guarding against a second server",
                        self.path, exc.strerror)
            return
        deadline = time.monotonic() + self.PATIENCE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                holder = _describe_holder(os.pread(fd, 4096, 0))
                os.close(fd)
                raise StoreError(
                    f"{path} is in use by another torc-trio server ({holder}); only one server "
                    "may own a database (give this one its own, e.g. --db elsewhere)") from None
            except OSError as exc:  # ENOLCK and the like: a file system without locks
                log.warning("%s: cannot lock (%s); not guarding against a second server",
                            self.path, exc.strerror)
                break
        self.fd = fd
        self._write()

    def note(self, **fields: Any) -> None:
        """Add to what the file says of its holder (``url`` where it listens, ``command_pid``
        of the standalone command it serves)."""
        self.holder.update(fields)
        self._write()

    def _write(self) -> None:
        if self.fd is not None:
            data = (json.dumps(self.holder) + "\n").encode()
            os.pwrite(self.fd, data, 0)
            os.ftruncate(self.fd, len(data))

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def _describe_holder(data: bytes) -> str:
    try:
        holder = json.loads(data)
        return f"pid {holder['pid']} on {holder['host']}"
    except (ValueError, KeyError, TypeError):
        return "unknown"


class Store:
    """Owner of the SQLite connection. All methods are called from the trio thread."""

    def __init__(self, path: str, *, limiter: trio.CapacityLimiter,
                 load_from: str | None = None) -> None:
        self.path = path
        self.in_memory = path == ":memory:"
        #: In memory: a database file to start from, if it exists (Rule 6).
        self.load_from = load_from
        self.limiter = limiter
        self.lock = trio.Lock()
        self.conn: sqlite3.Connection | None = None
        self._lock_file: DatabaseLock | None = None
        self._batch = Batch()
        self._wake = trio.Event()
        self._writer_running = False
        #: next free ids (one writer allocates them on the trio thread)
        self.next_workflow_id = 1
        self.next_job_id = 1
        self.next_file_id = 1
        self.next_user_data_id = 1
        self.next_compute_node_id = 1
        self.commits = 0
        #: ``total_changes`` of the connection when it was last opened or snapshotted.
        self._saved_changes = 0

    # -----------------------------------------------------------------------------------------
    # Opening

    def open_sync(self) -> None:
        """Open (creating the schema if needed) and read the id counters. Runs in a thread."""
        owned = self.load_from if self.in_memory else self.path
        if owned:
            Path(owned).parent.mkdir(parents=True, exist_ok=True)
            self._lock_file = DatabaseLock(owned)
        try:
            self._open_locked()
        except BaseException:
            self.close_sync()
            raise

    def _open_locked(self) -> None:
        conn = _connect(self.path)
        if self.in_memory and self.load_from and Path(self.load_from).exists():
            try:
                # Read-write on purpose: a database a file server left in WAL mode is read
                # with its WAL, which is checkpointed and removed on close (a read-only
                # connection would leave -wal and -shm files behind).
                source = sqlite3.connect(self.load_from)
                try:
                    source.backup(conn)
                finally:
                    source.close()
            except sqlite3.Error as exc:
                conn.close()
                raise StoreError(f"{self.load_from}: cannot load snapshot: {exc}") from None
        conn.executescript("BEGIN;" + SCHEMA + "COMMIT;")
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
            )
        elif int(row[0]) != SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {row[0]}, expected {SCHEMA_VERSION}")
        self.conn = conn

        def next_id(sql: str) -> int:
            value = conn.execute(sql).fetchone()[0]
            return int(value or 0) + 1

        self.next_workflow_id = next_id("SELECT max(id) FROM workflows")
        self.next_job_id = next_id(
            "SELECT max(job_id_base + num_jobs - 1) FROM workflows WHERE num_jobs > 0"
        )
        self.next_job_id = max(self.next_job_id, next_id("SELECT max(id) FROM jobs"))
        self.next_file_id = next_id("SELECT max(id) FROM files")
        self.next_user_data_id = next_id("SELECT max(id) FROM user_data")
        self.next_compute_node_id = next_id("SELECT max(id) FROM compute_nodes")
        self._saved_changes = conn.total_changes

    def note_holder(self, **fields: Any) -> None:
        """Tell clients that find this server through its lock file more (Rule 7)."""
        if self._lock_file is not None:
            self._lock_file.note(**fields)

    def close_sync(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self._lock_file is not None:
            self._lock_file.release()
            self._lock_file = None

    @property
    def db(self) -> sqlite3.Connection:
        if self.conn is None:
            raise StoreError("the database is not open")
        return self.conn

    # -----------------------------------------------------------------------------------------
    # Group commit

    @property
    def batch(self) -> Batch:
        """The batch now collecting changes. Adding to it wakes the writer."""
        if self._batch.done.is_set():  # pragma: no cover - defensive
            self._batch = Batch()
        self._wake.set()
        return self._batch

    async def run_writer(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED)\
            -> None:
        """The group-commit loop (Rule 2). Runs until cancelled; call :meth:`flush` first."""
        self._writer_running = True
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                await self._commit_current()
        finally:
            self._writer_running = False

    async def _commit_current(self) -> None:
        self._wake = trio.Event()
        batch, self._batch = self._batch, Batch()
        if batch.is_empty():
            batch.done.set()
            return
        async with self.lock:
            try:
                await trio.to_thread.run_sync(self._commit_sync, batch, limiter=self.limiter)
            except Exception as exc:
                log.exception("commit failed")
                batch.error = exc
        self.commits += 1
        batch.done.set()

    async def flush(self) -> None:
        """Commit whatever is pending now (shutdown, snapshots, tests)."""
        while not self._batch.is_empty():
            await self._commit_current()

    def _commit_sync(self, batch: Batch) -> None:
        db = self.db
        db.execute("BEGIN")
        try:
            for sql, rows in batch.pre:
                if rows and isinstance(rows[0], tuple | list):
                    db.executemany(sql, rows)
                else:
                    db.execute(sql, rows)
            if batch.jobs:
                db.executemany(
                    "UPDATE jobs SET status=?, attempt=?, compute_node_id=? WHERE id=?",
                    [(s, a, cn, job) for job, (s, a, cn) in batch.jobs.items()],
                )
            if batch.barriers:
                db.executemany(
                    "UPDATE barriers SET status=? WHERE workflow_id=? AND node=?",
                    [(s, wf, node) for (wf, node), s in batch.barriers.items()],
                )
            if batch.workflows:
                db.executemany(
                    "UPDATE workflows SET run_id=?, is_canceled=? WHERE id=?",
                    [(r, c, wf) for wf, (r, c) in batch.workflows.items()],
                )
            if batch.compute_nodes:
                db.executemany(
                    "UPDATE compute_nodes SET lease_deadline=?, is_active=? WHERE id=?",
                    [(d, a, cn) for cn, (d, a) in batch.compute_nodes.items()],
                )
            if batch.results:
                db.executemany(
                    "INSERT OR IGNORE INTO results (workflow_id, job_id, run_id, attempt, "
                    "return_code, status, exec_time_s, completed_at, compute_node_id) "
                    "VALUES (?,?,?,?,?,?,?,?,?)",
                    batch.results,
                )
            if batch.events:
                db.executemany(
                    "INSERT INTO events (workflow_id, ts, kind, data) VALUES (?,?,?,?)",
                    batch.events,
                )
            for sql, rows in batch.post:
                if rows and isinstance(rows[0], tuple | list):
                    db.executemany(sql, rows)
                else:
                    db.execute(sql, rows)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    # -----------------------------------------------------------------------------------------
    # Other access (serialized with the writer)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in one transaction of its own (Rule 4)."""

        def run() -> T:
            db = self.db
            db.execute("BEGIN")
            try:
                value = fn(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return value

        async with self.lock:
            return await trio.to_thread.run_sync(run, limiter=self.limiter)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only ``fn(conn)`` in a worker thread."""
        async with self.lock:
            return await trio.to_thread.run_sync(fn, self.db, limiter=self.limiter)

    # -----------------------------------------------------------------------------------------
    # Snapshots (Rule 5)

    async def snapshot(self, target: Path, keep: int) -> Path:
        """Write a consistent copy to ``target``, rotating older copies to ``target.N``."""
        async with self.lock:
            return await trio.to_thread.run_sync(
                self._snapshot_sync, target, keep, limiter=self.limiter
            )

    def _snapshot_sync(self, target: Path, keep: int) -> Path:
        target = target.absolute()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        dest = sqlite3.connect(tmp)
        try:
            self.db.backup(dest)
            dest.execute("PRAGMA journal_mode=DELETE")
        finally:
            dest.close()
        keep = max(1, keep)
        # Drop the oldest beyond the retention, shift the rest up by one.
        n = keep
        while Path(f"{target}.{n}").exists():
            Path(f"{target}.{n}").unlink()
            n += 1
        for i in range(keep - 2, 0, -1):
            src = Path(f"{target}.{i}")
            if src.exists():
                os.replace(src, f"{target}.{i + 1}")
        if target.exists() and keep > 1:
            # A hard link keeps `target` present at every moment; the replace below is atomic.
            link = Path(f"{target}.1")
            link.unlink(missing_ok=True)
            try:
                os.link(target, link)
            except OSError:
                import shutil

                shutil.copy2(target, link)
        # A -wal or -shm beside the target belongs to whatever was there before (a file
        # server that crashed, say); SQLite would apply it to the new file.
        for stale in (f"{target}-wal", f"{target}-shm"):
            Path(stale).unlink(missing_ok=True)
        os.replace(tmp, target)
        self._saved_changes = self.db.total_changes
        return target

    @property
    def unsaved(self) -> bool:
        """Rows changed since the database was opened or last snapshotted."""
        return self.conn is not None and self.conn.total_changes != self._saved_changes
