"""The server's workflows: live engines in memory, rows in the store, events to the feed.

Theory of operation
-------------------
:class:`Service` is everything the HTTP routes do, without HTTP. Each workflow is a
:class:`WorkflowState`: its :class:`~torc_core.engine.Engine` (the authority on statuses,
attempts and holders) plus the few columns the hot paths need in memory (names, commands).

Rule 1: drive an engine, then record its effects, with no ``await`` in between
(:meth:`Service._drive`). Engine handling is pure and fast, so it runs on the trio thread; since
trio switches tasks only at awaits, inputs to one workflow are serialized and the rows reach the
batch in engine order.

Rule 2: answer only after ``await batch.wait()``: nothing is acknowledged before it is durable.

Rule 3: the clock is the wall clock (``time.time()``): lease deadlines are stored and must mean
the same thing after a restart.

Rule 4: bad input is a :class:`ApiError` with a located message, raised before anything changes.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import trio

from torc_core import events as ev
from torc_core.engine import Engine
from torc_core.errors import SpecError
from torc_core.model import WorkflowModel
from torc_core.spec import WorkflowSpec
from torc_core.status import JobStatus

from .columns import LINK_ATTRS, JobColumns, StrColumn
from .feed import Feed
from .state import (
    ComputeNode,
    Principal,
    WorkflowState,
    _failure_handlers,
    _spec_info,
)
from .store import LINK_TABLES, Batch, Store
from .validate import (
    _MISSING,
    MAX_PAGE,
    ApiError,
    _type_name,
    as_object,
    bad_request,
    get_bool,
    get_int,
    get_list,
    get_number,
    get_str,
    page_args,
    query_int,
)

STATUS_LABELS = tuple(s.label for s in JobStatus)
_PENDING = int(JobStatus.PENDING)
_RUNNING = int(JobStatus.RUNNING)
RESULT_STATUS = {"completed": JobStatus.COMPLETED, "failed": JobStatus.FAILED,
                 "terminated": JobStatus.TERMINATED}


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_free_memory() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Why: a big workflow is parsed and compiled in a worker thread, which allocates from its own
    glibc arena. The ~200 MB of temporaries it frees there (at a million jobs) stay in that
    arena, unusable by the trio thread and the store's thread, so without a trim the server's
    RSS would carry them on top of the engine and the new rows (peak 550 MB instead of 450 MB).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


# ---------------------------------------------------------------------------------------------
# Rows <-> state


def _insert_workflow_rows(
    conn: sqlite3.Connection,
    wf: WorkflowState,
    spec: WorkflowSpec,
    cols: JobColumns,
    statuses: bytes,
    now: float,
) -> None:
    """Every row of a new workflow, in the caller's transaction (executemany throughout).

    The jobs' own fields come from ``cols`` (``spec.jobs`` may already be empty)."""
    model = wf.model
    n = wf.num_jobs
    base = wf.job_id_base
    conn.execute(
        "INSERT INTO workflows (id, name, user, description, created_at, job_id_base, num_jobs,"
        " num_barriers, file_id_base, num_files, user_data_id_base, num_user_data, run_id,"
        " is_canceled, spec_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            wf.id, wf.name, wf.user, wf.description, wf.created_at, base, n,
            model.num_barriers, wf.file_id_base, wf.num_files, wf.user_data_id_base,
            wf.num_user_data, wf.engine.run_id, int(wf.engine.canceled),
            json.dumps(wf.spec_info, default=str),
        ),
    )
    cpus, gpus, nodes, memory, runtime = (
        model.cpus, model.gpus, model.nodes, model.memory, model.runtime,
    )
    sched, handler = model.scheduler, model.handler
    conn.executemany(
        "INSERT INTO jobs (id, workflow_id, name, command, invocation_script, status, attempt,"
        " compute_node_id, num_cpus, num_gpus, num_nodes, memory_bytes, runtime_s,"
        " resource_requirements, scheduler, scheduler_idx, failure_handler, handler_idx,"
        " supports_termination, cancel_on_blocking_job_failure)"
        " VALUES (?,?,?,?,?,?,1,NULL,?,?,?,?,?,?,?,?,?,?,?,?)",
        # An iterator, not a list: a list of a million 18-tuples is ~250 MB at the peak of
        # creation; sqlite3 consumes an iterator row by row.
        zip(
            range(base, base + n), itertools.repeat(wf.id, n), cols.names, cols.commands,
            cols.invocation_scripts, statuses[:n], cpus, gpus, nodes, memory, runtime,
            cols.resource_requirements, cols.schedulers, sched, cols.failure_handlers, handler,
            cols.supports_termination, cols.cancel_on_blocking, strict=True,
        ),
    )
    if model.num_barriers:
        conn.executemany(
            "INSERT INTO barriers (workflow_id, node, status) VALUES (?,?,?)",
            ((wf.id, node, statuses[node]) for node in range(n, model.num_nodes)),
        )
    ptr, idx = model.down_ptr, model.down_idx
    conn.executemany(
        "INSERT OR IGNORE INTO edges (workflow_id, up, down) VALUES (?,?,?)",
        (
            (wf.id, up, idx[k])
            for up in range(model.num_nodes)
            for k in range(ptr[up], ptr[up + 1])
        ),
    )
    conn.executemany(
        "INSERT INTO files (id, workflow_id, name, path, st_mtime) VALUES (?,?,?,?,NULL)",
        [(wf.file_id_base + k, wf.id, f.name, f.path) for k, f in enumerate(spec.files)],
    )
    conn.executemany(
        "INSERT INTO user_data (id, workflow_id, name, data, is_ephemeral, changed)"
        " VALUES (?,?,?,?,?,0)",
        [
            (wf.user_data_id_base + k, wf.id, u.name, json.dumps(u.data), int(u.is_ephemeral))
            for k, u in enumerate(spec.user_data)
        ],
    )
    for table, _, kind in LINK_ATTRS:
        ref_base = wf.file_id_base if kind == "files" else wf.user_data_id_base
        pairs = cols.links[table]
        if pairs:
            conn.executemany(
                f"INSERT OR IGNORE INTO {table} (job_id, ref_id) VALUES (?,?)",
                ((base + k, ref_base + ref) for k, ref in pairs),
            )
    conn.executemany(
        "INSERT INTO events (workflow_id, ts, kind, data) VALUES (?,?,?,?)",
        [
            (wf.id, now, "created", json.dumps({"jobs": n, "user": wf.user})),
            (wf.id, now, "initialized", json.dumps({"run_id": wf.engine.run_id})),
        ],
    )


def _load_workflows(
    conn: sqlite3.Connection, now: float
) -> tuple[list[WorkflowState], list[ComputeNode]]:
    """Rebuild every workflow's model and engine from its rows (server start)."""
    states: list[WorkflowState] = []
    nodes: list[ComputeNode] = []
    for row in conn.execute(
        "SELECT id, name, user, description, created_at, job_id_base, num_jobs, num_barriers,"
        " file_id_base, num_files, user_data_id_base, num_user_data, run_id, is_canceled,"
        " spec_json FROM workflows ORDER BY id"
    ).fetchall():
        (wf_id, name, user, description, created_at, base, n, num_barriers, file_base,
         num_files, ud_base, num_ud, run_id, canceled, spec_json) = row
        info = json.loads(spec_json)
        jobs = conn.execute(
            "SELECT name, command, invocation_script, status, attempt, compute_node_id,"
            " num_cpus, num_gpus, num_nodes, memory_bytes, runtime_s, scheduler, scheduler_idx,"
            " handler_idx, supports_termination, cancel_on_blocking_job_failure"
            " FROM jobs WHERE id BETWEEN ? AND ? ORDER BY id",
            (base, base + n - 1),
        ).fetchall()
        if len(jobs) != n:
            raise RuntimeError(f"workflow {wf_id}: {len(jobs)} job rows, expected {n}")
        statuses = bytearray(n + num_barriers)
        for k, j in enumerate(jobs):
            statuses[k] = j[3]
        for node, st in conn.execute(
            "SELECT node, status FROM barriers WHERE workflow_id=?", (wf_id,)
        ):
            statuses[node] = st
        edges = conn.execute(
            "SELECT up, down FROM edges WHERE workflow_id=?", (wf_id,)
        ).fetchall()

        def links(table: str, ref_base: int, lo: int = base, n: int = n) -> list[list[int]]:
            out: list[list[int]] = [[] for _ in range(n)]
            for job_id, ref in conn.execute(
                f"SELECT job_id, ref_id FROM {table} WHERE job_id BETWEEN ? AND ?",
                (lo, lo + n - 1),
            ):
                out[job_id - lo].append(ref - ref_base)
            return out

        model = WorkflowModel.build(
            n,
            edges,
            num_barriers=num_barriers,
            cpus=[j[6] for j in jobs],
            gpus=[j[7] for j in jobs],
            nodes=[j[8] for j in jobs],
            memory=[j[9] for j in jobs],
            runtime=[j[10] for j in jobs],
            scheduler=[j[12] for j in jobs],
            handler=[j[13] for j in jobs],
            cancel_on_failure=[bool(j[15]) for j in jobs],
            input_files=links("job_input_files", file_base),
            input_user_data=links("job_input_user_data", ud_base),
            failure_handlers=_failure_handlers(info),
            num_schedulers=int(info.get("num_schedulers", 0)),
            uncompressed_edges=int(info.get("uncompressed_edges", len(edges))),
        )
        holders = {
            k: j[5]
            for k, j in enumerate(jobs)
            if j[3] in (_PENDING, _RUNNING) and j[5] is not None
        }
        leases: dict[int, float] = {}
        for cn_id, deadline, active, slurm_job_id in conn.execute(
            "SELECT id, lease_deadline, is_active, slurm_job_id FROM compute_nodes"
            " WHERE workflow_id=?",
            (wf_id,),
        ):
            nodes.append(ComputeNode(cn_id, wf_id, bool(active), slurm_job_id))
            if active and deadline is not None:
                leases[cn_id] = deadline
        engine = Engine.restore(
            model,
            statuses=statuses,
            attempts=[j[4] for j in jobs],
            holders=holders,
            leases=leases,
            run_id=run_id,
            canceled=bool(canceled),
            now=now,
        )
        mtimes = [
            r[0]
            for r in conn.execute(
                "SELECT st_mtime FROM files WHERE workflow_id=? ORDER BY id", (wf_id,)
            )
        ]
        changed = {
            r[0] - ud_base
            for r in conn.execute(
                "SELECT id FROM user_data WHERE workflow_id=? AND changed=1", (wf_id,)
            )
        }
        scheduler_names = {
            s["name"]: k for k, s in enumerate(info.get("slurm_schedulers", ()))
        }
        states.append(
            WorkflowState(
                id=wf_id, name=name, user=user, description=description,
                created_at=created_at, job_id_base=base, num_jobs=n, file_id_base=file_base,
                num_files=num_files, user_data_id_base=ud_base, num_user_data=num_ud,
                spec_info=info, engine=engine,
                names=StrColumn(j[0] for j in jobs),  # type: ignore[arg-type]
                commands=StrColumn(j[1] for j in jobs),  # type: ignore[arg-type]
                invocation_scripts=StrColumn(j[2] for j in jobs),
                supports_termination=bytearray(j[14] for j in jobs),
                scheduler_names=scheduler_names, file_mtimes=mtimes, changed_user_data=changed,
            )
        )
    return states, nodes


def _chunks(ids: Sequence[int], size: int = 500) -> Iterable[Sequence[int]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def _fetch_by_ids(
    conn: sqlite3.Connection, sql_head: str, ids: Sequence[int], key: str = "id"
) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        rows.extend(conn.execute(f"{sql_head} WHERE {key} IN ({marks})", tuple(chunk)))
    return rows


# ---------------------------------------------------------------------------------------------
# The service


ParseFn = Callable[[Mapping[str, Any]], WorkflowSpec]
CompileFn = Callable[[WorkflowSpec], WorkflowModel]


class Service:
    """Workflows in memory + store + feed. See the module docstring for the rules."""

    def __init__(
        self,
        store: Store,
        feed: Feed,
        *,
        lease_s: float = 1800.0,
        limiter: trio.CapacityLimiter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.feed = feed
        self.lease_s = lease_s
        self.limiter = limiter
        self.clock = clock
        self.workflows: dict[int, WorkflowState] = {}
        self.compute_nodes: dict[int, ComputeNode] = {}
        #: workflow id -> indices of its actions already claimed (see torc_net.allocations)
        self.actions_claimed: dict[int, set[int]] = {}
        self._timer_wake = trio.Event()
        self._next_timer = math.inf

    # -----------------------------------------------------------------------------------------
    # Start-up

    async def load(self) -> None:
        now = self.clock()
        states, nodes = await self.store.read(lambda conn: _load_workflows(conn, now))
        self.workflows = {wf.id: wf for wf in states}
        self.compute_nodes = {cn.id: cn for cn in nodes}
        self._timer_wake.set()

    # -----------------------------------------------------------------------------------------
    # Lookups

    def workflow(self, wf_id: int, who: Principal) -> WorkflowState:
        wf = self.workflows.get(wf_id)
        if wf is None:
            raise ApiError(404, "not found", f"no workflow {wf_id}")
        if not who.may_see(wf.user):
            raise ApiError(403, "forbidden", f"workflow {wf_id} belongs to another user")
        return wf

    def compute_node(self, wf: WorkflowState, cn_id: int) -> ComputeNode:
        cn = self.compute_nodes.get(cn_id)
        if cn is None or cn.workflow_id != wf.id:
            raise ApiError(404, "not found", f"no compute node {cn_id} in workflow {wf.id}")
        return cn

    # -----------------------------------------------------------------------------------------
    # Engine driving (Rule 1)

    def _drive(
        self, wf: WorkflowState, event: ev.EngineInput | None, now: float
    ) -> tuple[list[ev.Effect], Batch]:
        """Handle one input (``None``: the lease timer) and record its effects; no awaits."""
        effects = wf.engine.handle(event, now) if event is not None else wf.engine.handle_timer(now)
        batch = self.store.batch
        self._record(wf, effects, batch, now)
        return effects, batch

    def _record(
        self, wf: WorkflowState, effects: list[ev.Effect], batch: Batch, now: float
    ) -> None:
        engine = wf.engine
        n = wf.num_jobs
        base = wf.job_id_base
        wf_id = wf.id
        publish = self.feed.wants(wf_id)
        messages: list[dict[str, Any]] = []
        jobs_rows = batch.jobs
        attempt_of = engine.attempt
        holder_of = engine.holder
        for eff in effects:
            if isinstance(eff, ev.StatusesChanged):
                for node, old, new in zip(eff.jobs, eff.old, eff.new, strict=True):
                    if node < n:
                        holder = holder_of(node)
                        jobs_rows[base + node] = (
                            new, attempt_of(node), holder if holder >= 0 else None
                        )
                        if publish:
                            messages.append({
                                "type": "job_status", "workflow_id": wf_id,
                                "job_id": base + node, "name": wf.names[node],
                                "old": STATUS_LABELS[old], "new": STATUS_LABELS[new],
                                "ts": now,
                            })
                    else:
                        batch.barriers[(wf_id, node)] = new
            elif isinstance(eff, ev.ResultsRecorded):
                pass  # the caller stores results (it knows the compute node)
            elif isinstance(eff, ev.RetryScheduled):
                job = eff.job
                holder = holder_of(job)
                jobs_rows[base + job] = (
                    int(engine.statuses[job]), eff.attempt, holder if holder >= 0 else None
                )
                batch.event(wf_id, now, "retry", {
                    "job_id": base + job, "attempt": eff.attempt, "return_code": eff.return_code,
                })
            elif isinstance(eff, ev.LeasesExpired):
                batch.event(wf_id, now, "leases_expired", {"compute_node_ids": eff.runner_ids})
            elif isinstance(eff, ev.ReinitializePlanned):
                if not eff.dry_run:
                    batch.workflows[wf_id] = (engine.run_id, int(engine.canceled))
            elif isinstance(eff, ev.WorkflowCompleted):
                batch.event(wf_id, now, "completed", {
                    s.label: c for s, c in eff.counts.items()
                })
                if publish:
                    messages.append({"type": "workflow", "workflow_id": wf_id,
                                     "event": "completed", "ts": now})
            elif isinstance(eff, ev.WorkflowCanceled):
                batch.workflows[wf_id] = (engine.run_id, 1)
                batch.event(wf_id, now, "canceled")
                if publish:
                    messages.append({"type": "workflow", "workflow_id": wf_id,
                                     "event": "canceled", "ts": now})
        if messages:
            self.feed.publish_many(wf_id, wf.user, messages)

    def _workflow_event(self, wf: WorkflowState, event: str, now: float) -> None:
        if self.feed.wants(wf.id):
            self.feed.publish(
                wf.id, wf.user, {"type": "workflow", "workflow_id": wf.id, "event": event,
                                 "ts": now}
            )

    # -----------------------------------------------------------------------------------------
    # Workflows

    def list_workflows(self, who: Principal, offset: int, limit: int) -> dict[str, Any]:
        visible = [wf for wf in self.workflows.values() if who.may_see(wf.user)]
        visible.sort(key=lambda wf: wf.id)
        return {
            "items": [wf.to_json() for wf in visible[offset : offset + limit]],
            "total": len(visible),
            "offset": offset,
            "limit": limit,
        }

    async def create_workflow(
        self,
        who: Principal,
        body: Mapping[str, Any],
        parse: ParseFn,
        compile_: CompileFn,
    ) -> tuple[int, dict[str, Any]]:
        doc = body.get("spec", _MISSING)
        if doc is _MISSING:
            raise bad_request("spec: required")
        doc = as_object(doc, "spec")
        dry_run = get_bool(body, "dry_run", "")

        def build() -> tuple[WorkflowSpec, WorkflowModel, JobColumns | None]:
            spec = parse(doc)
            model = compile_(spec)
            if dry_run:
                return spec, model, None
            cols = JobColumns(spec.jobs, [f.name for f in spec.files],
                              [u.name for u in spec.user_data])
            # Past this point the jobs live in `model` and `cols`: drop the JobSpec objects
            # (~200 MB at a million jobs) before the engine is built and the rows written.
            slim = dataclasses.replace(spec, jobs=())
            del spec
            if model.num_jobs >= 10_000:
                release_free_memory()
            return slim, model, cols

        try:
            spec, model, cols = await trio.to_thread.run_sync(build, limiter=self.limiter)
        except SpecError as exc:
            raise ApiError(422, "invalid spec", list(exc.errors) or [str(exc)]) from None
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ApiError(422, "invalid spec", [f"{type(exc).__name__}: {exc}"]) from None
        counts = {
            "jobs": model.num_jobs,
            "dependencies": model.num_edges,
            "barriers": model.num_barriers,
            "files": len(spec.files),
            "user_data": len(spec.user_data),
        }
        if dry_run:
            return 200, {"id": None, "name": spec.name, **counts}
        assert cols is not None
        owner = who.name if who.authenticated else spec.user
        now = self.clock()
        engine = Engine(model)
        engine.handle(ev.Initialize(), now)
        store = self.store
        wf = WorkflowState(
            id=store.next_workflow_id,
            name=spec.name,
            user=owner,
            description=spec.description,
            created_at=now,
            job_id_base=store.next_job_id,
            num_jobs=model.num_jobs,
            file_id_base=store.next_file_id,
            num_files=len(spec.files),
            user_data_id_base=store.next_user_data_id,
            num_user_data=len(spec.user_data),
            spec_info=_spec_info(spec, model),
            engine=engine,
            names=cols.names,  # type: ignore[arg-type]
            commands=cols.commands,  # type: ignore[arg-type]
            invocation_scripts=cols.invocation_scripts,
            supports_termination=cols.supports_termination,
            scheduler_names={s.name: k for k, s in enumerate(spec.slurm_schedulers)},
            file_mtimes=[None] * len(spec.files),
        )
        store.next_workflow_id += 1
        store.next_job_id += max(1, model.num_jobs)
        store.next_file_id += len(spec.files)
        store.next_user_data_id += len(spec.user_data)
        statuses = bytes(engine.statuses)
        await store.write(
            lambda conn: _insert_workflow_rows(conn, wf, spec, cols, statuses, now)
        )
        if model.num_jobs >= 10_000:
            release_free_memory()  # the row iterators' garbage, freed in the store's thread
        self.workflows[wf.id] = wf
        self._workflow_event(wf, "initialized", now)
        return 201, {"id": wf.id, "name": wf.name, **counts}

    async def delete_workflow(self, who: Principal, wf_id: int) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        now = self.clock()
        del self.workflows[wf_id]
        for cn_id in [c.id for c in self.compute_nodes.values() if c.workflow_id == wf_id]:
            del self.compute_nodes[cn_id]
        lo, hi = wf.job_id_base, wf.job_id_base + max(wf.num_jobs, 1) - 1
        batch = self.store.batch
        post = batch.post
        for table in ("jobs", "results"):
            key = "id" if table == "jobs" else "job_id"
            post.append((f"DELETE FROM {table} WHERE {key} BETWEEN ? AND ?", (lo, hi)))
        for table in LINK_TABLES:
            post.append((f"DELETE FROM {table} WHERE job_id BETWEEN ? AND ?", (lo, hi)))
        post.append(("DELETE FROM files WHERE id BETWEEN ? AND ?",
                     (wf.file_id_base, wf.file_id_base + wf.num_files - 1)))
        post.append(("DELETE FROM user_data WHERE id BETWEEN ? AND ?",
                     (wf.user_data_id_base, wf.user_data_id_base + wf.num_user_data - 1)))
        for table in ("barriers", "edges", "events", "compute_nodes"):
            post.append((f"DELETE FROM {table} WHERE workflow_id=?", (wf_id,)))
        post.append(("DELETE FROM workflows WHERE id=?", (wf_id,)))
        self._workflow_event(wf, "deleted", now)
        self.feed.close_workflow(wf_id)
        await batch.wait()
        return {"id": wf_id, "deleted": True}

    async def cancel(self, who: Principal, wf_id: int) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        _, batch = self._drive(wf, ev.CancelWorkflow(), self.clock())
        status = wf.status_object()
        await batch.wait()
        return status

    async def initialize(self, who: Principal, wf_id: int) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        now = self.clock()
        _, batch = self._drive(wf, ev.Initialize(), now)
        batch.event(wf.id, now, "initialized", {"run_id": wf.engine.run_id})
        self._workflow_event(wf, "initialized", now)
        status = wf.status_object()
        await batch.wait()
        return status

    async def reinitialize(
        self, who: Principal, wf_id: int, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        dry_run = get_bool(body, "dry_run", "")
        given = self._parse_mtimes(wf, body.get("file_mtimes", {}), "file_mtimes")
        changed = frozenset(
            fid - wf.file_id_base
            for fid, m in given.items()
            if m != wf.file_mtimes[fid - wf.file_id_base]
        )
        now = self.clock()
        effects, batch = self._drive(
            wf,
            ev.Reinitialize(
                changed_files=changed,
                changed_user_data=frozenset(wf.changed_user_data),
                dry_run=dry_run,
            ),
            now,
        )
        plan = next((e for e in effects if isinstance(e, ev.ReinitializePlanned)), None)
        jobs = [wf.job_id_base + j for j in plan.jobs] if plan else []
        if not dry_run:
            self._store_mtimes(wf, given, batch)
            if wf.changed_user_data:
                batch.pre.append(
                    ("UPDATE user_data SET changed=0 WHERE workflow_id=?", (wf.id,))
                )
                wf.changed_user_data.clear()
            batch.workflows[wf.id] = (wf.engine.run_id, int(wf.engine.canceled))
            batch.event(wf.id, now, "reinitialized", {"jobs": len(jobs),
                                                      "run_id": wf.engine.run_id})
            self._workflow_event(wf, "reset", now)
            self._workflow_event(wf, "initialized", now)
        await batch.wait()
        return {"jobs": jobs, "dry_run": dry_run, "run_id": wf.engine.run_id}

    async def reset_status(
        self, who: Principal, wf_id: int, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        failed_only = get_bool(body, "failed_only", "")
        now = self.clock()
        self._drive(wf, ev.ResetStatus(failed_only=failed_only), now)
        _, batch = self._drive(wf, ev.Initialize(), now)
        batch.workflows[wf.id] = (wf.engine.run_id, int(wf.engine.canceled))
        batch.event(wf.id, now, "reset", {"failed_only": failed_only,
                                          "run_id": wf.engine.run_id})
        self._workflow_event(wf, "reset", now)
        status = wf.status_object()
        await batch.wait()
        return status

    # -----------------------------------------------------------------------------------------
    # Jobs

    _JOB_COLUMNS = (
        "SELECT id, name, command, invocation_script, num_cpus, num_gpus, num_nodes,"
        " memory_bytes, runtime_s, resource_requirements, scheduler, failure_handler,"
        " supports_termination, cancel_on_blocking_job_failure FROM jobs"
    )

    async def _job_objects(self, wf: WorkflowState, indices: Sequence[int]) -> list[dict[str, Any]]:
        base = wf.job_id_base
        ids = [base + i for i in indices]

        def fetch(conn: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], dict[str, dict[int,
                                                                                   list[int]]]]:
            rows = _fetch_by_ids(conn, self._JOB_COLUMNS, ids)
            links: dict[str, dict[int, list[int]]] = {}
            for table in LINK_TABLES:
                found: dict[int, list[int]] = {}
                for job_id, ref in _fetch_by_ids(
                    conn, f"SELECT job_id, ref_id FROM {table}", ids, key="job_id"
                ):
                    found.setdefault(job_id, []).append(ref)
                links[table] = found
            return rows, links

        rows, links = await self.store.read(fetch)
        by_id = {r[0]: r for r in rows}
        engine = wf.engine
        out = []
        for job_id in ids:
            r = by_id.get(job_id)
            if r is None:  # deleted meanwhile
                continue
            idx = job_id - base
            holder = engine.holder(idx)
            out.append({
                "id": job_id,
                "workflow_id": wf.id,
                "name": r[1],
                "command": r[2],
                "invocation_script": r[3],
                "status": STATUS_LABELS[engine.statuses[idx]],
                "attempt": engine.attempt(idx),
                "run_id": engine.run_id,
                "compute_node_id": holder if holder >= 0 else None,
                "num_cpus": r[4],
                "num_gpus": r[5],
                "num_nodes": r[6],
                "memory_bytes": r[7],
                "runtime_s": r[8],
                "resource_requirements": r[9],
                "scheduler": r[10],
                "failure_handler": r[11],
                "supports_termination": bool(r[12]),
                "cancel_on_blocking_job_failure": bool(r[13]),
                "depends_on": [base + u for u in wf.upstream_jobs(idx)],
                "input_files": sorted(links["job_input_files"].get(job_id, [])),
                "output_files": sorted(links["job_output_files"].get(job_id, [])),
                "input_user_data": sorted(links["job_input_user_data"].get(job_id, [])),
                "output_user_data": sorted(links["job_output_user_data"].get(job_id, [])),
            })
        return out

    async def list_jobs(
        self, who: Principal, wf_id: int, args: Mapping[str, str]
    ) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        offset, limit = page_args(args, 1000)
        status_text = args.get("status")
        if status_text:
            try:
                code = int(JobStatus.parse(status_text))
            except ValueError as exc:
                raise bad_request(f"query parameter status: {exc}") from None
            st = wf.engine.statuses
            matching = [i for i in range(wf.num_jobs) if st[i] == code]
            total = len(matching)
            page = matching[offset : offset + limit]
        else:
            total = wf.num_jobs
            page = list(range(min(offset, total), min(offset + limit, total)))
        items = await self._job_objects(wf, page)
        return {"items": items, "total": total, "offset": offset, "limit": limit}

    async def get_job(self, who: Principal, wf_id: int, job_id: int) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        idx = wf.job_index(job_id)
        items = await self._job_objects(wf, [idx])
        if not items:
            raise ApiError(404, "not found", f"no job {job_id}")
        return items[0]

    async def disable_job(self, who: Principal, wf_id: int, job_id: int) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        idx = wf.job_index(job_id)
        _, batch = self._drive(wf, ev.DisableJobs(jobs=(idx,)), self.clock())
        await batch.wait()
        return await self.get_job(who, wf_id, job_id)

    # -----------------------------------------------------------------------------------------
    # Files and user data

    def _parse_mtimes(self, wf: WorkflowState, value: Any, where: str) -> dict[int, float | None]:
        obj = as_object(value, where)
        out: dict[int, float | None] = {}
        for key, m in obj.items():
            try:
                fid = int(key)
            except ValueError:
                raise bad_request(f"{where}: key {key!r} is not a file id") from None
            if not 0 <= fid - wf.file_id_base < wf.num_files:
                raise ApiError(404, "not found", f"{where}: no file {fid} in workflow {wf.id}")
            if m is not None and (isinstance(m, bool) or not isinstance(m, int | float)):
                raise bad_request(f"{where}.{key}: expected number or null, got {_type_name(m)}")
            out[fid] = None if m is None else float(m)
        return out

    def _store_mtimes(
        self, wf: WorkflowState, given: Mapping[int, float | None], batch: Batch
    ) -> None:
        if not given:
            return
        for fid, m in given.items():
            wf.file_mtimes[fid - wf.file_id_base] = m
        batch.pre.append(
            ("UPDATE files SET st_mtime=? WHERE id=?", [(m, fid) for fid, m in given.items()])
        )

    async def record_mtimes(
        self, who: Principal, wf_id: int, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        if "mtimes" not in body:
            raise bad_request("mtimes: required")
        given = self._parse_mtimes(wf, body["mtimes"], "mtimes")
        batch = self.store.batch
        self._store_mtimes(wf, given, batch)
        await batch.wait()
        return {"recorded": len(given)}

    async def list_files(
        self, who: Principal, wf_id: int, args: Mapping[str, str], file_id: int | None = None
    ) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        offset, limit = page_args(args, 1000)
        if file_id is not None:
            if not 0 <= file_id - wf.file_id_base < wf.num_files:
                raise ApiError(404, "not found", f"no file {file_id} in workflow {wf_id}")
            lo = file_id
            hi = file_id
        else:
            lo = wf.file_id_base + offset
            hi = wf.file_id_base + min(wf.num_files, offset + limit) - 1
        rows = await self.store.read(
            lambda c: c.execute(
                "SELECT id, name, path, st_mtime FROM files WHERE id BETWEEN ? AND ? ORDER BY id",
                (lo, hi),
            ).fetchall()
        )
        items = [{"id": r[0], "name": r[1], "path": r[2], "st_mtime": r[3]} for r in rows]
        if file_id is not None:
            return items[0]
        return {"items": items, "total": wf.num_files, "offset": offset, "limit": limit}

    async def list_user_data(
        self, who: Principal, wf_id: int, args: Mapping[str, str], ud_id: int | None = None
    ) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        offset, limit = page_args(args, 1000)
        if ud_id is not None:
            if not 0 <= ud_id - wf.user_data_id_base < wf.num_user_data:
                raise ApiError(404, "not found", f"no user_data {ud_id} in workflow {wf_id}")
            lo = hi = ud_id
        else:
            lo = wf.user_data_id_base + offset
            hi = wf.user_data_id_base + min(wf.num_user_data, offset + limit) - 1
        rows = await self.store.read(
            lambda c: c.execute(
                "SELECT id, name, data, is_ephemeral FROM user_data WHERE id BETWEEN ? AND ?"
                " ORDER BY id",
                (lo, hi),
            ).fetchall()
        )
        items = [
            {"id": r[0], "name": r[1], "data": None if r[2] is None else json.loads(r[2]),
             "is_ephemeral": bool(r[3])}
            for r in rows
        ]
        if ud_id is not None:
            return items[0]
        return {"items": items, "total": wf.num_user_data, "offset": offset, "limit": limit}

    async def put_user_data(
        self, who: Principal, wf_id: int, ud_id: int, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        idx = ud_id - wf.user_data_id_base
        if not 0 <= idx < wf.num_user_data:
            raise ApiError(404, "not found", f"no user_data {ud_id} in workflow {wf_id}")
        if "data" not in body:
            raise bad_request("data: required")
        batch = self.store.batch
        batch.pre.append(
            ("UPDATE user_data SET data=?, changed=1 WHERE id=?", (json.dumps(body["data"]), ud_id))
        )
        wf.changed_user_data.add(idx)
        await batch.wait()
        return await self.list_user_data(who, wf_id, {}, ud_id)

    # -----------------------------------------------------------------------------------------
    # Results and events

    async def list_results(
        self, who: Principal, wf_id: int, args: Mapping[str, str]
    ) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        offset, limit = page_args(args, 1000)
        where = "r.workflow_id=?"
        params: list[Any] = [wf.id]
        status_text = args.get("status")
        if status_text:
            try:
                params.append(int(JobStatus.parse(status_text)))
            except ValueError as exc:
                raise bad_request(f"query parameter status: {exc}") from None
            where += " AND r.status=?"

        def fetch(conn: sqlite3.Connection) -> tuple[int, list[tuple[Any, ...]]]:
            total = conn.execute(
                f"SELECT count(*) FROM results r WHERE {where}", params
            ).fetchone()[0]
            rows = conn.execute(
                "SELECT r.id, r.job_id, r.run_id, r.attempt, r.return_code, r.status,"
                " r.exec_time_s, r.completed_at, r.compute_node_id, c.slurm_job_id"
                " FROM results r LEFT JOIN compute_nodes c ON c.id = r.compute_node_id"
                f" WHERE {where} ORDER BY r.id LIMIT ? OFFSET ?",
                [*params, limit, offset],
            ).fetchall()
            return total, rows

        total, rows = await self.store.read(fetch)
        base = wf.job_id_base
        items = [
            {
                "id": r[0], "job_id": r[1], "job_name": wf.names[r[1] - base]
                if 0 <= r[1] - base < wf.num_jobs else None,
                "run_id": r[2], "attempt": r[3], "return_code": r[4],
                "status": STATUS_LABELS[r[5]], "exec_time_s": r[6], "completed_at": r[7],
                "compute_node_id": r[8], "slurm_job_id": r[9],
            }
            for r in rows
        ]
        return {"items": items, "total": total, "offset": offset, "limit": limit}

    async def list_events(
        self, who: Principal, wf_id: int, args: Mapping[str, str]
    ) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        after = query_int(args, "after", 0)
        offset = query_int(args, "offset", 0)
        limit = query_int(args, "limit", 1000, maximum=MAX_PAGE)

        def fetch(conn: sqlite3.Connection) -> tuple[int, list[tuple[Any, ...]]]:
            total = conn.execute(
                "SELECT count(*) FROM events WHERE workflow_id=? AND id>?", (wf.id, after)
            ).fetchone()[0]
            rows = conn.execute(
                "SELECT id, ts, kind, data FROM events WHERE workflow_id=? AND id>?"
                " ORDER BY id LIMIT ? OFFSET ?",
                (wf.id, after, limit, offset),
            ).fetchall()
            return total, rows

        total, rows = await self.store.read(fetch)
        items = [
            {"id": r[0], "ts": r[1], "kind": r[2],
             "data": None if r[3] is None else json.loads(r[3])}
            for r in rows
        ]
        return {"items": items, "total": total, "offset": offset, "limit": limit}

    # -----------------------------------------------------------------------------------------
    # Runner protocol

    async def register_compute_node(
        self, who: Principal, wf_id: int, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        hostname = get_str(body, "hostname", "")
        pid = get_int(body, "pid", "", default=None, nullable=True)
        cpus = get_int(body, "num_cpus", "", default=None, nullable=True, minimum=0)
        memory = get_int(body, "memory_bytes", "", default=None, nullable=True, minimum=0)
        gpus = get_int(body, "num_gpus", "", default=None, nullable=True, minimum=0)
        nodes = get_int(body, "num_nodes", "", default=None, nullable=True, minimum=0)
        slurm = body.get("slurm_job_id")
        if slurm is not None and not isinstance(slurm, str | int):
            raise bad_request(f"slurm_job_id: expected string, got {_type_name(slurm)}")
        slurm = None if slurm is None else str(slurm)
        now = self.clock()
        cn_id = self.store.next_compute_node_id
        self.store.next_compute_node_id += 1
        wf.engine.handle(ev.Heartbeat(runner_id=cn_id, lease_s=self.lease_s), now)
        deadline = wf.engine.lease_deadline(cn_id)
        self.compute_nodes[cn_id] = ComputeNode(cn_id, wf.id, True, slurm)
        batch = self.store.batch
        batch.pre.append((
            "INSERT INTO compute_nodes (id, workflow_id, hostname, pid, num_cpus, memory_bytes,"
            " num_gpus, num_nodes, slurm_job_id, created_at, lease_deadline, is_active)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,1)",
            (cn_id, wf.id, hostname, pid, cpus, memory, gpus, nodes, slurm, now, deadline),
        ))
        batch.event(wf.id, now, "compute_node_registered",
                    {"compute_node_id": cn_id, "hostname": hostname, "slurm_job_id": slurm})
        await batch.wait()
        return {"id": cn_id, "lease_s": self.lease_s}

    async def list_compute_nodes(
        self, who: Principal, wf_id: int, args: Mapping[str, str]
    ) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        offset, limit = page_args(args, 1000)

        def fetch(conn: sqlite3.Connection) -> tuple[int, list[tuple[Any, ...]]]:
            total = conn.execute(
                "SELECT count(*) FROM compute_nodes WHERE workflow_id=?", (wf.id,)
            ).fetchone()[0]
            rows = conn.execute(
                "SELECT id, hostname, pid, num_cpus, memory_bytes, num_gpus, num_nodes,"
                " slurm_job_id, created_at, is_active FROM compute_nodes WHERE workflow_id=?"
                " ORDER BY id LIMIT ? OFFSET ?",
                (wf.id, limit, offset),
            ).fetchall()
            return total, rows

        total, rows = await self.store.read(fetch)
        engine = wf.engine
        items = [
            {
                "id": r[0], "hostname": r[1], "pid": r[2], "num_cpus": r[3],
                "memory_bytes": r[4], "num_gpus": r[5], "num_nodes": r[6],
                "slurm_job_id": r[7], "created_at": r[8],
                "is_active": bool(self.compute_nodes[r[0]].active)
                if r[0] in self.compute_nodes else bool(r[9]),
                "lease_deadline": engine.lease_deadline(r[0]),
                "jobs": sorted(wf.job_id_base + j for j in engine.runner_jobs(r[0])),
            }
            for r in rows
        ]
        return {"items": items, "total": total, "offset": offset, "limit": limit}

    def _lease_row(self, wf: WorkflowState, cn: ComputeNode, batch: Batch) -> None:
        deadline = wf.engine.lease_deadline(cn.id)
        batch.compute_nodes[cn.id] = (deadline, int(cn.active))
        if deadline is not None and deadline < self._next_timer:
            self._timer_wake.set()

    async def heartbeat(self, who: Principal, wf_id: int, cn_id: int) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        cn = self.compute_node(wf, cn_id)
        if cn.active:
            _, batch = self._drive(wf, ev.Heartbeat(runner_id=cn_id, lease_s=self.lease_s),
                                   self.clock())
            self._lease_row(wf, cn, batch)
            await batch.wait()
        return {"is_complete": wf.engine.is_complete, "is_canceled": wf.engine.canceled,
                "active": cn.active}

    async def claim(
        self, who: Principal, wf_id: int, cn_id: int, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        cn = self.compute_node(wf, cn_id)
        limit = get_int(body, "limit", "", default=32, minimum=0)
        cpus = get_int(body, "cpus", "", default=None, nullable=True, minimum=0)
        memory = get_int(body, "memory_bytes", "", default=None, nullable=True, minimum=0)
        gpus = get_int(body, "gpus", "", default=None, nullable=True, minimum=0)
        nodes = get_int(body, "nodes", "", default=None, nullable=True, minimum=0)
        walltime = get_number(body, "walltime_s", "", default=None, nullable=True)
        sched_name = get_str(body, "scheduler", "", default=None, nullable=True)
        sched: int | None = None
        if sched_name is not None:
            if sched_name not in wf.scheduler_names:
                raise ApiError(422, "unknown scheduler",
                               f"scheduler: no scheduler named {sched_name!r} in workflow {wf.id}")
            sched = wf.scheduler_names[sched_name]
        seq = get_int(body, "claim_seq", "", default=None, nullable=True, minimum=0)
        # Results reported with the claim (one round trip per cycle for a busy runner):
        # checked with everything else before anything changes, applied before the claim.
        results = self._parse_results(wf, body) if "results" in body else None
        if seq is not None and cn.last_claim is not None and cn.last_claim[0] == seq:
            _, replay, replay_batch = cn.last_claim
            await replay_batch.wait()
            return replay
        now = self.clock()
        reported: dict[str, int] = {}
        if results:
            accepted, duplicates, batch = self._record_results(wf, cn, results, now)
            reported = {"accepted": accepted, "duplicates": duplicates}
            if not cn.active:  # late results still count; the claim itself cannot be served
                await batch.wait()
        if not cn.active:
            raise ApiError(409, "conflict", f"compute node {cn_id} was deactivated")
        if "held_job_ids" in body:
            # The runner claims one batch at a time, so it knows every job it holds. Jobs we
            # think it holds but it does not know were in an answer it never received (e.g.
            # across a server restart, where the replay record above is gone): give them back.
            held = {wf.job_index(j) for j in get_list(body, "held_job_ids", "")
                    if isinstance(j, int) and not isinstance(j, bool)}
            lost = tuple(sorted(wf.engine.runner_jobs(cn_id) - held))
            if lost:
                self._drive(wf, ev.ReleaseJobs(runner_id=cn_id, jobs=lost), now)
        effects, batch = self._drive(
            wf,
            ev.ClaimJobs(runner_id=cn_id, limit=limit, lease_s=self.lease_s, cpus=cpus,
                         memory=memory, gpus=gpus, nodes=nodes, walltime_s=walltime,
                         scheduler=sched),
            now,
        )
        self._lease_row(wf, cn, batch)
        model = wf.model
        base = wf.job_id_base
        out: list[dict[str, Any]] = []
        names, commands, scripts, term = (
            wf.names, wf.commands, wf.invocation_scripts, wf.supports_termination,
        )
        for eff in effects:
            if isinstance(eff, ev.JobsClaimed):
                for c in eff.jobs:
                    j = c.job
                    out.append({
                        "id": base + j, "name": names[j], "command": commands[j],
                        "invocation_script": scripts[j], "attempt": c.attempt,
                        "run_id": c.run_id, "recovery_script": c.recovery_script,
                        "supports_termination": bool(term[j]), "num_cpus": model.cpus[j],
                        "num_gpus": model.gpus[j], "memory_bytes": model.memory[j],
                        "runtime_s": model.runtime[j],
                    })
        response = {"jobs": out, "is_complete": wf.engine.is_complete,
                    "is_canceled": wf.engine.canceled, "counts": wf.counts(), **reported}
        if seq is not None:
            cn.last_claim = (seq, response, batch)
        await batch.wait()
        return response

    async def start(
        self, who: Principal, wf_id: int, cn_id: int, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        cn = self.compute_node(wf, cn_id)
        raw = get_list(body, "job_ids", "")
        jobs = []
        for k, v in enumerate(raw):
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad_request(f"job_ids[{k}]: expected integer, got {_type_name(v)}")
            jobs.append(wf.job_index(v))
        before = wf.engine.counts()[JobStatus.RUNNING]
        _, batch = self._drive(wf, ev.StartJobs(runner_id=cn_id, jobs=tuple(jobs)), self.clock())
        started = wf.engine.counts()[JobStatus.RUNNING] - before
        self._lease_row(wf, cn, batch)
        await batch.wait()
        return {"started": started}

    async def complete(
        self, who: Principal, wf_id: int, cn_id: int, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        cn = self.compute_node(wf, cn_id)
        results = self._parse_results(wf, body)
        accepted, duplicates, batch = self._record_results(wf, cn, results, self.clock())
        response = {"accepted": accepted, "duplicates": duplicates,
                    "is_complete": wf.engine.is_complete, "is_canceled": wf.engine.canceled}
        await batch.wait()
        return response

    def _parse_results(self, wf: WorkflowState, body: Mapping[str, Any]) -> list[ev.JobResult]:
        """The ``results`` of a complete (or claim) body, every item checked before any is
        applied; errors name the item."""
        raw = get_list(body, "results", "")
        results: list[ev.JobResult] = []
        base, n = wf.job_id_base, wf.num_jobs
        append = results.append
        JobResult = ev.JobResult
        for k, item in enumerate(raw):
            # Fast path for well-formed items (the common case, thousands per request); any
            # doubt falls through to the located checks below.
            if type(item) is dict:
                job_id = item.get("job_id")
                attempt = item.get("attempt")
                run_id = item.get("run_id")
                rc = item.get("return_code")
                st = item.get("status")
                et = item.get("exec_time_s", 0.0)
                if (
                    type(job_id) is int and type(attempt) is int and type(run_id) is int
                    and type(rc) is int and (type(et) is float or type(et) is int)
                    and attempt >= 1 and run_id >= 1 and 0 <= job_id - base < n
                    and (st == "completed" or st == "failed" or (st is None and rc != 0))
                    and math.isfinite(et)
                ):
                    append(JobResult(job=job_id - base, attempt=attempt, run_id=run_id,
                                     return_code=rc, exec_time_s=float(et)))
                    continue
            where = f"results[{k}]"
            obj = as_object(item, where)
            job_id = get_int(obj, "job_id", where)
            if not 0 <= job_id - base < n:
                raise ApiError(404, "not found", f"{where}.job_id: no job {job_id} in workflow "
                                                 f"{wf.id}")
            status_text = get_str(obj, "status", where, default=None, nullable=True)
            rc = get_int(obj, "return_code", where)
            if status_text is None:
                status_text = "completed" if rc == 0 else "failed"
            if status_text not in RESULT_STATUS:
                raise bad_request(f"{where}.status: expected completed, failed or terminated, "
                                  f"got {status_text!r}")
            results.append(ev.JobResult(
                job=job_id - base,
                attempt=get_int(obj, "attempt", where, minimum=1),
                run_id=get_int(obj, "run_id", where, minimum=1),
                return_code=rc,
                terminated=status_text == "terminated",
                exec_time_s=get_number(obj, "exec_time_s", where, default=0.0),
            ))
        return results

    def _record_results(self, wf: WorkflowState, cn: ComputeNode, results: list[ev.JobResult],
                        now: float) -> tuple[int, int, Batch]:
        """Apply results (idempotent by job, run and attempt); (accepted, duplicates, batch)."""
        effects, batch = self._drive(
            wf, ev.CompleteJobs(runner_id=cn.id, results=tuple(results)), now
        )
        accepted = duplicates = 0
        base = wf.job_id_base
        for eff in effects:
            if isinstance(eff, ev.ResultsRecorded):
                accepted = len(eff.accepted)
                duplicates = len(eff.duplicates)
                completed, failed, terminated = (
                    int(JobStatus.COMPLETED), int(JobStatus.FAILED), int(JobStatus.TERMINATED)
                )
                batch.results.extend(
                    (wf.id, base + r.job, r.run_id, r.attempt, r.return_code,
                     terminated if r.terminated else completed if r.return_code == 0 else failed,
                     r.exec_time_s, now, cn.id)
                    for r in eff.accepted
                )
        if cn.active:
            self._lease_row(wf, cn, batch)
        return accepted, duplicates, batch

    async def deactivate(self, who: Principal, wf_id: int, cn_id: int) -> dict[str, Any]:
        wf = self.workflow(wf_id, who)
        cn = self.compute_node(wf, cn_id)
        effects, batch = self._drive(wf, ev.ReleaseRunner(runner_id=cn_id), self.clock())
        released: list[int] = []
        for eff in effects:
            if isinstance(eff, ev.RunnerReleased):
                released = [wf.job_id_base + j for j in eff.jobs]
        cn.active = False
        batch.compute_nodes[cn_id] = (None, 0)
        await batch.wait()
        return {"released": released}

    # -----------------------------------------------------------------------------------------
    # Lease timer

    async def run_lease_timer(self) -> None:
        """Sleep until the earliest lease deadline over all workflows, then expire leases."""
        while True:
            now = self.clock()
            earliest = math.inf
            batch: Batch | None = None
            for wf in list(self.workflows.values()):
                deadline = wf.engine.get_timer()
                if deadline is None:
                    continue
                if deadline <= now:
                    effects, batch = self._drive(wf, None, now)
                    for eff in effects:
                        if isinstance(eff, ev.LeasesExpired):
                            for cn_id in eff.runner_ids:
                                batch.compute_nodes[cn_id] = (None, 1)
                    deadline = wf.engine.get_timer()
                if deadline is not None:
                    earliest = min(earliest, deadline)
            self._next_timer = earliest
            self._timer_wake = trio.Event()
            delay = min(max(earliest - self.clock(), 0.0), 60.0)
            with trio.move_on_after(delay):
                await self._timer_wake.wait()
            await trio.lowlevel.checkpoint()

    # -----------------------------------------------------------------------------------------
    # Feed

    def subscribe(self, who: Principal, wf_id: int | None) -> tuple[Any, list[dict[str, Any]]]:
        """Register a subscriber and return it with its first messages (current counts)."""
        if wf_id is not None:
            wfs = [self.workflow(wf_id, who)]
        else:
            wfs = [wf for wf in self.workflows.values() if who.may_see(wf.user)]
        sub = self.feed.subscribe(wf_id, who.may_see)
        first = [
            {"type": "counts", "workflow_id": wf.id, "counts": wf.counts()} for wf in wfs
        ]
        return sub, first

