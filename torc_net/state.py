"""A workflow's live state in the server: its engine plus the columns the hot paths need.

Also :class:`Principal` (who is asking, and what they may see), :class:`ComputeNode` (a
registered runner), and the two ways a workflow's state comes to be: from a new spec
(:func:`new_workflow`, which also gives the rows to insert) and from the database
(:func:`restore_workflow`, at start-up or after a failed commit). No SQL here: rows go in and
out through :mod:`torc_net.store`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torc_core import events as ev
from torc_core.engine import Engine
from torc_core.model import WorkflowModel
from torc_core.spec import FailureHandler, WorkflowSpec, failure_handler_from_json
from torc_core.status import JobStatus

from .columns import LINK_ATTRS, JobColumns, StrColumn
from .ids import IdRanges
from .store import NewWorkflow, StoredWorkflow
from .validate import not_found

STATUS_LABELS = tuple(s.label for s in JobStatus)
_PENDING = int(JobStatus.PENDING)
_RUNNING = int(JobStatus.RUNNING)


@dataclass(slots=True, frozen=True)
class Principal:
    """Who is asking, and under which rules (``mode``):

    * ``open`` — the server has no auth file: everyone sees everything (credentials ignored);
    * ``optional`` — an auth file: a named user sees their own workflows and owner-less ones;
      an anonymous request sees only owner-less ones, and never creates one for a named user;
    * ``required`` — ``--require-auth``: every request is named, and owner-less workflows
      (created before auth was turned on) are the admins' only.

    Admins see everything in every mode. This is the rule of ownership; access groups add the
    members of the groups a workflow is shared with (:mod:`torc_net.access`, whose
    ``may_see`` is the one every check asks).
    """

    name: str | None = None
    admin: bool = False
    mode: str = "open"

    @property
    def authenticated(self) -> bool:
        return self.name is not None

    def may_see(self, owner: str | None) -> bool:
        if self.mode == "open" or self.admin:
            return True
        if owner is None:
            return self.mode != "required"
        return owner == self.name


@dataclass(slots=True)
class ComputeNode:
    id: int
    workflow_id: int
    active: bool
    slurm_job_id: str | None
    #: The last claim's sequence number, answer and change: a client that retries a claim
    #: (its connection broke after we answered) gets the same jobs again instead of a second
    #: lease on new ones while the first ones wait for their lease to expire.
    last_claim: tuple[int, dict[str, Any], Any] | None = None


def counts_object(counts: Sequence[int]) -> dict[str, int]:
    """Jobs per status label, from counts indexed by status value."""
    return dict(zip(STATUS_LABELS, counts, strict=True))


@dataclass(slots=True, eq=False)
class WorkflowState:
    id: int
    name: str
    user: str | None
    description: str | None
    created_at: float
    #: the ids of its jobs, files and user data (see torc_net.ids: a growth adds a range)
    job_ids: IdRanges
    file_ids: IdRanges
    user_data_ids: IdRanges
    spec_info: dict[str, Any]
    engine: Engine
    #: per job, compact (see torc_net.columns): a list of a million str costs ~70 MB
    names: Sequence[str]
    commands: Sequence[str]
    invocation_scripts: Sequence[str | None]
    supports_termination: bytearray
    #: per job: its own stdio as JSON text, None where the workflow's applies
    stdio: Sequence[str | None]
    scheduler_names: dict[str, int]
    file_mtimes: list[float | None]
    changed_user_data: set[int] = field(default_factory=set)
    #: indices of actions already handed out (loaded on first use)
    actions_claimed: set[int] | None = None

    @property
    def model(self) -> WorkflowModel:
        return self.engine.model

    @property
    def num_jobs(self) -> int:
        return len(self.job_ids)

    @property
    def num_files(self) -> int:
        return len(self.file_ids)

    @property
    def num_user_data(self) -> int:
        return len(self.user_data_ids)

    def job_id(self, index: int) -> int:
        return self.job_ids.id(index)

    def status_object(self) -> dict[str, Any]:
        """The status now (for reads; changes answer with :meth:`status_after`)."""
        e = self.engine
        c = e.counts()
        return {"id": self.id, "run_id": e.run_id, "counts": counts_object([c[s] for s in
                                                                          JobStatus]),
                "total": self.num_jobs, "is_complete": e.is_complete, "is_canceled": e.canceled}

    def status_after(self, p: ev.Progress) -> dict[str, Any]:
        """The status an input left, from its effects."""
        return {"id": self.id, "run_id": p.run_id, "counts": counts_object(p.counts),
                "total": self.num_jobs, "is_complete": p.is_complete, "is_canceled": p.canceled}

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
            "job_id_base": self.job_ids.first,
            "job_id_ranges": [[first, first + count - 1] for first, count, _
                              in self.job_ids.ranges() if count],
            "project": self.spec_info.get("settings", {}).get("project"),
            "metadata": self.spec_info.get("settings", {}).get("metadata"),
            "spec_settings": self.spec_info.get("settings", {}),
            "failure_handlers": self.spec_info.get("failure_handlers", []),
            "slurm_schedulers": self.spec_info.get("slurm_schedulers", []),
            "num_actions": len(self.spec_info.get("actions", [])),
        }

    def job_index(self, job_id: int, where: str = "") -> int:
        idx = self.job_ids.index(job_id)
        if idx < 0:
            raise not_found(f"{where}{': ' if where else ''}no job {job_id} in workflow "
                            f"{self.id}")
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
        "max_iterations": spec.max_iterations,
        "compute_node_settings": dict(spec.compute_node_settings),
        "resource_monitor": spec.resource_monitor,
        "slurm_defaults": dict(spec.slurm_defaults),
        "metadata": spec.metadata,
        "execution_config": dataclasses.asdict(spec.execution_config),
        "enable_ro_crate": spec.enable_ro_crate,
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
    return tuple(failure_handler_from_json(h) for h in info.get("failure_handlers", ()))


# ---------------------------------------------------------------------------------------------
# A new workflow


@dataclass(slots=True, frozen=True)
class NewIds:
    workflow: int
    job_base: int
    file_base: int
    user_data_base: int


def new_workflow(ids: NewIds, spec: WorkflowSpec, model: WorkflowModel, cols: JobColumns,
                 owner: str | None, now: float) -> tuple[WorkflowState, NewWorkflow]:
    """The state of a new, initialized workflow and the rows that store it."""
    engine = Engine(model)
    engine.handle(ev.Initialize(), now)
    n = model.num_jobs
    wf = WorkflowState(
        id=ids.workflow, name=spec.name, user=owner, description=spec.description,
        created_at=now, job_ids=IdRanges(ids.job_base, n),
        file_ids=IdRanges(ids.file_base, len(spec.files)),
        user_data_ids=IdRanges(ids.user_data_base, len(spec.user_data)),
        spec_info=_spec_info(spec, model), engine=engine,
        names=cols.names,  # type: ignore[arg-type]
        commands=cols.commands,  # type: ignore[arg-type]
        invocation_scripts=cols.invocation_scripts,
        supports_termination=cols.supports_termination,
        stdio=cols.stdio,
        scheduler_names={s.name: k for k, s in enumerate(spec.slurm_schedulers)},
        file_mtimes=[None] * len(spec.files),
    )
    statuses = bytes(engine.statuses)
    base = ids.job_base
    down_ptr, down_idx = model.down_ptr, model.down_idx
    links: dict[str, Iterable[tuple[int, int]]] = {}
    for table, _, kind in LINK_ATTRS:
        ref_base = ids.file_base if kind == "files" else ids.user_data_base
        links[table] = ((base + k, ref_base + ref) for k, ref in cols.links[table])
    rows = NewWorkflow(
        header=(wf.id, wf.name, owner, wf.description, now, base, n, model.num_barriers,
                ids.file_base, wf.num_files, ids.user_data_base, wf.num_user_data,
                engine.run_id, int(engine.canceled), json.dumps(wf.spec_info, default=str)),
        jobs=zip(
            range(base, base + n), itertools.repeat(wf.id, n), cols.names, cols.commands,
            cols.invocation_scripts, statuses[:n], model.cpus, model.gpus, model.nodes,
            model.memory, model.runtime, cols.resource_requirements, cols.schedulers,
            model.scheduler, cols.failure_handlers, model.handler, cols.supports_termination,
            cols.cancel_on_blocking,
            model.priority if model.priority is not None else itertools.repeat(0, n),
            cols.stdio, strict=True,
        ),
        barriers=((node - n, statuses[node]) for node in range(n, model.num_nodes)),
        edges=((edge_code(up, n), edge_code(down_idx[k], n)) for up in range(model.num_nodes)
               for k in range(down_ptr[up], down_ptr[up + 1])),
        files=[(ids.file_base + k, f.name, f.path) for k, f in enumerate(spec.files)],
        user_data=[(ids.user_data_base + k, u.name, json.dumps(u.data), int(u.is_ephemeral))
                   for k, u in enumerate(spec.user_data)],
        links=links,
        events=[(now, "created", json.dumps({"jobs": n, "user": owner})),
                (now, "initialized", json.dumps({"run_id": engine.run_id}))],
    )
    return wf, rows


def edge_code(node: int, num_jobs: int) -> int:
    """How the database names a node: a job by its index, a barrier by ``-1 - ordinal``
    (its ordinal, ``node - num_jobs``, never changes when the workflow grows)."""
    return node if node < num_jobs else num_jobs - 1 - node


def edge_node(code: int, num_jobs: int) -> int:
    """The node a stored code names (the inverse of :func:`edge_code`)."""
    return code if code >= 0 else num_jobs - 1 - code


# ---------------------------------------------------------------------------------------------
# From the database


def restore_workflow(stored: StoredWorkflow, now: float) \
        -> tuple[WorkflowState, list[ComputeNode]]:
    """Rebuild a workflow's model and engine from its rows."""
    (wf_id, name, user, description, created_at, base, n, num_barriers, file_base,
     num_files, ud_base, num_ud, run_id, canceled, spec_json) = stored.header
    info = json.loads(spec_json)
    grown = {kind: [(f, c, i) for k, f, c, i in stored.ranges if k == kind]
             for kind in ("job", "file", "user_data")}

    def id_ranges(kind: str, first: int, total: int) -> IdRanges:
        extra = grown[kind]
        return IdRanges.from_ranges([(first, total - sum(c for _, c, _ in extra), 0), *extra])

    job_ids = id_ranges("job", base, n)
    file_ids = id_ranges("file", file_base, num_files)
    user_data_ids = id_ranges("user_data", ud_base, num_ud)
    jobs = stored.jobs
    if len(jobs) != n:
        raise RuntimeError(f"workflow {wf_id}: {len(jobs)} job rows, expected {n}")
    statuses = bytearray(n + num_barriers)
    for k, j in enumerate(jobs):
        statuses[k] = j[3]
    for ordinal, st in stored.barriers:
        statuses[n + ordinal] = st

    def links(pairs: list[tuple[int, int]], refs: IdRanges) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in range(n)]
        for job_id, ref in pairs:
            out[job_ids.index(job_id)].append(refs.index(ref))
        return out

    model = WorkflowModel.build(
        n,
        [(edge_node(up, n), edge_node(down, n)) for up, down in stored.edges],
        num_barriers=num_barriers,
        cpus=[j[6] for j in jobs],
        gpus=[j[7] for j in jobs],
        nodes=[j[8] for j in jobs],
        memory=[j[9] for j in jobs],
        runtime=[j[10] for j in jobs],
        scheduler=[j[12] for j in jobs],
        handler=[j[13] for j in jobs],
        cancel_on_failure=[bool(j[15]) for j in jobs],
        input_files=links(stored.input_files, file_ids),
        input_user_data=links(stored.input_user_data, user_data_ids),
        failure_handlers=_failure_handlers(info),
        num_schedulers=int(info.get("num_schedulers", 0)),
        uncompressed_edges=int(info.get("uncompressed_edges", len(stored.edges))),
        use_pending_failed=bool(info.get("settings", {}).get("use_pending_failed")),
        priority=[j[16] for j in jobs],
        sort_method=info.get("settings", {}).get("jobs_sort_method"),
    )
    holders = {k: j[5] for k, j in enumerate(jobs)
               if j[3] in (_PENDING, _RUNNING) and j[5] is not None}
    nodes = [ComputeNode(cn_id, wf_id, bool(active), slurm_job_id)
             for cn_id, _, active, slurm_job_id in stored.compute_nodes]
    leases = {cn_id: deadline for cn_id, deadline, active, _ in stored.compute_nodes
              if active and deadline is not None}
    engine = Engine.restore(model, statuses=statuses, attempts=[j[4] for j in jobs],
                            holders=holders, leases=leases, run_id=run_id,
                            canceled=bool(canceled), now=now, runs=[j[18] for j in jobs])
    wf = WorkflowState(
        id=wf_id, name=name, user=user, description=description, created_at=created_at,
        job_ids=job_ids, file_ids=file_ids, user_data_ids=user_data_ids, spec_info=info,
        engine=engine,
        names=StrColumn(j[0] for j in jobs),  # type: ignore[arg-type]
        commands=StrColumn(j[1] for j in jobs),  # type: ignore[arg-type]
        invocation_scripts=StrColumn(j[2] for j in jobs),
        supports_termination=bytearray(j[14] for j in jobs),
        stdio=StrColumn(j[17] for j in jobs),
        scheduler_names={s["name"]: k for k, s in enumerate(info.get("slurm_schedulers", ()))},
        file_mtimes=list(stored.file_mtimes),
        changed_user_data={user_data_ids.index(uid) for uid in stored.changed_user_data},
    )
    return wf, nodes
