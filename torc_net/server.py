"""`torc-trio serve`: configuration, start-up, signals, snapshots and graceful shutdown.

Theory of operation
-------------------
:func:`serve` opens the store, rebuilds every workflow's engine from its rows, and runs under
one nursery: the group-commit writer, the lease timer, the signal watcher, the snapshot timer
and Hypercorn's trio worker serving the Quart-Trio app. Once the socket listens it prints
``TORC_SERVER_PORT=<port>`` (flushed) so a parent process started with ``--port 0`` learns it,
then ``export TORC_API_URL=http://HOST:PORT/torc-service/v1`` with the host a client should use
(:func:`torc_net.config.client_host`), or ``--advertise-url``: the URL runners should use,
which GET /version reports too.

URL file (``--url-file PATH``): once listening, the advertised URL is written to a temporary
file beside PATH and renamed over it, on every start; runners started with
``TORC_API_URL_FILE=PATH`` read it again when the server stops answering, so a server restarted
at another address (another host) is found. It is left in place at exit: it names the last
server started, which the next start replaces.

Pid file (``--pid-file PATH``): checked before anything else is done — a file naming a running
torc-trio server refuses the start (naming its pid), one naming a process that is gone or is
something else is stale and will be replaced, and a file that holds no pid is never
overwritten. Once listening (before the port line) our pid is written to a temporary file beside
it and renamed over it; at exit it is removed if it still names us.

Shutdown (SIGTERM/SIGINT): Hypercorn stops accepting and gives in-flight requests
``--shutdown-grace-seconds`` to finish; websocket feeds are closed; the writer commits whatever
is pending; the database is closed; the process exits 0.

Snapshots (SIGUSR1, ``--snapshot-interval-seconds``, and a last one when an in-memory server
shuts down cleanly): a consistent copy through SQLite's backup API, written next to
``TORC_SERVER_SNAPSHOT_PATH`` and renamed over it atomically, older copies rotated to
``PATH.1 .. PATH.(KEEP-1)``; then ``TORC_SNAPSHOT_DONE=<path>`` is printed. ``--load-snapshot
PATH`` starts an in-memory server from such a file.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from . import wire
from .admission import Admission
from .auth import Authenticator
from .config import ServerConfig, add_serve_arguments, advertised_url, config_from_args
from .endpoints import all_endpoints
from .fastpath import FastPath
from .feed import Feed
from .hangup import hang_up
from .lazy import LazyApp
from .routes import ROUTES
from .service import Service
from .store import Store, StoreError
from .tls_server import TlsConfig
from .url_file import UrlFileError, write_url_file
from .wire import Wire

log = logging.getLogger("torc_net.server")

def port_of(binds: list[str]) -> int:
    """The port Hypercorn bound (``--port 0`` picks one)."""
    return int(binds[0].rsplit(":", 1)[1])


def _emit(line: str) -> None:
    print(line, flush=True)


class PidFileError(Exception):
    """The pid file forbids this start (a server runs with it, or it is no pid file)."""


def _is_torc_server(pid: int) -> bool | None:
    """Whether process ``pid`` is a running torc-trio server (None: it cannot be inspected)."""
    import psutil  # only with a pid file: its import is ~25 ms of every server's start

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        argv = proc.cmdline()
    except psutil.NoSuchProcess:  # gone (a zombie too)
        return False
    except psutil.AccessDenied:
        return None
    if "torc_net.server" in argv:
        return True
    names = {os.path.basename(arg) for arg in argv}
    return "serve" in argv and bool(names & {"torc-trio", "torc_cli.main"})


def _pid_in(path: Path) -> int | None:
    """The pid a pid file holds; None if there is no file, or an empty one (never ours: ours
    are written whole). A file holding anything else is no pid file: refused."""
    try:
        with open(path, "rb") as f:
            data = f.read(64)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PidFileError(f"--pid-file {path}: {exc.strerror or exc}") from None
    text = data.decode("ascii", "replace").strip()
    if not text:
        return None
    if not text.isdigit() or len(data) >= 64:
        raise PidFileError(f"--pid-file {path} exists and holds no pid: not overwriting it")
    return int(text)


def check_pid_file(path: Path) -> None:
    """Refuse to start if ``path`` names a running torc-trio server or is no pid file, or if
    its folder cannot take it; a stale one (its process gone, or another program) is fine."""
    pid = _pid_in(path)
    if pid is not None and pid != os.getpid():
        server = _is_torc_server(pid)
        if server:
            raise PidFileError(f"--pid-file {path}: the torc-trio server with pid {pid} is "
                               f"running (stop it with kill {pid}, or give another pid file)")
        if server is None:
            raise PidFileError(f"--pid-file {path} names pid {pid}, which runs but cannot be "
                               "inspected (another user's?); remove the file if that is no "
                               "torc-trio server")
    folder = path.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise PidFileError(f"--pid-file {path}: cannot write in {folder}")


def write_pid_file(path: Path) -> None:
    """Our pid into ``path``, whole or not at all (a temporary file renamed over it)."""
    pid = os.getpid()
    tmp = path.with_name(f".{path.name}.{pid}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, f"{pid}\n".encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_pid_file(path: Path) -> None:
    """Remove ``path`` if it names us (another server may have taken it over since)."""
    try:
        if _pid_in(path) == os.getpid():
            path.unlink(missing_ok=True)
    except (PidFileError, OSError) as exc:
        log.warning("pid file %s not removed: %s", path, exc)


@dataclass(slots=True)
class Running:
    """Handles of a running server, given to in-process callers by ``task_status``."""

    port: int
    service: Service
    store: Store
    shutdown: trio.Event
    request_snapshot: Callable[[], None]  # like SIGUSR1
    admission: Admission
    #: set once the server has stopped and closed its database
    stopped: trio.Event
    #: the connection loop (torc_net.wire): what it served itself, what it handed over
    wire: Wire


async def serve(
    config: ServerConfig, *, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the server until SIGTERM/SIGINT (or ``Running.shutdown`` is set)."""
    pid_file = Path(config.pid_file) if config.pid_file else None
    if pid_file is not None:
        check_pid_file(pid_file)
    # Three kinds of blocking work, each on threads of its own, so that none can starve
    # another: the database (one thread; its lock serializes it anyway), password checks
    # (one: bcrypt is slow by design), and parsing specs / decoding big bodies.
    store = Store(config.database, load_from=config.load_snapshot, sync=config.sync,
                  writer=config.writer)
    await trio.to_thread.run_sync(store.open_sync, limiter=store.limiter)
    feed = Feed(config.feed_queue_size)
    service = Service(store, feed, lease_s=config.lease_s, clock=config.clock,
                      parse_limiter=trio.CapacityLimiter(config.threads),
                      max_jobs=config.max_jobs_per_workflow,
                      read_job_files=config.read_job_files)
    auth = Authenticator(config.auth_file, require_auth=config.require_auth,
                         admin_users=config.admin_users, limiter=trio.CapacityLimiter(1),
                         cache_ttl=config.credential_cache_ttl_s)
    service.access.admins = auth.admins  # access_check of another user asks whether they are
    await service.load()
    log.info("loaded %d workflows from %s", len(service.workflows), config.database)
    #: what GET /version says of where we are (the port is known once we listen)
    where: dict[str, str | None] = {"url": None, "url_file": config.url_file}

    endpoints = all_endpoints(where)

    def build_app() -> Any:
        # Quart is imported only when something needs it (torc_net.lazy).
        from .app import create_app

        return create_app(service, auth, endpoints, max_depth=config.max_json_depth,
                          body_timeout_s=config.body_timeout_s)

    app = LazyApp(build_app)
    fast = None if not config.fast_path else FastPath(
        app, service, auth, ROUTES, endpoints,  # type: ignore[arg-type]
        max_depth=config.max_json_depth, body_timeout_s=config.body_timeout_s)
    admission = Admission(fast or app, config.max_concurrent, max_queued=config.max_queued,
                          max_wait_s=config.max_queue_wait_s)

    hc = TlsConfig()  # Hypercorn's, answering plain HTTP on a TLS port (torc_net.tls_server)
    host = f"[{config.host}]" if ":" in config.host else config.host
    hc.bind = [f"{host}:{config.port}"]
    hc.graceful_timeout = config.shutdown_grace_s
    # Longer than any quiet spell of a runner (heartbeats at most every 10 s, claims at the
    # poll interval): Hypercorn's 5 s would close the connection of a runner polling less
    # often, and every reconnection is a handshake (with TLS, a few ms of the server's CPU:
    # BENCHMARKS.md, "HTTPS").
    hc.keep_alive_timeout = 120
    # A runner keeps one connection for its life. Hypercorn's default closes a connection
    # after 1,000 requests: a busy runner reconnected every 1,000 claims (bench_server --tls:
    # 6,000 claims by 2 runners opened 7-8 connections, each a TLS handshake).
    hc.keep_alive_max_requests = 1_000_000_000
    # Room for a burst of allocations connecting at once: with Hypercorn's default (100) the
    # connections beyond the queue wait for their SYN to be retried, ~1 s later (bench_burst,
    # 1,000 allocations, 3 interleaved rounds each: slowest first claim 2.36 s at 100, 1.45 s
    # at 1,024; BENCHMARKS.md, "Issue 17's targets"). The kernel caps it at somaxconn.
    hc.backlog = 1024
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    # The bound on a request's head (memory per connection, not speed: our clients' heads are
    # under 1 KiB, a claim's body is read by its Content-Length, not under this bound).
    hc.h11_max_incomplete_size = 64 * 1024
    hc.websocket_ping_interval = 20
    if config.tls_cert:
        # Hypercorn's own TLS. HTTP/1.1 only (every client here speaks it, the websocket
        # feed included); a browser offered h2 would take it.
        hc.certfile = config.tls_cert
        hc.keyfile = config.tls_key
        hc.alpn_protocols = ["http/1.1"]
        hc.ssl_handshake_timeout = 10

    shutdown = trio.Event()
    stopped = trio.Event()
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

    async def watch_parent(pid: int) -> None:
        # Polled: portable, and a second's delay is fine for a server nobody talks to anymore.
        while os.getppid() == pid:  # noqa: ASYNC110 -- no event tells us; poll the kernel
            await trio.sleep(0.5)
        log.warning("process %d, which started this server, has ended: shutting down", pid)
        shutdown.set()

    async def watch_signals() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1) as sigs:
            async for signum in sigs:
                if signum == signal.SIGUSR1:
                    request_snapshot()
                else:
                    log.info("signal %s: shutting down", signal.Signals(signum).name)
                    shutdown.set()

    async def run_http(*, task_status: trio.TaskStatus[tuple[list[str], Wire]]) -> None:
        # Hypercorn stops accepting at once on shutdown but keeps idle keep-alive connections
        # (every runner has one) until its grace period ends. We stop serving as soon as no
        # request is in flight, bounded by the same grace period.
        try:
            async with trio.open_nursery() as http_nursery:

                async def stop_when_drained(port: int) -> None:
                    await shutdown.wait()
                    with trio.move_on_after(config.shutdown_grace_s):
                        await trio.sleep(0.05)  # let requests that were just accepted start
                        await admission.wait_idle()
                    http_nursery.cancel_scope.cancel()
                    # Hypercorn shields its writes from cancellation: a client that stopped
                    # reading would keep its connection's task, and so the server, alive.
                    # Once the cancelled connections had a moment to close, hang up on the
                    # rest (torc_net.hangup).
                    with trio.CancelScope(shield=True):
                        await trio.sleep(0.5)
                        hang_up(port)

                async def http_serve(*, task_status: trio.TaskStatus[tuple[list[str], Wire]]
                                     ) -> None:
                    await wire.serve(admission, fast, hc, shutdown_trigger=shutdown.wait,
                                     task_status=task_status)
                    http_nursery.cancel_scope.cancel()

                binds, wire_loop = await http_nursery.start(http_serve)
                port = port_of(binds)
                http_nursery.start_soon(stop_when_drained, port)
                http_nursery.start_soon(feed.run_watchdog, port)
                task_status.started((binds, wire_loop))
        finally:
            served.set()

    async def close_feeds_on_shutdown() -> None:
        await shutdown.wait()
        feed.close_all()

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run_writer)
            nursery.start_soon(service.timer.run, service)
            nursery.start_soon(service.run_reloads)
            nursery.start_soon(snapshot_worker)
            nursery.start_soon(close_feeds_on_shutdown)
            if config.handle_signals:
                nursery.start_soon(watch_signals)
            if config.parent_pid is not None:
                nursery.start_soon(watch_parent, config.parent_pid)
            if config.snapshot_interval_s and config.snapshot_interval_s > 0 and math.isfinite(
                config.snapshot_interval_s
            ):
                nursery.start_soon(snapshot_timer, config.snapshot_interval_s)
            binds, wire_loop = await nursery.start(run_http)
            port = port_of(binds)
            local = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else host
            about = {"command_pid": config.parent_pid} if config.parent_pid else {}
            store.note_holder(url=f"{config.scheme}://{local}:{port}/torc-service/v1",
                              **about)
            running = Running(port, service, store, shutdown, request_snapshot, admission,
                              stopped, wire_loop)
            advertised = advertised_url(config, port)
            where["url"] = advertised
            if pid_file is not None:
                write_pid_file(pid_file)
            if config.url_file is not None:
                write_url_file(Path(config.url_file), advertised)
            if config.print_port:
                _emit(f"TORC_SERVER_PORT={port}")  # first: parents parse it
                _emit(f"export TORC_API_URL={advertised}")
                _emit(f"dashboard: {advertised.split('/torc-service/')[0]}/")
            log.info("serving on %s (database %s)", binds[0], config.database)
            task_status.started(running)
            await served.wait()
            shutdown.set()
            with trio.move_on_after(30) as cs:
                cs.shield = True
                async with snapshot_lock:
                    await store.flush()
                if store.in_memory and store.unsaved:  # the last state outlives the server
                    try:
                        await take_snapshot()
                    except Exception:
                        log.exception("final snapshot failed")
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()
        if pid_file is not None:
            remove_pid_file(pid_file)
        stopped.set()
    log.info("stopped")


def main_serve(args: argparse.Namespace) -> int:
    """Entry point of `torc-trio serve`; returns the exit status."""
    return main_run(config_from_args(args))


async def _serve_and(config: ServerConfig,
                     on_listening: Callable[[int], Awaitable[None]] | None) -> None:
    """Serve; once listening, run ``on_listening(port)`` beside it (ended when serving ends)."""
    async with trio.open_nursery() as nursery:
        async def served(task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED) \
                -> None:
            await serve(config, task_status=task_status)
            nursery.cancel_scope.cancel()

        running = await nursery.start(served)
        if on_listening is not None:
            await on_listening(running.port)


#: The cyclic garbage collector's thresholds in a server process (CPython's: 700, 10, 10).
GC_THRESHOLDS = (50_000, 10, 10)


def tune_gc() -> None:
    """Collect cyclic garbage every 50,000 allocations instead of every 700.

    Why: nearly everything a request allocates is freed by reference counting, but a young
    collection every 700 allocations found each request's objects still in flight and promoted
    them, so older collections (a full one: 78 ms) walked them again. In a 1,000-allocation
    burst the server spent 1.3-1.5 s of its 9.6-10.5 s of CPU in the collector, ~0.5 s with
    this (BENCHMARKS.md, burst). Cyclic garbage (a task's exception and its frames) waits
    longer to be freed: at most one young generation's allocations. ``gc.freeze()`` of what
    start-up made was tried too: its older collections took three times as long (89 -> 250 ms
    for the same six) and the burst ran slower, so it is not done."""
    gc.set_threshold(*GC_THRESHOLDS)


def main_run(config: ServerConfig,
             on_listening: Callable[[int], Awaitable[None]] | None = None) -> int:
    """Run a server until it is stopped (a signal); returns the exit status. Shared by `serve`
    and `dash` (which says where its dashboard is once it listens)."""
    tune_gc()
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
    try:
        trio.run(_serve_and, config, on_listening)
    except BaseException as raised:
        exc = _alone(raised)  # (the nursery beside `dash`'s announcement wraps it in a group)
        if isinstance(exc, KeyboardInterrupt):
            return 0
        if isinstance(exc, (StoreError, PidFileError, UrlFileError)):  # cannot be served: say why
            print(f"torc-trio serve: error: {exc}", file=sys.stderr, flush=True)
            return 2
        raise
    return 0


def _alone(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (else ``exc`` itself)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torc-trio serve", description="Run the torc server.")
    add_serve_arguments(parser)
    return main_serve(parser.parse_args(argv))


def exit_now(code: int) -> None:
    """Exit at once after a clean shutdown: the database is closed and the logs are flushed;
    tearing down a server holding a million jobs' state object by object would only delay the
    exit (0.3 s at 10,000 jobs) and whoever waits for it."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
