"""RunnerState's decisions, driven step by step with explicit times (no clock, no I/O).

These pin the runner's policy where the loop's tests cannot without waiting: the queue's
size from the completion rate, when a report is due, how long the loop waits, when the
heartbeat, the idle timeout and the allocation's end come due.
"""

from __future__ import annotations

from typing import Any

import pytest

from torc_cli.gpus import GpuPoolError
from torc_cli.runner_state import HEARTBEAT_INTERVAL_S, RunnerState, heartbeat_interval


def job(jid: int, **fields: Any) -> dict[str, Any]:
    return {"id": jid, "command": "true", **fields}


def result(jid: int) -> dict[str, Any]:
    return {"job_id": jid, "status": "completed", "return_code": 0}


def queue_mode(**kw: Any) -> RunnerState:
    args: dict[str, Any] = dict(cpus=2, memory_bytes=2**30, max_parallel=4, max_batch=100,
                                prefetch_horizon_s=1.0)
    args.update(kw)
    state = RunnerState(**args)
    state.start(0.0)
    return state


def test_queue_mode_claims_the_free_slots_and_no_queue_without_a_rate() -> None:
    state = queue_mode()
    assert state.claim_size(0.0) == 4
    state.claimed([job(i) for i in range(4)])
    assert state.claim_size(0.0) == 0  # queued count as taken
    started = [state.next_to_start() for _ in range(5)]
    assert [j["id"] for j in started[:4] if j] == [0, 1, 2, 3]
    assert started[4] is None
    for j in started[:4]:
        assert j is not None
        state.launch(j, 0.0)
    assert state.claim_size(0.0) == 0
    assert state.claim_resources() == {}  # -j N ignores the jobs' resources


def test_queue_target_follows_the_completion_rate() -> None:
    state = queue_mode()
    # 50 jobs end within the first second: 50/s x 1 s horizon -> 50 queued beyond the slots
    for i in range(50):
        state.launch(job(i), 0.0)
        state.ended(i, result(i))
    state.reported(50)
    assert state.claim_size(1.0) == 4 + 50
    assert state.target_queue == 50
    # a window shorter than RATE_WINDOW_S does not move the estimate
    assert state.claim_size(1.01) == 54
    # nothing ends for 10 s: the smoothed rate halves towards 0 (long jobs: no queue)
    state.claim_size(11.0)
    assert state.target_queue == 25
    assert queue_mode(max_batch=10).claim_size(0.0) == 4  # at most max_batch a claim


def test_queue_target_capped_by_max_batch() -> None:
    state = queue_mode(max_batch=10)
    for i in range(500):
        state.launch(job(i), 0.0)
        state.ended(i, result(i))
    state.reported(500)
    state.claim_size(1.0)
    assert state.target_queue == 10
    assert state.claim_size(1.0) == 10


def test_resource_mode_accounts_cpus_memory_and_gpu_devices() -> None:
    state = RunnerState(cpus=4, memory_bytes=8 * 2**30, gpu_ids=("a", "b"))
    state.start(0.0)
    assert state.claim_size(0.0) == 4
    assert state.launch(job(1, num_cpus=3, memory_bytes=2**30, num_gpus=1), 0.0) == ("a",)
    assert state.claim_resources() == {"cpus": 1, "memory_bytes": 7 * 2**30, "gpus": 1}
    assert state.claim_size(0.0) == 1
    assert state.launch(job(2, num_cpus=1, num_gpus=0), 0.0) == ()
    with pytest.raises(GpuPoolError):
        state.launch(job(3, num_cpus=0, num_gpus=2), 0.0)
    state.ended(1, result(1))
    assert state.claim_resources() == {"cpus": 3, "memory_bytes": 8 * 2**30, "gpus": 2}
    assert state.held_ids() == [2, 1]  # running, then unreported


def test_start_reports_are_due_after_the_delay_once() -> None:
    state = RunnerState(cpus=4, memory_bytes=2**30, start_report_delay_s=0.5)
    state.start(0.0)
    state.launch(job(1), 10.0)
    state.launch(job(2), 10.2)
    assert state.starts_due(10.4) == []
    assert "starts" in state.due(10.5)
    assert state.starts_due(10.5) == [1]
    assert state.starts_due(10.7) == [2]
    assert state.starts_due(20.0) == []  # reported once


def test_cycle_due_when_the_queue_is_half_drained_or_a_batch_is_full() -> None:
    state = queue_mode(max_batch=3)
    state.target_queue = 8
    state.claimed([job(i) for i in range(10)])
    state.launch(job(100), 0.0)
    state.ended(100, result(100))
    assert not state.cycle_due()  # 10 queued > 8 // 2: the result can wait
    assert not state.wake_after_end()
    for _ in range(6):
        state.queue.popleft()
    assert state.cycle_due()  # 4 queued
    state.queue.extend(job(i) for i in range(20, 30))
    for i in (101, 102):
        state.launch(job(i), 0.0)
        state.ended(i, result(i))
    assert state.cycle_due()  # a full batch of results
    assert state.report_batch() == [result(100), result(101), result(102)]


def test_a_full_claim_is_followed_at_once_only_when_the_queue_is_low() -> None:
    """Jobs that ended during the round trip were refilled from the queue: claiming again
    for just those would be a round trip per handful of jobs."""
    state = queue_mode()
    state.target_queue = 8
    state.claimed([job(i) for i in range(12)])
    for _ in range(4):
        j = state.next_to_start()
        assert j is not None
        state.launch(j, 0.0)
    state.ended(0, result(0))  # one ended during the round trip: its slot takes a queued job
    j = state.next_to_start()
    assert j is not None
    state.launch(j, 0.0)
    assert state.claim_size(0.0) == 1
    assert not state.batch_was_full(12, 12, 0.0)  # 7 queued > 8 // 2
    for _ in range(3):
        state.queue.popleft()
    assert state.batch_was_full(12, 12, 0.0)  # 4 queued: as low as makes a cycle due
    assert not state.batch_was_full(12, 11, 0.0)  # the server had no more
    resources = RunnerState(cpus=4, memory_bytes=2**30)
    resources.start(0.0)
    assert resources.batch_was_full(4, 4, 0.0)  # no queue: free CPUs are reason enough


def test_next_wakeup_waits_for_results_starts_or_the_poll() -> None:
    state = RunnerState(cpus=4, memory_bytes=2**30, max_report_delay_s=0.25,
                        start_report_delay_s=0.5, poll_interval_s=2.0)
    state.start(0.0)
    assert state.next_wakeup(100.0) == 102.0  # nothing: poll the server
    state.launch(job(1), 100.0)
    assert state.next_wakeup(100.0) == 100.5  # a start report will be due
    state.ended(1, result(1))
    assert state.next_wakeup(100.1) == pytest.approx(100.35)  # a result waits at most 0.25 s
    state.stop("test")
    assert state.next_wakeup(100.1) == 102.1


def test_heartbeat_interval_and_due_time() -> None:
    assert heartbeat_interval(1800) == HEARTBEAT_INTERVAL_S
    assert heartbeat_interval(6) == 2.0
    assert heartbeat_interval(1) == 1.0
    state = RunnerState(cpus=1, memory_bytes=1)
    state.start(0.0, lease_s=12)
    assert state.heartbeat_at(50.0) == 54.0
    assert not state.heartbeat_due(53.9, 50.0)
    assert "heartbeat" in state.due(54.0, 50.0)


def test_idle_timeout_counts_from_the_last_busy_moment() -> None:
    state = RunnerState(cpus=1, memory_bytes=1, idle_timeout_s=30)
    state.start(100.0)
    assert not state.idle_expired(130.0)
    assert state.idle_expired(130.5)
    state.launch(job(1), 131.0)
    assert not state.idle_expired(500.0)  # running: never idle
    state.note_busy(500.0)
    state.ended(1, result(1))
    assert not state.idle_expired(600.0)  # an unreported result is not idle either
    state.reported(1)
    assert not state.idle_expired(530.0)
    assert "idle" in state.due(530.5)
    assert RunnerState(cpus=1, memory_bytes=1).idle_expired(1e9) is False  # no timeout


def test_allocation_end_terminates_before_the_end_and_shortens_claims() -> None:
    state = RunnerState(cpus=1, memory_bytes=1, end_buffer_s=60)
    state.start(1000.0, end_in_s=600, termination_lead_s=30)
    assert state.end_at == 1600.0
    assert state.terminate_at == 1570.0
    assert state.walltime_s(1000.0) == 540.0
    assert state.walltime_s(1590.0) == 0.0
    assert "terminate" not in state.due(1569.9)
    assert "terminate" in state.due(1570.0)
    no_end = RunnerState(cpus=1, memory_bytes=1)
    no_end.start(0.0)
    assert no_end.walltime_s(0.0) is None and no_end.terminate_at is None


def test_stop_drops_the_queue_and_keeps_the_first_reason() -> None:
    state = queue_mode()
    state.claimed([job(1), job(2)])
    assert state.stop("first")
    assert not state.stop("second")
    assert state.stopping == "first" and not state.queue
    assert state.next_to_start() is None
    assert state.finished_stopping()
    state.claimed([job(3)])
    assert state.next_to_start() is None  # stopping: nothing starts


def test_held_failures_and_stuck_only_when_idle_and_nothing_moves() -> None:
    state = RunnerState(cpus=1, memory_bytes=1)
    assert state.held_failures({"pending_failed": 3}) == 3
    assert state.held_failures({"pending_failed": 3, "running": 1}) == 0
    assert state.stuck({"ready": 2})
    assert not state.stuck({"ready": 2, "pending": 1})
    state.launch(job(1), 0.0)
    assert state.held_failures({"pending_failed": 3}) == 0
    assert not state.stuck({"ready": 2})
