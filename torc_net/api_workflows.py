"""Endpoints on whole workflows: create, list, get, status, delete, cancel, initialize,
reinitialize, reset status.

Each is ``async def name(service, call) -> answer`` (see :mod:`torc_net.service`): checks
first, then one engine input (or store change), then the answer once it is on disk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from torc_core import events as ev
from torc_core.errors import SpecError
from torc_core.graph import compile_workflow
from torc_core.model import WorkflowModel
from torc_core.parse import parse_spec
from torc_core.spec import WorkflowSpec

from .columns import JobColumns
from .effects import workflow_message
from .service import Answer, Call, Service
from .state import NewIds, WorkflowState, new_workflow
from .store import DeletedWorkflow
from .store import queries as q
from .validate import ApiError, bad_request, not_found, page_args

Endpoint = Callable[[Service, Call], Awaitable[Any]]


def _release_free_memory() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Why: a big workflow is parsed and compiled in a worker thread, which allocates from its own
    glibc arena. The ~200 MB of temporaries it frees there (at a million jobs) stay in that
    arena, unusable by the trio thread and the store's thread, so without a trim the server's
    RSS would carry them on top of the engine and the new rows (peak 550 MB instead of 450 MB).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _load_malloc_trim()


async def list_workflows(s: Service, c: Call) -> dict[str, Any]:
    offset, limit = page_args(c.args, 100)
    visible = s.visible(c.who)
    return {"items": [wf.to_json() for wf in visible[offset : offset + limit]],
            "total": len(visible), "offset": offset, "limit": limit}


async def get_workflow(s: Service, c: Call) -> dict[str, Any]:
    return s.workflow(c.path["workflow_id"], c.who).to_json()


async def workflow_status(s: Service, c: Call) -> dict[str, Any]:
    return s.workflow(c.path["workflow_id"], c.who).status_object()


async def create_workflow(s: Service, c: Call) -> dict[str, Any] | Answer:
    doc: dict[str, Any] = c.body["spec"]
    dry_run: bool = c.body["dry_run"]
    who = c.who
    asked_owner = doc.get("user")
    if who.mode != "open" and not who.authenticated and asked_owner not in (None, ""):
        raise ApiError(401, "unauthorized",
                       f"spec.user: only {asked_owner!r} may create a workflow owned by "
                       f"{asked_owner!r}: send their credentials",
                       {"WWW-Authenticate": 'Basic realm="torc"'})
    max_jobs = s.max_jobs

    def build() -> tuple[WorkflowSpec, WorkflowModel, JobColumns | None]:
        spec = parse_spec(doc, max_jobs=max_jobs)
        model = compile_workflow(spec)
        if dry_run:
            return spec, model, None
        cols = JobColumns(spec.jobs, [f.name for f in spec.files],
                          [u.name for u in spec.user_data])
        # Past this point the jobs live in `model` and `cols`: drop the JobSpec objects
        # (~200 MB at a million jobs) before the engine is built and the rows written.
        slim = dataclasses.replace(spec, jobs=())
        del spec
        if model.num_jobs >= 10_000:
            _release_free_memory()
        return slim, model, cols

    try:
        # Abandoned if cancelled (shutdown): pure computation, nothing to clean up, and a
        # 5,000,000-job spec must not hold a stopping server for the minute it takes.
        spec, model, cols = await trio.to_thread.run_sync(build, limiter=s.parse_limiter,
                                                          abandon_on_cancel=True)
    except SpecError as exc:
        raise ApiError(422, "invalid spec", list(exc.errors) or [str(exc)]) from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ApiError(422, "invalid spec", [f"{type(exc).__name__}: {exc}"]) from None
    counts = {"jobs": model.num_jobs, "dependencies": model.num_edges,
              "barriers": model.num_barriers, "files": len(spec.files),
              "user_data": len(spec.user_data), "warnings": list(spec.warnings)}
    if dry_run:
        return Answer(200, {"id": None, "name": spec.name, **counts})
    assert cols is not None
    owner = who.name if who.authenticated else spec.user if who.mode == "open" else None
    store = s.store
    ids = NewIds(workflow=store.allocate("workflow"),
                 job_base=store.allocate("job", max(1, model.num_jobs)),
                 file_base=store.allocate("file", len(spec.files)),
                 user_data_base=store.allocate("user_data", len(spec.user_data)))
    now = s.clock()
    # Initializing the engine is a pass over every job (a second at a million): not on the
    # event loop. Abandoned if cancelled, like the parse (nothing is shared yet).
    wf, rows = await trio.to_thread.run_sync(new_workflow, ids, spec, model, cols, owner, now,
                                             limiter=s.parse_limiter, abandon_on_cancel=True)
    await store.write(lambda conn: q.insert_workflow(conn, rows))
    if model.num_jobs >= 10_000:
        _release_free_memory()  # the row iterators' garbage, freed in the store's thread
    s.workflows[wf.id] = wf
    s.feed.publish_many(wf.id, wf.user, [workflow_message(wf, "initialized", now)])
    return {"id": wf.id, "name": wf.name, **counts}


async def delete_workflow(s: Service, c: Call) -> dict[str, Any]:
    wf_id = c.path["workflow_id"]
    wf = s.workflow(wf_id, c.who)
    change = s.change(wf)
    del s.workflows[wf_id]
    for cn_id in [cn.id for cn in s.compute_nodes.values() if cn.workflow_id == wf_id]:
        del s.compute_nodes[cn_id]
    change.deleted.append(DeletedWorkflow(
        wf_id, jobs=tuple(wf.job_ids.spans()), files=tuple(wf.file_ids.spans()),
        user_data=tuple(wf.user_data_ids.spans())))
    change.publish(wf_id, wf.user, [workflow_message(wf, "deleted", s.clock())])
    await change.wait()
    s.access.forget_workflow(wf_id)  # its links went with it (store.changes): now memory's
    s.feed.close_workflow(wf_id)
    return {"id": wf_id, "deleted": True}


async def _drive_and_answer(s: Service, c: Call, event: ev.EngineInput,
                            kind: str | None = None, data: Mapping[str, Any] | None = None,
                            messages: tuple[str, ...] = ()) -> dict[str, Any]:
    """One input, an event row and feed messages if asked, and the status it left."""
    wf = s.workflow(c.path["workflow_id"], c.who)
    now = s.clock()
    _, change, rec = s.drive(wf, event, now)
    if kind is not None:
        change.event(wf.id, now, kind, {**(data or {}), "run_id": rec.progress.run_id})
    change.publish(wf.id, wf.user, [workflow_message(wf, m, now) for m in messages])
    status = wf.status_after(rec.progress)
    await change.wait()
    return status


async def cancel_workflow(s: Service, c: Call) -> dict[str, Any]:
    return await _drive_and_answer(s, c, ev.CancelWorkflow())


async def initialize_workflow(s: Service, c: Call) -> dict[str, Any]:
    return await _drive_and_answer(s, c, ev.Initialize(), "initialized",
                                   messages=("initialized",))


#: Ids named in a refusal or kept in the reset event; the rest are counted.
_NAMED_IDS = 20


def _named(ids: list[int]) -> str:
    more = len(ids) - _NAMED_IDS
    return ", ".join(map(str, ids[:_NAMED_IDS])) + (f" and {more} more" if more > 0 else "")


def _job_indices(wf: WorkflowState, job_ids: list[int]) -> list[int]:
    """Sorted indices of the jobs named (404 naming those not in the workflow)."""
    index = wf.job_ids.index
    unknown = sorted({j for j in job_ids if index(j) < 0})
    if unknown:
        raise not_found(f"job_ids: no job {_named(unknown)} in workflow {wf.id}")
    return sorted({index(j) for j in job_ids})


async def reset_status(s: Service, c: Call) -> dict[str, Any]:
    """All jobs, the failed part (``failed_only``), or the chosen jobs and everything
    downstream of them (``job_ids``, while other jobs may run). The whole request is checked
    before the one engine input: a refused request changes nothing."""
    failed_only: bool = c.body["failed_only"]
    job_ids: list[int] | None = c.body["job_ids"]
    if job_ids is None:
        return await _drive_and_answer(s, c, ev.ResetStatus(failed_only=failed_only,
                                                            initialize=True),
                                       "reset", {"failed_only": failed_only}, ("reset",))
    wf = s.workflow(c.path["workflow_id"], c.who)
    if failed_only:
        raise ApiError(422, "unprocessable",
                       "failed_only and job_ids: choose the jobs one way (reset the failed "
                       "part, or the jobs named and their downstream), not both")
    if not job_ids:
        raise ApiError(422, "unprocessable", "job_ids: name at least one job")
    chosen = _job_indices(wf, job_ids)
    now = s.clock()
    effects, change, rec = s.drive(wf, ev.ResetStatus(jobs=tuple(chosen), initialize=True),
                                   now)
    reset = next(e for e in effects if isinstance(e, ev.JobsReset))
    change.event(wf.id, now, "reset", {
        "failed_only": False, "job_ids": wf.job_ids.ids(chosen[:_NAMED_IDS]),
        "num_chosen": len(chosen), "num_reset": len(reset.jobs), "run_id": reset.run_id})
    change.publish(wf.id, wf.user, [workflow_message(wf, "reset", now)])
    status = wf.status_after(rec.progress)
    await change.wait()
    return {**status, "jobs": wf.job_ids.ids(reset.jobs)}


async def confirm_failed(s: Service, c: Call) -> dict[str, Any]:
    """Held failures (pending_failed) become failures: all, or those of ``job_ids``."""
    job_ids: list[int] | None = c.body["job_ids"]
    jobs = None
    if job_ids is not None:
        wf = s.workflow(c.path["workflow_id"], c.who)
        jobs = tuple(_job_indices(wf, job_ids))
    return await _drive_and_answer(s, c, ev.ConfirmFailed(jobs=jobs), "confirmed_failed",
                                   {"job_ids": None if job_ids is None
                                    else sorted(set(job_ids))[:_NAMED_IDS]})


def file_mtimes(wf: WorkflowState, given: Mapping[str, float | None], where: str) \
        -> dict[int, float | None]:
    """File id -> mtime from a body's ``{"<file id>": mtime}`` (values checked by schema)."""
    out: dict[int, float | None] = {}
    for key, m in given.items():
        try:
            fid = int(key)
        except ValueError:
            raise bad_request(f"{where}: key {key[:40]!r} is not a file id") from None
        if fid not in wf.file_ids:
            raise not_found(f"{where}: no file {fid} in workflow {wf.id}")
        out[fid] = m
    return out


async def reinitialize_workflow(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    dry_run: bool = c.body["dry_run"]
    given = file_mtimes(wf, c.body["file_mtimes"], "file_mtimes")
    index = wf.file_ids.index
    changed = frozenset(index(fid) for fid, m in given.items()
                        if m != wf.file_mtimes[index(fid)])
    now = s.clock()
    effects, change, rec = s.drive(wf, ev.Reinitialize(
        changed_files=changed, changed_user_data=frozenset(wf.changed_user_data),
        dry_run=dry_run), now)
    plan = next(e for e in effects if isinstance(e, ev.ReinitializePlanned))
    jobs = wf.job_ids.ids(plan.jobs)
    if not dry_run:
        set_mtimes(wf, given, change)
        for idx in wf.changed_user_data:
            change.user_data_changed[wf.user_data_ids.id(idx)] = 0
        wf.changed_user_data.clear()
        change.event(wf.id, now, "reinitialized", {"jobs": len(jobs),
                                                   "run_id": rec.progress.run_id})
        change.publish(wf.id, wf.user, [workflow_message(wf, "reset", now),
                                        workflow_message(wf, "initialized", now)])
    await change.wait()
    return {"jobs": jobs, "dry_run": dry_run, "run_id": rec.progress.run_id}


def set_mtimes(wf: WorkflowState, given: Mapping[int, float | None], change: Any) -> None:
    for fid, m in given.items():
        wf.file_mtimes[wf.file_ids.index(fid)] = m
        change.file_mtimes[fid] = m


ENDPOINTS: dict[str, Endpoint] = {
    "list_workflows": list_workflows,
    "get_workflow": get_workflow,
    "workflow_status": workflow_status,
    "create_workflow": create_workflow,
    "delete_workflow": delete_workflow,
    "cancel_workflow": cancel_workflow,
    "initialize_workflow": initialize_workflow,
    "reinitialize_workflow": reinitialize_workflow,
    "reset_status": reset_status,
    "confirm_failed": confirm_failed,
}
