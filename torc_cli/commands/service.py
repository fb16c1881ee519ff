"""Commands that are no client of a server: serve, htpasswd."""

from __future__ import annotations

import argparse

from ..command import Command


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    # The server's own options live with the server; Hypercorn and Quart are imported only
    # when it runs.
    from torc_net.config import add_serve_arguments

    add_serve_arguments(p)


def _serve(args: argparse.Namespace) -> int:
    from torc_net.server import main_serve

    return main_serve(args)


def _htpasswd_arguments(p: argparse.ArgumentParser) -> None:
    from torc_net.htpasswd_cli import add_htpasswd_arguments

    add_htpasswd_arguments(p)


def _htpasswd(args: argparse.Namespace) -> int:
    from torc_net.htpasswd_cli import main_htpasswd

    return main_htpasswd(args)


COMMANDS = [
    Command("serve", "run the server (Torc's torc-server run)",
            """torc-trio serve                          # 127.0.0.1:8080, ./torc.db
               torc-trio serve --database /tmp/torc.db --host 0.0.0.0 --port 8080
               torc-trio serve -d ":memory:" --host 0.0.0.0 --threads 8 --pid-file torc.pid &
               kill -USR1 $(cat torc.pid)               # a snapshot: TORC_SNAPSHOT_DONE=<path>""",
            arguments=_serve_arguments, main=_serve,
            description="run the server (Torc's torc-server run: all of its flags are "
            "accepted)\n\nOnce it listens it prints TORC_SERVER_PORT=<port>, then the line to "
            "export,\n  export TORC_API_URL=http://HOST:PORT/torc-service/v1\nwith HOST "
            "127.0.0.1 for a loopback --host, this machine's name for 0.0.0.0\nor ::, else "
            "--host. SIGTERM or Ctrl-C stops it cleanly; SIGUSR1 writes a snapshot."),
    Command("htpasswd", "manage an htpasswd file (bcrypt) for the server",
            """torc-trio htpasswd add users.htpasswd alice
               torc-trio htpasswd list users.htpasswd""",
            arguments=_htpasswd_arguments, main=_htpasswd),
]
