"""`torc-trio serve`: configuration, start-up, signals, snapshots and graceful shutdown.

Theory of operation
-------------------
:func:`serve` opens the store, rebuilds every workflow's engine from its rows, and runs under
one nursery: the group-commit writer, the lease timer, the signal watcher, the snapshot timer
and Hypercorn's trio worker serving the Quart-Trio app. Once the socket listens it prints
``TORC_SERVER_PORT=<port>`` (flushed) so a parent process started with ``--port 0`` learns it.

Shutdown (SIGTERM/SIGINT): Hypercorn stops accepting and gives in-flight requests
``--shutdown-grace-seconds`` to finish; websocket feeds are closed; the writer commits whatever
is pending; the database is closed; the process exits 0.

Snapshots (SIGUSR1, ``--snapshot-interval-seconds``): a consistent copy through SQLite's backup
API, written next to ``TORC_SERVER_SNAPSHOT_PATH`` and renamed over it atomically, older copies
rotated to ``PATH.1 .. PATH.(KEEP-1)``; then ``TORC_SNAPSHOT_DONE=<path>`` is printed.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import hypercorn.config
import hypercorn.trio
import trio

from .admission import Admission
from .app import create_app
from .auth import Authenticator
from .feed import DEFAULT_QUEUE_SIZE, Feed
from .service import Service
from .store import Store

log = logging.getLogger("torc_net.server")

DEFAULT_PORT = 8085
DEFAULT_DATABASE = "torc.db"
DEFAULT_SNAPSHOT_PATH = "./torc_snapshots/torc.db"
DEFAULT_SNAPSHOT_KEEP = 5
DEFAULT_LEASE_SECONDS = 1800.0


@dataclass(slots=True)
class ServerConfig:
    database: str = DEFAULT_DATABASE
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    threads: int = 4
    auth_file: str | None = None
    require_auth: bool = False
    admin_users: list[str] = field(default_factory=list)
    snapshot_interval_s: float | None = None
    snapshot_path: str = DEFAULT_SNAPSHOT_PATH
    snapshot_keep: int = DEFAULT_SNAPSHOT_KEEP
    lease_s: float = DEFAULT_LEASE_SECONDS
    max_concurrent_requests: int | None = None
    max_queued_requests: int | None = None
    max_queue_wait_s: float = 5.0
    shutdown_grace_s: float = 10.0
    feed_queue_size: int = DEFAULT_QUEUE_SIZE
    log_level: str = "info"
    handle_signals: bool = True
    print_port: bool = True

    @property
    def max_concurrent(self) -> int:
        return self.max_concurrent_requests or max(64, self.threads * 64)

    @property
    def max_queued(self) -> int:
        if self.max_queued_requests is not None:
            return self.max_queued_requests
        return max(1024, 4 * self.max_concurrent)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `torc-trio serve` (Torc's `torc-server run`)."""
    parser.add_argument(
        "-d", "--database", default=DEFAULT_DATABASE, metavar="PATH",
        help="SQLite database file, or ':memory:' for an in-memory database with snapshots "
        f"(default: {DEFAULT_DATABASE})",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind; use a routable hostname or 0.0.0.0 for "
                        "multi-node workflows (default: 127.0.0.1)")
    parser.add_argument("-p", "--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default: {DEFAULT_PORT}; 0 picks a free port, printed as "
                        "TORC_SERVER_PORT=<port>)")
    parser.add_argument("--threads", type=int, default=4,
                        help="worker threads for blocking work: commits, snapshots, password "
                        "checks (default: 4)")
    parser.add_argument("--auth-file", metavar="FILE",
                        help="htpasswd file with bcrypt hashes (htpasswd -B, or "
                        "`torc-trio htpasswd add`)")
    parser.add_argument("--require-auth", action="store_true",
                        help="every request needs valid credentials (needs --auth-file)")
    parser.add_argument("--admin-user", action="append", default=[], metavar="NAME",
                        help="a user who sees every workflow (repeatable)")
    parser.add_argument("--snapshot-interval-seconds", type=float, default=None, metavar="N",
                        help="write a snapshot every N seconds (TORC_SERVER_SNAPSHOT_PATH, "
                        "TORC_SERVER_SNAPSHOT_KEEP); SIGUSR1 writes one at any time")
    parser.add_argument("--lease-seconds", type=float, default=DEFAULT_LEASE_SECONDS,
                        help="how long a runner's claim survives without contact (default: "
                        "1800, so runners outlast a 20-minute server outage)")
    parser.add_argument("--max-concurrent-requests", type=int, default=None, metavar="N",
                        help="requests worked on at once; more get 503 + Retry-After "
                        "(default: 64 x threads)")
    parser.add_argument("--max-queued-requests", type=int, default=None, metavar="N",
                        help="requests past --max-concurrent-requests wait in a FIFO queue of "
                        "this size before 503 (default: max(1024, 4 x max concurrent))")
    parser.add_argument("--max-queue-wait-seconds", type=float, default=5.0, metavar="S",
                        help="a queued request waits at most this long, then 503 (default: 5)")
    parser.add_argument("--shutdown-grace-seconds", type=float, default=10.0,
                        help="on SIGTERM, time in-flight requests get to finish (default: 10)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error", "critical"],
                        help="log level (default: info)")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    keep_text = os.environ.get("TORC_SERVER_SNAPSHOT_KEEP", str(DEFAULT_SNAPSHOT_KEEP))
    try:
        keep = int(keep_text)
    except ValueError:
        raise SystemExit(
            f"TORC_SERVER_SNAPSHOT_KEEP: expected an integer, got {keep_text!r}"
        ) from None
    if args.threads < 1:
        raise SystemExit("--threads must be >= 1")
    if args.require_auth and not args.auth_file:
        raise SystemExit("--require-auth needs --auth-file")
    return ServerConfig(
        database=args.database,
        host=args.host,
        port=args.port,
        threads=args.threads,
        auth_file=args.auth_file,
        require_auth=args.require_auth,
        admin_users=list(args.admin_user),
        snapshot_interval_s=args.snapshot_interval_seconds,
        snapshot_path=os.environ.get("TORC_SERVER_SNAPSHOT_PATH", DEFAULT_SNAPSHOT_PATH),
        snapshot_keep=max(1, keep),
        lease_s=args.lease_seconds,
        max_concurrent_requests=args.max_concurrent_requests,
        max_queued_requests=args.max_queued_requests,
        max_queue_wait_s=args.max_queue_wait_seconds,
        shutdown_grace_s=args.shutdown_grace_seconds,
        log_level=args.log_level,
    )


def _emit(line: str) -> None:
    print(line, flush=True)


@dataclass(slots=True)
class Running:
    """Handles of a running server, given to in-process callers by ``task_status``."""

    port: int
    service: Service
    store: Store
    shutdown: trio.Event
    request_snapshot: Callable[[], None]  # like SIGUSR1
    admission: Admission


async def serve(
    config: ServerConfig, *, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the server until SIGTERM/SIGINT (or ``Running.shutdown`` is set)."""
    limiter = trio.CapacityLimiter(config.threads)
    store = Store(config.database, limiter=limiter)
    await trio.to_thread.run_sync(store.open_sync, limiter=limiter)
    feed = Feed(config.feed_queue_size)
    service = Service(store, feed, lease_s=config.lease_s, limiter=limiter)
    auth = Authenticator(config.auth_file, require_auth=config.require_auth,
                         admin_users=config.admin_users, limiter=limiter)
    await service.load()
    log.info("loaded %d workflows from %s", len(service.workflows), config.database)
    app = create_app(service, auth)
    admission = Admission(app, config.max_concurrent, max_queued=config.max_queued,
                          max_wait_s=config.max_queue_wait_s)

    hc = hypercorn.config.Config()
    host = f"[{config.host}]" if ":" in config.host else config.host
    hc.bind = [f"{host}:{config.port}"]
    hc.graceful_timeout = config.shutdown_grace_s
    hc.keep_alive_timeout = 120
    hc.backlog = 1024
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.h11_max_incomplete_size = 64 * 1024
    hc.websocket_ping_interval = 20

    shutdown = trio.Event()
    # Capacity 1: requests arriving while one is queued coalesce into it.
    snapshot_send, snapshot_receive = trio.open_memory_channel[None](1)
    snapshot_lock = trio.Lock()
    served = trio.Event()

    def request_snapshot() -> None:
        try:
            snapshot_send.send_nowait(None)
        except trio.WouldBlock:
            pass

    async def take_snapshot() -> None:
        async with snapshot_lock:
            await store.flush()
            path = await store.snapshot(Path(config.snapshot_path), config.snapshot_keep)
            _emit(f"TORC_SNAPSHOT_DONE={path}")

    async def snapshot_worker() -> None:
        async for _ in snapshot_receive:
            try:
                await take_snapshot()
            except Exception:
                log.exception("snapshot failed")

    async def snapshot_timer(interval: float) -> None:
        while True:
            await trio.sleep(interval)
            request_snapshot()

    async def watch_signals() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1) as sigs:
            async for signum in sigs:
                if signum == signal.SIGUSR1:
                    request_snapshot()
                else:
                    log.info("signal %s: shutting down", signal.Signals(signum).name)
                    shutdown.set()

    async def run_http(*, task_status: trio.TaskStatus[list[str]]) -> None:
        # Hypercorn stops accepting at once on shutdown but keeps idle keep-alive connections
        # (every runner has one) until its grace period ends. We stop serving as soon as no
        # request is in flight, bounded by the same grace period.
        try:
            async with trio.open_nursery() as http_nursery:

                async def stop_when_drained() -> None:
                    await shutdown.wait()
                    with trio.move_on_after(config.shutdown_grace_s):
                        await trio.sleep(0.05)  # let requests that were just accepted start
                        await admission.wait_idle()
                    http_nursery.cancel_scope.cancel()

                async def hypercorn_serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
                    await hypercorn.trio.serve(
                        admission,  # type: ignore[arg-type]
                        hc,
                        shutdown_trigger=shutdown.wait,
                        task_status=task_status,
                    )
                    http_nursery.cancel_scope.cancel()

                http_nursery.start_soon(stop_when_drained)
                task_status.started(await http_nursery.start(hypercorn_serve))
        finally:
            served.set()

    async def close_feeds_on_shutdown() -> None:
        await shutdown.wait()
        feed.close_all()

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run_writer)
            nursery.start_soon(service.run_lease_timer)
            nursery.start_soon(snapshot_worker)
            nursery.start_soon(close_feeds_on_shutdown)
            if config.handle_signals:
                nursery.start_soon(watch_signals)
            if config.snapshot_interval_s and config.snapshot_interval_s > 0 and math.isfinite(
                config.snapshot_interval_s
            ):
                nursery.start_soon(snapshot_timer, config.snapshot_interval_s)
            binds = await nursery.start(run_http)
            port = int(binds[0].rsplit(":", 1)[1])
            running = Running(port, service, store, shutdown, request_snapshot, admission)
            if config.print_port:
                _emit(f"TORC_SERVER_PORT={port}")
            log.info("serving on %s (database %s)", binds[0], config.database)
            task_status.started(running)
            await served.wait()
            shutdown.set()
            with trio.move_on_after(30) as cs:
                cs.shield = True
                async with snapshot_lock:
                    await store.flush()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(store.close_sync)
    log.info("stopped")


def main_serve(args: argparse.Namespace) -> int:
    """Entry point of `torc-trio serve`; returns the exit status."""
    config = config_from_args(args)
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
    try:
        trio.run(serve, config)
    except KeyboardInterrupt:
        return 0
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torc-trio serve", description="Run the torc server.")
    add_serve_arguments(parser)
    return main_serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
