"""The server's configuration: the flags of `torc-trio serve` and what they become.

Kept apart from :mod:`torc_net.server` so that the CLI can offer `serve --help` and start a
standalone server without importing Hypercorn and Quart (a third of a second per command).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torc_core.parse import DEFAULT_MAX_JOBS

from .feed import DEFAULT_QUEUE_SIZE
from .url_file import UrlFileError, check_server_url, check_url_file_target
from .validate import DEFAULT_MAX_DEPTH

#: Torc's (`torc-server run` listens on 8080, and clients look for a server there).
DEFAULT_PORT = 8080
DEFAULT_DATABASE = "torc.db"
DEFAULT_SNAPSHOT_PATH = "./torc_snapshots/torc.db"
DEFAULT_SNAPSHOT_KEEP = 5
DEFAULT_LEASE_SECONDS = 1800.0
#: How long a verified password is remembered (Torc's default; torc_net.auth's too).
DEFAULT_CREDENTIAL_CACHE_TTL = 60.0
API_PATH = "/torc-service/v1"


@dataclass(slots=True)
class ServerConfig:
    database: str = DEFAULT_DATABASE
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    threads: int = 4
    auth_file: str | None = None
    require_auth: bool = False
    credential_cache_ttl_s: float = DEFAULT_CREDENTIAL_CACHE_TTL
    admin_users: list[str] = field(default_factory=list)
    snapshot_interval_s: float | None = None
    snapshot_path: str = DEFAULT_SNAPSHOT_PATH
    snapshot_keep: int = DEFAULT_SNAPSHOT_KEEP
    #: With ':memory:': start from this SQLite file (a snapshot) when it exists.
    load_snapshot: str | None = None
    lease_s: float = DEFAULT_LEASE_SECONDS
    #: The service's one clock (wall-clock seconds: lease deadlines are stored). Not a flag:
    #: tests give it ``base + trio.current_time()`` to drive leases with a MockClock.
    clock: Callable[[], float] = time.time
    max_concurrent_requests: int | None = None
    max_queued_requests: int | None = None
    max_queue_wait_s: float = 5.0
    shutdown_grace_s: float = 10.0
    feed_queue_size: int = DEFAULT_QUEUE_SIZE
    log_level: str = "info"
    #: bounds on what one request may ask of the server
    max_jobs_per_workflow: int = DEFAULT_MAX_JOBS
    max_json_depth: int = DEFAULT_MAX_DEPTH
    body_timeout_s: float = 30.0
    #: SQLite synchronous mode of a file database: "full" (a commit is on disk when it is
    #: acknowledged) or "normal" (it survives a crash of the server, not of the machine)
    sync: str = "full"
    #: where a file database's commits run: "process" (a writer process, on another core)
    #: or "thread" (a thread of the server); see torc_net.store.core, Rule 9
    writer: str = "process"
    handle_signals: bool = True
    print_port: bool = True
    #: Shut down once this process is no longer our parent (it ended, even by SIGKILL).
    parent_pid: int | None = None
    #: Write our pid here once listening; remove it at exit (torc_net.server's pid file rules).
    pid_file: str | None = None
    #: Read jobs' output and resource-sample files named in results when a result carries no
    #: tail (torc_net.api_output). Not a flag: a path in a result is a client's word, so only
    #: `torc-trio dash` on a local database (same user, same machine) sets it.
    read_job_files: bool = False
    #: The URL runners should use (``--advertise-url``); None: derived from host and port
    #: (:func:`advertised_url`).
    advertise_url: str | None = None
    #: Write the advertised URL here (atomically) whenever the server starts listening.
    url_file: str | None = None
    #: PEM certificate (chain) and private key: serve HTTPS (Hypercorn's TLS) instead of HTTP
    tls_cert: str | None = None
    tls_key: str | None = None
    #: answer the runner protocol without Quart (torc_net.fastpath); off only to measure it
    fast_path: bool = True

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def max_concurrent(self) -> int:
        return self.max_concurrent_requests or max(64, self.threads * 64)

    @property
    def max_queued(self) -> int:
        if self.max_queued_requests is not None:
            return self.max_queued_requests
        return max(1024, 4 * self.max_concurrent)


#: Flags of Torc's `torc-server run` that change nothing here, and why: accepted so that Torc's
#: command lines work, and explained (in --help, and on stderr when given).
TORC_FLAGS_WITHOUT_EFFECT: dict[str, tuple[str, str]] = {
    "completion_check_interval_secs": (
        "--completion-check-interval-secs",
        "not needed: dependents are released the moment a job completes"),
    "enforce_access_control": (
        "--enforce-access-control",
        "always on with --auth-file: a user sees their own workflows and those shared with "
        "their access groups (and owner-less ones, unless --require-auth), an --admin-user "
        "sees all"),
    "log_dir": (
        "--log-dir",
        "not supported: the server logs to stderr; redirect it (2>>DIR/torc-server.log)"),
    "json_logs": (
        "--json-logs",
        "not supported: the server's log lines are plain text"),
    "daemon": (
        "--daemon",
        "not supported: the server stays in the foreground; start it with & or nohup (or in "
        "tmux, or under systemd) and find it with --pid-file"),
}


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `torc-trio serve`: all of Torc's `torc-server run` (with its short forms),
    and ours."""
    parser.add_argument(
        "-d", "--database", default=DEFAULT_DATABASE, metavar="PATH",
        help="SQLite database file, or ':memory:' for an in-memory database with snapshots "
        f"(default: {DEFAULT_DATABASE})",
    )
    parser.add_argument("-H", "--host", default="127.0.0.1",
                        help="address to bind; use a routable hostname or 0.0.0.0 for "
                        "multi-node workflows (default: 127.0.0.1, this machine only; Torc's is "
                        "0.0.0.0)")
    parser.add_argument("-u", "--url", dest="host", metavar="HOST", default=argparse.SUPPRESS,
                        help="Torc's deprecated alias of --host (a host name, not a URL)")
    parser.add_argument("-p", "--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default: {DEFAULT_PORT}, Torc's; 0 picks a free port, "
                        "printed as TORC_SERVER_PORT=<port>)")
    parser.add_argument("-t", "--threads", type=int, default=4,
                        help="worker threads for parsing and compiling specs and decoding large "
                        "bodies (default: 4); the database and password checks have one thread "
                        "each of their own")
    parser.add_argument("--auth-file", metavar="FILE",
                        help="htpasswd file with bcrypt hashes (htpasswd -B, or "
                        "`torc-trio htpasswd add`)")
    parser.add_argument("--require-auth", action="store_true",
                        help="every request needs valid credentials (needs --auth-file)")
    parser.add_argument("--credential-cache-ttl-secs", type=float,
                        default=DEFAULT_CREDENTIAL_CACHE_TTL, metavar="S",
                        help="remember a verified password this long, so that a runner's "
                        "requests do not each pay for a bcrypt check (0: check every time; "
                        f"default: {DEFAULT_CREDENTIAL_CACHE_TTL:g})")
    parser.add_argument("--advertise-url", metavar="URL", default=None,
                        help="the URL runners on other hosts should use, "
                        f"http://HOST:PORT{API_PATH}: put into the sbatch scripts of submit "
                        "and actions, and reported by GET /version (default: from --host and "
                        "the port; 0.0.0.0 gives this machine's host name)")
    parser.add_argument("--url-file", metavar="PATH", default=None,
                        help="write the advertised URL to PATH (whole, by rename) each time "
                        "the server starts; runners started with TORC_API_URL_FILE=PATH read "
                        "it again when the server stops answering, so a server restarted on "
                        "another host is found (put it on a file system the nodes share)")
    parser.add_argument("--tls-cert", metavar="PEM", default=None,
                        help="serve HTTPS with this certificate (chain), PEM; needs --tls-key. "
                        "Clients trust it through the system's CAs or --ca-file / TORC_CA_FILE")
    parser.add_argument("--tls-key", metavar="PEM", default=None,
                        help="the private key of --tls-cert, PEM (keep it mode 0600)")
    parser.add_argument("--https", action="store_true",
                        help="Torc's flag: serve HTTPS; here it needs --tls-cert and --tls-key "
                        "(which imply it)")
    parser.add_argument("--no-fast-path", dest="fast_path", action="store_false",
                        help="serve the runner protocol through the general (Quart) path too; "
                        "for measuring the fast path only (answers are the same)")
    parser.add_argument("--pid-file", metavar="PATH", default=None,
                        help="write the server's pid to PATH once it listens, remove it at exit "
                        "(signal it with kill -USR1 $(cat PATH)); refused while PATH names a "
                        "running torc-trio server")
    parser.add_argument("--admin-user", action="append", default=[], metavar="NAME",
                        help="a user who sees every workflow (repeatable)")
    parser.add_argument("--snapshot-interval-seconds", type=float, default=None, metavar="N",
                        help="write a snapshot every N seconds (TORC_SERVER_SNAPSHOT_PATH, "
                        "TORC_SERVER_SNAPSHOT_KEEP); SIGUSR1 writes one at any time")
    parser.add_argument("--load-snapshot", metavar="PATH", default=None,
                        help="with -d :memory:, start from this snapshot (or any torc-trio "
                        "database file) if it exists, instead of empty")
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
    parser.add_argument("--feed-queue-size", type=int, default=DEFAULT_QUEUE_SIZE,
                        metavar="N",
                        help="messages a websocket subscriber may fall behind before it is "
                        "dropped (it reconnects and starts again from the counts; default: "
                        f"{DEFAULT_QUEUE_SIZE})")
    parser.add_argument("--max-jobs-per-workflow", type=int, default=DEFAULT_MAX_JOBS,
                        metavar="N",
                        help="refuse (422) a spec that expands to more jobs, counted from its "
                        f"parameters before anything is expanded (default: {DEFAULT_MAX_JOBS})")
    parser.add_argument("--max-json-depth", type=int, default=DEFAULT_MAX_DEPTH, metavar="N",
                        help="refuse (400) a request body nested deeper than this (default: "
                        f"{DEFAULT_MAX_DEPTH})")
    parser.add_argument("--body-timeout-seconds", type=float, default=30.0, metavar="S",
                        help="a request body not received within S seconds gets 408 and frees "
                        "its request slot (default: 30)")
    parser.add_argument("--sync", choices=["full", "normal"],
                        default=os.environ.get("TORC_SERVER_SYNC", "full"),
                        help="durability of a file database: 'full' (default) syncs every "
                        "commit to disk before it is acknowledged; 'normal' is faster and "
                        "survives a crash of the server but may lose the last commits if the "
                        "machine fails (default from TORC_SERVER_SYNC, else full)")
    parser.add_argument("--writer", choices=["process", "thread"],
                        default=os.environ.get("TORC_SERVER_WRITER", "process"),
                        help="where a file database's commits run: 'process' (default) is a "
                        "writer process whose commits overlap the server's request handling on "
                        "another core; 'thread' keeps them in the server's process (default "
                        "from TORC_SERVER_WRITER, else process)")
    parser.add_argument("--shutdown-grace-seconds", type=float, default=10.0,
                        help="on SIGTERM, time in-flight requests get to finish (default: 10)")
    parser.add_argument("-l", "--log-level", default="info", metavar="LEVEL",
                        choices=["trace", "debug", "info", "warn", "warning", "error",
                                 "critical"],
                        help="trace, debug, info, warn(ing), error or critical (default: info; "
                        "trace is debug here)")
    parser.add_argument("--parent-pid", type=int, default=None, metavar="PID",
                        help="shut down when process PID, which started this server, ends "
                        "(how standalone mode's server never outlives its command)")
    unused = parser.add_argument_group(
        "Torc's flags that change nothing here",
        "accepted so that Torc's command lines work; each says why on stderr when given")

    def explained(dest: str) -> str:
        return TORC_FLAGS_WITHOUT_EFFECT[dest][1]

    unused.add_argument("-c", "--completion-check-interval-secs", type=float, default=None,
                        metavar="S", help=explained("completion_check_interval_secs"))
    unused.add_argument("--enforce-access-control", action="store_true",
                        help=explained("enforce_access_control"))
    unused.add_argument("--log-dir", default=None, metavar="DIR", help=explained("log_dir"))
    unused.add_argument("--json-logs", action="store_true", help=explained("json_logs"))
    unused.add_argument("--daemon", action="store_true", help=explained("daemon"))


def flags_without_effect(args: argparse.Namespace) -> list[str]:
    """One line for each of Torc's flags given that changes nothing here, saying why."""
    lines = []
    for dest, (flag, why) in TORC_FLAGS_WITHOUT_EFFECT.items():
        value = getattr(args, dest, None)
        if value is not None and value is not False:
            lines.append(f"{flag}: {why}")
    return lines


#: Torc's log level names that Python's logging spells differently.
LOG_LEVEL_NAMES = {"trace": "debug", "warn": "warning"}


def client_host(bind_host: str) -> str:
    """The host a client should use to reach a server bound to ``bind_host``: 127.0.0.1 for
    the loopback names, this machine's host name for the wildcard addresses (what other nodes
    reach), else the address as given (an IPv6 literal in brackets)."""
    host = bind_host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host in ("127.0.0.1", "localhost"):
        return "127.0.0.1"
    if host in ("", "0.0.0.0", "::"):
        return socket.gethostname() or "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def api_url(bind_host: str, port: int, scheme: str = "http") -> str:
    """The TORC_API_URL for a server bound to ``bind_host:port``."""
    return f"{scheme}://{client_host(bind_host)}:{port}{API_PATH}"


def advertised_url(config: ServerConfig, port: int) -> str:
    """The URL runners should use: ``--advertise-url``, else the one :func:`api_url` derives
    from ``--host``, the port the server bound and whether it speaks TLS."""
    return config.advertise_url or api_url(config.host, port, config.scheme)


def is_loopback_host(host: str) -> bool:
    """Whether binding ``host`` keeps the server to this machine."""
    bare = host.strip().strip("[]")
    if bare.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def plain_http_warning(config: ServerConfig) -> str | None:
    """The risk of serving passwords in clear text beyond this machine, or None."""
    if config.tls_cert or not config.require_auth or is_loopback_host(config.host):
        return None
    if (config.advertise_url or "").startswith("https://"):
        return None  # a TLS-terminating proxy in front of it
    return (f"serving plain HTTP on {config.host} with --require-auth: passwords cross the "
            "network in clear text (HTTP Basic); anyone on the way can read them. Give "
            "--tls-cert and --tls-key to serve HTTPS (fine as it is on a private network "
            "only trusted hosts reach)")


def _checked_tls(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """--tls-cert and --tls-key (absolute), both or neither, readable and a matching pair."""
    cert, key = args.tls_cert, args.tls_key
    if cert is None and key is None:
        if args.https:
            raise SystemExit("--https needs --tls-cert PEM and --tls-key PEM (this server "
                             "serves HTTPS with the certificate you give it)")
        return None, None
    if cert is None or key is None:
        raise SystemExit("--tls-cert and --tls-key go together: give both")
    cert, key = os.path.abspath(cert), os.path.abspath(key)
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise SystemExit(f"--tls-cert/--tls-key: {exc.filename}: no such file") from None
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SystemExit(f"--tls-cert {cert} / --tls-key {key}: cannot use them ({reason}): "
                         "expected a PEM certificate and its PEM private key") from None
    return cert, key


def _checked_advertise_url(url: str | None) -> str | None:
    if url is None:
        return None
    why = check_server_url(url)
    if why is not None:
        raise SystemExit(f"--advertise-url {url!r}: {why}")
    return url.rstrip("/")


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
    for flag, value in (("--max-jobs-per-workflow", args.max_jobs_per_workflow),
                        ("--max-json-depth", args.max_json_depth),
                        ("--feed-queue-size", args.feed_queue_size)):
        if value < 1:
            raise SystemExit(f"{flag} must be >= 1, got {value}")
    if not args.body_timeout_seconds > 0:
        raise SystemExit(f"--body-timeout-seconds must be > 0, got {args.body_timeout_seconds}")
    if args.sync not in ("full", "normal"):
        raise SystemExit(f"TORC_SERVER_SYNC: expected full or normal, got {args.sync!r}")
    if args.writer not in ("process", "thread"):
        raise SystemExit(f"TORC_SERVER_WRITER: expected process or thread, got {args.writer!r}")
    if args.load_snapshot and args.database != ":memory:":
        raise SystemExit("--load-snapshot is for -d :memory: (a file database is its own "
                         "starting point)")
    if "://" in args.host or "/" in args.host:
        raise SystemExit(f"--host takes a host name or an address, not a URL: {args.host!r}")
    if not args.credential_cache_ttl_secs >= 0:
        raise SystemExit("--credential-cache-ttl-secs must be >= 0, got "
                         f"{args.credential_cache_ttl_secs}")
    advertise = _checked_advertise_url(args.advertise_url)
    url_file = os.path.abspath(args.url_file) if args.url_file else None
    if url_file is not None:
        try:
            check_url_file_target(Path(url_file))
        except UrlFileError as exc:
            raise SystemExit(str(exc)) from None
    tls_cert, tls_key = _checked_tls(args)
    for line in flags_without_effect(args):
        print(f"torc-trio serve: {line}", file=sys.stderr, flush=True)
    config = ServerConfig(
        database=args.database,
        host=args.host,
        port=args.port,
        threads=args.threads,
        auth_file=args.auth_file,
        require_auth=args.require_auth,
        credential_cache_ttl_s=args.credential_cache_ttl_secs,
        admin_users=list(args.admin_user),
        snapshot_interval_s=args.snapshot_interval_seconds,
        snapshot_path=os.environ.get("TORC_SERVER_SNAPSHOT_PATH", DEFAULT_SNAPSHOT_PATH),
        snapshot_keep=max(1, keep),
        load_snapshot=args.load_snapshot,
        lease_s=args.lease_seconds,
        max_concurrent_requests=args.max_concurrent_requests,
        max_queued_requests=args.max_queued_requests,
        max_queue_wait_s=args.max_queue_wait_seconds,
        feed_queue_size=args.feed_queue_size,
        shutdown_grace_s=args.shutdown_grace_seconds,
        log_level=LOG_LEVEL_NAMES.get(args.log_level, args.log_level),
        max_jobs_per_workflow=args.max_jobs_per_workflow,
        max_json_depth=args.max_json_depth,
        body_timeout_s=args.body_timeout_seconds,
        sync=args.sync,
        writer=args.writer,
        parent_pid=args.parent_pid,
        pid_file=os.path.abspath(args.pid_file) if args.pid_file else None,
        advertise_url=advertise,
        url_file=url_file,
        tls_cert=tls_cert,
        tls_key=tls_key,
        fast_path=args.fast_path,
    )
    warning = plain_http_warning(config)
    if warning is not None:
        print(f"torc-trio serve: warning: {warning}", file=sys.stderr, flush=True)
    return config
