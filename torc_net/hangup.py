"""Hanging up on clients that stopped reading.

Why this exists: Hypercorn writes to a connection inside a cancel scope shielded from
cancellation, so a client that stops reading (its receive window full) blocks that write, and
the task making it, forever: neither a timeout around ``websocket.send`` nor the end of the
shutdown grace period can cancel it, and the server never exits (observed: more than 25 s
after SIGTERM with a 3 s grace). The one thing that ends such a write is the socket itself
failing. ``shutdown(SHUT_RDWR)`` on the connection does that without closing the descriptor
(which Trio still watches): the blocked write fails with EPIPE, Hypercorn treats the
connection as closed, and the task ends.

The ASGI scope names a connection only by its addresses, so :func:`hang_up` finds the socket
among the process's descriptors by its local port and peer address (Linux ``/proc/self/fd``;
``/dev/fd`` elsewhere). It is called rarely — for a feed subscriber stuck longer than
:data:`torc_net.feed.SEND_TIMEOUT_S`, and once at the end of a shutdown — so the scan's cost
(microseconds per descriptor) does not matter.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable

log = logging.getLogger("torc_net.hangup")

Address = tuple[str, int]


def _descriptors() -> Iterable[int]:
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        return [int(n) for n in names if n.isdigit()]
    return []


def _same(a: Address, b: Address) -> bool:
    host_a = a[0].removeprefix("::ffff:")
    host_b = b[0].removeprefix("::ffff:")
    return host_a == host_b and a[1] == b[1]


def hang_up(port: int, peers: Iterable[Address] | None = None) -> int:
    """Shut down the server's connections on ``port`` (to ``peers``, or all of them); the
    number shut down."""
    wanted = None if peers is None else list(peers)
    done = 0
    for fd in _descriptors():
        try:
            copy = os.dup(fd)
        except OSError:  # already gone
            continue
        try:
            sock = socket.socket(fileno=copy)
        except OSError:  # not a socket: close our copy (it kept e.g. the database's lock
            os.close(copy)  # file open, and a later server in this process was refused)
            continue
        try:
            if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET,
                                                                      socket.AF_INET6):
                continue
            if sock.getsockname()[1] != port:
                continue
            try:
                peer = sock.getpeername()[:2]
            except OSError:  # the listening socket, or not connected
                continue
            if wanted is not None and not any(_same(peer, w) for w in wanted):
                continue
            sock.shutdown(socket.SHUT_RDWR)
            done += 1
        except OSError:
            continue
        finally:
            sock.close()  # our duplicate only
    if done:
        log.warning("hung up on %d connection(s) that stopped reading", done)
    return done
