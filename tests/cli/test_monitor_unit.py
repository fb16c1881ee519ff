"""The resource monitor's arithmetic and rules, and its reading of a real process tree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from torc_cli.limits import NO_LIMITS, JobLimits, failure_cause, job_limits
from torc_cli.monitor import (
    MetricsDB,
    NodeSample,
    Stats,
    _read_trees_psutil,
    cpu_percent,
    metrics_db_path,
    read_node,
    read_trees,
    tree_pids,
)
from torc_cli.procs import ProcessOutcome, describe_exit, exit_code
from torc_core.errors import SpecError
from torc_core.settings import MONITOR_OFF, ResourceMonitor, resource_monitor_of


def test_cpu_percent_is_growth_of_cpu_time_over_wall_time() -> None:
    assert cpu_percent(3.0, 1.0, 12.0, 10.0) == pytest.approx(100.0)  # one core
    assert cpu_percent(4.0, 0.0, 1.0, 0.0) == pytest.approx(400.0)  # four cores
    assert cpu_percent(1.0, 2.0, 11.0, 10.0) == 0.0  # a process left the tree: idle
    assert cpu_percent(5.0, 0.0, 10.0, 10.0) == 0.0  # no wall time


def test_stats_peak_and_average() -> None:
    s = Stats()
    assert s.result_fields() == {}  # never sampled: no numbers
    for memory, cpu in ((100, 50.0), (300, 150.0), (200, 100.0)):
        s.add(memory, cpu)
    assert s.result_fields() == {"peak_memory_bytes": 300, "avg_memory_bytes": 200,
                                 "peak_cpu_percent": 150.0, "avg_cpu_percent": 100.0}


def test_tree_pids_follow_parents() -> None:
    parents = {10: 1, 11: 10, 12: 11, 13: 10, 20: 1, 21: 20, 30: 1}
    trees = tree_pids([10, 20, 99], parents)
    assert sorted(trees[10]) == [10, 11, 12, 13] and trees[10][0] == 10
    assert sorted(trees[20]) == [20, 21]
    assert 99 not in trees  # gone


def test_exit_codes_are_128_plus_the_signal() -> None:
    child = subprocess.Popen(["sleep", "30"])
    child.send_signal(signal.SIGKILL)
    _, status = os.waitpid(child.pid, 0)
    child.returncode = 0  # reaped here
    assert exit_code(status) == (137, signal.SIGKILL)
    done = subprocess.Popen(["sh", "-c", "exit 3"])
    _, status = os.waitpid(done.pid, 0)
    done.returncode = 3
    assert exit_code(status) == (3, None)
    assert describe_exit(137) == "exit code 137 (killed by SIGKILL)"
    assert describe_exit(143) == "exit code 143 (killed by SIGTERM)"
    assert describe_exit(1) == "exit code 1" and describe_exit(128) == "exit code 128"
    assert describe_exit(-15) == "killed by SIGTERM"  # results stored before 128 + N


def test_limits_only_for_what_a_job_states() -> None:
    mib = 1024 * 1024
    # Torc's defaults (1 MiB, one minute) are what a job without requirements gets
    assert job_limits({"memory_bytes": mib, "runtime_s": 60}, True) == NO_LIMITS
    assert job_limits({"memory_bytes": 100 * mib, "runtime_s": 60}, True) == JobLimits(
        memory_bytes=100 * mib)
    assert job_limits({"memory_bytes": mib, "runtime_s": 2}, True) == JobLimits(runtime_s=2)
    assert job_limits({"memory_bytes": 100 * mib, "runtime_s": 2}, False) == NO_LIMITS


def test_failure_causes() -> None:
    def out(code: int, sig: int | None = None) -> ProcessOutcome:
        return ProcessOutcome(code, False, 1.0, signal=sig)

    assert failure_cause(out(0), 0, False, None) is None
    assert failure_cause(out(2), 2, False, None) == "exit"
    assert failure_cause(out(137), 137, False, None) == "exit"  # a shell said 137
    assert failure_cause(out(139, 11), 139, False, None) == "signal"
    assert failure_cause(out(137, 9), 137, False, "oom") == "oom"
    assert failure_cause(out(143, 15), 143, True, "timeout") == "timeout"
    assert failure_cause(out(137), 137, False, None, slurm=True) == "oom"  # srun's 137
    assert failure_cause(out(143), 152, True, None, slurm=True) == "timeout"


def test_resource_monitor_both_shapes() -> None:
    assert resource_monitor_of(None) == ResourceMonitor()  # Torc: on, summary, 10 s
    flat = resource_monitor_of({"enabled": True, "granularity": "time_series",
                                "sample_interval_seconds": 5, "generate_plots": True})
    assert (flat.jobs, flat.granularity, flat.sample_interval_s, flat.generate_plots,
            flat.compute_node) == (True, "time_series", 5.0, True, False)
    nested = resource_monitor_of({"sample_interval_seconds": 2, "jobs": {"enabled": True},
                                  "compute_node": {"granularity": "time_series"}})
    assert (nested.jobs, nested.granularity, nested.compute_node,
            nested.compute_node_granularity) == (True, "summary", True, "time_series")
    assert nested.time_series
    # the nested block wins over the flat fields; written forms are normalized
    both = resource_monitor_of({"enabled": False, "granularity": "TimeSeries",
                                "jobs": {"enabled": True}})
    assert both.jobs and both.granularity == "time_series"
    assert resource_monitor_of({"enabled": False}) == MONITOR_OFF
    assert not MONITOR_OFF.active
    with pytest.raises(SpecError) as err:
        resource_monitor_of({"sample_interval_seconds": "5", "jobs": []}, "wf 3")
    assert list(err.value.errors) == [
        "wf 3: sample_interval_seconds: expected a number of seconds, got str",
        "wf 3: jobs: expected a mapping, got list"]


def test_read_trees_counts_every_descendant(tmp_path: Path) -> None:
    """A real tree: bash, a Python child holding ~50 MB, and a sleeping grandchild."""
    script = ("import subprocess, time; b = bytearray(50 * 2**20); "
              "p = subprocess.Popen(['sleep', '30']); print('ready', flush=True); time.sleep(30)")
    job = subprocess.Popen(["bash", "-c", f"{sys.executable} -c \"{script}\"; true"],
                           stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert job.stdout is not None and job.stdout.readline().strip() == "ready"
        sample = read_trees([job.pid])[job.pid]
        assert sample.processes == 3
        assert sample.memory_bytes >= 50 * 2**20
        assert sample.cpu_s >= 0
        assert read_trees([2**22 + 7]) == {}  # no such process
        # the psutil path (systems without /proc) sees the same tree
        other = _read_trees_psutil([job.pid])[job.pid]
        assert other.processes == 3 and other.memory_bytes >= 50 * 2**20
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()


def test_metrics_db_and_node(tmp_path: Path) -> None:
    node = read_node()
    assert node.total_memory_bytes >= node.memory_bytes > 0
    path = metrics_db_path(tmp_path, 3, 2, hostname="n1")
    assert path == tmp_path / "resource_utilization" / "resource_metrics_n1_3_2.db"
    db = MetricsDB(path)
    now = time.time()
    db.write([(7, now, 50.0, 1000, 2)], {7: "a"}, NodeSample(10.0, 5, 10), now)
    db.write([(7, now + 1, 60.0, 2000, 2)], {7: "a"}, None, now + 1)
    db.close()
    import sqlite3

    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT job_id, cpu_percent, memory_bytes, num_processes FROM "
                            "job_resource_samples ORDER BY id").fetchall()
        assert rows == [(7, 50.0, 1000, 2), (7, 60.0, 2000, 2)]
        assert conn.execute("SELECT * FROM job_metadata").fetchall() == [(7, "a")]
        assert conn.execute("SELECT COUNT(*) FROM system_resource_samples").fetchone() == (1,)
