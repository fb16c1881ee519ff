"""Compact job columns: a value read alone and values read in one pass agree, in every
layout (constant, dictionary, blob with and without nulls, and a grown column)."""

from __future__ import annotations

import pytest

from torc_net.columns import MAX_DICTIONARY, StrColumn, grown, pick

LAYOUTS = {
    "constant": ["true"] * 7,
    "constant none": [None] * 5,
    "dictionary": ["a", None, "b", "a", "é", None, "b"],
    "blob": [f"name_{i}" for i in range(MAX_DICTIONARY + 10)],
    "blob with nulls": [None if i % 3 == 0 else f"név_{i}" for i in range(MAX_DICTIONARY + 10)],
}


@pytest.mark.parametrize("values", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_pick_reads_what_indexing_reads(values: list[str | None]) -> None:
    column = StrColumn(values)
    n = len(values)
    indices = [0, n - 1, n // 2, 1, 0, n - 2]
    assert column.pick(indices) == [values[i] for i in indices] == pick(column, indices)
    assert column.pick([]) == []
    assert list(column) == values


def test_pick_of_a_grown_column() -> None:
    column = grown(StrColumn(["a", "b"]), ["c", None])
    assert pick(column, [3, 0, 2]) == [None, "a", "c"]
