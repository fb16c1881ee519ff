"""Allocation burst: 1,000 simulated allocations hit one server within one second.

Starts ``python -m torc_net.server`` (loopback only; a file database in a temporary directory,
or ``--in-memory``), creates one workflow of ``--jobs`` independent no-op jobs through the API
(one parameterized job keeps the spec small), then spawns a SEPARATE Python process (this file
with ``--child``) that runs ``--allocations`` Trio tasks. Each task is one allocation with its
OWN :class:`torc_net.client.TorcClient` (own connection, real retries/backoff/503 handling); all
start within one second of the burst start. Each registers a compute node, then loops: claim
(queue mode, a random limit in ``--claim-min..--claim-max``), "run" (sleep 0..``--run-ms`` ms),
complete, until a claim comes back empty.

Afterwards the child checks the outcome through the API: every acknowledged completion must be
in ``GET /results`` and the status counts must say complete. Prints ONE JSON object with
``allocations, jobs, first_claim_p50_s / p99 / max`` (burst start -> an allocation's first
non-empty claim; allocations that found nothing left are counted in ``allocations_found_nothing``
and excluded), ``latency_p50_ms / p99`` (per API call as the caller sees it, retries included),
``status_503, retries, failed_requests`` (gave up after retries), ``double_claims`` (job ids
claimed by two allocations), ``lost_completions``, ``drain_s``, ``jobs_per_s``.

    python benchmarks/bench_burst.py [--allocations 1000] [--jobs 100000] [--in-memory]

Bounded: every request gives up after ``--request-timeout``, the whole burst after ``--timeout``.
Timings are not asserted anywhere (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil
import trio
from _common import percentile, start_server, stop_server, tls_setup, tree_cpu_s

from torc_net.client import TorcClient


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


# ---------------------------------------------------------------------------------------------
# Child: the allocations


async def run_allocations(args: argparse.Namespace) -> dict[str, Any]:
    wf = args.workflow
    n = args.allocations
    rng = random.Random(args.seed)
    latencies: list[float] = []
    first_claim: list[float] = []
    found_nothing = 0
    failed_requests = 0
    failures: list[str] = []
    claimed_by: dict[int, int] = {}
    double_claims = 0
    acknowledged: set[int] = set()
    clients: list[TorcClient] = []
    finished = 0

    async def timed(coro: Any) -> Any:
        t = time.perf_counter()
        try:
            return await coro
        finally:
            latencies.append((time.perf_counter() - t) * 1000)

    burst_start = trio.current_time() + 0.5  # everyone set up before the clock starts
    wall_start = time.time() + 0.5

    async def allocation(k: int, delay: float, seed: int) -> None:
        nonlocal found_nothing, failed_requests, double_claims, finished
        r = random.Random(seed)
        client = TorcClient(args.url, wait_for_server_s=args.request_timeout,
                            attempt_timeout_s=min(60.0, args.request_timeout), max_idle=1)
        clients.append(client)
        await trio.sleep_until(burst_start + delay)
        got_any = False

        def claimed(jobs: list[dict[str, Any]]) -> None:
            nonlocal got_any, double_claims
            if jobs and not got_any:
                got_any = True
                first_claim.append(trio.current_time() - burst_start)
            for j in jobs:
                other = claimed_by.get(j["id"])
                if other is not None and other != k:
                    double_claims += 1
                claimed_by[j["id"]] = k

        def results_of(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{"job_id": j["id"], "attempt": j["attempt"], "run_id": j["run_id"],
                     "return_code": 0, "status": "completed", "exec_time_s": 0.01}
                    for j in jobs]

        try:
            if args.protocol == "runner":
                # As `torc-trio runner` does: the first contact registers, reads the workflow
                # and claims in one request; then each claim carries the last results.
                first = await timed(client.register_compute_node(
                    wf, hostname=f"alloc{k}", pid=100000 + k, num_cpus=4, workflow=True,
                    claim={"limit": r.randint(args.claim_min, args.claim_max)}))
                cn, reply, seq = first["id"], first["claim"], 0
                while True:
                    jobs = reply["jobs"]
                    claimed(jobs)
                    if not jobs:
                        break
                    await trio.sleep(r.uniform(0, args.run_ms / 1000))
                    results = results_of(jobs)
                    seq += 1
                    reply = await timed(client.claim_jobs(
                        wf, cn, limit=r.randint(args.claim_min, args.claim_max), claim_seq=seq,
                        results=results))
                    if reply.get("accepted", 0) + reply.get("duplicates", 0) == len(results):
                        acknowledged.update(j["id"] for j in jobs)
                if not got_any:
                    found_nothing += 1
                return
            cn = (await timed(client.register_compute_node(
                wf, hostname=f"alloc{k}", pid=100000 + k, num_cpus=4)))["id"]
            seq = 0
            while True:
                seq += 1
                reply = await timed(client.claim_jobs(
                    wf, cn, limit=r.randint(args.claim_min, args.claim_max), claim_seq=seq))
                jobs = reply["jobs"]
                if not jobs:
                    break
                claimed(jobs)
                await trio.sleep(r.uniform(0, args.run_ms / 1000))
                results = results_of(jobs)
                done = await timed(client.complete_jobs(wf, cn, results))
                if done["accepted"] + done["duplicates"] == len(results):
                    acknowledged.update(j["id"] for j in jobs)
            if not got_any:
                found_nothing += 1
        except Exception as exc:  # ServerUnreachable / ApiError: a failed request
            failed_requests += 1
            if len(failures) < 5:
                failures.append(f"allocation {k}: {type(exc).__name__}: {exc}"[:500])
        finally:
            finished += 1
            await client.aclose()

    delays = [rng.random() for _ in range(n)]  # all start within one second
    with trio.move_on_after(args.timeout) as scope:
        async with trio.open_nursery() as nursery:
            for k in range(n):
                nursery.start_soon(allocation, k, delays[k], rng.getrandbits(32))
    drain_s = trio.current_time() - burst_start
    timed_out = scope.cancelled_caught

    # Verification through the API (one more client, not part of the burst).
    async with TorcClient(args.url, wait_for_server_s=60) as check:
        status = await check.workflow_status(wf)
        recorded: set[int] = set()
        async for item in check.iter_results(wf, page_size=100_000):
            if item["status"] == "completed":
                recorded.add(item["job_id"])
    lost = len(acknowledged - recorded)
    return {
        "allocations": n,
        "allocations_productive": len(first_claim),
        "allocations_found_nothing": found_nothing,
        "allocations_finished": finished,
        "first_claim_p50_s": round(percentile(first_claim, 0.5), 3),
        "first_claim_p99_s": round(percentile(first_claim, 0.99), 3),
        "first_claim_max_s": round(max(first_claim, default=0.0), 3),
        "requests": len(latencies),
        "http_attempts": sum(c.requests for c in clients),
        "latency_p50_ms": round(percentile(latencies, 0.5), 2),
        "latency_p99_ms": round(percentile(latencies, 0.99), 2),
        "latency_max_ms": round(max(latencies, default=0.0), 2),
        "status_503": sum(c.status_503 for c in clients),
        "retries": sum(c.retries for c in clients),
        "failed_requests": failed_requests,
        "failures": failures,
        "double_claims": double_claims,
        "jobs_claimed": len(claimed_by),
        "completions_acknowledged": len(acknowledged),
        "results_recorded": len(recorded),
        "lost_completions": lost,
        "status_counts": {k: v for k, v in status["counts"].items() if v},
        "is_complete": status["is_complete"],
        "timed_out": timed_out,
        "drain_s": round(drain_s, 3),
        "burst_start_unix": wall_start,
        "child_cpu_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 2),
    }


def child_main(args: argparse.Namespace) -> int:
    raise_nofile()
    report = trio.run(run_allocations, args)
    print(json.dumps(report), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# Parent: server, workflow, child


def start_burst_server(db: str, tmp: str, threads: int, max_concurrent: int | None,
                       tls: list[str], server_path: str | None = None) \
        -> tuple[subprocess.Popen[str], int]:
    extra = ["--max-concurrent-requests", str(max_concurrent)] if max_concurrent else []
    extra += tls
    env = dict(os.environ, TORC_SERVER_SNAPSHOT_PATH=os.path.join(tmp, "snap", "torc.db"))
    if server_path:  # the previous code's server (run from tmp: python -m imports cwd first)
        env["PYTHONPATH"] = os.path.abspath(server_path)
    return start_server(db, threads=threads, extra_args=extra, env=env, preexec_fn=raise_nofile,
                        cwd=tmp)


async def create_workflow(url: str, jobs: int) -> tuple[int, float]:
    spec = {"name": "bench_burst",
            "jobs": [{"name": "job_{i}", "command": "true", "parameters": {"i": f"1:{jobs}"}}]}
    async with TorcClient(url, wait_for_server_s=60) as client:
        t0 = time.perf_counter()
        reply = await client.create_workflow(spec)
        return int(reply["id"]), time.perf_counter() - t0


def parent_main(args: argparse.Namespace) -> int:
    nofile = raise_nofile()
    with tempfile.TemporaryDirectory(prefix="torc-burst-") as tmp:
        db = ":memory:" if args.in_memory else os.path.join(tmp, "torc.db")
        tls = tls_setup(tmp) if args.tls else []
        server, port = start_burst_server(db, tmp, args.threads, args.max_concurrent, tls,
                                          args.server_path)
        ps = psutil.Process(server.pid)
        try:
            url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/torc-service/v1"
            wf, create_s = trio.run(create_workflow, url, args.jobs)
            child_argv = [
                sys.executable, os.path.abspath(__file__), "--child", "--url", url,
                "--workflow", str(wf), "--allocations", str(args.allocations),
                "--claim-min", str(args.claim_min), "--claim-max", str(args.claim_max),
                "--run-ms", str(args.run_ms), "--timeout", str(args.timeout),
                "--request-timeout", str(args.request_timeout), "--seed", str(args.seed),
                "--protocol", args.protocol,
            ]
            child = subprocess.run(child_argv, capture_output=True, text=True,
                                   timeout=args.timeout + 300, stdin=subprocess.DEVNULL)
            if child.returncode != 0:
                raise RuntimeError(f"child failed ({child.returncode}):\n{child.stderr[-3000:]}")
            report = json.loads(child.stdout.strip().splitlines()[-1])
            server_cpu_s = round(tree_cpu_s(ps), 2)  # its writer process included
            server_rss_mb = round(ps.memory_info().rss / 2**20, 1)
        finally:
            stop_server(server)
    report.pop("burst_start_unix", None)
    drain = report["drain_s"]
    out = {
        "benchmark": "burst",
        "allocations": args.allocations,
        "jobs": args.jobs,
        "database": "memory" if args.in_memory else "file",
        "tls": args.tls,
        "protocol": args.protocol,
        "create_s": round(create_s, 3),
        **{k: v for k, v in report.items() if k != "allocations"},
        "jobs_per_s": round(report["completions_acknowledged"] / drain, 1) if drain > 0 else 0.0,
        "claim_limit": [args.claim_min, args.claim_max],
        "run_ms_max": args.run_ms,
        "server_threads": args.threads,
        "server_max_concurrent": args.max_concurrent or "default",
        "server_cpu_s": server_cpu_s,
        "server_rss_mb": server_rss_mb,
        "nofile_limit": nofile,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(out))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allocations", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--in-memory", action="store_true",
                        help="server database ':memory:' instead of a file")
    parser.add_argument("--claim-min", type=int, default=4)
    parser.add_argument("--claim-max", type=int, default=16)
    parser.add_argument("--run-ms", type=float, default=50.0,
                        help="each claimed batch 'runs' for uniform(0, this) ms")
    parser.add_argument("--threads", type=int, default=4, help="server --threads")
    parser.add_argument("--max-concurrent", type=int, default=None,
                        help="server --max-concurrent-requests (default: the server's)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="bound of the whole burst (s)")
    parser.add_argument("--request-timeout", type=float, default=120.0,
                        help="a request that has not succeeded after this many seconds, "
                        "retries included, counts as failed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--server-path", metavar="DIR",
                        help="run the server from the checkout in DIR (the previous code)")
    parser.add_argument("--protocol", choices=["runner", "separate"], default="runner",
                        help="runner (default): first contact = register + workflow + claim in "
                        "one request, results ride on the next claim; separate: register, then "
                        "claim and complete as two requests (the protocol before issue 17)")
    parser.add_argument("--tls", action="store_true",
                        help="serve HTTPS (a throwaway CA made with trustme): every allocation "
                        "does a TLS handshake in the burst")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--workflow", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
