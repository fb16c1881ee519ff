"""Endpoints on a workflow's parts: jobs, files, user data, results, events.

Mostly reads (the engine for statuses, the store for the rest); the few changes here
(disable a job, record file times, store user data) follow the same rules as every other:
checks first, one change, the answer once it is on disk.
"""

from __future__ import annotations

import json
import sys
import weakref
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import compress, islice
from typing import Any

import trio

from torc_core import events as ev
from torc_core.checks import shown
from torc_core.status import JobStatus

from .api_workflows import Endpoint, file_mtimes, set_mtimes
from .openapi import JOB_SORT_KEYS, MAX_NAME_CONTAINS
from .service import Call, Service
from .state import STATUS_LABELS, WorkflowState
from .store import queries as q
from .store.schema import RESULT_LISTED_NAMES
from .validate import bad_request, not_found, page_args, query_bool, query_int

_STATUS_CODES = {s.label: int(s) for s in JobStatus}


def _status_filter(args: Any) -> int | None:
    text = args.get("status")
    if text is None:
        return None
    code = _STATUS_CODES.get(text)
    if code is None:
        raise bad_request(f"query parameter status: expected one of "
                          f"{', '.join(_STATUS_CODES)}, got {shown(text)}")
    return code


# ---------------------------------------------------------------------------------------------
# Jobs


def _jobs_json(wf: WorkflowState, indices: Sequence[int], rows: dict[int, Any],
               links: dict[str, dict[int, list[int]]]) -> list[dict[str, Any]]:
    """Job objects from their rows and the engine's columns (read only: safe off the event
    loop, a snapshot as of about now)."""
    base = wf.job_id_base
    engine = wf.engine
    statuses = engine.statuses
    out = []
    for idx in indices:
        job_id = base + idx
        r = rows.get(job_id)
        if r is None:  # deleted meanwhile
            continue
        holder = engine.holder(idx)
        out.append({
            "id": job_id, "workflow_id": wf.id, "name": r[1], "command": r[2],
            "invocation_script": r[3], "status": STATUS_LABELS[statuses[idx]],
            # the run of its current attempt: a job still running since a selective reset
            # keeps the run it was claimed in (its report carries that one)
            "attempt": engine.attempt(idx), "run_id": engine.job_run(idx),
            "compute_node_id": holder if holder >= 0 else None,
            "num_cpus": r[4], "num_gpus": r[5], "num_nodes": r[6], "memory_bytes": r[7],
            "runtime_s": r[8], "resource_requirements": r[9], "scheduler": r[10],
            "failure_handler": r[11], "supports_termination": bool(r[12]),
            "cancel_on_blocking_job_failure": bool(r[13]), "priority": r[14],
            "stdio": None if r[15] is None else json.loads(r[15]),
            "depends_on": [base + u for u in wf.upstream_jobs(idx)],
            "input_files": links["job_input_files"].get(job_id, []),
            "output_files": links["job_output_files"].get(job_id, []),
            "input_user_data": links["job_input_user_data"].get(job_id, []),
            "output_user_data": links["job_output_user_data"].get(job_id, []),
        })
    return out


async def _job_objects(s: Service, wf: WorkflowState, indices: Sequence[int]) \
        -> list[dict[str, Any]]:
    rows, links = await s.store.read(q.job_rows, [wf.job_id_base + i for i in indices])
    return await s.offload(len(indices), _jobs_json, wf, indices, rows, links)


# ---------------------------------------------------------------------------------------------
# Jobs: the table query (filters, sort, page)
#
# A job table over a million jobs is paged, sorted and filtered here in memory, never in SQL:
# statuses and attempts are the engine's columns, names the workflow's. Every step is a pass
# of C code over a bytes object, no Python loop per job:
#
# * a filter is a *mask*, one byte per job (1: it matches): ``status=`` is the status bytes
#   translated; ``name_contains=`` is found in every name at once (:func:`_name_mask`); masks
#   combine with one integer AND;
# * ``sort_by=status`` (and ``attempt``, whose values fit a byte) is a counting sort: one mask
#   per value present, counted, and only the blocks the page falls in are listed;
# * ``sort_by=name`` uses the job indices ordered by (name, index), computed once per workflow
#   on a worker thread and kept (:class:`_NameIndex`): names never change;
# * the page is ``islice`` of the matching indices in that order, so a page near the start
#   stops early. ``reverse_sort`` reverses the whole order, ties included.
#
# Ties are broken by job id, so pages never overlap or skip while the keys stand still.

#: one byte per value: 1 where the byte equals k (a status or attempt byte to a mask)
_EQ = tuple(bytes(int(i == k) for i in range(256)) for k in range(256))
#: bytes of the matching text (see _name_mask): a name never holds the first two
_NAME_END, _HIT, _MATCHED = b"\x00", b"\x01", b"\x02"
_ALL_BUT_MARKERS = bytes(range(2, 256))
_MARKERS_TO_MASK = bytes([0, 0, 1]) + bytes(253)
#: needles remembered per workflow (a dashboard pages through one filter at a time)
_MASKS_KEPT = 4
#: Names per step of the one-time work on names (fold, sort): a C call holds the GIL, so no
#: single one may take long (the event loop waits meanwhile).
_CHUNK = 1 << 15


def _name_filter(args: Any) -> str | None:
    text = args.get("name_contains")
    if text is None:
        return None
    if not 1 <= len(text) <= MAX_NAME_CONTAINS:
        raise bad_request(f"query parameter name_contains: expected 1 to {MAX_NAME_CONTAINS} "
                          f"characters, got {len(text)}")
    return str(text)


def _sort_key(args: Any) -> str:
    text = args.get("sort_by")
    if text is None:
        return "id"
    if text not in JOB_SORT_KEYS:
        raise bad_request(f"query parameter sort_by: expected one of "
                          f"{', '.join(JOB_SORT_KEYS)}, got {shown(text)}")
    return str(text)


def _and(a: bytes, b: bytes) -> bytes:
    """Two masks of equal length, AND-ed (one pass each way through an integer)."""
    n = len(a)
    return (int.from_bytes(a, "little") & int.from_bytes(b, "little")).to_bytes(n, "little")


def _folded_names(names: Sequence[str]) -> list[bytes] | None:
    """The names case-folded, UTF-8, each followed by a zero byte, in segments of ``_CHUNK``
    names; None if a name holds a zero or one byte itself (then :func:`_name_mask` tests name
    by name)."""
    segments = []
    it = iter(names)
    while chunk := list(islice(it, _CHUNK)):
        text = ("\x00".join(chunk) + "\x00").casefold().encode("utf-8", "surrogatepass")
        if _HIT in text or text.count(_NAME_END) != len(chunk):
            return None
        segments.append(text)
    return segments


def _segment_mask(text: bytes, key: bytes) -> bytes:
    text = text.replace(key, _HIT).translate(None, _ALL_BUT_MARKERS)
    while _HIT + _HIT in text:
        text = text.replace(_HIT + _HIT, _HIT)
    return text.replace(_HIT + _NAME_END, _MATCHED).translate(_MARKERS_TO_MASK)


def _name_mask(names: Sequence[str], folded: list[bytes] | None, needle: str) -> bytes:
    """One byte per job: 1 where the job's name contains ``needle``, ignoring case (Unicode
    case folding, as ``str.casefold``: "STRASSE" finds "Straße").

    With ``folded`` (see :func:`_folded_names`): every occurrence becomes a one byte, every
    other byte but the name ends goes, runs of ones shrink to one, and "one, end" marks a
    matching name; what is left is one byte per name. Each step is a bytes method, so a
    million names take about as long as copying them a few times, however many match."""
    key = needle.casefold().encode("utf-8", "surrogatepass")
    if folded is None:
        fold = needle.casefold()
        return bytes([fold in name.casefold() for name in names])
    if _NAME_END in key or _HIT in key:
        return bytes(len(names))  # no name holds either
    return b"".join(_segment_mask(text, key) for text in folded)


def _index_dtype(n: int) -> str:
    return "i" if n < 2**31 else "q"


def _sorted_indices(n: int, key: Callable[[int], Any]) -> list[int]:
    """``sorted(range(n), key=key)`` (stable: ties by index) in steps of ``_CHUNK``-sized
    sorts: sorted runs, merged pairwise a block at a time. A C call holds the GIL throughout
    (one ``sorted`` of a million names: the event loop stood still 160 ms); this way none
    sorts more than two blocks. About 1.5 times the work of one ``sorted``."""
    runs = [sorted(range(lo, min(lo + _CHUNK, n)), key=key) for lo in range(0, n, _CHUNK)]
    while len(runs) > 1:
        runs = [_merge(runs[k], runs[k + 1], key) if k + 1 < len(runs) else runs[k]
                for k in range(0, len(runs), 2)]
    return runs[0] if runs else []


def _merge(a: list[int], b: list[int], key: Callable[[int], Any]) -> list[int]:
    """Two sorted runs, ``a`` of lower indices than ``b``, merged stably: each step takes a
    block of one and what of the other sorts before its end."""
    out: list[int] = []
    i = j = 0
    while i < len(a) and j < len(b):
        end_a, end_b = min(i + _CHUNK, len(a)), min(j + _CHUNK, len(b))
        pivot = min(key(a[end_a - 1]), key(b[end_b - 1]))
        cut_a = bisect_right(a, pivot, i, end_a, key=key)
        cut_b = bisect_right(b, pivot, j, end_b, key=key)
        out += sorted(a[i:cut_a] + b[j:cut_b], key=key)  # stable: a's first on ties
        i, j = cut_a, cut_b
    out += a[i:]
    out += b[j:]
    return out


def _name_order(names: Sequence[str]) -> array[int]:
    """Job indices by (name, index): Python's string order, by code point, which is SQLite's
    (Torc's) BINARY order of the same UTF-8 text."""
    listed = list(names)
    order = _sorted_indices(len(listed), listed.__getitem__)
    out = array(_index_dtype(len(order)))
    for lo in range(0, len(order), _CHUNK):  # one array() of a million: 60 ms in one C call
        out.extend(order[lo : lo + _CHUNK])
    return out


@dataclass(eq=False)
class _NameIndex:
    """What the job table query keeps of one workflow's names, built on first use."""

    num_jobs: int
    lock: trio.Lock = field(default_factory=trio.Lock)
    folded: list[bytes] | None = None
    folded_built: bool = False
    order: array[int] | None = None
    masks: OrderedDict[str, bytes] = field(default_factory=OrderedDict)


#: Per workflow, keyed by its engine: the one object made with a workflow's state and never
#: replaced (WorkflowState has slots, so it cannot be weakly referenced). A deleted or reloaded
#: workflow's entry goes with its engine; nothing here keeps a workflow alive.
_NAME_INDEXES: weakref.WeakKeyDictionary[Any, _NameIndex] = weakref.WeakKeyDictionary()


def _name_index(wf: WorkflowState) -> _NameIndex:
    entry = _NAME_INDEXES.get(wf.engine)
    if entry is None or entry.num_jobs != wf.num_jobs:
        entry = _NAME_INDEXES[wf.engine] = _NameIndex(wf.num_jobs)
    return entry


async def _cached_name_mask(s: Service, wf: WorkflowState, needle: str) -> bytes:
    entry = _name_index(wf)
    key = needle.casefold()
    async with entry.lock:  # one build at a time; who waited finds it done
        mask = entry.masks.get(key)
        if mask is not None:
            entry.masks.move_to_end(key)
            return mask
        if not entry.folded_built:
            entry.folded = await s.offload(wf.num_jobs, _folded_names, wf.names)
            entry.folded_built = True
        mask = await s.offload(wf.num_jobs, _name_mask, wf.names, entry.folded, needle)
        entry.masks[key] = mask
        while len(entry.masks) > _MASKS_KEPT:
            entry.masks.popitem(last=False)
        return mask


async def _cached_name_order(s: Service, wf: WorkflowState) -> array[int]:
    entry = _name_index(wf)
    async with entry.lock:
        if entry.order is None:
            entry.order = await s.offload(wf.num_jobs, _name_order, wf.names)
        return entry.order


def _attempt_snapshot(wf: WorkflowState) -> array[int]:
    """A copy of the engine's attempt column (one memcpy)."""
    return wf.engine.attempts[: wf.num_jobs]


def _byte_keys(values: array[int]) -> bytes | None:
    """The values as one byte each, if every one is in 0..255 (attempts nearly always)."""
    raw = values.tobytes()
    size = values.itemsize
    low = raw[0 if sys.byteorder == "little" else size - 1 :: size]
    if raw.count(0) - low.count(0) != (size - 1) * len(values):
        return None
    return low


def _bounds(total: int, offset: int, limit: int) -> tuple[int, int]:
    return min(offset, total), min(offset + limit, total)


def _by_index(n: int, mask: bytes | None, reverse: bool, offset: int, limit: int) -> list[int]:
    if mask is None:
        ids = range(n - 1, -1, -1) if reverse else range(n)
        return list(ids[offset : offset + limit])
    ids = range(n - 1, -1, -1) if reverse else range(n)
    return list(islice(compress(ids, reversed(mask) if reverse else mask),
                       *_bounds(n, offset, limit)))


def _by_order(order: Sequence[int], mask: bytes | None, reverse: bool, offset: int,
              limit: int) -> list[int]:
    n = len(order)
    if mask is None:
        if not reverse:
            return list(order[offset : offset + limit])
        hi = max(n - offset, 0)
        return list(reversed(order[max(hi - limit, 0) : hi]))
    seq: Iterable[int] = reversed(order) if reverse else order
    return list(islice(filter(mask.__getitem__, seq), *_bounds(n, offset, limit)))


def _by_byte_key(keys: bytes, mask: bytes | None, reverse: bool, offset: int,
                 limit: int) -> list[int]:
    """Counting sort: the jobs of each key value in turn (by index within one), listing only
    the blocks the page falls in."""
    n = len(keys)
    values = []
    seen = 0
    for k in range(256):  # the values present, stopping once every job is counted
        count = keys.count(k)
        if count:
            values.append(k)
            seen += count
            if seen == n:
                break
    ids = range(n - 1, -1, -1) if reverse else range(n)
    page: list[int] = []
    for k in reversed(values) if reverse else values:
        if len(page) >= limit:
            break
        block = keys.translate(_EQ[k])
        if mask is not None:
            block = _and(block, mask)
        count = block.count(1)
        if offset >= count:
            offset -= count
            continue
        picked = compress(ids, reversed(block) if reverse else block)
        page.extend(islice(picked, offset, offset + limit - len(page)))
        offset = 0
    return page


def _select(n: int, sort_by: str, reverse: bool, offset: int, limit: int,
            statuses: bytes | None, code: int | None, name_mask: bytes | None,
            order: Sequence[int] | None, attempts: array[int] | None) -> tuple[int, list[int]]:
    """(how many jobs match, the page's job indices in order): pure, off the event loop for
    big workflows (its inputs are copies or never change)."""
    mask = name_mask
    if code is not None:
        assert statuses is not None
        status_mask = statuses.translate(_EQ[code])
        mask = status_mask if mask is None else _and(mask, status_mask)
    total = n if mask is None else mask.count(1)
    if sort_by == "status":
        assert statuses is not None
        return total, _by_byte_key(statuses, mask, reverse, offset, limit)
    if sort_by == "attempt":
        assert attempts is not None
        keys = _byte_keys(attempts)
        if keys is not None:
            return total, _by_byte_key(keys, mask, reverse, offset, limit)
        order = _sorted_indices(n, attempts.__getitem__)  # an attempt past 255: rare
    if order is not None:
        return total, _by_order(order, mask, reverse, offset, limit)
    return total, _by_index(n, mask, reverse, offset, limit)


async def list_jobs(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    offset, limit = page_args(c.args, 1000)
    code = _status_filter(c.args)
    needle = _name_filter(c.args)
    sort_by = _sort_key(c.args)
    reverse = query_bool(c.args, "reverse_sort")
    n = wf.num_jobs
    name_mask = None if needle is None else await _cached_name_mask(s, wf, needle)
    order = await _cached_name_order(s, wf) if sort_by == "name" else None
    # The engine's columns last, after the awaits: a snapshot as of now (bytes copies).
    statuses = (bytes(wf.engine.statuses[:n]) if code is not None or sort_by == "status"
                else None)
    attempts = _attempt_snapshot(wf) if sort_by == "attempt" else None
    simple = name_mask is None and code is None and sort_by in ("id", "name")
    total, page = await s.offload(0 if simple else n, _select, n, sort_by, reverse, offset,
                                  limit, statuses, code, name_mask, order, attempts)
    items = await _job_objects(s, wf, page)
    return {"items": items, "total": total, "offset": offset, "limit": limit}


async def get_job(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    job_id = c.path["job_id"]
    items = await _job_objects(s, wf, [wf.job_index(job_id)])
    if not items:
        raise not_found(f"no job {job_id}")
    return items[0]


async def disable_job(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    idx = wf.job_index(c.path["job_id"])
    _, change, _ = s.drive(wf, ev.DisableJobs(jobs=(idx,)), s.clock())
    await change.wait()
    return await get_job(s, c)


# ---------------------------------------------------------------------------------------------
# Files and user data


def _id_range(first: int, count: int, offset: int, limit: int) -> tuple[int, int]:
    return first + offset, first + min(count, offset + limit) - 1


def _file(r: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": r[0], "name": r[1], "path": r[2], "st_mtime": r[3]}


def _user_data(r: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": r[0], "name": r[1], "data": None if r[2] is None else json.loads(r[2]),
            "is_ephemeral": bool(r[3])}


#: (rows between two ids, row -> JSON, first id and count in a workflow, noun) per kind
_KINDS: dict[str, tuple[Callable[..., list[tuple[Any, ...]]],
                        Callable[[tuple[Any, ...]], dict[str, Any]],
                        Callable[[WorkflowState], tuple[int, int]], str]] = {
    "files": (q.files_between, _file, lambda wf: (wf.file_id_base, wf.num_files), "file"),
    "user_data": (q.user_data_between, _user_data,
                  lambda wf: (wf.user_data_id_base, wf.num_user_data), "user_data"),
}


def _index(wf: WorkflowState, kind: str, item_id: int) -> int:
    first, count = _KINDS[kind][2](wf)
    if not 0 <= item_id - first < count:
        raise not_found(f"no {_KINDS[kind][3]} {item_id} in workflow {wf.id}")
    return item_id - first


async def _page(s: Service, c: Call, kind: str) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    read, to_json, span, _ = _KINDS[kind]
    first, count = span(wf)
    offset, limit = page_args(c.args, 1000)
    rows = await s.store.read(read, *_id_range(first, count, offset, limit))
    return {"items": [to_json(r) for r in rows], "total": count, "offset": offset,
            "limit": limit}


async def _one(s: Service, c: Call, kind: str, key: str) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    item_id = c.path[key]
    _index(wf, kind, item_id)
    read, to_json, _, noun = _KINDS[kind]
    rows = await s.store.read(read, item_id, item_id)
    if not rows:
        raise not_found(f"no {noun} {item_id} in workflow {wf.id}")
    return to_json(rows[0])


async def list_files(s: Service, c: Call) -> dict[str, Any]:
    return await _page(s, c, "files")


async def get_file(s: Service, c: Call) -> dict[str, Any]:
    return await _one(s, c, "files", "file_id")


async def record_mtimes(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    given = file_mtimes(wf, c.body["mtimes"], "mtimes")
    change = s.change(wf)
    set_mtimes(wf, given, change)
    await change.wait()
    return {"recorded": len(given)}


async def list_user_data(s: Service, c: Call) -> dict[str, Any]:
    return await _page(s, c, "user_data")


async def get_user_data(s: Service, c: Call) -> dict[str, Any]:
    return await _one(s, c, "user_data", "user_data_id")


async def put_user_data(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    ud_id = c.path["user_data_id"]
    idx = _index(wf, "user_data", ud_id)
    change = s.change(wf)
    change.user_data[ud_id] = json.dumps(c.body["data"])
    change.user_data_changed[ud_id] = 1
    wf.changed_user_data.add(idx)
    await change.wait()
    return await get_user_data(s, c)


# ---------------------------------------------------------------------------------------------
# Results and events


async def list_results(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    offset, limit = page_args(c.args, 1000)
    run_id = query_int(c.args, "run_id", 0) or None
    job_id = query_int(c.args, "job_id", 0) or None
    total, rows = await s.store.read(q.results_page, wf.id, _status_filter(c.args), limit,
                                     offset, run_id=run_id, job_id=job_id,
                                     failed=query_bool(c.args, "failed"))
    base, n, names = wf.job_id_base, wf.num_jobs, wf.names

    def convert() -> list[dict[str, Any]]:
        return [
            {"id": r[0], "job_id": r[1], "job_name": names[r[1] - base] if 0 <= r[1] - base < n
             else None, "run_id": r[2], "attempt": r[3], "return_code": r[4],
             "status": STATUS_LABELS[r[5]], "exec_time_s": r[6], "completed_at": r[7],
             "compute_node_id": r[8], "slurm_job_id": r[9],
             **dict(zip(RESULT_LISTED_NAMES, r[10:], strict=True))}
            for r in rows
        ]

    items = await s.offload(len(rows), convert)
    return {"items": items, "total": total, "offset": offset, "limit": limit}


async def list_events(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    after = query_int(c.args, "after", 0)
    offset, limit = page_args(c.args, 1000)
    total, rows = await s.store.read(q.events_page, wf.id, after, limit, offset)
    def convert() -> list[dict[str, Any]]:
        return [{"id": r[0], "ts": r[1], "kind": r[2],
                 "data": None if r[3] is None else json.loads(r[3])} for r in rows]

    items = await s.offload(len(rows), convert)
    return {"items": items, "total": total, "offset": offset, "limit": limit}


ENDPOINTS: dict[str, Endpoint] = {
    "list_jobs": list_jobs,
    "get_job": get_job,
    "disable_job": disable_job,
    "list_files": list_files,
    "get_file": get_file,
    "record_mtimes": record_mtimes,
    "list_user_data": list_user_data,
    "get_user_data": get_user_data,
    "put_user_data": put_user_data,
    "list_results": list_results,
    "list_events": list_events,
}
