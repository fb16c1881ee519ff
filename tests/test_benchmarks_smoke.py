"""Every benchmark runs at a tiny size and prints its JSON, so none of them can rot.

Timings are not asserted (machines are noisy); only that each benchmark works and reports the
keys BENCHMARKS.md describes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "benchmarks"


def run_bench(name: str, *args: str, timeout: float = 180) -> dict[str, object]:
    proc = subprocess.run([sys.executable, str(BENCH / name), *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    start = proc.stdout.find("{")
    assert start >= 0, f"{name} printed no JSON object:\n{proc.stdout[-2000:]}"
    return dict(json.loads(proc.stdout[start:]))


def test_bench_core_smoke() -> None:
    out = run_bench("bench_core.py", "--jobs", "2000", "--batch", "100")
    assert out["jobs"] == 2000
    for key in ("build_s", "run_s", "transitions_per_s", "peak_rss_mb"):
        assert key in out


def test_bench_server_smoke() -> None:
    out = run_bench("bench_server.py", "--jobs", "200", "--batch1-jobs", "20", "--runners", "2")
    results = out["results"]
    assert isinstance(results, list)
    assert [r["batch"] for r in results] == [1, 32, 256]
    for r in results:
        assert {"jobs_per_s", "p50_ms", "p99_ms"} <= set(r)


def test_bench_burst_smoke() -> None:
    out = run_bench("bench_burst.py", "--allocations", "20", "--jobs", "300", "--run-ms", "5",
                    "--timeout", "60")
    assert out["allocations"] == 20 and out["jobs"] == 300
    for key in ("first_claim_p50_s", "first_claim_p99_s", "first_claim_max_s",
                "allocations_found_nothing", "latency_p50_ms", "latency_p99_ms", "status_503",
                "retries", "drain_s", "jobs_per_s"):
        assert key in out
    # Correctness is asserted (timings never are).
    assert out["failed_requests"] == 0
    assert out["double_claims"] == 0
    assert out["lost_completions"] == 0
    assert out["completions_acknowledged"] == 300 and out["is_complete"] is True


def test_bench_scale_smoke() -> None:
    out = run_bench("bench_scale.py", "--jobs", "4000", "--rounds", "4", "--batch", "500",
                    "--modes", "file,memory", "--timeout", "60")
    assert out["jobs"] == 4000 and out["rounds"] == 4
    for mode in ("file", "memory"):
        m = out[mode]
        assert isinstance(m, dict)
        for key in ("create_s", "drain_s", "server_peak_rss_mb", "db_mb"):
            assert key in m
        assert m["completed"] == 4000 and m["barriers"] == 3
    assert "snapshot_s" in out["memory"]  # type: ignore[operator]


def test_bench_exec_smoke() -> None:
    args = ["--jobs", "40", "--parallel", "4", "--skip-hq"]
    if shutil.which("parallel") is None:
        args.append("--skip-gnu")
    out = run_bench("bench_exec.py", *args)
    assert out["torc_jobs_recorded"] == 40
    assert "ratio_torc_over_xargs" in out


def test_bench_exec_stdio_modes_smoke() -> None:
    out = run_bench("bench_exec.py", "--jobs", "30", "--parallel", "4", "--skip-hq",
                    "--skip-gnu", "--skip-xargs", "--stdio", "separate,combined,none",
                    "--repeat", "2")
    files = {m: out[f"torc_{m}"]["stdio_files"] for m in ("separate", "combined", "none")}
    assert files == {"separate": 60, "combined": 30, "none": 0}
    assert all(out[f"torc_{m}"]["recorded_completed"] == 30 for m in files)
    assert len(out["ratio_none_over_separate_rounds"]) == 2


def test_bench_noisy_smoke() -> None:
    out = run_bench("bench_noisy.py", "--jobs", "3000", "--regex-jobs", "50", "--timeout", "60")
    assert out["jobs"] == 3000
    assert out["baseline"]["pings"] > 0  # type: ignore[index]
    scenarios = out["scenarios"]
    assert isinstance(scenarios, dict)
    assert set(scenarios) == {"create", "dry_run", "regex", "jobs_page", "status_filter",
                              "results_page"}
    for name, s in scenarios.items():
        assert s["status"] in ("200", "201"), (name, s)
        assert {"heavy_s", "p50_ms", "p99_ms", "max_ms"} <= set(s)


@pytest.mark.parametrize("name", sorted(p.name for p in BENCH.glob("bench_*.py")))
def test_every_benchmark_has_help(name: str) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / name), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "usage" in proc.stdout


def test_bench_monitor_smoke() -> None:
    out = run_bench("bench_monitor.py", "--jobs", "100", "--parallel", "8", "--rounds", "1",
                    "--long-jobs", "3", "--long-seconds", "2.5")
    throughput = out["throughput"]
    assert isinstance(throughput, dict) and "ratio_on_over_off" in throughput
    sampler = out["sampler"]
    assert isinstance(sampler, dict)
    assert sampler["samples_checked"] == 3  # every long job was measured
    for key in ("on_cpu_s", "off_cpu_s", "sampler_cpu_percent_of_core"):
        assert key in sampler


def test_bench_dash_smoke() -> None:
    if shutil.which("chromium") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but there is no chromium (scripts/ci-install-browser.sh)")
        pytest.skip("no chromium on PATH")
    out = run_bench("bench_dash.py", "--jobs", "2000", "--rate", "400", "--seconds", "2")
    assert out["jobs"] == 2000 and out["page_errors"] == []
    first = out["first_render_ms"]
    assert isinstance(first, dict) and set(first) == {"list_page", "workflow_page"}
    feed = out["feed"]
    assert isinstance(feed, dict)
    # The page ends where the server is (it never falls behind for good).
    assert feed["page_done"] == feed["server_done_jobs"] > 0
    for key in ("page_main_thread_busy", "longest_task_ms", "renders", "catch_up_s"):
        assert key in feed


def test_bench_job_queries_smoke() -> None:
    out = run_bench("bench_job_queries.py", "--jobs", "3000", "--repeat", "1", "--limit", "20")
    modes = out["modes"]
    assert out["jobs"] == 3000 and isinstance(modes, dict)
    assert {"id", "name_sort", "name_filter", "status_sort"} <= set(modes)
    for m in modes.values():
        assert {"total", "first_ms", "repeat_p50_ms", "repeat_max_ms"} <= set(m)


def test_bench_map_smoke() -> None:
    out = run_bench("bench_map.py", "--calls", "6", "--parallel", "2", "--chunk-size", "4",
                    "--skip-hq", "--timeout", "120", timeout=280)
    assert out["benchmark"] == "map" and out["calls"] == 6
    for kind in ("torc", "torc_chunk"):
        torc = out[kind]
        assert isinstance(torc, dict), out
        assert torc.get("ok") is True and torc["values_ok"] is True, torc
        for key in ("wall_s", "calls_per_s"):
            assert key in torc
    assert "python_start_ms" in out and out["ratio_torc_over_hq"] is None
