"""The compiled workflow: what the engine needs, in flat arrays.

A :class:`WorkflowModel` is produced by :func:`torc_core.graph.compile_workflow` from a
:class:`~torc_core.spec.WorkflowSpec`, or rebuilt by the server from its database rows. It is
immutable once built, except the per-job ``cpus``, ``memory`` and ``runtime`` columns, which
only the engine's ``SetJobResources`` rewrites (:mod:`torc_core.job_resources`); the engine
keeps its own mutable per-job state next to it.

Node numbering: real jobs are ``0 .. num_jobs-1``; barrier nodes (internal, completed by the
engine itself, never claimed) are ``num_jobs .. num_nodes-1``. Edges point from a dependency
("upstream") to the node that waits for it ("downstream") and are stored in CSR form:
the downstream nodes of ``n`` are ``down_idx[down_ptr[n]:down_ptr[n+1]]``.

Why arrays: a million jobs as Python objects cost ~1 KB each; as columns they cost tens of bytes.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .spec import (
    DEFAULT_MEMORY_BYTES,
    DEFAULT_NUM_CPUS,
    DEFAULT_RUNTIME_S,
    FailureHandler,
)


def csr(num_rows: int, pairs: Iterable[tuple[int, int]]) -> tuple[array[int], array[int]]:
    """Build (ptr, idx) CSR arrays from (row, col) pairs; cols keep their input order per row."""
    counts = array("q", bytes(8 * (num_rows + 1)))
    materialized = pairs if isinstance(pairs, list) else list(pairs)
    for row, _ in materialized:
        counts[row + 1] += 1
    for i in range(num_rows):
        counts[i + 1] += counts[i]
    ptr = array("q", counts)
    fill = array("q", counts[:-1]) if num_rows else array("q")
    idx = array("l", bytes(8 * len(materialized)))
    for row, col in materialized:
        idx[fill[row]] = col
        fill[row] += 1
    return ptr, idx


@dataclass(slots=True, kw_only=True)
class WorkflowModel:
    num_jobs: int
    num_barriers: int
    down_ptr: array[int]  # len num_nodes + 1
    down_idx: array[int]
    cpus: array[int]  # per job
    gpus: array[int]
    nodes: array[int]
    memory: array[int]  # bytes
    runtime: array[int]  # seconds
    scheduler: array[int]  # index into the workflow's schedulers, -1 for none
    handler: array[int]  # index into failure_handlers, -1 for none
    cancel_on_failure: bytearray  # per node; barriers carry 0 (each dependent decides)
    input_files_ptr: array[int]  # CSR job -> file index
    input_files_idx: array[int]
    input_user_data_ptr: array[int]  # CSR job -> user_data index
    input_user_data_idx: array[int]
    failure_handlers: tuple[FailureHandler, ...] = ()
    num_schedulers: int = 0
    #: Edges of the graph as written, before barrier compression (for reporting).
    uncompressed_edges: int = 0
    #: per job, or None when every job has priority 0 (the common case costs nothing)
    priority: array[int] | None = None
    #: Torc's jobs_sort_method: the order claims take ready jobs in (after priority)
    sort_method: str = "gpus_runtime_memory"
    #: Torc's use_pending_failed: a failure with no retry left waits as pending_failed
    use_pending_failed: bool = False
    _up: tuple[array[int], array[int]] | None = field(default=None, repr=False)

    @property
    def num_nodes(self) -> int:
        return self.num_jobs + self.num_barriers

    @property
    def num_edges(self) -> int:
        return len(self.down_idx)

    def downstream(self, node: int) -> array[int]:
        return self.down_idx[self.down_ptr[node] : self.down_ptr[node + 1]]

    def upstream_csr(self) -> tuple[array[int], array[int]]:
        """Reverse CSR (node -> its dependencies), built once on first use."""
        if self._up is None:
            n = self.num_nodes
            ptr, idx = self.down_ptr, self.down_idx
            up_ptr = array("q", bytes(8 * (n + 1)))
            for d in idx:
                up_ptr[d + 1] += 1
            for i in range(n):
                up_ptr[i + 1] += up_ptr[i]
            fill = array("q", up_ptr)
            up_idx = array("l", bytes(8 * len(idx)))
            for u in range(n):
                for k in range(ptr[u], ptr[u + 1]):
                    d = idx[k]
                    up_idx[fill[d]] = u
                    fill[d] += 1
            self._up = (up_ptr, up_idx)
        return self._up

    def is_barrier(self, node: int) -> bool:
        return node >= self.num_jobs

    @classmethod
    def build(
        cls,
        num_jobs: int,
        edges: Sequence[tuple[int, int]] = (),
        *,
        num_barriers: int = 0,
        cpus: Sequence[int] | None = None,
        gpus: Sequence[int] | None = None,
        nodes: Sequence[int] | None = None,
        memory: Sequence[int] | None = None,
        runtime: Sequence[int] | None = None,
        scheduler: Sequence[int] | None = None,
        handler: Sequence[int] | None = None,
        cancel_on_failure: Sequence[bool] | None = None,
        input_files: Sequence[Sequence[int]] | None = None,
        input_user_data: Sequence[Sequence[int]] | None = None,
        failure_handlers: tuple[FailureHandler, ...] = (),
        num_schedulers: int = 0,
        uncompressed_edges: int | None = None,
        priority: Sequence[int] | None = None,
        sort_method: str | None = None,
        use_pending_failed: bool = False,
    ) -> WorkflowModel:
        """Convenience constructor from Python sequences (tests, the server's loader)."""

        def col(values: Sequence[int] | None, default: int, code: str = "q") -> array[int]:
            if values is None:
                return array(code, [default]) * num_jobs
            if len(values) != num_jobs:
                raise ValueError(f"expected {num_jobs} values, got {len(values)}")
            return array(code, values)

        num_nodes = num_jobs + num_barriers
        down_ptr, down_idx = csr(num_nodes, list(edges))
        cancel = bytearray(num_nodes)
        if cancel_on_failure is None:
            cancel[:num_jobs] = b"\x01" * num_jobs
        else:
            for i, flag in enumerate(cancel_on_failure):
                cancel[i] = 1 if flag else 0
        files_ptr, files_idx = csr(
            num_jobs, [(j, f) for j, fs in enumerate(input_files or ()) for f in fs]
        )
        ud_ptr, ud_idx = csr(
            num_jobs, [(j, u) for j, us in enumerate(input_user_data or ()) for u in us]
        )
        return cls(
            num_jobs=num_jobs,
            num_barriers=num_barriers,
            down_ptr=down_ptr,
            down_idx=down_idx,
            cpus=col(cpus, DEFAULT_NUM_CPUS),
            gpus=col(gpus, 0),
            nodes=col(nodes, 1),
            memory=col(memory, DEFAULT_MEMORY_BYTES),
            runtime=col(runtime, DEFAULT_RUNTIME_S),
            scheduler=col(scheduler, -1),
            handler=col(handler, -1),
            cancel_on_failure=cancel,
            input_files_ptr=files_ptr,
            input_files_idx=files_idx,
            input_user_data_ptr=ud_ptr,
            input_user_data_idx=ud_idx,
            failure_handlers=failure_handlers,
            num_schedulers=num_schedulers,
            uncompressed_edges=len(edges) if uncompressed_edges is None else uncompressed_edges,
            priority=priority_column(priority, num_jobs),
            sort_method=sort_method or "gpus_runtime_memory",
            use_pending_failed=use_pending_failed,
        )


def priority_column(values: Iterable[int] | None, num_jobs: int) -> array[int] | None:
    """Per-job priorities, or None when all are 0 (or none were given)."""
    if values is None:
        return None
    col = array("q", values)
    if len(col) != num_jobs:
        raise ValueError(f"expected {num_jobs} priorities, got {len(col)}")
    return col if any(col) else None
