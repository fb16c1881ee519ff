"""The order claims take ready jobs in: priority first (Torc PR #227), then the workflow's
jobs_sort_method; ties keep the order the jobs became ready in."""

from __future__ import annotations

import pytest
from engine_harness import Harness

from torc_core import events as ev
from torc_core.graph import compile_workflow
from torc_core.parse import parse_spec

GIB = 1 << 30


def _order(h: Harness) -> list[int]:
    h.init()
    return [h.claim(limit=1)[0] for _ in range(h.model.num_jobs)]


def test_higher_priority_first_then_packing_order() -> None:
    h = Harness(5, priority=[0, 2, 0, 2, 1], gpus=[0, 0, 1, 0, 0], runtime=[1, 1, 1, 5, 1])
    # priority 2: job 3 (longer runtime) before job 1; then 4; then 2 (a GPU) before 0
    assert _order(h) == [3, 1, 4, 2, 0]


def test_all_zero_priorities_cost_nothing() -> None:
    assert Harness(3, priority=[0, 0, 0]).model.priority is None


@pytest.mark.parametrize(("method", "expected"), [
    ("gpus_runtime_memory", [1, 0, 2]),  # runtime 20, 10, 5
    ("gpus_memory_runtime", [2, 0, 1]),  # memory 8, 4, 1 GiB
    ("none", [0, 1, 2]),  # the order they became ready in
])
def test_jobs_sort_method(method: str, expected: list[int]) -> None:
    h = Harness(3, runtime=[10, 20, 5], memory=[4 * GIB, 1 * GIB, 8 * GIB], sort_method=method)
    assert _order(h) == expected


def test_priority_and_sort_method_come_from_the_spec() -> None:
    spec = parse_spec({"name": "w", "jobs_sort_method": "gpus_memory_runtime", "jobs": [
        {"name": "a", "command": "x", "priority": 3}, {"name": "b", "command": "x"}]})
    model = compile_workflow(spec)
    assert list(model.priority or []) == [3, 0]
    assert model.sort_method == "gpus_memory_runtime"


def test_a_job_queued_twice_is_claimed_once() -> None:
    """A ready job reset (and made ready again) sits in its queue twice; a claim that reaches
    both entries takes it once (the claim's jobs change status together, so the second entry
    is not skipped by its status, as it was when each job changed alone)."""
    h = Harness(3, sort_method="none")
    h.init()
    h.send(ev.ResetStatus(jobs=(0,), initialize=True))  # 0 was ready: now queued twice
    assert h.labels() == ["ready"] * 3
    assert h.claim(limit=5) == [0, 1, 2]
    counts = h.engine.counts()
    assert (counts[ev.JobStatus.PENDING], counts[ev.JobStatus.READY]) == (3, 0)
    assert h.claim(limit=5) == []
