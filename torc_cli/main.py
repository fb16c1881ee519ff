"""`torc-trio`: the command people use.

This module is the entry point and imports only the standard library before it has decided
which server the command uses and started the standalone server a command that runs jobs
needs (:mod:`torc_cli.early`): that server's start-up then overlaps with the CLI's imports
and with reading the spec. The parser and the commands live in :mod:`torc_cli.cli` and
:mod:`torc_cli.commands`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .early import NO_SERVER, choose_server, prestart_server, scan


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    early = scan(argv)
    choice = None
    if early.command and not early.help and early.command.split()[0] not in NO_SERVER:
        choice = choose_server(early)
    before = _existing(choice.database) if choice and choice.database else set()
    server = prestart_server(early, choice) if choice else None

    def leave_nothing() -> None:
        """The input was refused before anything was made: stop the server started for it,
        and remove what it created (an empty database and its folder)."""
        if server is None or choice is None or choice.database is None:
            return
        from .standalone import stop_server_process

        stop_server_process(server)
        _remove_new(choice.database, before)

    try:
        from .cli import run_cli

        return run_cli(argv, choice, server, on_refused_input=leave_nothing)
    finally:
        if server is not None:  # not used (an error before connecting), or already stopped
            from .standalone import stop_server_process

            stop_server_process(server)


_SIDE_FILES = ("-wal", "-shm", "-journal", ".lock")  # SQLite's and the holder lock's


def _existing(database: str) -> set[str]:
    """Which of the database's files and folders exist now."""
    paths = [database, *(database + s for s in _SIDE_FILES)]
    parent = Path(database).parent
    return {p for p in [*paths, str(parent)] if os.path.exists(p)}


def _remove_new(database: str, before: set[str]) -> None:
    for suffix in ("", *_SIDE_FILES):
        path = database + suffix
        if path not in before:
            Path(path).unlink(missing_ok=True)
    parent = Path(database).parent
    if str(parent) not in before:
        try:
            parent.rmdir()  # only if empty
        except OSError:
            pass


def entry_point() -> None:
    """The console script: run, flush, and exit without tearing the interpreter down (freeing
    a run's objects one by one takes a tenth of a second and helps nobody; every file and
    child process is closed by then)."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`torc-trio jobs list 1 | head`): stop quietly, with the
        # status of a command that SIGPIPE ended, as cat or grep would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 128 + 13
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry_point()
