"""The runner protocol: register, heartbeat, claim (with results and held jobs), start,
complete, deactivate; and the list of compute nodes.

The hot path: a busy runner's cycle is one claim that carries the results of the jobs that
ended since the last one and the ids of every job it still holds. The whole body is checked
(schema, then job ids) before the one :class:`~torc_core.events.ClaimJobs` input.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from operator import itemgetter
from typing import Any

from torc_core import events as ev

from .api_workflows import Endpoint
from .columns import pick
from .service import Call, Service
from .state import ComputeNode, WorkflowState, counts_object
from .store import Change
from .store import queries as q
from .store.schema import RESULT_INFO_NAMES
from .validate import ApiError, not_found, page_args


def _runner(s: Service, c: Call) -> tuple[WorkflowState, ComputeNode]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    return wf, s.compute_node(wf, c.path["compute_node_id"])


def _results(wf: WorkflowState, items: Sequence[dict[str, Any]]) -> tuple[ev.JobResult, ...]:
    """Results of a complete or claim body (items already checked by the schema): job ids
    become indices; an id outside the workflow is a located 404."""
    index = wf.job_ids.index
    JobResult = ev.JobResult
    out = []
    for k, item in enumerate(items):
        job = index(item["job_id"])
        if job < 0:
            raise not_found(f"results[{k}].job_id: no job {item['job_id']} in workflow {wf.id}")
        out.append(JobResult(job, item["attempt"], item["run_id"], item["return_code"],
                             item.get("status") == "terminated", item["exec_time_s"],
                             item["recovery_failed"], _info(item)))
    return tuple(out)


#: A result item's stored fields beyond its outcome (the schema fills in every one), as
#: :attr:`torc_core.events.JobResult.info` carries them to :func:`torc_net.effects.record`.
_info = itemgetter(*RESULT_INFO_NAMES)


def _job_indices(wf: WorkflowState, ids: Sequence[int], where: str) -> list[int]:
    index = wf.job_ids.index
    out = []
    for k, job_id in enumerate(ids):
        idx = index(job_id)
        if idx < 0:
            raise not_found(f"{where}[{k}]: no job {job_id} in workflow {wf.id}")
        out.append(idx)
    return out


async def register_compute_node(s: Service, c: Call) -> dict[str, Any]:
    """Register; with ``claim``, claim the first jobs in the same round trip (checked in
    full before anything is registered), and with ``workflow``, answer the workflow too: a
    runner's first contact is then one request."""
    wf = s.workflow(c.path["workflow_id"], c.who)
    b = c.body
    claim = None if b["claim"] is None else _claim_input(s, wf, 0, b["claim"])
    now = s.clock()
    cn_id = s.store.allocate("compute_node")
    s.compute_nodes[cn_id] = ComputeNode(cn_id, wf.id, True, b["slurm_job_id"])
    _, change, rec = s.drive(wf, ev.Heartbeat(runner_id=cn_id, lease_s=s.lease_s), now)
    change.compute_nodes.append((cn_id, wf.id, b["hostname"], b["pid"], b["num_cpus"],
                                 b["memory_bytes"], b["num_gpus"], b["num_nodes"],
                                 b["slurm_job_id"], now, rec.earliest_lease))
    change.event(wf.id, now, "compute_node_registered",
                 {"compute_node_id": cn_id, "hostname": b["hostname"],
                  "slurm_job_id": b["slurm_job_id"]})
    answer: dict[str, Any] = {"id": cn_id, "lease_s": s.lease_s}
    if b["workflow"]:
        answer["workflow"] = wf.to_json()
    if claim is not None:
        claimed, change = _claim(s, wf, replace(claim, runner_id=cn_id), now)
        answer["claim"] = claimed  # its change comes after the registration's: both stored
    await change.wait()
    return answer


async def list_compute_nodes(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    offset, limit = page_args(c.args, 1000)
    total, rows = await s.store.read(q.compute_nodes_page, wf.id, limit, offset)
    engine, nodes = wf.engine, s.compute_nodes
    items = [
        {"id": r[0], "hostname": r[1], "pid": r[2], "num_cpus": r[3], "memory_bytes": r[4],
         "num_gpus": r[5], "num_nodes": r[6], "slurm_job_id": r[7], "created_at": r[8],
         "is_active": nodes[r[0]].active if r[0] in nodes else bool(r[9]),
         "lease_deadline": engine.lease_deadline(r[0]),
         "jobs": sorted(wf.job_ids.ids(engine.runner_jobs(r[0])))}
        for r in rows
    ]
    return {"items": items, "total": total, "offset": offset, "limit": limit}


async def heartbeat(s: Service, c: Call) -> dict[str, Any]:
    wf, cn = _runner(s, c)
    if not cn.active:
        return {"is_complete": wf.engine.is_complete, "is_canceled": wf.engine.canceled,
                "active": False}
    _, change, rec = s.drive(wf, ev.Heartbeat(runner_id=cn.id, lease_s=s.lease_s), s.clock())
    await change.wait()
    p = rec.progress
    return {"is_complete": p.is_complete, "is_canceled": p.canceled, "active": True}


def _claim_input(s: Service, wf: WorkflowState, cn_id: int,
                 b: dict[str, Any]) -> ev.ClaimJobs:
    """A claim body (schema-checked) as the engine's input, its names and ids checked."""
    sched_name = b["scheduler"]
    sched: int | None = None
    if sched_name is not None:
        if sched_name not in wf.scheduler_names:
            raise ApiError(422, "unknown scheduler",
                           f"scheduler: no scheduler named {sched_name!r} in workflow {wf.id}")
        sched = wf.scheduler_names[sched_name]
    results = _results(wf, b["results"])
    held_ids = b["held_job_ids"]
    held = None if held_ids is None else frozenset(_job_indices(wf, held_ids, "held_job_ids"))
    return ev.ClaimJobs(
        runner_id=cn_id, limit=b["limit"], lease_s=s.lease_s, cpus=b["cpus"],
        memory=b["memory_bytes"], gpus=b["gpus"], nodes=b["nodes"], walltime_s=b["walltime_s"],
        scheduler=sched, results=results, held=held)


async def claim_jobs(s: Service, c: Call) -> dict[str, Any]:
    wf, cn = _runner(s, c)
    b = c.body
    claim = _claim_input(s, wf, cn.id, b)
    seq = b["claim_seq"]
    if seq is not None and cn.last_claim is not None and cn.last_claim[0] == seq:
        _, replay, replay_change = cn.last_claim
        await replay_change.wait()
        return replay
    now = s.clock()
    if not cn.active:
        if claim.results:  # late results still count; the claim itself cannot be served
            _, change, _ = s.drive(wf, ev.CompleteJobs(runner_id=cn.id, results=claim.results),
                                   now)
            await change.wait()
        raise ApiError(409, "conflict", f"compute node {cn.id} was deactivated")
    response, change = _claim(s, wf, claim, now)
    if seq is not None:
        cn.last_claim = (seq, response, change)
    await change.wait()
    return response


def _claim(s: Service, wf: WorkflowState, claim: ev.ClaimJobs, now: float) \
        -> tuple[dict[str, Any], Change]:
    """Drive ``claim`` and build its answer (no awaits: the caller waits for the change)."""
    effects, change, rec = s.drive(wf, claim, now)
    claimed: Sequence[ev.ClaimedJob] = ()
    reported: dict[str, int] = {}
    for eff in effects:
        if isinstance(eff, ev.JobsClaimed):
            claimed = eff.jobs
        elif isinstance(eff, ev.ResultsRecorded) and claim.results:
            reported = {"accepted": len(eff.accepted), "duplicates": len(eff.duplicates)}
    p = rec.progress
    response = {"jobs": _claimed_jobs(wf, claimed), "is_complete": p.is_complete,
                "is_canceled": p.canceled, "counts": counts_object(p.counts), **reported}
    return response, change


def _claimed_jobs(wf: WorkflowState, claimed: Sequence[ev.ClaimedJob]) -> list[dict[str, Any]]:
    """What a runner needs of each claimed job, read column by column (a claim answer is a
    few hundred jobs; each column read in one pass)."""
    if not claimed:
        return []
    model = wf.model
    jobs = [cj.job for cj in claimed]
    handler_names = {k: h["name"] for k, h in enumerate(wf.spec_info.get("failure_handlers", ()))}
    term, cpus, gpus, memory, runtime, handler = (wf.supports_termination, model.cpus,
                                                  model.gpus, model.memory, model.runtime,
                                                  model.handler)
    stdio_of: dict[str | None, Any] = {None: None}  # parsed once per distinct text
    return [
        {"id": job_id, "name": name, "command": command, "invocation_script": script,
         "attempt": cj.attempt, "run_id": cj.run_id,
         "failure_handler": handler_names.get(handler[j]),
         "supports_termination": bool(term[j]), "num_cpus": cpus[j], "num_gpus": gpus[j],
         "memory_bytes": memory[j], "runtime_s": runtime[j],
         "stdio": stdio_of[stdio] if stdio in stdio_of
         else stdio_of.setdefault(stdio, json.loads(stdio))}
        for cj, j, job_id, name, command, script, stdio in zip(
            claimed, jobs, wf.job_ids.ids(jobs), pick(wf.names, jobs), pick(wf.commands, jobs),
            pick(wf.invocation_scripts, jobs), pick(wf.stdio, jobs), strict=True)
    ]


async def start_jobs(s: Service, c: Call) -> dict[str, Any]:
    wf, cn = _runner(s, c)
    jobs = _job_indices(wf, c.body["job_ids"], "job_ids")
    effects, change, _ = s.drive(wf, ev.StartJobs(runner_id=cn.id, jobs=tuple(jobs)),
                                 s.clock())
    started = sum(len(e.jobs) for e in effects if isinstance(e, ev.JobsStarted))
    await change.wait()
    return {"started": started}


async def complete_jobs(s: Service, c: Call) -> dict[str, Any]:
    wf, cn = _runner(s, c)
    results = _results(wf, c.body["results"])
    effects, change, rec = s.drive(wf, ev.CompleteJobs(runner_id=cn.id, results=results),
                                   s.clock())
    recorded = next(e for e in effects if isinstance(e, ev.ResultsRecorded))
    p = rec.progress
    response = {"accepted": len(recorded.accepted), "duplicates": len(recorded.duplicates),
                "is_complete": p.is_complete, "is_canceled": p.canceled}
    await change.wait()
    return response


async def deactivate_compute_node(s: Service, c: Call) -> dict[str, Any]:
    wf, cn = _runner(s, c)
    cn.active = False
    effects, change, _ = s.drive(wf, ev.ReleaseRunner(runner_id=cn.id), s.clock())
    released = [wf.job_id(j) for e in effects if isinstance(e, ev.RunnerReleased)
                for j in e.jobs]
    change.leases[cn.id] = (None, 0)
    await change.wait()
    return {"released": released}


ENDPOINTS: dict[str, Endpoint] = {
    "register_compute_node": register_compute_node,
    "list_compute_nodes": list_compute_nodes,
    "heartbeat": heartbeat,
    "claim_jobs": claim_jobs,
    "start_jobs": start_jobs,
    "complete_jobs": complete_jobs,
    "deactivate_compute_node": deactivate_compute_node,
}
