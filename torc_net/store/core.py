"""The SQLite store: group commit with failure isolation, typed reads, snapshots.

Theory of operation
-------------------
The server keeps each workflow's live state in a :class:`~torc_core.engine.Engine` in memory;
this package keeps the durable copy. Only the server process opens the database, and all its
SQL lives in this package (:mod:`.changes` for the group commit, :mod:`.queries` for reads
and the insert of a new workflow, :mod:`.schema` for the tables).

Rule 1: one connection, one writer. Every statement runs in a worker thread while holding
:attr:`Store.lock` (a ``trio.Lock``), so the connection is never used by two threads at once and
the trio thread never blocks on disk. The store has its own thread limiter: nothing else
(password checks, spec parsing) can take the threads commits need.

Rule 2: group commit. Request handlers never write. They take a :class:`~.changes.Change` from
:meth:`Store.change` (synchronously, right after ``engine.handle``, so changes follow engine
order), fill it and await :meth:`~.changes.Change.wait`. The writer task swaps the batch out and
commits all its changes as ONE transaction; while that commit runs, the next batch fills up.
Under load a commit carries the changes of many requests, so the cost of a sync is shared.

Rule 3: acknowledge only what is committed. When a batch's transaction fails, the writer
applies its changes again one by one, each in a savepoint, so only the change that cannot be
stored fails, with every later change to the same workflows (they were made on top of it in
memory), including those already waiting in the next batch. The store then tells its owner
which workflows' memory is now ahead of the disk (``on_lost``); the service reloads them from
the database before they answer again. Feed messages are published only for committed changes.

Rule 4: durability. A file database runs in WAL mode with ``synchronous=FULL`` by default: a
commit is on disk when it returns (the WAL is synced on every commit; group commit shares that
sync). ``sync="normal"`` trades that for speed: a commit survives a crash of the server but
not of the machine (power loss, kernel panic).

Rule 5: workflow creation is its own transaction (:meth:`Store.write`), serialized with the
writer, and the workflow becomes visible only after it committed: a failure leaves nothing.

Rule 6: ids are never used twice. The store assigns them (:meth:`Store.allocate`) and keeps
each sequence's high-water mark in the database, written with the rows that use the ids
(:mod:`.schema`).

Rule 7: a snapshot is ``sqlite3.Connection.backup`` into a temporary sibling file under the
same lock (so it is a committed, consistent state), then an atomic rename. An in-memory store
can start from a file (``load_from``: the last snapshot), copied in with the same backup API
before anything else happens.

Rule 8: one server per database: an exclusive lock on ``PATH.lock`` (:mod:`.lock`).
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import trio

from .changes import Batch, Change, StoreError, _is_transient, apply, merge
from .lock import DatabaseLock
from .schema import SchemaError, ensure_schema, read_next_ids, write_next_ids

log = logging.getLogger("torc_net.store")

T = TypeVar("T")
P = ParamSpec("P")

SYNC_MODES = ("full", "normal")


def _connect(path: str, sync: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


class Store:
    """Owner of the SQLite connection. All methods are called from the trio thread."""

    def __init__(self, path: str, *, limiter: trio.CapacityLimiter | None = None,
                 load_from: str | None = None, sync: str = "full") -> None:
        if sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {SYNC_MODES}, got {sync!r}")
        self.path = path
        self.in_memory = path == ":memory:"
        self.sync = sync
        #: In memory: a database file to start from, if it exists (Rule 7).
        self.load_from = load_from
        #: The store's own threads (Rule 1); one suffices, the lock serializes them anyway.
        self.limiter = limiter or trio.CapacityLimiter(1)
        self.lock = trio.Lock()
        self.conn: sqlite3.Connection | None = None
        self._lock_file: DatabaseLock | None = None
        self._batch = Batch()
        self._wake = trio.Event()
        #: next free id per sequence (Rule 6); assigned on the trio thread
        self.next_ids: dict[str, int] = {}
        self._saved_ids: dict[str, int] = {}
        self._seq = 0
        self.commits = 0
        #: ``total_changes`` of the connection when it was last opened or snapshotted.
        self._saved_changes = 0
        #: called with the ids of workflows whose changes failed (Rule 3)
        self.on_lost: Callable[[set[int]], None] = lambda ids: None
        #: publishes a committed change's feed messages: (workflow id, owner, messages, seq)
        self.publish: Callable[[int, str | None, list[dict[str, Any]], int], None] = \
            lambda wf, owner, messages, seq: None

    # -----------------------------------------------------------------------------------------
    # Opening

    def open_sync(self) -> None:
        """Open (creating or migrating the schema) and read the id marks. Runs in a thread."""
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
        conn = _connect(self.path, self.sync)
        try:
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
                    raise StoreError(f"{self.load_from}: cannot load snapshot: {exc}") from None
            try:
                ensure_schema(conn, self.path)
            except SchemaError as exc:
                raise StoreError(str(exc)) from None
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot open the database: {exc}") from None
            self.next_ids = read_next_ids(conn)
        except BaseException:
            conn.close()
            raise
        self._saved_ids = dict(self.next_ids)
        self.conn = conn
        self._saved_changes = conn.total_changes

    def note_holder(self, **fields: Any) -> None:
        """Tell clients that find this server through its lock file more (Rule 8)."""
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
    # Ids (Rule 6)

    def allocate(self, sequence: str, count: int = 1) -> int:
        """The first of ``count`` new consecutive ids of ``sequence``."""
        first = self.next_ids[sequence]
        self.next_ids[sequence] = first + count
        return first

    # -----------------------------------------------------------------------------------------
    # Group commit (Rules 2 and 3)

    def change(self, workflows: frozenset[int]) -> Change:
        """A new change in the batch now collecting; it wakes the writer."""
        self._seq += 1
        change = Change(workflows, self._seq)
        change.batch = self._batch
        self._batch.changes.append(change)
        self._wake.set()
        return change

    @property
    def sequence(self) -> int:
        """The seq of the newest change (feed subscribers skip it and older ones)."""
        return self._seq

    async def run_writer(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED)\
            -> None:
        """The group-commit loop. Runs until cancelled; call :meth:`flush` first."""
        task_status.started()
        while True:
            await self._wake.wait()
            await self._commit_current()

    async def _commit_current(self) -> None:
        self._wake = trio.Event()
        batch, self._batch = self._batch, Batch()
        if not batch.changes:
            batch.done.set()
            return
        batch.next_ids = dict(self.next_ids)
        async with self.lock:
            try:
                failed = await trio.to_thread.run_sync(self._commit_sync, batch,
                                                       limiter=self.limiter)
            except Exception as exc:  # not even the fallback could run
                log.exception("commit failed")
                failed = dict.fromkeys(range(len(batch.changes)), exc)
        self.commits += 1
        self._settle(batch, failed)
        batch.done.set()

    def _settle(self, batch: Batch, failed: dict[int, BaseException]) -> None:
        """Mark failed changes and those made on top of them (Rule 3); publish the rest."""
        lost: set[int] = set()
        for i, exc in failed.items():
            change = batch.changes[i]
            change.error = exc
            lost |= change.workflows
        if lost:
            log.error("%d of %d changes could not be stored (%s); reloading workflows %s",
                      len(failed), len(batch.changes), next(iter(failed.values())),
                      sorted(lost))
            later = StoreError("an earlier change to the same workflow could not be stored")
            keep = []
            for change in self._batch.changes:
                if change.workflows & lost:
                    change.error = later
                else:
                    keep.append(change)
            self._batch.changes = keep
        publish = self.publish
        for change in batch.changes:
            if change.error is None:
                for wf_id, owner, messages in change.messages:
                    publish(wf_id, owner, messages, change.seq)
        if lost:
            self.on_lost(lost)

    async def flush(self) -> None:
        """Commit whatever is pending now (shutdown, snapshots, tests)."""
        while self._batch.changes:
            await self._commit_current()

    def _commit_sync(self, batch: Batch) -> dict[int, BaseException]:
        """Commit a batch; the indices of the changes that failed, with why."""
        db = self.db
        changes = batch.changes
        ids = batch.next_ids or {}
        try:
            db.execute("BEGIN")
            apply(db, changes[0] if len(changes) == 1 else merge(changes))
            self._save_ids(db, ids)
            db.execute("COMMIT")
        except Exception as exc:
            self._rollback(db)
            if len(changes) == 1:
                return {0: exc}
            log.warning("a commit of %d changes failed (%s); storing them one by one",
                        len(changes), exc)
        else:
            self._saved_ids = ids
            return {}
        return self._commit_one_by_one(db, batch)

    def _commit_one_by_one(self, db: sqlite3.Connection, batch: Batch) \
            -> dict[int, BaseException]:
        failed: dict[int, BaseException] = {}
        lost: set[int] = set()
        ids = batch.next_ids or {}
        try:
            db.execute("BEGIN")
            for i, change in enumerate(batch.changes):
                if change.workflows & lost:
                    failed[i] = StoreError("an earlier change to the same workflow could not be "
                                           "stored")
                    continue
                db.execute("SAVEPOINT change")
                try:
                    apply(db, change)
                except Exception as exc:
                    if not db.in_transaction:  # SQLite rolled everything back (disk full)
                        raise
                    db.execute("ROLLBACK TO change")
                    failed[i] = exc
                    lost |= change.workflows
                db.execute("RELEASE change")
            self._save_ids(db, ids)
            db.execute("COMMIT")
        except Exception as exc:
            self._rollback(db)
            return {i: failed.get(i, exc) for i in range(len(batch.changes))}
        self._saved_ids = ids
        return failed

    def _save_ids(self, db: sqlite3.Connection, ids: dict[str, int]) -> None:
        if ids and ids != self._saved_ids:
            write_next_ids(db, ids)

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:  # pragma: no cover - the connection is beyond help
                log.exception("rollback failed")

    # -----------------------------------------------------------------------------------------
    # Other access (serialized with the writer)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in one transaction of its own, with the id marks (Rule 5)."""
        ids = dict(self.next_ids)

        def run() -> T:
            db = self.db
            db.execute("BEGIN")
            try:
                value = fn(db)
                self._save_ids(db, ids)
                db.execute("COMMIT")
            except BaseException:
                self._rollback(db)
                raise
            self._saved_ids = ids
            return value

        async with self.lock:
            try:
                return await trio.to_thread.run_sync(run, limiter=self.limiter)
            except sqlite3.Error as exc:
                raise StoreError(f"database write failed: {exc}",
                                 transient=_is_transient(exc)) from exc

    async def read(self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args,
                   **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, *args)`` — a query of :mod:`.queries`, read-only — in the store's
        thread."""
        def run() -> T:
            return fn(self.db, *args, **kwargs)

        async with self.lock:
            try:
                return await trio.to_thread.run_sync(run, limiter=self.limiter)
            except sqlite3.Error as exc:
                raise StoreError(f"database read failed: {exc}") from exc

    # -----------------------------------------------------------------------------------------
    # Snapshots (Rule 7)

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
