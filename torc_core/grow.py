"""Growing a live workflow: dynamic jobs (:class:`~torc_core.events.AddJobs`).

Theory of operation
-------------------
A running job may add jobs to its own workflow (an orchestrator spawning its next iteration).
The engine grows in place, without a rebuild from the database, and keeps its numbering rule
(:mod:`torc_core.model`): real jobs are ``0 .. num_jobs-1``, barriers after them. So the new
jobs take indices ``n .. n+k-1`` (an existing job's index never changes: the server maps ids to
indices by order, and its rows, leases and ready queues keep pointing at the same jobs), and
every existing barrier moves up by ``k``; the part's own barriers go last::

    [old jobs 0..n-1][new jobs n..n+k-1][old barriers][new barriers]

Barriers live only in node-indexed columns (statuses, unmet counts, failure flags, the two
CSR graphs), so moving them is one pass over those columns: the cost of a growth is linear in
the workflow's size, which the server bounds by ``--max-jobs-per-workflow``. The server
stores barriers by their ordinal (``node - num_jobs``), which a growth never changes.

Every new job is also blocked on each ``after`` job; then the new nodes are initialized as a
selective reset initializes its jobs (:meth:`Engine._initialize`): a finished ``after`` job
counts as met, a failed one cancels the new jobs that cancel on failure.

Validate, then mutate: every check is done before the first column changes.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from . import events as ev
from .codes import _NOT_FINAL, _UNINITIALIZED
from .errors import BadInput, IllegalTransition, UnknownJob
from .model import WorkflowModel

if TYPE_CHECKING:
    from .engine import Engine


def _check(engine: Engine, event: ev.AddJobs) -> None:
    m, part = engine.model, event.part
    if engine.canceled:
        raise IllegalTransition("the workflow is canceled: no jobs can be added to it")
    for job in event.after:
        if not 0 <= job < m.num_jobs:
            raise UnknownJob("no such job in this workflow", job=job)
    if not part.num_jobs:
        raise BadInput("no jobs to add")
    for k in range(part.num_jobs):
        h, s = part.handler[k], part.scheduler[k]
        if not -1 <= h < len(m.failure_handlers):
            raise BadInput(f"new job {k}: failure handler index {h} out of range")
        if s != -1 and not 0 <= s < m.num_schedulers:
            raise BadInput(f"new job {k}: scheduler index {s} out of range")
    for name, value in (("file_offset", event.file_offset),
                        ("user_data_offset", event.user_data_offset)):
        if value < 0:
            raise BadInput(f"{name} must be >= 0, got {value}")
    for node in part.down_idx:
        if not 0 <= node < part.num_nodes:
            raise BadInput(f"an edge of the new jobs points at node {node}, outside them")


def _splice(parts: Sequence[tuple[Sequence[int], Sequence[int], int, int,
                                  Callable[[int], int] | None, dict[int, list[int]] | None]]) \
        -> tuple[array[int], array[int]]:
    """One CSR from row ranges of several: each part is (ptr, idx, first_row, end_row,
    remap of a column or None for none, extra columns by row). Rows keep their order within
    a part. Runs of rows without extras are copied as slices (C speed: a million rows of an
    old workflow cost milliseconds when nothing needs remapping)."""
    out_ptr = array("q", [0])
    out_idx = array("l")

    def copy(ptr: Sequence[int], idx: Sequence[int], lo: int, hi: int,
             remap: Callable[[int], int] | None) -> None:
        if lo >= hi:
            return
        shift = len(out_idx) - ptr[lo]
        chunk = idx[ptr[lo]:ptr[hi]]
        out_idx.extend(chunk if remap is None else map(remap, chunk))
        rows = ptr[lo + 1:hi + 1]
        out_ptr.extend(rows if shift == 0 else (p + shift for p in rows))

    for ptr, idx, lo, hi, remap, extra in parts:
        start = lo
        for row in sorted(r for r in (extra or ()) if lo <= r < hi):
            copy(ptr, idx, start, row + 1, remap)
            out_idx.extend(extra[row])  # type: ignore[index]
            out_ptr[-1] = len(out_idx)
            start = row + 1
        copy(ptr, idx, start, hi, remap)
    return out_ptr, out_idx


def _grown_model(m: WorkflowModel, part: WorkflowModel, after: Sequence[int],
                 file_offset: int, user_data_offset: int) -> WorkflowModel:
    n, k, b = m.num_jobs, part.num_jobs, m.num_barriers
    first_new_barrier = n + k + b

    def shift(x: int) -> int:
        return x if x < n else x + k

    old = shift if b else None  # without barriers no old node moves

    def new(y: int) -> int:
        return n + y if y < k else first_new_barrier + (y - k)

    new_jobs = list(range(n, n + k))
    down_extra = {a: new_jobs for a in after}
    down = _splice([
        (m.down_ptr, m.down_idx, 0, n, old, down_extra),
        (part.down_ptr, part.down_idx, 0, k, new, None),
        (m.down_ptr, m.down_idx, n, n + b, old, None),
        (part.down_ptr, part.down_idx, k, part.num_nodes, new, None),
    ])
    old_up, part_up = m.upstream_csr(), part.upstream_csr()
    up_extra = {y: list(after) for y in range(k)} if after else None
    up = _splice([
        (old_up[0], old_up[1], 0, n, old, None),
        (part_up[0], part_up[1], 0, k, new, up_extra),
        (old_up[0], old_up[1], n, n + b, old, None),
        (part_up[0], part_up[1], k, part.num_nodes, new, None),
    ])

    def jobs_col(a: array[int], p: array[int]) -> array[int]:
        out = array(a.typecode, a)
        out.extend(p)
        return out

    def refs(ptr_a: array[int], idx_a: array[int], ptr_p: array[int], idx_p: array[int],
             offset: int) -> tuple[array[int], array[int]]:
        ptr = array("q", ptr_a)
        ptr.extend(x + len(idx_a) for x in ptr_p[1:])
        idx = array("l", idx_a)
        idx.extend(x + offset for x in idx_p)
        return ptr, idx

    cancel = bytearray(m.cancel_on_failure[:n])
    cancel += part.cancel_on_failure[:k]
    cancel += m.cancel_on_failure[n:]
    cancel += part.cancel_on_failure[k:]
    files = refs(m.input_files_ptr, m.input_files_idx, part.input_files_ptr,
                 part.input_files_idx, file_offset)
    user_data = refs(m.input_user_data_ptr, m.input_user_data_idx, part.input_user_data_ptr,
                     part.input_user_data_idx, user_data_offset)
    if m.priority is None and part.priority is None:
        priority = None
    else:
        priority = array("q", m.priority if m.priority is not None else bytes(8 * n))
        priority.extend(part.priority if part.priority is not None else bytes(8 * k))
    grown = WorkflowModel(
        num_jobs=n + k, num_barriers=b + part.num_barriers,
        down_ptr=down[0], down_idx=down[1],
        cpus=jobs_col(m.cpus, part.cpus), gpus=jobs_col(m.gpus, part.gpus),
        nodes=jobs_col(m.nodes, part.nodes), memory=jobs_col(m.memory, part.memory),
        runtime=jobs_col(m.runtime, part.runtime),
        scheduler=jobs_col(m.scheduler, part.scheduler),
        handler=jobs_col(m.handler, part.handler),
        cancel_on_failure=cancel,
        input_files_ptr=files[0], input_files_idx=files[1],
        input_user_data_ptr=user_data[0], input_user_data_idx=user_data[1],
        failure_handlers=m.failure_handlers, num_schedulers=m.num_schedulers,
        uncompressed_edges=m.uncompressed_edges + part.uncompressed_edges + k * len(after),
        priority=priority, sort_method=m.sort_method, use_pending_failed=m.use_pending_failed,
    )
    grown._up = up
    return grown


def _insert(col: bytearray | array[int], n: int, k: int, tail: int,
            fill: int) -> bytearray | array[int]:
    """A node column with ``k`` new jobs at ``n`` and ``tail`` new barriers at the end."""
    if isinstance(col, bytearray):
        return col[:n] + bytearray([fill]) * k + col[n:] + bytearray([fill]) * tail
    out = col[:n]
    out.extend(array(col.typecode, [fill]) * k)
    out.extend(col[n:])
    out.extend(array(col.typecode, [fill]) * tail)
    return out


def add_jobs(engine: Engine, event: ev.AddJobs) -> list[int]:
    """Grow ``engine`` by ``event.part`` and initialize the new nodes (see the module
    docstring). Returns the new jobs' indices."""
    _check(engine, event)
    after = tuple(sorted(set(event.after)))
    m, part = engine.model, event.part
    n, k, tail = m.num_jobs, part.num_jobs, part.num_barriers
    grown = _grown_model(m, part, after, event.file_offset, event.user_data_offset)
    # Mutations start here; nothing below can refuse.
    engine.model = grown
    engine._status = _insert(engine._status, n, k, tail, _UNINITIALIZED)  # type: ignore[assignment]
    engine._unmet = _insert(engine._unmet, n, k, tail, 0)  # type: ignore[assignment]
    engine._barrier_failed = _insert(engine._barrier_failed, n, k, tail, 0)  # type: ignore[assignment]
    engine._attempt.extend(array("l", [1]) * k)
    engine._holder.extend(array("l", [-1]) * k)
    engine._run.extend(array("l", [engine.run_id]) * k)
    engine._counts[_UNINITIALIZED] += k
    engine._up_ptr, engine._up_idx = grown.upstream_csr()
    first_new_barrier = n + k + m.num_barriers
    engine._initialize([*range(n, n + k), *range(first_new_barrier, grown.num_nodes)])
    if any(engine._counts[s] for s in _NOT_FINAL):
        engine._completed_emitted = False
    engine._effects.append(ev.JobsAdded(first=n, count=k, barriers_from=n + k,
                                        new_barriers=tail))
    return list(range(n, n + k))
