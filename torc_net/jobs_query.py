"""The job table's query: filters, sort and page of ``GET /workflows/{id}/jobs``.

A job table over a million jobs is paged, sorted and filtered here in memory, never in SQL:
statuses and attempts are the engine's columns, names the workflow's. Every step is a pass
of C code over a bytes object, no Python loop per job:

* a filter is a *mask*, one byte per job (1: it matches): ``status=`` is the status bytes
  translated; ``name_contains=`` is found in every name at once (:func:`_name_mask`); masks
  combine with one integer AND;
* ``sort_by=status`` (and ``attempt``, whose values fit a byte) is a counting sort: one mask
  per value present, counted, and only the blocks the page falls in are listed;
* ``sort_by=name`` uses the job indices ordered by (name, index), computed once per workflow
  on a worker thread and kept (:class:`_NameIndex`): names never change;
* the page is ``islice`` of the matching indices in that order, so a page near the start
  stops early. ``reverse_sort`` reverses the whole order, ties included.

Ties are broken by job id, so pages never overlap or skip while the keys stand still.
"""

from __future__ import annotations

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

from torc_core.checks import shown

from .openapi import JOB_SORT_KEYS, MAX_NAME_CONTAINS
from .service import Service
from .state import WorkflowState
from .validate import bad_request, query_bool

#: one byte per value: 1 where the byte equals k (a status or attempt byte to a mask)
_EQ = tuple(bytes(k) + b"\x01" + bytes(255 - k) for k in range(256))  # 17 ms as a generator
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


async def select_page(s: Service, wf: WorkflowState, args: Any, code: int | None, offset: int,
                      limit: int) -> tuple[int, list[int]]:
    """(how many jobs match, the job indices of the page ``offset``/``limit``) for the query
    ``args`` (``name_contains``, ``sort_by``, ``reverse_sort``) and status ``code``."""
    needle = _name_filter(args)
    sort_by = _sort_key(args)
    reverse = query_bool(args, "reverse_sort")
    n = wf.num_jobs
    name_mask = None if needle is None else await _cached_name_mask(s, wf, needle)
    order = await _cached_name_order(s, wf) if sort_by == "name" else None
    # The engine's columns last, after the awaits: a snapshot as of now (bytes copies).
    statuses = (bytes(wf.engine.statuses[:n]) if code is not None or sort_by == "status"
                else None)
    attempts = _attempt_snapshot(wf) if sort_by == "attempt" else None
    simple = name_mask is None and code is None and sort_by in ("id", "name")
    result: tuple[int, list[int]] = await s.offload(
        0 if simple else n, _select, n, sort_by, reverse, offset, limit, statuses, code,
        name_mask, order, attempts)
    return result
