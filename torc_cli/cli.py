"""The parser and the dispatch, both built from the :class:`~torc_cli.command.Command` records,
and the translation of errors into messages and exit statuses (:mod:`torc_cli.exits`)."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import trio

from torc_core import SpecError
from torc_net.client import ApiError, ServerUnreachable
from torc_net.credentials import CredentialsError
from torc_net.tls import TlsError

from .command import Command
from .early import OWN_SHORT_OPTIONS, ServerChoice, add_global_options, scan
from .exits import EXIT_INTERRUPTED, EXIT_SERVER, EXIT_USAGE, CliError, InputError
from .session import Context, connect
from .standalone import StandaloneError

DESCRIPTION = "Run workflows of shell jobs with dependencies: on a laptop, one node, or many " \
              "Slurm allocations."
EPILOG = """\
examples:
  torc-trio run -j 4 examples/commands.txt     # no server needed: a local one is started
  torc-trio run examples/diamond.yaml && torc-trio status
  torc-trio exec -c 'echo {i}' --param i=1:10 -j 4
  torc-trio serve &                            # Torc's quick start: a server, then
  torc-trio run workflow.yaml                  # ... commands find it at localhost:8080
  export TORC_API_URL=http://login1:8080/torc-service/v1

Global options may also follow the command, by their long forms (--url, --standalone, --db,
--output-dir, --format, ...) and -f; where a command has its own short option of the same
letter (jobs list -s STATUS, workflows export -o FILE), after the command it is the command's.

Which server: --url or TORC_API_URL; else -s (a local one); else a server answering at
http://localhost:8080/torc-service/v1; else the local database ./torc_output/torc.db (--db).
Exit status: 0 ok, 1 jobs did not complete, 2 bad input, 3 server, 4 Slurm, 5 event feed lost,
130 interrupted, 141 output closed, 143 terminated.
"""


def build_parser(commands: Iterable[Command], groups: dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torc-trio", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_global_options(parser)
    top = parser.add_subparsers(dest="command_word", metavar="COMMAND")
    group_subs: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {}

    def leaf(words: list[str], cmd: Command) -> argparse.ArgumentParser:
        kwargs = {"help": cmd.help, "description": cmd.description or cmd.help,
                  "epilog": cmd.epilog(),
                  "formatter_class": argparse.RawDescriptionHelpFormatter}
        if len(words) == 1:
            return top.add_parser(words[0], **kwargs)  # type: ignore[arg-type]
        group = words[0]
        if group not in group_subs:
            gp = top.add_parser(group, help=groups.get(group, group),
                                description=groups.get(group, group))
            group_subs[group] = gp.add_subparsers(dest="group_command", metavar="COMMAND",
                                                  required=True)
        return group_subs[group].add_parser(words[1], **kwargs)  # type: ignore[arg-type]

    for cmd in commands:
        for name in cmd.names:
            p = leaf(name.split(), cmd)
            cmd.arguments(p)
            taken = set(p._option_string_actions)
            # The early scan (which starts a standalone server before these imports) must
            # know a command's own -s, or it would take it for --standalone.
            if "-s" in taken and "-s" not in OWN_SHORT_OPTIONS.get(name, ()):
                raise RuntimeError(f"{name}: its -s must be listed in early.OWN_SHORT_OPTIONS")
            if cmd.run is not None:  # a client command (serve and htpasswd are none)
                add_global_options(p, after_command=True, taken=taken)
            p.set_defaults(command=cmd.name, command_record=cmd)
    return parser


def _commands(argv: list[str]) -> tuple[list[Command], dict[str, str]]:
    """The commands the parser needs: those of the command line's first word, or every one
    for ``--help``, a shell's completion request or a word that is no command (whose usage
    message lists them all)."""
    from .commands import GROUPS, all_commands, commands_for

    early = scan(argv)
    if early.command and not early.help and "_ARGCOMPLETE" not in os.environ:
        subset = commands_for(early.command.split()[0])
        if subset:
            return subset, GROUPS
    return all_commands(), GROUPS


def _error(message: str) -> None:
    print(f"torc-trio: error: {message}", file=sys.stderr, flush=True)


def run_cli(argv: list[str], choice: ServerChoice | None,
            server: subprocess.Popen[bytes] | None = None, *,
            on_refused_input: Callable[[], None] = lambda: None) -> int:
    """Parse ``argv`` and run the command; its exit status. ``choice``: the server it uses
    (:func:`torc_cli.early.choose_server`); ``server``: the standalone server
    :func:`torc_cli.early.prestart_server` started for it, if any. ``on_refused_input`` runs
    when the command's input is refused before any server was used (to leave nothing)."""
    parser = build_parser(*_commands(argv))
    from .commands.completion import autocomplete

    autocomplete(parser)  # a TAB's completion request: answered, then the process exits
    args = parser.parse_args(argv)
    cmd: Command | None = getattr(args, "command_record", None)
    if cmd is None:
        parser.print_help()
        return EXIT_USAGE
    if cmd.main is not None:
        return cmd.main(args)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        try:
            if cmd.prepare is not None:  # read and check the input before any server
                try:
                    args.prepared = cmd.prepare(args)
                except (SpecError, CliError):
                    on_refused_input()
                    raise
            if (choice is not None and choice.kind == "standalone" and not cmd.creates
                    and choice.database and server is None
                    and not Path(choice.database).exists() and not cmd.offline(args)):
                # A command that only looks would make an empty database just to say so.
                raise InputError(f"no local database {choice.database}: nothing has run here "
                                 "yet (use --db PATH, --url, or run a workflow first)")
            code = trio.run(_run, cmd, args, choice, server)
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
    except CliError as exc:
        for line in str(exc).splitlines():
            _error(line)
        return exc.exit_code
    except ApiError as exc:
        detail = exc.detail
        if exc.status == 422 and isinstance(detail, list):  # a spec, as a local check says it
            for line in detail:
                _error(str(line))
        elif isinstance(detail, list):
            _error(f"{exc.error} ({exc.status}):")
            for line in detail:
                print(f"  {line}", file=sys.stderr)
        else:
            _error(f"{exc.error} ({exc.status}){': ' + str(detail) if detail else ''}")
        return EXIT_USAGE if exc.status in (400, 401, 403, 404, 409, 422) else EXIT_SERVER
    except (ServerUnreachable, StandaloneError, TlsError) as exc:
        _error(str(exc))
        return EXIT_SERVER
    except CredentialsError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED


async def _run(cmd: Command, args: argparse.Namespace, choice: ServerChoice | None,
               server: subprocess.Popen[bytes] | None) -> int:
    assert cmd.run is not None
    if cmd.offline(args):  # e.g. create --dry-run: validation needs no server
        return await cmd.run(Context(args))
    if choice is None:
        raise InputError("no server could be chosen for this command")
    async with connect(args, choice, server) as ctx:
        return await cmd.run(ctx)


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
