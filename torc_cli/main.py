"""`torc-trio`: the command people use. argparse front end; each command is a coroutine.

Global options come before the command (``torc-trio -s -f json status 1``). This module is the
entry point and imports only the standard library before it has started the standalone server
a command needs (:mod:`torc_cli.early`): that server's start-up then overlaps with the CLI's
imports and with reading the spec. The rest lives in :mod:`torc_cli.session` and
:mod:`torc_cli.commands`.
"""

from __future__ import annotations

import os
import sys

from .early import prestart_server


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    server = prestart_server(argv)
    try:
        from .session import run_cli

        return run_cli(argv, server)
    finally:
        if server is not None:  # not used (an error before connecting), or already stopped
            from .standalone import stop_server_process

            stop_server_process(server)


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
