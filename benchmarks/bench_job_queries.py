"""Dashboard job table queries: GET .../jobs with filters, sorts and pages on a big workflow.

Starts ``python -m torc_net.server`` on a temporary file database (loopback only), creates one
workflow of --jobs jobs (``job_{i}``, one parameterized spec), moves some of them on through a
synthetic runner (completed, failed, retried: attempt 2, pending) so statuses and attempts vary,
then times each query mode: its first call (which may build a per-workflow cache: the name
order, the case-folded names) and --repeat more calls of it (pages at other offsets, as a
dashboard pages). Meanwhile a second client pings every 20 ms: what the first calls cost others.
Prints ONE JSON object::

    {"benchmark": "job_queries", "jobs", "limit", "create_s",
     "modes": {name: {"query", "total", "first_ms", "repeat_p50_ms", "repeat_max_ms"}},
     "ping_at_rest": {...}, "ping_during_first_calls": {"pings", "p50_ms", "p99_ms", "max_ms"}}

    python benchmarks/bench_job_queries.py [--jobs 1000000] [--repeat 5] [--limit 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import trio
from _common import ping_summary, pinger, start_server, stop_server

from torc_net.http import HttpConnectionPool

#: (name, query) in the order they run: a mode's first call is the first query of its kind
#: (``name`` builds the name order, ``name_filter`` the case-folded names).
MODES = [
    ("id", ""),
    ("id_reverse", "reverse_sort=true"),
    ("status_filter", "status=completed"),
    ("status_sort", "sort_by=status"),
    ("status_sort_reverse", "sort_by=status&reverse_sort=true"),
    ("attempt_sort_reverse", "sort_by=attempt&reverse_sort=true"),
    ("name_sort", "sort_by=name"),
    ("name_sort_reverse", "sort_by=name&reverse_sort=true"),
    ("name_filter", "name_contains=JOB_12"),
    ("name_filter_all", "name_contains=job"),
    ("name_filter_status_name_sort",
     "name_contains=7&status=completed&sort_by=name&reverse_sort=true"),
    ("name_filter_status_sort", "name_contains=99&sort_by=status"),
]


async def post(pool: HttpConnectionPool, path: str, body: Any) -> Any:
    resp = await pool.request("POST", path, json_body=body)
    if resp.status not in (200, 201):
        raise RuntimeError(f"POST {path}: {resp.status} {resp.body[:300]!r}")
    return resp.json()


async def prepare(pool: HttpConnectionPool, jobs: int) -> tuple[int, float]:
    """The workflow, with about 2 % of its jobs moved on: of each 5,000 claimed, 3,000
    completed, 500 failed, 500 failed with a retried code (ready again, attempt 2), 1,000 left
    pending."""
    spec = {"name": "table", "failure_handlers": [
        {"name": "again", "rules": [{"exit_codes": [3], "max_retries": 2}]}],
        "jobs": [{"name": "job_{i}", "command": "true", "failure_handler": "again",
                  "parameters": {"i": f"1:{jobs}"}}]}
    t = time.perf_counter()
    wf = (await post(pool, "/workflows", {"spec": spec}))["id"]
    create_s = time.perf_counter() - t
    node = (await post(pool, f"/workflows/{wf}/compute_nodes",
                       {"hostname": "bench", "num_cpus": 10**6, "memory_bytes": 10**15}))["id"]
    for _ in range(max(1, jobs // 50_000)):
        claim = await post(pool, f"/workflows/{wf}/compute_nodes/{node}/claim", {"limit": 5000})
        ids = [j["id"] for j in claim["jobs"]]
        k = len(ids)
        codes = [0] * (k * 3 // 5) + [1] * (k // 10) + [3] * (k // 10)
        results = [{"job_id": i, "attempt": 1, "run_id": 1, "return_code": rc,
                    "status": "completed" if rc == 0 else "failed"}
                   for i, rc in zip(ids, codes, strict=False)]
        if results:
            await post(pool, f"/workflows/{wf}/compute_nodes/{node}/complete",
                       {"results": results})
    return wf, create_s


async def timed_get(pool: HttpConnectionPool, path: str) -> tuple[float, Any]:
    t = time.perf_counter()
    resp = await pool.request("GET", path)
    ms = (time.perf_counter() - t) * 1000
    if resp.status != 200:
        raise RuntimeError(f"GET {path}: {resp.status} {resp.body[:300]!r}")
    return ms, resp.json()


async def run(base_url: str, args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {}
    async with HttpConnectionPool(base_url, max_idle=2) as pool, \
            HttpConnectionPool(base_url, max_idle=2) as ping_pool:
        with trio.fail_after(args.timeout):
            wf, create_s = await prepare(pool, args.jobs)
        report["create_s"] = round(create_s, 3)
        at_rest: list[float] = []
        during: list[float] = []
        stop = trio.Event()
        modes: dict[str, Any] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pinger, ping_pool, at_rest, stop, 0.02)
            await trio.sleep(2)
            stop.set()
        stop = trio.Event()
        with trio.fail_after(args.timeout):
            for name, query in MODES:
                base = f"/workflows/{wf}/jobs?limit={args.limit}" + (f"&{query}" if query else "")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pinger, ping_pool, during, stop, 0.02)
                    first_ms, body = await timed_get(pool, base)
                    stop.set()
                stop = trio.Event()
                total = body["total"]
                repeats = []
                for r in range(args.repeat):
                    # other pages of the same query, spread over its matches
                    offset = (total * (r + 1)) // (args.repeat + 1)
                    ms, page = await timed_get(pool, f"{base}&offset={offset}")
                    if page["total"] != total and "status" not in query:
                        raise RuntimeError(f"{name}: total moved {total} -> {page['total']}")
                    repeats.append(ms)
                modes[name] = {"query": query, "total": total, "first_ms": round(first_ms, 1),
                               "repeat_p50_ms": round(statistics.median(repeats), 1),
                               "repeat_max_ms": round(max(repeats), 1)}
        report["modes"] = modes
        report["ping_at_rest"] = ping_summary(at_rest)
        report["ping_during_first_calls"] = ping_summary(during)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="calls after the first, per mode")
    parser.add_argument("--limit", type=int, default=100, help="page size")
    parser.add_argument("--threads", type=int, default=4, help="server --threads")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound of each phase")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="torc-jobq-") as tmp:
        proc, port = start_server(os.path.join(tmp, "torc.db"), threads=args.threads)
        try:
            report = trio.run(run, f"http://127.0.0.1:{port}/torc-service/v1", args)
        finally:
            stop_server(proc)
    print(json.dumps({"benchmark": "job_queries", "jobs": args.jobs, "limit": args.limit,
                      **report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
