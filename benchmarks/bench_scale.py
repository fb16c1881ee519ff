"""Scale: a 1,000,000-job workflow in the shape of Torc's scale test, created and drained via HTTP.

``--rounds`` rounds (default 4) of ``--jobs / rounds`` parameterized no-op jobs; every job of
round r+1 depends on every job of round r (``depends_on_regexes: ["r<r>_.*"]``, which the
compiler stores through one barrier node per round). The workflow is created with ONE
``POST /workflows`` of the spec document (parameterized jobs keep it a few hundred bytes) and
drained by ``--runners`` synthetic runners (Trio tasks in this process, each with its own
:class:`torc_net.client.TorcClient`): claim ``--batch`` jobs in queue mode, complete them at once,
repeat; an empty claim while the workflow is not complete (the next round waits for its barrier)
sleeps 50 ms.

Once per mode of ``--modes`` (``file``: a file database in a temporary directory, WAL;
``memory``: ``:memory:`` with snapshots), each with a fresh ``python -m torc_net.server`` on
127.0.0.1. The server's RSS is sampled with psutil every 0.2 s. In memory mode, SIGUSR1 is sent
after the drain and ``snapshot_s`` is the time until the server prints ``TORC_SNAPSHOT_DONE=``
(``TORC_SERVER_SNAPSHOT_PATH`` points into the temporary directory). Prints ONE JSON object::

    {"jobs", "rounds", "file": {"create_s", "drain_s", "server_peak_rss_mb",
     "writer_peak_rss_mb", "server_cpu_s", "db_mb", ...}, "memory": {..., "snapshot_s"}}

``server_cpu_s`` counts the server's writer process too (a file database's commits run
there); ``writer_peak_rss_mb`` is that process's peak (0 in memory mode).

    python benchmarks/bench_scale.py [--jobs 1000000] [--rounds 4] [--modes file,memory]

Bounded: each phase has a timeout (``--timeout``). Timings are not asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import trio
from _common import start_server, stop_server, tree_cpu_s

from torc_net.client import TorcClient


def spec_document(jobs: int, rounds: int) -> dict[str, Any]:
    per = jobs // rounds
    out = []
    for r in range(rounds):
        count = per if r < rounds - 1 else jobs - per * (rounds - 1)
        job: dict[str, Any] = {"name": f"r{r}_{{i}}", "command": "true",
                               "parameters": {"i": f"1:{count}"}}
        if r:
            job["depends_on_regexes"] = [f"r{r - 1}_.*"]
        out.append(job)
    return {"name": "bench_scale", "jobs": out}


class Server:
    """A server subprocess: its stdout lines go to a queue, its RSS is sampled every 0.2 s."""

    def __init__(self, database: str, tmp: str, threads: int) -> None:
        self.snapshot_path = os.path.join(tmp, "snapshots", "torc.db")
        env = dict(os.environ, TORC_SERVER_SNAPSHOT_PATH=self.snapshot_path)
        self.proc, self.port = start_server(database, threads=threads, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self.peak_rss = 0
        self.children_peak_rss = 0
        self.phase_peak = 0
        self.samples = 0
        self._ps = psutil.Process(self.proc.pid)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._sample, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self._ps.memory_info().rss
                self.peak_rss = max(self.peak_rss, rss)
                self.phase_peak = max(self.phase_peak, rss)
                self.samples += 1
            except psutil.Error:
                return
            try:  # the writer process of a file database (its own SQLite page cache)
                children = sum(c.memory_info().rss for c in self._ps.children())
                self.children_peak_rss = max(self.children_peak_rss, children)
            except psutil.Error:
                pass
            self._stop.wait(0.2)

    def phase_peak_mb(self) -> float:
        """Peak RSS since the previous call (sampled), in MB."""
        try:
            self.phase_peak = max(self.phase_peak, self._ps.memory_info().rss)
        except psutil.Error:
            pass
        peak, self.phase_peak = self.phase_peak, 0
        return round(peak / 2**20, 1)

    def rss_mb(self) -> float:
        try:
            return round(self._ps.memory_info().rss / 2**20, 1)
        except psutil.Error:
            return 0.0

    def cpu_s(self) -> float:
        """The server's CPU, its writer process's included."""
        return round(tree_cpu_s(self._ps), 2)

    def snapshot(self, timeout: float) -> float:
        t0 = time.perf_counter()
        self.proc.send_signal(signal.SIGUSR1)
        deadline = t0 + timeout
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise RuntimeError("no TORC_SNAPSHOT_DONE within the timeout")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line.startswith("TORC_SNAPSHOT_DONE="):
                return time.perf_counter() - t0

    def stop(self) -> None:
        self._stop.set()
        stop_server(self.proc, timeout=60)


async def create_and_drain(url: str, args: argparse.Namespace, server: Server) \
        -> dict[str, Any]:
    spec = spec_document(args.jobs, args.rounds)
    out: dict[str, Any] = {"spec_bytes": len(json.dumps(spec))}
    async with TorcClient(url, wait_for_server_s=args.timeout,
                          attempt_timeout_s=args.timeout) as admin:
        server.phase_peak_mb()
        t0 = time.perf_counter()
        with trio.fail_after(args.timeout):
            created = await admin.create_workflow(spec)
        out["create_s"] = round(time.perf_counter() - t0, 3)
        out["create_peak_rss_mb"] = server.phase_peak_mb()
        out["rss_after_create_mb"] = server.rss_mb()
        wf = created["id"]
        if created["jobs"] != args.jobs:
            raise RuntimeError(f"created {created['jobs']} jobs, expected {args.jobs}")
        out["barriers"] = created["barriers"]
        out["dependencies_stored"] = created["dependencies"]

        latencies: list[float] = []
        done = 0
        requests = retries = 0

        async def runner(k: int) -> None:
            nonlocal done, requests, retries
            async with TorcClient(url, wait_for_server_s=args.timeout, max_idle=1) as client:
                cn = (await client.register_compute_node(wf, hostname=f"scale{k}", pid=k))["id"]
                seq = 0
                while True:
                    seq += 1
                    t = time.perf_counter()
                    reply = await client.claim_jobs(wf, cn, limit=args.batch, claim_seq=seq)
                    jobs = reply["jobs"]
                    if not jobs:
                        if reply["is_complete"]:
                            break
                        await trio.sleep(0.05)  # the next round waits for its barrier
                        continue
                    results = [{"job_id": j["id"], "attempt": j["attempt"],
                                "run_id": j["run_id"], "return_code": 0, "status": "completed",
                                "exec_time_s": 0.0} for j in jobs]
                    await client.complete_jobs(wf, cn, results)
                    latencies.append((time.perf_counter() - t) * 1000)
                    done += len(jobs)
                requests += client.requests
                retries += client.retries

        t1 = time.perf_counter()
        with trio.fail_after(args.timeout):
            async with trio.open_nursery() as nursery:
                for k in range(args.runners):
                    nursery.start_soon(runner, k)
        out["drain_s"] = round(time.perf_counter() - t1, 3)
        status = await admin.workflow_status(wf)
        if status["counts"]["completed"] != args.jobs or not status["is_complete"]:
            raise RuntimeError(f"drain incomplete: {status}")
        latencies.sort()
        out["jobs_per_s"] = round(args.jobs / (time.perf_counter() - t1), 1)
        out["completed"] = status["counts"]["completed"]
        out["claim_complete_p50_ms"] = round(latencies[len(latencies) // 2], 1)
        out["claim_complete_max_ms"] = round(latencies[-1], 1)
        out["requests"] = requests
        out["retries"] = retries
        out["drain_peak_rss_mb"] = server.phase_peak_mb()
        out["rss_after_drain_mb"] = server.rss_mb()
    return out


def db_size_mb(paths: list[Path]) -> float:
    return round(sum(p.stat().st_size for p in paths if p.exists()) / 2**20, 1)


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"torc-scale-{mode}-") as tmp:
        db = os.path.join(tmp, "torc.db") if mode == "file" else ":memory:"
        server = Server(db, tmp, args.threads)
        try:
            url = f"http://127.0.0.1:{server.port}/torc-service/v1"
            out = trio.run(create_and_drain, url, args, server)
            if mode == "memory":
                out["snapshot_s"] = round(server.snapshot(args.timeout), 3)
                out["snapshot_peak_rss_mb"] = server.phase_peak_mb()
                snap = Path(server.snapshot_path)
                out["db_mb"] = db_size_mb([snap])
            else:
                out["db_mb"] = db_size_mb([Path(db), Path(db + "-wal"), Path(db + "-shm")])
            out["server_peak_rss_mb"] = round(server.peak_rss / 2**20, 1)
            out["writer_peak_rss_mb"] = round(server.children_peak_rss / 2**20, 1)
            out["server_cpu_s"] = server.cpu_s()
            out["rss_samples"] = server.samples
        finally:
            server.stop()
        if mode == "file":
            out["db_mb_after_shutdown"] = db_size_mb([Path(db), Path(db + "-wal")])
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--modes", default="file,memory",
                        help="comma-separated: file, memory (default: both)")
    parser.add_argument("--runners", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4, help="server --threads")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound of each phase (s)")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in ("file", "memory"):
            parser.error(f"--modes: unknown mode {m!r}")
    if args.rounds < 1 or args.jobs < args.rounds:
        parser.error("need --rounds >= 1 and --jobs >= --rounds")
    report: dict[str, Any] = {"benchmark": "scale", "jobs": args.jobs, "rounds": args.rounds,
                              "runners": args.runners, "batch": args.batch,
                              "cpus": os.cpu_count()}
    for m in modes:
        report[m] = run_mode(m, args)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
