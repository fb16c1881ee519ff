"""Admission control: bounded concurrent request work, 503 + Retry-After past the bound.

Why: a thousand allocations starting at once all contact the server. Queueing every request
would grow memory and latency without bound and make every runner time out together; refusing
at once with ``Retry-After`` lets runners back off with jitter while the admitted requests
finish quickly. Websocket connections are long-lived and are not counted here (the feed
bounds their memory instead).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Admission:
    """ASGI middleware admitting at most ``max_concurrent`` HTTP requests at a time."""

    def __init__(self, app: Any, max_concurrent: int, retry_after_s: int = 1) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        self.app: ASGIApp = app
        self.max_concurrent = max_concurrent
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.refused = 0
        self._idle = trio.Event()
        self._idle.set()
        self._body = json.dumps(
            {"error": "server busy", "detail": "too many concurrent requests; retry later"}
        ).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_concurrent:
            self.refused += 1
            await send({
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self._body)).encode()),
                    (b"retry-after", str(self.retry_after_s).encode()),
                ],
            })
            await send({"type": "http.response.body", "body": self._body})
            return
        if self.in_flight == 0:
            self._idle = trio.Event()
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no HTTP request is being worked on (graceful shutdown)."""
        while self.in_flight:
            await self._idle.wait()
