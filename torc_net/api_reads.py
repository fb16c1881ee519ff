"""Endpoints on a workflow's parts: jobs, files, user data, results, events.

Mostly reads (the engine for statuses, the store for the rest); the few changes here
(disable a job, record file times, store user data) follow the same rules as every other:
checks first, one change, the answer once it is on disk.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from torc_core import events as ev
from torc_core.checks import shown
from torc_core.status import JobStatus

from . import jobs_query
from .api_workflows import Endpoint, file_mtimes, set_mtimes
from .ids import IdRanges
from .service import Call, Service
from .state import STATUS_LABELS, WorkflowState
from .store import queries as q
from .store.schema import RESULT_LISTED_NAMES
from .validate import bad_request, not_found, page_args, query_bool, query_int

_STATUS_CODES = {s.label: int(s) for s in JobStatus}


def _status_filter(args: Any) -> int | None:
    text = args.get("status")
    if text is None:
        return None
    code = _STATUS_CODES.get(text)
    if code is None:
        raise bad_request(f"query parameter status: expected one of "
                          f"{', '.join(_STATUS_CODES)}, got {shown(text)}")
    return code


# ---------------------------------------------------------------------------------------------
# Jobs


def _jobs_json(wf: WorkflowState, indices: Sequence[int], rows: dict[int, Any],
               links: dict[str, dict[int, list[int]]]) -> list[dict[str, Any]]:
    """Job objects from their rows and the engine's columns (read only: safe off the event
    loop, a snapshot as of about now)."""
    job_ids = wf.job_ids
    engine = wf.engine
    statuses = engine.statuses
    out = []
    for idx in indices:
        job_id = job_ids.id(idx)
        r = rows.get(job_id)
        if r is None:  # deleted meanwhile
            continue
        holder = engine.holder(idx)
        out.append({
            "id": job_id, "workflow_id": wf.id, "name": r[1], "command": r[2],
            "invocation_script": r[3], "status": STATUS_LABELS[statuses[idx]],
            # the run of its current attempt: a job still running since a selective reset
            # keeps the run it was claimed in (its report carries that one)
            "attempt": engine.attempt(idx), "run_id": engine.job_run(idx),
            "compute_node_id": holder if holder >= 0 else None,
            "num_cpus": r[4], "num_gpus": r[5], "num_nodes": r[6], "memory_bytes": r[7],
            "runtime_s": r[8], "resource_requirements": r[9], "scheduler": r[10],
            "failure_handler": r[11], "supports_termination": bool(r[12]),
            "cancel_on_blocking_job_failure": bool(r[13]), "priority": r[14],
            "stdio": None if r[15] is None else json.loads(r[15]),
            "depends_on": job_ids.ids(wf.upstream_jobs(idx)),
            "iteration": job_ids.iteration(idx),
            "input_files": links["job_input_files"].get(job_id, []),
            "output_files": links["job_output_files"].get(job_id, []),
            "input_user_data": links["job_input_user_data"].get(job_id, []),
            "output_user_data": links["job_output_user_data"].get(job_id, []),
        })
    return out


async def _job_objects(s: Service, wf: WorkflowState, indices: Sequence[int]) \
        -> list[dict[str, Any]]:
    rows, links = await s.store.read(q.job_rows, wf.job_ids.ids(indices))
    return await s.offload(len(indices), _jobs_json, wf, indices, rows, links)


async def list_jobs(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    offset, limit = page_args(c.args, 1000)
    total, page = await jobs_query.select_page(s, wf, c.args, _status_filter(c.args), offset,
                                               limit)
    items = await _job_objects(s, wf, page)
    return {"items": items, "total": total, "offset": offset, "limit": limit}


async def get_job(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    job_id = c.path["job_id"]
    items = await _job_objects(s, wf, [wf.job_index(job_id)])
    if not items:
        raise not_found(f"no job {job_id}")
    return items[0]


async def disable_job(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    idx = wf.job_index(c.path["job_id"])
    _, change, _ = s.drive(wf, ev.DisableJobs(jobs=(idx,)), s.clock())
    await change.wait()
    return await get_job(s, c)


# ---------------------------------------------------------------------------------------------
# Files and user data


def _file(r: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": r[0], "name": r[1], "path": r[2], "st_mtime": r[3]}


def _user_data(r: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": r[0], "name": r[1], "data": None if r[2] is None else json.loads(r[2]),
            "is_ephemeral": bool(r[3])}


#: (rows between two ids, row -> JSON, the workflow's ids of the kind, noun) per kind
_KINDS: dict[str, tuple[Callable[..., list[tuple[Any, ...]]],
                        Callable[[tuple[Any, ...]], dict[str, Any]],
                        Callable[[WorkflowState], IdRanges], str]] = {
    "files": (q.files_between, _file, lambda wf: wf.file_ids, "file"),
    "user_data": (q.user_data_between, _user_data, lambda wf: wf.user_data_ids, "user_data"),
}


def _index(wf: WorkflowState, kind: str, item_id: int) -> int:
    idx = _KINDS[kind][2](wf).index(item_id)
    if idx < 0:
        raise not_found(f"no {_KINDS[kind][3]} {item_id} in workflow {wf.id}")
    return idx


async def _page(s: Service, c: Call, kind: str) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    read, to_json, ids_of, _ = _KINDS[kind]
    ids = ids_of(wf)
    offset, limit = page_args(c.args, 1000)
    rows = []
    for lo, hi in ids.spans(offset, offset + limit):
        rows += await s.store.read(read, lo, hi)
    return {"items": [to_json(r) for r in rows], "total": len(ids), "offset": offset,
            "limit": limit}


async def _one(s: Service, c: Call, kind: str, key: str) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    item_id = c.path[key]
    _index(wf, kind, item_id)
    read, to_json, _, noun = _KINDS[kind]
    rows = await s.store.read(read, item_id, item_id)
    if not rows:
        raise not_found(f"no {noun} {item_id} in workflow {wf.id}")
    return to_json(rows[0])


async def list_files(s: Service, c: Call) -> dict[str, Any]:
    return await _page(s, c, "files")


async def get_file(s: Service, c: Call) -> dict[str, Any]:
    return await _one(s, c, "files", "file_id")


async def record_mtimes(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    given = file_mtimes(wf, c.body["mtimes"], "mtimes")
    change = s.change(wf)
    set_mtimes(wf, given, change)
    await change.wait()
    return {"recorded": len(given)}


async def list_user_data(s: Service, c: Call) -> dict[str, Any]:
    return await _page(s, c, "user_data")


async def get_user_data(s: Service, c: Call) -> dict[str, Any]:
    return await _one(s, c, "user_data", "user_data_id")


async def put_user_data(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    ud_id = c.path["user_data_id"]
    idx = _index(wf, "user_data", ud_id)
    change = s.change(wf)
    change.user_data[ud_id] = json.dumps(c.body["data"])
    change.user_data_changed[ud_id] = 1
    wf.changed_user_data.add(idx)
    await change.wait()
    return await get_user_data(s, c)


# ---------------------------------------------------------------------------------------------
# Results and events


async def list_results(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    offset, limit = page_args(c.args, 1000)
    run_id = query_int(c.args, "run_id", 0) or None
    job_id = query_int(c.args, "job_id", 0) or None
    total, rows = await s.store.read(q.results_page, wf.id, _status_filter(c.args), limit,
                                     offset, run_id=run_id, job_id=job_id,
                                     failed=query_bool(c.args, "failed"))
    index, names = wf.job_ids.index, wf.names

    def name(job_id: int) -> str | None:
        k = index(job_id)
        return names[k] if k >= 0 else None

    def convert() -> list[dict[str, Any]]:
        return [
            {"id": r[0], "job_id": r[1], "job_name": name(r[1]), "run_id": r[2],
             "attempt": r[3], "return_code": r[4],
             "status": STATUS_LABELS[r[5]], "exec_time_s": r[6], "completed_at": r[7],
             "compute_node_id": r[8], "slurm_job_id": r[9],
             **dict(zip(RESULT_LISTED_NAMES, r[10:], strict=True))}
            for r in rows
        ]

    items = await s.offload(len(rows), convert)
    return {"items": items, "total": total, "offset": offset, "limit": limit}


async def list_events(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    after = query_int(c.args, "after", 0)
    offset, limit = page_args(c.args, 1000)
    total, rows = await s.store.read(q.events_page, wf.id, after, limit, offset)
    def convert() -> list[dict[str, Any]]:
        return [{"id": r[0], "ts": r[1], "kind": r[2],
                 "data": None if r[3] is None else json.loads(r[3])} for r in rows]

    items = await s.offload(len(rows), convert)
    return {"items": items, "total": total, "offset": offset, "limit": limit}


ENDPOINTS: dict[str, Endpoint] = {
    "list_jobs": list_jobs,
    "get_job": get_job,
    "disable_job": disable_job,
    "list_files": list_files,
    "get_file": get_file,
    "record_mtimes": record_mtimes,
    "list_user_data": list_user_data,
    "get_user_data": get_user_data,
    "put_user_data": put_user_data,
    "list_results": list_results,
    "list_events": list_events,
}
