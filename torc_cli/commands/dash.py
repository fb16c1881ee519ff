"""`torc-trio dash`: the web dashboard on a local database, in one command.

Why a command of its own: `serve` already serves the dashboard beside the API, but a user who
ran workflows standalone has no server to point a browser at. `dash` serves their local
database (``./torc_output/torc.db`` or ``--db``) on loopback and, on this machine only, lets
the server read the job files the results name (output tails not sent by runners, resource
samples): same user, same machine, so a path in a result names nothing they could not read
themselves. When a server already holds the database (a standalone run in progress), `dash`
does not start a second one: it prints that server's dashboard URL.
"""

from __future__ import annotations

import argparse
import os
import sys
import webbrowser
from pathlib import Path

from ..command import Command
from ..early import standalone_database, standalone_holder

DEFAULT_PORT = 8090  # torc-dash's


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: only this machine)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    opener = p.add_mutually_exclusive_group()
    opener.add_argument("--open", dest="open_browser", action="store_true", default=None,
                        help="open a browser without asking")
    opener.add_argument("--no-open", dest="open_browser", action="store_false",
                        help="never offer to open a browser")


def dashboard_url(api_url: str) -> str:
    """The dashboard's URL on the server whose API is at ``api_url``."""
    return api_url.split("/torc-service/", 1)[0].rstrip("/") + "/"


def _offer(url: str, choice: bool | None) -> None:
    if choice is None:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            return
        try:
            answer = input("Open it in a browser? [Y/n] ").strip().lower()
        except EOFError:
            return
        choice = answer in ("", "y", "yes")
    if choice and not webbrowser.open(url):
        print(f"torc-trio dash: no browser found; open {url} yourself", file=sys.stderr)


def _main(args: argparse.Namespace) -> int:
    database = standalone_database(args)
    if not Path(database).is_file():
        print(f"torc-trio dash: error: no database at {database}: run a workflow here first "
              "(torc-trio run spec.yaml) or name one with --db PATH", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print(f"torc-trio dash: error: --port: expected 0..65535, got {args.port}",
              file=sys.stderr)
        return 2
    holder = standalone_holder(database)
    if holder is not None:
        url = holder.get("url")
        if not url:
            print(f"torc-trio dash: error: another process (pid {holder.get('pid', '?')}) "
                  f"holds {database}; try again once it is listening", file=sys.stderr)
            return 2
        page = dashboard_url(str(url))
        print(f"torc-trio dash: {database} is served by pid {holder.get('pid', '?')}; "
              f"its dashboard: {page}", flush=True)
        _offer(page, args.open_browser)
        return 0

    import trio

    from torc_net.config import ServerConfig, client_host
    from torc_net.server import main_run

    config = ServerConfig(database=database, host=args.host, port=args.port,
                          read_job_files=True, print_port=False, log_level="warning")

    where = os.path.abspath(database)

    async def announce(port: int) -> None:
        url = f"http://{client_host(args.host)}:{port}/"
        print(f"torc-trio dash: {url}  (database {where}; Ctrl-C stops)",
              flush=True)
        await trio.to_thread.run_sync(_offer, url, args.open_browser, abandon_on_cancel=True)

    return main_run(config, announce)


COMMANDS = [
    Command("dash", "the web dashboard of the local database (Torc's torc-dash)",
            """torc-trio dash                       # ./torc_output/torc.db on http://127.0.0.1:8090/
               torc-trio --db run1/torc.db dash --port 0 --no-open""",
            arguments=_arguments, main=_main,
            description="serve the web dashboard of the local database (./torc_output/torc.db "
            "or --db)\n\nPrints the URL and, in a terminal, offers to open a browser. The "
            "dashboard of a server\nis served by `serve` itself, at http://HOST:PORT/."),
]
