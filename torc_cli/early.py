"""What the CLI knows before its heavy imports: its global options, whether a command needs a
standalone server, and how to start that server.

Why this is separate: a standalone server takes ~0.8 s to start (a second interpreter importing
Hypercorn, Quart and the engine) and the CLI ~0.4 s to import itself; started from here, first
thing, the server boots while the CLI imports and reads and checks the spec, instead of after.
Only the standard library is imported here.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import __version__

DEFAULT_DB = "torc_output/torc.db"

#: Commands that start a standalone server when no server is configured (no --url and no
#: TORC_API_URL): `torc-trio run -j 32 commands.txt` works with nothing else running.
STANDALONE_BY_DEFAULT = frozenset({"run", "exec"})


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """The options that come before the command (``torc-trio -s -f json status 1``)."""
    parser.add_argument("--version", action="version", version=f"torc-trio {__version__}")
    parser.add_argument("--url", help="server API URL (default: $TORC_API_URL)")
    parser.add_argument("-s", "--standalone", action="store_true",
                        help="start an ephemeral server on 127.0.0.1 for this command")
    parser.add_argument("--db", help=f"standalone database file (default: ./{DEFAULT_DB})")
    parser.add_argument("--in-memory", action="store_true",
                        help="standalone server keeps its database in memory: it starts from "
                        "the --db file and writes it back at the end (and on the timer)")
    parser.add_argument("--snapshot-interval-seconds", type=float, default=None,
                        help="with --in-memory: also snapshot the database every N seconds "
                        "(to the --db file, or $TORC_SERVER_SNAPSHOT_PATH)")
    parser.add_argument("-o", "--output-dir", default="torc_output",
                        help="where job stdout/stderr go (default: torc_output)")
    parser.add_argument("-f", "--format", choices=("table", "json"), default="table")


def wants_standalone(args: argparse.Namespace) -> bool:
    if args.standalone:
        return True
    configured = args.url or os.environ.get("TORC_API_URL")
    return not configured and args.command in STANDALONE_BY_DEFAULT


def standalone_database(args: argparse.Namespace) -> str:
    """The standalone database file: ``--db``, or ./torc_output/torc.db. With ``--in-memory``
    the server holds the database in memory, starts from this file if it exists and writes
    its snapshots (on the timer, and a last one at the end) back to it, so that ``-s status``
    and the next run see the same workflows either way."""
    return str(args.db or DEFAULT_DB)


def standalone_holder(database: str) -> dict[str, Any] | None:
    """The torc-trio server that serves ``database`` now, as its lock file describes it
    (``pid``, ``host``, ``url``), or None when none does. Looked at under a shared lock, held
    for an instant (a server starting meanwhile waits that out)."""
    try:
        fd = os.open(f"{database}.lock", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0))
            except ValueError:
                return {}
            return holder if isinstance(holder, dict) else {}
        except OSError:
            return None  # no locks here: nothing to learn
        return None  # we got the lock: nobody holds it (closing the fd releases it)
    finally:
        os.close(fd)


def start_server_process(database: str, *, in_memory: bool = False,
                         snapshot_interval_s: float | None = None,
                         log_level: str = "warning",
                         extra_args: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """Start ``python -m torc_net.server`` on 127.0.0.1, a free port, in its own session (a
    Ctrl-C in the terminal reaches the CLI, which then stops runner and server in order). It
    prints ``TORC_SERVER_PORT=<port>`` on stdout when it listens, and shuts down by itself if
    this process ends without stopping it (killed, say)."""
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    served = ["--database", database]
    if in_memory:
        served = ["--database", ":memory:", "--load-snapshot", database]
        env.setdefault("TORC_SERVER_SNAPSHOT_PATH", database)
    argv = [sys.executable, "-m", "torc_net.server", *served,
            "--host", "127.0.0.1", "--port", "0", "--log-level", log_level,
            "--parent-pid", str(os.getpid()), *extra_args]
    if snapshot_interval_s:
        argv += ["--snapshot-interval-seconds", str(snapshot_interval_s)]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            start_new_session=True, env=env)


def prestart_server(argv: list[str]) -> subprocess.Popen[bytes] | None:
    """The standalone server this command line will need, started now; None when it needs
    none or the line does not parse (the full parser reports that)."""
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    add_global_options(pre)
    pre.add_argument("command", nargs="?")
    if any(a in ("-h", "--help", "--version") for a in argv):
        return None
    try:
        args, rest = pre.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit):
        return None
    if not args.command or not wants_standalone(args):
        return None
    if args.command in ("serve", "htpasswd") or (args.command == "create"
                                                 and "--dry-run" in rest):
        return None  # not a client command, or one that works offline
    if standalone_holder(standalone_database(args)) is not None:
        return None  # a server runs on that database already (torc_cli.session decides)
    return start_server_process(standalone_database(args), in_memory=args.in_memory,
                                snapshot_interval_s=args.snapshot_interval_seconds)
