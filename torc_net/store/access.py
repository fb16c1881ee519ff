"""The SQL of access groups (:mod:`torc_net.access` keeps them in memory).

Each function takes the connection first. The reads run through
:meth:`~torc_net.store.Store.read` (once, at start-up); the writes through
:meth:`~torc_net.store.Store.write`, each in a transaction of its own: group changes are rare,
so they stay out of the group commit, and the caller changes memory only once the write
returned (memory never ahead of the disk).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class StoredAccess:
    """Every access-group row."""

    groups: list[tuple[int, str, str | None, float]]  # (id, name, description, created_at)
    members: list[tuple[int, str, str, float]]  # (group_id, user_name, role, created_at)
    links: list[tuple[int, int, float]]  # (workflow_id, group_id, created_at)


def read_access(conn: sqlite3.Connection) -> StoredAccess:
    return StoredAccess(
        groups=conn.execute("SELECT id, name, description, created_at FROM access_groups"
                            " ORDER BY id").fetchall(),
        members=conn.execute("SELECT group_id, user_name, role, created_at"
                             " FROM user_group_membership ORDER BY group_id, user_name"
                             ).fetchall(),
        links=conn.execute("SELECT workflow_id, group_id, created_at FROM workflow_access_group"
                           " ORDER BY workflow_id, group_id").fetchall(),
    )


def insert_group(conn: sqlite3.Connection, name: str, description: str | None,
                 created_at: float) -> int:
    """The new group's id (AUTOINCREMENT: never one a deleted group had)."""
    cursor = conn.execute("INSERT INTO access_groups (name, description, created_at)"
                          " VALUES (?,?,?)", (name, description, created_at))
    assert cursor.lastrowid is not None
    return int(cursor.lastrowid)


def delete_group(conn: sqlite3.Connection, group_id: int) -> None:
    """The group, its memberships and its links to workflows."""
    conn.execute("DELETE FROM user_group_membership WHERE group_id=?", (group_id,))
    conn.execute("DELETE FROM workflow_access_group WHERE group_id=?", (group_id,))
    conn.execute("DELETE FROM access_groups WHERE id=?", (group_id,))


def set_member(conn: sqlite3.Connection, group_id: int, user_name: str, role: str,
               created_at: float) -> None:
    """Add a member, or set the role of one (who keeps the time they were first added)."""
    conn.execute("INSERT INTO user_group_membership (group_id, user_name, role, created_at)"
                 " VALUES (?,?,?,?) ON CONFLICT (group_id, user_name) DO UPDATE"
                 " SET role=excluded.role", (group_id, user_name, role, created_at))


def remove_member(conn: sqlite3.Connection, group_id: int, user_name: str) -> None:
    conn.execute("DELETE FROM user_group_membership WHERE group_id=? AND user_name=?",
                 (group_id, user_name))


def link_workflow(conn: sqlite3.Connection, workflow_id: int, group_id: int,
                  created_at: float) -> bool:
    """Share a workflow with a group; False (and nothing written) if the workflow is no longer
    in the database: a delete committed since the request was checked must not leave a link
    to nothing behind."""
    cursor = conn.execute(
        "INSERT OR IGNORE INTO workflow_access_group (workflow_id, group_id, created_at)"
        " SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM workflows WHERE id=?)"
        " AND EXISTS (SELECT 1 FROM access_groups WHERE id=?)",
        (workflow_id, group_id, created_at, workflow_id, group_id))
    if cursor.rowcount:
        return True
    return conn.execute("SELECT 1 FROM workflow_access_group WHERE workflow_id=? AND"
                        " group_id=?", (workflow_id, group_id)).fetchone() is not None


def unlink_workflow(conn: sqlite3.Connection, workflow_id: int, group_id: int) -> None:
    conn.execute("DELETE FROM workflow_access_group WHERE workflow_id=? AND group_id=?",
                 (workflow_id, group_id))
