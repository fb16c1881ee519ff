"""``map``: a function over many inputs, one job per call.

``map(func, params)`` builds a workflow of function jobs (:meth:`Workflow.add_call`), one per
item of ``params`` (keyword arguments), runs it (:func:`torc_trio.running.run_async`: here,
on a standalone server or the one named), and returns the return values in input order. With
``postprocess=g``, one more job runs ``g(values)`` once every call has completed, and map
returns ``MapResult(values, postprocessed)``.

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
from .builder import CallHandle, Workflow, _spec_error

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

    def describe(self) -> str:
        who = "postprocess" if self.index is None else f"params[{self.index}] {self.params!r}"
        code = "" if self.return_code is None else f", exit code {self.return_code}"
        head = f"{who} (job {self.job_name}, id {self.job_id}): {self.status}{code}"
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
                    python: str | None = None, poll_interval: float = 1.0) -> list[Any]: ...


@overload
async def map_async(func: Callable[..., Any], params: Iterable[Mapping[str, Any]], *,
                    postprocess: Callable[[list[Any]], Any], jobs: int | None = None,
                    resource_requirements: Mapping[str, Any] | None = None,
                    url: str | None = None, name: str | None = None,
                    output_dir: str | os.PathLike[str] = "torc_output",
                    python: str | None = None, poll_interval: float = 1.0) -> MapResult: ...


async def map_async(func: Callable[..., Any], params: Iterable[Mapping[str, Any]], *,
                    postprocess: Callable[[list[Any]], Any] | None = None,
                    jobs: int | None = None,
                    resource_requirements: Mapping[str, Any] | None = None,
                    url: str | None = None, name: str | None = None,
                    output_dir: str | os.PathLike[str] = "torc_output",
                    python: str | None = None, poll_interval: float = 1.0) \
        -> list[Any] | MapResult:
    """:func:`map` for Trio code."""
    items = list(params)
    if not items and postprocess is None:
        return []
    wf, calls, post = build_map(func, items, postprocess=postprocess, name=name,
                                resource_requirements=resource_requirements, python=python)
    from .running import run_async

    failures: list[CallFailure] = []

    async def inspect(client: TorcClient, workflow_id: int) -> None:
        failures.extend(await _failures(client, workflow_id, items, calls, post))

    result: RunResult = await run_async(wf, jobs=jobs, url=url, output_dir=output_dir,
                                        poll_interval=poll_interval, after_run=inspect)
    values = [result.values.get(c.name) for c in calls]
    if failures:
        raise MapError(func.__name__, failures, values, len(calls), result.workflow_id)
    if post is None:
        return values
    return MapResult(values, result.values.get(post.name))


@overload
def map(func: Callable[..., Any], params: Iterable[Mapping[str, Any]], *,
        postprocess: None = None, jobs: int | None = None,
        resource_requirements: Mapping[str, Any] | None = None, url: str | None = None,
        name: str | None = None, output_dir: str | os.PathLike[str] = "torc_output",
        python: str | None = None, poll_interval: float = 1.0) -> list[Any]: ...


@overload
def map(func: Callable[..., Any], params: Iterable[Mapping[str, Any]], *,
        postprocess: Callable[[list[Any]], Any], jobs: int | None = None,
        resource_requirements: Mapping[str, Any] | None = None, url: str | None = None,
        name: str | None = None, output_dir: str | os.PathLike[str] = "torc_output",
        python: str | None = None, poll_interval: float = 1.0) -> MapResult: ...


def map(func: Callable[..., Any], params: Iterable[Mapping[str, Any]], *,
        postprocess: Callable[[list[Any]], Any] | None = None, jobs: int | None = None,
        resource_requirements: Mapping[str, Any] | None = None, url: str | None = None,
        name: str | None = None, output_dir: str | os.PathLike[str] = "torc_output",
        python: str | None = None, poll_interval: float = 1.0) -> list[Any] | MapResult:
    """Run ``func(**p)`` for each ``p`` in ``params``, one job each; the return values in
    input order (with ``postprocess``: a :class:`MapResult`).

    ``jobs=N`` runs N calls at a time (else as many as this machine's CPUs hold, one CPU a
    call unless ``resource_requirements`` says otherwise: ``{"num_cpus": 2, "memory":
    "4g", "runtime": "PT10M"}``). ``url`` (or ``$TORC_API_URL``): run on that server (the
    calls still run here); else on a standalone one in ``output_dir``. ``name``: the
    workflow's and the jobs' prefix (default: the function's name). ``python``: the
    interpreter the jobs run (default: this one). Raises :class:`MapError` when calls fail.
    """
    return blocking("map", partial(
        map_async, func, params, postprocess=postprocess, jobs=jobs,
        resource_requirements=resource_requirements, url=url, name=name,
        output_dir=output_dir, python=python, poll_interval=poll_interval))


def build_map(func: Callable[..., Any], items: list[Mapping[str, Any]], *,
              postprocess: Callable[[list[Any]], Any] | None = None, name: str | None = None,
              resource_requirements: Mapping[str, Any] | None = None,
              python: str | None = None) -> tuple[Workflow, list[CallHandle], CallHandle | None]:
    """The workflow ``map`` runs: a function job per item (``<name>_<index>``) and, with
    ``postprocess``, ``<name>_postprocess`` on all their values (the spec is checked when it
    runs, before any server)."""
    base = name or str(getattr(func, "__name__", "map"))
    wf = Workflow(base)
    wf._function(func, "map")  # refuse a function a runner cannot import, first
    if postprocess is not None:
        wf._function(postprocess, "map postprocess")
    for k, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise _spec_error([f"map params[{k}]: expected a mapping of keyword arguments "
                               f"(e.g. {{'x': 1}}), got {type(item).__name__} {item!r}"])
    rr = None if resource_requirements is None else \
        wf.add_resource_requirements(base, **resource_requirements)
    width = len(str(max(len(items) - 1, 0)))
    calls = [wf.add_call(func, item, name=f"{base}_{k:0{width}d}", python=python,
                         resource_requirements=rr)
             for k, item in enumerate(items)]
    post = None if postprocess is None else wf.add_call(
        postprocess, name=f"{base}_postprocess", results_of=calls, python=python,
        resource_requirements=rr)
    return wf, calls, post


async def _failures(client: TorcClient, workflow_id: int, items: list[Mapping[str, Any]],
                    calls: list[CallHandle], post: CallHandle | None) -> list[CallFailure]:
    """The calls (and the postprocess job) that did not complete, with their stderr ends."""
    from .running import job_output

    index = {c.name: k for k, c in enumerate(calls)}
    if post is not None:
        index[post.name] = -1
    bad: list[tuple[int, dict[str, Any]]] = []
    async for job in client.iter_jobs(workflow_id):
        k = index.get(str(job["name"]))
        if k is not None and job["status"] != "completed":
            bad.append((k, job))
    if not bad:
        return []
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
    out = []
    for n, (k, job) in enumerate(bad):
        jid = int(job["id"])
        tail = None
        if n < MAX_TAILS:
            tail = (await job_output(client, workflow_id, jid)).get("stderr")
        out.append(CallFailure(None if k < 0 else k, {} if k < 0 else dict(items[k]),
                               str(job["name"]), jid, str(job["status"]),
                               codes.get(jid, ((0, 0), None))[1], tail))
    return out
