"""``map``: a function over many inputs, one job per call.

``map(func, params)`` builds a workflow of function jobs (:meth:`Workflow.add_call`), one per
item of ``params`` (keyword arguments), runs it (:func:`torc_trio.running.run_async`: here,
on a standalone server or the one named), and returns the return values in input order. With
``postprocess=g``, one more job runs ``g(values)`` once every call has completed, and map
returns ``MapResult(values, postprocessed)``.

With ``chunk_size=k`` each job makes k calls in order, in one process (``<name>_<first>-
<last>``): for calls too small to be worth a Python start each (BENCHMARKS.md, "map"); a
failing call does not stop the others of its job, whose value is then ``{"values": [...],
"failed": [{"index", "error"}]}``.

Everything is checked before anything is created: both functions importable by a runner
(:mod:`torc_trio.functions`), every item a mapping of JSON values that binds to ``func``'s
signature. When calls fail, :class:`MapError` names each one (its index, its parameters, its
job) with the end of its stderr (the traceback), and carries the values of those that
completed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple, overload

from ._trio import blocking
from .builder import RESULT_SUFFIX, CallHandle, Workflow, _spec_error

if TYPE_CHECKING:
    from torc_net.client import TorcClient

    from .running import RunResult

#: MapError quotes at most this many lines of each failed call's stderr...
TAIL_LINES = 12
#: ... of at most this many failed calls (the rest are counted; ``failures`` has them all,
#: their tails fetched for the first ``MAX_TAILS``).
SHOWN_FAILURES = 10
MAX_TAILS = 100


class MapResult(NamedTuple):
    """``map(..., postprocess=g)``: the calls' values in input order, and ``g(values)``."""

    values: list[Any]
    postprocessed: Any


@dataclass(frozen=True, slots=True)
class CallFailure:
    """One call that did not complete: its index in ``params`` (None for the postprocess
    job), parameters, job, final status, exit code and the end of its stderr."""

    index: int | None
    params: dict[str, Any]
    job_name: str
    job_id: int
    status: str
    return_code: int | None
    stderr_tail: str | None
    #: the call's error in one line, when its job made several calls (chunk_size)
    error: str | None = None

    def describe(self) -> str:
        who = "postprocess" if self.index is None else f"params[{self.index}] {self.params!r}"
        code = "" if self.return_code is None else f", exit code {self.return_code}"
        head = f"{who} (job {self.job_name}, id {self.job_id}): {self.status}{code}"
        if self.error:
            head += f": {self.error}"
        tail = (self.stderr_tail or "").rstrip().splitlines()[-TAIL_LINES:]
        return head + "".join(f"\n      {line}" for line in tail)


class MapError(Exception):
    """Calls of a ``map`` did not complete. ``failures``: each one (:class:`CallFailure`);
    ``values``: every call's value in input order (None for the failed ones);
    ``workflow_id``: the workflow, to inspect or rerun (``torc-trio reset-status ID
    --failed-only``)."""

    def __init__(self, func_name: str, failures: list[CallFailure], values: list[Any],
                 total: int, workflow_id: int) -> None:
        self.failures = failures
        self.values = values
        self.workflow_id = workflow_id
        calls = [f for f in failures if f.index is not None]
        what = (f"{len(calls)} of {total} calls did not complete" if calls
                else "the postprocess job did not complete")
        head = f"map({func_name}): {what} (workflow {workflow_id})"
        lines = [f"  {f.describe()}" for f in failures[:SHOWN_FAILURES]]
        if len(failures) > SHOWN_FAILURES:
            lines.append(f"  ... and {len(failures) - SHOWN_FAILURES} more (MapError.failures)")
        super().__init__(head + ":\n" + "\n".join(lines))


@overload
async def map_async(func: Callable[..., Any], params: Iterable[Mapping[str, Any]], *,
                    postprocess: None = None, jobs: int | None = None,
                    resource_requirements: Mapping[str, Any] | None = None,
                    url: str | None = None, name: str | None = None,
                    output_dir: str | os.PathLike[str] = "torc_output",
                    python: str | None = None, poll_interval: float = 1.0,
                    chunk_size: int = 1) -> list[Any]: ...


@overload
async def map_async(func: Callable[..., Any], params: Iterable[Mapping[str, Any]], *,
                    postprocess: Callable[[list[Any]], Any], jobs: int | None = None,
                    resource_requirements: Mapping[str, Any] | None = None,
                    url: str | None = None, name: str | None = None,
                    output_dir: str | os.PathLike[str] = "torc_output",
                    python: str | None = None, poll_interval: float = 1.0,
                    chunk_size: int = 1) -> MapResult: ...


async def map_async(func: Callable[..., Any], params: Iterable[Mapping[str, Any]], *,
                    postprocess: Callable[[list[Any]], Any] | None = None,
                    jobs: int | None = None,
                    resource_requirements: Mapping[str, Any] | None = None,
                    url: str | None = None, name: str | None = None,
                    output_dir: str | os.PathLike[str] = "torc_output",
                    python: str | None = None, poll_interval: float = 1.0,
                    chunk_size: int = 1) \
        -> list[Any] | MapResult:
    """:func:`map` for Trio code."""
    items = list(params)
    plan = build_map(func, items, postprocess=postprocess, name=name,
                     resource_requirements=resource_requirements, python=python,
                     chunk_size=chunk_size)
    if not items and postprocess is None:
        return []  # nothing to run (the function was checked all the same)
    from .running import run_async

    failures: list[CallFailure] = []
    kept: dict[str, Any] = {}  # what failed chunks stored: their calls that completed

    async def inspect(client: TorcClient, workflow_id: int) -> None:
        found, reports = await _failures(client, workflow_id, items, plan)
        failures.extend(found)
        kept.update(reports)

    result: RunResult = await run_async(plan.workflow, jobs=jobs, url=url,
                                        output_dir=output_dir, poll_interval=poll_interval,
                                        after_run=inspect)
    values = plan.values({**kept, **result.values})
    if failures:
        raise MapError(func.__name__, failures, values, len(items), result.workflow_id)
    if plan.post is None:
        return values
    return MapResult(values, result.values.get(plan.post.name))


@overload
def map(func: Callable[..., Any], params: Iterable[Mapping[str, Any]], *,
        postprocess: None = None, jobs: int | None = None,
        resource_requirements: Mapping[str, Any] | None = None, url: str | None = None,
        name: str | None = None, output_dir: str | os.PathLike[str] = "torc_output",
        python: str | None = None, poll_interval: float = 1.0,
                    chunk_size: int = 1) -> list[Any]: ...


@overload
def map(func: Callable[..., Any], params: Iterable[Mapping[str, Any]], *,
        postprocess: Callable[[list[Any]], Any], jobs: int | None = None,
        resource_requirements: Mapping[str, Any] | None = None, url: str | None = None,
        name: str | None = None, output_dir: str | os.PathLike[str] = "torc_output",
        python: str | None = None, poll_interval: float = 1.0,
                    chunk_size: int = 1) -> MapResult: ...


def map(func: Callable[..., Any], params: Iterable[Mapping[str, Any]], *,
        postprocess: Callable[[list[Any]], Any] | None = None, jobs: int | None = None,
        resource_requirements: Mapping[str, Any] | None = None, url: str | None = None,
        name: str | None = None, output_dir: str | os.PathLike[str] = "torc_output",
        python: str | None = None, poll_interval: float = 1.0,
                    chunk_size: int = 1) -> list[Any] | MapResult:
    """Run ``func(**p)`` for each ``p`` in ``params``, one job each; the return values in
    input order (with ``postprocess``: a :class:`MapResult`).

    ``jobs=N`` runs N calls at a time (else as many as this machine's CPUs hold, one CPU a
    call unless ``resource_requirements`` says otherwise: ``{"num_cpus": 2, "memory":
    "4g", "runtime": "PT10M"}``). ``url`` (or ``$TORC_API_URL``): run on that server (the
    calls still run here); else on a standalone one in ``output_dir``. ``name``: the
    workflow's and the jobs' prefix (default: the function's name). ``python``: the
    interpreter the jobs run (default: this one). ``chunk_size=k``: k calls a job, in order
    (for calls of milliseconds: a job costs a Python start). Raises :class:`MapError` when
    calls fail.
    """
    return blocking("map", partial(
        map_async, func, params, postprocess=postprocess, jobs=jobs,
        resource_requirements=resource_requirements, url=url, name=name,
        output_dir=output_dir, python=python, poll_interval=poll_interval,
        chunk_size=chunk_size))


@dataclass(frozen=True, slots=True)
class MapPlan:
    """The workflow ``map`` runs, and which of its jobs makes which calls."""

    workflow: Workflow
    #: the function jobs, each with the index of its first call (chunks: several calls)
    jobs: list[tuple[CallHandle, int]]
    chunk_size: int
    post: CallHandle | None
    #: calls in all
    total: int

    def values(self, stored: Mapping[str, Any]) -> list[Any]:
        """The calls' values in input order from the jobs' (None for a call that did not
        complete); ``stored``: job name -> value of the completed jobs."""
        out: list[Any] = []
        for job, first in self.jobs:
            if self.chunk_size == 1:
                out.append(stored.get(job.name))
                continue
            batch = stored.get(job.name) or {}
            out.extend(batch.get("values") or [None] * self.calls_of(first))
        return out

    def calls_of(self, first: int) -> int:
        """How many calls the job whose first call is ``first`` makes."""
        return min(self.chunk_size, self.total - first)


def build_map(func: Callable[..., Any], items: list[Mapping[str, Any]], *,
              postprocess: Callable[[list[Any]], Any] | None = None, name: str | None = None,
              resource_requirements: Mapping[str, Any] | None = None,
              python: str | None = None, chunk_size: int = 1) -> MapPlan:
    """The workflow ``map`` runs: a function job per item (``<name>_<index>``), or per
    ``chunk_size`` items (``<name>_<first>-<last>``), and with ``postprocess``
    ``<name>_postprocess`` on all their values (the spec is checked when it runs, before
    any server)."""
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"map: chunk_size={chunk_size!r}: expected a whole number, 1 or more")
    base = name or str(getattr(func, "__name__", "map"))
    wf = Workflow(base)
    target = wf._function(func, "map").target  # refuse what a runner cannot import, first
    wf.settings["metadata"] = {"map": target, "calls": len(items), "chunk_size": chunk_size}
    if postprocess is not None:
        wf._function(postprocess, "map postprocess")
    for k, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise _spec_error([f"map params[{k}]: expected a mapping of keyword arguments "
                               f"(e.g. {{'x': 1}}), got {type(item).__name__} {item!r}"])
    rr = None if resource_requirements is None else \
        wf.add_resource_requirements(base, **resource_requirements)
    width = len(str(max(len(items) - 1, 0)))
    jobs: list[tuple[CallHandle, int]] = []
    for first in range(0, len(items), chunk_size):
        chunk = [dict(item) for item in items[first:first + chunk_size]]
        if chunk_size == 1:
            job_name = f"{base}_{first:0{width}d}"
        else:
            job_name = f"{base}_{first:0{width}d}-{first + len(chunk) - 1:0{width}d}"
        jobs.append((wf._add_function_job(func, chunk, job_name, batch=chunk_size > 1,
                                          python=python, resource_requirements=rr), first))
    post = None if postprocess is None else wf._add_function_job(
        postprocess, [{}], f"{base}_postprocess", results_of=[j for j, _ in jobs],
        flatten_results=chunk_size > 1, python=python, resource_requirements=rr)
    return MapPlan(wf, jobs, chunk_size, post, len(items))


async def _failures(client: TorcClient, workflow_id: int, items: list[Mapping[str, Any]],
                    plan: MapPlan) -> tuple[list[CallFailure], dict[str, Any]]:
    """The calls (and the postprocess job) that did not complete, with their stderr ends.
    A chunk's job that failed names its failed calls in its stored value; one that stored
    none (killed, or its import failed) failed every call it had. Also: job name -> the
    value each failed chunk stored."""
    from .running import iter_user_data, job_output

    first_of = {job.name: first for job, first in plan.jobs}
    if plan.post is not None:
        first_of[plan.post.name] = -1
    bad: list[tuple[int, dict[str, Any]]] = []
    async for job in client.iter_jobs(workflow_id):
        k = first_of.get(str(job["name"]))
        if k is not None and job["status"] != "completed":
            bad.append((k, job))
    if not bad:
        return [], {}
    codes: dict[int, tuple[tuple[int, int], int | None]] = {}
    async for r in client.iter_results(workflow_id):
        key = (int(r.get("run_id", 0)), int(r.get("attempt", 0)))
        seen = codes.get(int(r["job_id"]))
        if seen is None or key >= seen[0]:
            codes[int(r["job_id"])] = (key, r.get("return_code"))
    bad.sort(key=lambda kj: (kj[0] < 0, kj[0]))  # calls in input order, postprocess last
    # a postprocess canceled because calls failed says nothing new
    if any(k >= 0 for k, _ in bad):
        bad = [(k, j) for k, j in bad if k >= 0]
    reports: dict[str, Any] = {}
    if plan.chunk_size > 1:
        wanted = {str(j["name"]) + RESULT_SUFFIX for _, j in bad}
        async for item in iter_user_data(client, workflow_id):
            if item["name"] in wanted:
                reports[str(item["name"])[: -len(RESULT_SUFFIX)]] = item.get("data")
    out = []
    for n, (first, job) in enumerate(bad):
        jid, name = int(job["id"]), str(job["name"])
        tail = None
        if n < MAX_TAILS:
            tail = (await job_output(client, workflow_id, jid)).get("stderr")
        common = (name, jid, str(job["status"]), codes.get(jid, ((0, 0), None))[1], tail)
        if first < 0:
            out.append(CallFailure(None, {}, *common))
        elif plan.chunk_size == 1:
            out.append(CallFailure(first, dict(items[first]), *common))
        else:
            report = reports.get(name)
            errors = ({int(f["index"]): str(f.get("error")) for f in report.get("failed") or []}
                      if isinstance(report, dict)
                      else dict.fromkeys(range(plan.calls_of(first))))
            for k, error in sorted(errors.items()):
                out.append(CallFailure(first + k, dict(items[first + k]), *common, error=error))
    return out, {k: v for k, v in reports.items() if isinstance(v, dict)}
