"""A small harness that keeps engine tests short (after h11's ConnectionPair)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torc_core import Engine, JobStatus, WorkflowModel
from torc_core import events as ev


class Harness:
    def __init__(self, num_jobs: int, edges: Sequence[tuple[int, int]] = (), **model: Any) -> None:
        self.model = WorkflowModel.build(num_jobs, edges, **model)
        self.engine = Engine(self.model)
        self.now = 0.0
        self.effects: list[Any] = []

    def send(self, event: Any) -> list[Any]:
        self.effects = self.engine.handle(event, self.now)
        return self.effects

    def init(self) -> list[Any]:
        return self.send(ev.Initialize())

    def claim(
        self, runner: int = 1, limit: int = 100, lease_s: float = 60, **res: Any
    ) -> list[int]:
        effects = self.send(ev.ClaimJobs(runner_id=runner, limit=limit, lease_s=lease_s, **res))
        claimed = next(e for e in effects if isinstance(e, ev.JobsClaimed))
        return [c.job for c in claimed.jobs]

    def finish(
        self,
        job: int,
        rc: int = 0,
        *,
        runner: int = 1,
        attempt: int | None = None,
        terminated: bool = False,
    ) -> list[Any]:
        result = ev.JobResult(
            job=job,
            attempt=self.engine.attempt(job) if attempt is None else attempt,
            run_id=self.engine.run_id,
            return_code=rc,
            terminated=terminated,
        )
        return self.send(ev.CompleteJobs(runner_id=runner, results=(result,)))

    def run_all(self, runner: int = 1, rc_of: dict[int, int] | None = None) -> None:
        """Claim and finish until nothing is ready (bounded)."""
        for _ in range(10_000):
            jobs = self.claim(runner)
            if not jobs:
                return
            for job in jobs:
                self.finish(job, (rc_of or {}).get(job, 0), runner=runner)
        raise AssertionError("run_all did not converge")

    def labels(self) -> list[str]:
        return [JobStatus(s).label for s in self.engine.statuses[: self.model.num_jobs]]

    def snapshot(self) -> tuple[bytes, tuple[int, ...], tuple[int, ...], int, bool]:
        e = self.engine
        return (
            bytes(e.statuses),
            tuple(e.attempt(j) for j in range(self.model.num_jobs)),
            tuple(e.holder(j) for j in range(self.model.num_jobs)),
            e.run_id,
            e.canceled,
        )


def of_type(effects: list[Any], kind: type) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]
