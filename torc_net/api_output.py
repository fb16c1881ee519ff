"""What a job printed and what it used: the dashboard's job drawer, never a client's path.

The rule (issue 15): the server never opens a path a client names. A result's ``stdout_path``
and ``stderr_path`` are the runner's word, and a workflow's owner could name another user's
file in them; a server that read them would hand that file to whoever may see the workflow.
So the output comes with the result instead: runners send the end of each stream (at most
16 KiB, ``stdout_tail``/``stderr_tail``) with every failed or terminated job, and with every
job when the workflow's ``execution_config: {output_tails: all}`` asks (docs/api.md, job
output), and ``GET .../jobs/{id}/output`` answers those.

One exception, for one setting: a server started with ``ServerConfig.read_job_files`` (not a
flag of ``serve``; ``torc-trio dash`` on a local database sets it: same user, same machine,
the files are the user's own) reads a result's files itself when it carries no tail, and the
job's time-series samples from the runners' databases (``.../resource_samples``), both
bounded and in a worker thread. Without it ``resource_samples`` answers none.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import trio

from . import job_files
from .api_workflows import Endpoint
from .service import Call, Service
from .store import queries as q
from .validate import bad_request, not_found, query_int

#: A file read (dash mode) that takes longer is given up (a hung network file system must
#: not hold the request); its thread is abandoned.
FILE_READ_TIMEOUT_S = 10.0
#: Results whose recorded paths name the output directories searched for samples.
MAX_RESULTS_FOR_DIRS = 16
#: At most this many time-series databases are opened per request.
MAX_METRICS_FILES = 64
#: At most this many samples are answered (more are thinned evenly).
MAX_SAMPLES = 5000


async def _in_thread(s: Service, fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a worker thread; None if it takes longer than the bound."""
    with trio.move_on_after(FILE_READ_TIMEOUT_S):
        return await trio.to_thread.run_sync(partial(fn, *args), limiter=s.parse_limiter,
                                             abandon_on_cancel=True)
    return None


def _chosen(args: Any, key: str) -> int | None:
    """``?run_id=``/``?attempt=``: an id (>= 1), or None when not given."""
    if args.get(key) is None:
        return None
    value = query_int(args, key, 0)
    if value < 1:
        raise bad_request(f"query parameter {key}: must be >= 1, got {value}")
    return value


async def job_output(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    job_id = c.path["job_id"]
    wf.job_index(job_id)  # 404 for a job of another workflow
    run_id, attempt = _chosen(c.args, "run_id"), _chosen(c.args, "attempt")
    answer: dict[str, Any] = {"job_id": job_id, "attempt": None, "run_id": None, "stdout": None,
                              "stderr": None, "source": None,
                              "max_bytes": job_files.TAIL_BYTES}
    row = await s.store.read(q.job_output, job_id, run_id, attempt)
    if row is None:
        if run_id is not None or attempt is not None:
            chosen = " and ".join(f"{k} {v}" for k, v in (("run_id", run_id),
                                                           ("attempt", attempt)) if v)
            raise not_found(f"job {job_id} has no result with {chosen}")
        return answer  # not run yet
    answer["run_id"], answer["attempt"], out, err, out_path, err_path = row
    if out is not None or err is not None:
        answer.update(stdout=out, stderr=err, source="result")
    elif s.read_job_files and (out_path or err_path):
        tails = await _in_thread(s, job_files.read_tails, out_path, err_path)
        if tails is not None and (tails["stdout_tail"] is not None
                                  or tails["stderr_tail"] is not None):
            answer.update(stdout=tails["stdout_tail"], stderr=tails["stderr_tail"],
                          source="file")
    return answer


def _samples(paths: list[str], database: str | None, wf_id: int, job_id: int) \
        -> list[dict[str, Any]]:
    dirs = job_files.output_dirs(paths, database)
    files = job_files.metrics_files(dirs, wf_id, max_files=MAX_METRICS_FILES)
    return [x.as_json() for x in job_files.job_samples(files, job_id, max_samples=MAX_SAMPLES)]


async def job_resource_samples(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    job_id = c.path["job_id"]
    wf.job_index(job_id)
    if not s.read_job_files:
        return {"job_id": job_id, "samples": [], "source": None}
    paths = await s.store.read(q.job_output_paths, job_id, MAX_RESULTS_FOR_DIRS)
    database = None if s.store.in_memory else s.store.path
    samples = await _in_thread(s, _samples, paths, database, wf.id, job_id)
    return {"job_id": job_id, "samples": samples or [], "source": "file"}


ENDPOINTS: dict[str, Endpoint] = {
    "job_output": job_output,
    "job_resource_samples": job_resource_samples,
}
