"""Every SQL statement the server runs outside the group commit: typed reads, and the insert
of a new workflow.

Each function takes the connection first and runs in the store's worker thread through
:meth:`~torc_net.store.Store.read` or :meth:`~torc_net.store.Store.write`; none is called
from the trio thread directly.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .changes import LINK_TABLES, NewRows, insert_rows
from .schema import RESULT_LISTED_NAMES

# ---------------------------------------------------------------------------------------------
# A workflow, whole


@dataclass(slots=True)
class NewWorkflow:
    """The rows of a new workflow. Iterables, not lists, where there is a row per job: a list
    of a million 18-tuples is ~250 MB at the peak of creation; sqlite3 consumes an iterator
    row by row."""

    #: (id, name, user, description, created_at, job_id_base, num_jobs, num_barriers,
    #: file_id_base, num_files, user_data_id_base, num_user_data, run_id, is_canceled,
    #: spec_json)
    header: tuple[Any, ...]
    #: (id, workflow_id, name, command, invocation_script, status, num_cpus, num_gpus,
    #: num_nodes, memory_bytes, runtime_s, resource_requirements, scheduler, scheduler_idx,
    #: failure_handler, handler_idx, supports_termination, cancel_on_blocking_job_failure,
    #: priority, stdio)
    jobs: Iterable[tuple[Any, ...]]
    barriers: Iterable[tuple[int, int]]  # (node, status)
    edges: Iterable[tuple[int, int]]  # (up, down)
    files: list[tuple[int, str, str]]  # (id, name, path)
    user_data: list[tuple[int, str, str, int]]  # (id, name, data_json, is_ephemeral)
    links: dict[str, Iterable[tuple[int, int]]] = field(default_factory=dict)  # (job, ref)
    events: list[tuple[float, str, str | None]] = field(default_factory=list)


def insert_workflow(conn: sqlite3.Connection, wf: NewWorkflow) -> None:
    """Every row of a new workflow (the caller's transaction)."""
    wf_id = wf.header[0]
    conn.execute(
        "INSERT INTO workflows (id, name, user, description, created_at, job_id_base, num_jobs,"
        " num_barriers, file_id_base, num_files, user_data_id_base, num_user_data, run_id,"
        " is_canceled, spec_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", wf.header)
    insert_rows(conn, NewRows(wf_id, wf.jobs, wf.barriers, wf.edges, wf.files, wf.user_data,
                              wf.links))
    conn.executemany("INSERT INTO events (workflow_id, ts, kind, data) VALUES (?,?,?,?)",
                     [(wf_id, ts, kind, data) for ts, kind, data in wf.events])


@dataclass(slots=True)
class StoredWorkflow:
    """What the server reads back to rebuild a workflow's engine (start-up, or after a failed
    commit)."""

    #: as :attr:`NewWorkflow.header`
    header: tuple[Any, ...]
    #: per job, by id: (name, command, invocation_script, status, attempt, compute_node_id,
    #: num_cpus, num_gpus, num_nodes, memory_bytes, runtime_s, scheduler, scheduler_idx,
    #: handler_idx, supports_termination, cancel_on_blocking_job_failure, priority, stdio)
    jobs: list[tuple[Any, ...]]
    barriers: list[tuple[int, int]]  # (ordinal, status)
    edges: list[tuple[int, int]]  # as state.edge_code names the nodes
    #: (kind, first id, count, iteration) of the ranges growths added, in id order
    ranges: list[tuple[str, int, int, int]]
    input_files: list[tuple[int, int]]  # (job id, file id)
    input_user_data: list[tuple[int, int]]  # (job id, user_data id)
    compute_nodes: list[tuple[int, float | None, int, str | None]]  # id, deadline, active, slurm
    file_mtimes: list[float | None]  # by file id
    changed_user_data: list[int]  # user_data ids


def workflow_ids(conn: sqlite3.Connection) -> list[int]:
    return [r[0] for r in conn.execute("SELECT id FROM workflows ORDER BY id")]


def read_workflow(conn: sqlite3.Connection, wf_id: int) -> StoredWorkflow | None:
    header = conn.execute(
        "SELECT id, name, user, description, created_at, job_id_base, num_jobs, num_barriers,"
        " file_id_base, num_files, user_data_id_base, num_user_data, run_id, is_canceled,"
        " spec_json FROM workflows WHERE id=?", (wf_id,)).fetchone()
    if header is None:
        return None
    ranges = conn.execute("SELECT kind, first_id, count, iteration FROM id_ranges"
                          " WHERE workflow_id=? ORDER BY first_id", (wf_id,)).fetchall()
    base, n = header[5], header[6]
    spans = [(base, base + n - sum(r[2] for r in ranges if r[0] == "job") - 1)]
    spans += [(first, first + count - 1) for kind, first, count, _ in ranges if kind == "job"]
    jobs: list[tuple[Any, ...]] = []
    links_: dict[str, list[tuple[int, int]]] = {t: [] for t in ("job_input_files",
                                                                 "job_input_user_data")}
    for lo, hi in spans:
        jobs += conn.execute(  # current values: job_states' where the job has a row there
            "SELECT j.name, j.command, j.invocation_script, coalesce(s.status, j.status),"
            " coalesce(s.attempt, j.attempt), CASE WHEN s.id IS NULL THEN j.compute_node_id"
            " ELSE s.compute_node_id END, j.num_cpus, j.num_gpus, j.num_nodes, j.memory_bytes,"
            " j.runtime_s, j.scheduler, j.scheduler_idx, j.handler_idx,"
            " j.supports_termination, j.cancel_on_blocking_job_failure, j.priority, j.stdio,"
            " coalesce(s.run_id, j.run_id)"
            " FROM jobs j LEFT JOIN job_states s ON s.id = j.id"
            " WHERE j.id BETWEEN ? AND ? ORDER BY j.id", (lo, hi)).fetchall()
        for table, pairs in links_.items():
            pairs += conn.execute(f"SELECT job_id, ref_id FROM {table}"
                                  " WHERE job_id BETWEEN ? AND ?", (lo, hi)).fetchall()

    return StoredWorkflow(
        header=tuple(header),
        jobs=jobs,
        ranges=[tuple(r) for r in ranges],
        barriers=conn.execute("SELECT node, status FROM barriers WHERE workflow_id=?",
                              (wf_id,)).fetchall(),
        edges=conn.execute("SELECT up, down FROM edges WHERE workflow_id=?",
                           (wf_id,)).fetchall(),
        input_files=links_["job_input_files"],
        input_user_data=links_["job_input_user_data"],
        compute_nodes=conn.execute(
            "SELECT id, lease_deadline, is_active, slurm_job_id FROM compute_nodes"
            " WHERE workflow_id=? ORDER BY id", (wf_id,)).fetchall(),
        file_mtimes=[r[0] for r in conn.execute(
            "SELECT st_mtime FROM files WHERE workflow_id=? ORDER BY id", (wf_id,))],
        changed_user_data=[r[0] for r in conn.execute(
            "SELECT id FROM user_data WHERE workflow_id=? AND changed=1", (wf_id,))],
    )


# ---------------------------------------------------------------------------------------------
# Pages and lookups for the read endpoints


def _by_ids(conn: sqlite3.Connection, sql_head: str, ids: Sequence[int],
            key: str = "id") -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for i in range(0, len(ids), 500):
        chunk = tuple(ids[i : i + 500])
        marks = ",".join("?" * len(chunk))
        rows.extend(conn.execute(f"{sql_head} WHERE {key} IN ({marks})", chunk))
    return rows


JobRow = tuple[Any, ...]


def job_rows(conn: sqlite3.Connection, ids: Sequence[int]) \
        -> tuple[dict[int, JobRow], dict[str, dict[int, list[int]]]]:
    """Job rows by id — (id, name, command, invocation_script, num_cpus, num_gpus, num_nodes,
    memory_bytes, runtime_s, resource_requirements, scheduler, failure_handler,
    supports_termination, cancel_on_blocking_job_failure) — and per link table job id ->
    sorted referenced ids."""
    rows = _by_ids(conn, "SELECT id, name, command, invocation_script, num_cpus, num_gpus,"
                   " num_nodes, memory_bytes, runtime_s, resource_requirements, scheduler,"
                   " failure_handler, supports_termination, cancel_on_blocking_job_failure,"
                   " priority, stdio"
                   " FROM jobs", ids)
    links: dict[str, dict[int, list[int]]] = {}
    for table in LINK_TABLES:
        found: dict[int, list[int]] = {}
        for job_id, ref in _by_ids(conn, f"SELECT job_id, ref_id FROM {table}", ids,
                                   key="job_id"):
            found.setdefault(job_id, []).append(ref)
        for refs in found.values():
            refs.sort()
        links[table] = found
    return {r[0]: r for r in rows}, links


def files_between(conn: sqlite3.Connection, lo: int, hi: int) -> list[tuple[Any, ...]]:
    """(id, name, path, st_mtime) of files with ids in [lo, hi]."""
    return conn.execute("SELECT id, name, path, st_mtime FROM files WHERE id BETWEEN ? AND ?"
                        " ORDER BY id", (lo, hi)).fetchall()


def user_data_between(conn: sqlite3.Connection, lo: int, hi: int) -> list[tuple[Any, ...]]:
    """(id, name, data_json, is_ephemeral) of user data with ids in [lo, hi]."""
    return conn.execute("SELECT id, name, data, is_ephemeral FROM user_data"
                        " WHERE id BETWEEN ? AND ? ORDER BY id", (lo, hi)).fetchall()


def results_page(conn: sqlite3.Connection, wf_id: int, status: int | None, limit: int,
                 offset: int, *, run_id: int | None = None, job_id: int | None = None,
                 failed: bool = False) -> tuple[int, list[tuple[Any, ...]]]:
    """(total, rows) of a workflow's results, optionally of one status, run or job, or only
    those with a non-zero return code: (id, job_id, run_id, attempt, return_code, status,
    exec_time_s, completed_at, compute_node_id, slurm_job_id)."""
    where = "r.workflow_id=?"
    params: list[Any] = [wf_id]
    for column, value in (("r.status", status), ("r.run_id", run_id), ("r.job_id", job_id)):
        if value is not None:
            where += f" AND {column}=?"
            params.append(value)
    if failed:
        where += " AND r.return_code != 0"
    total = conn.execute(f"SELECT count(*) FROM results r WHERE {where}", params).fetchone()[0]
    rows = conn.execute(
        "SELECT r.id, r.job_id, r.run_id, r.attempt, r.return_code, r.status, r.exec_time_s,"
        " r.completed_at, r.compute_node_id, c.slurm_job_id, "
        + ", ".join(f"r.{name}" for name in RESULT_LISTED_NAMES) + " FROM results r"
        " LEFT JOIN compute_nodes c ON c.id = r.compute_node_id"
        f" WHERE {where} ORDER BY r.id LIMIT ? OFFSET ?", [*params, limit, offset]).fetchall()
    return total, rows


def job_output(conn: sqlite3.Connection, job_id: int, run_id: int | None,
               attempt: int | None) -> tuple[Any, ...] | None:
    """(run_id, attempt, stdout_tail, stderr_tail, stdout_path, stderr_path) of a job's latest
    result (the highest run, then attempt), or of the one of ``run_id`` and/or ``attempt``;
    None if there is none. One row by the unique key's index."""
    where, params = "job_id=?", [job_id]
    for column, value in (("run_id", run_id), ("attempt", attempt)):
        if value is not None:
            where += f" AND {column}=?"
            params.append(value)
    row = conn.execute(
        "SELECT run_id, attempt, stdout_tail, stderr_tail, stdout_path, stderr_path FROM results"
        f" WHERE {where} ORDER BY run_id DESC, attempt DESC LIMIT 1", params).fetchone()
    return None if row is None else tuple(row)


def job_output_paths(conn: sqlite3.Connection, job_id: int, limit: int) -> list[str]:
    """The stdout and stderr paths recorded by a job's latest ``limit`` results."""
    rows = conn.execute("SELECT stdout_path, stderr_path FROM results WHERE job_id=?"
                        " ORDER BY run_id DESC, attempt DESC LIMIT ?", (job_id, limit))
    return [p for row in rows for p in row if isinstance(p, str)]


def result_keys(conn: sqlite3.Connection, first_job: int, last_job: int, first_run: int,
                last_run: int) -> set[tuple[int, int, int]]:
    """(job_id, run_id, attempt) of the results recorded for jobs with ids in [first_job,
    last_job] (one workflow's) in runs first_run to last_run (the unique key's index)."""
    return {(r[0], r[1], r[2]) for r in conn.execute(
        "SELECT job_id, run_id, attempt FROM results WHERE job_id BETWEEN ? AND ?"
        " AND run_id BETWEEN ? AND ?", (first_job, last_job, first_run, last_run))}


def events_page(conn: sqlite3.Connection, wf_id: int, after: int, limit: int,
                offset: int) -> tuple[int, list[tuple[Any, ...]]]:
    """(total, rows) of a workflow's events after id ``after``: (id, ts, kind, data_json)."""
    total = conn.execute("SELECT count(*) FROM events WHERE workflow_id=? AND id>?",
                         (wf_id, after)).fetchone()[0]
    rows = conn.execute("SELECT id, ts, kind, data FROM events WHERE workflow_id=? AND id>?"
                        " ORDER BY id LIMIT ? OFFSET ?", (wf_id, after, limit, offset)).fetchall()
    return total, rows


def compute_nodes_page(conn: sqlite3.Connection, wf_id: int, limit: int,
                       offset: int) -> tuple[int, list[tuple[Any, ...]]]:
    """(total, rows): (id, hostname, pid, num_cpus, memory_bytes, num_gpus, num_nodes,
    slurm_job_id, created_at, is_active)."""
    total = conn.execute("SELECT count(*) FROM compute_nodes WHERE workflow_id=?",
                         (wf_id,)).fetchone()[0]
    rows = conn.execute(
        "SELECT id, hostname, pid, num_cpus, memory_bytes, num_gpus, num_nodes, slurm_job_id,"
        " created_at, is_active FROM compute_nodes WHERE workflow_id=? ORDER BY id"
        " LIMIT ? OFFSET ?", (wf_id, limit, offset)).fetchall()
    return total, rows


_ALLOCATION = ("SELECT id, workflow_id, slurm_job_id, scheduler, action_index, submitted_at,"
               " state FROM allocations")


def allocations_page(conn: sqlite3.Connection, wf_id: int, limit: int,
                     offset: int) -> tuple[int, list[tuple[Any, ...]]]:
    """(total, rows): (id, workflow_id, slurm_job_id, scheduler, action_index, submitted_at,
    state)."""
    total = conn.execute("SELECT count(*) FROM allocations WHERE workflow_id=?",
                         (wf_id,)).fetchone()[0]
    rows = conn.execute(f"{_ALLOCATION} WHERE workflow_id=? ORDER BY id LIMIT ? OFFSET ?",
                        (wf_id, limit, offset)).fetchall()
    return total, rows


def allocation(conn: sqlite3.Connection, wf_id: int, alloc_id: int) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = conn.execute(
        f"{_ALLOCATION} WHERE id=? AND workflow_id=?", (alloc_id, wf_id)).fetchone()
    return row


def actions_claimed(conn: sqlite3.Connection, wf_id: int) -> set[int]:
    """Indices of the workflow's actions already handed out."""
    return {int(r[0]) for r in conn.execute(
        "SELECT action_index FROM actions_claimed WHERE workflow_id=?", (wf_id,))}
