"""The files a runner leaves in its output directory, and the one reader of each.

A runner writes, under its output directory (``torc-trio run -o``, default ``./torc_output``):

* ``job_stdio/<J // 1000>/job_wf<W>_j<J>_r<R>_a<A>.o`` / ``.e`` / ``.log``: a job's stdout and
  stderr (:mod:`torc_cli.stdio` plans them; each result records its two paths);
* ``resource_utilization/resource_metrics_<host>_<W>_<R>.db``: with ``resource_monitor``
  granularity ``time_series``, every sample of every job it ran (Torc's schema;
  :mod:`torc_cli.monitor` writes it).

Why here, in the server's package: both sides read them. The runner sends the end of a job's
output with its result (:func:`read_tail`); ``torc-trio plot-resources`` draws the samples
(:mod:`torc_cli.plots`); and a server started by ``torc-trio dash`` on a local database (and
only that one: ``ServerConfig.read_job_files``) reads both for its dashboard
(:mod:`torc_net.api_output`). One reader each, so the three cannot disagree about a file.
``torc_net`` never imports ``torc_cli``; ``torc_cli`` imports this.

Every read is bounded: a tail is at most :data:`TAIL_BYTES` read by one ``pread`` at the end of
a regular file (a FIFO or device named in a result is never opened for reading, let alone
waited on); one job's samples are at most ``max_samples`` rows, taken evenly by SQLite from
at most ``max_files`` databases opened read-only.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Under the output directory: jobs' stdout and stderr files (torc_cli.stdio).
STDIO_DIR = "job_stdio"
#: Under the output directory: the time-series databases (torc_cli.monitor writes them).
METRICS_DIR = "resource_utilization"
#: The end of a stream a result carries (and a dashboard shows): 16 KiB.
TAIL_BYTES = 16384

# ---------------------------------------------------------------------------------------------
# Output tails


def read_tail(path: str, max_bytes: int = TAIL_BYTES) -> str | None:
    """The last ``max_bytes`` of the regular file ``path``, decoded as UTF-8 with invalid bytes
    replaced (so never more characters than ``max_bytes``). When the file is longer, the
    first, cut line is dropped (unless the tail is all one line). None: no such file, not a
    regular file, or unreadable. An empty file gives ``""``.

    Cheap: one open, one fstat, one pread of the end; ``O_NONBLOCK`` so that a FIFO at the
    path is not waited on (it is then refused by the fstat)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        start = max(0, st.st_size - max_bytes)
        data = os.pread(fd, max_bytes, start)
    except OSError:
        return None
    finally:
        os.close(fd)
    if start > 0:
        newline = data.find(b"\n")
        if 0 <= newline < len(data) - 1:
            data = data[newline + 1:]
    return data.decode("utf-8", errors="replace")


def read_tails(stdout_path: str | None, stderr_path: str | None,
               max_bytes: int = TAIL_BYTES) -> dict[str, str | None]:
    """``{"stdout_tail", "stderr_tail"}`` of a job's two files (a result's fields). One file
    with both (stdio ``combined``: the two paths are equal) is read once, as the stdout tail."""
    out = None if stdout_path is None else read_tail(stdout_path, max_bytes)
    err = None if stderr_path is None or stderr_path == stdout_path else \
        read_tail(stderr_path, max_bytes)
    return {"stdout_tail": out, "stderr_tail": err}


# ---------------------------------------------------------------------------------------------
# Resource samples (Torc's time-series databases)

#: The columns of Torc's sample table that are read.
SAMPLE_COLUMNS = ("job_id", "timestamp", "cpu_percent", "memory_bytes", "num_processes")
_VALUES = ", ".join(SAMPLE_COLUMNS[1:])


class MetricsError(Exception):
    """A file that is not a readable resource metrics database; the message names it."""


@dataclass(frozen=True, slots=True)
class Sample:
    timestamp: float
    cpu_percent: float
    memory_bytes: int
    num_processes: int

    def as_json(self) -> dict[str, Any]:
        return {"timestamp": self.timestamp, "cpu_percent": self.cpu_percent,
                "memory_bytes": self.memory_bytes, "num_processes": self.num_processes}


def open_metrics(path: Path, *, timeout_s: float = 5.0) -> tuple[sqlite3.Connection, bool]:
    """(read-only connection, whether it has ``job_metadata``) of a metrics database; a file
    that is not one is a :class:`MetricsError` saying why. Read-only: a reader must never
    create, lock for writing or change a runner's file."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout_s,
                               check_same_thread=False)
    except sqlite3.Error as exc:
        raise MetricsError(f"{path}: cannot open it as SQLite: {exc}") from None
    try:
        try:
            tables = {row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise MetricsError(f"{path}: not a resource metrics database (not SQLite: {exc})") \
                from None
        if "job_resource_samples" not in tables:
            raise MetricsError(f"{path}: not a resource metrics database (no "
                               "job_resource_samples table; Torc's runners write one with "
                               "resource_monitor granularity time_series)")
        columns = {row[1] for row in conn.execute("PRAGMA table_info(job_resource_samples)")}
        missing = [c for c in SAMPLE_COLUMNS if c not in columns]
        if missing:
            raise MetricsError(f"{path}: not a resource metrics database (job_resource_samples "
                               f"has no column {', '.join(missing)})")
    except BaseException:
        conn.close()
        raise
    return conn, "job_metadata" in tables


def check_sample(path: Path, row: Sequence[Any]) -> tuple[int, Sample]:
    """``(rowid, job_id, timestamp, cpu_percent, memory_bytes, num_processes)`` as (job id,
    sample); a value of the wrong kind is a :class:`MetricsError` naming file, row and
    column."""
    rowid, job_id, timestamp, cpu, memory, procs = row

    def bad(column: str, value: Any, want: str) -> MetricsError:
        return MetricsError(f"{path}: job_resource_samples row {rowid}: {column} is "
                            f"{value!r}, not {want}")

    if not isinstance(job_id, int) or isinstance(job_id, bool):
        raise bad("job_id", job_id, "an integer")
    for column, value in (("timestamp", timestamp), ("cpu_percent", cpu)):
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise bad(column, value, "a finite number")
    for column, value in (("memory_bytes", memory), ("num_processes", procs)):
        if not isinstance(value, int) or value < 0:
            raise bad(column, value, "a whole number >= 0")
    return job_id, Sample(float(timestamp), float(cpu), memory, procs)


def read_all_samples(path: Path) -> tuple[list[tuple[int, Sample]], dict[int, str]]:
    """Every (job id, sample) of one database, by job and time, and the job names it has
    (``torc-trio plot-resources``: the whole file is what it was given)."""
    conn, has_names = open_metrics(path)
    try:
        rows = conn.execute(f"SELECT rowid, job_id, {_VALUES} FROM job_resource_samples "
                            "ORDER BY job_id, timestamp")
        samples = [check_sample(path, row) for row in rows]
        names: dict[int, str] = {}
        if has_names:  # optional in Torc too
            for job_id, name in conn.execute("SELECT job_id, job_name FROM job_metadata"):
                if isinstance(job_id, int) and isinstance(name, str) and name:
                    names[job_id] = name
        return samples, names
    except sqlite3.DatabaseError as exc:
        raise MetricsError(f"{path}: cannot read it: {exc}") from None
    finally:
        conn.close()


def output_dirs(stdio_paths: Iterable[str], database: str | None) -> list[Path]:
    """The output directories a job's files may be in, best first.

    The rule: a recorded stdio path is ``<output dir>/job_stdio/<shard>/<file>`` (the runner
    records absolute paths), so each such path names its runner's output directory exactly,
    whatever ``-o`` was and wherever the database is; a path of another shape says nothing.
    Then the database's directory: standalone mode keeps its database in the output
    directory (``./torc_output/torc.db``), which covers a job run with stdio ``none``."""
    out: dict[Path, None] = {}
    for text in stdio_paths:
        p = Path(text)
        if p.is_absolute() and len(p.parts) > 3 and p.parent.parent.name == STDIO_DIR:
            out[p.parent.parent.parent] = None
    if database and database != ":memory:":
        out[Path(database).resolve().parent] = None
    return list(out)


def metrics_files(dirs: Iterable[Path], workflow_id: int, *, max_files: int = 64,
                  max_entries: int = 10_000) -> list[Path]:
    """The workflow's databases (``resource_metrics_<host>_<workflow>_<run>.db``, any host,
    any run) in ``dirs``' ``resource_utilization``: at most ``max_files``, looking at most
    at ``max_entries`` directory entries in each."""
    found: list[Path] = []
    for d in dirs:
        try:
            with os.scandir(d / METRICS_DIR) as entries:
                for k, entry in enumerate(entries):
                    if k >= max_entries or len(found) >= max_files:
                        break
                    if _is_metrics_name(entry.name, workflow_id) and \
                            entry.is_file(follow_symlinks=False):
                        found.append(Path(entry.path))
        except OSError:
            continue
    return sorted(found)


def _is_metrics_name(name: str, workflow_id: int) -> bool:
    if not (name.startswith("resource_metrics_") and name.endswith(".db")):
        return False
    parts = name[len("resource_metrics_"):-len(".db")].rsplit("_", 2)  # a host may have '_'
    return len(parts) == 3 and parts[1] == str(workflow_id) and parts[2].isdigit()


def job_samples(paths: Sequence[Path], job_id: int, *, max_samples: int = 5000,
                timeout_s: float = 2.0) -> list[Sample]:
    """One job's samples from ``paths`` (a job retried on another node is in several),
    merged in time order; more than ``max_samples`` are thinned evenly (of n rows, row k is
    kept when k * max_samples mod n < max_samples: max_samples rows in all, the first among
    them, chosen by SQLite: the rows never all reach Python). A file that is not a metrics
    database, or has a bad row, is skipped (and logged): the others still answer."""
    counted: list[tuple[Path, sqlite3.Connection]] = []
    total = 0
    try:
        for path in paths:
            try:
                conn, _ = open_metrics(path, timeout_s=timeout_s)
            except MetricsError as exc:
                log.warning("%s", exc)
                continue
            counted.append((path, conn))
            try:
                total += conn.execute("SELECT count(*) FROM job_resource_samples WHERE job_id=?",
                                      (job_id,)).fetchone()[0]
            except sqlite3.DatabaseError as exc:
                log.warning("%s: cannot read it: %s", path, exc)
        keep, of = (1, 1) if total <= max_samples else (max(0, max_samples), total)
        samples: list[Sample] = []
        for path, conn in counted:
            try:
                rows = conn.execute(
                    f"SELECT rowid, job_id, {_VALUES} FROM (SELECT rowid, job_id, {_VALUES}, "
                    "row_number() OVER (ORDER BY timestamp) - 1 AS k FROM job_resource_samples"
                    " WHERE job_id=?) WHERE (k * ?) % ? < ? ORDER BY timestamp",
                    (job_id, keep, of, keep))
                samples.extend([check_sample(path, row)[1] for row in rows])  # all or none
            except (sqlite3.DatabaseError, MetricsError) as exc:
                log.warning("%s: skipped: %s", path, exc)
    finally:
        for _, conn in counted:
            conn.close()
    samples.sort(key=lambda s: s.timestamp)
    if len(samples) > max_samples:  # several files, each rounded up
        n = len(samples)
        samples = [samples[i * n // max_samples] for i in range(max_samples)]
    return samples
