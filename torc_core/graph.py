"""Compile a :class:`~torc_core.spec.WorkflowSpec` into a :class:`~torc_core.model.WorkflowModel`.

Theory of operation
-------------------
A job's dependencies come from four *sources*: ``depends_on`` (names), ``input_files`` (the job
that lists the file in ``output_files``), ``input_user_data`` (likewise) and
``depends_on_regexes`` (every job whose name fully matches). Each source of a job resolves to a
set ``U`` of upstream jobs.

Rule 1: resolution is cached. Expanded jobs share their constant tuples (the parser guarantees
it), so consecutive jobs with the *same tuple object* resolve once; a regex pattern is matched
against all names once, whatever the number of jobs using it. Nothing is ever N x M.

Rule 2: jobs whose source resolved to the same cached set form a *group* ``(U, D)``. A group
with ``|D| >= 2``, ``|U| >= 2`` and ``|U|*|D|`` above the threshold is stored through a barrier
node ``b`` (index ``>= num_jobs``): ``U -> b -> D``, i.e. ``|U| + |D|`` edges instead of
``|U| * |D|``. Barriers never fail on their own (``cancel_on_failure`` 0); the engine completes
them when their upstream is done.

Rule 3: no self-edges (a job matching its own regex does not wait for itself), no duplicate
direct edges (a job reached through two sources gets one edge per upstream).

Rule 4: cycles are refused with a :class:`~torc_core.errors.SpecError` naming one cycle.

``model.uncompressed_edges`` is the edge count as written (sum over jobs and sources of
``|U|`` minus self-references), computed arithmetically.
"""

from __future__ import annotations

import gc
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import accumulate, compress, groupby, repeat
from operator import attrgetter, itemgetter, not_
from typing import Any, TypeVar

import re2

from .errors import SpecError
from .model import WorkflowModel, priority_column
from .spec import (
    DEFAULT_MEMORY_BYTES,
    DEFAULT_NUM_CPUS,
    DEFAULT_RUNTIME_S,
    JobSpec,
    WorkflowSpec,
)

#: Compress a group through a barrier when |U| * |D| reaches this (and the barrier saves edges).
DEFAULT_BARRIER_THRESHOLD = 64

_REGEX_META = frozenset(".^$*+?{}[]\\|()")

T = TypeVar("T")


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building a million objects.

    Why: every few hundred allocations CPython runs a collection that walks the young objects,
    and older generations are re-walked as they grow; building 1M JobSpecs spends about half of
    its time there. The objects built here hold no cycles, so nothing is lost by waiting."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class RegexError(ValueError):
    """A pattern RE2 does not accept; the message is RE2's reason, e.g.
    ``invalid escape sequence: \\1`` for a backreference."""

    def describe(self, pattern: str) -> str:
        """The problem, for a located message."""
        return f"bad regex {pattern!r}: {self}"


class RegexBudgetError(RegexError):
    """The spec's patterns would test more names than a request may (:class:`RegexBudget`)."""

    def describe(self, pattern: str) -> str:
        return f"{pattern!r}: {self}"


#: How many (pattern, name) tests one spec's regexes may make. Linear-time matching bounds one
#: test, not how many: 20,000 jobs each with its own prefix-less pattern (``.*_{i}``) over
#: 20,000 names are 4 x 10^8 tests, minutes of a server's CPU. At ~0.7 us a test this is
#: ~7 s; patterns with a literal prefix are narrowed first and cost little against it.
DEFAULT_MAX_REGEX_TESTS = 10_000_000


class RegexBudget:
    """The (pattern, name) tests one spec may make, shared by its name indexes."""

    __slots__ = ("limit", "spent")

    def __init__(self, limit: int = DEFAULT_MAX_REGEX_TESTS) -> None:
        self.limit = limit
        self.spent = 0

    def spend(self, tests: int) -> None:
        self.spent += tests
        if self.spent > self.limit:
            raise RegexBudgetError(
                f"the spec's regexes would make more than {self.limit} name tests in all "
                "(each distinct pattern is tried on every name its literal prefix allows): "
                "begin patterns with a literal prefix, as in 'stage1_.*', or use fewer "
                "distinct patterns")


# Names are encoded for RE2, which reads UTF-8. The parser refuses lone surrogates; a spec
# built in code may still hold one, and must not crash the compiler.
_encode = partial(str.encode, encoding="utf-8", errors="surrogatepass")
_BOTH: Any = re2._Anchor.ANCHOR_BOTH  # the pattern must span the whole name
_NO_MATCH = (-1, -1)
#: Names are encoded and matched this many at a time (bounds the bytes held at once).
_CHUNK = 1 << 16


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a user's bad pattern is a SpecError, not a line on stderr
    options.never_capture = True  # only whether it matches: faster, and no group spans
    return options


_OPTIONS = _re2_options()


class Regex:
    """A pattern compiled by RE2, matched against whole names.

    Why RE2 rather than Python's ``re``: patterns come from users, and ``re`` backtracks, so
    ``(a+)+b`` against 34 'a's and a '!' takes hours (time doubles per character). RE2 runs in
    time linear in the name and refuses what it cannot do that way (backreferences,
    look-around); its syntax is that of the Rust ``regex`` crate Torc uses. Its memory is
    bounded too (``max_mem``, 8 MiB by default): a pattern too large to compile within it is
    refused as well.

    Why the low-level ``re2._re2.RE2`` object: the ``re``-compatible wrapper spends ~3 us of
    Python per call (it maps byte offsets back to characters), the raw ``Match`` ~0.6 us, and
    a million names are scanned per pattern. It also keeps no module-level cache of compiled
    patterns (the wrapper's may hold up to 128 of 8 MiB each).
    """

    __slots__ = ("_match", "pattern")

    def __init__(self, pattern: str) -> None:
        regexp = re2._re2.RE2(_encode(pattern), _OPTIONS)
        if not regexp.ok():
            reason = regexp.error()
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            raise RegexError(str(reason))
        self._match: Any = regexp.Match
        self.pattern = pattern

    def hits(self, names: Sequence[str], budget: RegexBudget | None = None) -> Iterator[int]:
        """Positions (ascending) of the names that fully match; lazily, a chunk at a time,
        each chunk's tests charged to ``budget`` before they run."""
        match = self._match
        for lo in range(0, len(names), _CHUNK):
            if budget is not None:
                budget.spend(min(_CHUNK, len(names) - lo))
            data = list(map(_encode, names[lo : lo + _CHUNK]))
            spans = map(match, repeat(_BOTH), data, repeat(0), map(len, data))
            found = map(_NO_MATCH.__ne__, map(itemgetter(0), spans))
            yield from compress(range(lo, lo + len(data)), found)


def _literal_prefix(pattern: str) -> str:
    """The literal text every full match of ``pattern`` starts with ('' when unsure).

    Used to narrow the candidates of a pattern with a binary search over sorted names."""
    if "|" in pattern:
        return ""
    p = pattern[1:] if pattern.startswith("^") else pattern
    out: list[str] = []
    for ch in p:
        if ch in _REGEX_META:
            # A quantifier makes the previous literal optional.
            if ch in "*?{" and out:
                out.pop()
            break
        out.append(ch)
    return "".join(out)


def _is_literal(pattern: str) -> bool:
    return not any(ch in _REGEX_META for ch in pattern)


class NameIndex:
    """Regex and exact-name resolution over a fixed list of names, cached per pattern.

    Why: a million jobs all carrying ``depends_on_regexes: ["stage1_.*"]`` must cost one scan,
    and many per-job patterns like ``prep_{i}_.*`` must not each scan every name (a sorted
    index narrows them by their literal prefix). Patterns are RE2's (see :class:`Regex`).
    """

    __slots__ = ("_budget", "_cache", "_misses", "_names", "_position", "_sorted_idx",
                 "_sorted_names")

    def __init__(self, names: Sequence[str], position: dict[str, int] | None = None,
                 budget: RegexBudget | None = None) -> None:
        self._budget = budget or RegexBudget()
        self._names = names
        self._position = position
        self._cache: dict[str, array[int]] = {}
        self._misses = 0
        self._sorted_names: list[str] | None = None
        self._sorted_idx: list[int] | None = None

    def position(self) -> dict[str, int]:
        if self._position is None:
            self._position = {name: k for k, name in enumerate(self._names)}
        return self._position

    def match(self, pattern: str) -> array[int]:
        """Indices (ascending) of the names that ``pattern`` matches whole.
        Raises :class:`RegexError` if RE2 does not accept the pattern."""
        hit = self._cache.get(pattern)
        if hit is not None:
            return hit
        result = self._resolve(pattern)
        self._cache[pattern] = result
        return result

    def any_match(self, pattern: str) -> bool:
        """Whether some name matches; stops at the first (for validation)."""
        hit = self._cache.get(pattern)
        if hit is not None:
            return len(hit) > 0
        if _is_literal(pattern):
            return pattern in self.position()
        if (len(self._cache) >= 32 or self._sorted_names is not None
                or _literal_prefix(pattern)):  # narrowed by the prefix: the full answer is cheap
            return len(self.match(pattern)) > 0
        return next(Regex(pattern).hits(self._names, self._budget), None) is not None

    def _resolve(self, pattern: str) -> array[int]:
        if _is_literal(pattern):
            k = self.position().get(pattern)
            return array("l", () if k is None else (k,))
        regex = Regex(pattern)  # compiled even when not run: a bad pattern is an error
        self._misses += 1
        names = self._names
        prefix = _literal_prefix(pattern)
        if prefix and self._misses > 32:
            if self._sorted_names is None:
                order = sorted(range(len(names)), key=names.__getitem__)
                self._sorted_idx = order
                self._sorted_names = [names[k] for k in order]
            ordered = self._sorted_names
            idx = self._sorted_idx
            assert idx is not None
            lo = hi = bisect_left(ordered, prefix)
            while hi < len(ordered) and ordered[hi].startswith(prefix):
                hi += 1
            hits = list(_fullmatches(regex, pattern, idx[lo:hi], ordered[lo:hi], self._budget))
            hits.sort()
            return array("l", hits)
        if prefix:  # a C-level startswith spares RE2 the names that cannot match
            positions = list(compress(range(len(names)), map(str.startswith, names,
                                                               repeat(prefix))))
            return array("l", _fullmatches(regex, pattern, positions,
                                           list(map(names.__getitem__, positions)),
                                           self._budget))
        return array("l", _fullmatches(regex, pattern, range(len(names)), names, self._budget))


def _is_prefix_star(pattern: str) -> bool:
    """Whether ``pattern`` is ``literal.*`` (or ``^literal.*``), the most common pattern.

    Such a pattern fully matches exactly the names that start with the literal and have no
    newline after it (RE2's ``.`` does not match ``\\n``): a C-level test answers it, and a
    million names are decided in milliseconds instead of a second of RE2 calls."""
    p = pattern[1:] if pattern.startswith("^") else pattern
    return p.endswith(".*") and _is_literal(p[:-2]) and "\n" not in p


def _fullmatches(
    regex: Regex, pattern: str, positions: Sequence[int], names: Sequence[str],
    budget: RegexBudget,
) -> Iterator[int]:
    """The ``positions`` whose ``names`` (which start with the pattern's literal prefix)
    ``pattern`` matches whole. A ``literal.*`` pattern is answered at C speed and not
    charged."""
    if _is_prefix_star(pattern):
        return compress(positions, map(not_, map(str.__contains__, names, repeat("\n"))))
    return map(positions.__getitem__, regex.hits(names, budget))


class _Group:
    """Jobs (``runs`` of consecutive indices) whose source resolved to the same ``up`` set."""

    __slots__ = ("barrier", "runs", "selfs", "up")

    def __init__(self, up: array[int]) -> None:
        self.up = up
        self.runs: list[tuple[int, int]] = []  # (start, count)
        self.barrier = -1
        self.selfs: list[int] = []

    def size(self) -> int:
        return sum(count for _, count in self.runs)


def _where(job_index: int, job: JobSpec) -> str:
    return f"jobs[{job_index}] {job.name!r}"


def _runs(values: Iterable[T]) -> Iterator[tuple[T, int, int]]:
    """(value, start, count) for each run of equal consecutive values.

    Why runs: expanded jobs are contiguous and share their tuples, so a million jobs are
    usually a handful of runs; everything per run is done once (C-level ``groupby``)."""
    start = 0
    for value, group in groupby(values):
        count = len(list(group))
        yield value, start, count
        start += count


_SOURCES = attrgetter("depends_on", "input_files", "input_user_data", "depends_on_regexes")
_SOURCE_LABELS = ("depends_on", "input_files", "input_user_data", "depends_on_regexes")


class _Resolver:
    """Resolves each dependency source of a job to ascending upstream indices."""

    def __init__(self, spec: WorkflowSpec, names: NameIndex) -> None:
        self.spec = spec
        self.names = names
        files = {f.name: k for k, f in enumerate(spec.files)}
        uds = {u.name: k for k, u in enumerate(spec.user_data)}
        self.file_pos = files
        self.ud_pos = uds
        errors: list[str] = []
        self.file_producer = self._producers(spec.jobs, files, "output_files", errors)
        self.ud_producer = self._producers(spec.jobs, uds, "output_user_data", errors)
        if errors:
            raise SpecError(errors)
        self._last: list[tuple[object, object, array[int]]] = [(None, None, _EMPTY)] * 4

    @staticmethod
    def _producers(
        jobs: Sequence[JobSpec], pos: dict[str, int], attr: str, errors: list[str]
    ) -> array[int]:
        producer = array("l", [-1]) * len(pos)
        names = list(pos)
        kind = "file" if attr == "output_files" else "user_data"
        for outs, start, count in _runs(map(attrgetter(attr), jobs)):
            if not outs:
                continue
            for j in range(start, start + count):
                for name in outs:
                    k = pos.get(name)
                    if k is None:
                        errors.append(f"{_where(j, jobs[j])}: {attr}: no {kind} named {name!r}")
                        continue
                    other = producer[k]
                    if other >= 0 and other != j:
                        errors.append(
                            f"{_where(j, jobs[j])}: {attr}: {names[k]!r} is also an output of "
                            f"{jobs[other].name!r}"
                        )
                    producer[k] = j
        return producer

    def resolve(self, kind: int, value: tuple[str, ...], j: int) -> tuple[object, array[int]]:
        """(group key, ascending upstream indices) of source ``kind`` with ``value``."""
        last_value, last_key, last_up = self._last[kind]
        if value is last_value:
            return last_key, last_up
        key: object
        if kind == 3:
            up = self._regexes(j, value)
            key = ("re", value)
        else:
            up = self._names(kind, j, value)
            key = (kind, id(value))
        self._last[kind] = (value, key, up)
        return key, up

    def _fail(self, j: int, kind: int, problem: str) -> SpecError:
        return SpecError([f"{_where(j, self.spec.jobs[j])}: {_SOURCE_LABELS[kind]}: {problem}"])

    def _names(self, kind: int, j: int, value: tuple[str, ...]) -> array[int]:
        found: list[int] = []
        if kind == 0:
            pos = self.names.position()
            for name in value:
                k = pos.get(name)
                if k is None:
                    raise self._fail(j, kind, f"no job named {name!r}")
                found.append(k)
        else:
            table = self.file_pos if kind == 1 else self.ud_pos
            producer = self.file_producer if kind == 1 else self.ud_producer
            noun = "file" if kind == 1 else "user_data"
            for name in value:
                k = table.get(name)
                if k is None:
                    raise self._fail(j, kind, f"no {noun} named {name!r}")
                p = producer[k]
                if p >= 0:
                    found.append(p)
        if len(found) > 1:
            found = sorted(set(found))
        return array("l", found)

    def _regexes(self, j: int, patterns: tuple[str, ...]) -> array[int]:
        parts: list[array[int]] = []
        for pattern in patterns:
            try:
                parts.append(self.names.match(pattern))
            except RegexError as exc:
                raise self._fail(j, 3, exc.describe(pattern)) from None
        if len(parts) == 1:
            return parts[0]
        merged: set[int] = set()
        for part in parts:
            merged.update(part)
        return array("l", sorted(merged))


_EMPTY: array[int] = array("l")


def _csr(num_rows: int, src: array[int], dst: array[int]) -> tuple[array[int], array[int]]:
    """(src, dst) pairs into CSR; dsts keep their emission order per row.

    A stable sort by ``src`` plus a ``Counter`` keep the work in C (no per-edge Python loop)."""
    counts = Counter(src)
    ptr = array("q", [0])
    ptr.extend(accumulate(map(counts.get, range(num_rows), repeat(0, num_rows))))
    if all(map(int.__le__, src, src[1:])):
        return ptr, array("l", dst)
    order = sorted(range(len(src)), key=src.__getitem__)
    return ptr, array("l", map(dst.__getitem__, order))


def _check_acyclic(
    spec: WorkflowSpec, num_nodes: int, ptr: array[int], idx: array[int]
) -> None:
    """Kahn's algorithm; on failure, walk predecessors among the leftovers to name a cycle."""
    counts = Counter(idx)
    indeg = array("q", map(counts.get, range(num_nodes), repeat(0, num_nodes)))
    stack = list(compress(range(num_nodes), map((0).__eq__, indeg)))
    seen = len(stack)
    pop, push = stack.pop, stack.append
    while stack:
        n = pop()
        for k in range(ptr[n], ptr[n + 1]):
            d = idx[k]
            left = indeg[d] - 1
            indeg[d] = left
            if left == 0:
                push(d)
                seen += 1
    if seen == num_nodes:
        return
    # Every leftover node has a leftover predecessor: walking back must close a cycle.
    pred: dict[int, int] = {}
    for u in range(num_nodes):
        if indeg[u] == 0:
            continue
        for k in range(ptr[u], ptr[u + 1]):
            d = idx[k]
            if indeg[d] > 0 and d not in pred:
                pred[d] = u
    order: dict[int, int] = {}
    node = next(iter(pred))
    while node not in order:
        order[node] = len(order)
        node = pred[node]
    back = list(order)[order[node] :]  # node, pred(node), ... against the edge direction
    back.reverse()
    num_jobs = len(spec.jobs)
    cycle = [n for n in back if n < num_jobs]
    first = cycle.index(min(cycle))
    cycle = cycle[first:] + cycle[:first]
    names = [spec.jobs[n].name for n in cycle]
    raise SpecError([f"dependency cycle: {' -> '.join([*names, names[0]])}"])


def _selfs(up: array[int], start: int, count: int) -> list[int]:
    """Members of ``up`` (ascending) within ``[start, start + count)``."""
    lo = bisect_left(up, start)
    hi = bisect_left(up, start + count, lo)
    return list(up[lo:hi])


class _Edges:
    """Edge emission with per-job deduplication where a job has several direct sources."""

    def __init__(self, ndirect: array[int]) -> None:
        self.src: array[int] = array("l")
        self.dst: array[int] = array("l")
        self.ndirect = ndirect
        self.multi: dict[int, dict[int, None]] = {}

    def direct(self, up: array[int], start: int, count: int) -> None:
        """Edges from every ``up`` to each job of the run, skipping self-edges."""
        src, dst, ndirect = self.src, self.dst, self.ndirect
        simple = max(ndirect[start : start + count]) < 2 and not _selfs(up, start, count)
        if simple and len(up) == 1:
            src.extend(repeat(up[0], count))
            dst.extend(range(start, start + count))
            return
        for d in range(start, start + count):
            if simple:
                src.extend(up)
                dst.extend(repeat(d, len(up)))
            elif ndirect[d] >= 2:
                bucket = self.multi.setdefault(d, {})
                for u in up:
                    if u != d:
                        bucket[u] = None
            else:
                for u in up:
                    if u != d:
                        src.append(u)
                        dst.append(d)

    def finish(self) -> None:
        for d, bucket in self.multi.items():
            self.src.extend(bucket)
            self.dst.extend(repeat(d, len(bucket)))
        self.multi.clear()


def compile_workflow(
    spec: WorkflowSpec, *, barrier_threshold: int = DEFAULT_BARRIER_THRESHOLD,
    max_regex_tests: int = DEFAULT_MAX_REGEX_TESTS,
) -> WorkflowModel:
    """Build the engine's flat model: CSR edges (barrier-compressed), resources, indices.
    Regexes make at most ``max_regex_tests`` (pattern, name) tests (:class:`RegexBudget`)."""
    with gc_paused():
        return _compile(spec, barrier_threshold, RegexBudget(max_regex_tests))


def _compile(spec: WorkflowSpec, barrier_threshold: int, budget: RegexBudget) -> WorkflowModel:
    jobs = spec.jobs
    n = len(jobs)
    index = NameIndex(list(map(attrgetter("name"), jobs)), budget=budget)
    resolver = _Resolver(spec, index)

    # Pass 1, per run of jobs with equal sources: singletons are direct; larger sets group.
    groups: dict[object, _Group] = {}
    singles: list[tuple[array[int], int, int]] = []  # (up of size 1, start, count)
    diff = array("q", bytes(8 * (n + 1)))  # direct sources per job, as a difference array
    uncompressed = 0
    ordered = True  # every edge goes from a lower to a higher position: no cycle possible
    for sources, start, count in _runs(map(_SOURCES, jobs)):
        for kind in (0, 1, 2, 3):
            value = sources[kind]
            if not value:
                continue
            key, up = resolver.resolve(kind, value, start)
            if not up:
                continue
            if len(up) == 1:
                singles.append((up, start, count))
                diff[start] += 1
                diff[start + count] -= 1
                uncompressed += count - len(_selfs(up, start, count))
                ordered = ordered and up[0] < start
                continue
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(up)
            group.runs.append((start, count))

    # Decide barriers (Rule 2); self-references found by binary search (Rule 3).
    num_barriers = 0
    direct_groups: list[_Group] = []
    barrier_groups: list[_Group] = []
    for group in groups.values():
        up = group.up
        nu, nd = len(up), group.size()
        selfs = [d for start, count in group.runs for d in _selfs(up, start, count)]
        group.selfs = selfs
        uncompressed += nu * nd - len(selfs)
        if nd >= 2 and nu >= 2 and nu * nd >= barrier_threshold and nu * nd > nu + nd:
            if len(selfs) >= 2:
                first, second = jobs[selfs[0]].name, jobs[selfs[1]].name
                raise SpecError([f"dependency cycle: {first} -> {second} -> {first}"])
            group.barrier = n + num_barriers
            num_barriers += 1
            barrier_groups.append(group)
            for d in selfs:
                diff[d] += 1
                diff[d + 1] -= 1
            ordered = ordered and not selfs and up[-1] < min(s for s, _ in group.runs)
        else:
            direct_groups.append(group)
            for start, count in group.runs:
                diff[start] += 1
                diff[start + count] -= 1
                ordered = ordered and up[-1] < start

    # Emit edges (Rule 3: jobs with several direct sources are deduplicated).
    edges = _Edges(array("q", accumulate(diff)))
    for up, start, count in singles:
        edges.direct(up, start, count)
    for group in direct_groups:
        for start, count in group.runs:
            edges.direct(group.up, start, count)
    for group in barrier_groups:
        b = group.barrier
        edges.src.extend(group.up)
        edges.dst.extend(repeat(b, len(group.up)))
        for d in group.selfs:
            edges.direct(group.up, d, 1)
        skip = set(group.selfs)
        for start, count in group.runs:
            targets = range(start, start + count)
            down = [d for d in targets if d not in skip] if skip else targets
            edges.src.extend(repeat(b, len(down)))
            edges.dst.extend(down)
    edges.finish()

    num_nodes = n + num_barriers
    down_ptr, down_idx = _csr(num_nodes, edges.src, edges.dst)
    if not ordered:
        _check_acyclic(spec, num_nodes, down_ptr, down_idx)
    columns = _job_columns(spec, resolver, num_barriers)
    return WorkflowModel(
        num_jobs=n,
        num_barriers=num_barriers,
        down_ptr=down_ptr,
        down_idx=down_idx,
        cpus=columns.cpus,
        gpus=columns.gpus,
        nodes=columns.nodes,
        memory=columns.memory,
        runtime=columns.runtime,
        scheduler=columns.scheduler,
        handler=columns.handler,
        cancel_on_failure=columns.cancel_on_failure,
        input_files_ptr=columns.input_files_ptr,
        input_files_idx=columns.input_files_idx,
        input_user_data_ptr=columns.input_user_data_ptr,
        input_user_data_idx=columns.input_user_data_idx,
        failure_handlers=spec.failure_handlers,
        num_schedulers=len(spec.slurm_schedulers),
        uncompressed_edges=uncompressed,
        priority=priority_column(map(attrgetter("priority"), spec.jobs), n),
        sort_method=spec.jobs_sort_method or "gpus_runtime_memory",
        use_pending_failed=spec.use_pending_failed,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Columns:
    cpus: array[int]
    gpus: array[int]
    nodes: array[int]
    memory: array[int]
    runtime: array[int]
    scheduler: array[int]
    handler: array[int]
    cancel_on_failure: bytearray
    input_files_ptr: array[int]
    input_files_idx: array[int]
    input_user_data_ptr: array[int]
    input_user_data_idx: array[int]


def _run_column(runs: Sequence[tuple[int, int]], table: Sequence[int]) -> array[int]:
    """Expand (table index, count) runs into a per-job column of ``table`` values."""
    out: array[int] = array("q")
    for k, count in runs:
        out.extend(array("q", [table[k]]) * count)
    return out


def _job_columns(spec: WorkflowSpec, resolver: _Resolver, num_barriers: int) -> _Columns:
    """Per-job resource, scheduler, handler and input arrays, built run by run."""
    jobs = spec.jobs
    errors: list[str] = []

    def runs(attr: str, table: dict[str | None, int], noun: str) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for value, start, count in _runs(map(attrgetter(attr), jobs)):
            k = table.get(value)
            if k is None:
                errors.append(f"{_where(start, jobs[start])}: {attr}: no {noun} named {value!r}")
                k = -1
            out.append((k, count))
        return out

    def table(names: Iterable[str]) -> dict[str | None, int]:
        out: dict[str | None, int] = {None: -1}
        out.update({name: k for k, name in enumerate(names)})
        return out

    reqs = spec.resource_requirements
    rr_runs = runs("resource_requirements", table(r.name for r in reqs), "resource_requirements")
    sched_runs = runs("scheduler", table(s.name for s in spec.slurm_schedulers), "scheduler")
    handler_runs = runs(
        "failure_handler", table(h.name for h in spec.failure_handlers), "failure_handler"
    )
    if errors:
        raise SpecError(errors)
    identity = range(-1, max(len(reqs), len(spec.slurm_schedulers), len(spec.failure_handlers)))

    def column(attr: str, default: int) -> array[int]:
        values = [getattr(r, attr) for r in reqs] + [default]  # index -1 -> default
        return _run_column(rr_runs, values)

    def ids(runs_: list[tuple[int, int]]) -> array[int]:
        return _run_column([(k + 1, count) for k, count in runs_], identity)

    def inputs(attr: str, pos: dict[str, int]) -> tuple[array[int], array[int]]:
        ptr = array("q", [0])
        idx: array[int] = array("l")
        total = 0
        for names, _, count in _runs(map(attrgetter(attr), jobs)):
            width = len(names)
            if width:
                idx.extend(array("l", [pos[nm] for nm in names]) * count)
                ptr.extend(range(total + width, total + width * count + 1, width))
                total += width * count
            else:
                ptr.extend(repeat(total, count))
        return ptr, idx

    files_ptr, files_idx = inputs("input_files", resolver.file_pos)
    ud_ptr, ud_idx = inputs("input_user_data", resolver.ud_pos)
    # Barriers carry 0: a failed upstream cancels each dependent by its own flag.
    cancel = bytearray(map(bool, map(attrgetter("cancel_on_blocking_job_failure"), jobs)))
    cancel.extend(bytes(num_barriers))
    return _Columns(
        cpus=column("num_cpus", DEFAULT_NUM_CPUS),
        gpus=column("num_gpus", 0),
        nodes=column("num_nodes", 1),
        memory=column("memory_bytes", DEFAULT_MEMORY_BYTES),
        runtime=column("runtime_s", DEFAULT_RUNTIME_S),
        scheduler=ids(sched_runs),
        handler=ids(handler_runs),
        cancel_on_failure=cancel,
        input_files_ptr=files_ptr,
        input_files_idx=files_idx,
        input_user_data_ptr=ud_ptr,
        input_user_data_idx=ud_idx,
    )


def model_summary(spec: WorkflowSpec, model: WorkflowModel) -> dict[str, int]:
    """The counts the API reports on create: jobs, stored dependencies, barriers, files."""
    return {
        "jobs": model.num_jobs,
        "dependencies": model.num_edges,
        "barriers": model.num_barriers,
        "files": len(spec.files),
        "user_data": len(spec.user_data),
        "uncompressed_dependencies": model.uncompressed_edges,
    }


def compile_spec_summary(
    spec: WorkflowSpec, *, barrier_threshold: int = DEFAULT_BARRIER_THRESHOLD
) -> dict[str, int]:
    """Compile and summarize (``POST /workflows`` with ``dry_run``)."""
    return model_summary(spec, compile_workflow(spec, barrier_threshold=barrier_threshold))
