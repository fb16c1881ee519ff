"""The SQLite store: group commit with failure isolation, typed reads, snapshots.

Theory of operation
-------------------
The server keeps each workflow's live state in a :class:`~torc_core.engine.Engine` in memory;
this package keeps the durable copy. Only the server process opens the database, and all its
SQL lives in this package (:mod:`.changes` for the group commit, :mod:`.queries` for reads
and the insert of a new workflow, :mod:`.schema` for the tables).

Rule 1: one connection, one thread. Every statement on the server's connection runs in a
worker thread while holding :attr:`Store.lock` (a ``trio.Lock``), so the connection is never
used by two threads at once and the trio thread never blocks on disk (the writer process has
a connection of its own: Rule 9). The store has its own thread limiter: nothing else
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

Rule 9: a file database's group commits run in a writer process (:mod:`.writer`), on a
connection of its own, so a commit overlaps the event loop's work instead of taking turns
with it under the GIL. A batch is handed over the moment the writer is free, by the first
change that starts to wait (:meth:`Store._pump`). Everything else (reads, workflow creation,
a batch that grows a workflow, snapshots) stays on the server's connection: a write there
holds the next batch back (``_hold``) and waits for the one in flight, so two connections
never write at once; reads go on alongside (WAL). If the writer process ends, the batch it
had fails as a transient error (Rule 3: its workflows are reloaded from what is on disk)
and later batches commit in the store's thread. ``writer="thread"`` (``torc-trio serve
--writer thread``) keeps every commit in the thread.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import trio

from . import writer as wp
from .changes import Change, StoreError, commit, is_transient, rollback, store_error
from .lock import DatabaseLock
from .schema import SchemaError, ensure_schema, read_next_ids, write_next_ids
from .writer_link import WriterGone, WriterLink

log = logging.getLogger("torc_net.store")

T = TypeVar("T")
P = ParamSpec("P")

SYNC_MODES = ("full", "normal")
#: Where a file database's group commits run (Rule 9): "process" or "thread".
WRITERS = ("process", "thread")


@dataclass(slots=True, eq=False)
class Batch:
    """The changes of one commit window."""

    changes: list[Change] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)
    #: the id high-water marks when the window closed (saved with it)
    next_ids: dict[str, int] | None = None
    #: called by each change as it starts to wait (the store's ``_pump``; None: no writer
    #: process)
    pump: Callable[[], None] | None = None


class Store:
    """Owner of the SQLite connection. All methods are called from the trio thread."""

    def __init__(self, path: str, *, limiter: trio.CapacityLimiter | None = None,
                 load_from: str | None = None, sync: str = "full",
                 writer: str = "process") -> None:
        if sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {SYNC_MODES}, got {sync!r}")
        if writer not in WRITERS:
            raise ValueError(f"writer must be one of {WRITERS}, got {writer!r}")
        self.path = path
        self.in_memory = path == ":memory:"
        self.sync = sync
        #: Where a file database's commits run (Rule 9); an in-memory one has only its thread.
        self.writer_kind = "thread" if self.in_memory else writer
        #: the writer process, once open (None: commits run in the store's thread)
        self.writer: WriterLink | None = None
        #: In memory: a database file to start from, if it exists (Rule 7).
        self.load_from = load_from
        #: The store's own threads (Rule 1); one suffices, the lock serializes them anyway.
        self.limiter = limiter or trio.CapacityLimiter(1)
        self.lock = trio.Lock()
        self.conn: sqlite3.Connection | None = None
        self._lock_file: DatabaseLock | None = None
        self._batch = Batch()
        self._wake = trio.Event()
        #: the batch the writer process is storing (Rule 9)
        self._inflight: Batch | None = None
        #: set (and replaced) each time a batch is settled
        self._settled = trio.Event()
        #: > 0 while the server's connection writes: no batch goes to the writer process
        self._hold = 0
        #: one task at a time moves the group commit (the writer task, or a flush)
        self._stepping = trio.Lock()
        #: that task's wait for the writer process's pipe
        self._waiting: trio.CancelScope | None = None
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
            if self.writer_kind == "process":
                try:
                    self.writer = WriterLink(self.path, self.sync)
                    self._batch.pump = self._pump
                except OSError as exc:
                    log.warning("cannot start a writer process (%s): committing in the "
                                "server's thread", exc)
        except BaseException:
            self.close_sync()
            raise

    def _open_locked(self) -> None:
        conn = wp.connect(self.path, self.sync)
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

    async def aclose(self) -> None:
        """Stop the writer process and close the database (after :meth:`flush`)."""
        writer, self.writer = self.writer, None
        if writer is not None:
            self._stop_waiting()  # before the pipes close under the writer task
            writer.close_pipes()
            await trio.to_thread.run_sync(writer.reap)
        await trio.to_thread.run_sync(self.close_sync, limiter=self.limiter)

    def close_sync(self) -> None:
        """Close the database (after :meth:`flush`); from the trio thread if the writer
        process still runs (see :meth:`aclose`)."""
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close_pipes()
            writer.reap()
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
            if not self._has_work():
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            async with self._stepping:
                await self._step()

    async def flush(self) -> None:
        """Commit whatever is pending now (shutdown, snapshots, tests)."""
        while self._batch.changes or self._inflight is not None:
            if not self._has_work():  # held by a write of the server's connection
                await self._wake.wait()
                continue
            async with self._stepping:
                await self._step()

    def _has_work(self) -> bool:
        return self._inflight is not None or bool(self._batch.changes and not self._hold)

    async def _step(self) -> None:
        """Move the group commit one step, waiting as little as it must (Rules 2 and 9)."""
        link = self.writer
        if link is not None and self._inflight is not None:
            # Until the pipe is ready, or a change's _pump moves things along first (it
            # cancels this wait, whose object may have changed: the rest of a new batch to
            # write, say).
            with trio.CancelScope() as self._waiting:
                if link.sending:
                    await link.wait_writable()
                else:
                    await link.wait_readable()
            self._waiting = None
            self._pump()
            return
        if not self._batch.changes or self._hold:
            return
        if link is not None and not any(c.grown for c in self._batch.changes):
            self._pump()
            return
        # In the store's thread: no writer process, or a growth's lazy rows (Rule 9).
        self._hold += 1
        try:
            async with self.lock:
                batch = self._take_batch()  # its id marks as they are once nothing else writes
                try:
                    failed = await trio.to_thread.run_sync(
                        commit, self.db, batch.changes, self._ids_to_save(batch),
                        limiter=self.limiter)
                except Exception as exc:  # not even the fallback could run
                    log.exception("commit failed")
                    failed = dict.fromkeys(range(len(batch.changes)), store_error(exc))
        finally:
            self._hold -= 1
        self._finish(batch, failed)

    def _pump(self) -> None:
        """Take the writer process's answer if it has come, and hand it the batch now
        collecting if it is free, without waiting for either (see :mod:`.writer_link`).
        Called by each change as it starts to wait, and by the writer task."""
        link = self.writer
        if link is None:
            return
        try:
            if self._inflight is not None:
                if link.sending:
                    link.write_some()
                    if link.sending:
                        return
                failed = link.answer()
                if failed is None:
                    return
                batch, self._inflight = self._inflight, None
                self._finish(batch, failed)
                self._stop_waiting()  # its wait for this answer is moot
            if (self._batch.changes and not self._hold
                    and not any(c.grown for c in self._batch.changes)):
                batch = self._take_batch()
                self._inflight = batch
                link.send(batch.changes, self._ids_to_save(batch))
                self._wake.set()  # the writer task waits for the answer
                self._stop_waiting()
        except WriterGone as exc:
            log.error("%s; committing in the server's thread from now on", exc)
            self.writer = None
            self._stop_waiting()  # before the pipes close under the writer task
            link.stop()
            if self._inflight is not None:
                batch, self._inflight = self._inflight, None
                gone = StoreError(f"database commit failed: {exc}")
                self._finish(batch, dict.fromkeys(range(len(batch.changes)), gone))
            self._wake.set()

    def _stop_waiting(self) -> None:
        """End the writer task's wait on the writer's pipe (it looks again at what to do).
        Left waiting once its answer was taken elsewhere, it would still be waiting when the
        pipes close, and die of ClosedResourceError."""
        if self._waiting is not None:
            self._waiting.cancel()

    def _take_batch(self) -> Batch:
        batch, self._batch = self._batch, self._new_batch()
        batch.next_ids = dict(self.next_ids)
        return batch

    def _ids_to_save(self, batch: Batch) -> dict[str, int] | None:
        ids = batch.next_ids
        return ids if ids and ids != self._saved_ids else None

    def _finish(self, batch: Batch, failed: dict[int, StoreError]) -> None:
        if not failed and batch.next_ids:
            self._saved_ids = batch.next_ids
        self.commits += 1
        self._settle(batch, failed)
        batch.done.set()
        self._settled.set()
        self._settled = trio.Event()

    def _new_batch(self) -> Batch:
        return Batch(pump=self._pump if self.writer is not None else None)

    async def _exclusive(self) -> None:
        """Wait until the writer process has answered its batch (the caller has raised
        ``_hold``, so it is given no other): the server's connection may then write."""
        while self._inflight is not None:  # the writer task is waiting for its answer
            await self._settled.wait()

    def _settle(self, batch: Batch, failed: dict[int, StoreError]) -> None:
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
            if keep:
                self._batch.changes = keep  # the others' waiters wake when it commits
            elif self._batch.changes:  # nothing of it is left to commit: wake them now
                self._batch.done.set()
                self._batch = self._new_batch()
        publish = self.publish
        for change in batch.changes:
            if change.error is None:
                for wf_id, owner, messages in change.messages:
                    publish(wf_id, owner, messages, change.seq)
        if lost:
            self.on_lost(lost)

    # -----------------------------------------------------------------------------------------
    # Other access (serialized with the writer)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in one transaction of its own, with the id marks (Rule 5)."""
        def run(ids: dict[str, int]) -> T:
            db = self.db
            db.execute("BEGIN")
            try:
                value = fn(db)
                if ids and ids != self._saved_ids:
                    write_next_ids(db, ids)
                db.execute("COMMIT")
            except BaseException:
                rollback(db)
                raise
            self._saved_ids = ids
            return value

        self._hold += 1  # the writer process gets no batch until this is written
        try:
            await self._exclusive()
            async with self.lock:  # the marks as they are now: nothing else commits meanwhile
                try:
                    return await trio.to_thread.run_sync(run, dict(self.next_ids),
                                                         limiter=self.limiter)
                except sqlite3.Error as exc:
                    raise StoreError(f"database write failed: {exc}",
                                     transient=is_transient(exc)) from exc
        finally:
            self._hold -= 1
            self._wake.set()

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
