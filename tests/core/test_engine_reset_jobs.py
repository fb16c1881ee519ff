"""Selective reset (``ResetStatus(jobs=...)``): chosen jobs and their downstream are put back
for a new run while unrelated jobs keep running; the runs of the jobs that kept running still
count (Rule 6b)."""

from __future__ import annotations

import pytest
from engine_harness import Harness, of_type

from torc_core import BadInput, IllegalTransition, JobStatus, UnknownJob, WorkflowModel
from torc_core import events as ev
from torc_core.engine import Engine

S = JobStatus
# Two branches: 0 -> 1 and 2 -> 3.
BRANCHES = [(0, 1), (2, 3)]


def report(h: Harness, job: int, rc: int = 0, *, runner: int = 1,
           run_id: int | None = None) -> ev.ResultsRecorded:
    """What a runner sends: the run and attempt it was given with the job."""
    result = ev.JobResult(job=job, attempt=h.engine.attempt(job),
                          run_id=h.engine.job_run(job) if run_id is None else run_id,
                          return_code=rc)
    effects = h.send(ev.CompleteJobs(runner_id=runner, results=(result,)))
    recorded: ev.ResultsRecorded = of_type(effects, ev.ResultsRecorded)[0]
    return recorded


def branch_running() -> Harness:
    """Branch 0 -> 1 completed; job 2 claimed by runner 2 and running."""
    h = Harness(4, BRANCHES)
    h.init()
    assert sorted(h.claim(runner=2, limit=2)) == [0, 2]
    h.send(ev.StartJobs(runner_id=2, jobs=(2,)))
    report(h, 0, runner=2)
    assert h.claim(runner=1) == [1]
    report(h, 1)
    assert h.labels() == ["completed", "completed", "running", "blocked"]
    return h


def test_reset_jobs_while_another_branch_runs() -> None:
    h = branch_running()
    effects = h.send(ev.ResetStatus(jobs=(0,), initialize=True))
    assert h.labels() == ["ready", "blocked", "running", "blocked"]
    assert h.engine.run_id == 2
    reset = of_type(effects, ev.JobsReset)[0]
    assert (reset.jobs, reset.run_id) == ((0, 1), 2)
    assert of_type(effects, ev.RunChanged)[0].run_id == 2
    # The running job was not touched: same holder, attempt and run.
    assert (h.engine.holder(2), h.engine.attempt(2), h.engine.job_run(2)) == (2, 1, 1)
    assert 2 not in of_type(effects, ev.StatusesChanged)[0].jobs
    # Its report carries the run it was claimed in, and counts.
    recorded = report(h, 2, runner=2, run_id=1)
    assert len(recorded.accepted) == 1 and not recorded.duplicates
    assert h.labels() == ["ready", "blocked", "completed", "ready"]
    # The reset jobs rerun in run 2, and the workflow completes again.
    assert sorted(h.claim(runner=1)) == [0, 3]
    assert h.engine.job_run(0) == 2
    report(h, 0)
    report(h, 3)
    assert h.claim(runner=1) == [1]
    report(h, 1)
    assert h.engine.is_complete and h.labels() == ["completed"] * 4
    assert of_type(h.effects, ev.WorkflowCompleted)


def test_old_attempt_of_a_reset_job_is_a_duplicate() -> None:
    h = branch_running()
    h.send(ev.ResetStatus(jobs=(1,), initialize=True))
    assert h.labels() == ["completed", "ready", "running", "blocked"]
    stale = ev.JobResult(job=1, attempt=1, run_id=1, return_code=0)
    recorded = of_type(h.send(ev.CompleteJobs(runner_id=1, results=(stale,))),
                       ev.ResultsRecorded)[0]
    assert recorded.duplicates == (stale,) and h.labels()[1] == "ready"
    # A run no claim of the job carried is refused, as before.
    with pytest.raises(BadInput):
        h.engine.handle(ev.CompleteJobs(runner_id=2, results=(
            ev.JobResult(job=2, attempt=1, run_id=2, return_code=0),)), 0.0)


def test_refused_when_a_chosen_or_downstream_job_is_active_and_changes_nothing() -> None:
    # 0 -> 1 -> 2 ; 3 alone. 1 running, 2 waits for it.
    h = Harness(4, [(0, 1), (1, 2)])
    h.init()
    h.claim(runner=1, limit=1)
    report(h, 0)
    assert sorted(h.claim(runner=1)) == [1, 3]
    h.send(ev.StartJobs(runner_id=1, jobs=(1,)))
    before = h.snapshot()
    with pytest.raises(IllegalTransition) as refused:
        h.engine.handle(ev.ResetStatus(jobs=(0, 3), initialize=True), 0.0)
    assert refused.value.jobs == (1, 3)  # the running downstream job and the chosen pending one
    assert refused.value.naming(lambda j: str(100 + j)).startswith("jobs 101, 103: ")
    assert h.snapshot() == before
    # The whole reset keeps its rule: refused while anything runs.
    with pytest.raises(IllegalTransition):
        h.engine.handle(ev.ResetStatus(initialize=True), 0.0)
    assert h.snapshot() == before


def test_upstream_is_never_touched() -> None:
    # 0 -> 1 -> 2, all completed: resetting 1 makes it ready (its upstream is done).
    h = Harness(3, [(0, 1), (1, 2)])
    h.init()
    h.run_all()
    effects = h.send(ev.ResetStatus(jobs=(1,), initialize=True))
    assert h.labels() == ["completed", "ready", "blocked"]
    assert of_type(effects, ev.JobsReset)[0].jobs == (1, 2)
    # 0 -> 1 with 0 running: 1 may be reset (it is not active) and stays blocked.
    h = Harness(2, [(0, 1)])
    h.init()
    h.claim()
    h.send(ev.ResetStatus(jobs=(1,), initialize=True))
    assert h.labels() == ["pending", "blocked"]
    report(h, 0)
    assert h.labels() == ["completed", "ready"]


def test_bad_choices_are_refused_whole() -> None:
    h = Harness(3, [(0, 1)])
    h.init()
    h.run_all()
    before = h.snapshot()
    for event, error in (
        (ev.ResetStatus(jobs=(0, 7), initialize=True), UnknownJob),
        (ev.ResetStatus(jobs=(-1,)), UnknownJob),
        (ev.ResetStatus(jobs=()), BadInput),
        (ev.ResetStatus(jobs=(0,), failed_only=True), BadInput),
    ):
        with pytest.raises(error):
            h.engine.handle(event, 0.0)
        assert h.snapshot() == before


def test_without_initialize_the_jobs_wait_uninitialized() -> None:
    h = Harness(3, [(0, 1)])
    h.init()
    h.run_all()
    h.send(ev.ResetStatus(jobs=(0,)))
    assert h.labels() == ["uninitialized", "uninitialized", "completed"]
    h.init()
    assert h.labels() == ["ready", "blocked", "completed"]


def test_disabled_chosen_job_stays_disabled_and_its_downstream_reruns() -> None:
    h = Harness(2, [(0, 1)])
    h.init()
    h.send(ev.DisableJobs(jobs=(0,)))
    h.run_all()
    assert h.labels() == ["disabled", "completed"]
    effects = h.send(ev.ResetStatus(jobs=(0,), initialize=True))
    assert h.labels() == ["disabled", "ready"]
    assert of_type(effects, ev.JobsReset)[0].jobs == (1,)


def test_reset_of_a_canceled_workflow_runs_the_chosen_jobs() -> None:
    h = Harness(2)
    h.init()
    h.send(ev.CancelWorkflow())
    assert h.engine.canceled
    h.send(ev.ResetStatus(jobs=(1,), initialize=True))
    assert not h.engine.canceled and h.labels() == ["canceled", "ready"]


# Barriers: jobs 0, 1 -> barrier 4 -> jobs 2 (cancels on failure), 3 (does not).
BARRIER = [(0, 4), (1, 4), (4, 2), (4, 3)]
FULL = [(0, 2), (1, 2), (0, 3), (1, 3)]
CANCEL = [False, False, True, False]


def twins() -> tuple[Harness, Harness]:
    return (Harness(4, BARRIER, num_barriers=1, cancel_on_failure=CANCEL),
            Harness(4, FULL, cancel_on_failure=CANCEL))


def test_reset_above_a_barrier_resets_the_barrier_and_all_behind_it() -> None:
    for h in twins():
        h.init()
        h.run_all()
        effects = h.send(ev.ResetStatus(jobs=(0,), initialize=True))
        assert h.labels() == ["ready", "completed", "blocked", "blocked"]
        assert of_type(effects, ev.JobsReset)[0].jobs == (0, 2, 3)
        if h.model.num_barriers:
            assert h.engine.status(4) == S.BLOCKED
        h.run_all()
        assert h.labels() == ["completed"] * 4


def test_reset_below_a_barrier_sees_the_failure_behind_it() -> None:
    """The barrier passed job 0's failure long ago; job 2, reset alone, must be canceled
    again as the N x M edges would cancel it, and job 3 runs."""
    for h in twins():
        h.init()
        h.run_all(rc_of={0: 1})
        assert h.labels() == ["failed", "completed", "canceled", "completed"]
        h.send(ev.ResetStatus(jobs=(2, 3), initialize=True))
        assert h.labels() == ["failed", "completed", "canceled", "ready"]


def test_reset_below_a_blocked_barrier_with_a_failure_behind_it() -> None:
    for h in twins():
        h.init()
        h.claim(limit=2)
        report(h, 0, rc=1)  # job 1 still pending: the barrier waits for it
        assert h.labels() == ["failed", "pending", "canceled", "blocked"]
        h.send(ev.ResetStatus(jobs=(2, 3), initialize=True))
        assert h.labels() == ["failed", "pending", "canceled", "blocked"]
        report(h, 1)
        assert h.labels() == ["failed", "completed", "canceled", "ready"]


def test_jobs_updated_carries_the_runs() -> None:
    h = branch_running()
    effects = h.send(ev.ResetStatus(jobs=(0,), initialize=True))
    updated = of_type(effects, ev.JobsUpdated)[0]
    assert {j: r for j, r in zip(updated.jobs, updated.runs, strict=True)} == {0: 2, 1: 2}
    effects = h.send(ev.ClaimJobs(runner_id=1, limit=1, lease_s=60))
    updated = of_type(effects, ev.JobsUpdated)[0]
    assert list(updated.jobs) == [0] and list(updated.runs) == [2]


def restored(h: Harness, *, with_runs: bool) -> Engine:
    e = h.engine
    n = h.model.num_jobs
    return Engine.restore(
        h.model, statuses=list(e.statuses), attempts=[e.attempt(j) for j in range(n)],
        holders={j: e.holder(j) for j in range(n) if e.holder(j) >= 0},
        leases={2: 600.0}, run_id=e.run_id, canceled=e.canceled, now=0.0,
        runs=[e.job_run(j) for j in range(n)] if with_runs else None)


def test_restore_with_runs_is_exact_and_without_trusts_the_holder() -> None:
    h = branch_running()
    h.send(ev.ResetStatus(jobs=(0,), initialize=True))
    late = ev.JobResult(job=2, attempt=1, run_id=1, return_code=0)
    exact = restored(h, with_runs=True)
    assert exact.job_run(2) == 1
    for runner in (2, 3):  # the run says it is this attempt's report, whoever sends it
        e = restored(h, with_runs=True)
        recorded = of_type(e.handle(ev.CompleteJobs(runner_id=runner, results=(late,)), 1.0),
                           ev.ResultsRecorded)[0]
        assert recorded.accepted == (late,)
    blind = restored(h, with_runs=False)
    assert blind.job_run(2) == 2  # not known: the workflow's run is the best answer
    recorded = of_type(blind.handle(ev.CompleteJobs(runner_id=3, results=(late,)), 1.0),
                       ev.ResultsRecorded)[0]
    assert recorded.duplicates == (late,)  # an earlier run, from a runner not holding it
    recorded = of_type(blind.handle(ev.CompleteJobs(runner_id=2, results=(late,)), 1.0),
                       ev.ResultsRecorded)[0]
    assert recorded.accepted == (late,)  # from its holder: counts
    assert S(blind.statuses[2]) == S.COMPLETED and S(blind.statuses[3]) == S.READY
    with pytest.raises(BadInput):
        Engine.restore(h.model, statuses=list(h.engine.statuses), attempts=[1] * 4,
                       holders={}, leases={}, run_id=2, canceled=False, now=0.0, runs=[1])


def test_many_chosen_jobs_and_their_downstream() -> None:
    """2,000 chosen jobs of a 20,000-job workflow: each and its one dependent rerun."""
    n = 20_000
    edges = [(i, i + n // 2) for i in range(n // 2)]
    h = Harness(n, edges)
    h.init()
    h.run_all()
    effects = h.send(ev.ResetStatus(jobs=tuple(range(0, n // 2, 5)), initialize=True))
    assert len(of_type(effects, ev.JobsReset)[0].jobs) == 2 * (n // 10)
    assert h.engine.counts()[S.READY] == n // 10


def test_model_without_edges_resets_only_the_chosen() -> None:
    e = Engine(WorkflowModel.build(3, []))
    e.handle(ev.Initialize(), 0.0)
    e.handle(ev.ClaimJobs(runner_id=1, limit=3, lease_s=10), 0.0)
    e.handle(ev.CompleteJobs(runner_id=1, results=tuple(
        ev.JobResult(job=j, attempt=1, run_id=1, return_code=0) for j in range(3))), 0.0)
    e.handle(ev.ResetStatus(jobs=(1, 1), initialize=True), 0.0)  # repeated: once
    assert [S(s).label for s in e.statuses] == ["completed", "ready", "completed"]
