"""Endpoint that rewrites what jobs ask for: ``POST /workflows/{id}/jobs/resources``.

Why the server does it (and not the spec): requirements are corrected after jobs ran
(``correct-resources`` from measured peaks, ``recover`` after an out-of-memory kill or a
timeout), for a workflow that already exists, while its other jobs may run. The engine must
pack claims by the new values at once, and the rows must say them after a restart; so the
change is one engine input (:class:`~torc_core.events.SetJobResources`), whose effects the
store writes as the jobs' rows and one ``job_resources`` event per job (old, new, reason).

As every endpoint: the whole request is checked (ids here, values and the jobs' statuses in
the engine) before anything changes; a refused request changes nothing.
"""

from __future__ import annotations

from typing import Any

from torc_core import events as ev

from .api_workflows import Endpoint, _named
from .service import Call, Service
from .validate import ApiError, not_found

_KEYS = ("num_cpus", "memory_bytes", "runtime_s")


async def set_job_resources(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    items: list[dict[str, Any]] = c.body["jobs"]
    index = wf.job_ids.index
    unknown = sorted({int(i["job_id"]) for i in items if index(int(i["job_id"])) < 0})
    if unknown:
        raise not_found(f"jobs: no job {_named(unknown)} in workflow {wf.id}")
    empty = [int(i["job_id"]) for i in items if all(i[k] is None for k in _KEYS)]
    if empty:
        raise ApiError(422, "unprocessable",
                       f"jobs: job {_named(empty)}: nothing to change (give num_cpus, "
                       "memory_bytes or runtime_s)")
    event = ev.SetJobResources(jobs=tuple(
        ev.JobResources(job=index(int(i["job_id"])), cpus=i["num_cpus"],
                        memory=i["memory_bytes"], runtime=i["runtime_s"]) for i in items))
    now = s.clock()
    effects, change, _ = s.drive(wf, event, now, reason=c.body["reason"])
    changed: list[dict[str, Any]] = []
    for eff in effects:
        if isinstance(eff, ev.ResourcesChanged):
            changed.extend(
                {"job_id": wf.job_id(job), "job_name": wf.names[job],
                 "old": dict(zip(_KEYS, old, strict=True)),
                 "new": dict(zip(_KEYS, new, strict=True))}
                for job, old, new in zip(eff.jobs, eff.old, eff.new, strict=True))
    await change.wait()
    return {"changed": changed, "unchanged": len(items) - len(changed)}


ENDPOINTS: dict[str, Endpoint] = {"set_job_resources": set_job_resources}
