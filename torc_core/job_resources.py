"""The engine's input that rewrites what jobs ask for: :class:`~torc_core.events.SetJobResources`.

Why it exists: requirements written before a job ever ran are guesses. Once results say what
a job used (its peak memory, how long it ran, or that it was killed for running out of
memory or time), ``correct-resources`` and ``recover`` give it new requirements, and the next
claims must pack it by them (a job whose memory grew no longer fits where it used to).

Why the model's columns change: the model is the one place the engine, the claim answers
(which tell a runner what a job may use) and the store's rows read a job's requirements
from, so changing them there keeps all three agreeing. Only these three columns ever change
after the model is built, and only here.

Rules (the engine's): everything is checked before the first change (a refused input changes
nothing), and a job that is pending or running is refused, as its runner holds it by the old
values. A ready job moves to the ready-queue bucket of its new shape; every job is taken out
of its old bucket whatever its status, since a bucket may hold a stale entry of a job that
was canceled and could be made ready again (it must never be claimed by its old shape).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from . import events as ev
from .codes import _PENDING, _READY, _RUNNING
from .errors import BadInput, IllegalTransition

if TYPE_CHECKING:
    from .engine import BucketKey, Engine


def set_job_resources(engine: Engine, event: ev.SetJobResources) -> None:
    """Check every entry, then change the jobs' columns and buckets (module docstring)."""
    m, status = engine.model, engine._status
    if not event.jobs:
        raise BadInput("no jobs to change: give at least one")
    seen: set[int] = set()
    for item in event.jobs:
        engine._check_job(item.job)
        if item.job in seen:
            raise BadInput("named twice (give each job once)", job=item.job)
        seen.add(item.job)
        if item.cpus is None and item.memory is None and item.runtime is None:
            raise BadInput("nothing to change: give cpus, memory or runtime", job=item.job)
        if item.cpus is not None and item.cpus < 1:
            raise BadInput(f"cpus must be >= 1, got {item.cpus}", job=item.job)
        for name, value in (("memory", item.memory), ("runtime", item.runtime)):
            if value is not None and value < 0:
                raise BadInput(f"{name} must be >= 0, got {value}", job=item.job)
    active = tuple(sorted(i.job for i in event.jobs
                          if status[i.job] == _PENDING or status[i.job] == _RUNNING))
    if active:
        raise IllegalTransition(
            "cannot change the resources of a pending or running job (its runner holds it "
            "by the old ones); wait for it to end, or cancel the workflow", jobs=active)
    jobs: list[int] = []
    old: list[tuple[int, int, int]] = []
    new: list[tuple[int, int, int]] = []
    moved: dict[BucketKey, set[int]] = {}
    for item in event.jobs:
        job = item.job
        before = (m.cpus[job], m.memory[job], m.runtime[job])
        after = (before[0] if item.cpus is None else item.cpus,
                 before[1] if item.memory is None else item.memory,
                 before[2] if item.runtime is None else item.runtime)
        if after == before:
            continue
        moved.setdefault(engine._bucket_key(job), set()).add(job)
        m.cpus[job], m.memory[job], m.runtime[job] = after
        jobs.append(job)
        old.append(before)
        new.append(after)
    _drop_from_buckets(engine, moved)
    for job in jobs:
        if status[job] == _READY:
            engine._enqueue(job)
    if jobs:
        engine._effects.append(ev.ResourcesChanged(jobs=tuple(jobs), old=tuple(old),
                                                   new=tuple(new)))


def _drop_from_buckets(engine: Engine, moved: dict[BucketKey, set[int]]) -> None:
    """Take the jobs out of the buckets of their old shapes (one pass over each bucket)."""
    for key, gone in moved.items():
        queue = engine._buckets.get(key)
        if queue is None:
            continue
        kept = deque(j for j in queue if j not in gone)
        if kept:
            engine._buckets[key] = kept
        else:
            del engine._buckets[key]
            engine._bucket_order.remove(key)
