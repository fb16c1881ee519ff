"""The rules behind recover, correct-resources and watch --auto-schedule, without a server."""

from __future__ import annotations

from torc_cli.recovery_plan import AutoSchedule, diagnose

MIB = 1 << 20


def test_ready_jobs_with_no_allocation_are_scheduled_at_once() -> None:
    policy = AutoSchedule()
    assert policy.reason(0.0, ready=3, retry_ready=0, live_allocations=1) is None
    reason = policy.reason(0.0, ready=3, retry_ready=0, live_allocations=0)
    assert reason == "3 job(s) ready and no allocation pending or running"


def test_retry_jobs_past_the_threshold_then_the_cooldown() -> None:
    policy = AutoSchedule(threshold=5, cooldown_s=100.0, stranded_s=1000.0)
    assert policy.reason(0.0, ready=6, retry_ready=4, live_allocations=2) is None
    assert policy.reason(10.0, ready=7, retry_ready=5, live_allocations=2) == (
        "5 retry job(s) waiting (threshold 5)")
    policy.scheduled(10.0)
    assert policy.reason(50.0, ready=9, retry_ready=8, live_allocations=3) is None  # cooling
    assert policy.reason(111.0, ready=9, retry_ready=8, live_allocations=3) is not None


def test_a_few_retry_jobs_are_scheduled_once_stranded() -> None:
    policy = AutoSchedule(threshold=5, cooldown_s=100.0, stranded_s=1000.0)
    assert policy.reason(0.0, ready=2, retry_ready=2, live_allocations=1) is None
    assert policy.reason(999.0, ready=2, retry_ready=2, live_allocations=1) is None
    assert "stranded" in (policy.reason(1000.0, ready=2, retry_ready=2,
                                        live_allocations=1) or "")
    # the wait starts again once no retry job waits
    assert policy.reason(1001.0, ready=0, retry_ready=0, live_allocations=1) is None
    assert policy.reason(1500.0, ready=1, retry_ready=1, live_allocations=1) is None


def test_diagnosis_from_the_cause_then_the_return_code() -> None:
    job = {"id": 4, "name": "j", "num_cpus": 1, "memory_bytes": 100 * MIB, "runtime_s": 60}
    oom = diagnose(job, {"status": "failed", "return_code": 137, "exec_time_s": 5.0})
    timeout = diagnose(job, {"status": "terminated", "return_code": 152, "exec_time_s": 61.0})
    told = diagnose(job, {"status": "failed", "return_code": 1, "exec_time_s": 5.0,
                          "failure_cause": "oom"})
    other = diagnose(job, {"status": "failed", "return_code": 1, "exec_time_s": 5.0})
    assert [d.cause for d in (oom, timeout, told, other)] == [
        "oom", "timeout", "oom", "unknown"]
