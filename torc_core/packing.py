"""Which ready jobs a claim gets: :func:`pack`, the engine's greedy packing of a runner's
free resources (or, in queue mode, of a job count) from its ready-queue buckets.

Why a module of its own: packing is the claim's hot loop (a claim of 256 jobs is 256 jobs
taken off queues and marked pending), kept apart from the engine's other inputs so it can be
read and measured alone. It changes statuses only through :meth:`Engine._set_all`, in one
pass for the jobs of each bucket (Rule 1).

Buckets are visited in order of priority, then GPUs, runtime, memory, CPUs (largest first;
memory before runtime with ``gpus_memory_runtime``); a bucket a claim cannot use (another
scheduler, too long for the walltime left, too big for what is free) is skipped whole.
"""

from __future__ import annotations

from itertools import repeat
from typing import TYPE_CHECKING

from . import events as ev
from .codes import _READY
from .events import ClaimedJob
from .status import Cause

if TYPE_CHECKING:
    from .engine import BucketKey, Engine


def pack(engine: Engine, event: ev.ClaimJobs, claimed: list[ev.ClaimedJob]) -> None:
    """Take what fits of ``event``'s resources (or ``event.limit`` jobs) off the ready queues
    into ``claimed``: each job pending, held by the runner, in the current run."""
    queue_mode = event.cpus is None
    free_cpus = event.cpus or 0
    free_mem = event.memory
    free_gpus = event.gpus or 0
    nodes = event.nodes if event.nodes is not None else 1
    walltime = event.walltime_s
    want_sched = event.scheduler
    limit = event.limit
    runner = event.runner_id
    held = engine._runner_jobs.setdefault(runner, set())
    status, holder, attempt, job_run = (engine._status, engine._holder, engine._attempt,
                                        engine._run)
    run_id = engine.run_id
    buckets = engine._buckets
    empty: list[BucketKey] = []
    for key in engine._bucket_order:
        if len(claimed) >= limit:
            break
        queue = buckets[key]
        if not queue:
            empty.append(key)
            continue
        _, gpus, runtime, memory, cpus, job_nodes, sched = key
        if want_sched is not None and sched not in (-1, want_sched):
            continue
        if walltime is not None and runtime > walltime:
            continue
        if queue_mode:
            fits = limit - len(claimed)
        else:
            if job_nodes > nodes or cpus > free_cpus or gpus > free_gpus:
                continue
            if free_mem is not None and memory > free_mem:
                continue
            fits = min(limit - len(claimed), free_cpus // cpus if cpus else limit)
            if gpus:
                fits = min(fits, free_gpus // gpus)
            if free_mem is not None and memory:
                fits = min(fits, free_mem // memory)
        take: dict[int, None] = {}  # in queue order; a job queued twice is taken once
        popleft = queue.popleft
        while len(take) < fits and queue:
            job = popleft()
            if status[job] == _READY:  # else stale: canceled, disabled or re-queued since
                take[job] = None
        jobs = list(take)
        engine._set_all(jobs, Cause.CLAIM)
        for job in jobs:
            holder[job] = runner
            job_run[job] = run_id
        held.update(jobs)
        claimed.extend(map(ClaimedJob, jobs, map(attempt.__getitem__, jobs), repeat(run_id)))
        if not queue_mode:
            taken = len(jobs)
            free_cpus -= taken * cpus
            free_gpus -= taken * gpus
            if free_mem is not None:
                free_mem -= taken * memory
        if not queue:
            empty.append(key)
    for key in empty:
        if not buckets[key]:
            del buckets[key]
            engine._bucket_order.remove(key)
