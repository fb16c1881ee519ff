"""Compact per-job columns of strings: a million names without a million ``str`` objects.

Theory of operation
-------------------
The server keeps a few text columns of every job in memory for its hot paths (the claim answer
carries name, command and invocation script; results and the feed carry names). As Python
lists they cost a pointer per job plus, for distinct values, a ``str`` object per job (about
60 bytes for ``"stage_123456"``): ~70 MB per column at a million jobs.

:class:`StrColumn` stores a column in one of two layouts, chosen while it is built:

* **dictionary**: few distinct values (commands like ``"true"``, ``None`` scripts, scheduler
  names): the distinct values once, plus one small integer code per job (an ``array`` of 1, 2
  or 4 bytes per job; 0 bytes when the column is constant);
* **blob**: many distinct values (names): all values UTF-8 encoded into one ``bytes`` object and
  an ``array`` of end offsets (8 bytes per job); ``None`` values are marked in a bitmap.

Reading ``column[i]`` decodes one value (a fraction of a microsecond); columns are immutable.
"""

from __future__ import annotations

import json
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

#: Beyond this many distinct values a column switches from the dictionary to the blob layout.
MAX_DICTIONARY = 4096


class StrColumn(Sequence[str | None]):
    """An immutable column of ``str | None`` values (see the module docstring)."""

    __slots__ = ("_blob", "_codes", "_ends", "_n", "_nulls", "_values")

    def __init__(self, items: Iterable[str | None]) -> None:
        self._values: list[str | None] = []
        self._codes: array[int] | None = None
        self._blob = b""
        self._ends: array[int] | None = None
        self._nulls: bytearray | None = None
        index: dict[str | None, int] = {}
        codes = array("I")
        it = iter(items)
        n = 0
        for value in it:
            code = index.get(value)
            if code is None:
                if len(index) >= MAX_DICTIONARY:
                    self._to_blob(codes, value, it)
                    return
                code = index[value] = len(index)
                self._values.append(value)
            codes.append(code)
            n += 1
        self._n = n
        if len(self._values) > 1:
            typecode = "B" if len(self._values) <= 256 else "H"
            self._codes = array(typecode, codes)

    def _to_blob(self, codes: array[int], pending: str | None,
                 rest: Iterator[str | None]) -> None:
        values = self._values
        buf = bytearray()
        ends = array("q")
        nulls = bytearray()

        def add(value: str | None) -> None:
            if value is None:
                nulls.append(1)
            else:
                buf.extend(value.encode())
                nulls.append(0)
            ends.append(len(buf))

        for code in codes:
            add(values[code])
        add(pending)
        for value in rest:
            add(value)
        self._n = len(ends)
        self._values = []
        self._codes = None
        self._blob = bytes(buf)
        self._ends = ends
        self._nulls = nulls if any(nulls) else None

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> str | None: ...

    @overload
    def __getitem__(self, i: slice) -> list[str | None]: ...

    def __getitem__(self, i: int | slice) -> str | list[str | None] | None:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("StrColumn index out of range")
        ends = self._ends
        if ends is None:
            codes = self._codes
            return self._values[0 if codes is None else codes[i]]
        if self._nulls is not None and self._nulls[i]:
            return None
        return self._blob[ends[i - 1] if i else 0 : ends[i]].decode()

    def pick(self, indices: Sequence[int]) -> list[str | None]:
        """The values at ``indices`` (each in range), in one pass: a claim answer reads a few
        columns of a few hundred jobs, and ``column[i]`` checks and dispatches per value."""
        ends = self._ends
        if ends is None:
            values, codes = self._values, self._codes
            if codes is None:
                return values * len(indices)
            return [values[codes[i]] for i in indices]
        blob, nulls = self._blob, self._nulls
        return [None if nulls is not None and nulls[i] else
                blob[ends[i - 1] if i else 0 : ends[i]].decode() for i in indices]

    def __iter__(self) -> Iterator[str | None]:
        ends = self._ends
        if ends is None:
            codes = self._codes
            values = self._values
            if codes is None:
                if self._n:
                    yield from (values[0] for _ in range(self._n))
                return
            for c in codes:
                yield values[c]
            return
        blob, nulls = self._blob, self._nulls
        start = 0
        for k, end in enumerate(ends):
            yield None if nulls is not None and nulls[k] else blob[start:end].decode()
            start = end

    def nbytes(self) -> int:
        """Approximate memory of the column's buffers (for tests and reports)."""
        size = len(self._blob)
        if self._ends is not None:
            size += self._ends.itemsize * len(self._ends)
        if self._codes is not None:
            size += self._codes.itemsize * len(self._codes)
        if self._nulls is not None:
            size += len(self._nulls)
        return size

    def __repr__(self) -> str:
        layout = "blob" if self._ends is not None else f"dictionary[{len(self._values)}]"
        return f"StrColumn({self._n} values, {layout})"


def pick(column: Sequence[str | None], indices: Sequence[int]) -> list[str | None]:
    """``[column[i] for i in indices]``, in one pass where the column is a :class:`StrColumn`."""
    if isinstance(column, StrColumn):
        return column.pick(indices)
    return [column[i] for i in indices]


def str_column(values: Sequence[str | None] | Iterable[str | None]) -> StrColumn:
    return values if isinstance(values, StrColumn) else StrColumn(values)


LINK_ATTRS = (
    ("job_input_files", "input_files", "files"),
    ("job_output_files", "output_files", "files"),
    ("job_input_user_data", "input_user_data", "user_data"),
    ("job_output_user_data", "output_user_data", "user_data"),
)


class JobColumns:
    """What the server keeps of a spec's jobs once it is compiled: the text columns and flags
    of the ``jobs`` table and the job->file/user_data links (as (job index, ref index) pairs).

    Built in the worker thread right after compiling, so that the per-job ``JobSpec`` objects
    (~200 bytes each plus their strings) can be dropped before the rows are written.
    """

    __slots__ = ("cancel_on_blocking", "commands", "failure_handlers", "invocation_scripts",
                 "links", "names", "resource_requirements", "schedulers", "stdio",
                 "supports_termination")

    def __init__(self, jobs: Sequence[object], file_names: Sequence[str],
                 user_data_names: Sequence[str]) -> None:
        self.names = StrColumn(j.name for j in jobs)  # type: ignore[attr-defined]
        self.commands = StrColumn(j.command for j in jobs)  # type: ignore[attr-defined]
        self.invocation_scripts = StrColumn(
            j.invocation_script for j in jobs  # type: ignore[attr-defined]
        )
        self.resource_requirements = StrColumn(
            j.resource_requirements for j in jobs  # type: ignore[attr-defined]
        )
        self.schedulers = StrColumn(j.scheduler for j in jobs)  # type: ignore[attr-defined]
        self.failure_handlers = StrColumn(
            j.failure_handler for j in jobs  # type: ignore[attr-defined]
        )
        self.supports_termination = bytearray(
            int(j.supports_termination) for j in jobs  # type: ignore[attr-defined]
        )
        self.cancel_on_blocking = bytearray(
            int(j.cancel_on_blocking_job_failure) for j in jobs  # type: ignore[attr-defined]
        )
        #: a job's own stdio (JSON text), None where it takes the workflow's
        self.stdio = StrColumn(stdio_text(j.stdio) for j in jobs)  # type: ignore[attr-defined]
        index = {
            "files": {name: k for k, name in enumerate(file_names)},
            "user_data": {name: k for k, name in enumerate(user_data_names)},
        }
        self.links: dict[str, list[tuple[int, int]]] = {}
        for table, attr, kind in LINK_ATTRS:
            ids = index[kind]
            self.links[table] = [
                (k, ids[name])
                for k, job in enumerate(jobs)
                for name in getattr(job, attr)
                if name in ids
            ]


def stdio_text(stdio: object) -> str | None:
    """A job's ``stdio`` override as the ``jobs.stdio`` column holds it (None: no override)."""
    if stdio is None:
        return None
    return json.dumps({"mode": stdio.mode,  # type: ignore[attr-defined]
                       "delete_on_success": stdio.delete_on_success})  # type: ignore[attr-defined]


class Concat(Sequence[str | None]):
    """A column that grew (dynamic jobs): the first part, then each growth's, read as one.

    Why not one new :class:`StrColumn`: rebuilding a million names for every ten spawned jobs
    would make a growth cost a second of the event loop. A small last part is merged with the
    next one, so the parts stay few (about one per :data:`MERGE_BELOW` values spawned)."""

    __slots__ = ("_parts", "_starts")

    MERGE_BELOW = 4096

    def __init__(self, first: Sequence[str | None]) -> None:
        self._parts: list[Sequence[str | None]] = [first]
        self._starts = [0]

    def extend(self, values: Sequence[str | None]) -> None:
        last = self._parts[-1]
        if len(self._parts) > 1 and len(last) < self.MERGE_BELOW:
            self._parts[-1] = StrColumn([*last, *values])
        else:
            self._starts.append(self._starts[-1] + len(last))
            self._parts.append(StrColumn(values))

    def __len__(self) -> int:
        return self._starts[-1] + len(self._parts[-1])

    @overload
    def __getitem__(self, i: int) -> str | None: ...

    @overload
    def __getitem__(self, i: slice) -> list[str | None]: ...

    def __getitem__(self, i: int | slice) -> str | list[str | None] | None:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("column index out of range")
        r = bisect_right(self._starts, i) - 1
        return self._parts[r][i - self._starts[r]]

    def __iter__(self) -> Iterator[str | None]:
        for part in self._parts:
            yield from part


def grown(column: Sequence[str | None], values: Sequence[str | None]) -> Concat:
    """``column`` followed by ``values`` (in place when it is already a :class:`Concat`)."""
    out = column if isinstance(column, Concat) else Concat(column)
    out.extend(values)
    return out
