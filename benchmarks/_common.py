"""What the benchmarks share: a `serve` subprocess on 127.0.0.1 and percentiles.

Benchmarks run as scripts (``python benchmarks/bench_x.py``), so this folder is on sys.path.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import trio

    from torc_net.http import HttpConnectionPool


def tree_cpu_s(proc: Any) -> float:
    """User + system CPU seconds of a server (a ``psutil.Process``) and its live children
    (the writer process of a file database): what its requests cost the machine, wherever
    they ran."""
    import psutil

    total = 0.0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for member in members:
        try:
            t = member.cpu_times()
        except psutil.Error:  # a child that ended meanwhile
            continue
        total += t.user + t.system
    return total


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def start_server(
    database: str,
    *,
    threads: int,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    preexec_fn: Callable[[], object] | None = None,
    cwd: str | None = None,
) -> tuple[subprocess.Popen[str], int]:
    """Start ``torc_net.server`` on a free port of 127.0.0.1; return the process and port.
    Its stdout stays open for the caller (e.g. to watch for TORC_SNAPSHOT_DONE=). ``cwd``:
    where it runs (``python -m`` imports from there first: a checkout's directory wins over
    PYTHONPATH)."""
    argv = [sys.executable, "-m", "torc_net.server", "--database", database, "--port", "0",
            "--host", "127.0.0.1", "--threads", str(threads), "--log-level", "warning",
            *extra_args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=cwd,
                            env=dict(env) if env is not None else None, preexec_fn=preexec_fn)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("TORC_SERVER_PORT="):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, int(line.strip().split("=", 1)[1])


def tls_setup(directory: str) -> list[str]:
    """``--tls``: a throwaway CA (trustme) and a certificate for 127.0.0.1 in ``directory``;
    ``TORC_CA_FILE`` is set here so that this process's clients and its children trust it.
    Returns the server's flags."""
    import os

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_path, cert_path, key_path = (os.path.join(directory, name)
                                    for name in ("ca.pem", "server.pem", "server.key"))
    ca.cert_pem.write_to_path(ca_path)
    cert.private_key_pem.write_to_path(key_path)
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(cert_path, append=i > 0)
    os.environ["TORC_CA_FILE"] = ca_path
    return ["--tls-cert", cert_path, "--tls-key", key_path]


def stop_server(proc: subprocess.Popen[str], timeout: float = 30) -> None:
    """SIGTERM (the server drains and commits), SIGKILL if it does not go in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ping_summary(latencies: list[float]) -> dict[str, Any]:
    """How many /ping round trips, and their p50, p99 and max in ms."""
    return {"pings": len(latencies), "p50_ms": round(percentile(latencies, 0.5), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2),
            "max_ms": round(max(latencies, default=0.0), 2)}


async def pinger(pool: HttpConnectionPool, out: list[float], stop: trio.Event,
                 interval_s: float) -> None:
    """GET /ping every ``interval_s`` until ``stop``, appending each latency (ms) to ``out``:
    what a bystander sees of the server while a benchmark loads it."""
    import trio

    while not stop.is_set():
        t = time.perf_counter()
        resp = await pool.request("GET", "/ping")
        if resp.status != 200:
            raise RuntimeError(f"/ping: {resp.status}")
        out.append((time.perf_counter() - t) * 1000)
        with trio.move_on_after(interval_s):
            await stop.wait()
