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
            """torc-trio serve --database /tmp/torc.db --host 0.0.0.0 --port 8080
               torc-trio serve -d ":memory:" --host 0.0.0.0 --port 8080 --threads 8
               torc-trio serve --port 0 --pid-file torc.pid   # then: kill -USR1 $(cat torc.pid)""",
            arguments=_serve_arguments, main=_serve),
    Command("htpasswd", "manage an htpasswd file (bcrypt) for the server",
            """torc-trio htpasswd add users.htpasswd alice
               torc-trio htpasswd list users.htpasswd""",
            arguments=_htpasswd_arguments, main=_htpasswd),
]
