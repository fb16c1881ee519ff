"""The runner's resource monitor: one Trio task samples every running job's process tree.

What it measures (Torc's ``resource_monitor``, :class:`torc_core.settings.ResourceMonitor`):
each job's whole tree (a job is ``bash -c CMD`` in a session of its own; every descendant
counts, found through parent pids in one scan of ``/proc``; psutil for the node, and for
the trees where there is no ``/proc``) every ``sample_interval_seconds``: CPU percent (of one
core: 200 is two busy cores), resident memory, process count; and the node's own CPU and
memory. Each result then carries ``peak_memory_bytes``, ``avg_memory_bytes``,
``peak_cpu_percent`` and ``avg_cpu_percent`` (summary granularity, the default); with
``time_series`` every sample also goes to Torc's database,
``<output>/resource_utilization/resource_metrics_<host>_<workflow>_<run>.db``.

Why one task and a thread: reading ``/proc`` for a few hundred processes takes milliseconds,
and the runner's loop must not stall for them (it starts and reports thousands of jobs a
second). Each tick takes a snapshot of the jobs' pids on the Trio thread, reads and writes the
database in a worker thread, then updates the jobs' statistics and applies the limits
(:mod:`torc_cli.limits`) back on the Trio thread. A job costs the hot path one dict entry
when it starts and one when it ends; jobs shorter than an interval are never read at all.

CPU arithmetic: a tree's CPU time is the sum, over its live processes, of user + system time
plus the time of their children already reaped (the kernel folds a waited-for child's time into
its parent's, so nothing is counted twice and a finished ``make`` step is not lost). The
percentage over an interval is the growth of that sum over the wall time; the first sample
measures from the job's start (when the sum was zero).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
import trio

from torc_core.settings import ResourceMonitor, resource_monitor_of
from torc_net.job_files import METRICS_DIR

from .alarm import Alarm
from .limits import OOM_EXIT_CODE, JobLimits, failure_cause, job_limits
from .procs import ProcessOutcome, ProcessTable

log = logging.getLogger(__name__)

#: Torc's time-series tables, and the node's (Torc 0.23's system_resource_samples).
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS job_resource_samples (id INTEGER PRIMARY KEY, job_id INTEGER,"
    " timestamp REAL, cpu_percent REAL, memory_bytes INTEGER, num_processes INTEGER)",
    "CREATE TABLE IF NOT EXISTS job_metadata (job_id INTEGER PRIMARY KEY, job_name TEXT)",
    "CREATE TABLE IF NOT EXISTS system_resource_samples (id INTEGER PRIMARY KEY, timestamp "
    "REAL, cpu_percent REAL, memory_bytes INTEGER, total_memory_bytes INTEGER)",
    "CREATE INDEX IF NOT EXISTS job_resource_samples_job ON job_resource_samples (job_id)",
)


def metrics_db_path(output_dir: Path, workflow_id: int, run_id: int,
                    hostname: str | None = None) -> Path:
    """Torc's file name for one runner host's samples of one workflow run."""
    host = hostname or socket.gethostname()
    return output_dir / METRICS_DIR / f"resource_metrics_{host}_{workflow_id}_{run_id}.db"


# ------------------------------------------------------------------------------------------
# Arithmetic (pure)


def cpu_percent(cpu_s: float, prev_cpu_s: float, now: float, prev_time: float) -> float:
    """CPU percent over an interval from cumulative CPU seconds (100 = one core busy). A sum
    that shrank (a process left the tree before its parent reaped it) counts as idle."""
    wall = now - prev_time
    if wall <= 0:
        return 0.0
    return max(0.0, (cpu_s - prev_cpu_s) / wall * 100.0)


@dataclass(slots=True)
class Stats:
    """A job's running peak and average (one sample per tick)."""

    samples: int = 0
    peak_memory: int = 0
    sum_memory: int = 0
    peak_cpu: float = 0.0
    sum_cpu: float = 0.0

    def add(self, memory_bytes: int, cpu: float) -> None:
        self.samples += 1
        self.sum_memory += memory_bytes
        self.peak_memory = max(self.peak_memory, memory_bytes)
        self.sum_cpu += cpu
        self.peak_cpu = max(self.peak_cpu, cpu)

    def result_fields(self) -> dict[str, Any]:
        """The result's summary fields; empty when the job was never sampled (it ended within
        its first interval), so its result says nothing rather than zero."""
        if not self.samples:
            return {}
        return {"peak_memory_bytes": self.peak_memory,
                "avg_memory_bytes": self.sum_memory // self.samples,
                "peak_cpu_percent": round(self.peak_cpu, 2),
                "avg_cpu_percent": round(self.sum_cpu / self.samples, 2)}


@dataclass(frozen=True, slots=True)
class TreeSample:
    """One job tree at one instant: cumulative CPU seconds, resident bytes, processes."""

    cpu_s: float
    memory_bytes: int
    processes: int


def tree_pids(roots: Iterable[int], parents: Mapping[int, int]) -> dict[int, list[int]]:
    """Each root's descendants (itself first), from a pid -> parent pid map. A pid is in at
    most one tree (a job's descendants are never another job's)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, list[int]] = {}
    for root in roots:
        if root not in parents:
            continue  # gone
        members, stack = [], [root]
        while stack:
            pid = stack.pop()
            members.append(pid)
            stack.extend(children.get(pid, ()))
        out[root] = members
    return out


# ------------------------------------------------------------------------------------------
# Reading /proc (worker thread)


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def proc_table() -> dict[int, tuple[int, float, int, bool]] | None:
    """Linux: pid -> (parent pid, CPU seconds with reaped children's, resident bytes,
    zombie?) of every process, from one read of each ``/proc/PID/stat`` (None elsewhere).

    Why not psutil here: it reads stat for the parent pids, then stat and statm again per
    tree member, through objects; one read of the same file has all of it, and this scan is
    most of the monitor's cost (measured: 18 ms a tick through psutil for 64 jobs on 2 cores,
    see BENCHMARKS.md)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    out: dict[int, tuple[int, float, int, bool]] = {}
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
            # after "pid (comm) ": a name may hold spaces and parentheses
            rest = data[data.rfind(b")") + 2:].split()
            ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
            out[int(name)] = (int(rest[1]), ticks / _TICKS, int(rest[21]) * _PAGE,
                              rest[0] == b"Z")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return out


def read_trees(roots: Iterable[int]) -> dict[int, TreeSample]:
    """A :class:`TreeSample` per root pid still running: one scan of ``/proc`` on Linux
    (:func:`proc_table`), psutil elsewhere. A zombie's CPU time counts (its parent has not
    folded it in yet), the zombie itself does not."""
    table = proc_table()
    if table is None:
        return _read_trees_psutil(roots)
    out: dict[int, TreeSample] = {}
    parents = {pid: row[0] for pid, row in table.items()}
    for root, members in tree_pids(roots, parents).items():
        cpu, rss, count = 0.0, 0, 0
        for pid in members:
            _, cpu_s, mem, zombie = table[pid]
            cpu += cpu_s
            rss += mem
            count += not zombie
        if count:
            out[root] = TreeSample(cpu, rss, count)
    return out


def _read_trees_psutil(roots: Iterable[int]) -> dict[int, TreeSample]:
    parents: dict[int, int] = {}
    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info.get("ppid")
        if ppid is not None:
            parents[proc.pid] = ppid
    out: dict[int, TreeSample] = {}
    for root, members in tree_pids(roots, parents).items():
        cpu, rss, count = 0.0, 0, 0
        for pid in members:
            try:
                proc = psutil.Process(pid)
                with proc.oneshot():
                    t = proc.cpu_times()
                    mem = proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            cpu += t.user + t.system + t.children_user + t.children_system
            rss += mem
            count += 1
        if count:
            out[root] = TreeSample(cpu, rss, count)
    return out


@dataclass(frozen=True, slots=True)
class NodeSample:
    cpu_percent: float  # of the whole node (100: every core busy), as psutil says
    memory_bytes: int  # in use: total - available
    total_memory_bytes: int


def read_node() -> NodeSample:
    vm = psutil.virtual_memory()
    return NodeSample(psutil.cpu_percent(interval=None), int(vm.total - vm.available),
                      int(vm.total))


class MetricsDB:
    """Torc's time-series database, written from the monitor's worker thread (one
    transaction per tick; several runners of one host may share the file: SQLite locks)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._named: set[int] = set()

    def write(self, jobs: list[tuple[int, float, float, int, int]],
              names: Mapping[int, str], node: NodeSample | None, now: float) -> None:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            for statement in SCHEMA:
                self._conn.execute(statement)
        new = [(jid, names.get(jid, "")) for jid, *_ in jobs if jid not in self._named]
        with self._conn:
            if new:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO job_metadata (job_id, job_name) VALUES (?, ?)", new)
                self._named.update(jid for jid, _ in new)
            if jobs:
                self._conn.executemany(
                    "INSERT INTO job_resource_samples (job_id, timestamp, cpu_percent, "
                    "memory_bytes, num_processes) VALUES (?, ?, ?, ?, ?)", jobs)
            if node is not None:
                self._conn.execute(
                    "INSERT INTO system_resource_samples (timestamp, cpu_percent, memory_bytes,"
                    " total_memory_bytes) VALUES (?, ?, ?, ?)",
                    (now, node.cpu_percent, node.memory_bytes, node.total_memory_bytes))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# ------------------------------------------------------------------------------------------
# The runner's side


async def plot_if_asked(monitor: JobMonitor) -> list[Path]:
    """``resource_monitor.generate_plots`` (``exec --generate-plots``): once the runner is
    done, Torc's plot files from its time-series database, next to it (plots.py). A plot that
    cannot be made is said on stderr; the run's outcome does not change."""
    db = monitor.db_path
    if not monitor.config.generate_plots or db is None or not db.exists():
        return []
    from .exits import InputError
    from .plots import write_plots

    try:
        written = await trio.to_thread.run_sync(write_plots, [db], db.parent)
    except InputError as exc:
        print(f"torc-trio: no plots: {exc}", file=sys.stderr)
        return []
    print(f"torc-trio: {len(written)} plots in {db.parent}/", file=sys.stderr)
    return written


@dataclass(slots=True)
class _Tracked:
    token: int
    name: str
    started: float  # time.monotonic()
    limits: JobLimits
    deadline: float  # trio clock; inf: none
    prev: tuple[float, float] | None = None  # (cpu_s, monotonic) of the last sample
    stats: Stats = field(default_factory=Stats)
    killed_for: str | None = None


class JobMonitor:
    """Samples the runner's jobs and enforces direct mode's limits (use from the Trio thread;
    :meth:`run` is its task). With monitoring off and no limits it tracks nothing, and the
    runner does not start :meth:`run`."""

    def __init__(self, procs: ProcessTable, config: ResourceMonitor, *, enforce_limits: bool,
                 db_path: Path | None, termination_signal: int = int(signal.SIGTERM),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.procs = procs
        self.config = config
        self.enforce = enforce_limits
        self.termination_signal = termination_signal
        self._db = MetricsDB(db_path) if db_path is not None and config.time_series else None
        self._jobs: dict[int, _Tracked] = {}
        self._deadlines = 0  # tracked jobs with a runtime limit
        self._clock = clock
        self._alarm = Alarm()
        self.node = Stats()
        self.errors = 0

    @property
    def needed(self) -> bool:
        """Whether the runner should start :meth:`run`."""
        return self.config.active or self.enforce

    @property
    def db_path(self) -> Path | None:
        return None if self._db is None else self._db.path

    def want_pid(self, job: Mapping[str, Any]) -> bool:
        """Whether a job about to start is watched (and so its pid is needed)."""
        return self.config.jobs or job_limits(job, self.enforce).any

    def started(self, jid: int, token: int, job: Mapping[str, Any]) -> None:
        limits = job_limits(job, self.enforce)
        if not (self.config.jobs or limits.any):
            return
        deadline = math.inf
        if limits.runtime_s is not None:
            deadline = trio.current_time() + limits.runtime_s
            self._deadlines += 1
            self._alarm.bring_forward(deadline)
        self._jobs[jid] = _Tracked(token, str(job.get("name", "")), self._clock(), limits,
                                   deadline)

    def finish(self, jid: int, outcome: ProcessOutcome, return_code: int, terminated: bool,
               *, slurm: bool = False) -> tuple[int, bool, dict[str, Any]]:
        """A job's process ended: (return code, terminated?, the result's fields: the summary
        metrics and failure_cause). A job the monitor killed for memory failed with 137."""
        tracked = self._jobs.pop(jid, None)
        killed_for = None
        info: dict[str, Any] = {}
        if tracked is not None:
            if tracked.deadline != math.inf:
                self._deadlines -= 1
            killed_for = tracked.killed_for
            if self.config.jobs:
                info = tracked.stats.result_fields()
        if killed_for == "oom":
            return_code, terminated = OOM_EXIT_CODE, False
        elif killed_for == "timeout":
            terminated = True
        info["failure_cause"] = failure_cause(outcome, return_code, terminated, killed_for,
                                              slurm=slurm)
        return return_code, terminated, info

    async def run(self) -> None:
        interval = self.config.sample_interval_s
        if self.config.compute_node:
            psutil.cpu_percent(interval=None)  # starts psutil's node CPU interval
        next_tick = trio.current_time() + interval
        try:
            while True:
                await self._alarm.sleep_until(min(next_tick, self._next_deadline()))
                now = trio.current_time()
                self._enforce_runtimes(now)
                if now >= next_tick:
                    next_tick = max(next_tick + interval, now)
                    await self._tick()
        finally:
            if self._db is not None:
                self._db.close()

    # --------------------------------------------------------------------------------------

    def _next_deadline(self) -> float:
        if not self._deadlines:
            return math.inf
        return min((t.deadline for t in self._jobs.values()), default=math.inf)

    def _enforce_runtimes(self, now: float) -> None:
        if not self._deadlines:
            return
        for tracked in self._jobs.values():
            if tracked.deadline <= now:
                # once: the process table sends SIGKILL after the grace period
                tracked.deadline = math.inf
                self._deadlines -= 1
                if tracked.killed_for is None:
                    tracked.killed_for = "timeout"
                    self.procs.terminate(tracked.token, signum=self.termination_signal)

    async def _tick(self) -> None:
        # A snapshot for the worker thread: job id -> (pid, cpu seconds and time before).
        pids: dict[int, tuple[int, float, float]] = {}
        for jid, tracked in self._jobs.items():
            pid = self.procs.pid_of(tracked.token)
            if pid is not None and tracked.killed_for != "oom":
                pids[jid] = (pid, *(tracked.prev or (0.0, tracked.started)))
        node = self.config.compute_node
        if not pids and not node:
            return
        names = {jid: self._jobs[jid].name for jid in pids}
        try:
            trees, node_sample, stamp = await trio.to_thread.run_sync(
                self._sample, pids, names, node)
        except (OSError, sqlite3.Error, psutil.Error) as exc:
            self.errors += 1
            if self.errors == 1:  # monitoring must never stop the jobs: say it once
                log.warning("resource monitor: %s", exc)
            return
        if node_sample is not None:
            self.node.add(node_sample.memory_bytes, node_sample.cpu_percent)
        for jid, (tree, cpu) in trees.items():
            job = self._jobs.get(jid)
            if job is None:  # ended while the thread read it
                continue
            job.prev = (tree.cpu_s, stamp)
            if self.config.jobs:
                job.stats.add(tree.memory_bytes, cpu)
            limit = job.limits.memory_bytes
            if limit is not None and tree.memory_bytes > limit and job.killed_for is None:
                job.killed_for = "oom"
                self.procs.terminate(job.token, grace_s=0, signum=signal.SIGKILL)

    def _sample(self, pids: dict[int, tuple[int, float, float]], names: dict[int, str],
                node: bool) -> tuple[dict[int, tuple[TreeSample, float]], NodeSample | None,
                                     float]:
        """Worker thread: read the trees (and node), write the time series; (job id ->
        (sample, CPU percent)). Touches only the snapshot it is given, and the database."""
        stamp = self._clock()
        samples = read_trees(pid for pid, _, _ in pids.values())
        node_sample = read_node() if node else None
        out: dict[int, tuple[TreeSample, float]] = {}
        rows: list[tuple[int, float, float, int, int]] = []
        now = time.time()
        for jid, (pid, prev_cpu, prev_t) in pids.items():
            tree = samples.get(pid)
            if tree is None:  # ended
                continue
            cpu = cpu_percent(tree.cpu_s, prev_cpu, stamp, prev_t)
            out[jid] = (tree, cpu)
            rows.append((jid, now, round(cpu, 2), tree.memory_bytes, tree.processes))
        cfg = self.config
        if self._db is not None:
            self._db.write(
                rows if cfg.jobs and cfg.granularity == "time_series" else [], names,
                node_sample if cfg.compute_node_granularity == "time_series" else None, now)
        return out, node_sample, stamp


def for_workflow(workflow: Mapping[str, Any], execution: Any, procs: ProcessTable, *,
                 output_dir: Path, override: ResourceMonitor | None = None) -> JobMonitor:
    """The monitor of a runner of ``workflow`` (as ``GET /workflows/{id}`` returns it) whose
    jobs start as ``execution`` (:class:`torc_cli.srun.Execution`) says.

    Limits are enforced in direct mode only (Slurm enforces a step's). In slurm mode a job's
    processes run under slurmstepd, not below its srun: they are not sampled here (sacct's
    MaxRSS measures them; ``torc-trio slurm sacct``), the node still is."""
    settings = workflow.get("spec_settings") or {}
    config = override if override is not None else resource_monitor_of(
        settings.get("resource_monitor") if isinstance(settings, Mapping) else None,
        f"workflow {workflow.get('id', '?')}: resource_monitor")
    direct = execution.mode == "direct"
    if not direct:
        config = replace(config, jobs=False)
    db_path = None
    if config.time_series:
        db_path = metrics_db_path(output_dir, int(workflow["id"]),
                                  int(workflow.get("run_id") or 1))
    return JobMonitor(procs, config, enforce_limits=direct and execution.limit_resources,
                      db_path=db_path, termination_signal=execution.termination_signal)
