"""Every transition and rule of the engine, fed as plain synchronous inputs."""

from __future__ import annotations

import pytest
from engine_harness import Harness, of_type

from torc_core import (
    TRANSITIONS,
    BadInput,
    Cause,
    EngineError,
    FailureHandler,
    FailureHandlerRule,
    IllegalTransition,
    JobStatus,
    UnknownJob,
)
from torc_core import events as ev
from torc_core.engine import Engine

S = JobStatus
DIAMOND = [(0, 1), (0, 2), (1, 3), (2, 3)]


def test_initialize_sets_blocked_and_ready() -> None:
    h = Harness(4, DIAMOND)
    effects = h.init()
    assert h.labels() == ["ready", "blocked", "blocked", "blocked"]
    (changed,) = of_type(effects, ev.StatusesChanged)
    assert changed.jobs == (0, 1, 2, 3)
    assert changed.old == (S.UNINITIALIZED,) * 4
    assert h.engine.counts()[S.READY] == 1


def test_dependents_ready_in_the_same_call() -> None:
    h = Harness(4, DIAMOND)
    h.init()
    assert h.claim() == [0]
    effects = h.finish(0)
    assert h.labels() == ["completed", "ready", "ready", "blocked"]
    (changed,) = of_type(effects, ev.StatusesChanged)
    assert list(zip(changed.jobs, changed.new, strict=True)) == [
        (0, S.COMPLETED),
        (1, S.READY),
        (2, S.READY),
    ]
    assert sorted(h.claim()) == [1, 2]
    h.finish(1)
    assert h.labels()[3] == "blocked"  # still waits for 2
    effects = h.finish(2)
    assert h.labels()[3] == "ready"
    h.finish(h.claim()[0])
    assert of_type(h.effects, ev.WorkflowCompleted)
    assert h.engine.is_complete


def test_workflow_completed_emitted_once() -> None:
    h = Harness(2)
    h.init()
    jobs = h.claim()
    h.finish(jobs[0])
    assert not of_type(h.effects, ev.WorkflowCompleted)
    h.finish(jobs[1])
    (done,) = of_type(h.effects, ev.WorkflowCompleted)
    assert done.counts[S.COMPLETED] == 2
    h.send(ev.Heartbeat(runner_id=1, lease_s=5))
    assert not of_type(h.effects, ev.WorkflowCompleted)


def test_failure_cancels_dependents_recursively() -> None:
    h = Harness(4, DIAMOND)
    h.init()
    h.claim()
    h.finish(0, rc=2)
    assert h.labels() == ["failed", "canceled", "canceled", "canceled"]
    assert h.engine.is_complete


def test_failure_does_not_cancel_when_flag_off() -> None:
    h = Harness(3, [(0, 2), (1, 2)], cancel_on_failure=[True, True, False])
    h.init()
    h.claim()
    h.finish(0, rc=1)
    assert h.labels() == ["failed", "pending", "blocked"]
    h.finish(1)
    assert h.labels() == ["failed", "completed", "ready"]


def test_cancel_is_immediate_not_after_other_dependencies() -> None:
    h = Harness(3, [(0, 2), (1, 2)])
    h.init()
    h.claim()
    h.finish(0, rc=1)
    assert h.labels()[2] == "canceled"  # while 1 still runs
    h.finish(1)
    assert h.labels() == ["failed", "completed", "canceled"]


def test_terminated_result_counts_as_failure() -> None:
    h = Harness(2, [(0, 1)])
    h.init()
    h.claim()
    h.finish(0, terminated=True, rc=-15)
    assert h.labels() == ["terminated", "canceled"]


def test_barrier_releases_only_after_all_and_passes_by_itself() -> None:
    # jobs 0,1,2 -> barrier 5 -> jobs 3,4
    edges = [(0, 5), (1, 5), (2, 5), (5, 3), (5, 4)]
    h = Harness(5, edges, num_barriers=1)
    h.init()
    assert sorted(h.claim()) == [0, 1, 2]
    h.finish(0)
    h.finish(1)
    assert h.labels()[3:] == ["blocked", "blocked"]
    assert h.engine.status(5) == S.BLOCKED
    h.finish(2)
    assert h.engine.status(5) == S.COMPLETED
    assert h.labels()[3:] == ["ready", "ready"]
    assert h.engine.counts()[S.COMPLETED] == 3  # barriers are not counted as jobs


def test_barrier_failure_cancels_at_once_and_others_wait() -> None:
    edges = [(0, 4), (1, 4), (4, 2), (4, 3)]
    h = Harness(4, edges, num_barriers=1, cancel_on_failure=[True, True, True, False])
    h.init()
    h.claim()
    h.finish(0, rc=1)
    assert h.labels() == ["failed", "pending", "canceled", "blocked"]
    h.finish(1)
    assert h.labels() == ["failed", "completed", "canceled", "ready"]


def test_barrier_forwards_failures_again_after_a_full_reset() -> None:
    """A barrier remembered the first run's failure, so after a full reset a second failure
    no longer canceled its dependents at once (found by the property test)."""
    edges = [(0, 4), (1, 4), (4, 2), (4, 3)]
    h = Harness(4, edges, num_barriers=1, cancel_on_failure=[True, True, True, False])
    h.init()
    h.claim()
    h.finish(0, rc=1)
    h.finish(1)
    h.run_all()
    h.send(ev.ResetStatus(initialize=True))
    assert h.labels() == ["ready", "ready", "blocked", "blocked"]
    h.claim()
    h.finish(0, rc=1)
    assert h.labels() == ["failed", "pending", "canceled", "blocked"]


def test_nested_barriers_forward_failure() -> None:
    # 0 -> b3 -> b4 -> 1 (cancels), 2 (does not)
    h = Harness(
        3, [(0, 3), (3, 4), (4, 1), (4, 2)], num_barriers=2, cancel_on_failure=[True, True, False]
    )
    h.init()
    h.claim()
    h.finish(0, rc=1)
    assert h.labels() == ["failed", "canceled", "ready"]


def test_failure_handler_retries_then_fails() -> None:
    handler = FailureHandler(
        name="retry",
        rules=(FailureHandlerRule(exit_codes=(3,), max_retries=2, recovery_script="fix.sh"),),
    )
    h = Harness(2, [(0, 1)], handler=[0, -1], failure_handlers=(handler,))
    h.init()
    assert h.claim() == [0]
    effects = h.finish(0, rc=3)
    (retry,) = of_type(effects, ev.RetryScheduled)
    assert (retry.job, retry.attempt, retry.recovery_script) == (0, 2, "fix.sh")
    assert h.labels() == ["ready", "blocked"]
    claimed = h.send(ev.ClaimJobs(runner_id=1, limit=5, lease_s=60))
    (c,) = of_type(claimed, ev.JobsClaimed)[0].jobs
    assert c.attempt == 2  # the recovery script ran in the runner, before it reported
    h.finish(0, rc=3)
    assert h.engine.attempt(0) == 3
    h.claim()
    h.finish(0, rc=3)  # retries used up
    assert h.labels() == ["failed", "canceled"]


def test_failure_handler_other_exit_code_fails_at_once() -> None:
    handler = FailureHandler(name="h", rules=(FailureHandlerRule(exit_codes=(3,), max_retries=5),))
    h = Harness(1, handler=[0], failure_handlers=(handler,))
    h.init()
    h.claim()
    h.finish(0, rc=4)
    assert h.labels() == ["failed"]


def test_match_all_exit_codes() -> None:
    handler = FailureHandler(
        name="h", rules=(FailureHandlerRule(match_all_exit_codes=True, max_retries=1),)
    )
    h = Harness(1, handler=[0], failure_handlers=(handler,))
    h.init()
    h.claim()
    h.finish(0, rc=99)
    assert h.labels() == ["ready"]
    h.claim()
    h.finish(0, rc=0)
    assert h.labels() == ["completed"]


def test_repeated_report_is_a_harmless_duplicate() -> None:
    h = Harness(2, [(0, 1)])
    h.init()
    h.claim()
    h.finish(0)
    before = h.snapshot()
    effects = h.finish(0, attempt=1)
    (recorded,) = of_type(effects, ev.ResultsRecorded)
    assert recorded.accepted == () and len(recorded.duplicates) == 1
    assert not of_type(effects, ev.StatusesChanged)
    assert h.snapshot() == before


def test_duplicate_within_one_batch_counts_once() -> None:
    h = Harness(1)
    h.init()
    h.claim()
    r = ev.JobResult(job=0, attempt=1, run_id=1, return_code=0)
    effects = h.send(ev.CompleteJobs(runner_id=1, results=(r, r)))
    (recorded,) = of_type(effects, ev.ResultsRecorded)
    assert len(recorded.accepted) == 1 and len(recorded.duplicates) == 1


def test_start_then_complete() -> None:
    h = Harness(1)
    h.init()
    h.claim(runner=4)
    h.send(ev.StartJobs(runner_id=4, jobs=(0,)))
    assert h.labels() == ["running"]
    h.send(ev.StartJobs(runner_id=4, jobs=(0,)))  # repeated start is harmless
    h.finish(0, runner=4)
    assert h.labels() == ["completed"]


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (ev.StartJobs(runner_id=1, jobs=(1,)), IllegalTransition),  # job 1 is blocked
        (ev.StartJobs(runner_id=2, jobs=(0,)), IllegalTransition),  # held by runner 1
        (ev.StartJobs(runner_id=1, jobs=(0, 7)), UnknownJob),
        (
            ev.CompleteJobs(
                runner_id=1, results=(ev.JobResult(job=1, attempt=1, run_id=1, return_code=0),)
            ),
            IllegalTransition,
        ),
        (
            ev.CompleteJobs(
                runner_id=1,
                results=(
                    ev.JobResult(job=0, attempt=1, run_id=1, return_code=0),
                    ev.JobResult(job=9, attempt=1, run_id=1, return_code=0),
                ),
            ),
            UnknownJob,
        ),
        (
            ev.CompleteJobs(
                runner_id=1, results=(ev.JobResult(job=0, attempt=2, run_id=1, return_code=0),)
            ),
            BadInput,
        ),
        (
            ev.CompleteJobs(
                runner_id=1, results=(ev.JobResult(job=0, attempt=1, run_id=5, return_code=0),)
            ),
            BadInput,
        ),
        (ev.ClaimJobs(runner_id=1, limit=-1, lease_s=5), BadInput),
        (ev.ClaimJobs(runner_id=1, limit=1, lease_s=0), BadInput),
        (ev.ClaimJobs(runner_id=1, limit=1, lease_s=5, cpus=-2), BadInput),
        (ev.Heartbeat(runner_id=1, lease_s=-1), BadInput),
        (ev.DisableJobs(jobs=(2, 0)), IllegalTransition),  # 0 is pending
        (ev.ResetStatus(failed_only=False), IllegalTransition),  # jobs are pending
        (ev.Reinitialize(), IllegalTransition),
    ],
)
def test_illegal_input_raises_and_changes_nothing(event: ev.EngineInput, error: type) -> None:
    h = Harness(3, [(0, 1)])
    h.init()
    assert sorted(h.claim()) == [0, 2]
    before = h.snapshot()
    counts = h.engine.counts()
    with pytest.raises(error) as info:
        h.engine.handle(event, 1.0)
    assert isinstance(info.value, EngineError)
    assert info.value.status_hint in (404, 409, 422)
    assert h.snapshot() == before
    assert h.engine.counts() == counts


def test_every_table_entry_is_reachable_from_a_legal_status() -> None:
    for (old, cause), new in TRANSITIONS.items():
        assert isinstance(old, JobStatus) and isinstance(cause, Cause)
        assert isinstance(new, JobStatus)
    # Final statuses only leave through a reset.
    for old, cause in TRANSITIONS:
        if old in (S.COMPLETED, S.FAILED, S.CANCELED, S.TERMINATED, S.DISABLED):
            assert cause == Cause.RESET


def test_claim_packs_by_resources_largest_first() -> None:
    gib = 1 << 30
    h = Harness(
        5,
        cpus=[1, 4, 2, 1, 8],
        memory=[gib, 8 * gib, gib, gib, gib],
        gpus=[0, 0, 1, 0, 0],
        runtime=[60, 60, 60, 3600, 60],
    )
    h.init()
    # 7 CPUs, 10 GiB, 1 GPU: the GPU job first, then the longest, then the biggest memory;
    # then nothing else fits (job 0 needs memory that job 1 took).
    jobs = h.claim(cpus=7, memory=10 * gib, gpus=1)
    assert jobs == [2, 3, 1]
    assert h.labels()[4] == "ready"  # 8 CPUs never fit


def test_claim_respects_walltime_and_scheduler() -> None:
    h = Harness(3, runtime=[60, 7200, 60], scheduler=[-1, -1, 1], num_schedulers=2)
    h.init()
    assert h.claim(cpus=8, walltime_s=3600, scheduler=0) == [0]
    assert h.claim(runner=2, cpus=8, walltime_s=10_000, scheduler=1) == [1, 2]


def test_queue_mode_ignores_resources() -> None:
    h = Harness(5, cpus=[64] * 5)
    h.init()
    assert h.claim(limit=3) == [0, 1, 2]
    assert h.claim(limit=3) == [3, 4]
    assert h.claim(limit=3) == []


def test_lease_expiry_requeues_same_attempt_and_late_report_counts() -> None:
    h = Harness(2, [(0, 1)])
    h.init()
    h.claim(runner=1, lease_s=10)
    assert h.engine.get_timer() == 10
    h.now = 11
    effects = h.engine.handle_timer(h.now)
    assert of_type(effects, ev.LeasesExpired)[0].runner_ids == (1,)
    assert h.labels() == ["ready", "blocked"]
    assert h.engine.attempt(0) == 1
    assert h.engine.get_timer() is None
    # The old runner comes back and reports: the result counts.
    effects = h.finish(0, runner=1)
    assert of_type(effects, ev.ResultsRecorded)[0].accepted
    assert h.labels() == ["completed", "ready"]


def test_lease_renewed_by_heartbeat_and_completion() -> None:
    h = Harness(2)
    h.init()
    h.claim(runner=1, limit=2, lease_s=10)
    h.now = 8
    h.send(ev.Heartbeat(runner_id=1, lease_s=10))
    h.now = 15
    assert not of_type(h.engine.handle_timer(h.now), ev.LeasesExpired)
    h.finish(0)
    assert h.engine.lease_deadline(1) == 25


def test_release_runner_gives_jobs_back() -> None:
    h = Harness(3)
    h.init()
    h.claim(runner=3, limit=2)
    effects = h.send(ev.ReleaseRunner(runner_id=3))
    assert of_type(effects, ev.RunnerReleased)[0].jobs == (0, 1)
    assert h.labels() == ["ready"] * 3
    assert h.claim(runner=4) == [2, 0, 1]


def test_cancel_workflow() -> None:
    h = Harness(3, [(0, 1)])
    h.init()
    h.claim(limit=1)
    effects = h.send(ev.CancelWorkflow())
    assert of_type(effects, ev.WorkflowCanceled)
    assert h.labels() == ["canceled"] * 3
    assert h.engine.canceled and h.engine.is_complete
    assert h.claim() == []
    # A report arriving after the cancel is acknowledged, not counted.
    recorded = of_type(h.finish(0), ev.ResultsRecorded)[0]
    assert recorded.duplicates and not recorded.accepted


def test_disable_counts_as_satisfied() -> None:
    h = Harness(2, [(0, 1)])
    h.init()
    h.send(ev.DisableJobs(jobs=(0,)))
    assert h.labels() == ["disabled", "ready"]


def test_reset_failed_only_reruns_failed_part() -> None:
    # 0 -> 1 -> 2 ; 3 independent
    h = Harness(4, [(0, 1), (1, 2)])
    h.init()
    h.run_all(rc_of={1: 1})
    assert h.labels() == ["completed", "failed", "canceled", "completed"]
    h.send(ev.ResetStatus(failed_only=True))
    assert h.labels() == ["completed", "uninitialized", "uninitialized", "completed"]
    assert h.engine.run_id == 2
    h.init()
    assert h.labels() == ["completed", "ready", "blocked", "completed"]
    assert h.engine.attempt(1) == 1
    h.run_all()
    assert h.labels() == ["completed"] * 4


def test_reset_all() -> None:
    h = Harness(2, [(0, 1)])
    h.init()
    h.run_all()
    h.send(ev.ResetStatus())
    h.init()
    assert h.labels() == ["ready", "blocked"]


def test_reinitialize_reruns_changed_inputs_and_downstream_only() -> None:
    # 0 -> 1 -> 2, 3 -> 4 ; job 1 reads file 7, job 3 reads file 8
    h = Harness(5, [(0, 1), (1, 2), (3, 4)], input_files=[[], [7], [], [8], []])
    h.init()
    h.run_all()
    effects = h.send(ev.Reinitialize(changed_files=frozenset({7}), dry_run=True))
    assert of_type(effects, ev.ReinitializePlanned)[0].jobs == (1, 2)
    assert h.labels() == ["completed"] * 5  # dry run changed nothing
    effects = h.send(ev.Reinitialize(changed_files=frozenset({7})))
    plan = of_type(effects, ev.ReinitializePlanned)[0]
    assert (plan.jobs, plan.dry_run, plan.run_id) == ((1, 2), False, 2)
    assert h.labels() == ["completed", "ready", "blocked", "completed", "completed"]
    assert not h.engine.is_complete
    h.run_all()
    assert h.engine.is_complete and h.labels() == ["completed"] * 5


def test_reinitialize_user_data_and_stale_report() -> None:
    h = Harness(2, [(0, 1)], input_user_data=[[0], []])
    h.init()
    h.claim()
    h.finish(0)
    h.claim()
    h.finish(1)
    h.send(ev.Reinitialize(changed_user_data=frozenset({0})))
    assert h.labels() == ["ready", "blocked"]
    # A report from the previous run is a duplicate.
    stale = ev.JobResult(job=0, attempt=1, run_id=1, return_code=0)
    recorded = of_type(h.send(ev.CompleteJobs(runner_id=1, results=(stale,))), ev.ResultsRecorded)[
        0
    ]
    assert recorded.duplicates == (stale,)


def test_reinitialize_with_upstream_failure_outside_set_cancels() -> None:
    # 0 fails; 1 (depends on 0) canceled. A reinitialize of 1 only re-cancels it.
    h = Harness(3, [(0, 1)], input_files=[[], [5], []])
    h.init()
    h.run_all(rc_of={0: 1})
    h.send(ev.Reinitialize(changed_files=frozenset({5})))
    # 0 is not completed, so it reruns too (everything not completed reruns).
    assert h.labels() == ["ready", "blocked", "completed"]


def test_restore_rebuilds_equivalent_engine() -> None:
    edges = [(0, 5), (1, 5), (5, 2), (5, 3), (3, 4)]
    h = Harness(5, edges, num_barriers=1)
    h.init()
    h.claim(runner=1, limit=1)
    restored = Engine.restore(
        h.model,
        statuses=list(h.engine.statuses),
        attempts=[h.engine.attempt(j) for j in range(5)],
        holders={0: 1},
        leases={1: 60.0},
        run_id=1,
        canceled=False,
        now=0.0,
    )
    assert restored.counts() == h.engine.counts()
    for e in (h.engine, restored):
        e.handle(
            ev.CompleteJobs(
                runner_id=1, results=(ev.JobResult(job=0, attempt=1, run_id=1, return_code=0),)
            ),
            1.0,
        )
        claimed = e.handle(ev.ClaimJobs(runner_id=2, limit=9, lease_s=5), 1.0)
        assert [c.job for c in of_type(claimed, ev.JobsClaimed)[0].jobs] == [1]
        e.handle(
            ev.CompleteJobs(
                runner_id=2, results=(ev.JobResult(job=1, attempt=1, run_id=1, return_code=0),)
            ),
            2.0,
        )
        assert [JobStatus(s).label for s in e.statuses] == [
            "completed",
            "completed",
            "ready",
            "ready",
            "blocked",
            "completed",
        ]


def test_empty_workflow() -> None:
    h = Harness(0)
    h.init()
    assert h.engine.is_complete
    assert h.claim() == []


def test_long_chain_has_no_recursion_limit() -> None:
    n = 50_000
    h = Harness(n, [(i, i + 1) for i in range(n - 1)], cancel_on_failure=[True] * n)
    h.init()
    h.claim()
    h.finish(0, rc=1)
    assert h.engine.counts()[S.CANCELED] == n - 1


def test_release_jobs_gives_back_only_those_jobs() -> None:
    h = Harness(3)
    h.init()
    h.claim(runner=1, limit=3)
    effects = h.send(ev.ReleaseJobs(runner_id=1, jobs=(1,)))
    assert of_type(effects, ev.RunnerReleased)[0].jobs == (1,)
    assert h.labels() == ["pending", "ready", "pending"]
    assert h.engine.runner_jobs(1) == frozenset({0, 2})
    before = h.snapshot()
    with pytest.raises(IllegalTransition):
        h.engine.handle(ev.ReleaseJobs(runner_id=2, jobs=(0,)), 0.0)
    assert h.snapshot() == before


def test_advance_run_moves_the_run_without_touching_jobs() -> None:
    h = Harness(2)
    h.init()
    effects = h.send(ev.AdvanceRun(run_id=4))
    assert h.engine.run_id == 4 and h.labels() == ["ready", "ready"]
    assert of_type(effects, ev.RunChanged)[0].run_id == 4
    assert not of_type(h.send(ev.AdvanceRun(run_id=4)), ev.RunChanged)  # already there
    h.claim()
    with pytest.raises(IllegalTransition):  # a runner holds jobs of run 4
        h.engine.handle(ev.AdvanceRun(run_id=5), 0.0)
    with pytest.raises(BadInput):
        h.engine.handle(ev.AdvanceRun(run_id=2), 0.0)
    assert h.engine.run_id == 4
