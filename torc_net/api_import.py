"""Moving a workflow between servers (``torc-trio workflows export`` / ``import``): the
workflow's definitions that no other route shows, and the import of results of earlier runs.

A workflow is imported as a new spec (``POST /workflows``: new ids, fresh statuses); what a
spec cannot carry is its history, the results. They come in here, keyed by the new job ids.

Why the run moves on: the engine accepts a result for the workflow's current run only, and the
store keeps one row per (job, run, attempt). A result imported for the current run (or a later
one) would take the key of the result the next real run of that job reports, and that row
would be dropped (``INSERT OR IGNORE``) while the engine counted it. So when the imported runs
reach the current one, the workflow's run becomes the one after the latest imported run, as
if it had been reset that many times; that is refused (409) while jobs are pending or running,
whose runners report for the run they were given.
"""

from __future__ import annotations

from typing import Any

from torc_core import events as ev
from torc_core.status import JobStatus

from .api_workflows import Endpoint
from .ids import IdRanges
from .service import Call, Service
from .store import queries as q
from .store.schema import RESULT_INFO_NAMES
from .validate import ApiError, not_found

_STATUS_CODES = {"completed": int(JobStatus.COMPLETED), "failed": int(JobStatus.FAILED),
                 "terminated": int(JobStatus.TERMINATED)}


async def workflow_definitions(s: Service, c: Call) -> dict[str, Any]:
    """What the workflow was created with besides its jobs, files and user data, as stored:
    settings, resource requirements, failure handlers, Slurm schedulers and actions."""
    info = s.workflow(c.path["workflow_id"], c.who).spec_info
    return {"settings": dict(info.get("settings", {})),
            "resource_requirements": list(info.get("resource_requirements", [])),
            "failure_handlers": list(info.get("failure_handlers", [])),
            "slurm_schedulers": list(info.get("slurm_schedulers", [])),
            "actions": list(info.get("actions", []))}


def _checked(wf_id: int, ids: IdRanges, items: list[dict[str, Any]]) -> None:
    """Every result names a job of the workflow, and its status agrees with its return code
    (as the engine would have recorded it)."""
    for k, item in enumerate(items):
        job_id = item["job_id"]
        if job_id not in ids:
            raise not_found(f"results[{k}].job_id: no job {job_id} in workflow {wf_id}")
        status, code = item["status"], item["return_code"]
        if (status == "completed") != (code == 0) and status != "terminated":
            raise ApiError(422, "unprocessable",
                           f"results[{k}]: status {status} with return code {code} (completed "
                           "means return code 0, failed a non-zero one)")


async def import_results(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    items: list[dict[str, Any]] = c.body["results"]
    _checked(wf.id, wf.job_ids, items)
    if not items:
        return {"imported": 0, "duplicates": 0, "run_id": wf.engine.run_id}
    runs = [item["run_id"] for item in items]
    recorded: set[tuple[int, int, int]] = set()
    for lo, hi in wf.job_ids.spans():
        recorded |= await s.store.read(q.result_keys, lo, hi, min(runs), max(runs))
    # One engine input moves the run past the imported ones (refused, 409, while jobs are
    # pending or running); the rows ride on its change. No await from here to the change.
    target = max(wf.engine.run_id, max(runs) + 1)
    _, change, recorded_run = s.drive(wf, ev.AdvanceRun(run_id=target), s.clock())
    next_run = recorded_run.progress.run_id
    seen = set(recorded)
    rows: list[tuple[Any, ...]] = []
    duplicates = 0
    for item in items:
        key = (item["job_id"], item["run_id"], item["attempt"])
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        rows.append((wf.id, *key, item["return_code"], _STATUS_CODES[item["status"]],
                     item["exec_time_s"], item["completed_at"], None,
                     *(item.get(k) for k in RESULT_INFO_NAMES)))
    change.results.extend(rows)
    change.event(wf.id, s.clock(), "results_imported",
                 {"results": len(rows), "duplicates": duplicates, "run_id": next_run})
    await change.wait()
    return {"imported": len(rows), "duplicates": duplicates, "run_id": next_run}


ENDPOINTS: dict[str, Endpoint] = {
    "workflow_definitions": workflow_definitions,
    "import_results": import_results,
}
