"""Property tests: random workflows and random interleavings of runner and user inputs.

Two engines are driven in lockstep: one whose all-to-all stage is compressed through a
barrier node, and one with the full N x M edges. Besides the invariants below, every job must
have the same status in both after every step: that is what "a barrier behaves exactly as the
full N x M would" means.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from torc_core import Engine, EngineError, JobStatus, WorkflowModel
from torc_core import events as ev
from torc_core.status import FAILED_STATUSES, FINAL_STATUSES

S = JobStatus
LEASE = 10.0


class Mirror:
    """What a store learns of an engine from its effects alone (Rule 7): must always equal
    the engine's own state, or the server would write rows that differ from memory."""

    def __init__(self, engine: Engine) -> None:
        n = engine.model.num_jobs
        self.rows = {j: (int(S.UNINITIALIZED), 1, -1, 1) for j in range(n)}
        self.nodes = {k: int(S.UNINITIALIZED) for k in range(n, engine.model.num_nodes)}
        self.leases: dict[int, float | None] = {}
        self.run = (engine.run_id, engine.canceled)
        self.counts: tuple[int, ...] = ()

    def apply(self, effects: list[ev.Effect]) -> None:
        assert isinstance(effects[-1], ev.Progress)
        # A growth first (the rows and barriers it makes), then what changed them.
        for eff in sorted(effects, key=lambda e: not isinstance(e, ev.JobsAdded)):
            if isinstance(eff, ev.JobsUpdated):
                for j, st_, a, h, r in zip(eff.jobs, eff.statuses, eff.attempts, eff.holders,
                                           eff.runs, strict=True):
                    self.rows[j] = (st_, a, h, r)
            elif isinstance(eff, ev.StatusesChanged):
                for node, new in zip(eff.jobs, eff.new, strict=True):
                    if node in self.nodes:
                        self.nodes[node] = new
            elif isinstance(eff, ev.LeaseChanged):
                self.leases[eff.runner_id] = eff.deadline
            elif isinstance(eff, ev.RunChanged):
                self.run = (eff.run_id, eff.canceled)
            elif isinstance(eff, ev.Progress):
                self.counts = eff.counts
            elif isinstance(eff, ev.JobsAdded):  # barriers move up; their rows do not change
                moved = eff.barriers_from - eff.first
                self.nodes = {k + moved: v for k, v in self.nodes.items()}
                for j in range(eff.first, eff.first + eff.count):
                    self.rows[j] = (int(S.UNINITIALIZED), 1, -1, self.run[0])
                total = eff.barriers_from + len(self.nodes)
                for k in range(total, total + eff.new_barriers):
                    self.nodes[k] = int(S.UNINITIALIZED)

    def check(self, engine: Engine) -> None:
        for j, row in self.rows.items():
            assert row == (int(engine.status(j)), engine.attempt(j), engine.holder(j),
                           engine.job_run(j)), j
        for node, status in self.nodes.items():
            assert status == engine.statuses[node], node
        for runner, deadline in self.leases.items():
            assert deadline == engine.lease_deadline(runner), runner
        assert self.run == (engine.run_id, engine.canceled)
        if self.counts:
            assert self.counts == tuple(engine.counts()[s] for s in S)


class EngineMachine(RuleBasedStateMachine):
    @initialize(
        stage_a=st.integers(1, 4),
        stage_b=st.integers(1, 4),
        extra=st.integers(0, 3),
        data=st.data(),
    )
    def build(self, stage_a: int, stage_b: int, extra: int, data: st.DataObject) -> None:
        # Jobs: [pre...][A...][B...][post...]; A -> B all-to-all; random edges elsewhere (i < j).
        pre = data.draw(st.integers(0, 2))
        post = extra
        n = pre + stage_a + stage_b + post
        a = list(range(pre, pre + stage_a))
        b = list(range(pre + stage_a, pre + stage_a + stage_b))
        others = [(i, j) for i in range(n) for j in range(i + 1, n) if not (i in a and j in b)]
        chosen = data.draw(
            st.lists(st.sampled_from(others), unique=True, max_size=6) if others else st.just([])
        )
        cancel = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
        barrier = n
        full_edges = [*chosen, *((i, j) for i in a for j in b)]
        compressed = [*chosen, *((i, barrier) for i in a), *((barrier, j) for j in b)]
        self.n = n
        self.full = Engine(WorkflowModel.build(n, full_edges, cancel_on_failure=cancel))
        self.comp = Engine(
            WorkflowModel.build(n, compressed, num_barriers=1, cancel_on_failure=cancel)
        )
        self.engines = (self.full, self.comp)
        self.mirrors = (Mirror(self.full), Mirror(self.comp))
        self.deps = {j: {i for i, k in full_edges if k == j} for j in range(n)}
        self.cancel = cancel
        self.now = 0.0
        self.send(ev.Initialize())

    def send(self, event: ev.EngineInput, *, legal: bool = False) -> list[list[ev.Effect]]:
        """Both engines must agree on accepting or refusing; ``legal`` inputs must pass."""
        outcomes = []
        for engine, mirror in zip(self.engines, self.mirrors, strict=True):
            try:
                effects = engine.handle(event, self.now)
            except EngineError as exc:
                outcomes.append(("error", type(exc)))
                continue
            mirror.apply(effects)
            outcomes.append(("ok", effects))
        assert outcomes[0][0] == outcomes[1][0], outcomes
        if legal:
            assert outcomes[0][0] == "ok", (event, outcomes)
        return [o[1] for o in outcomes if o[0] == "ok"]  # type: ignore[misc]

    def held(self) -> list[tuple[int, int]]:
        return [
            (j, self.full.holder(j))
            for j in range(self.n)
            if self.full.status(j) in (S.PENDING, S.RUNNING)
        ]

    # -- rules ----------------------------------------------------------------------------

    @rule(runner=st.integers(1, 3))
    def claim_all(self, runner: int) -> None:
        self.send(ev.ClaimJobs(runner_id=runner, limit=100, lease_s=LEASE), legal=True)

    @precondition(lambda self: self.held())
    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        job, runner = data.draw(st.sampled_from(self.held()))
        self.send(ev.StartJobs(runner_id=runner, jobs=(job,)), legal=True)

    @precondition(lambda self: self.held())
    @rule(data=st.data(), rc=st.sampled_from([0, 0, 0, 1]), terminated=st.booleans())
    def complete(self, data: st.DataObject, rc: int, terminated: bool) -> None:
        job, runner = data.draw(st.sampled_from(self.held()))
        result = ev.JobResult(
            job=job,
            attempt=self.full.attempt(job),
            run_id=self.full.job_run(job),  # the run it was claimed in (Rule 6b)
            return_code=rc,
            terminated=terminated and rc != 0,
        )
        self.send(ev.CompleteJobs(runner_id=runner, results=(result,)), legal=True)
        # Reporting again is harmless.
        for effects in self.send(ev.CompleteJobs(runner_id=runner, results=(result,))):
            recorded = next(e for e in effects if isinstance(e, ev.ResultsRecorded))
            assert not recorded.accepted

    @rule(dt=st.floats(1, 2 * LEASE))
    def advance_time(self, dt: float) -> None:
        self.now += dt
        for engine, mirror in zip(self.engines, self.mirrors, strict=True):
            mirror.apply(engine.handle_timer(self.now))

    @rule(runner=st.integers(1, 3))
    def heartbeat(self, runner: int) -> None:
        self.send(ev.Heartbeat(runner_id=runner, lease_s=LEASE), legal=True)

    @rule()
    def cancel_workflow(self) -> None:
        self.send(ev.CancelWorkflow(), legal=True)

    @rule(failed_only=st.booleans(), together=st.booleans())
    def reset(self, failed_only: bool, together: bool) -> None:
        if together:  # the server's way: one input
            self.send(ev.ResetStatus(failed_only=failed_only, initialize=True))
        elif self.send(ev.ResetStatus(failed_only=failed_only)):
            self.send(ev.Initialize(), legal=True)

    @rule(data=st.data(), together=st.booleans())
    def reset_jobs(self, data: st.DataObject, together: bool) -> None:
        """A selective reset while other jobs may run: accepted exactly when no chosen job or
        job downstream of one is pending or running; jobs outside that part keep their
        status, attempt, holder and run (the running ones report as if nothing happened)."""
        chosen = data.draw(st.lists(st.integers(0, self.n - 1), min_size=1, max_size=3))
        part = set(chosen)
        for j in range(self.n):  # deps only point back (i < j), so one pass closes it
            if self.deps[j] & part:
                part.add(j)
        active = sorted(j for j in part if self.full.status(j) in (S.PENDING, S.RUNNING))
        rows = [[(e.status(j), e.attempt(j), e.holder(j), e.job_run(j)) for j in range(self.n)]
                for e in self.engines]
        before = [(bytes(e.statuses), e.run_id) for e in self.engines]
        accepted = self.send(ev.ResetStatus(jobs=tuple(chosen), initialize=together))
        event(f"reset_jobs {'refused' if active else 'accepted'}")
        if active:
            assert not accepted
            assert before == [(bytes(e.statuses), e.run_id) for e in self.engines]
            for e in self.engines:
                with pytest.raises(EngineError) as refused:
                    e.handle(ev.ResetStatus(jobs=tuple(chosen)), self.now)
                assert list(refused.value.jobs) == active
            return
        assert len(accepted) == 2
        for effects in accepted:
            assert list(next(e for e in effects if isinstance(e, ev.JobsReset)).jobs) == sorted(
                j for j in part if rows[0][j][0] != S.DISABLED)
        if not together:
            self.send(ev.Initialize(), legal=True)
        for e, old in zip(self.engines, rows, strict=True):
            for j in range(self.n):
                if j not in part:
                    assert (e.status(j), e.attempt(j), e.holder(j), e.job_run(j)) == old[j], j
                elif e.status(j) != S.DISABLED:
                    assert e.attempt(j) == 1 and e.job_run(j) == e.run_id

    @rule(data=st.data())
    def add_jobs(self, data: st.DataObject) -> None:
        """Dynamic jobs: the same part grows both engines (the compressed one moves its
        barrier); new jobs wait for the job that added them and for each other."""
        k = data.draw(st.integers(1, 3))
        after = data.draw(st.lists(st.integers(0, self.n - 1), max_size=1))
        pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
        edges = data.draw(st.lists(st.sampled_from(pairs), unique=True) if pairs
                          else st.just([]))
        cancel = data.draw(st.lists(st.booleans(), min_size=k, max_size=k))
        part = WorkflowModel.build(k, edges, cancel_on_failure=cancel)
        canceled = self.full.canceled
        before = [(bytes(e.statuses), e.model.num_nodes) for e in self.engines]
        accepted = self.send(ev.AddJobs(part=part, after=tuple(after)), legal=not canceled)
        event(f"add_jobs {'refused' if canceled else 'accepted'}")
        if canceled:
            assert not accepted
            assert before == [(bytes(e.statuses), e.model.num_nodes) for e in self.engines]
            return
        n = self.n
        for y in range(k):
            self.deps[n + y] = {n + i for i, j in edges if j == y} | set(after)
        self.cancel = [*self.cancel, *cancel]
        self.n = n + k
        for effects in accepted:
            added = next(e for e in effects if isinstance(e, ev.JobsAdded))
            assert (added.first, added.count) == (n, k)
        assert self.comp.model.num_barriers == 1

    @rule(runner=st.integers(1, 3), data=st.data(), rc=st.sampled_from([0, 1]))
    def claim_with_results_and_held(self, runner: int, data: st.DataObject, rc: int) -> None:
        """The runner's cycle in one input: report some jobs, say what it still holds (it may
        have lost some answers), claim more."""
        mine = sorted(j for j, r in self.held() if r == runner)
        reported = data.draw(st.lists(st.sampled_from(mine), unique=True) if mine
                             else st.just([]))
        kept = data.draw(st.lists(st.sampled_from(mine), unique=True) if mine else st.just([]))
        results = tuple(
            ev.JobResult(job=j, attempt=self.full.attempt(j), run_id=self.full.job_run(j),
                         return_code=rc)
            for j in reported
        )
        held = frozenset(kept) | frozenset(reported)
        # limit 100: everything ready (a smaller one could pick different jobs in the two)
        for effects in self.send(ev.ClaimJobs(runner_id=runner, limit=100, lease_s=LEASE,
                                              results=results, held=held), legal=True):
            released = [e.jobs for e in effects if isinstance(e, ev.RunnerReleased)]
            lost = tuple(sorted(set(mine) - held))
            assert released == ([lost] if lost else []), (mine, reported, kept, effects)

    @rule(runner=st.integers(1, 3), data=st.data())
    def claim_refused_changes_nothing(self, runner: int, data: st.DataObject) -> None:
        """A claim with a result or a held job it cannot have is refused whole, results
        and all (the server once applied the results before checking the held ids)."""
        before = [(bytes(e.statuses), e.runner_jobs(runner), e.run_id) for e in self.engines]
        mine = sorted(j for j, r in self.held() if r == runner)
        results = tuple(
            ev.JobResult(job=j, attempt=self.full.attempt(j), run_id=self.full.job_run(j),
                         return_code=0) for j in mine)
        bad = data.draw(st.sampled_from(["held", "result"]))
        if bad == "held":
            held = frozenset({self.n + 3})
        else:
            held = frozenset(mine)
            results += (ev.JobResult(job=self.n + 3, attempt=1, run_id=1, return_code=0),)
        assert not self.send(ev.ClaimJobs(runner_id=runner, limit=100, lease_s=LEASE,
                                          results=results, held=held))
        assert before == [(bytes(e.statuses), e.runner_jobs(runner), e.run_id)
                          for e in self.engines]

    @invariant()
    def effects_tell_everything(self) -> None:
        for engine, mirror in zip(self.engines, self.mirrors, strict=True):
            mirror.check(engine)

    @invariant()
    def no_job_held_twice(self) -> None:
        for engine in self.engines:
            seen: set[int] = set()
            for runner in (1, 2, 3):
                jobs = engine.runner_jobs(runner)
                assert not jobs & seen
                seen |= jobs
            for j in range(self.n):
                active = engine.status(j) in (S.PENDING, S.RUNNING)
                assert (engine.holder(j) >= 0) == active

    @invariant()
    def never_ready_before_dependencies(self) -> None:
        for j in range(self.n):
            status = self.full.status(j)
            if status in (S.READY, S.PENDING, S.RUNNING) or (
                status == S.COMPLETED and self.full.run_id == 1
            ):
                for d in self.deps[j]:
                    up = self.full.status(d)
                    assert up in FINAL_STATUSES, (j, d, up)
                    if self.cancel[j]:
                        assert up not in FAILED_STATUSES, (j, d, up)

    @invariant()
    def barrier_never_releases_early(self) -> None:
        barrier = self.comp.model.num_jobs
        if self.comp.status(barrier) == S.COMPLETED:
            up_ptr, up_idx = self.comp.model.upstream_csr()
            for k in range(up_ptr[barrier], up_ptr[barrier + 1]):
                assert self.comp.status(up_idx[k]) in FINAL_STATUSES

    @invariant()
    def counts_conserved(self) -> None:
        for engine in self.engines:
            counts = engine.counts()
            assert sum(counts.values()) == self.n
            for status in S:
                assert counts[status] == sum(1 for j in range(self.n) if engine.status(j) == status)

    @invariant()
    def complete_means_all_final(self) -> None:
        for engine in self.engines:
            final = all(engine.status(j) in FINAL_STATUSES for j in range(self.n))
            assert engine.is_complete == final


EngineMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineMachine = EngineMachine.TestCase
