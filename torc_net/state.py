"""A workflow's live state in the server: its engine plus the columns the hot paths need.

Also :class:`Principal` (who is asking) and :class:`ComputeNode` (a registered runner).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torc_core.engine import Engine
from torc_core.model import WorkflowModel
from torc_core.spec import FailureHandler, FailureHandlerRule, WorkflowSpec
from torc_core.status import JobStatus

from .validate import ApiError


@dataclass(slots=True, frozen=True)
class Principal:
    """Who is asking. ``name`` None with ``authenticated`` False: open mode, sees everything."""

    name: str | None = None
    authenticated: bool = False
    admin: bool = False

    def may_see(self, owner: str | None) -> bool:
        if not self.authenticated or self.admin or owner is None:
            return True
        return owner == self.name


@dataclass(slots=True)
class ComputeNode:
    id: int
    workflow_id: int
    active: bool
    slurm_job_id: str | None
    #: The last claim's sequence number, answer and commit batch: a client that retries a
    #: claim (its connection broke after we answered) gets the same jobs again instead of a
    #: second lease on new ones while the first ones wait for their lease to expire.
    last_claim: tuple[int, dict[str, Any], Any] | None = None


@dataclass(slots=True, eq=False)
class WorkflowState:
    id: int
    name: str
    user: str | None
    description: str | None
    created_at: float
    job_id_base: int
    num_jobs: int
    file_id_base: int
    num_files: int
    user_data_id_base: int
    num_user_data: int
    spec_info: dict[str, Any]
    engine: Engine
    #: per job, compact (see torc_net.columns): a list of a million str costs ~70 MB
    names: Sequence[str]
    commands: Sequence[str]
    invocation_scripts: Sequence[str | None]
    supports_termination: bytearray
    scheduler_names: dict[str, int]
    file_mtimes: list[float | None]
    changed_user_data: set[int] = field(default_factory=set)

    @property
    def model(self) -> WorkflowModel:
        return self.engine.model

    def counts(self) -> dict[str, int]:
        c = self.engine.counts()
        return {s.label: c[s] for s in JobStatus}

    def status_object(self) -> dict[str, Any]:
        e = self.engine
        return {
            "id": self.id,
            "run_id": e.run_id,
            "counts": self.counts(),
            "total": self.num_jobs,
            "is_complete": e.is_complete,
            "is_canceled": e.canceled,
        }

    def to_json(self) -> dict[str, Any]:
        e = self.engine
        return {
            "id": self.id,
            "name": self.name,
            "user": self.user,
            "description": self.description,
            "created_at": self.created_at,
            "num_jobs": self.num_jobs,
            "run_id": e.run_id,
            "is_canceled": e.canceled,
            "is_complete": e.is_complete,
            "job_id_base": self.job_id_base,
            "spec_settings": self.spec_info.get("settings", {}),
            "slurm_schedulers": self.spec_info.get("slurm_schedulers", []),
            "num_actions": len(self.spec_info.get("actions", [])),
        }

    def job_index(self, job_id: int) -> int:
        idx = job_id - self.job_id_base
        if not 0 <= idx < self.num_jobs:
            raise ApiError(404, "not found", f"no job {job_id} in workflow {self.id}")
        return idx

    def upstream_jobs(self, node: int) -> list[int]:
        """Job indices ``node`` depends on, looking through barrier nodes."""
        ptr, idx = self.model.upstream_csr()
        n = self.num_jobs
        out: set[int] = set()
        stack = [node]
        seen: set[int] = set()
        while stack:
            cur = stack.pop()
            for k in range(ptr[cur], ptr[cur + 1]):
                up = idx[k]
                if up < n:
                    out.add(up)
                elif up not in seen:
                    seen.add(up)
                    stack.append(up)
        return sorted(out)


def _spec_info(spec: WorkflowSpec, model: WorkflowModel) -> dict[str, Any]:
    """What of the spec is kept as JSON on the workflow row (settings, actions, schedulers)."""
    settings = {
        "project": spec.project,
        "use_pending_failed": spec.use_pending_failed,
        "jobs_sort_method": spec.jobs_sort_method,
        "compute_node_settings": dict(spec.compute_node_settings),
        "resource_monitor": spec.resource_monitor,
        "slurm_defaults": dict(spec.slurm_defaults),
    }
    return {
        "settings": settings,
        "actions": [dataclasses.asdict(a) for a in spec.actions],
        "slurm_schedulers": [dataclasses.asdict(s) for s in spec.slurm_schedulers],
        "failure_handlers": [dataclasses.asdict(h) for h in spec.failure_handlers],
        "resource_requirements": [dataclasses.asdict(r) for r in spec.resource_requirements],
        "num_schedulers": model.num_schedulers,
        "uncompressed_edges": model.uncompressed_edges,
    }


def _failure_handlers(info: Mapping[str, Any]) -> tuple[FailureHandler, ...]:
    return tuple(
        FailureHandler(
            name=h["name"],
            rules=tuple(
                FailureHandlerRule(
                    exit_codes=tuple(r.get("exit_codes", ())),
                    match_all_exit_codes=bool(r.get("match_all_exit_codes", False)),
                    recovery_script=r.get("recovery_script"),
                    max_retries=int(r.get("max_retries", 0)),
                )
                for r in h.get("rules", ())
            ),
        )
        for h in info.get("failure_handlers", ())
    )
