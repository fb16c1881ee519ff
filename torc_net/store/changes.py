"""Changes: the rows one request writes, and how a batch of them reaches the database.

Theory of operation
-------------------
A request handler drives an engine and records the effects as a :class:`Change` (typed
fields, no SQL), with no ``await`` in between, then awaits :meth:`Change.wait`. The store's
writer commits every change of a commit window as one transaction (group commit). A change
is also the unit of failure: if the transaction fails, the writer applies the window's changes
again one by one, each in a savepoint, so only the change that cannot be stored fails (and,
after it, every later change to the same workflows, which were made on top of it in memory).

Rule 1: a change lists the workflows whose in-memory state it reflects (``workflows``). When
it fails, those workflows' memory is ahead of the disk: the service reloads them from the
database before they answer again.

Rule 2: within a change and across the changes of a window, the latest value of a row wins
(a job claimed and completed within one window is written once), inserts go before updates
and deletes go last: :func:`apply` fixes that order, so merging changes keeps their meaning.

Rule 3: feed messages ride on the change and are published only once it is committed: no
one, not even a watcher, hears of what is not on disk.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import groupby
from operator import is_, itemgetter
from typing import TYPE_CHECKING, Any

from .schema import RESULT_INFO_NAMES, write_next_ids

if TYPE_CHECKING:
    from .core import Batch

log = logging.getLogger("torc_net.store")

#: Feed messages of one workflow: (workflow id, owner, messages).
Messages = tuple[int, str | None, list[dict[str, Any]]]


class StoreError(Exception):
    """A change is not durable. ``transient``: the database could not write it (full disk, an
    I/O error, a change it depended on failed) and a retry may succeed; otherwise the change
    itself could not be stored, which request validation should have prevented."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(slots=True, frozen=True)
class DeletedWorkflow:
    """Everything a workflow owns, by id ranges (its ids are never used again)."""

    id: int
    jobs: tuple[tuple[int, int], ...]  # (first, last) id of each range
    files: tuple[tuple[int, int], ...]
    user_data: tuple[tuple[int, int], ...]


@dataclass(slots=True)
class NewRows:
    """Rows of jobs, files and user data added to a workflow (its creation, or a growth),
    with the edges and barriers among them. Iterables where there is a row per job (see
    :class:`~torc_net.store.queries.NewWorkflow`)."""

    workflow_id: int
    #: (id, workflow_id, name, command, invocation_script, status, num_cpus, num_gpus,
    #: num_nodes, memory_bytes, runtime_s, resource_requirements, scheduler, scheduler_idx,
    #: failure_handler, handler_idx, supports_termination, cancel_on_blocking_job_failure,
    #: priority, stdio)
    jobs: Iterable[tuple[Any, ...]]
    barriers: Iterable[tuple[int, int]]  # (ordinal, status)
    edges: Iterable[tuple[int, int]]  # (up, down) as state.edge_code names them
    files: list[tuple[int, str, str]]  # (id, name, path)
    user_data: list[tuple[int, str, str, int]]  # (id, name, data_json, is_ephemeral)
    links: dict[str, Iterable[tuple[int, int]]] = field(default_factory=dict)  # (job, ref)
    #: a growth: (kind, first id, count, iteration) of each new range, and the workflow's
    #: new totals (num_jobs, num_barriers, num_files, num_user_data)
    ranges: list[tuple[str, int, int, int]] = field(default_factory=list)
    totals: tuple[int, int, int, int] | None = None


_is_none = partial(is_, None)


_Getter = Callable[[tuple[Any, ...]], tuple[Any, ...]]


def _values(indices: Sequence[int]) -> _Getter:
    """The values of a row at ``indices``, always as a tuple (``itemgetter`` of one index
    returns the bare value)."""
    if len(indices) > 1:
        return itemgetter(*indices)
    return lambda row: tuple(row[i] for i in indices)


class SparseInsert:
    """An INSERT that leaves out the columns a row has no value for, so they take their
    default (NULL: ``nullable`` names only columns whose default is NULL).

    Why: Python's sqlite3 binds ``None`` through its adapter lookup, about 0.9 µs a value
    (measured on 3.11: a 19-column row with 10 NULLs inserts in 12.7 µs, the same row with
    the 10 columns left out in 4.3 µs). A result row has ten optional columns, mostly empty;
    a job row five. Consecutive rows with the same columns go in one ``executemany``, so the
    rows keep their order (and their ids, the order of listings)."""

    def __init__(self, verb: str, table: str, columns: Sequence[str],
                 nullable: Iterable[str], literals: str = "") -> None:
        """``columns`` in the order of the rows' values; ``literals``: more ``name=SQL``
        pairs, comma-separated, given the same value in every row."""
        self.table = table
        self.columns = tuple(columns)
        self.nullable = frozenset(nullable)
        self._head = f"{verb} INTO {table} ("
        self._literals = [pair.split("=", 1) for pair in literals.split(",") if pair]
        self._optional = tuple(i for i, name in enumerate(self.columns) if name in nullable)
        if len(self._optional) != len(self.nullable):
            raise ValueError(f"{table}: nullable columns not among the columns")
        self._optional_values = _values(self._optional)
        #: per pattern of missing values: the INSERT, and what of a row it takes (None: all)
        self._plans: dict[tuple[bool, ...], tuple[str, _Getter | None]] = {}

    def _plan(self, missing: tuple[bool, ...]) -> tuple[str, _Getter | None]:
        left_out = {i for i, gone in zip(self._optional, missing, strict=True) if gone}
        keep = [i for i in range(len(self.columns)) if i not in left_out]
        names = [self.columns[i] for i in keep] + [name for name, _ in self._literals]
        values = ["?"] * len(keep) + [value for _, value in self._literals]
        sql = f"{self._head}{', '.join(names)}) VALUES ({', '.join(values)})"
        if len(keep) == len(self.columns):
            return sql, None
        return sql, _values(keep)

    def run(self, db: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
        """Insert ``rows`` (the caller's transaction), in order, as they come: a million
        jobs' rows are never all in memory at once (each run of rows missing the same values
        is one ``executemany`` reading its rows lazily)."""
        for missing, run in groupby(rows, key=self._missing):
            plan = self._plans.get(missing)
            if plan is None:
                plan = self._plans[missing] = self._plan(missing)
            sql, project = plan
            db.executemany(sql, run if project is None else map(project, run))  # noqa: B031

    def _missing(self, row: tuple[Any, ...]) -> tuple[bool, ...]:
        return tuple(map(_is_none, self._optional_values(row)))


INSERT_JOBS = SparseInsert(
    "INSERT", "jobs",
    ("id", "workflow_id", "name", "command", "invocation_script", "status", "num_cpus",
     "num_gpus", "num_nodes", "memory_bytes", "runtime_s", "resource_requirements",
     "scheduler", "scheduler_idx", "failure_handler", "handler_idx", "supports_termination",
     "cancel_on_blocking_job_failure", "priority", "stdio"),
    nullable=("invocation_script", "resource_requirements", "scheduler", "failure_handler",
              "stdio"),
    literals="attempt=1")
INSERT_RESULTS = SparseInsert(
    "INSERT OR IGNORE", "results",
    ("workflow_id", "job_id", "run_id", "attempt", "return_code", "status", "exec_time_s",
     "completed_at", "compute_node_id", *RESULT_INFO_NAMES),
    nullable=("compute_node_id", *RESULT_INFO_NAMES))


def insert_rows(db: sqlite3.Connection, r: NewRows) -> None:
    """Every row of ``r`` (the caller's transaction)."""
    wf_id = r.workflow_id
    INSERT_JOBS.run(db, r.jobs)
    db.executemany("INSERT INTO barriers (workflow_id, node, status) VALUES (?,?,?)",
                   ((wf_id, node, status) for node, status in r.barriers))
    db.executemany("INSERT OR IGNORE INTO edges (workflow_id, up, down) VALUES (?,?,?)",
                   ((wf_id, up, down) for up, down in r.edges))
    db.executemany("INSERT INTO files (id, workflow_id, name, path, st_mtime)"
                   " VALUES (?,?,?,?,NULL)",
                   [(fid, wf_id, name, path) for fid, name, path in r.files])
    db.executemany("INSERT INTO user_data (id, workflow_id, name, data, is_ephemeral, changed)"
                   " VALUES (?,?,?,?,?,0)",
                   [(uid, wf_id, name, data, eph) for uid, name, data, eph in r.user_data])
    for table, pairs in r.links.items():
        if table not in LINK_TABLES:
            raise ValueError(f"not a link table: {table}")
        db.executemany(f"INSERT OR IGNORE INTO {table} (job_id, ref_id) VALUES (?,?)", pairs)
    db.executemany("INSERT INTO id_ranges (workflow_id, kind, first_id, count, iteration)"
                   " VALUES (?,?,?,?,?)", [(wf_id, *rng) for rng in r.ranges])
    if r.totals is not None:
        db.execute("UPDATE workflows SET num_jobs=?, num_barriers=?, num_files=?,"
                   " num_user_data=? WHERE id=?", (*r.totals, wf_id))


@dataclass(slots=True, eq=False)
class Change:
    """The rows one request writes (see the module docstring)."""

    #: the workflows whose in-memory state this change reflects (Rule 1)
    workflows: frozenset[int]
    #: order of creation; feed subscribers registered later skip older changes
    seq: int = 0
    #: job id -> (status, attempt, compute_node_id or None, run_id of the current attempt,
    #: job id): its ``job_states`` row's parameters as they are, bound unchanged
    jobs: dict[int, tuple[int, int, int | None, int, int]] = field(default_factory=dict)
    #: job id -> (num_cpus, memory_bytes, runtime_s): requirements rewritten
    job_resources: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    #: (workflow id, node) -> status
    barriers: dict[tuple[int, int], int] = field(default_factory=dict)
    #: workflow id -> (run_id, is_canceled)
    runs: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: compute node id -> (lease_deadline, is_active)
    leases: dict[int, tuple[float | None, int]] = field(default_factory=dict)
    #: new compute_nodes rows (id, workflow_id, hostname, pid, num_cpus, memory_bytes,
    #: num_gpus, num_nodes, slurm_job_id, created_at, lease_deadline)
    compute_nodes: list[tuple[Any, ...]] = field(default_factory=list)
    #: (workflow_id, job_id, run_id, attempt, return_code, status, exec_time_s, completed_at, cn)
    results: list[tuple[Any, ...]] = field(default_factory=list)
    #: (workflow_id, ts, kind, data_json)
    events: list[tuple[int, float, str, str | None]] = field(default_factory=list)
    #: file id -> st_mtime
    file_mtimes: dict[int, float | None] = field(default_factory=dict)
    #: user_data id -> data as JSON text
    user_data: dict[int, str] = field(default_factory=dict)
    #: user_data id -> changed flag
    user_data_changed: dict[int, int] = field(default_factory=dict)
    #: (workflow_id, action_index, claimed_at, compute_node_id)
    actions_claimed: list[tuple[int, int, float, int | None]] = field(default_factory=list)
    #: new allocations rows (id, workflow_id, slurm_job_id, scheduler, action_index,
    #: submitted_at, state)
    allocations: list[tuple[Any, ...]] = field(default_factory=list)
    #: allocation id -> state
    allocation_states: dict[int, str] = field(default_factory=dict)
    deleted: list[DeletedWorkflow] = field(default_factory=list)
    #: rows a growth adds (inserted before any update: Rule 2)
    grown: list[NewRows] = field(default_factory=list)
    #: published once committed (Rule 3)
    messages: list[Messages] = field(default_factory=list)
    error: StoreError | None = None
    batch: Batch | None = None

    def event(self, workflow_id: int, ts: float, kind: str, data: Any = None) -> None:
        self.events.append(
            (workflow_id, ts, kind, None if data is None else json.dumps(data, default=str))
        )

    def publish(self, workflow_id: int, owner: str | None,
                messages: list[dict[str, Any]]) -> None:
        if messages:
            self.messages.append((workflow_id, owner, messages))

    async def wait(self) -> None:
        """Return once this change is durable; raise StoreError if it is not."""
        batch = self.batch
        assert batch is not None
        if batch.pump is not None:  # start storing it now if the writer process is free
            batch.pump()
        await batch.done.wait()
        if self.error is not None:
            raise self.error


def is_transient(exc: BaseException) -> bool:
    """A database that could not write (disk full, I/O error, locked) may write later; a value
    it cannot hold never will."""
    return isinstance(exc, sqlite3.OperationalError | StoreError) or (
        isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError)
    )


def store_error(exc: BaseException) -> StoreError:
    """Why a change is not durable, as its waiter hears it."""
    if isinstance(exc, StoreError):
        return exc
    return StoreError(f"database commit failed: {exc}", transient=is_transient(exc))


def commit(db: sqlite3.Connection, changes: Sequence[Change],
           ids: dict[str, int] | None) -> dict[int, StoreError]:
    """Store ``changes`` and the id high-water marks ``ids`` (None: unchanged) as one
    transaction; the indices of the changes that could not be stored, with why.

    All together first; if that fails, one by one, each in a savepoint, so only a change
    SQLite refuses fails, with every later change to the same workflows (they were made on
    top of it in memory). Rule 3 of :mod:`.core`; the same code runs in the server's thread
    and in the writer process (:mod:`.writer`)."""
    try:
        db.execute("BEGIN")
        apply(db, changes[0] if len(changes) == 1 else merge(changes))
        if ids:
            write_next_ids(db, ids)
        db.execute("COMMIT")
        return {}
    except Exception as exc:
        rollback(db)
        if len(changes) == 1:
            return {0: store_error(exc)}
        log.warning("a commit of %d changes failed (%s); storing them one by one",
                    len(changes), exc)
    failed: dict[int, StoreError] = {}
    lost: set[int] = set()
    try:
        db.execute("BEGIN")
        for i, change in enumerate(changes):
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
                failed[i] = store_error(exc)
                lost |= change.workflows
            db.execute("RELEASE change")
        if ids:
            write_next_ids(db, ids)
        db.execute("COMMIT")
    except Exception as exc:
        rollback(db)
        error = store_error(exc)
        return {i: failed.get(i, error) for i in range(len(changes))}
    return failed


def rollback(db: sqlite3.Connection) -> None:
    """End a failed transaction, if SQLite has not already."""
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:  # pragma: no cover - the connection is beyond help
            log.exception("rollback failed")


def merge(changes: Iterable[Change]) -> Change:
    """One change with the rows of all, later values winning (Rule 2)."""
    m = Change(frozenset())
    for c in changes:
        m.jobs.update(c.jobs)
        m.job_resources.update(c.job_resources)
        m.barriers.update(c.barriers)
        m.runs.update(c.runs)
        m.leases.update(c.leases)
        m.compute_nodes.extend(c.compute_nodes)
        m.results.extend(c.results)
        m.events.extend(c.events)
        m.file_mtimes.update(c.file_mtimes)
        m.user_data.update(c.user_data)
        m.user_data_changed.update(c.user_data_changed)
        m.actions_claimed.extend(c.actions_claimed)
        m.allocations.extend(c.allocations)
        m.allocation_states.update(c.allocation_states)
        m.deleted.extend(c.deleted)
        m.grown.extend(c.grown)
    return m


#: The tables that link jobs to files and user data (deleted by job id range).
LINK_TABLES = ("job_input_files", "job_output_files", "job_input_user_data",
               "job_output_user_data")


def apply(db: sqlite3.Connection, c: Change) -> None:
    """Write one change's rows, in the caller's transaction: inserts, updates, deletes."""
    for rows in c.grown:
        insert_rows(db, rows)
    if c.compute_nodes:
        db.executemany(
            "INSERT INTO compute_nodes (id, workflow_id, hostname, pid, num_cpus, memory_bytes,"
            " num_gpus, num_nodes, slurm_job_id, created_at, lease_deadline, is_active)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,1)", c.compute_nodes)
    if c.allocations:
        db.executemany(
            "INSERT INTO allocations (id, workflow_id, slurm_job_id, scheduler, action_index,"
            " submitted_at, state) VALUES (?,?,?,?,?,?,?)", c.allocations)
    if c.actions_claimed:
        db.executemany(
            "INSERT OR IGNORE INTO actions_claimed (workflow_id, action_index, claimed_at,"
            " compute_node_id) VALUES (?,?,?,?)", c.actions_claimed)
    if c.jobs:
        db.executemany(
            "INSERT OR REPLACE INTO job_states (status, attempt, compute_node_id, run_id, id)"
            " VALUES (?,?,?,?,?)", c.jobs.values())
    if c.job_resources:
        db.executemany(
            "UPDATE jobs SET num_cpus=?, memory_bytes=?, runtime_s=? WHERE id=?",
            [(cpus, mem, rt, job) for job, (cpus, mem, rt) in c.job_resources.items()])
    if c.barriers:
        db.executemany(
            "UPDATE barriers SET status=? WHERE workflow_id=? AND node=?",
            [(s, wf, node) for (wf, node), s in c.barriers.items()])
    if c.runs:
        db.executemany(
            "UPDATE workflows SET run_id=?, is_canceled=? WHERE id=?",
            [(r, canceled, wf) for wf, (r, canceled) in c.runs.items()])
    if c.leases:
        db.executemany(
            "UPDATE compute_nodes SET lease_deadline=?, is_active=? WHERE id=?",
            [(d, a, cn) for cn, (d, a) in c.leases.items()])
    if c.file_mtimes:
        db.executemany("UPDATE files SET st_mtime=? WHERE id=?",
                       [(m, fid) for fid, m in c.file_mtimes.items()])
    if c.user_data:
        db.executemany("UPDATE user_data SET data=? WHERE id=?",
                       [(d, uid) for uid, d in c.user_data.items()])
    if c.user_data_changed:
        db.executemany("UPDATE user_data SET changed=? WHERE id=?",
                       [(flag, uid) for uid, flag in c.user_data_changed.items()])
    if c.allocation_states:
        db.executemany("UPDATE allocations SET state=? WHERE id=?",
                       [(s, aid) for aid, s in c.allocation_states.items()])
    if c.results:
        INSERT_RESULTS.run(db, c.results)
    if c.events:
        db.executemany("INSERT INTO events (workflow_id, ts, kind, data) VALUES (?,?,?,?)",
                       c.events)
    for d in c.deleted:
        _delete_workflow(db, d)


def _delete_workflow(db: sqlite3.Connection, d: DeletedWorkflow) -> None:
    """Every row the workflow owns, by id range or workflow id."""
    for lo, hi in d.jobs:
        db.execute("DELETE FROM jobs WHERE id BETWEEN ? AND ?", (lo, hi))
        db.execute("DELETE FROM job_states WHERE id BETWEEN ? AND ?", (lo, hi))
        db.execute("DELETE FROM results WHERE job_id BETWEEN ? AND ?", (lo, hi))
        for table in LINK_TABLES:
            db.execute(f"DELETE FROM {table} WHERE job_id BETWEEN ? AND ?", (lo, hi))
    for lo, hi in d.files:
        db.execute("DELETE FROM files WHERE id BETWEEN ? AND ?", (lo, hi))
    for lo, hi in d.user_data:
        db.execute("DELETE FROM user_data WHERE id BETWEEN ? AND ?", (lo, hi))
    for table in ("barriers", "edges", "events", "compute_nodes", "allocations",
                  "actions_claimed", "id_ranges", "workflow_access_group"):
        db.execute(f"DELETE FROM {table} WHERE workflow_id=?", (d.id,))
    db.execute("DELETE FROM workflows WHERE id=?", (d.id,))
