"""Engine effects -> store rows and feed messages: the one place that translates them.

Why one function: every request that drives an engine records what happened the same way,
so the rows on disk and what watchers hear cannot differ between endpoints. The effects say
everything (the engine's Rule 7); nothing here reads the engine back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torc_core import events as ev
from torc_core.status import JobStatus

from .state import STATUS_LABELS, WorkflowState
from .store import Change
from .store.schema import RESULT_INFO_NAMES

#: a result's stored fields beyond its outcome when it carries none (built in the engine's
#: tests, or by the library in-process; the API's results carry all, in this order)
_NO_INFO = (None,) * len(RESULT_INFO_NAMES)

_COMPLETED = int(JobStatus.COMPLETED)
_FAILED = int(JobStatus.FAILED)
_TERMINATED = int(JobStatus.TERMINATED)


@dataclass(slots=True, frozen=True)
class Recorded:
    """What the caller needs besides the rows: the workflow after the input, and the earliest
    lease deadline it set (the lease timer may have to wake sooner)."""

    progress: ev.Progress
    earliest_lease: float | None


def record(wf: WorkflowState, effects: list[ev.Effect], change: Change, now: float, *,
           is_active: Callable[[int], bool], publish: bool,
           reason: str | None = None) -> Recorded:
    """Add the rows (and, when someone listens, the feed messages) of one input's effects to
    ``change``. ``is_active(cn)`` tells whether a compute node is still active (its row says
    so with its lease). ``reason``: why the input was sent, kept in the events it records
    (a requirement rewritten by ``recover`` after an out-of-memory kill, say)."""
    wf_id = wf.id
    job_id = wf.job_ids.id
    n = wf.num_jobs
    has_barriers = wf.model.num_barriers > 0
    messages: list[dict[str, Any]] = []
    progress: ev.Progress | None = None
    earliest: float | None = None
    for eff in effects:
        if isinstance(eff, ev.JobsUpdated):
            ids = wf.job_ids.ids(eff.jobs)
            holders = [h if h >= 0 else None for h in eff.holders]
            change.jobs.update(zip(ids, zip(eff.statuses, eff.attempts, holders, eff.runs, ids,
                                            strict=True), strict=True))
        elif isinstance(eff, ev.StatusesChanged):
            if not (publish or has_barriers):
                continue  # the job rows above hold every change; nothing else to write
            names = wf.names
            for node, old, new in zip(eff.jobs, eff.old, eff.new, strict=True):
                if node >= n:  # stored by ordinal (torc_net.state.edge_code)
                    change.barriers[(wf_id, node - n)] = new
                elif publish:
                    messages.append({
                        "type": "job_status", "workflow_id": wf_id, "job_id": job_id(node),
                        "name": names[node], "old": STATUS_LABELS[old],
                        "new": STATUS_LABELS[new], "ts": now,
                    })
        elif isinstance(eff, ev.LeaseChanged):
            deadline = eff.deadline
            change.leases[eff.runner_id] = (deadline, int(is_active(eff.runner_id)))
            if deadline is not None and (earliest is None or deadline < earliest):
                earliest = deadline
        elif isinstance(eff, ev.RunChanged):
            change.runs[wf_id] = (eff.run_id, int(eff.canceled))
        elif isinstance(eff, ev.ResultsRecorded):
            cn = eff.runner_id
            change.results.extend(
                (wf_id, job_id(r.job), r.run_id, r.attempt, r.return_code,
                 _TERMINATED if r.terminated else _COMPLETED if r.return_code == 0 else _FAILED,
                 r.exec_time_s, now, cn, *(r.info or _NO_INFO))
                for r in eff.accepted
            )
        elif isinstance(eff, ev.RetryScheduled):
            change.event(wf_id, now, "retry", {"job_id": job_id(eff.job), "attempt": eff.attempt,
                                               "return_code": eff.return_code})
        elif isinstance(eff, ev.ResourcesChanged):
            _resources_changed(wf, eff, change, now, reason)
        elif isinstance(eff, ev.LeasesExpired):
            change.event(wf_id, now, "leases_expired", {"compute_node_ids": eff.runner_ids})
        elif isinstance(eff, ev.WorkflowCompleted):
            change.event(wf_id, now, "completed", {s.label: c for s, c in eff.counts.items()})
            if publish:
                messages.append({"type": "workflow", "workflow_id": wf_id,
                                 "event": "completed", "ts": now})
        elif isinstance(eff, ev.WorkflowCanceled):
            change.event(wf_id, now, "canceled")
            if publish:
                messages.append({"type": "workflow", "workflow_id": wf_id, "event": "canceled",
                                 "ts": now})
        elif isinstance(eff, ev.Progress):
            progress = eff
    change.publish(wf_id, wf.user, messages)
    assert progress is not None, "the engine ends every effect list with Progress"
    return Recorded(progress, earliest)


def _resources_changed(wf: WorkflowState, eff: ev.ResourcesChanged, change: Change,
                       now: float, reason: str | None) -> None:
    """The rows of rewritten requirements, and one event per job (each change is on record:
    what the job asked for before, what it asks for now, and why)."""
    names = wf.names
    for job, old, new in zip(eff.jobs, eff.old, eff.new, strict=True):
        job_id = wf.job_id(job)
        change.job_resources[job_id] = new
        change.event(wf.id, now, "job_resources", {
            "job_id": job_id, "job_name": names[job], "reason": reason,
            "old": dict(zip(_RESOURCE_KEYS, old, strict=True)),
            "new": dict(zip(_RESOURCE_KEYS, new, strict=True))})


_RESOURCE_KEYS = ("num_cpus", "memory_bytes", "runtime_s")


def workflow_message(wf: WorkflowState, event: str, now: float) -> dict[str, Any]:
    return {"type": "workflow", "workflow_id": wf.id, "event": event, "ts": now}
