"""Server throughput: synthetic runners claim and complete no-op jobs over real HTTP.

Starts ``python -m torc_net.server`` with a file database in a temporary directory (loopback
only; ``TORC_SERVER_SYNC=normal`` in the environment measures the weaker durability), creates
one workflow of independent jobs per batch size, and runs a few concurrent synthetic runners
(no processes: claim ``batch`` jobs, report them completed, repeat) through keep-alive h11
connections. Prints ONE JSON object::

    {"results": [{"batch", "jobs", "runners", "seconds", "jobs_per_s", "p50_ms", "p99_ms"}],
     "server": {...}, "create_s": {...}}

Each runner speaks the protocol as ``torc-trio runner`` does: one claim per batch, carrying
the results of the batch before (one request per batch in steady state). Latencies are of one
claim round trip. Bounded in job count and time. ``--server-path DIR`` runs the server from
another checkout (the previous code, for a comparison in the same run).

    python benchmarks/bench_server.py [--jobs 20000] [--batch1-jobs 2000] [--runners 4] [--tls]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

import psutil
import trio
from _common import percentile, start_server, stop_server, tls_setup, tree_cpu_s

from torc_net.http import HttpConnectionPool


async def post(pool: HttpConnectionPool, path: str, body: Any, status: int = 200) -> Any:
    resp = await pool.request("POST", path, json_body=body)
    if resp.status != status:
        raise RuntimeError(f"POST {path}: {resp.status} {resp.body[:300]!r}")
    return resp.json()


async def run_batch(base_url: str, batch: int, num_jobs: int, runners: int,
                    server_pid: int | None = None) -> dict[str, Any]:
    async with HttpConnectionPool(base_url, max_idle=runners + 2) as pool:
        spec = {"name": f"bench-{batch}",
                "jobs": [{"name": f"j{i}", "command": "true"} for i in range(num_jobs)]}
        t0 = time.perf_counter()
        wf = (await post(pool, "/workflows", {"spec": spec}, 201))["id"]
        create_s = time.perf_counter() - t0
        latencies: list[float] = []
        done = 0

        async def runner(k: int) -> None:
            nonlocal done
            cn = (await post(pool, f"/workflows/{wf}/compute_nodes",
                             {"hostname": f"bench{k}", "pid": k}, 201))["id"]
            base = f"/workflows/{wf}/compute_nodes/{cn}"
            results: list[dict[str, Any]] = []
            while True:
                # As the runner does: the results of the last batch ride on the next claim.
                t = time.perf_counter()
                claimed = await post(pool, f"{base}/claim", {"limit": batch,
                                                             "results": results})
                latencies.append((time.perf_counter() - t) * 1000)
                jobs = claimed["jobs"]
                done += len(results)
                if not jobs:
                    return
                results = [{"job_id": j["id"], "attempt": j["attempt"], "run_id": j["run_id"],
                            "return_code": 0, "status": "completed", "exec_time_s": 0.0}
                           for j in jobs]

        server = psutil.Process(server_pid) if server_pid else None
        cpu0 = tree_cpu_s(server) if server else 0.0
        start = time.perf_counter()
        with trio.fail_after(600):
            async with trio.open_nursery() as nursery:
                for k in range(runners):
                    nursery.start_soon(runner, k)
        elapsed = time.perf_counter() - start
        cpu_s = tree_cpu_s(server) - cpu0 if server else None
        status = (await pool.request("GET", f"/workflows/{wf}/status")).json()
        if status["counts"]["completed"] != num_jobs or done != num_jobs:
            raise RuntimeError(f"batch {batch}: {done} done, status {status}")
        return {
            "batch": batch,
            "jobs": num_jobs,
            "runners": runners,
            "seconds": round(elapsed, 3),
            "jobs_per_s": round(num_jobs / elapsed, 1),
            "p50_ms": round(percentile(latencies, 0.5), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2),
            "create_s": round(create_s, 3),
            # the server's CPU per request (user + system, its writer process included): what
            # load on the machine changes least, where throughput swings by tens of percent
            # between rounds
            "server_cpu_ms_per_request": (round(cpu_s * 1000 / len(latencies), 3)
                                          if cpu_s is not None else None),
            # connections the runners opened (a server that closes kept-alive connections
            # after N requests makes them reconnect: a TLS handshake each time over https)
            "connections_opened": pool.connections_opened,
        }


async def run_all(base_url: str, args: argparse.Namespace,
                  server_pid: int | None = None) -> list[dict[str, Any]]:
    results = []
    for batch in args.batches:
        n = args.batch1_jobs if batch == 1 else args.jobs
        results.append(await run_batch(base_url, batch, n, args.runners, server_pid))
    return results


def run_with_server(args: argparse.Namespace) -> dict[str, Any]:
    """Start a server subprocess on a temporary file database and benchmark it."""
    with tempfile.TemporaryDirectory(prefix="torc-bench-") as tmp:
        db = os.path.join(tmp, "torc.db")
        tls = tls_setup(tmp) if args.tls else []
        env = None
        if args.server_path:
            env = dict(os.environ, PYTHONPATH=os.path.abspath(args.server_path))
        proc, port = start_server(db, threads=args.threads, extra_args=[*tls, *args.server_arg],
                                  env=env, cwd=tmp)
        try:
            base_url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/torc-service/v1"
            results = trio.run(run_all, base_url, args, proc.pid)
            return {
                "results": results,
                "best_jobs_per_s": max(r["jobs_per_s"] for r in results),
                "server": {"database": "file (WAL, synchronous="
                                       f"{os.environ.get('TORC_SERVER_SYNC', 'full').upper()})",
                           "threads": args.threads, "cpus": os.cpu_count(),
                           "tls": bool(tls)},
            }
        finally:
            stop_server(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch1-jobs", type=int, default=2_000)
    parser.add_argument("--runners", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--url", help="benchmark a running server instead of starting one")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--tls", action="store_true",
                        help="serve HTTPS (a throwaway CA made with trustme)")
    parser.add_argument("--server-path", metavar="DIR",
                        help="run the server from the checkout in DIR (PYTHONPATH)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="one more argument for the server (repeatable)")
    args = parser.parse_args()
    if args.url:  # an already running server (e.g. under a profiler)
        results = trio.run(run_all, args.url, args)
        report = {"results": results, "best_jobs_per_s": max(r["jobs_per_s"] for r in results)}
    else:
        report = run_with_server(args)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
