"""``torc_trio.map`` of N trivial Python calls against HyperQueue's Python API (``Job.function``).

The same function, ``trivial(i) -> i + 1`` (this module's, imported by both by module and
name), called N times (default 10,000) with the same concurrency (``--parallel``, default
twice the CPUs):

* **torc-trio** -- ``torc_trio.map(trivial, [{"i": 0}, ...], jobs=P)`` in a child process:
  one function job per call (``python -m torc_trio.call bench_map:trivial``), each reading
  its parameters from the server and storing its return value there (JSON) before it exits;
  the N values are then read back and checked. Standalone: the child starts its own server
  (file database, synced commits) and stops it. Timed end to end around the ``map`` call:
  server start-up, workflow creation, the calls, reading the values, shutdown.
* **torc-trio in chunks** (``--chunk-size K``, default 100; 0 skips it) -- the same map with
  ``chunk_size=K``: each job makes K calls in one process, every value still stored and
  returned in order. Timed the same way.
* **HyperQueue** -- the PyPI package ``hyperqueue`` (0.27: ``LocalCluster``, one worker with
  ``P`` cores, so P tasks at a time). One job of N ``Job.function(trivial, kwargs={"i": k})``
  tasks (each a Python process that unpickles the function and calls it; HyperQueue keeps no
  return value), with ``PythonEnv(python_bin=sys.executable)`` (its default, ``python3``, may
  be a slow shim). Timed from submit to completion; cluster start-up and the worker's
  connection (a one-task warm-up job) excluded, which favours HyperQueue (``startup_s``).

Prints ONE JSON object::

    {"benchmark": "map", "calls", "parallel", "cpus", "chunk_size", "torc": {"wall_s",
     "calls_per_s", "ok", "values_ok"}, "torc_chunk": {...}, "hq": {"wall_s", "calls_per_s",
     "ok", "startup_s"}, "ratio_torc_over_hq", "ratio_torc_chunk_over_hq", "python_start_ms"}

``ratio_torc_over_hq`` is of throughputs (> 1: torc-trio is faster). ``python_start_ms`` is
what an interpreter start costs here (``python -c pass``), the floor of any per-call process.
Every child has a timeout (``--timeout``); traffic is loopback only.

    python benchmarks/bench_map.py [--calls 10000] [--parallel P] [--chunk-size 100]
        [--skip-hq] [--skip-torc] [--timeout 3600]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def trivial(i: int) -> int:
    """The call both tools make N times."""
    return i + 1


def _child(kind: str, calls: int, parallel: int, workdir: str, chunk_size: int = 1) -> None:
    """Runs in a child process, with this folder on sys.path (``import bench_map``), so that
    ``trivial`` is ``bench_map.trivial`` for both tools."""
    os.chdir(workdir)
    result = _hq(calls, parallel) if kind == "hq" else _torc(calls, parallel, chunk_size)
    print(json.dumps(result), flush=True)


def _torc(calls: int, parallel: int, chunk_size: int) -> dict[str, Any]:
    import torc_trio

    t0 = time.perf_counter()
    values = torc_trio.map(trivial, [{"i": k} for k in range(calls)], jobs=parallel,
                           name="trivial", chunk_size=chunk_size)
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 3), "calls_per_s": round(calls / wall, 1), "ok": True,
            "values_ok": values == [k + 1 for k in range(calls)]}


def _hq(calls: int, parallel: int) -> dict[str, Any]:
    try:
        from hyperqueue import Client, Job, LocalCluster
        from hyperqueue.cluster import WorkerConfig
        from hyperqueue.task.function import PythonEnv
    except ImportError as exc:
        return {"error": f"hyperqueue not importable: {exc} (pip install hyperqueue)"}
    root = Path.cwd()
    env = {"PYTHONPATH": str(HERE)}
    t0 = time.perf_counter()
    try:
        cluster = LocalCluster(server_dir=str(root / "hq_server"),
                               worker_config=WorkerConfig(cores=parallel))
    except Exception as exc:
        return {"error": f"LocalCluster did not start: {type(exc).__name__}: {exc}"}
    try:
        client: Client = cluster.client(python_env=PythonEnv(python_bin=sys.executable))
        warm = Job(default_workdir=root, max_fails=None)
        warm.function(trivial, kwargs={"i": 0}, env=env)
        client.wait_for_jobs([client.submit(warm)], raise_on_error=False)
        startup = time.perf_counter() - t0
        job = Job(default_workdir=root, max_fails=None)
        for k in range(calls):
            job.function(trivial, kwargs={"i": k}, env=env)
        t1 = time.perf_counter()
        ok = client.wait_for_jobs([client.submit(job)], raise_on_error=False)
        wall = time.perf_counter() - t1
        return {"wall_s": round(wall, 3), "calls_per_s": round(calls / wall, 1), "ok": bool(ok),
                "startup_s": round(startup, 3)}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        cluster.stop()


def run_child(kind: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    workdir = root / kind
    workdir.mkdir()
    chunk = args.chunk_size if kind == "torc_chunk" else 1
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import bench_map; "
            f"bench_map._child({kind!r}, {args.calls}, {args.parallel}, {str(workdir)!r}, "
            f"{chunk})")
    try:
        # standalone, as documented: never a server named by the caller's environment
        env = {k: v for k, v in os.environ.items() if k not in ("TORC_API_URL",
                                                                "TORC_USERNAME",
                                                                "TORC_PASSWORD")}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=args.timeout, stdin=subprocess.DEVNULL, check=False,
                              env=env)
    except subprocess.TimeoutExpired as exc:
        said = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else \
            (exc.stderr or "")
        return {"error": f"timed out after {args.timeout} s; stderr: {said[-1500:]}"}
    try:
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {"error": f"exit {proc.returncode}: {proc.stderr[-1500:]}"}


def python_start_ms() -> float:
    """One interpreter start (``python -c pass``), the median of five."""
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=60)
        times.append(time.perf_counter() - t0)
    return round(sorted(times)[2] * 1000, 1)


def compile_modules() -> None:
    """Byte-compile the package and this module once, as a regular install would have (with
    PYTHONDONTWRITEBYTECODE set, each job process would compile them again)."""
    sys.path.insert(0, str(HERE))
    from bench_exec import compile_package

    import torc_trio

    compile_package()
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    str(Path(torc_trio.__file__).parent), str(HERE / "bench_map.py")],
                   check=False, capture_output=True, timeout=300)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=10000)
    p.add_argument("--parallel", type=int, default=2 * (os.cpu_count() or 1))
    p.add_argument("--chunk-size", type=int, default=100,
                   help="also run the map with chunk_size=K (0: do not)")
    p.add_argument("--skip-hq", action="store_true")
    p.add_argument("--skip-torc", action="store_true")
    p.add_argument("--timeout", type=float, default=3600.0, help="per tool, seconds")
    p.add_argument("--workdir", default=None, help="where the temporary directory goes")
    args = p.parse_args()
    if not 0 < args.calls <= 1_000_000 or not 0 < args.parallel <= 1024:
        p.error("--calls must be in 1..1e6 and --parallel in 1..1024")
    if args.chunk_size < 0:
        p.error("--chunk-size must be 0 (none) or more")
    compile_modules()
    result: dict[str, Any] = {"benchmark": "map", "calls": args.calls,
                              "parallel": args.parallel, "cpus": os.cpu_count(),
                              "chunk_size": args.chunk_size,
                              "python_start_ms": python_start_ms()}
    plan = (("torc", args.skip_torc), ("torc_chunk", args.chunk_size < 2),
            ("hq", args.skip_hq))
    with tempfile.TemporaryDirectory(prefix="torc-bench-map-", dir=args.workdir) as tmp:
        for kind, skip in plan:
            if not skip:
                result[kind] = run_child(kind, args, Path(tmp))
    hq = result.get("hq", {})
    for kind in ("torc", "torc_chunk"):
        mine = result.get(kind, {})
        a, b = mine.get("calls_per_s"), hq.get("calls_per_s")
        result[f"ratio_{kind}_over_hq"] = (round(a / b, 3) if a and b and mine.get("ok")
                                           and hq.get("ok") else None)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
