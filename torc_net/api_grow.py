"""Dynamic jobs: ``POST /workflows/{id}/jobs`` adds jobs to a live workflow.

Theory of operation
-------------------
A running job (an orchestrator) adds its next iteration: a spec fragment — ``jobs``, and the
``files``, ``user_data`` and ``resource_requirements`` they name — blocked on ``after`` (the
job itself, which ``torc_trio.current_job()`` and ``torc-trio jobs add`` send from inside a
job). The fragment's jobs name each other, its own files and user data, and the workflow's
failure handlers, Slurm schedulers and resource requirements; it is parsed and compiled by the
same code as a whole spec (in a worker thread: a fragment may expand parameters), so its
mistakes are the same located errors.

Bounds: the workflow's ``max_iterations`` (a spawn makes iteration ``1 +`` its ``after`` job's;
the spec's own jobs are iteration 0) and the server's ``--max-jobs-per-workflow`` (the
fragment's expansion is bounded by what is left before it is expanded).

After the parse the workflow is looked up again (it may have been deleted, reloaded or grown
meanwhile) and every check is made again; from there to the change there is no ``await``: the
engine grows (:mod:`torc_core.grow`), the workflow's columns and id ranges grow, and the new
rows ride on the change with the status rows of the same input, acknowledged once committed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import trio

from torc_core import events as ev
from torc_core.errors import SpecError
from torc_core.graph import compile_workflow
from torc_core.model import WorkflowModel
from torc_core.parse import parse_spec
from torc_core.spec import DEFAULT_MAX_ITERATIONS, WorkflowSpec

from .api_workflows import Endpoint
from .columns import LINK_ATTRS, JobColumns, grown
from .effects import workflow_message
from .service import Call, Service
from .state import WorkflowState, edge_code
from .store import NewRows
from .validate import ApiError

#: What a fragment may hold.
FRAGMENT_KEYS = ("jobs", "files", "user_data", "resource_requirements")


def _clean(item: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A stored definition as a spec entry again (JSON lists, no nulls, no derived keys)."""
    return {k: v for k, v in json.loads(json.dumps(item, default=str)).items()
            if v is not None and k not in drop}


def fragment_doc(wf: WorkflowState, fragment: dict[str, Any]) -> dict[str, Any]:
    """A whole spec document around ``fragment``: the workflow's definitions first, so that
    the fragment's jobs get the workflow's failure-handler and scheduler indices."""
    unknown = sorted(set(fragment) - set(FRAGMENT_KEYS))
    if unknown:
        raise ApiError(422, "invalid spec",
                       [f"spec: {key[:60]!r}: not in a fragment (it holds "
                        f"{', '.join(FRAGMENT_KEYS)})" for key in unknown])
    jobs = fragment.get("jobs")
    if not isinstance(jobs, list) or not jobs:
        raise ApiError(422, "invalid spec", ["spec.jobs: give a list of at least one job"])
    info = wf.spec_info
    own_rrs = fragment.get("resource_requirements") or []
    if not isinstance(own_rrs, list):
        raise ApiError(422, "invalid spec", ["spec.resource_requirements: expected a list"])
    mine = {r.get("name") for r in own_rrs if isinstance(r, dict)}
    rrs = [_clean(r, ("memory_bytes", "runtime_s")) for r in info.get("resource_requirements", ())
           if r.get("name") not in mine]
    return {
        "name": wf.name,
        "jobs": jobs,
        "files": fragment.get("files") or [],
        "user_data": fragment.get("user_data") or [],
        "resource_requirements": [*rrs, *own_rrs],
        "failure_handlers": [_clean(h) for h in info.get("failure_handlers", ())],
        "slurm_schedulers": [_clean(x) for x in info.get("slurm_schedulers", ())],
    }


def _checks(s: Service, wf: WorkflowState, after_id: int | None) -> tuple[int | None, int]:
    """The ``after`` job's index and the new jobs' iteration (refusals as the API says)."""
    after = wf.job_index(after_id, "after") if after_id is not None else None
    iteration = 1 + (wf.job_ids.iteration(after) if after is not None else 0)
    limit = int(wf.spec_info.get("settings", {}).get("max_iterations",
                                                     DEFAULT_MAX_ITERATIONS))
    if iteration > limit:
        raise ApiError(409, "conflict",
                       f"max_iterations: these jobs would be iteration {iteration} (job "
                       f"{after_id} is iteration {iteration - 1}); workflow {wf.id} allows "
                       f"{limit} (its spec's max_iterations)")
    if wf.engine.canceled:
        raise ApiError(409, "conflict", f"workflow {wf.id} is canceled: no jobs can be added")
    if wf.num_jobs >= s.max_jobs:
        raise ApiError(409, "conflict", f"workflow {wf.id} has {wf.num_jobs} jobs, the most "
                       f"this server allows (serve --max-jobs-per-workflow {s.max_jobs})")
    return after, iteration


async def add_jobs(s: Service, c: Call) -> dict[str, Any]:
    wf_id = c.path["workflow_id"]
    wf = s.workflow(wf_id, c.who)
    after_id: int | None = c.body["after"]
    _checks(s, wf, after_id)
    doc = fragment_doc(wf, c.body["spec"])
    room = s.max_jobs - wf.num_jobs

    def build() -> tuple[WorkflowSpec, WorkflowModel, JobColumns]:
        spec = parse_spec(doc, max_jobs=room)
        model = compile_workflow(spec)
        cols = JobColumns(spec.jobs, [f.name for f in spec.files],
                          [u.name for u in spec.user_data])
        return spec, model, cols

    try:
        spec, part, cols = await trio.to_thread.run_sync(build, limiter=s.parse_limiter,
                                                         abandon_on_cancel=True)
    except SpecError as exc:
        errors = list(exc.errors) or [str(exc)]
        if any("limit" in e for e in errors):
            errors.append(f"workflow {wf.id} has {wf.num_jobs} jobs of the {s.max_jobs} this "
                          f"server allows (serve --max-jobs-per-workflow): room for {room} "
                          "more jobs")
        raise ApiError(422, "invalid spec", errors) from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ApiError(422, "invalid spec", [f"{type(exc).__name__}: {exc}"]) from None
    # Again, as of now: no await from here to the change.
    wf = s.workflow(wf_id, c.who)
    after, iteration = _checks(s, wf, after_id)
    k = part.num_jobs
    if wf.num_jobs + k > s.max_jobs:
        raise ApiError(409, "conflict",
                       f"workflow {wf.id} would have {wf.num_jobs + k} jobs; this server allows "
                       f"{s.max_jobs} (serve --max-jobs-per-workflow)")
    return await _grow(s, wf, spec, part, cols, after, iteration)


async def _grow(s: Service, wf: WorkflowState, spec: WorkflowSpec, part: WorkflowModel,
                cols: JobColumns, after: int | None, iteration: int) -> dict[str, Any]:
    store, now = s.store, s.clock()
    n, k, nb = wf.num_jobs, part.num_jobs, wf.model.num_barriers
    nf, nu = len(spec.files), len(spec.user_data)
    first_file, first_ud = wf.num_files, wf.num_user_data
    ids = {"job": store.allocate("job", k), "file": store.allocate("file", nf),
           "user_data": store.allocate("user_data", nu)}
    event = ev.AddJobs(part=part, after=() if after is None else (after,),
                       file_offset=first_file, user_data_offset=first_ud)

    def extend_columns(_: list[ev.Effect]) -> None:
        wf.job_ids.add(ids["job"], k, iteration)
        wf.file_ids.add(ids["file"], nf, iteration)
        wf.user_data_ids.add(ids["user_data"], nu, iteration)
        wf.names = grown(wf.names, cols.names)  # type: ignore[assignment]
        wf.commands = grown(wf.commands, cols.commands)  # type: ignore[assignment]
        wf.invocation_scripts = grown(wf.invocation_scripts, cols.invocation_scripts)
        wf.stdio = grown(wf.stdio, cols.stdio)
        wf.supports_termination += cols.supports_termination
        wf.file_mtimes.extend([None] * nf)

    _, change, rec = s.drive(wf, event, now, accepted=extend_columns)
    change.grown.append(_rows(wf, spec, part, cols, ids, n, nb, iteration,
                              [] if after is None else [after]))
    job_ids = wf.job_ids.ids(range(n, n + k))
    after_id = None if after is None else wf.job_id(after)
    change.event(wf.id, now, "jobs_added", {"jobs": k, "first_job_id": job_ids[0],
                                            "after": after_id, "iteration": iteration})
    # The new jobs' first statuses came as job_status messages from "uninitialized", which no
    # count held: the counts after the growth set every listener straight.
    change.publish(wf.id, wf.user, [workflow_message(wf, "jobs_added", now),
                                    s.counts_message(wf)])
    status = wf.status_after(rec.progress)
    await change.wait()
    return {
        "workflow_id": wf.id, "iteration": iteration, "after": after_id,
        "jobs": [{"id": i, "name": name} for i, name in zip(job_ids, cols.names, strict=True)],
        "files": [{"id": ids["file"] + j, "name": f.name} for j, f in enumerate(spec.files)],
        "user_data": [{"id": ids["user_data"] + j, "name": u.name}
                      for j, u in enumerate(spec.user_data)],
        "status": status,
    }


def _rows(wf: WorkflowState, spec: WorkflowSpec, part: WorkflowModel, cols: JobColumns,
          ids: dict[str, int], n: int, nb: int, iteration: int, after: list[int]) -> NewRows:
    """The rows of the new jobs, files and user data (their statuses as the engine left
    them), their edges and barriers as the database names them, and the new ranges."""
    k, model, statuses = part.num_jobs, wf.model, wf.engine.statuses
    total = model.num_jobs
    first_job = ids["job"]

    def node(y: int) -> int:  # a part node -> its node in the grown workflow
        return n + y if y < k else total + nb + (y - k)

    edges = [(edge_code(node(u), total), edge_code(node(part.down_idx[e]), total))
             for u in range(part.num_nodes) for e in range(part.down_ptr[u], part.down_ptr[u + 1])]
    edges += [(a, n + y) for a in after for y in range(k)]
    jobs = [
        (first_job + y, wf.id, cols.names[y], cols.commands[y], cols.invocation_scripts[y],
         statuses[n + y], model.cpus[n + y], model.gpus[n + y], model.nodes[n + y],
         model.memory[n + y], model.runtime[n + y], cols.resource_requirements[y],
         cols.schedulers[y], model.scheduler[n + y], cols.failure_handlers[y],
         model.handler[n + y], cols.supports_termination[y], cols.cancel_on_blocking[y],
         model.priority[n + y] if model.priority is not None else 0, cols.stdio[y])
        for y in range(k)
    ]
    links: dict[str, Iterable[tuple[int, int]]] = {}
    for table, _, kind in LINK_ATTRS:
        ref_first = ids["file"] if kind == "files" else ids["user_data"]
        links[table] = [(first_job + y, ref_first + ref) for y, ref in cols.links[table]]
    ranges = [(kind, ids[kind], count, iteration) for kind, count in
              (("job", k), ("file", len(spec.files)), ("user_data", len(spec.user_data)))
              if count]
    return NewRows(
        workflow_id=wf.id, jobs=jobs,
        barriers=[(nb + b, statuses[total + nb + b]) for b in range(part.num_barriers)],
        edges=edges,
        files=[(ids["file"] + j, f.name, f.path) for j, f in enumerate(spec.files)],
        user_data=[(ids["user_data"] + j, u.name, json.dumps(u.data), int(u.is_ephemeral))
                   for j, u in enumerate(spec.user_data)],
        links=links, ranges=ranges,
        totals=(total, model.num_barriers, wf.num_files, wf.num_user_data),
    )


ENDPOINTS: dict[str, Endpoint] = {"add_jobs": add_jobs}
