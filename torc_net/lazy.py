"""An ASGI app built on its first request: the server's Quart app, whose import (Quart, Flask,
Werkzeug, Jinja2, click) was a third of the server's start.

Why: every API route is answered by :mod:`torc_net.fastpath` without Quart; what Quart still
serves (the dashboard, the websocket feeds, unknown routes' 404 and 405, ``HEAD``) is asked for
by people, rarely by programs, and a standalone ``torc-trio run`` never asks for it, yet its
server waited for that import before it answered anything (BENCHMARKS.md, "The connection
loop").

The app is built in a worker thread (the event loop keeps answering the API meanwhile), once,
by the first request that needs it; requests arriving during the build wait for it. Its ASGI
lifespan then runs in the server's lifespan: :class:`LazyApp` completes the server's startup at
once and, at the server's shutdown, shuts the built app down first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

log = logging.getLogger("torc_net.lazy")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

#: How long a built app's lifespan may take to start or to shut down.
LIFESPAN_TIMEOUT_S = 60


class LazyApp:
    """ASGI app: ``build()`` (run in a thread) on the first request, then that app."""

    def __init__(self, build: Callable[[], App]) -> None:
        self._build = build
        self.app: App | None = None
        self._lock = trio.Lock()
        #: the server's lifespan task's nursery, where the built app's lifespan runs
        self._nursery: trio.Nursery | None = None
        #: the built app's lifespan, if it has one
        self._lifespan: AppLifespan | None = None

    @property
    def built(self) -> bool:
        """Whether the app has been built (tests and diagnostics)."""
        return self.app is not None

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive,
                       send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._server_lifespan(receive, send)
            return
        app = self.app if self.app is not None else await self.get()
        await app(scope, receive, send)

    async def get(self) -> App:
        """The app, built now if it was not yet."""
        async with self._lock:
            if self.app is None:
                app = await trio.to_thread.run_sync(self._build)
                if self._nursery is not None:
                    await self._start_lifespan(app, self._nursery)
                self.app = app
            return self.app

    async def _server_lifespan(self, receive: Receive, send: Send) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    async with self._lock:
                        self._nursery = None
                        if self._lifespan is not None:
                            await self._lifespan.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    nursery.cancel_scope.cancel()
                    return

    async def _start_lifespan(self, app: App, nursery: trio.Nursery) -> None:
        """Run ``app``'s lifespan in ``nursery`` and wait for its startup."""
        lifespan = AppLifespan(app)
        if await lifespan.start(nursery):
            self._lifespan = lifespan


class AppLifespan:
    """An ASGI app's lifespan (its startup before it serves, its shutdown after), driven as
    Hypercorn drives it: used for the app :class:`LazyApp` builds, and by
    :func:`torc_net.wire.serve` for the server's own app, so that the server need not import
    Hypercorn's trio worker (its HTTP/2 and websocket modules: ~80 ms of the start) before it
    listens. An app without lifespan support (it raises) is served without, as Hypercorn serves
    it; a failed startup or shutdown raises."""

    def __init__(self, app: App, state: dict[str, Any] | None = None,
                 timeout_s: float = LIFESPAN_TIMEOUT_S) -> None:
        self.app = app
        self.state = {} if state is None else state
        self.timeout_s = timeout_s
        self._to_app, self._inbox = trio.open_memory_channel[Message](math.inf)
        self._outbox, self._from_app = trio.open_memory_channel[Message](math.inf)
        self.supported = True

    async def start(self, nursery: trio.Nursery) -> bool:
        """Run the lifespan in ``nursery`` and wait for its startup; whether it is supported."""
        scope = {"type": "lifespan", "asgi": {"spec_version": "2.0", "version": "3.0"},
                 "state": self.state}

        async def run() -> None:
            try:
                await self.app(scope, self._inbox.receive, self._outbox.send)
            except Exception as exc:
                log.warning("the app's lifespan failed (%s); serving it without", exc)
            finally:
                self._outbox.send_nowait({"type": "lifespan.ended"})

        nursery.start_soon(run)
        self.supported = await self._ask("lifespan.startup")
        return self.supported

    async def shutdown(self) -> None:
        if self.supported:
            await self._ask("lifespan.shutdown")

    async def _ask(self, kind: str) -> bool:
        """Send a lifespan message and wait for its answer; True if it completed."""
        await self._to_app.send({"type": kind})
        with trio.move_on_after(self.timeout_s):
            answer = await self._from_app.receive()
            if answer["type"] == f"{kind}.complete":
                return True
            if answer["type"] == f"{kind}.failed":
                raise RuntimeError(f"{kind} failed: {answer.get('message', '')}")
            return False
        log.warning("the app's %s took over %g s", kind, self.timeout_s)
        return False
