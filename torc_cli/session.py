"""One CLI command's session: its server (standalone or configured), its client, and the
translation of errors into messages and exit statuses. Each command is a coroutine taking a
:class:`Context`.

With ``-s``, or for ``run``/``exec`` when no server is configured, an ephemeral server is
started on 127.0.0.1 for the command and stopped afterwards (see :mod:`torc_cli.standalone`;
:mod:`torc_cli.main` usually started it already, before these imports).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from torc_core import SpecError
from torc_net.client import ApiError, ServerUnreachable, TorcClient

from .early import standalone_database, standalone_holder, wants_standalone
from .specs import InputError
from .standalone import StandaloneError, StandaloneOptions, ephemeral_server

EXIT_OK = 0
EXIT_FAILED_JOBS = 1
EXIT_USAGE = 2
EXIT_SERVER = 3

CommandFn = Callable[["Context"], Awaitable[int]]
#: How long commands without a runner retry an unreachable server.
INTERACTIVE_WAIT_S = 30.0


class Context:
    """What a command needs: its arguments and a client to the right server."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client: TorcClient = None  # type: ignore[assignment]
        self.url = ""

    @property
    def json(self) -> bool:
        return bool(self.args.format == "json")

    @property
    def output_dir(self) -> Path:
        return Path(self.args.output_dir)


@asynccontextmanager
async def connect(args: argparse.Namespace,
                  server: subprocess.Popen[bytes] | None = None) -> AsyncIterator[Context]:
    """A context whose client talks to the right server: the standalone one (``server``, if
    it was started already) or the configured one."""
    ctx = Context(args)
    # Runners ride out long outages (--wait-for-server-minutes); a command someone waits at
    # the terminal for (create, status, ...) retries long enough for a server restart, then
    # says what is wrong instead of hanging for twenty minutes on a mistyped URL.
    wait_s = float(getattr(args, "wait_for_server_minutes", INTERACTIVE_WAIT_S / 60)) * 60
    configured: str | None = args.url or os.environ.get("TORC_API_URL")
    if wants_standalone(args):
        database = standalone_database(args)
        running = await _running_standalone(args, database) if server is None else None
        if running is None:
            options = StandaloneOptions(
                database=database, in_memory=args.in_memory,
                snapshot_interval_s=args.snapshot_interval_seconds,
            )
            async with ephemeral_server(options, server) as url:
                ctx.url = url
                async with TorcClient.from_env(url, wait_for_server_s=wait_s) as client:
                    ctx.client = client
                    yield ctx
            return
        configured = running
    if not configured:
        raise InputError(
            "no server: pass --url, set TORC_API_URL, or use -s/--standalone for a local one"
        )
    ctx.url = configured
    async with TorcClient.from_env(configured, wait_for_server_s=wait_s) as client:
        ctx.client = client
        yield ctx


#: Standalone commands that run jobs: they need a server of their own.
RUNNING_COMMANDS = frozenset({"run", "exec", "runner"})


async def _running_standalone(args: argparse.Namespace, database: str) -> str | None:
    """The URL of the standalone server already serving ``database`` (a run in progress
    there), for a command that only looks or changes state: ``-s status 1`` beside a running
    ``torc-trio run`` shows the live state, ``-s cancel 1`` stops that run. None when no
    server has it. A command that would run jobs is refused instead: the server belongs to
    the other command and goes away when it ends."""
    holder = standalone_holder(database)
    if holder is None:
        return None
    who = f"pid {holder.get('command_pid') or holder.get('pid', '?')} on {holder.get('host', '?')}"
    if args.command in RUNNING_COMMANDS:
        raise StandaloneError(
            f"{database} is in use by another torc-trio ({who}); wait for it to end, or give "
            "this run a database of its own with --db PATH")
    if holder.get("host") != socket.gethostname():
        raise StandaloneError(f"{database} is served by a torc-trio server on another host "
                              f"({who}); point --url at it")
    with trio.move_on_after(5):  # a server that just started writes its URL once it listens
        while "url" not in holder:
            await trio.sleep(0.1)
            holder = standalone_holder(database) or {}
    if "url" not in holder:
        raise StandaloneError(f"{database} is locked by {who}, which does not listen")
    return str(holder["url"])


async def _run_command(fn: CommandFn, args: argparse.Namespace,
                       server: subprocess.Popen[bytes] | None) -> int:
    if getattr(args, "offline", False):  # e.g. create --dry-run: validation needs no server
        return await fn(Context(args))
    prepare = getattr(args, "prepare", None)
    if prepare is not None:  # read and check the input while the server starts
        args.prepared = prepare(args)
    async with connect(args, server) as ctx:
        return await fn(ctx)


def _error(message: str) -> None:
    print(f"torc-trio: error: {message}", file=sys.stderr, flush=True)


def run_cli(argv: list[str], server: subprocess.Popen[bytes] | None = None) -> int:
    """Parse ``argv`` and run the command; its exit status. ``server``: the standalone server
    :func:`torc_cli.early.prestart_server` started for it, if any."""
    from .commands import build_parser

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "sync_main", None) is not None:
        return int(args.sync_main(args))
    if getattr(args, "dry_run", False) and getattr(args, "command", "") == "create":
        args.offline = True
    fn: CommandFn | None = getattr(args, "fn", None)
    if fn is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        try:
            code = trio.run(_run_command, fn, args, server)
        except BaseExceptionGroup as group:
            raise _first_leaf(group) from None
        if not isinstance(code, int):  # a cancellation swallowed the command's own return
            _error("the command was cut short without an exit status (a bug: please report)")
            return EXIT_SERVER
        return code
    except SpecError as exc:
        for line in exc.errors:
            _error(line)
        return EXIT_USAGE
    except InputError as exc:
        for line in str(exc).splitlines():
            _error(line)
        return EXIT_USAGE
    except ApiError as exc:
        detail = exc.detail
        if isinstance(detail, list):
            _error(f"{exc.error} ({exc.status}):")
            for line in detail:
                print(f"  {line}", file=sys.stderr)
        else:
            _error(f"{exc.error} ({exc.status}){': ' + str(detail) if detail else ''}")
        return EXIT_USAGE if exc.status in (400, 404, 409, 422) else EXIT_SERVER
    except (ServerUnreachable, StandaloneError) as exc:
        _error(str(exc))
        return EXIT_SERVER
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a user should see from a nursery's group (not its Cancelled siblings)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for leaf in leaves:
        if not isinstance(leaf, trio.Cancelled):
            return leaf
    return group
