"""Inside a running job: :func:`current_job`, and through it ``spawn_jobs`` (dynamic jobs).

The runner starts every job with ``TORC_API_URL``, ``TORC_WORKFLOW_ID`` and ``TORC_JOB_ID``
(and ``TORC_JOB_NAME``, ``TORC_ATTEMPT_ID``, ``TORC_RUN_ID``, ``TORC_OUTPUT_DIR``) in its
environment; credentials come from ``TORC_USERNAME``/``TORC_PASSWORD`` as everywhere. A job
adds jobs to its own workflow with ``current_job().spawn_jobs(fragment)``
(``POST /workflows/{id}/jobs`` with ``after`` = this job), so the new jobs wait for it as well
as for each other: an orchestrator job adds the next generation and a successor of itself,
and ends; the workflow goes on until one orchestrator spawns nothing. Each spawn along a
lineage is one iteration, bounded by the workflow's ``max_iterations`` (default 1000; the
server answers 409 past it) and by ``serve --max-jobs-per-workflow``.

The blocking methods use the small standard-library client (:mod:`torc_trio.jobapi`), so a
job that only reads its inputs, writes its outputs and spawns jobs starts quickly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .builder import Workflow
    from .client import SpawnResult
    from .jobapi import JobApi


class NotInJob(RuntimeError):
    """:func:`current_job` outside a torc-trio job (the ``TORC_*`` variables are not set)."""


@dataclass(frozen=True, slots=True)
class CurrentJob:
    """The job this process runs as."""

    url: str
    workflow_id: int
    job_id: int
    name: str
    attempt: int
    run_id: int
    output_dir: str | None

    def _api(self) -> JobApi:
        from .jobapi import JobApi

        return JobApi.from_env(self.url)

    def spawn_jobs(self, jobs: Workflow | Mapping[str, Any]) -> SpawnResult:
        """Add ``jobs`` (a :class:`~torc_trio.Workflow` of jobs, files, user data and
        resource requirements, or such a mapping) to this job's workflow, each new job
        waiting for this one (and for what it names in ``depends_on``, among its own).
        Raises :class:`~torc_core.SpecError` for an invalid fragment (the server's located
        errors; nothing is added), and :class:`torc_net.client.ApiError` with status 409
        once ``max_iterations`` is reached."""
        from .client import SpawnResult, fragment_of
        from .jobapi import path

        fragment = fragment_of(jobs)
        with self._api() as api:
            try:
                answer = api.post(path("workflows", self.workflow_id, "jobs"),
                                  {"spec": fragment, "after": self.job_id})
            except Exception as exc:
                raise _as_spec_error(exc) from None
        return SpawnResult.from_answer(answer)

    async def spawn_jobs_async(self, jobs: Workflow | Mapping[str, Any]) -> SpawnResult:
        """:meth:`spawn_jobs` for Trio code."""
        from .client import AsyncClient

        async with AsyncClient(self.url) as client:
            try:
                return await client.add_jobs(self.workflow_id, jobs, after=self.job_id)
            except Exception as exc:
                raise _as_spec_error(exc) from None

    def inputs(self) -> dict[str, Any]:
        """name -> data of this job's input user data (``input_user_data``)."""
        return {name: data for name, (_, data) in self._user_data("input_user_data").items()}

    def set_output(self, name: str, data: Any) -> None:
        """Store ``data`` (JSON) in this job's output user data item ``name``."""
        from .jobapi import path

        outputs = self._user_data("output_user_data")
        if name not in outputs:
            raise KeyError(f"job {self.name!r} has no output user data named {name!r} "
                           f"(it has: {', '.join(sorted(outputs)) or 'none'})")
        with self._api() as api:
            api.put(path("workflows", self.workflow_id, "user_data", outputs[name][0]),
                    {"data": data})

    def _user_data(self, key: str) -> dict[str, tuple[int, Any]]:
        from .call import _user_data
        from .jobapi import path

        with self._api() as api:
            job = api.get(path("workflows", self.workflow_id, "jobs", self.job_id))
            return _user_data(api, self.workflow_id, [int(i) for i in job.get(key) or []])


def _as_spec_error(exc: Exception) -> Exception:
    """The server's refusal of an invalid fragment (422 with located problems) as the
    SpecError a spec gets everywhere else; any other error as it is."""
    from torc_net.client import ApiError

    if isinstance(exc, ApiError) and exc.status in (400, 422) and isinstance(exc.detail, list):
        from torc_core.errors import SpecError

        return SpecError([str(d) for d in exc.detail])
    return exc


def current_job() -> CurrentJob:
    """The job this process runs as, from the runner's ``TORC_*`` variables;
    :class:`NotInJob` outside a job."""
    env = os.environ
    missing = [k for k in ("TORC_API_URL", "TORC_WORKFLOW_ID", "TORC_JOB_ID") if not env.get(k)]
    if missing:
        raise NotInJob(f"not inside a torc-trio job: {', '.join(missing)} not set (the runner "
                       "sets them for each job it starts)")
    try:
        return CurrentJob(url=env["TORC_API_URL"], workflow_id=int(env["TORC_WORKFLOW_ID"]),
                          job_id=int(env["TORC_JOB_ID"]), name=env.get("TORC_JOB_NAME", ""),
                          attempt=int(env.get("TORC_ATTEMPT_ID") or 1),
                          run_id=int(env.get("TORC_RUN_ID") or 1),
                          output_dir=env.get("TORC_OUTPUT_DIR"))
    except ValueError as exc:
        raise NotInJob(f"TORC_WORKFLOW_ID/TORC_JOB_ID are not ids: {exc}") from None
