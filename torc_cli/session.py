"""One command's session: the server it talks to (:func:`torc_cli.early.choose_server`), its
client, and the workflow it is about.

A standalone server (``-s``, or the local database) is started for the command and stopped
afterwards (see :mod:`torc_cli.standalone`; :mod:`torc_cli.main` usually started it already,
before these imports, for commands that run jobs).
"""

from __future__ import annotations

import argparse
import getpass
import math
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from torc_net.client import TorcClient
from torc_net.credentials import CREDENTIALS_FILE_ENV, CredentialsError, read_credentials_file
from torc_net.tls import TlsError, TlsSettings
from torc_net.url_file import env_url_source

from .early import API_PATH, ServerChoice
from .exits import InputError
from .standalone import StandaloneError, StandaloneOptions, ephemeral_server

#: How long commands without a runner retry an unreachable server (a server restart takes
#: less), unless TORC_INTERACTIVE_WAIT_SECONDS says otherwise (see :func:`interactive_wait_s`).
INTERACTIVE_WAIT_S = 30.0
#: Standalone commands that run jobs: they need a server of their own.
RUNNING_COMMANDS = frozenset({"run", "exec", "runner", "workflows run"})


class Context:
    """What a command needs: its arguments and a client to the right server."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client: TorcClient = None  # type: ignore[assignment]
        self.url = ""
        #: a standalone server of this command's own serves it (it ends with the command)
        self.standalone = False

    @property
    def json(self) -> bool:
        return bool(self.args.format == "json")

    @property
    def output_dir(self) -> Path:
        return Path(self.args.output_dir)

    async def workflow_id(self) -> int:
        """The command's workflow: the one given, else the only one there is; several are
        listed and, in a terminal, asked for (Torc's habit), elsewhere an error naming them."""
        given = getattr(self.args, "workflow_id", None)
        if given is not None:
            return int(given)
        workflows = [w async for w in self.client.iter_workflows()]
        if len(workflows) == 1:
            return int(workflows[0]["id"])
        if not workflows:
            raise InputError("no workflows here: create one first (torc-trio create SPEC)")
        listing = ", ".join(f"{w['id']} ({w['name']})" for w in workflows[:20])
        if sys.stdin.isatty() and sys.stderr.isatty():
            print(f"Workflows: {listing}", file=sys.stderr)
            answer = await trio.to_thread.run_sync(input, "Workflow id: ")
            if answer.strip().isdigit():
                return int(answer.strip())
            raise InputError(f"not a workflow id: {answer.strip()!r}")
        more = f" and {len(workflows) - 20} more" if len(workflows) > 20 else ""
        raise InputError(f"which workflow? there are {len(workflows)}: {listing}{more}; "
                         "give its id")


def check_url(url: str) -> str:
    """A server URL must name the API: ``http://host:port/torc-service/v1``. A URL without it
    reaches the server's pages (the dashboard), whose 404s say nothing useful."""
    stripped = url.rstrip("/")
    if not stripped.startswith(("http://", "https://")):
        raise InputError(f"server URL {url!r}: expected http://HOST:PORT{API_PATH}")
    rest = stripped.split("://", 1)[1]
    path = "/" + rest.split("/", 1)[1] if "/" in rest else ""
    if path != API_PATH:
        fixed = stripped[: len(stripped) - len(path)] + API_PATH
        raise InputError(f"server URL {url!r} does not end with {API_PATH}: did you mean "
                         f"{fixed}?")
    return stripped


def credentials(args: argparse.Namespace) -> tuple[str, str] | None:
    """``--username``/``--password``, else ``TORC_USERNAME``/``TORC_PASSWORD``, else the file
    ``TORC_CREDENTIALS_FILE`` names (:mod:`torc_net.credentials`: how runners on compute nodes
    get them); a username without a password asks for it in a terminal."""
    user = args.username or os.environ.get("TORC_USERNAME")
    password = args.password or os.environ.get("TORC_PASSWORD")
    path = os.environ.get(CREDENTIALS_FILE_ENV)
    if path and password is None:
        try:
            found = read_credentials_file(path)
        except CredentialsError as exc:
            raise InputError(f"{CREDENTIALS_FILE_ENV}: {exc}") from None
        if user is None or found[0] == user:
            return found
    if not user:
        return None
    if password is None:
        if not sys.stdin.isatty():
            raise InputError(f"a password for {user!r} is needed: --password or TORC_PASSWORD")
        password = getpass.getpass(f"Password for {user}: ")
    return user, password


def tls_settings(args: argparse.Namespace) -> TlsSettings:
    """What https:// servers are trusted with (``--ca-file``, ``--tls-insecure``, else the
    environment), checked now, and put into the environment so that the processes this
    command starts (runners, jobs, sbatch scripts) trust the same."""
    tls = TlsSettings.from_env(ca_file=getattr(args, "ca_file", None),
                               insecure=bool(getattr(args, "tls_insecure", False)))
    if tls.ca_file is not None:
        try:
            tls.context()
        except TlsError as exc:
            raise InputError(str(exc)) from None
    os.environ.update(tls.env())
    return tls


def _waiting(url: str) -> Any:
    """Say, once, that the server does not answer yet (never wait silently)."""
    said = False

    def on_retry(failure: str, remaining_s: float) -> None:
        nonlocal said
        if not said:
            said = True
            print(f"torc-trio: waiting for the server at {url} ({failure}), retrying for "
                  f"{remaining_s:.0f} s", file=sys.stderr, flush=True)

    return on_retry


def interactive_wait_s() -> float:
    """How long a command without a runner retries an unreachable server:
    TORC_INTERACTIVE_WAIT_SECONDS if set (a script that would rather fail at once, or a test
    that checks the failure without waiting 30 s for it), else :data:`INTERACTIVE_WAIT_S`."""
    raw = os.environ.get("TORC_INTERACTIVE_WAIT_SECONDS")
    if raw is None:
        return INTERACTIVE_WAIT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise InputError(f"TORC_INTERACTIVE_WAIT_SECONDS={raw!r}: expected a number of "
                         "seconds, 0 or more")
    return value


@asynccontextmanager
async def connect(args: argparse.Namespace, choice: ServerChoice,
                  server: subprocess.Popen[bytes] | None = None) -> AsyncIterator[Context]:
    """A context whose client talks to the chosen server: a standalone one (``server``, if it
    was started already) or the configured or found one."""
    ctx = Context(args)
    # Runners ride out long outages (--wait-for-server-minutes); a command someone waits at
    # the terminal for (create, status, ...) retries long enough for a server restart, then
    # says what is wrong instead of hanging for twenty minutes on a mistyped URL.
    minutes = getattr(args, "wait_for_server_minutes", None)
    wait_s = float(minutes) * 60 if minutes is not None else interactive_wait_s()
    auth = credentials(args)
    tls = tls_settings(args)
    if choice.note:
        print(f"torc-trio: {choice.note}", file=sys.stderr, flush=True)
    if choice.kind == "none":
        raise InputError(choice.problem)
    url = choice.url
    if choice.kind == "standalone":
        assert choice.database is not None
        running = await _running_standalone(args, choice.database) if server is None else None
        if running is None:
            options = StandaloneOptions(
                database=choice.database, in_memory=args.in_memory,
                snapshot_interval_s=args.snapshot_interval_seconds,
            )
            async with ephemeral_server(options, server) as local:
                ctx.url = local
                ctx.standalone = True
                async with TorcClient(local, auth=auth, wait_for_server_s=wait_s,
                                      on_retry=_waiting(local), tls=tls) as client:
                    ctx.client = client
                    yield ctx
            return
        url = running
    assert url is not None
    ctx.url = check_url(url)
    async with TorcClient(ctx.url, auth=auth, wait_for_server_s=wait_s,
                          on_retry=_waiting(ctx.url), url_source=env_url_source(),
                          tls=tls) as client:
        ctx.client = client
        yield ctx


async def _running_standalone(args: argparse.Namespace, database: str) -> str | None:
    """The URL of the standalone server already serving ``database`` (a run in progress
    there), for a command that only looks or changes state: ``-s status 1`` beside a running
    ``torc-trio run`` shows the live state, ``-s cancel 1`` stops that run. None when no
    server has it. A command that would run jobs is refused instead: the server belongs to
    the other command and goes away when it ends."""
    from .early import standalone_holder

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
