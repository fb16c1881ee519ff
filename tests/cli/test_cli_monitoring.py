"""Resource monitoring and direct mode's limits, through the real command: real jobs sampled
by the runner, a real standalone server and SQLite file, results read back with
`results list -f json`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from cli_helpers import torc, torc_json

HOLD_300MB = 'python3 -c "b=bytearray(300*2**20); import time; time.sleep(4)"'
MB = 1000 * 1000


def _spec(tmp_path: Path, doc: dict[str, Any], name: str = "wf.json") -> str:
    (tmp_path / name).write_text(json.dumps(doc))
    return name


def _results(tmp_path: Path) -> dict[str, dict[str, Any]]:
    rows = torc_json(tmp_path, "-s", "results", "list", "1")
    return {r["job_name"]: r for r in rows}


def test_summary_metrics_of_a_job_holding_300_mb(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {
        "name": "mem", "resource_monitor": {"granularity": "summary",
                                            "sample_interval_seconds": 1},
        "jobs": [{"name": "hold", "command": HOLD_300MB},
                 {"name": "quick", "command": "true"}]})
    torc(tmp_path, "-s", "run", spec, check=True)
    rows = _results(tmp_path)
    hold = rows["hold"]
    assert hold["status"] == "completed" and hold["failure_cause"] is None
    assert hold["peak_memory_bytes"] >= 280 * MB, hold
    assert 0 < hold["avg_memory_bytes"] <= hold["peak_memory_bytes"]
    assert hold["peak_cpu_percent"] >= hold["avg_cpu_percent"] >= 0
    # ended before its first sample: no numbers rather than zeros
    assert rows["quick"]["peak_memory_bytes"] is None
    table = torc(tmp_path, "-s", "results", "list", "1", check=True).stdout
    assert "peak_mem" in table and "peak_cpu" in table


def test_a_job_over_its_memory_is_killed_with_137(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {
        "name": "oom", "resource_monitor": {"sample_interval_seconds": 1},
        "execution_config": {"mode": "direct", "limit_resources": True},
        "resource_requirements": [{"name": "small", "memory": "100m", "runtime": "PT5M"}],
        "jobs": [{"name": "hog", "command": HOLD_300MB, "resource_requirements": "small"},
                 # no requirements: Torc's 1 MiB / 1 minute defaults are no limits
                 {"name": "free", "command": HOLD_300MB}]})
    run = torc(tmp_path, "-s", "run", spec)
    assert run.returncode == 1, run.stdout + run.stderr
    rows = _results(tmp_path)
    hog = rows["hog"]
    assert (hog["status"], hog["return_code"], hog["failure_cause"]) == ("failed", 137, "oom")
    assert hog["peak_memory_bytes"] > 100 * 2**20
    assert rows["free"]["status"] == "completed", rows["free"]
    assert "exit code 137 (killed by SIGKILL)" in run.stdout + run.stderr


def test_a_job_past_its_runtime_is_terminated(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {
        "name": "slow", "resource_monitor": {"enabled": False},
        "resource_requirements": [{"name": "short", "runtime": "PT2S"}],
        "jobs": [{"name": "sleeper", "command": "sleep 30", "resource_requirements": "short"}]})
    run = torc(tmp_path, "-s", "run", spec)
    assert run.returncode == 1, run.stdout + run.stderr
    row = _results(tmp_path)["sleeper"]
    assert (row["status"], row["failure_cause"]) == ("terminated", "timeout"), row
    assert row["return_code"] == 143  # SIGTERM, the default termination_signal
    assert row["peak_memory_bytes"] is None  # monitoring off: limits only


def test_limit_resources_false_lets_a_job_run_over(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {
        "name": "nolimit", "resource_monitor": {"sample_interval_seconds": 1},
        "execution_config": {"limit_resources": False},
        "resource_requirements": [{"name": "r", "memory": "100m", "runtime": "PT1S"}],
        "jobs": [{"name": "hog", "command": HOLD_300MB, "resource_requirements": "r"}]})
    torc(tmp_path, "-s", "run", spec, check=True)
    assert _results(tmp_path)["hog"]["peak_memory_bytes"] >= 280 * MB


def test_time_series_database_as_torc_lays_it_out(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {
        "name": "ts", "resource_monitor": {
            "sample_interval_seconds": 1, "jobs": {"granularity": "time_series"},
            "compute_node": {"enabled": True, "granularity": "time_series"}},
        "jobs": [{"name": f"j{k}", "command": "sleep 4"} for k in range(2)]})
    torc(tmp_path, "-s", "run", spec, check=True)
    dbs = list((tmp_path / "torc_output" / "resource_utilization").glob(
        "resource_metrics_*_1_1.db"))
    assert len(dbs) == 1, dbs
    with sqlite3.connect(dbs[0]) as conn:
        counts = dict(conn.execute(
            "SELECT job_id, COUNT(*) FROM job_resource_samples GROUP BY job_id"))
        names = dict(conn.execute("SELECT job_id, job_name FROM job_metadata"))
        node = conn.execute("SELECT COUNT(*), MIN(total_memory_bytes) FROM "
                            "system_resource_samples").fetchone()
        procs = conn.execute("SELECT MIN(num_processes), MIN(memory_bytes) FROM "
                             "job_resource_samples").fetchone()
    assert sorted(names.values()) == ["j0", "j1"]
    assert len(counts) == 2 and all(n >= 3 for n in counts.values()), counts
    assert node[0] >= 3 and node[1] > 0
    assert procs[0] >= 1 and procs[1] > 0
    # summary fields come with time_series too
    assert all(r["peak_memory_bytes"] for r in _results(tmp_path).values())


def test_exec_monitor_time_series_with_plots_in_one_line(tmp_path: Path) -> None:
    out = torc(tmp_path, "-s", "exec", "-c", "sleep 3.5", "--monitor", "time-series",
               "--sample-interval-seconds", "1", "--generate-plots", check=True)
    assert out.returncode == 0
    where = tmp_path / "torc_output" / "resource_utilization"
    dbs = list(where.glob("*.db"))
    assert len(dbs) == 1
    with sqlite3.connect(dbs[0]) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM job_resource_samples").fetchone()
    assert n >= 3
    wf = torc_json(tmp_path, "-s", "workflows", "get", "1")
    assert wf["spec_settings"]["resource_monitor"]["granularity"] == "time_series"
    assert wf["spec_settings"]["resource_monitor"]["generate_plots"] is True
    # one job: its own plot and the summary (the all-jobs overviews need two or more)
    assert sorted(p.name for p in where.glob("*.html")) == [
        "resource_plot_job_1.html", "resource_plot_summary.html"]
    assert "plots in" in out.stderr


def test_no_resource_monitoring(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {"name": "off", "resource_monitor": {
        "granularity": "time_series", "sample_interval_seconds": 1},
        "jobs": [{"name": "a", "command": "sleep 2.5"}]})
    torc(tmp_path, "-s", "run", spec, "--no-resource-monitoring", check=True)
    assert _results(tmp_path)["a"]["peak_memory_bytes"] is None
    assert not (tmp_path / "torc_output" / "resource_utilization").exists()
    wf = torc_json(tmp_path, "-s", "workflows", "get", "1")
    assert wf["spec_settings"]["resource_monitor"] == {"enabled": False}


def test_bad_resource_monitor_is_refused_with_where(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {"name": "bad", "resource_monitor": {
        "granularity": "hourly", "sample_interval_seconds": 0, "jobs": {"on": True}},
        "jobs": [{"name": "a", "command": "true"}]})
    out = torc(tmp_path, "create", "--dry-run", spec)
    assert out.returncode == 2
    assert "resource_monitor: granularity: must be one of summary, time_series; got " \
           "'hourly'" in out.stderr
    assert "resource_monitor: sample_interval_seconds: must be more than 0" in out.stderr
    assert "resource_monitor: jobs: unknown key 'on'" in out.stderr
