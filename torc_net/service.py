"""The server's workflows: live engines in memory, rows in the store, events to the feed.

Theory of operation
-------------------
:class:`Service` holds every workflow's :class:`~torc_net.state.WorkflowState` and the
registered compute nodes. The endpoints (:mod:`torc_net.api_workflows`,
:mod:`torc_net.api_reads`, :mod:`torc_net.api_runner`, :mod:`torc_net.allocations`) are
functions of the service and one :class:`Call`; the app dispatches to them by route name.

Rule 1: validate in full, then drive. The app checks a body against its route's schema; the
endpoint checks what only it can (ids that exist, who may act) and builds ONE engine input.
Then :meth:`Service.drive` hands it to the engine and records the effects as one store change
(:func:`torc_net.effects.record`), with no ``await`` in between: trio switches tasks only at
awaits, so inputs to one workflow are serialized and changes follow engine order.

Rule 2: answer only after ``await change.wait()``, built from the effects (never by reading the
engine back): nothing is acknowledged before it is on disk.

Rule 3: memory never stays ahead of the disk. When a change cannot be stored, the store fails
it and every later change to its workflows; the service then marks those workflows
*reloading* — every request for them gets 503 + Retry-After — and rebuilds them from the
database (:meth:`Service.run_reloads`): the results, claims and leases that were refused are
as if they never happened, and nothing unstored is ever reported as a duplicate.

Rule 4: who may see (and change) a workflow is one rule, :meth:`Service.may_see`: the owner
rule of :class:`~torc_net.state.Principal` plus access groups (:mod:`torc_net.access`). Every
workflow route (:meth:`Service.workflow`), every list (:meth:`Service.visible`) and the feed
(:meth:`Service.subscribe`) ask it; nothing else decides.

Rule 5: the clock is the wall clock (``time.time()``): lease deadlines are stored and must mean
the same thing after a restart.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import trio

from torc_core import events as ev
from torc_core.errors import EngineError
from torc_core.parse import DEFAULT_MAX_JOBS
from torc_core.status import JobStatus

from .access import AccessGroups
from .effects import Recorded, record
from .feed import Feed
from .state import ComputeNode, Principal, WorkflowState, counts_object, restore_workflow
from .store import Change, Store, StoredWorkflow, StoreError
from .store import queries as q
from .store.access import read_access
from .validate import ApiError, not_found

log = logging.getLogger("torc_net.service")

#: How long a request for a workflow being reloaded is told to wait, and how often a reload
#: that could not read the database is tried again.
RELOAD_RETRY_S = 1.0
#: Past this many items a page is built (and encoded) on a worker thread, not the event loop:
#: 100,000 job objects took 1.6 s, during which no other request was answered.
OFFLOAD_ITEMS = 2000

T = TypeVar("T")


@dataclass(slots=True, frozen=True)
class Call:
    """One request, validated: who, the body (checked against the route's schema, defaults
    filled in), the query string and the path's parameters (checked against their converter's
    schema, :data:`torc_net.openapi.PATH_SCHEMAS`: an ``int`` for ids, a ``str`` for names)."""

    who: Principal
    body: Any = None
    args: Mapping[str, str] = field(default_factory=dict)
    path: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class Answer:
    """An endpoint's answer with a status other than its route's usual one."""

    status: int
    body: Any


def _load_one(conn: sqlite3.Connection, wf_id: int, now: float) \
        -> tuple[WorkflowState, list[ComputeNode]] | None:
    """Read and rebuild one workflow in the store's thread (a million jobs take seconds)."""
    stored: StoredWorkflow | None = q.read_workflow(conn, wf_id)
    return None if stored is None else restore_workflow(stored, now)


class LeaseTimer:
    """Sleeps until the earliest lease deadline over all workflows, then expires leases."""

    def __init__(self) -> None:
        self._wake = trio.Event()
        self._next = math.inf

    def note(self, deadline: float | None) -> None:
        """A lease now ends at ``deadline``: wake up sooner if that is earlier."""
        if deadline is not None and deadline < self._next:
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, service: Service) -> None:
        while True:
            now = service.clock()
            earliest = math.inf
            for wf in list(service.workflows.values()):
                deadline = wf.engine.get_timer()
                if deadline is None:
                    continue
                if deadline <= now and wf.id not in service.reloading:
                    service.drive(wf, None, now)
                    deadline = wf.engine.get_timer()
                if deadline is not None:
                    earliest = min(earliest, deadline)
            self._next = earliest
            self._wake = trio.Event()
            delay = min(max(earliest - service.clock(), 0.0), 60.0)
            with trio.move_on_after(delay):
                await self._wake.wait()
            await trio.lowlevel.checkpoint()


class Service:
    """Workflows in memory + store + feed. See the module docstring for the rules."""

    def __init__(
        self,
        store: Store,
        feed: Feed,
        *,
        lease_s: float = 1800.0,
        parse_limiter: trio.CapacityLimiter | None = None,
        clock: Callable[[], float] = time.time,
        max_jobs: int = DEFAULT_MAX_JOBS,
        read_job_files: bool = False,
    ) -> None:
        self.store = store
        #: ServerConfig.read_job_files (torc_net.api_output: only `torc-trio dash` sets it)
        self.read_job_files = read_job_files
        self.feed = feed
        self.lease_s = lease_s
        #: threads for parsing and compiling specs: never the store's (a big create must not
        #: hold the threads commits need)
        self.parse_limiter = parse_limiter or trio.CapacityLimiter(1)
        self.clock = clock
        self.max_jobs = max_jobs
        self.workflows: dict[int, WorkflowState] = {}
        self.compute_nodes: dict[int, ComputeNode] = {}
        #: access groups (Rule 4)
        self.access = AccessGroups()
        #: workflows whose memory is being rebuilt from the database (Rule 3)
        self.reloading: dict[int, trio.Event] = {}
        self._reload_wake = trio.Event()
        self.timer = LeaseTimer()
        store.on_lost = self._lost
        store.publish = feed.publish_many

    # -----------------------------------------------------------------------------------------
    # Start-up

    async def load(self) -> None:
        now = self.clock()
        self.access.load(await self.store.read(read_access))
        for wf_id in await self.store.read(q.workflow_ids):
            loaded = await self.store.read(_load_one, wf_id, now)
            if loaded is not None:
                self._install(*loaded)
        self.timer.wake()

    def _install(self, wf: WorkflowState, nodes: list[ComputeNode]) -> None:
        self.workflows[wf.id] = wf
        for cn_id in [c.id for c in self.compute_nodes.values() if c.workflow_id == wf.id]:
            del self.compute_nodes[cn_id]
        for cn in nodes:
            self.compute_nodes[cn.id] = cn

    async def offload(self, items: int, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``: here for small work, on a worker thread (the parse limiter's) when it
        handles more than ``OFFLOAD_ITEMS`` items. Such work may read an engine's columns (a
        snapshot of them as of about now) but never changes anything."""
        if items <= OFFLOAD_ITEMS:
            return fn(*args)
        return await trio.to_thread.run_sync(lambda: fn(*args), limiter=self.parse_limiter,
                                             abandon_on_cancel=True)

    # -----------------------------------------------------------------------------------------
    # Lookups (Rule 4)

    def may_see(self, who: Principal, wf: WorkflowState) -> bool:
        """Whether ``who`` may see and change ``wf``: the rule of :mod:`torc_net.access`."""
        return self.access.may_see(who, wf.id, wf.user)

    def workflow(self, wf_id: int, who: Principal) -> WorkflowState:
        wf = self.workflows.get(wf_id)
        if wf_id in self.reloading:
            raise self._reloading_error(wf_id)
        if wf is None:
            raise not_found(f"no workflow {wf_id}")
        if not self.access.may_see(who, wf_id, wf.user):
            if not who.authenticated:
                raise ApiError(401, "unauthorized",
                               f"workflow {wf_id} belongs to a user: send credentials",
                               {"WWW-Authenticate": 'Basic realm="torc"'})
            raise ApiError(403, "forbidden", f"workflow {wf_id} belongs to another user and "
                           f"is not shared with a group {who.name} is a member of")
        return wf

    def compute_node(self, wf: WorkflowState, cn_id: int) -> ComputeNode:
        cn = self.compute_nodes.get(cn_id)
        if cn is None or cn.workflow_id != wf.id:
            raise not_found(f"no compute node {cn_id} in workflow {wf.id}")
        return cn

    def visible(self, who: Principal) -> list[WorkflowState]:
        may_see = self.access.may_see
        return sorted((wf for wf in self.workflows.values() if may_see(who, wf.id, wf.user)),
                      key=lambda wf: wf.id)

    @staticmethod
    def _reloading_error(wf_id: int) -> ApiError:
        return ApiError(503, "storage unavailable",
                        f"workflow {wf_id} is being reloaded from the database after a write "
                        "failed; retry", {"Retry-After": str(int(RELOAD_RETRY_S))})

    # -----------------------------------------------------------------------------------------
    # Driving (Rule 1)

    def change(self, wf: WorkflowState) -> Change:
        """A store change for ``wf`` outside the engine (files, user data, actions...)."""
        self._check_current(wf)
        return self.store.change(frozenset((wf.id,)))

    def drive(self, wf: WorkflowState, event: ev.EngineInput | None, now: float, *,
              reason: str | None = None,
              accepted: Callable[[list[ev.Effect]], None] | None = None) \
            -> tuple[list[ev.Effect], Change, Recorded]:
        """Handle one input (``None``: the lease timer) and record its effects; no awaits.
        ``reason``: why, kept in the events the effects record. ``accepted(effects)``: called
        once the engine took the input, before its effects are recorded (a growth extends the
        workflow's columns there, which recording its new jobs reads)."""
        self._check_current(wf)
        try:
            effects = (wf.engine.handle(event, now) if event is not None
                       else wf.engine.handle_timer(now))
        except EngineError as exc:  # refused: nothing changed; say it in the ids users see
            short = {404: "not found", 409: "conflict", 422: "unprocessable"}
            raise ApiError(exc.status_hint, short.get(exc.status_hint, "bad request"),
                           exc.naming(lambda j: str(wf.job_id(j)))) from None
        if accepted is not None:
            accepted(effects)
        change = self.store.change(frozenset((wf.id,)))
        nodes = self.compute_nodes
        recorded = record(wf, effects, change, now,
                          is_active=lambda cn: nodes[cn].active if cn in nodes else False,
                          publish=self.feed.wants(wf.id), reason=reason)
        self.timer.note(recorded.earliest_lease)
        return effects, change, recorded

    def _check_current(self, wf: WorkflowState) -> None:
        """``wf`` may have been reloaded or deleted while the caller awaited something."""
        if wf.id in self.reloading:
            raise self._reloading_error(wf.id)
        if self.workflows.get(wf.id) is not wf:
            raise not_found(f"no workflow {wf.id}")

    # -----------------------------------------------------------------------------------------
    # Reloads (Rule 3)

    def _lost(self, wf_ids: set[int]) -> None:
        for wf_id in wf_ids:
            self.reloading.setdefault(wf_id, trio.Event())
        self._reload_wake.set()

    async def run_reloads(self) -> None:
        """Rebuild the workflows whose changes failed, from what the database holds."""
        while True:
            await self._reload_wake.wait()
            self._reload_wake = trio.Event()
            for wf_id in list(self.reloading):
                try:
                    loaded = await self.store.read(_load_one, wf_id, self.clock())
                except (StoreError, RuntimeError) as exc:
                    log.error("workflow %d: cannot reload from the database (%s); retrying",
                              wf_id, exc)
                    self._reload_wake.set()
                    await trio.sleep(RELOAD_RETRY_S)
                    continue
                old = self.workflows.pop(wf_id, None)
                if loaded is None:
                    for cn_id in [c.id for c in self.compute_nodes.values()
                                  if c.workflow_id == wf_id]:
                        del self.compute_nodes[cn_id]
                else:
                    self._install(*loaded)
                log.warning("workflow %d reloaded from the database", wf_id)
                self.reloading.pop(wf_id).set()
                wf = self.workflows.get(wf_id)
                if wf is not None and self.feed.wants(wf_id):
                    # Watchers heard nothing of what failed, but their counts may have
                    # included it: the counts from disk put them right.
                    self.feed.publish_many(wf_id, wf.user, [self.counts_message(wf)])
                elif old is not None:
                    self.feed.close_workflow(wf_id)
                self.timer.wake()

    # -----------------------------------------------------------------------------------------
    # Feed

    @staticmethod
    def counts_message(wf: WorkflowState) -> dict[str, Any]:
        c = wf.engine.counts()
        return {"type": "counts", "workflow_id": wf.id,
                "counts": counts_object([c[s] for s in JobStatus])}

    def subscribe(self, who: Principal, wf_id: int | None, *, batched: bool = False) \
            -> tuple[Any, list[dict[str, Any]]]:
        """Register a subscriber and return it with its first messages (current counts). It
        hears only of changes made after these counts (Rule 3 of the store's changes).
        ``batched``: its frames are arrays of messages (torc_net.feed)."""
        if wf_id is not None:
            wfs = [self.workflow(wf_id, who)]
        else:
            wfs = self.visible(who)
        sub = self.feed.subscribe(wf_id, partial(self.access.may_see, who),
                                  since=self.store.sequence, batched=batched)
        return sub, [self.counts_message(wf) for wf in wfs]

    def access_changed(self) -> None:
        """A group change may have taken someone's access away: end their per-workflow feeds
        (the feed of all workflows just stops telling them of it)."""
        workflows = self.workflows
        self.feed.drop_unseen(lambda wf_id: wf.user if (wf := workflows.get(wf_id)) else None)
