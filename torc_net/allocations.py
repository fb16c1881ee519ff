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

from collections.abc import Mapping
from typing import Any

from torc_core.status import JobStatus

from .api_workflows import Endpoint
from .service import Call, Service
from .state import WorkflowState
from .store import queries as q
from .validate import not_found, page_args

TRIGGERS = ("on_workflow_start", "on_jobs_ready", "on_jobs_complete", "on_workflow_complete")
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


async def _claimed_set(s: Service, wf: WorkflowState) -> set[int]:
    """Indices of the workflow's claimed actions (loaded once, then kept with its state)."""
    if wf.actions_claimed is None:
        claimed = await s.store.read(q.actions_claimed, wf.id)
        if wf.actions_claimed is None:
            wf.actions_claimed = claimed
    return wf.actions_claimed


def action_object(index: int, action: Mapping[str, Any]) -> dict[str, Any]:
    return {"index": index, **action}


async def claim_actions(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    cn = c.body["compute_node_id"]
    types = c.body["action_types"]
    triggers = c.body["trigger_types"]
    scheduler_types = c.body["scheduler_types"]
    actions: list[dict[str, Any]] = list(wf.spec_info.get("actions", []))
    claimed = await _claimed_set(s, wf)
    # From here to the change: no await, so two claimants cannot both win an action.
    change = s.change(wf)  # (checks that wf was not reloaded while we read)
    won: list[dict[str, Any]] = []
    now = s.clock()
    for index, action in enumerate(actions):
        if index in claimed:
            continue
        if types is not None and action.get("action_type") not in types:
            continue
        if triggers is not None and action.get("trigger_type") not in triggers:
            continue
        if (scheduler_types is not None and action.get("action_type") == "schedule_nodes"
                and action.get("scheduler_type", "slurm") not in scheduler_types):
            continue
        if not action_is_due(wf, action):
            continue
        claimed.add(index)
        won.append(action_object(index, action))
        change.actions_claimed.append((wf.id, index, now, cn))
        change.event(wf.id, now, "action_claimed", {"index": index, "compute_node_id": cn,
                                                    "trigger_type": action.get("trigger_type")})
    pending = len(actions) - len(claimed)
    await change.wait()
    return {"actions": won, "pending": pending, "total": len(actions)}


async def list_actions(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    claimed = await _claimed_set(s, wf)
    items = [
        {**action_object(i, a), "claimed": i in claimed, "due": action_is_due(wf, a)}
        for i, a in enumerate(wf.spec_info.get("actions", []))
    ]
    return {"items": items, "total": len(items), "offset": 0, "limit": len(items)}


_ALLOCATION_KEYS = ("id", "workflow_id", "slurm_job_id", "scheduler", "action_index",
                    "submitted_at", "state")


def _allocation_json(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(_ALLOCATION_KEYS, row, strict=True))


async def record_allocation(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    b = c.body
    now = s.clock()
    change = s.change(wf)
    row = (s.store.allocate("allocation"), wf.id, b["slurm_job_id"], b["scheduler"],
           b["action_index"], now, "submitted")
    change.allocations.append(row)
    change.event(wf.id, now, "allocation_submitted", {"slurm_job_id": b["slurm_job_id"],
                                                      "scheduler": b["scheduler"]})
    await change.wait()
    return _allocation_json(row)


async def list_allocations(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    offset, limit = page_args(c.args, 1000)
    total, rows = await s.store.read(q.allocations_page, wf.id, limit, offset)
    return {"items": [_allocation_json(r) for r in rows], "total": total, "offset": offset,
            "limit": limit}


async def set_allocation_state(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    alloc_id = c.path["allocation_id"]
    state = c.body["state"]
    row = await s.store.read(q.allocation, wf.id, alloc_id)
    if row is None:
        raise not_found(f"no allocation {alloc_id} in workflow {wf.id}")
    change = s.change(wf)
    change.allocation_states[alloc_id] = state
    await change.wait()
    return _allocation_json((*row[:6], state))


ENDPOINTS: dict[str, Endpoint] = {
    "claim_actions": claim_actions,
    "list_actions": list_actions,
    "record_allocation": record_allocation,
    "list_allocations": list_allocations,
    "set_allocation_state": set_allocation_state,
}
