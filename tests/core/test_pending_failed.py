"""Torc's use_pending_failed: a failure with no retry left is held as pending_failed (its
dependents wait, the workflow is not complete) until it is reset or confirmed failed; and a
failure handler's retry is withheld when the runner says its recovery script failed."""

from __future__ import annotations

import pytest
from engine_harness import Harness

from torc_core import events as ev
from torc_core.errors import IllegalTransition
from torc_core.spec import FailureHandler, FailureHandlerRule


def _fail(h: Harness, job: int, rc: int = 1, **kw: object) -> None:
    result = ev.JobResult(job=job, attempt=h.engine.attempt(job), run_id=h.engine.run_id,
                          return_code=rc, **kw)  # type: ignore[arg-type]
    h.send(ev.CompleteJobs(runner_id=1, results=(result,)))


def test_a_held_failure_keeps_its_dependents_waiting() -> None:
    h = Harness(3, [(0, 1), (1, 2)], use_pending_failed=True)
    h.init()
    assert h.claim() == [0]
    _fail(h, 0)
    assert h.labels() == ["pending_failed", "blocked", "blocked"]
    assert not h.engine.is_complete
    assert h.claim() == []


def test_confirmed_it_is_a_failure_and_dependents_are_canceled() -> None:
    h = Harness(3, [(0, 1), (1, 2)], use_pending_failed=True)
    h.init()
    h.claim()
    _fail(h, 0)
    h.send(ev.ConfirmFailed())
    assert h.labels() == ["failed", "canceled", "canceled"]
    assert h.engine.is_complete


def test_reset_failed_only_runs_a_held_failure_again() -> None:
    h = Harness(2, [(0, 1)], use_pending_failed=True)
    h.init()
    h.claim()
    _fail(h, 0)
    h.send(ev.ResetStatus(failed_only=True, initialize=True))
    assert h.labels() == ["ready", "blocked"]
    h.run_all()
    assert h.labels() == ["completed", "completed"]


def test_only_held_failures_can_be_confirmed() -> None:
    h = Harness(2, use_pending_failed=True)
    h.init()
    h.claim()
    _fail(h, 0)
    before = h.snapshot()
    with pytest.raises(IllegalTransition) as err:
        h.send(ev.ConfirmFailed(jobs=(0, 1)))
    assert err.value.jobs == (1,)
    assert h.snapshot() == before  # refused: nothing changed
    h.send(ev.ConfirmFailed(jobs=(0,)))
    assert h.labels()[0] == "failed"


def test_without_the_setting_a_failure_is_final() -> None:
    h = Harness(2, [(0, 1)])
    h.init()
    h.claim()
    _fail(h, 0)
    assert h.labels() == ["failed", "canceled"]


def test_a_failed_recovery_script_withholds_the_retry() -> None:
    handler = FailureHandler(name="h", rules=(FailureHandlerRule(
        match_all_exit_codes=True, recovery_script="fix.sh", max_retries=3),))
    h = Harness(2, handler=[0, 0], failure_handlers=(handler,))
    h.init()
    h.claim()
    _fail(h, 0)  # recovery ran and succeeded: retried
    assert h.labels()[0] == "ready" and h.engine.attempt(0) == 2
    _fail(h, 1, recovery_failed=True, info=("recovery script exited 3: not retried",))
    assert h.labels()[1] == "failed" and h.engine.attempt(1) == 1
