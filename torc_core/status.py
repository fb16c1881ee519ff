"""Job statuses and the one table of legal transitions.

Theory of operation
-------------------
Rule 1: every status change of a job goes through :data:`TRANSITIONS`. The engine never writes a
status without looking up ``(current_status, cause)`` here; a missing key is an illegal input
and the engine refuses it before it mutates anything.

Rule 2: a *cause* names why a job moves (``Cause.CLAIM``, ``Cause.UPSTREAM_FAILED``...), not
where it goes. The target is data, so docs and diagrams can be generated from this table
(``docs/architecture.md`` shows it) and a property test can walk every pair.

Statuses carry Torc's names and Torc's integer codes are not needed by clients: the wire format
uses the names.
"""

from __future__ import annotations

from enum import IntEnum


class JobStatus(IntEnum):
    """Job statuses, named as Torc names them."""

    UNINITIALIZED = 0
    BLOCKED = 1
    READY = 2
    PENDING = 3  # claimed by a runner, not yet started
    RUNNING = 4
    COMPLETED = 5
    FAILED = 6
    CANCELED = 7
    TERMINATED = 8
    DISABLED = 9
    #: failed, held for a decision (use_pending_failed): its dependents wait, the workflow is
    #: not complete until it is reset (run again) or confirmed failed
    PENDING_FAILED = 10

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> JobStatus:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown job status {text!r} (expected one of: {names})") from None


class Cause(IntEnum):
    """Why a job changes status; the second half of a transition key."""

    INITIALIZE_BLOCKED = 0  # initialize: some dependency not done
    INITIALIZE_READY = 1  # initialize: all dependencies done
    RELEASE = 2  # the last unfinished dependency finished
    CLAIM = 3  # a runner took it
    START = 4  # the runner started its process
    SUCCEED = 5  # return code 0
    FAIL = 6  # non-zero return code and no retry left
    TERMINATE = 7  # killed by the runner (walltime, signal)
    RETRY = 8  # failure handler asked for another attempt
    LEASE_LOST = 9  # the runner's lease expired or it deactivated: give the job back
    UPSTREAM_FAILED = 10  # a dependency failed and cancel_on_blocking_job_failure is set
    CANCEL = 11  # the workflow was canceled
    RESET = 12  # reinitialize / reset-status puts the job back to the start
    DISABLE = 13
    LATE_SUCCEED = 14  # a report for a job whose lease had already been given back
    LATE_FAIL = 15
    BARRIER_PASS = 16  # an internal barrier node: all its dependencies reached a final status
    FAIL_PENDING = 17  # a failure with no retry left, held for a decision (use_pending_failed)
    CONFIRM_FAIL = 18  # the decision on a held failure: it is a failure


S = JobStatus
C = Cause

FINAL_STATUSES: frozenset[JobStatus] = frozenset(
    {S.COMPLETED, S.FAILED, S.CANCELED, S.TERMINATED, S.DISABLED}
)
#: Final statuses that count as a failed dependency (they cancel dependents that ask for it).
FAILED_STATUSES: frozenset[JobStatus] = frozenset({S.FAILED, S.CANCELED, S.TERMINATED})
#: Statuses a dependency may be in for its dependents to run unconditionally.
SATISFIED_STATUSES: frozenset[JobStatus] = frozenset({S.COMPLETED, S.DISABLED})
ACTIVE_STATUSES: frozenset[JobStatus] = frozenset({S.PENDING, S.RUNNING})

_NOT_ACTIVE_NOT_FINAL = (S.UNINITIALIZED, S.BLOCKED, S.READY)

#: ``TRANSITIONS[(status, cause)] -> new status``. Anything not in this map is illegal.
TRANSITIONS: dict[tuple[JobStatus, Cause], JobStatus] = {
    (S.UNINITIALIZED, C.INITIALIZE_BLOCKED): S.BLOCKED,
    (S.UNINITIALIZED, C.INITIALIZE_READY): S.READY,
    (S.BLOCKED, C.RELEASE): S.READY,
    (S.READY, C.CLAIM): S.PENDING,
    (S.PENDING, C.START): S.RUNNING,
    # A runner may report a job it never told us it started (a batch of starts was lost).
    (S.PENDING, C.SUCCEED): S.COMPLETED,
    (S.RUNNING, C.SUCCEED): S.COMPLETED,
    (S.PENDING, C.FAIL): S.FAILED,
    (S.RUNNING, C.FAIL): S.FAILED,
    (S.PENDING, C.TERMINATE): S.TERMINATED,
    (S.RUNNING, C.TERMINATE): S.TERMINATED,
    (S.PENDING, C.RETRY): S.READY,
    (S.RUNNING, C.RETRY): S.READY,
    (S.PENDING, C.LEASE_LOST): S.READY,
    (S.RUNNING, C.LEASE_LOST): S.READY,
    # After a lease was given back, the original runner may still report the attempt it ran
    # (it kept running through a server outage). The result counts: nothing finished is lost.
    (S.READY, C.LATE_SUCCEED): S.COMPLETED,
    (S.READY, C.LATE_FAIL): S.FAILED,
    (S.BLOCKED, C.UPSTREAM_FAILED): S.CANCELED,
    (S.UNINITIALIZED, C.UPSTREAM_FAILED): S.CANCELED,
    **{(s, C.CANCEL): S.CANCELED for s in (*_NOT_ACTIVE_NOT_FINAL, S.PENDING, S.RUNNING)},
    **{(s, C.RESET): S.UNINITIALIZED for s in (*_NOT_ACTIVE_NOT_FINAL, *FINAL_STATUSES)},
    **{(s, C.DISABLE): S.DISABLED for s in _NOT_ACTIVE_NOT_FINAL},
    # use_pending_failed: a failure is held for a decision; a late one too.
    (S.PENDING, C.FAIL_PENDING): S.PENDING_FAILED,
    (S.RUNNING, C.FAIL_PENDING): S.PENDING_FAILED,
    (S.READY, C.FAIL_PENDING): S.PENDING_FAILED,
    (S.PENDING_FAILED, C.CONFIRM_FAIL): S.FAILED,
    (S.PENDING_FAILED, C.RESET): S.UNINITIALIZED,
    (S.PENDING_FAILED, C.CANCEL): S.CANCELED,
    # Barrier nodes are never claimed: they pass straight to completed.
    (S.UNINITIALIZED, C.BARRIER_PASS): S.COMPLETED,
    (S.BLOCKED, C.BARRIER_PASS): S.COMPLETED,
}


def transition(status: JobStatus, cause: Cause) -> JobStatus | None:
    """The status ``cause`` moves a job in ``status`` to, or None if that is illegal."""
    return TRANSITIONS.get((status, cause))


def transition_table_markdown() -> str:
    """The transition table as a Markdown table (docs/architecture.md embeds it verbatim)."""
    lines = ["| from | cause | to |", "|---|---|---|"]
    for (old, cause), new in sorted(TRANSITIONS.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        lines.append(f"| {old.label} | {cause.name.lower()} | {new.label} |")
    return "\n".join(lines) + "\n"
