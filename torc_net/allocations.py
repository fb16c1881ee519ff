"""Slurm allocations and workflow actions on the server side.

Allocations are records of what was submitted for a workflow (Slurm job id, scheduler, state),
so `cancel` can `scancel` them and `recover` can find the ones that disappeared.

Actions (``on_workflow_start``, ``on_jobs_ready``, ``on_jobs_complete``,
``on_workflow_complete``) are *claimed*: a client asks which actions are due, and each due action
is handed to exactly one claimant, however many runners ask at once. The check and the mark
happen with no await in between on the server's one Trio thread, so two claims cannot both win;
the mark is then committed before the answer goes out.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torc_core.status import JobStatus

from .state import Principal
from .validate import ApiError, bad_request, get_int, get_list, get_str, page_args

if TYPE_CHECKING:
    from .service import Service
    from .state import WorkflowState

TRIGGERS = ("on_workflow_start", "on_jobs_ready", "on_jobs_complete", "on_workflow_complete")
ALLOCATION_STATES = ("submitted", "pending", "running", "completed", "gone", "canceled")
_FINAL = frozenset(int(s) for s in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED,
                                    JobStatus.TERMINATED, JobStatus.DISABLED))
_UNREADY = frozenset(int(s) for s in (JobStatus.UNINITIALIZED, JobStatus.BLOCKED))


def _action_jobs(wf: WorkflowState, action: Mapping[str, Any]) -> list[int]:
    names = action.get("jobs") or []
    if not names:
        return list(range(wf.num_jobs))
    index = {name: i for i, name in enumerate(wf.names)}
    return [index[n] for n in names if n in index]


def action_is_due(wf: WorkflowState, action: Mapping[str, Any]) -> bool:
    """Whether an action's trigger has happened."""
    trigger = action.get("trigger_type")
    engine = wf.engine
    if trigger == "on_workflow_start":
        return True
    if trigger == "on_workflow_complete":
        return engine.is_complete and not engine.canceled
    statuses = engine.statuses
    jobs = _action_jobs(wf, action)
    if trigger == "on_jobs_ready":
        return all(statuses[j] not in _UNREADY for j in jobs)
    if trigger == "on_jobs_complete":
        return all(statuses[j] in _FINAL for j in jobs)
    return False


async def _claimed_set(service: Service, wf: WorkflowState) -> set[int]:
    """Indices of the workflow's claimed actions (loaded once, then kept in memory)."""
    cache = service.actions_claimed
    if wf.id not in cache:
        rows = await service.store.read(lambda conn: conn.execute(
            "SELECT action_index FROM actions_claimed WHERE workflow_id=?", (wf.id,)).fetchall())
        cache.setdefault(wf.id, {int(r[0]) for r in rows})
    return cache[wf.id]


def action_object(index: int, action: Mapping[str, Any]) -> dict[str, Any]:
    return {"index": index, **action}


async def claim_actions(service: Service, who: Principal, wf_id: int,
                        body: Mapping[str, Any]) -> dict[str, Any]:
    wf = service.workflow(wf_id, who)
    cn = get_int(body, "compute_node_id", "", default=None, nullable=True, minimum=0)
    types = get_list(body, "action_types", "") if "action_types" in body else None
    triggers = get_list(body, "trigger_types", "") if "trigger_types" in body else None
    actions: list[dict[str, Any]] = list(wf.spec_info.get("actions", []))
    claimed = await _claimed_set(service, wf)
    # From here to the batch append: no await, so two claimants cannot both win an action.
    won: list[dict[str, Any]] = []
    now = service.clock()
    batch = service.store.batch
    for index, action in enumerate(actions):
        if index in claimed:
            continue
        if types is not None and action.get("action_type") not in types:
            continue
        if triggers is not None and action.get("trigger_type") not in triggers:
            continue
        if not action_is_due(wf, action):
            continue
        claimed.add(index)
        won.append(action_object(index, action))
        batch.pre.append((
            "INSERT OR IGNORE INTO actions_claimed (workflow_id, action_index, claimed_at,"
            " compute_node_id) VALUES (?,?,?,?)", (wf.id, index, now, cn)))
        batch.event(wf.id, now, "action_claimed", {"index": index, "compute_node_id": cn,
                                                   "trigger_type": action.get("trigger_type")})
    pending = len(actions) - len(claimed)
    await batch.wait()
    return {"actions": won, "pending": pending, "total": len(actions)}


async def list_actions(service: Service, who: Principal, wf_id: int) -> dict[str, Any]:
    wf = service.workflow(wf_id, who)
    claimed = await _claimed_set(service, wf)
    items = [
        {**action_object(i, a), "claimed": i in claimed, "due": action_is_due(wf, a)}
        for i, a in enumerate(wf.spec_info.get("actions", []))
    ]
    return {"items": items, "total": len(items), "offset": 0, "limit": len(items)}


def _allocation_json(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = ("id", "workflow_id", "slurm_job_id", "scheduler", "action_index", "submitted_at",
            "state")
    return dict(zip(keys, row, strict=True))


async def record_allocation(service: Service, who: Principal, wf_id: int,
                            body: Mapping[str, Any]) -> dict[str, Any]:
    wf = service.workflow(wf_id, who)
    slurm = body.get("slurm_job_id")
    if not isinstance(slurm, str | int) or isinstance(slurm, bool) or str(slurm) == "":
        raise bad_request("slurm_job_id: expected a non-empty string")
    scheduler = get_str(body, "scheduler", "", default=None, nullable=True)
    action = get_int(body, "action_index", "", default=None, nullable=True, minimum=0)
    now = service.clock()

    def insert(conn: sqlite3.Connection) -> tuple[Any, ...]:
        cur = conn.execute(
            "INSERT INTO allocations (workflow_id, slurm_job_id, scheduler, action_index,"
            " submitted_at, state) VALUES (?,?,?,?,?, 'submitted')",
            (wf.id, str(slurm), scheduler, action, now))
        return (cur.lastrowid, wf.id, str(slurm), scheduler, action, now, "submitted")

    row = await service.store.write(insert)
    batch = service.store.batch
    batch.event(wf.id, now, "allocation_submitted", {"slurm_job_id": str(slurm),
                                                      "scheduler": scheduler})
    await batch.wait()
    return _allocation_json(row)


async def list_allocations(service: Service, who: Principal, wf_id: int,
                           args: Mapping[str, str]) -> dict[str, Any]:
    wf = service.workflow(wf_id, who)
    offset, limit = page_args(args, 1000)

    def fetch(conn: sqlite3.Connection) -> tuple[int, list[tuple[Any, ...]]]:
        total = conn.execute("SELECT count(*) FROM allocations WHERE workflow_id=?",
                             (wf.id,)).fetchone()[0]
        rows = conn.execute(
            "SELECT id, workflow_id, slurm_job_id, scheduler, action_index, submitted_at, state"
            " FROM allocations WHERE workflow_id=? ORDER BY id LIMIT ? OFFSET ?",
            (wf.id, limit, offset)).fetchall()
        return total, rows

    total, rows = await service.store.read(fetch)
    return {"items": [_allocation_json(r) for r in rows], "total": total, "offset": offset,
            "limit": limit}


async def set_allocation_state(service: Service, who: Principal, wf_id: int, alloc_id: int,
                               body: Mapping[str, Any]) -> dict[str, Any]:
    wf = service.workflow(wf_id, who)
    state = get_str(body, "state", "")
    if state not in ALLOCATION_STATES:
        raise bad_request(f"state: expected one of {', '.join(ALLOCATION_STATES)}, got {state!r}")

    def update(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
        conn.execute("UPDATE allocations SET state=? WHERE id=? AND workflow_id=?",
                     (state, alloc_id, wf.id))
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT id, workflow_id, slurm_job_id, scheduler, action_index, submitted_at, state"
            " FROM allocations WHERE id=? AND workflow_id=?", (alloc_id, wf.id)).fetchone()

    row = await service.store.write(update)
    if row is None:
        raise ApiError(404, "not found", f"no allocation {alloc_id} in workflow {wf.id}")
    return _allocation_json(row)
