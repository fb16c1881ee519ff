"""A workflow's ids of one kind (jobs, files, user data): ranges of consecutive ids.

Theory of operation
-------------------
Ids come from the store's sequences (:mod:`torc_net.store.schema`): a new workflow takes one
range of consecutive ids per kind, and each growth (dynamic jobs, ``POST .../jobs``) takes
another range, above every id handed out before. So a workflow's ids, sorted, are its rows in
the engine's order: the index of an id is its rank among the workflow's ids, and the id of an
index is found by a bisection over the ranges (one addition when there is one range, as for
every workflow that never grew). Each range also remembers the iteration that made it (0: the
workflow's own jobs; a spawn's jobs are one iteration past the job that spawned them).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence


class IdRanges:
    """Ids of one kind of one workflow (see the module docstring)."""

    __slots__ = ("_counts", "_firsts", "_iterations", "_starts")

    def __init__(self, first: int, count: int) -> None:
        self._firsts = [first]  # first id of each range
        self._starts = [0]  # index of each range's first id
        self._counts = [count]
        self._iterations = [0]

    @classmethod
    def from_ranges(cls, ranges: Sequence[tuple[int, int, int]]) -> IdRanges:
        """From (first id, count, iteration) triples in id order; the first is the
        workflow's own range."""
        first, count, _ = ranges[0]
        out = cls(first, count)
        for first, count, iteration in ranges[1:]:
            out.add(first, count, iteration)
        return out

    def add(self, first: int, count: int, iteration: int = 0) -> None:
        """A new range above every id so far (a growth)."""
        last = self._firsts[-1] + self._counts[-1] - 1
        if first <= last:
            raise ValueError(f"ids {first}.. are not above the last id {last}")
        if count <= 0:
            return
        if self._counts[-1] == 0:  # a workflow created with none of this kind
            self._firsts[-1], self._counts[-1], self._iterations[-1] = first, count, iteration
            return
        self._starts.append(self._starts[-1] + self._counts[-1])
        self._firsts.append(first)
        self._counts.append(count)
        self._iterations.append(iteration)

    def __len__(self) -> int:
        return self._starts[-1] + self._counts[-1]

    @property
    def first(self) -> int:
        """The first id of the workflow's own range (the API's ``job_id_base``)."""
        return self._firsts[0]

    def ranges(self) -> list[tuple[int, int, int]]:
        """(first id, count, iteration) of each range, in id order."""
        return list(zip(self._firsts, self._counts, self._iterations, strict=True))

    def id(self, index: int) -> int:
        if len(self._firsts) == 1:
            return self._firsts[0] + index
        r = bisect_right(self._starts, index) - 1
        return self._firsts[r] + index - self._starts[r]

    def ids(self, indices: Iterable[int]) -> list[int]:
        if len(self._firsts) == 1:
            base = self._firsts[0]
            return [base + i for i in indices]
        return [self.id(i) for i in indices]

    def index(self, item_id: int) -> int:
        """The index of ``item_id``, or -1 when it is not one of these ids."""
        r = bisect_right(self._firsts, item_id) - 1
        if r < 0:
            return -1
        k = item_id - self._firsts[r]
        return self._starts[r] + k if k < self._counts[r] else -1

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, int) and self.index(item_id) >= 0

    def iteration(self, index: int) -> int:
        """The iteration of the range that holds ``index``."""
        if len(self._firsts) == 1:
            return 0
        return self._iterations[bisect_right(self._starts, index) - 1]

    def spans(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, int]]:
        """(first id, last id) of the ids of indices ``start .. stop-1``, range by range (for
        ``BETWEEN`` reads; none when the slice is empty)."""
        stop = len(self) if stop is None else min(stop, len(self))
        for first, begin, count in zip(self._firsts, self._starts, self._counts, strict=True):
            lo, hi = max(start, begin), min(stop, begin + count)
            if lo < hi:
                yield first + lo - begin, first + hi - 1 - begin
