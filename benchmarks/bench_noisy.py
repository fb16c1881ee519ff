"""Noisy neighbours: what one heavy but legal request costs every other client.

Starts ``python -m torc_net.server`` on a temporary file database (loopback only). For each
scenario one client sends a heavy request (or a bounded series of them) while another pings
the server every 50 ms; the ping latencies while the heavy work runs are compared with the
server at rest. Prints ONE JSON object::

    {"baseline": {"p50_ms", "p99_ms", "max_ms", "pings"},
     "scenarios": {name: {"heavy_s", "p50_ms", "p99_ms", "max_ms", "pings", "status"}}}

Scenarios (sizes by option): ``create`` (a spec whose parameters expand to --jobs jobs),
``dry_run`` (the same, parsed and compiled only), ``regex`` (--regex-jobs jobs, each with its
own depends_on_regexes pattern that no literal prefix narrows), ``jobs_page`` (GET jobs with
limit 100,000, five times), ``status_filter`` (GET jobs?status=ready over the big workflow,
twenty times), ``results_page`` (GET results with limit 100,000 after completing --jobs/10
jobs, five times). Every loop is bounded in count and time.

    python benchmarks/bench_noisy.py [--jobs 1000000] [--regex-jobs 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from _common import ping_summary, pinger, start_server, stop_server

from torc_net.http import HttpConnectionPool


async def measure(base_url: str, heavy: Callable[[HttpConnectionPool], Awaitable[str]],
                  bound_s: float) -> dict[str, Any]:
    """Ping while ``heavy`` runs on its own connection; its status text is reported."""
    latencies: list[float] = []
    stop = trio.Event()
    result: dict[str, Any] = {}
    async with HttpConnectionPool(base_url, max_idle=2) as ping_pool, \
            HttpConnectionPool(base_url, max_idle=2) as heavy_pool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pinger, ping_pool, latencies, stop, 0.05)
            await trio.sleep(0.2)  # the pinger's connection is open before the load starts
            latencies.clear()
            t = time.perf_counter()
            with trio.fail_after(bound_s):
                result["status"] = await heavy(heavy_pool)
            result["heavy_s"] = round(time.perf_counter() - t, 3)
            stop.set()
    return {**result, **ping_summary(latencies)}


def param_spec(name: str, jobs: int) -> dict[str, Any]:
    return {"name": name, "jobs": [{"name": "job_{i}", "command": "echo {i}",
                                    "parameters": {"i": f"1:{jobs}"}}]}


async def post(pool: HttpConnectionPool, path: str, body: Any) -> tuple[int, Any]:
    resp = await pool.request("POST", path, json_body=body)
    return resp.status, resp.json() if resp.body else None


async def run(base_url: str, args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {}

    async def idle(pool: HttpConnectionPool) -> str:
        await trio.sleep(3)
        return "idle"

    report["baseline"] = await measure(base_url, idle, 30)
    big_wf: list[int] = []

    async def create(pool: HttpConnectionPool) -> str:
        status, body = await post(pool, "/workflows", {"spec": param_spec("big", args.jobs)})
        big_wf.append(body["id"])
        return str(status)

    async def dry_run(pool: HttpConnectionPool) -> str:
        status, _ = await post(pool, "/workflows",
                               {"spec": param_spec("dry", args.jobs), "dry_run": True})
        return str(status)

    async def regex(pool: HttpConnectionPool) -> str:
        n = args.regex_jobs
        jobs = [{"name": f"a_{i}_x", "command": "true"} for i in range(n)]
        jobs += [{"name": f"b_{i}", "command": "true", "depends_on_regexes": [f".*_{i}_x"]}
                 for i in range(n)]
        status, _ = await post(pool, "/workflows", {"spec": {"name": "regex", "jobs": jobs},
                                                    "dry_run": True})
        return str(status)

    async def jobs_page(pool: HttpConnectionPool) -> str:
        for _ in range(5):
            resp = await pool.request("GET", f"/workflows/{big_wf[0]}/jobs?limit=100000")
        return str(resp.status)

    async def status_filter(pool: HttpConnectionPool) -> str:
        for _ in range(20):
            resp = await pool.request("GET", f"/workflows/{big_wf[0]}/jobs?status=ready&limit=1")
        return str(resp.status)

    async def results_page(pool: HttpConnectionPool) -> str:
        for _ in range(5):
            resp = await pool.request("GET", f"/workflows/{big_wf[0]}/results?limit=100000")
        return str(resp.status)

    scenarios: dict[str, Callable[[HttpConnectionPool], Awaitable[str]]] = {
        "create": create, "dry_run": dry_run, "regex": regex, "jobs_page": jobs_page,
        "status_filter": status_filter,
    }
    report["scenarios"] = {}
    for name, heavy in scenarios.items():
        report["scenarios"][name] = await measure(base_url, heavy, args.timeout)
    # Results to page through: a runner completes a tenth of the big workflow.
    async with HttpConnectionPool(base_url, max_idle=2) as pool:
        wf = big_wf[0]
        _, node = await post(pool, f"/workflows/{wf}/compute_nodes", {"hostname": "bench"})
        done = 0
        with trio.fail_after(args.timeout):
            while done < args.jobs // 10:
                _, claim = await post(pool, f"/workflows/{wf}/compute_nodes/{node['id']}/claim",
                                      {"limit": 5000})
                results = [{"job_id": j["id"], "attempt": 1, "run_id": 1, "return_code": 0}
                           for j in claim["jobs"]]
                await post(pool, f"/workflows/{wf}/compute_nodes/{node['id']}/complete",
                           {"results": results})
                done += len(results)
    report["scenarios"]["results_page"] = await measure(base_url, results_page, args.timeout)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--regex-jobs", type=int, default=2_000)
    parser.add_argument("--threads", type=int, default=4, help="server --threads")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound of each scenario")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="torc-noisy-") as tmp:
        proc, port = start_server(os.path.join(tmp, "torc.db"), threads=args.threads)
        try:
            report = trio.run(run, f"http://127.0.0.1:{port}/torc-service/v1", args)
        finally:
            stop_server(proc)
    report.update(benchmark="noisy", jobs=args.jobs, regex_jobs=args.regex_jobs,
                  sync=os.environ.get("TORC_SERVER_SYNC", "full"))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
