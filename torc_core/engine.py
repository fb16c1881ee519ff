"""The workflow engine: job states, readiness, claims, leases, completion, failure propagation.

Theory of operation
-------------------
One :class:`Engine` holds the live state of one workflow. The I/O layer feeds it inputs
(:mod:`torc_core.events`) with the current time and carries out the effects it returns; the
engine itself never reads a clock, touches a file or a socket.

Rule 1: every status change goes through :meth:`Engine._set` (or :meth:`Engine._set_all`, the
same for many nodes), which looks the change up in :data:`torc_core.status.TRANSITIONS`. No
other code writes ``_status``.

Rule 2: validate, then mutate. Each input is checked in full before the first change; a refused
input raises an :class:`~torc_core.errors.EngineError` and leaves the state exactly as it was.

Rule 3: dependents are released in the same call that finishes their last dependency (Torc
releases them on a background interval; we never wait). Propagation uses an explicit work list,
never recursion, so a chain of a million jobs cannot overflow the stack.

Rule 4: a node is *satisfied* when completed or disabled, *failed* when failed, canceled or
terminated. A failed dependency cancels a dependent whose ``cancel_on_blocking_job_failure``
is set (at once, not when the other dependencies finish); for any other dependent it counts as
finished, so the dependent runs once the rest are done.

Rule 5: barrier nodes (indices >= ``num_jobs``) stand for "all of this set of dependencies";
they are never claimed. A barrier passes (completes) once all its dependencies are final, and
forwards a failure signal at once to the dependents that cancel on failure. This makes an
N+M barrier behave exactly like the N x M edges it replaces.

Rule 6: leases. Claims, completions and heartbeats renew a runner's lease. When it expires (or
the runner is released) its pending/running jobs go back to ready with the *same* attempt number:
losing a runner is not the job's failure, so it does not use up a failure handler's retries.
If the old runner later reports that attempt (it kept running through a network outage), the
result counts: nothing finished is lost.

Rule 6b: a report carries the run its job was claimed in. A selective reset (``ResetStatus``
with ``jobs``) starts a new run while unrelated jobs go on running, so each job keeps the run
its current attempt belongs to (``_run``: set when it is claimed or reset); its report must
carry that run, not necessarily the workflow's. A report from an earlier run is an old
attempt's (a duplicate), so a reset job's old attempts can never count for its new one.

Rule 7: effects say everything the I/O layer needs, so it never reads the engine back after
:meth:`Engine.handle`: the final row of every job that changed (:class:`JobsUpdated`), every
lease deadline that moved (:class:`LeaseChanged`), a new run or cancel (:class:`RunChanged`),
and last the workflow's counts (:class:`Progress`). One request is one input: a claim carries
the runner's results and the jobs it holds (:class:`ClaimJobs`), a reset its initialize.

State is columnar (``bytearray``/``array``), not an object per job, so a million jobs cost a few
tens of megabytes here.
"""

from __future__ import annotations

from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence

from . import events as ev
from . import grow, job_resources, packing, resets
from .codes import (
    _BLOCKED,
    _FAILS,
    _NOT_FINAL,
    _NUM_STATUSES,
    _OUTCOME,
    _PENDING,
    _PENDING_FAILED,
    _READY,
    _RUNNING,
    _TABLE,
    _UNINITIALIZED,
)
from .errors import BadInput, IllegalTransition, UnknownJob
from .model import WorkflowModel
from .reach import fails_behind
from .status import Cause, JobStatus

#: A ready-queue bucket: jobs with identical priority, resource needs and scheduler.
#: (priority, gpus, runtime, memory, cpus, nodes, scheduler); sorted descending (by
#: :func:`_ORDER` of the workflow's jobs_sort_method) this is the packing order.
BucketKey = tuple[int, int, int, int, int, int, int]

#: Torc's jobs_sort_method -> the sort key of a bucket (descending; ties keep the order in
#: which the buckets first appeared, as ``list.sort`` is stable).
_ORDER: dict[str, Callable[[BucketKey], tuple[int, ...]]] = {
    "gpus_runtime_memory": lambda k: k,
    "gpus_memory_runtime": lambda k: (k[0], k[1], k[3], k[2], *k[4:]),
    "none": lambda k: k[:1],
}


def _illegal(old: int, cause: Cause, node: int) -> IllegalTransition:
    """The refusal of a transition the table does not have (Rule 1)."""
    return IllegalTransition(f"{JobStatus(old).label} cannot {cause.name.lower()}", job=node)


class Engine:
    """Live state of one workflow. See the module docstring for the rules it keeps."""

    def __init__(self, model: WorkflowModel) -> None:
        n = model.num_nodes
        self.model = model
        self._status = bytearray(n)  # all UNINITIALIZED
        self._unmet = array("l", bytes(8 * n))
        self._barrier_failed = bytearray(n)
        self._attempt = array("l", [1]) * model.num_jobs
        self._holder = array("l", [-1]) * model.num_jobs
        self._run = array("l", [1]) * model.num_jobs  # Rule 6b; 0: not known (restore)
        self._counts = [0] * _NUM_STATUSES
        self._counts[_UNINITIALIZED] = model.num_jobs
        self._runners: dict[int, float] = {}  # runner id -> lease deadline
        self._lease_len: dict[int, float] = {}  # runner id -> its lease length
        self._runner_jobs: dict[int, set[int]] = {}
        self._buckets: dict[BucketKey, deque[int]] = {}
        self._bucket_order: list[BucketKey] = []
        self._order = _ORDER.get(model.sort_method, _ORDER["gpus_runtime_memory"])
        self.run_id = 1
        self.canceled = False
        self._completed_emitted = False
        up_ptr, up_idx = model.upstream_csr()
        self._up_ptr = up_ptr
        self._up_idx = up_idx
        # Per-handle change log, flushed into the effects by _finish (Rule 7).
        self._log_jobs: list[int] = []
        self._log_old: list[int] = []
        self._log_new: list[int] = []
        self._log_attempts: list[int] = []  # attempt changed without a status change
        self._log_leases: dict[int, float | None] = {}
        self._log_run = False
        self._effects: list[ev.Effect] = []

    # -----------------------------------------------------------------------------------------
    # Queries

    def status(self, node: int) -> JobStatus:
        self._check_node(node)
        return JobStatus(self._status[node])

    @property
    def statuses(self) -> bytearray:
        """Per-node status values (read-only by convention; barriers included)."""
        return self._status

    @property
    def attempts(self) -> array[int]:
        """Per-job attempt numbers (read-only by convention): the bulk reader, as
        :attr:`statuses` is for statuses (sorting a million jobs by attempt)."""
        return self._attempt

    def attempt(self, job: int) -> int:
        self._check_job(job)
        return self._attempt[job]

    def holder(self, job: int) -> int:
        """The runner holding a pending/running job, or -1."""
        self._check_job(job)
        return self._holder[job]

    def job_run(self, job: int) -> int:
        """The run a report of the job's current attempt carries (Rule 6b): the run it was
        last claimed or reset in; the workflow's run when that is not known (held since a
        restart whose rows did not say)."""
        self._check_job(job)
        return self._run[job] or self.run_id

    def counts(self) -> dict[JobStatus, int]:
        """Jobs per status (barrier nodes excluded); every status present."""
        return {s: self._counts[s] for s in JobStatus}

    @property
    def is_complete(self) -> bool:
        """Every job is in a final status."""
        c = self._counts
        return not any(c[s] for s in _NOT_FINAL)

    def runner_jobs(self, runner_id: int) -> frozenset[int]:
        return frozenset(self._runner_jobs.get(runner_id, ()))

    def lease_deadline(self, runner_id: int) -> float | None:
        return self._runners.get(runner_id)

    def get_timer(self) -> float | None:
        """The earliest lease deadline of a runner holding jobs, or None."""
        deadlines = [d for r, d in self._runners.items() if self._runner_jobs.get(r)]
        return min(deadlines) if deadlines else None

    # -----------------------------------------------------------------------------------------
    # Inputs

    def handle(self, event: ev.EngineInput, now: float) -> list[ev.Effect]:
        """Apply one input; return its effects. Raises EngineError (state unchanged)."""
        self._begin()
        match event:
            case ev.Initialize():
                self._initialize()
            case ev.ClaimJobs():
                self._claim(event, now)
            case ev.StartJobs():
                self._start(event, now)
            case ev.CompleteJobs():
                self._complete(event, now)
            case ev.Heartbeat():
                self._renew(event.runner_id, now, event.lease_s)
            case ev.ReleaseRunner():
                self._release_runner(event.runner_id)
            case ev.ReleaseJobs():
                self._release_jobs(event.runner_id, event.jobs)
            case ev.CancelWorkflow():
                resets.cancel(self)
            case ev.Reinitialize():
                resets.reinitialize(self, event)
            case ev.ResetStatus():
                resets.reset_status(self, event)
            case ev.DisableJobs():
                resets.disable(self, event)
            case ev.ConfirmFailed():
                resets.confirm_failed(self, event)
            case ev.AdvanceRun():
                resets.advance_run(self, event)
            case ev.SetJobResources():
                job_resources.set_job_resources(self, event)
            case ev.AddJobs():
                grow.add_jobs(self, event)
            case _:
                raise BadInput(f"unknown engine input {type(event).__name__}")
        return self._finish()

    def handle_timer(self, now: float) -> list[ev.Effect]:
        """Expire every lease due at ``now``: the runners' jobs go back to ready."""
        self._begin()
        expired = tuple(r for r, d in self._runners.items() if d <= now)
        for runner_id in expired:
            self._release_runner(runner_id)
        if expired:
            self._effects.append(ev.LeasesExpired(runner_ids=expired))
        return self._finish()

    @classmethod
    def restore(
        cls,
        model: WorkflowModel,
        *,
        statuses: Sequence[int],
        attempts: Sequence[int],
        holders: Mapping[int, int],
        leases: Mapping[int, float],
        run_id: int,
        canceled: bool,
        now: float,
        runs: Sequence[int] | None = None,
    ) -> Engine:
        """Rebuild an engine from stored rows (server restart).

        ``statuses`` has one value per node, barriers included. Pending recovery scripts are
        not stored, so a retried job restored from disk runs without one.

        ``runs``: per job, the run of its current attempt (``JobsUpdated.runs``). Without it,
        a pending/running job's run is not known (a selective reset may have moved the
        workflow's run on since it was claimed): a report of its current attempt then counts
        from its holder whatever its run, and from anyone for the workflow's run; every other
        job is taken to be at the workflow's run.
        """
        if len(statuses) != model.num_nodes or len(attempts) != model.num_jobs:
            raise BadInput("restore: statuses/attempts do not match the model")
        if runs is not None and len(runs) != model.num_jobs:
            raise BadInput("restore: runs do not match the model")
        engine = cls(model)
        engine._status[:] = bytes(statuses)
        engine._attempt = array("l", attempts)
        engine._counts = [0] * _NUM_STATUSES
        for s in engine._status[: model.num_jobs]:
            engine._counts[s] += 1
        engine.run_id = run_id
        engine.canceled = canceled
        engine._run = (array("l", runs) if runs is not None
                       else array("l", [run_id]) * model.num_jobs)
        for job, runner in holders.items():
            if engine._status[job] in (_PENDING, _RUNNING):
                engine._holder[job] = runner
                engine._runner_jobs.setdefault(runner, set()).add(job)
                if runs is None:
                    engine._run[job] = 0
        for runner, deadline in leases.items():
            engine._runners[runner] = deadline
        for runner in engine._runner_jobs:
            # A holder with no stored lease expires at the next timer: its jobs go back to
            # ready, and a late report from it still counts (Rule 6).
            engine._runners.setdefault(runner, now)
        status, outcome, up_ptr, up_idx = engine._status, _OUTCOME, engine._up_ptr, engine._up_idx
        for node in range(model.num_nodes):
            st = status[node]
            if st == _BLOCKED:
                unmet = 0
                for k in range(up_ptr[node], up_ptr[node + 1]):
                    o = outcome[status[up_idx[k]]]
                    if o == 0:
                        unmet += 1
                    elif o == 2 and node >= model.num_jobs:
                        engine._barrier_failed[node] = 1
                engine._unmet[node] = unmet
            elif st == _READY and node < model.num_jobs:
                engine._enqueue(node)
        engine._completed_emitted = engine.is_complete and model.num_jobs > 0
        return engine

    # -----------------------------------------------------------------------------------------
    # The one place statuses change

    def _set(self, node: int, cause: Cause) -> int:
        old = self._status[node]
        new = _TABLE[cause][old]
        if new < 0:  # pragma: no cover - callers validate first; this guards Rule 1
            raise _illegal(old, cause, node)
        self._status[node] = new
        if node < self.model.num_jobs:
            self._counts[old] -= 1
            self._counts[new] += 1
        self._log_jobs.append(node)
        self._log_old.append(old)
        self._log_new.append(new)
        return new

    def _set_all(self, nodes: Sequence[int], cause: Cause) -> None:
        """:meth:`_set` for many distinct nodes at once (a claim's jobs, a batch's results):
        the same table, checked for every node before the first change, in a few passes
        instead of a call a node (``_set`` was a third of a claim's engine time under
        cProfile; ``bench_core.py``'s drain, median of 3 interleaved rounds: 12.0 -> 9.0 s)."""
        if not nodes:
            return
        status, row, n = self._status, _TABLE[cause], self.model.num_jobs
        olds = bytes(map(status.__getitem__, nodes))
        news = list(map(row.__getitem__, olds))
        if min(news) < 0:  # pragma: no cover - callers validate first; this guards Rule 1
            bad = news.index(-1)
            raise _illegal(olds[bad], cause, nodes[bad])
        for node, new in zip(nodes, news, strict=True):
            status[node] = new
        counts = self._counts
        moves = Counter(zip(olds, news, strict=True)) if max(nodes) < n else Counter(
            (old, new) for node, old, new in zip(nodes, olds, news, strict=True) if node < n)
        for (old, new), k in moves.items():
            counts[old] -= k
            counts[new] += k
        self._log_jobs.extend(nodes)
        self._log_old.extend(olds)
        self._log_new.extend(news)

    def _begin(self) -> None:
        self._log_jobs = []
        self._log_old = []
        self._log_new = []
        self._log_attempts = []
        self._log_leases = {}
        self._log_run = False
        self._effects = []

    def _finish(self) -> list[ev.Effect]:
        """The effects of one input, in a fixed order: what changed (statuses, job rows,
        leases, the run), then what happened (claims, results, ...), then whether the
        workflow completed, and last its :class:`~torc_core.events.Progress`."""
        effects: list[ev.Effect] = []
        log_jobs = self._log_jobs
        if log_jobs:
            effects.append(
                ev.StatusesChanged(
                    jobs=tuple(log_jobs), old=tuple(self._log_old), new=tuple(self._log_new)
                )
            )
        if log_jobs or self._log_attempts:
            # Arrays, not tuples, and no de-duplication (a job listed twice carries the same
            # final values twice): initializing a million jobs would otherwise allocate ~100 MB
            # of tuples, ints and a dict for one effect.
            n = self.model.num_jobs
            touched = array("l", log_jobs)
            touched.extend(self._log_attempts)
            if self.model.num_barriers:
                touched = array("l", filter(n.__gt__, touched))
            if touched:
                effects.append(ev.JobsUpdated(
                    jobs=touched,
                    statuses=bytes(map(self._status.__getitem__, touched)),
                    attempts=array("l", map(self._attempt.__getitem__, touched)),
                    holders=array("l", map(self._holder.__getitem__, touched)),
                    runs=array("l", map(self._run.__getitem__, touched)),
                ))
        for runner_id, deadline in self._log_leases.items():
            effects.append(ev.LeaseChanged(runner_id=runner_id, deadline=deadline))
        if self._log_run:
            effects.append(ev.RunChanged(run_id=self.run_id, canceled=self.canceled))
        effects.extend(self._effects)
        if not self._completed_emitted and self.model.num_jobs and self.is_complete:
            self._completed_emitted = True
            effects.append(ev.WorkflowCompleted(counts=self.counts()))
        effects.append(ev.Progress(counts=tuple(self._counts), is_complete=self.is_complete,
                                   canceled=self.canceled, run_id=self.run_id))
        self._begin()
        return effects

    # -----------------------------------------------------------------------------------------
    # Readiness and propagation

    def _bucket_key(self, job: int) -> BucketKey:
        m = self.model
        return (
            m.priority[job] if m.priority is not None else 0,
            m.gpus[job],
            m.runtime[job],
            m.memory[job],
            m.cpus[job],
            m.nodes[job],
            m.scheduler[job],
        )

    def _enqueue(self, job: int) -> None:
        key = self._bucket_key(job)
        queue = self._buckets.get(key)
        if queue is None:
            queue = self._buckets[key] = deque()
            self._bucket_order.append(key)
            self._bucket_order.sort(key=self._order, reverse=True)
        queue.append(job)

    def _make_ready(self, node: int, cause: Cause, work: list[int]) -> None:
        """A node whose dependencies are all final: a job becomes ready, a barrier passes."""
        if node >= self.model.num_jobs:
            self._set(node, Cause.BARRIER_PASS)
            work.append(node)
        else:
            self._set(node, cause)
            self._enqueue(node)

    def _signal_failure(self, barrier: int, work: list[int]) -> None:
        """A dependency of ``barrier`` failed: cancel, at once, every dependent behind it that
        cancels on failure (through nested barriers too)."""
        stack = [barrier]
        m, status, cancel, bfailed = (
            self.model,
            self._status,
            self.model.cancel_on_failure,
            self._barrier_failed,
        )
        while stack:
            b = stack.pop()
            if bfailed[b]:
                continue
            bfailed[b] = 1
            for k in range(m.down_ptr[b], m.down_ptr[b + 1]):
                d = m.down_idx[k]
                if _OUTCOME[status[d]]:
                    continue
                if d >= m.num_jobs:
                    stack.append(d)
                elif cancel[d]:
                    self._set(d, Cause.UPSTREAM_FAILED)
                    work.append(d)

    def _propagate(self, work: list[int]) -> None:
        """Tell the dependents of every node in ``work`` (each just became final)."""
        m, status, unmet = self.model, self._status, self._unmet
        cancel = m.cancel_on_failure
        num_jobs, down_ptr, down_idx = m.num_jobs, m.down_ptr, m.down_idx
        while work:
            node = work.pop()
            failed = _OUTCOME[status[node]] == 2
            for k in range(down_ptr[node], down_ptr[node + 1]):
                d = down_idx[k]
                if _OUTCOME[status[d]]:
                    continue
                if failed:
                    if d >= num_jobs:
                        self._signal_failure(d, work)
                    elif cancel[d]:
                        self._set(d, Cause.UPSTREAM_FAILED)
                        work.append(d)
                        continue
                left = unmet[d] - 1
                unmet[d] = left
                if left == 0:
                    self._make_ready(d, Cause.RELEASE, work)

    def _initialize(self, nodes: Iterable[int] | None = None) -> None:
        """Blocked or ready for every uninitialized node (``nodes``, or all of them)."""
        m, status, unmet, up_ptr, up_idx = (
            self.model,
            self._status,
            self._unmet,
            self._up_ptr,
            self._up_idx,
        )
        if nodes is None:
            nodes = [n for n in range(m.num_nodes) if status[n] == _UNINITIALIZED]
        else:
            nodes = [n for n in nodes if status[n] == _UNINITIALIZED]
        if self.canceled:
            return
        if len(nodes) == m.num_nodes:
            # A fresh workflow: every dependency is unfinished, no failure can be seen.
            self._initialize_fresh()
            return
        cancel, num_jobs = m.cancel_on_failure, m.num_jobs
        to_cancel: list[int] = []
        failed_barriers: list[int] = []
        work: list[int] = []
        behind: dict[int, bool] = {}
        # Phase 1: count unfinished dependencies; a failed dependency outside the set counts
        # as finished, and is remembered to cancel or signal below. A barrier stands for its
        # dependencies: a failure behind it is seen as the N x M edges would see it (a
        # selective reset may leave a barrier that already passed a failure above the set).
        for n in nodes:
            count = 0
            saw_failure = False
            for k in range(up_ptr[n], up_ptr[n + 1]):
                u = up_idx[k]
                o = _OUTCOME[status[u]]
                if o == 0:
                    count += 1
                elif o == 2:
                    saw_failure = True
                if u >= num_jobs and not saw_failure and fails_behind(
                        u, num_jobs, _FAILS, status, up_ptr, up_idx, behind):
                    saw_failure = True
            unmet[n] = count
            self._barrier_failed[n] = 0
            if saw_failure and n >= m.num_jobs:
                failed_barriers.append(n)
            if saw_failure and n < m.num_jobs and cancel[n]:
                to_cancel.append(n)
                self._set(n, Cause.INITIALIZE_BLOCKED)
            elif count == 0:
                if n >= m.num_jobs:
                    self._set(n, Cause.BARRIER_PASS)
                    work.append(n)
                else:
                    self._set(n, Cause.INITIALIZE_READY)
                    self._enqueue(n)
            else:
                self._set(n, Cause.INITIALIZE_BLOCKED)
        # Phase 2: failures from outside act now, before any release below can race them.
        for n in to_cancel:
            self._set(n, Cause.UPSTREAM_FAILED)
            work.append(n)
        for b in failed_barriers:
            self._signal_failure(b, work)
        self._propagate(work)

    def _initialize_fresh(self) -> None:
        """Initialize with every node uninitialized: unmet counts are the in-degrees."""
        m, unmet, up_ptr = self.model, self._unmet, self._up_ptr
        work: list[int] = []
        num_jobs = m.num_jobs
        # A failure seen by a barrier in an earlier run must not hide this run's failures.
        self._barrier_failed = bytearray(m.num_nodes)
        for n in range(m.num_nodes):
            count = up_ptr[n + 1] - up_ptr[n]
            unmet[n] = count
            if count:
                self._set(n, Cause.INITIALIZE_BLOCKED)
            elif n >= num_jobs:
                self._set(n, Cause.BARRIER_PASS)
                work.append(n)
            else:
                self._set(n, Cause.INITIALIZE_READY)
                self._enqueue(n)
        self._propagate(work)

    # -----------------------------------------------------------------------------------------
    # Runner protocol

    @staticmethod
    def _check_lease(lease_s: float) -> None:
        if not lease_s > 0:
            raise BadInput(f"lease_s must be positive, got {lease_s}")

    def _renew(self, runner_id: int, now: float, lease_s: float) -> None:
        self._check_lease(lease_s)
        deadline = self._runners[runner_id] = now + lease_s
        self._lease_len[runner_id] = lease_s
        self._log_leases[runner_id] = deadline

    def _touch(self, runner_id: int, now: float) -> None:
        """Any sign of life renews a known runner's lease by its last length."""
        length = self._lease_len.get(runner_id)
        if length is not None and runner_id in self._runners:
            deadline = self._runners[runner_id] = now + length
            self._log_leases[runner_id] = deadline

    def _claim(self, event: ev.ClaimJobs, now: float) -> None:
        """Results first, then jobs the runner does not know it holds go back, then the claim:
        one input, so a refused claim (any part of it) changes nothing (Rule 2)."""
        if event.limit < 0:
            raise BadInput(f"claim limit must be >= 0, got {event.limit}")
        for name in ("cpus", "memory", "gpus", "nodes", "walltime_s"):
            value = getattr(event, name)
            if value is not None and value < 0:
                raise BadInput(f"claim {name} must be >= 0, got {value}")
        self._check_lease(event.lease_s)
        runner = event.runner_id
        kinds = [self._classify(r, runner) for r in event.results]
        if event.held is not None:
            for job in event.held:
                self._check_job(job)
        if event.results:
            self._apply_results(runner, event.results, kinds, now)
        if event.held is not None:
            lost = self._runner_jobs.get(runner, set()) - event.held
            if lost:
                self._release_jobs(runner, sorted(lost))
        self._renew(runner, now, event.lease_s)
        claimed: list[ev.ClaimedJob] = []
        if not self.canceled and event.limit:
            packing.pack(self, event, claimed)
        self._effects.append(
            ev.JobsClaimed(
                runner_id=event.runner_id,
                jobs=tuple(claimed),
                lease_deadline=self._runners[event.runner_id],
            )
        )

    def _start(self, event: ev.StartJobs, now: float) -> None:
        todo: list[int] = []
        for job in event.jobs:
            self._check_job(job)
            st = self._status[job]
            if st == _RUNNING and self._holder[job] == event.runner_id:
                continue  # repeated report
            if st != _PENDING or self._holder[job] != event.runner_id:
                raise IllegalTransition(
                    f"cannot start: it is {JobStatus(st).label}"
                    + ("" if st != _PENDING else f" and held by runner {self._holder[job]}"),
                    job=job,
                )
            todo.append(job)
        self._touch(event.runner_id, now)
        for job in todo:
            self._set(job, Cause.START)
        self._effects.append(ev.JobsStarted(runner_id=event.runner_id, jobs=tuple(todo)))

    def _classify(self, result: ev.JobResult, runner_id: int) -> int:
        """0 = duplicate (acknowledge, ignore), 1 = counts, 2 = counts late (after its lease
        was given back). Raises for a result that cannot be. The run compared is the job's
        (Rule 6b); when it is not known (restored), an earlier run's report counts only from
        the job's holder, the runner that was given its current attempt."""
        job = result.job
        self._check_job(job)
        st = self._status[job]
        current = self._attempt[job]
        run = self._run[job]
        if run:
            old_run = result.run_id < run
        else:
            run = self.run_id
            old_run = result.run_id < run and runner_id != self._holder[job]
        if old_run or result.attempt < current or _OUTCOME[st] or st == _PENDING_FAILED:
            return 0
        if result.run_id > run or result.attempt > current:
            raise BadInput(
                f"result for run {result.run_id} attempt {result.attempt}, but the "
                f"job is at run {run} attempt {current}", job=job,
            )
        if st in (_PENDING, _RUNNING):
            return 1
        if st == _READY:
            return 0 if result.terminated else 2
        raise IllegalTransition(f"cannot complete: it is {JobStatus(st).label}", job=job)

    def _complete(self, event: ev.CompleteJobs, now: float) -> None:
        # validate all before any change
        kinds = [self._classify(r, event.runner_id) for r in event.results]
        self._apply_results(event.runner_id, event.results, kinds, now)

    def _apply_results(self, runner_id: int, results: Sequence[ev.JobResult],
                       kinds: Sequence[int], now: float) -> None:
        """Results already classified (validated) by :meth:`_classify`."""
        accepted: list[ev.JobResult] = []
        duplicates: list[ev.JobResult] = []
        seen: set[tuple[int, int, int]] = set()
        work: list[int] = []
        handlers = self.model.failure_handlers
        handler_of = self.model.handler
        final: dict[Cause, list[int]] = {}  # final statuses, set together after the loop
        for result, kind in zip(results, kinds, strict=True):
            key = (result.job, result.run_id, result.attempt)
            if kind == 0 or key in seen:
                duplicates.append(result)
                continue
            seen.add(key)
            accepted.append(result)
            job = result.job
            late = kind == 2
            self._drop_holder(job)
            if result.terminated:
                final.setdefault(Cause.TERMINATE, []).append(job)
            elif result.return_code == 0:
                final.setdefault(Cause.LATE_SUCCEED if late else Cause.SUCCEED, []).append(job)
            else:
                h = handler_of[job]
                rule = handlers[h].rule_for(result.return_code) if h >= 0 else None
                if (rule is not None and self._attempt[job] <= rule.max_retries
                        and not result.recovery_failed):
                    self._attempt[job] += 1
                    if not late:  # a late result finds the job already back in the ready queue
                        self._set(job, Cause.RETRY)
                        self._enqueue(job)
                    else:
                        self._log_attempts.append(job)
                    self._effects.append(
                        ev.RetryScheduled(
                            job=job,
                            attempt=self._attempt[job],
                            return_code=result.return_code,
                            recovery_script=rule.recovery_script,
                        )
                    )
                elif self.model.use_pending_failed:
                    self._set(job, Cause.FAIL_PENDING)  # held: its dependents wait
                else:
                    final.setdefault(Cause.LATE_FAIL if late else Cause.FAIL, []).append(job)
        for cause, jobs in final.items():
            self._set_all(jobs, cause)
            work.extend(jobs)
        self._touch(runner_id, now)
        self._propagate(work)
        self._effects.append(
            ev.ResultsRecorded(runner_id=runner_id, accepted=tuple(accepted),
                               duplicates=tuple(duplicates))
        )

    def _drop_holder(self, job: int) -> None:
        runner = self._holder[job]
        if runner >= 0:
            self._holder[job] = -1
            held = self._runner_jobs.get(runner)
            if held is not None:
                held.discard(job)

    def _release_runner(self, runner_id: int) -> None:
        jobs = sorted(self._runner_jobs.pop(runner_id, ()))
        if self._runners.pop(runner_id, None) is not None:
            self._log_leases[runner_id] = None
        self._lease_len.pop(runner_id, None)
        self._give_back(runner_id, jobs)

    def _release_jobs(self, runner_id: int, jobs: Sequence[int]) -> None:
        for job in jobs:
            self._check_job(job)
            if self._holder[job] != runner_id:
                raise IllegalTransition(f"not held by runner {runner_id}", job=job)
        held = self._runner_jobs.get(runner_id, set())
        for job in jobs:
            held.discard(job)
        self._give_back(runner_id, sorted(set(jobs)))

    def _give_back(self, runner_id: int, jobs: Sequence[int]) -> None:
        """Jobs of a runner back to ready with the same attempt (Rule 6)."""
        released: list[int] = []
        for job in jobs:
            self._holder[job] = -1
            if self._status[job] in (_PENDING, _RUNNING):
                self._set(job, Cause.LEASE_LOST)
                self._enqueue(job)
                released.append(job)
        self._effects.append(ev.RunnerReleased(runner_id=runner_id, jobs=tuple(released)))

    # -----------------------------------------------------------------------------------------

    def _check_node(self, node: int) -> None:
        if not 0 <= node < self.model.num_nodes:
            raise UnknownJob("no such job in this workflow", job=node)

    def _check_job(self, job: int) -> None:
        if not 0 <= job < self.model.num_jobs:
            raise UnknownJob("no such job in this workflow", job=job)
