"""The database schema, its version, and the migrations that bring older files up to it.

Theory of operation
-------------------
Ids are assigned by the server, not by SQLite (a workflow's jobs take a contiguous range so
that a job's index in the engine is ``id - job_id_base``). To keep an id from ever being used
twice — a deleted workflow's id handed to the next workflow would inherit whatever still
pointed at the old one — the next free id of each sequence is kept in ``meta`` under
``next_id.<sequence>`` (a high-water mark), written in the same transaction as the rows that
use the ids (:data:`ID_SEQUENCES`).

Version 3 added a job's ``priority`` and ``stdio`` and a result's :data:`RESULT_INFO`
(where its output went, a note, its failure cause and resource use; columns added in place:
old rows get priority 0 and nulls).

Version 4 added a job's ``run_id``: the run of its current attempt, which a job running
through a selective reset keeps (the engine's Rule 6b), written with the job's status.
Old rows, and new jobs until first claimed, hold 0, "not known": the engine then takes the
workflow's run, and lets a held job's holder report for an earlier one.

Version 5 added a result's ``stdout_tail`` and ``stderr_tail`` (:data:`RESULT_TAILS`): the
end of the job's output, sent by its runner, so that no reader ever opens a path a client
named (the server never does: docs/api.md, job output). Old rows hold null, "not sent".

Version 6 let a workflow grow (dynamic jobs): ``id_ranges`` holds the id ranges each growth
added beyond the workflow's own (its jobs, files and user data then span several ranges; see
:mod:`torc_net.ids`), and ``barriers`` and ``edges`` name a barrier by its ordinal (``-1 -
ordinal`` in ``edges``; jobs by their index), which a growth does not change, where versions
up to 5 stored its node index (``num_jobs + ordinal``), which every growth would move.

Version 7 added access groups (:mod:`.access`): ``access_groups`` (ids by SQLite's
AUTOINCREMENT, so a deleted group's id is never handed out again), ``user_group_membership``
and ``workflow_access_group``. The tables are made by :data:`SCHEMA`; an older file has none,
which is no group at all.

Version 8 keeps what changes of a job as it runs (status, attempt, holder, run) in a narrow
table of its own, ``job_states``, a row per job that has changed since it was created; the
``jobs`` row keeps those columns as they were when the job was created. A job's current
values are its ``job_states`` row's where it has one (``read_workflow`` joins them). Why: an
update rewrites a whole row, and a job row carries its name and command; a claim and a
completion per job updated two wide rows (measured at batch 256: 13-15 µs of SQL a job, 8-10
with the narrow table; issue 17). An older file has no ``job_states`` rows, so its ``jobs``
rows are current: nothing is copied.

Version 2 added those marks. A version-1 file is migrated when it is opened: the marks start
from the largest ids in its tables, and rows a version-1 delete left behind (allocations,
claimed actions of workflows that no longer exist) are removed.
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 8

#: What a result carries besides its outcome, stored as the runner sent it (the engine does not
#: interpret it): where the output went, a note, why it failed, and what it used (Torc's
#: names). One list: the table, the migration, the API's schemas and the reads follow it.
RESULT_INFO: tuple[tuple[str, str], ...] = (
    ("stdout_path", "TEXT"), ("stderr_path", "TEXT"), ("note", "TEXT"), ("failure_cause", "TEXT"),
    ("peak_memory_bytes", "INTEGER"), ("avg_memory_bytes", "INTEGER"),
    ("peak_cpu_percent", "REAL"), ("avg_cpu_percent", "REAL"),
    ("stdout_tail", "TEXT"), ("stderr_tail", "TEXT"),
)
RESULT_INFO_NAMES = tuple(name for name, _ in RESULT_INFO)
#: The end of a job's stdout and stderr (at most :data:`MAX_TAIL_CHARS` each), stored with its
#: result. Not in a page of results (:data:`RESULT_LISTED_NAMES`): 32 KiB a result would make a
#: page of 100,000 results 3 GiB; ``GET .../jobs/{id}/output`` answers one result's.
RESULT_TAILS = ("stdout_tail", "stderr_tail")
#: What a page of results carries of :data:`RESULT_INFO`: all but the tails.
RESULT_LISTED_NAMES = tuple(name for name in RESULT_INFO_NAMES if name not in RESULT_TAILS)
#: The most characters of a tail the API takes: runners send the last 16 KiB of bytes, decoded
#: (invalid bytes replaced), which is never more characters than bytes.
MAX_TAIL_CHARS = 16384

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
    cancel_on_blocking_job_failure INTEGER NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    stdio TEXT,
    run_id INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS job_states (
    id INTEGER PRIMARY KEY,
    status INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    compute_node_id INTEGER,
    run_id INTEGER NOT NULL
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
    compute_node_id INTEGER,
    """ + ",\n    ".join(f"{name} {kind}" for name, kind in RESULT_INFO) + """
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
CREATE TABLE IF NOT EXISTS id_ranges (
    workflow_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    first_id INTEGER NOT NULL,
    count INTEGER NOT NULL,
    iteration INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, kind, first_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS actions_claimed (
    workflow_id INTEGER NOT NULL,
    action_index INTEGER NOT NULL,
    claimed_at REAL NOT NULL,
    compute_node_id INTEGER,
    PRIMARY KEY (workflow_id, action_index)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS access_groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS user_group_membership (
    group_id INTEGER NOT NULL,
    user_name TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (group_id, user_name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workflow_access_group (
    workflow_id INTEGER NOT NULL,
    group_id INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (workflow_id, group_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS workflow_access_group_g ON workflow_access_group (group_id);
"""


#: The id sequences the store assigns, and what in the tables already uses ids of each.
ID_SEQUENCES: dict[str, tuple[str, ...]] = {
    "workflow": ("SELECT max(id) FROM workflows",),
    "job": ("SELECT max(id) FROM jobs",
            "SELECT max(job_id_base + num_jobs - 1) FROM workflows"),
    "file": ("SELECT max(id) FROM files",),
    "user_data": ("SELECT max(id) FROM user_data",),
    "compute_node": ("SELECT max(id) FROM compute_nodes",),
    "allocation": ("SELECT max(id) FROM allocations",),
}


class SchemaError(Exception):
    """The file is not a torc-trio database this version can use."""


def next_ids_from_tables(conn: sqlite3.Connection) -> dict[str, int]:
    """One past the largest id in use, per sequence (what version 1 derived on every open)."""
    out: dict[str, int] = {}
    for name, queries in ID_SEQUENCES.items():
        values = [conn.execute(sql).fetchone()[0] for sql in queries]
        out[name] = max(int(v or 0) for v in values) + 1
    return out


def read_next_ids(conn: sqlite3.Connection) -> dict[str, int]:
    """The stored high-water marks, never below what the tables hold."""
    stored = {
        key.removeprefix("next_id."): int(value)
        for key, value in conn.execute("SELECT key, value FROM meta WHERE key LIKE 'next_id.%'")
    }
    derived = next_ids_from_tables(conn)
    return {name: max(stored.get(name, 1), derived[name]) for name in ID_SEQUENCES}


def write_next_ids(conn: sqlite3.Connection, ids: dict[str, int]) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
        [(f"next_id.{name}", str(value)) for name, value in ids.items()],
    )


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    write_next_ids(conn, next_ids_from_tables(conn))
    for table in ("allocations", "actions_claimed"):
        conn.execute(
            f"DELETE FROM {table} WHERE workflow_id NOT IN (SELECT id FROM workflows)"
        )


def _migrate_2_to_3(conn: sqlite3.Connection) -> None:
    for table, column in (("jobs", "priority INTEGER NOT NULL DEFAULT 0"), ("jobs", "stdio TEXT"),
                          *(("results", f"{name} {kind}") for name, kind in RESULT_INFO)):
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column.split()[0] not in have:  # tables made by this version's SCHEMA have it
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


def _migrate_3_to_4(conn: sqlite3.Connection) -> None:
    have = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    if "run_id" not in have:  # tables made by this version's SCHEMA have it
        conn.execute("ALTER TABLE jobs ADD COLUMN run_id INTEGER NOT NULL DEFAULT 0")


def _migrate_4_to_5(conn: sqlite3.Connection) -> None:
    have = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
    for name in RESULT_TAILS:
        if name not in have:  # tables made by this version's SCHEMA (or _migrate_2_to_3) have it
            conn.execute(f"ALTER TABLE results ADD COLUMN {name} TEXT")


def _migrate_5_to_6(conn: sqlite3.Connection) -> None:
    """Barriers by ordinal (see the module docstring); ``id_ranges`` is made by SCHEMA.
    A workflow whose edges already name a barrier by a negative code is in the new form
    (tables made by this version's SCHEMA, then marked older by a test) and is left alone."""
    for wf_id, nj in conn.execute("SELECT id, num_jobs FROM workflows").fetchall():
        if conn.execute("SELECT 1 FROM edges WHERE workflow_id=? AND (up < 0 OR down < 0)"
                        " LIMIT 1", (wf_id,)).fetchone():
            continue
        barriers = conn.execute("SELECT node, status FROM barriers WHERE workflow_id=?",
                                (wf_id,)).fetchall()
        conn.execute("DELETE FROM barriers WHERE workflow_id=?", (wf_id,))
        conn.executemany("INSERT INTO barriers (workflow_id, node, status) VALUES (?,?,?)",
                         [(wf_id, node - nj, st) for node, st in barriers])
        edges = conn.execute("SELECT up, down FROM edges WHERE workflow_id=? AND"
                             " (up >= ? OR down >= ?)", (wf_id, nj, nj)).fetchall()
        conn.execute("DELETE FROM edges WHERE workflow_id=? AND (up >= ? OR down >= ?)",
                     (wf_id, nj, nj))

        def code(node: int, nj: int = nj) -> int:
            return node if node < nj else nj - 1 - node

        conn.executemany("INSERT INTO edges (workflow_id, up, down) VALUES (?,?,?)",
                         [(wf_id, code(up), code(down)) for up, down in edges])


def _migrate_6_to_7(conn: sqlite3.Connection) -> None:
    """Access groups: their tables are made by SCHEMA (empty: no group yet); no row of an
    older version changes."""


def _migrate_7_to_8(conn: sqlite3.Connection) -> None:
    """``job_states`` is made by SCHEMA, empty: every ``jobs`` row of an older file is current
    (see the module docstring); no row changes."""


_MIGRATIONS = {1: _migrate_1_to_2, 2: _migrate_2_to_3, 3: _migrate_3_to_4, 4: _migrate_4_to_5,
               5: _migrate_5_to_6, 6: _migrate_6_to_7, 7: _migrate_7_to_8}


def ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the tables of a new database, or migrate an older one, in one transaction."""
    conn.execute("BEGIN")
    try:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                         (str(SCHEMA_VERSION),))
        else:
            version = int(row[0])
            if version > SCHEMA_VERSION or (version < SCHEMA_VERSION
                                             and version not in _MIGRATIONS):
                raise SchemaError(f"{path}: schema version {version}, this server reads up to "
                                  f"{SCHEMA_VERSION}")
            while version < SCHEMA_VERSION:
                _MIGRATIONS[version](conn)
                version += 1
            conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
