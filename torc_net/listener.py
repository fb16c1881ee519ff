"""A listener that accepts every waiting connection at once.

Why: ``trio.SocketListener.accept`` takes one connection, then yields to the scheduler, which
runs every other runnable task before the next accept. Under a burst of a thousand
allocations that pass takes a few hundred milliseconds (hundreds of requests answered), so
connections came in at a few per second while their requests waited in the kernel's backlog:
with the writer process keeping the event loop busy without pause, the slowest allocation's
first claim took 8 s (BENCHMARKS.md, "A writer process"). Here one wake-up of the listening
socket drains the backlog into a queue, and ``trio.serve_listeners`` starts a handler for each
queued connection without waiting for another pass.
"""

from __future__ import annotations

import errno
import socket
from collections import deque

import trio

#: accept() failures that concern one connection only (it was reset before we took it):
#: try the next (the same list as trio's SocketListener).
_IGNORED = frozenset(
    getattr(errno, name) for name in ("ECONNABORTED", "EPROTO", "EPERM") if hasattr(errno, name)
)


class DrainingListener(trio.abc.Listener[trio.SocketStream]):
    """Accepts from a listening stdlib socket, all waiting connections per wake-up."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._ready: deque[socket.socket] = deque()

    async def accept(self) -> trio.SocketStream:
        if not self._ready:
            await trio.lowlevel.checkpoint_if_cancelled()
            while not self._drain():
                await trio.lowlevel.wait_readable(self._sock)
        # No checkpoint here on purpose: serve_listeners starts the next handler at once.
        return trio.SocketStream(trio.socket.from_stdlib_socket(self._ready.popleft()))

    def _drain(self) -> bool:
        """Take every connection waiting now; whether any is ready. A lack of descriptors
        (EMFILE and the like) is raised, once the connections already taken are served:
        ``serve_listeners`` then waits a little before it tries again."""
        while True:
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return bool(self._ready)
            except OSError as exc:
                if exc.errno in _IGNORED:
                    continue
                if self._ready:
                    return True
                raise
            self._ready.append(conn)

    async def aclose(self) -> None:
        trio.lowlevel.notify_closing(self._sock)
        self._sock.close()
        for conn in self._ready:
            conn.close()
        self._ready.clear()
        await trio.lowlevel.checkpoint()
