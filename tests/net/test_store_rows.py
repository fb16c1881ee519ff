"""The store's inserts that leave out missing values: the same rows as binding NULLs, in order."""

from __future__ import annotations

import sqlite3
import tracemalloc
from typing import Any

import pytest

from torc_net.store.changes import INSERT_JOBS, INSERT_RESULTS, SparseInsert
from torc_net.store.schema import SCHEMA


def _db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.executescript(SCHEMA)
    return db


@pytest.mark.parametrize("insert", [INSERT_JOBS, INSERT_RESULTS], ids=lambda i: i.table)
def test_left_out_columns_are_nullable_with_no_default(insert: SparseInsert) -> None:
    """Leaving a column out gives it its default: only right where that default is NULL and
    NULL is allowed (a NOT NULL DEFAULT 0 column would silently turn None into 0)."""
    info = {row[1]: row for row in _db().execute(f"PRAGMA table_info({insert.table})")}
    assert set(insert.columns) <= set(info), set(insert.columns) - set(info)
    for name in insert.nullable:
        _, _, _, notnull, default, _ = info[name]
        assert notnull == 0 and default is None, (insert.table, name)


def test_rows_with_any_mix_of_missing_values_store_as_with_nulls_in_order() -> None:
    db = _db()
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER NOT NULL, b TEXT, c REAL,"
               " d TEXT, e INTEGER NOT NULL)")
    insert = SparseInsert("INSERT", "t", ("a", "b", "c", "d"), nullable=("b", "c", "d"),
                          literals="e=7")
    rows: list[tuple[Any, ...]] = [
        (1, None, None, None), (2, None, None, None), (3, "x", None, None), (4, "y", 1.5, "z"),
        (5, None, None, None), (6, None, 2.5, None), (7, "", 0.0, ""), (8, None, None, "w"),
    ]
    insert.run(db, iter(rows))  # any iterable, consumed once
    assert db.execute("SELECT a, b, c, d, e FROM t ORDER BY id").fetchall() == [
        (*row, 7) for row in rows]
    insert.run(db, [])
    assert db.execute("SELECT count(*) FROM t").fetchone() == (len(rows),)


def test_one_nullable_column_and_none() -> None:
    db = _db()
    db.execute("CREATE TABLE u (id INTEGER PRIMARY KEY, a INTEGER, b TEXT)")
    SparseInsert("INSERT", "u", ("a", "b"), nullable=("b",)).run(
        db, [(1, None), (2, "two"), (3, None)])
    SparseInsert("INSERT", "u", ("b",), nullable=()).run(db, [("only",)])
    assert db.execute("SELECT a, b FROM u ORDER BY id").fetchall() == [
        (1, None), (2, "two"), (3, None), (None, "only")]
    with pytest.raises(ValueError, match="nullable columns not among"):
        SparseInsert("INSERT", "u", ("a",), nullable=("b",))


def test_or_ignore_keeps_the_first_result_of_a_key() -> None:
    db = _db()
    empty = (None,) * (len(INSERT_RESULTS.columns) - 9)
    first = (1, 10, 1, 1, 0, 3, 0.5, 100.0, 4, *empty)
    again = (1, 10, 1, 1, 9, 4, 0.5, 100.0, None, "out.txt", *empty[1:])
    INSERT_RESULTS.run(db, [first, again])
    assert db.execute("SELECT return_code, compute_node_id, stdout_path FROM results"
                      ).fetchall() == [(0, 4, None)]


def test_rows_stream_in_never_all_held() -> None:
    """A million-job workflow's rows come from a generator; holding them all (as a list of
    tuples) cost the server 110 MB more at its peak (bench_scale, create)."""
    db = _db()
    n = 100_000

    def rows() -> Any:
        for i in range(1, n + 1):
            yield (i, 1, f"job_{i}", "true", None, 1, 1, 0, 1, 0, 0, None, None, 0, None, -1,
                   0, 0, 0, None if i % 50_000 else '{"stdout": "x"}')

    tracemalloc.start()
    try:
        INSERT_JOBS.run(db, rows())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert db.execute("SELECT count(*), count(stdio) FROM jobs").fetchone() == (n, 2)
    assert peak < 5_000_000, peak  # the rows held at once: 100,000 would be tens of MB
