"""Inputs to the engine (named by action) and the effects it returns (named in past tense).

All are frozen, slotted, keyword-only dataclasses: cheap to create in batches of thousands,
safe to hand across threads, and impossible to mutate by accident in the I/O layer. The two
made once per job of a claim, :class:`JobResult` and :class:`ClaimedJob`, are named tuples:
as immutable, and built in a third of the time (a frozen dataclass sets each field through
``object.__setattr__``: 3.0 µs for a result, 0.9 µs as a tuple built positionally).
Job references are node indices of the workflow's :class:`~torc_core.model.WorkflowModel`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from .status import JobStatus

if TYPE_CHECKING:
    from .model import WorkflowModel

# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True, slots=True, kw_only=True)
class Initialize:
    """Compute blocked/ready for every uninitialized job (a new workflow, or after a reset)."""


class JobResult(NamedTuple):
    """A job's outcome as its runner reports it (fields in this order when built
    positionally, as the hot path does)."""

    job: int
    attempt: int
    run_id: int
    return_code: int
    terminated: bool = False
    exec_time_s: float = 0.0
    #: the failure handler's recovery script failed (the runner ran it before reporting):
    #: the job is not retried, whatever its rule says
    recovery_failed: bool = False
    #: what the result carries besides its outcome (where the output went, a note, the
    #: failure cause, resource use), in the I/O layer's order: stored by it, not looked at here
    info: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimJobs:
    """A runner asks for work.

    Resource mode: ``cpus`` (and optionally memory/gpus/nodes/walltime) describe what it has
    free; jobs are packed greedily into that. Queue mode: ``cpus is None``; up to ``limit`` jobs
    regardless of resources. ``scheduler`` restricts to jobs of that scheduler index (plus jobs
    with none); None takes any.
    """

    runner_id: int
    limit: int
    lease_s: float
    cpus: int | None = None
    memory: int | None = None  # bytes
    gpus: int | None = None
    nodes: int | None = None
    walltime_s: float | None = None  # remaining wall time of the allocation
    scheduler: int | None = None
    #: Results the runner reports with this claim, applied first (one round trip per cycle).
    results: tuple[JobResult, ...] = ()
    #: Every job the runner holds (None: not said). Jobs the engine thinks it holds that are
    #: not among them were in a claim answer it never received: they go back to ready.
    held: frozenset[int] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StartJobs:
    runner_id: int
    jobs: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class CompleteJobs:
    """A batch of finished jobs. A result repeated (same job, run_id, attempt) is acknowledged
    as a duplicate and changes nothing."""

    runner_id: int
    results: tuple[JobResult, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    runner_id: int
    lease_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseRunner:
    """The runner deactivated or is known to be gone: its unfinished jobs go back to ready."""

    runner_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseJobs:
    """Give some of a runner's jobs back to ready (same attempt): the runner says it never
    received them (the answer to its claim was lost)."""

    runner_id: int
    jobs: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelWorkflow:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Reinitialize:
    """Rerun the jobs whose input files / user_data changed (indices), everything downstream of
    them, and every job not completed. ``dry_run`` reports the plan and changes nothing."""

    changed_files: frozenset[int] = frozenset()
    changed_user_data: frozenset[int] = frozenset()
    dry_run: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ResetStatus:
    """Jobs back to uninitialized for a new run: all of them, or (``failed_only``) the failed,
    canceled and terminated jobs and everything downstream of them, or (``jobs``) the chosen
    jobs and everything downstream of them. Follow with :class:`Initialize`.

    Why ``jobs`` may be reset while other jobs run: only the chosen jobs and their downstream
    change, so the rule is narrower than the whole reset's (refused while *any* job is pending
    or running): it is refused only when one of *those* jobs is pending or running (their
    runners would report for attempts that no longer exist). Jobs upstream of a chosen job are
    not touched. ``failed_only`` and ``jobs`` are two ways to choose, not a filter on each
    other: giving both is refused (as Torc's ``jobs reset-status`` takes one selector)."""

    failed_only: bool = False
    #: The chosen jobs (node indices; at least one), or None: not a selective reset.
    jobs: tuple[int, ...] | None = None
    #: Initialize right after the reset, in the same input (what the server does).
    initialize: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfirmFailed:
    """The decision on failures held as pending_failed (``use_pending_failed``): they are
    failures; their dependents are canceled or run as after any failure. ``jobs``: those of
    them (all must be pending_failed), or None: every one."""

    jobs: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DisableJobs:
    jobs: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvanceRun:
    """Move the run number forward to ``run_id`` without touching a job (the results of
    earlier runs were imported: the next results must not take their keys). Refused while
    jobs are pending or running, whose runners report for the run they were given."""

    run_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class JobResources:
    """New requirements of one job; None: that one stays as it is."""

    job: int
    cpus: int | None = None
    memory: int | None = None  # bytes
    runtime: int | None = None  # seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class SetJobResources:
    """Rewrite the CPUs, memory and runtime chosen jobs ask for (measured use, a recovery
    after an out-of-memory kill or a timeout). Claims pack a ready job by its new values at
    once. Refused, naming them, while any of the jobs is pending or running: its runner holds
    it with the old values (a job that ran past the change would be packed by one size and
    measured against another). A job may be named once."""

    jobs: tuple[JobResources, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class AddJobs:
    """Grow the live workflow by ``part``'s jobs (dynamic jobs: a running job adds its next
    iteration). ``part`` is a model of the new jobs alone (its own node numbering, its
    failure-handler and scheduler indices already the workflow's); every new job is also
    blocked on each job in ``after`` (the job that spawned them). ``file_offset`` and
    ``user_data_offset``: where the part's files and user data start among the workflow's.
    Refused when the workflow is canceled. See :mod:`torc_core.grow`."""

    part: WorkflowModel
    after: tuple[int, ...] = ()
    file_offset: int = 0
    user_data_offset: int = 0


EngineInput = (
    Initialize
    | ClaimJobs
    | StartJobs
    | CompleteJobs
    | Heartbeat
    | ReleaseRunner
    | ReleaseJobs
    | CancelWorkflow
    | Reinitialize
    | ResetStatus
    | DisableJobs
    | ConfirmFailed
    | AdvanceRun
    | SetJobResources
    | AddJobs
)

# ---------------------------------------------------------------------------------------------
# Effects


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusesChanged:
    """Every status change one input caused, in the order they happened:
    parallel tuples ``jobs[i]: old[i] -> new[i]`` (barrier nodes included)."""

    jobs: tuple[int, ...]
    old: tuple[int, ...]  # JobStatus values (plain ints: a drain of a million jobs makes millions)
    new: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class JobsUpdated:
    """The final state of every job whose status, attempt or holder this input changed:
    parallel sequences (compact arrays: a million entries when a workflow is initialized),
    what a store writes as the jobs' rows. A job may be listed more than once, always with the
    same (final) values. A holder of -1 means none. ``runs``: the run a report of the job's
    current attempt must carry (the run it was last claimed or reset in). It differs from the
    workflow's run when a selective reset moved the run on while the job ran; 0 when not
    known (a job held since a restart, see :meth:`~torc_core.engine.Engine.restore`)."""

    jobs: Sequence[int]
    statuses: Sequence[int]
    attempts: Sequence[int]
    holders: Sequence[int]
    runs: Sequence[int]


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseChanged:
    """A runner's lease deadline after this input (None: the runner holds no lease now)."""

    runner_id: int
    deadline: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunChanged:
    """The workflow's run id or canceled flag changed (reset, reinitialize, cancel)."""

    run_id: int
    canceled: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class JobsStarted:
    """Jobs that went from pending to running (a repeated start report is not among them)."""

    runner_id: int
    jobs: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """The workflow after this input; always the last effect. ``counts`` is indexed by
    :class:`JobStatus` value."""

    counts: tuple[int, ...]
    is_complete: bool
    canceled: bool
    run_id: int


class ClaimedJob(NamedTuple):
    job: int
    attempt: int
    run_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class JobsClaimed:
    runner_id: int
    jobs: tuple[ClaimedJob, ...]
    lease_deadline: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ResultsRecorded:
    """Results that counted (to be stored) and results that were duplicates (acknowledged),
    as reported by ``runner_id``."""

    runner_id: int
    accepted: tuple[JobResult, ...]
    duplicates: tuple[JobResult, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryScheduled:
    job: int
    attempt: int  # the new attempt number
    return_code: int
    recovery_script: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class LeasesExpired:
    runner_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunnerReleased:
    runner_id: int
    jobs: tuple[int, ...]  # jobs given back to ready


@dataclass(frozen=True, slots=True, kw_only=True)
class ReinitializePlanned:
    """The jobs a reinitialize resets (``dry_run`` says whether it happened)."""

    jobs: tuple[int, ...]
    dry_run: bool
    run_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class JobsReset:
    """The jobs a selective :class:`ResetStatus` put back for ``run_id`` (the chosen jobs and
    everything downstream of them, disabled jobs excepted), in index order: what the server
    answers and records, so it need not work out the downstream jobs itself."""

    jobs: tuple[int, ...]
    run_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourcesChanged:
    """Jobs whose requirements a :class:`SetJobResources` changed (a job given its current
    values is not among them): each job's values before and after, all three, so the store
    writes the row and records the change without reading anything back."""

    jobs: tuple[int, ...]
    old: tuple[tuple[int, int, int], ...]  # (cpus, memory bytes, runtime s) per job
    new: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class JobsAdded:
    """The workflow grew (:class:`AddJobs`): jobs ``first .. first+count-1`` are new, the
    barriers that were there now start at ``barriers_from`` (their ordinals unchanged), and
    the last ``new_barriers`` nodes are the part's own barriers."""

    first: int
    count: int
    barriers_from: int
    new_barriers: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowCompleted:
    """Every job reached a final status. Emitted once per run (again after a reset)."""

    counts: dict[JobStatus, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowCanceled:
    pass


Effect = (
    StatusesChanged
    | JobsUpdated
    | LeaseChanged
    | RunChanged
    | JobsStarted
    | Progress
    | JobsClaimed
    | ResultsRecorded
    | RetryScheduled
    | LeasesExpired
    | RunnerReleased
    | ReinitializePlanned
    | JobsReset
    | ResourcesChanged
    | JobsAdded
    | WorkflowCompleted
    | WorkflowCanceled
)
