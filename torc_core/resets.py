"""The engine's workflow-wide inputs: cancel, reset (all, the failed part, chosen jobs),
reinitialize, disable, confirm held failures, advance the run.

Functions of an :class:`~torc_core.engine.Engine` (they work on its state, as friends, under the
same rules: every status change through ``_set``, everything checked before the first change);
kept apart because the engine's module is about one thing, a runner's cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from . import events as ev
from .codes import (
    _COMPLETED,
    _DISABLED,
    _OUTCOME,
    _PENDING,
    _PENDING_FAILED,
    _RUNNING,
    _TABLE,
)
from .errors import BadInput, IllegalTransition
from .reach import downstream_closure
from .status import Cause, JobStatus

if TYPE_CHECKING:
    from .engine import Engine


def cancel(engine: Engine) -> None:
    if engine.canceled:
        return
    engine.canceled = True
    engine._log_run = True
    status = engine._status
    for node in range(engine.model.num_nodes):
        if not _OUTCOME[status[node]]:
            engine._set(node, Cause.CANCEL)
            if node < engine.model.num_jobs:
                engine._drop_holder(node)
    engine._buckets.clear()
    engine._bucket_order.clear()
    engine._effects.append(ev.WorkflowCanceled())


def confirm_failed(engine: Engine, event: ev.ConfirmFailed) -> None:
    """Held failures become failures (Rule 2: all checked before any changes)."""
    status = engine._status
    if event.jobs is None:
        jobs = [j for j in range(engine.model.num_jobs) if status[j] == _PENDING_FAILED]
    else:
        for job in event.jobs:
            engine._check_job(job)
        wrong = tuple(j for j in event.jobs if status[j] != _PENDING_FAILED)
        if wrong:
            raise IllegalTransition("not pending_failed (only held failures can be "
                                    "confirmed)", jobs=wrong)
        jobs = sorted(set(event.jobs))
    for job in jobs:
        engine._set(job, Cause.CONFIRM_FAIL)
    engine._propagate(jobs)


def _refuse_while_active(engine: Engine, what: str) -> None:
    active = engine._counts[_PENDING] + engine._counts[_RUNNING]
    if active:
        raise IllegalTransition(f"cannot {what}: {active} jobs are pending or running")


def _closure(engine: Engine, seeds: Iterable[int]) -> list[int]:
    return downstream_closure(engine.model, seeds)


def _reset_nodes(engine: Engine, nodes: Sequence[int]) -> None:
    """Back to uninitialized for a new run (disabled jobs stay disabled)."""
    engine.run_id += 1
    engine.canceled = False
    engine._log_run = True
    engine._completed_emitted = False
    for node in nodes:
        if engine._status[node] == _DISABLED:
            continue
        engine._set(node, Cause.RESET)
        if node < engine.model.num_jobs:
            engine._attempt[node] = 1
            engine._run[node] = engine.run_id


def reinitialize(engine: Engine, event: ev.Reinitialize) -> None:
    m = engine.model
    _refuse_while_active(engine, "reinitialize")
    seeds: set[int] = set()
    if event.changed_files:
        ptr, idx = m.input_files_ptr, m.input_files_idx
        for job in range(m.num_jobs):
            if any(idx[k] in event.changed_files for k in range(ptr[job], ptr[job + 1])):
                seeds.add(job)
    if event.changed_user_data:
        ptr, idx = m.input_user_data_ptr, m.input_user_data_idx
        for job in range(m.num_jobs):
            if any(idx[k] in event.changed_user_data for k in range(ptr[job], ptr[job + 1])):
                seeds.add(job)
    status = engine._status
    seeds.update(
        n for n in range(m.num_nodes) if status[n] != _COMPLETED and status[n] != _DISABLED
    )
    nodes = _closure(engine, sorted(seeds))
    jobs = tuple(n for n in nodes if n < m.num_jobs and status[n] != _DISABLED)
    if event.dry_run or not nodes:
        engine._effects.append(
            ev.ReinitializePlanned(jobs=jobs, dry_run=True, run_id=engine.run_id)
        )
        return
    _reset_nodes(engine, nodes)
    engine._initialize(nodes)
    engine._effects.append(ev.ReinitializePlanned(jobs=jobs, dry_run=False, run_id=engine.run_id))


def reset_status(engine: Engine, event: ev.ResetStatus) -> None:
    if event.jobs is not None:
        _reset_jobs(engine, event)
        return
    _refuse_while_active(engine, "reset status")
    m = engine.model
    if event.failed_only:
        status = engine._status
        nodes = _closure(engine, (
            n for n in range(m.num_jobs)
            if _OUTCOME[status[n]] == 2 or status[n] == _PENDING_FAILED
        ))
    else:
        nodes = list(range(m.num_nodes))
    if nodes:
        _reset_nodes(engine, nodes)
    if event.initialize:
        engine._initialize()


def _reset_jobs(engine: Engine, event: ev.ResetStatus) -> None:
    """A selective reset: the chosen jobs and everything downstream of them (barriers
    included, so their counts are made again), while other jobs may run. Refused when one
    of those jobs is pending or running, naming every such job."""
    if event.failed_only:
        raise BadInput("choose the jobs to reset by failed_only or by jobs, not both")
    if not event.jobs:
        raise BadInput("no jobs to reset: give at least one")
    for job in event.jobs:
        engine._check_job(job)
    m, status = engine.model, engine._status
    nodes = _closure(engine, sorted(set(event.jobs)))
    active = tuple(n for n in nodes
                   if n < m.num_jobs and (status[n] == _PENDING or status[n] == _RUNNING))
    if active:
        raise IllegalTransition(
            "cannot reset while pending or running (a chosen job or downstream of one); "
            "wait for them, or cancel the workflow", jobs=active)
    _reset_nodes(engine, nodes)
    if event.initialize:
        engine._initialize()
    engine._effects.append(ev.JobsReset(
        jobs=tuple(n for n in nodes if n < m.num_jobs and status[n] != _DISABLED),
        run_id=engine.run_id))


def advance_run(engine: Engine, event: ev.AdvanceRun) -> None:
    if event.run_id < engine.run_id:
        raise BadInput(f"run {event.run_id} is behind the workflow's run {engine.run_id}")
    if event.run_id == engine.run_id:
        return
    _refuse_while_active(engine, f"move to run {event.run_id}")
    engine.run_id = event.run_id
    engine._log_run = True


def disable(engine: Engine, event: ev.DisableJobs) -> None:
    for job in event.jobs:
        engine._check_job(job)
        if _TABLE[Cause.DISABLE][engine._status[job]] < 0:
            raise IllegalTransition(
                f"cannot disable: it is {JobStatus(engine._status[job]).label}", job=job
            )
    work: list[int] = []
    for job in dict.fromkeys(event.jobs):
        engine._set(job, Cause.DISABLE)
        work.append(job)
    engine._propagate(work)
