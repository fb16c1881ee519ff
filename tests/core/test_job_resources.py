"""``SetJobResources``: new requirements for chosen jobs; claims pack ready jobs by them at
once; refused (changing nothing) for pending/running jobs and bad entries."""

from __future__ import annotations

import pytest
from engine_harness import Harness, of_type

from torc_core import BadInput, IllegalTransition, UnknownJob
from torc_core import events as ev

GB = 1 << 30


def res(job: int, **values: int | None) -> ev.JobResources:
    return ev.JobResources(job=job, **values)


def test_ready_job_packs_by_its_new_memory() -> None:
    h = Harness(2, memory=[GB, GB])
    h.init()
    effects = h.send(ev.SetJobResources(jobs=(res(0, memory=3 * GB),)))
    changed = of_type(effects, ev.ResourcesChanged)[0]
    assert changed.jobs == (0,)
    assert changed.old == ((1, GB, h.model.runtime[0]),)
    assert changed.new == ((1, 3 * GB, h.model.runtime[0]),)
    assert isinstance(effects[-1], ev.Progress)
    # 2 GiB free: only job 1 fits now; job 0 needs a runner with 3 GiB.
    assert h.claim(runner=1, cpus=8, memory=2 * GB) == [1]
    assert h.claim(runner=2, cpus=8, memory=2 * GB) == []
    assert h.claim(runner=3, cpus=8, memory=3 * GB) == [0]


def test_smaller_runtime_fits_a_shorter_walltime_and_cpus_count() -> None:
    h = Harness(1, runtime=[7200], cpus=[1])
    h.init()
    h.send(ev.SetJobResources(jobs=(res(0, runtime=600, cpus=4),)))
    assert h.claim(runner=1, cpus=2, walltime_s=1000) == []  # 4 CPUs now
    assert h.claim(runner=2, cpus=4, walltime_s=1000) == [0]


def test_blocked_and_finished_jobs_take_the_values_when_they_become_ready() -> None:
    h = Harness(2, [(0, 1)], memory=[GB, GB])
    h.init()
    assert h.claim(cpus=8, memory=8 * GB) == [0]
    h.send(ev.SetJobResources(jobs=(res(1, memory=5 * GB),)))
    h.finish(0)
    assert h.claim(runner=2, cpus=8, memory=4 * GB) == []
    assert h.claim(runner=3, cpus=8, memory=5 * GB) == [1]


def test_a_stale_bucket_entry_is_never_claimed_by_the_old_shape() -> None:
    """A ready job canceled leaves an entry in its bucket; after its memory grows and a reset
    makes it ready again, only the new shape may claim it."""
    h = Harness(1, memory=[GB])
    h.init()
    h.send(ev.CancelWorkflow())
    h.send(ev.SetJobResources(jobs=(res(0, memory=4 * GB),)))
    h.send(ev.ResetStatus(jobs=(0,), initialize=True))
    assert h.labels() == ["ready"]
    assert h.claim(runner=1, cpus=8, memory=2 * GB) == []
    assert h.claim(runner=2, cpus=8, memory=4 * GB) == [0]


def test_refused_for_pending_or_running_jobs_naming_them_and_changing_nothing() -> None:
    h = Harness(3, memory=[GB, GB, GB])
    h.init()
    assert sorted(h.claim(limit=2, cpus=8, memory=8 * GB)) == [0, 1]
    h.send(ev.StartJobs(runner_id=1, jobs=(1,)))
    before = h.snapshot(), list(h.model.memory)
    with pytest.raises(IllegalTransition) as info:
        h.send(ev.SetJobResources(jobs=(res(2, memory=2 * GB), res(0, memory=2 * GB),
                                        res(1, memory=2 * GB))))
    assert info.value.jobs == (0, 1)
    assert info.value.status_hint == 409
    assert (h.snapshot(), list(h.model.memory)) == before
    assert h.claim(runner=2, cpus=8, memory=GB) == [2]  # still packed by 1 GiB


@pytest.mark.parametrize("items, error", [
    ((), BadInput),
    ((res(0, memory=GB), res(0, cpus=2)), BadInput),
    ((res(0),), BadInput),
    ((res(0, cpus=0),), BadInput),
    ((res(0, memory=-1),), BadInput),
    ((res(0, runtime=-5),), BadInput),
    ((res(0, memory=GB), res(9, memory=GB)), UnknownJob),
])
def test_bad_input_changes_nothing(items: tuple[ev.JobResources, ...],
                                   error: type[Exception]) -> None:
    h = Harness(2, memory=[GB, GB])
    h.init()
    before = h.snapshot(), list(h.model.memory), list(h.model.cpus), list(h.model.runtime)
    with pytest.raises(error):
        h.send(ev.SetJobResources(jobs=items))
    after = h.snapshot(), list(h.model.memory), list(h.model.cpus), list(h.model.runtime)
    assert after == before
    assert sorted(h.claim(cpus=8, memory=2 * GB)) == [0, 1]


def test_same_values_change_nothing_and_say_so() -> None:
    h = Harness(1, memory=[GB])
    h.init()
    effects = h.send(ev.SetJobResources(jobs=(res(0, memory=GB),)))
    assert of_type(effects, ev.ResourcesChanged) == []
    assert h.claim(cpus=1, memory=GB) == [0]


def test_many_ready_jobs_in_one_bucket_move_together() -> None:
    h = Harness(5, memory=[GB] * 5)
    h.init()
    h.send(ev.SetJobResources(jobs=tuple(res(j, memory=2 * GB) for j in (1, 3))))
    # largest first: one 2 GiB job (1), then the 1 GiB left takes job 0
    assert sorted(h.claim(runner=1, cpus=8, memory=3 * GB)) == [0, 1]
    assert sorted(h.claim(runner=2, cpus=8, memory=2 * GB)) == [3]
    assert sorted(h.claim(runner=3, cpus=8, memory=8 * GB)) == [2, 4]
