"""What the CLI knows before its heavy imports: its global options, which server a command
uses, and how to start a standalone one.

Why this is separate: a standalone server takes ~0.8 s to start (a second interpreter importing
Hypercorn, Quart and the engine) and the CLI ~0.4 s to import itself; started from here, first
thing, the server boots while the CLI imports and reads and checks the spec, instead of after.
Only the standard library is imported here (and :mod:`torc_net.url_file`, which needs no more).

Which server, in one rule (:func:`choose_server`):

1. ``--url`` or ``TORC_API_URL``, else the URL in the file ``TORC_API_URL_FILE`` names (written
   by ``serve --url-file``; read again whenever the server stops answering);
2. ``-s``/``--standalone``: a server of this command's own on the local database;
3. a torc server answering at Torc's default address, ``http://localhost:8080/torc-service/v1``
   (a quick probe), so that Torc's quick start (``serve``, then ``run workflow.yaml``) works;
4. the local database (``./torc_output/torc.db``, or ``--db``): a command that runs jobs
   (``run``, ``exec``) starts a standalone server on it; one that reads or changes a workflow
   uses the run in progress on it, or a standalone server of its own if the file exists.

When the choice was not explicit (3 and 4), one line on stderr says which was used.

Global options may come before or after the command (``torc-trio -s status 1`` or
``torc-trio status 1 -s``), by their long forms and ``-f``; where a command has a short option
of the same letter (``jobs list -s STATUS``, ``workflows export -o FILE``), after the command it
is the command's (:data:`OWN_SHORT_OPTIONS`).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torc_net.url_file import ENV_VAR, UrlFileError, read_url_file

from . import __version__

DEFAULT_DB = "torc_output/torc.db"
#: Torc's default server address (torc-server listens on 8080).
DEFAULT_URL = "http://localhost:8080/torc-service/v1"
API_PATH = "/torc-service/v1"

#: Commands that start a standalone server when no server is configured or running.
RUNS_JOBS = frozenset({"run", "exec", "workflows run"})
#: Commands that never talk to a server (or start their own, like serve).
NO_SERVER = frozenset({"serve", "htpasswd", "completions", "plot-resources"})

#: Short options that, after these commands, are the command's own and not the global ones.
OWN_SHORT_OPTIONS: dict[str, frozenset[str]] = {
    "jobs list": frozenset({"-s"}),
    "results list": frozenset({"-s"}),
    "workflows export": frozenset({"-o"}),
    "events monitor": frozenset({"-s"}),
}


@dataclass(frozen=True, slots=True)
class GlobalOption:
    flags: tuple[str, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def takes_value(self) -> bool:
        return self.kwargs.get("action") not in ("store_true", "version")


GLOBAL_OPTIONS: tuple[GlobalOption, ...] = (
    GlobalOption(("--url",), {"help": "server API URL, ending in /torc-service/v1 (default: "
                                      "$TORC_API_URL, else a server at " + DEFAULT_URL +
                                      ", else the local database)"}),
    GlobalOption(("-s", "--standalone"), {"action": "store_true",
                                          "help": "use a server of this command's own, on the "
                                                  "local database (--db)"}),
    GlobalOption(("--db",), {"help": f"the local database file (default: ./{DEFAULT_DB})"}),
    GlobalOption(("--in-memory",), {"action": "store_true",
                                    "help": "a standalone server keeps the database in memory: "
                                            "it starts from the --db file and writes it back at "
                                            "the end (and on the timer)"}),
    GlobalOption(("--snapshot-interval-seconds",), {
        "type": float, "metavar": "N",
        "help": "with --in-memory: also snapshot the database every N seconds (to the --db "
                "file, or $TORC_SERVER_SNAPSHOT_PATH)"}),
    GlobalOption(("-o", "--output-dir"), {"help": "where job stdout/stderr go (default: "
                                                  "torc_output)"}),
    GlobalOption(("-f", "--format"), {"choices": ("table", "json"),
                                      "help": "output for people (table, the default) or "
                                              "programs (json)"}),
    GlobalOption(("--username",), {"help": "user for HTTP Basic auth (default: "
                                           "$TORC_USERNAME)"}),
    GlobalOption(("--password",), {"help": "password for HTTP Basic auth (default: "
                                           "$TORC_PASSWORD; asked for in a terminal when a "
                                           "username is given without one)"}),
    GlobalOption(("--tls-ca-cert", "--ca-file"), {
        "metavar": "PEM",
        "help": "trust the CA certificate(s) in PEM for https:// servers instead of the "
                "system's (default: $TORC_CA_FILE, or Torc's $TORC_TLS_CA_CERT); runners "
                "started by submit inherit it"}),
    GlobalOption(("--tls-insecure",), {
        "action": "store_true",
        "help": "do not verify an https:// server's certificate (testing only: anyone on the "
                "way can read the password; default: $TORC_TLS_INSECURE)"}),
    GlobalOption(("--log-level",), {"choices": ("debug", "info", "warning", "error",
                                                "critical"),
                                    "help": "the client's log level (default: warning)"}),
)
GLOBAL_DEFAULTS: dict[str, Any] = {
    "url": None, "standalone": False, "db": None, "in_memory": False,
    "snapshot_interval_seconds": None, "output_dir": "torc_output", "format": "table",
    "username": None, "password": None, "ca_file": None, "tls_insecure": False,
    "log_level": "warning",
}


def add_global_options(parser: argparse.ArgumentParser, *, after_command: bool = False,
                       taken: Iterable[str] = ()) -> None:
    """The global options. Before the command they carry their defaults; after it
    (``after_command``) they default to nothing (a value given before the command stays), and
    option strings the command uses itself (``taken``) are left to it."""
    taken = set(taken)
    if not after_command:
        parser.add_argument("--version", action="version", version=f"torc-trio {__version__}")
    for option in GLOBAL_OPTIONS:
        flags = tuple(f for f in option.flags if f not in taken)
        if after_command:
            # Short forms after the command: only -f (the others clash with commands' own).
            flags = tuple(f for f in flags if f.startswith("--") or f == "-f")
        if not flags:
            continue
        kwargs = dict(option.kwargs)
        dest = option.flags[-1].lstrip("-").replace("-", "_")
        kwargs["dest"] = dest
        kwargs["default"] = argparse.SUPPRESS if after_command else GLOBAL_DEFAULTS[dest]
        parser.add_argument(*flags, **kwargs)


# ---------------------------------------------------------------------------------------------
# Reading the command line before the parser


@dataclass(slots=True)
class EarlyArgs:
    """The command's words and its global options, found without the full parser."""

    command: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    rest: list[str] = field(default_factory=list)
    help: bool = False

    def get(self, name: str) -> Any:
        return self.values.get(name, GLOBAL_DEFAULTS[name])


#: Command groups whose second word names the command (``jobs list``).
GROUPS = frozenset({"workflows", "jobs", "results", "events", "reports", "logs"})


def scan(argv: Sequence[str]) -> EarlyArgs:
    """The command (one or two words) and every global option, wherever it stands."""
    by_flag = {flag: option for option in GLOBAL_OPTIONS for flag in option.flags}
    out = EarlyArgs()
    words: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in ("--", ":::", "::::"):  # the rest is a command and its values, not options
            out.rest.extend(argv[i - 1:])
            break
        if arg in ("-h", "--help", "--version"):
            out.help = True
            continue
        name, eq, inline = arg.partition("=")
        option = by_flag.get(name if arg.startswith("--") else arg)
        command = " ".join(words)
        if option is not None and arg in OWN_SHORT_OPTIONS.get(command, ()):
            option = None  # the command's own option
        if option is None:
            if not arg.startswith("-") and len(words) < 2 and (not words or words[0] in GROUPS):
                words.append(arg)
            else:
                out.rest.append(arg)
            continue
        dest = option.flags[-1].lstrip("-").replace("-", "_")
        if not option.takes_value:
            out.values[dest] = True
        elif eq:
            out.values[dest] = inline
        elif i < len(argv):
            out.values[dest] = argv[i]
            i += 1
    out.command = " ".join(words)
    return out


# ---------------------------------------------------------------------------------------------
# Which server


@dataclass(frozen=True, slots=True)
class ServerChoice:
    """Where a command's client goes: a ``url``, or a standalone server on ``database``."""

    kind: str  # "url" | "standalone" | "none"
    url: str | None = None
    database: str | None = None
    #: said on stderr when the user did not choose (None: they did)
    note: str | None = None
    #: why there is no server (kind "none")
    problem: str = ""


def standalone_database(args: EarlyArgs | argparse.Namespace) -> str:
    """The local database file: ``--db``, or ./torc_output/torc.db. With ``--in-memory`` the
    server holds the database in memory, starts from this file if it exists and writes its
    snapshots (on the timer, and a last one at the end) back to it, so that a later command
    sees the same workflows either way."""
    db = args.get("db") if isinstance(args, EarlyArgs) else getattr(args, "db", None)
    return str(db or DEFAULT_DB)


def probe_default_server(timeout_s: float = 0.5) -> bool:
    """Whether a torc server answers at :data:`DEFAULT_URL` (connect, then GET /version)."""
    try:
        with socket.create_connection(("127.0.0.1", 8080), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(b"GET " + API_PATH.encode() + b"/version HTTP/1.1\r\n"
                         b"Host: localhost:8080\r\nConnection: close\r\n\r\n")
            data = b""
            while len(data) < 4096 and not _complete(data):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    head, _, body = data.partition(b"\r\n\r\n")
    if head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
        return b'"api"' in body
    return head.startswith((b"HTTP/1.1 401", b"HTTP/1.0 401")) and b'"error"' in body


def _complete(data: bytes) -> bool:
    """Whether ``data`` holds a whole HTTP response with a Content-Length (servers may keep
    the connection open a while after answering, ``Connection: close`` or not)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return len(body) >= int(value.strip())
            except ValueError:
                return True
    return False


def choose_server(args: EarlyArgs, *, probe: bool = True) -> ServerChoice:
    """The rule of the module docstring."""
    command = args.command
    configured = args.get("url") or os.environ.get("TORC_API_URL")
    if not configured and os.environ.get(ENV_VAR):
        try:
            configured = read_url_file(os.environ[ENV_VAR])
        except UrlFileError as exc:
            return ServerChoice("none", problem=str(exc))
    database = standalone_database(args)
    if configured:
        return ServerChoice("url", url=configured)
    if args.get("standalone"):
        return ServerChoice("standalone", database=database)
    if probe and probe_default_server():
        return ServerChoice("url", url=DEFAULT_URL, note=(
            f"using the server at {DEFAULT_URL} (set TORC_API_URL or --url to choose one, "
            "-s for a local one)"))
    holder = standalone_holder(database)
    if command in RUNS_JOBS:
        return ServerChoice("standalone", database=database, note=(
            f"no server configured: running standalone on {database}"))
    if holder is not None:
        return ServerChoice("standalone", database=database, note=(
            f"using the run in progress on {database}"))
    if Path(database).exists():
        return ServerChoice("standalone", database=database, note=(
            f"no server configured: using the local database {database}"))
    return ServerChoice("none", problem=(
        f"no server: none at {DEFAULT_URL} and no local database {database}; set "
        "TORC_API_URL or --url, start one with `torc-trio serve`, or run a workflow here "
        "first (`torc-trio run ...`)"))


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


def _before_command(rest: Sequence[str]) -> list[str]:
    """The words before `--`, `:::` or `::::`: after them every word is the command's."""
    out: list[str] = []
    for arg in rest:
        if arg in ("--", ":::", "::::"):
            break
        out.append(arg)
    return out


def prestart_server(args: EarlyArgs, choice: ServerChoice) -> subprocess.Popen[bytes] | None:
    """The standalone server this command will need, started now: only for commands that run
    jobs (their spec is checked meanwhile; a refused spec stops it before it made anything)."""
    if args.help or choice.kind != "standalone" or args.command not in RUNS_JOBS:
        return None
    if args.command == "exec" and "--dry-run" in _before_command(args.rest):
        return None  # it only prints the commands
    assert choice.database is not None
    if standalone_holder(choice.database) is not None:
        return None  # a server runs on that database already (torc_cli.session decides)
    return start_server_process(choice.database, in_memory=bool(args.get("in_memory")),
                                snapshot_interval_s=args.get("snapshot_interval_seconds"))
