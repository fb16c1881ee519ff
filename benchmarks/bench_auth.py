"""Authenticated runner heartbeat latency, alone and while clients send wrong passwords.

Starts ``python -m torc_net.server --auth-file F`` with a file database in a temporary folder
(loopback only). F holds the runner's user and one user per attacker, hashed at ``--rounds``
(the cost ``torc-trio htpasswd add`` uses by default). As the runner's user it creates a
workflow and registers a compute node, then times ``--heartbeats`` sequential heartbeats
``--interval`` apart (keep-alive connection, cached credential): first alone, then while
``--attackers`` clients hammer ``GET /ping`` with wrong passwords, each as a distinct user, all
from 127.0.0.1. Timing under attack starts at the attack's first answer (plus
``--attack-warmup``) and stops early if the attack ends first. The attackers run in a child
process so their client work does not slow the timed client; each stops after
``--attack-max`` attempts or ``--attack-seconds``, whichever comes first.

The server is whatever ``python -m torc_net.server`` imports from the current directory /
PYTHONPATH: run it from another checkout to compare versions.

Prints ONE JSON object::

    {"alone": {"p50_ms", "p99_ms", ...}, "under_attack": {...}, "p50_ratio", "p99_ratio",
     "attack": {"attempts", "statuses": {"401": n, "429": n}, "seconds", ...}, "server": {...}}

    python benchmarks/bench_auth.py [--heartbeats 200] [--attackers 6] [--rounds 12]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio
from _common import percentile, start_server, stop_server

from torc_net.htpasswd_cli import add_user
from torc_net.http import HttpConnectionPool

RUNNER = ("runner", "runner-password")


def summary(latencies: list[float]) -> dict[str, Any]:
    return {"n": len(latencies),
            "p50_ms": round(percentile(latencies, 0.5), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2),
            "max_ms": round(max(latencies), 2) if latencies else 0.0}


async def post(pool: HttpConnectionPool, path: str, body: Any, status: int = 200) -> Any:
    resp = await pool.request("POST", path, json_body=body)
    if resp.status != status:
        raise RuntimeError(f"POST {path}: {resp.status} {resp.body[:300]!r}")
    return resp.json()


async def heartbeats(pool: HttpConnectionPool, path: str, n: int,
                     interval: float = 0.0) -> list[float]:
    """``n`` heartbeats, ``interval`` s apart (so N of them span the attack's phases)."""
    latencies = []
    for i in range(n):
        if i and interval:
            await trio.sleep(interval)
        t = time.perf_counter()
        await post(pool, path, {})
        latencies.append((time.perf_counter() - t) * 1000)
    return latencies


async def attack(base_url: str, users: list[str], max_attempts: int, seconds: float,
                 statuses: Counter[int]) -> None:
    """Each user sends wrong passwords, one request after another, until the bounds (or a
    cancel); answers are counted into ``statuses`` as they come."""

    async def attacker(user: str) -> None:
        async with HttpConnectionPool(base_url, auth=(user, "wrong-password")) as pool:
            for _ in range(max_attempts):
                statuses[(await pool.request("GET", "/ping")).status] += 1
                if sum(statuses.values()) == 1:
                    print("ATTACK_STARTED", flush=True)  # the parent starts timing

    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for user in users:
                nursery.start_soon(attacker, user)


async def measure(base_url: str, args: argparse.Namespace, users: list[str]) -> dict[str, Any]:
    async with HttpConnectionPool(base_url, auth=RUNNER) as pool:
        spec = {"name": "bench-auth", "jobs": [{"name": "j", "command": "true"}]}
        wf = (await post(pool, "/workflows", {"spec": spec}, 201))["id"]
        cn = (await post(pool, f"/workflows/{wf}/compute_nodes",
                         {"hostname": "bench", "pid": os.getpid()}, 201))["id"]
        path = f"/workflows/{wf}/compute_nodes/{cn}/heartbeat"
        await heartbeats(pool, path, 5)  # warm: credential cached, connection open
        alone = await heartbeats(pool, path, args.heartbeats, args.interval)
        child = await trio.lowlevel.open_process(
            [sys.executable, __file__, "--attack-only", base_url, "--attack-max",
             str(args.attack_max), "--attack-seconds", str(args.attack_seconds), *users],
            stdout=subprocess.PIPE)
        lines: list[str] = []
        started, ended = trio.Event(), trio.Event()

        async def read_child() -> None:
            assert child.stdout is not None
            buf = b""
            async for chunk in child.stdout:
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    lines.append(line.decode())
                    if line == b"ATTACK_STARTED":
                        started.set()
            ended.set()
            started.set()

        attacked: list[float] = []
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_child)
                # Time heartbeats only while the attack runs: from its first answer (plus
                # --attack-warmup) until N heartbeats, or until the attack ended (its bounds).
                await started.wait()
                await trio.sleep(args.attack_warmup)
                t0 = time.perf_counter()
                for i in range(args.heartbeats):
                    if ended.is_set():
                        break
                    if i:
                        await trio.sleep(args.interval)
                    attacked += await heartbeats(pool, path, 1)
                timed_s = time.perf_counter() - t0
                child.terminate()
        finally:
            with trio.move_on_after(10):
                await child.wait()
            if child.returncode is None:
                child.kill()
                await child.wait()
        report = (json.loads(lines[-1]) if lines and lines[-1].startswith("{")
                  else {"error": "the attacker printed no report"})
        report["heartbeats_timed_during_attack"] = len(attacked)
        report["heartbeat_window_s"] = round(timed_s, 2)
    a, b = summary(alone), summary(attacked)
    return {"alone": a, "under_attack": b,
            "p50_ratio": round(b["p50_ms"] / a["p50_ms"], 2) if a["p50_ms"] else None,
            "p99_ratio": round(b["p99_ms"] / a["p99_ms"], 2) if a["p99_ms"] else None,
            "attack": report}


def attack_only(args: argparse.Namespace) -> int:
    """The child process: attack until the bounds or SIGTERM, then print its counts."""
    statuses: Counter[int] = Counter()
    start = time.perf_counter()

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                async def run() -> None:
                    await attack(args.attack_only, args.users, args.attack_max,
                                 args.attack_seconds, statuses)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(run)
                async for _ in signals:
                    nursery.cancel_scope.cancel()

    trio.run(main)
    elapsed = time.perf_counter() - start
    attempts = sum(statuses.values())
    print(json.dumps({"attackers": len(args.users), "attempts": attempts,
                      "seconds": round(elapsed, 2),
                      "attempts_per_s": round(attempts / elapsed, 1),
                      "statuses": {str(k): v for k, v in sorted(statuses.items())}}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heartbeats", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.05,
                        help="seconds between heartbeats (200 of them span ~10 s of attack)")
    parser.add_argument("--attackers", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=12, help="bcrypt cost of the file")
    parser.add_argument("--threads", type=int, default=2, help="server --threads")
    parser.add_argument("--attack-max", type=int, default=5000,
                        help="wrong-password requests per attacker at most")
    parser.add_argument("--attack-seconds", type=float, default=60.0,
                        help="attack time at most")
    parser.add_argument("--attack-warmup", type=float, default=0.5,
                        help="seconds of attack before heartbeats are timed")
    parser.add_argument("--attack-only", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("users", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack_only:
        return attack_only(args)
    users = [f"user{k}" for k in range(args.attackers)]
    with tempfile.TemporaryDirectory(prefix="torc-bench-auth-") as tmp:
        htpasswd = Path(tmp) / "htpasswd"
        add_user(htpasswd, *RUNNER, rounds=args.rounds)
        for user in users:
            add_user(htpasswd, user, f"{user}-password", rounds=args.rounds)
        proc, port = start_server(os.path.join(tmp, "torc.db"), threads=args.threads,
                                  extra_args=["--auth-file", str(htpasswd)])
        try:
            report = trio.run(measure, f"http://127.0.0.1:{port}/torc-service/v1", args, users)
        finally:
            stop_server(proc)
    report["server"] = {"threads": args.threads, "bcrypt_rounds": args.rounds,
                        "cpus": os.cpu_count(), "cwd": os.getcwd()}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
