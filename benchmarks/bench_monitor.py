"""What the resource monitor costs: throughput of short jobs, and the runner's CPU with long ones.

Two measurements, each comparing monitoring on and off in the same run (rounds alternate, so
a machine getting busier affects both sides alike):

* **throughput** -- N ``true`` jobs (default 10,000), ``torc-trio -s exec -C FILE -j P``
  (standalone: its own server and SQLite file), once with ``--sample-interval-seconds 1``
  (monitoring on, summary granularity: every job's pid is reported and the monitor ticks
  every second) and once with ``--no-resource-monitoring``. Wall time end to end.
  ``ratio_on_over_off`` is the median wall time on / off (target <= 1.05).
* **sampler CPU** -- M concurrent jobs of S seconds (default 64 x ``sleep 20``), sampled every
  second, on vs off. The runner's own CPU time (the ``torc-trio`` process, user + system,
  its threads included, not its children) is read from /proc while it runs; the last
  reading before it exits is its total. ``sampler_cpu_percent_of_core`` is (on - off) /
  duration x 100 (target <= 1).

Prints ONE JSON object::

    {"jobs", "parallel", "rounds", "cpus",
     "throughput": {"on_wall_s": [...], "off_wall_s": [...], "on_median_s",
                    "off_median_s", "ratio_on_over_off"},
     "sampler": {"jobs", "seconds", "on_cpu_s", "off_cpu_s", "on_wall_s", "off_wall_s",
                 "sampler_cpu_percent_of_core", "samples_checked"}}

    python benchmarks/bench_monitor.py [--jobs 10000] [--parallel 32] [--rounds 3]
        [--long-jobs 64] [--long-seconds 20] [--timeout 1800] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

TORC = [sys.executable, "-m", "torc_cli.main"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TORC_")}


def _run(cwd: Path, args: list[str], timeout: float) -> tuple[float, float]:
    """(wall seconds, the torc-trio process's own CPU seconds) of one command, which must
    succeed."""
    cwd.mkdir(parents=True)
    started = time.monotonic()
    proc = subprocess.Popen([*TORC, *args], cwd=cwd, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    ps = psutil.Process(proc.pid)
    cpu = 0.0
    while proc.poll() is None:
        try:
            t = ps.cpu_times()
            cpu = t.user + t.system
        except psutil.Error:
            pass
        if time.monotonic() - started > timeout:
            proc.kill()
            raise RuntimeError(f"{args}: still running after {timeout} s")
        time.sleep(0.1)
    wall = time.monotonic() - started
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{args}: exit {proc.returncode}: {err[-2000:]}")
    return wall, cpu


def _peaks(cwd: Path) -> int:
    """Results with a measured peak memory (the monitor ran), from the run's database."""
    with sqlite3.connect(cwd / "torc_output" / "torc.db") as conn:
        (n,) = conn.execute(
            "SELECT COUNT(*) FROM results WHERE peak_memory_bytes IS NOT NULL").fetchone()
    return int(n)


ON = ["--sample-interval-seconds", "1"]
OFF = ["--no-resource-monitoring"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--parallel", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--long-jobs", type=int, default=64)
    ap.add_argument("--long-seconds", type=float, default=20.0)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--workdir", default=None, help="where to run (default: a temp dir)")
    a = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bench_monitor_", dir=a.workdir))
    try:
        short = base / "short.txt"
        short.write_text("true\n" * a.jobs)
        on_walls: list[float] = []
        off_walls: list[float] = []
        for k in range(a.rounds):
            sides = [("on", ON), ("off", OFF)]
            if k % 2:
                sides.reverse()
            for name, opts in sides:
                wall, _ = _run(base / f"short_{name}_{k}",
                               ["-s", "exec", "-C", str(short), "-j", str(a.parallel), *opts],
                               a.timeout)
                (on_walls if name == "on" else off_walls).append(round(wall, 3))

        long = base / "long.txt"
        long.write_text(f"sleep {a.long_seconds:g}\n" * a.long_jobs)
        sampler: dict[str, Any] = {"jobs": a.long_jobs, "seconds": a.long_seconds}
        for name, opts in (("off", OFF), ("on", ON)):
            cwd = base / f"long_{name}"
            wall, cpu = _run(cwd, ["-s", "exec", "-C", str(long), "-j", str(a.long_jobs),
                                   *opts], a.timeout)
            sampler[f"{name}_cpu_s"] = round(cpu, 3)
            sampler[f"{name}_wall_s"] = round(wall, 3)
            if name == "on":
                sampler["samples_checked"] = _peaks(cwd)  # jobs that were measured
        sampler["sampler_cpu_percent_of_core"] = round(
            (sampler["on_cpu_s"] - sampler["off_cpu_s"]) / a.long_seconds * 100, 3)

        on_med, off_med = statistics.median(on_walls), statistics.median(off_walls)
        print(json.dumps({
            "jobs": a.jobs, "parallel": a.parallel, "rounds": a.rounds,
            "cpus": os.cpu_count(),
            "throughput": {"on_wall_s": on_walls, "off_wall_s": off_walls,
                           "on_median_s": on_med, "off_median_s": off_med,
                           "ratio_on_over_off": round(on_med / off_med, 4)},
            "sampler": sampler,
        }, indent=2))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
