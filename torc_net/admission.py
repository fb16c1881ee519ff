"""Admission control: bounded concurrent request work, a bounded FIFO queue, then 503.

Why: a thousand allocations starting at once all contact the server. Working on every request
at once would grow memory and latency without bound and make every runner time out together.
Refusing everything past the bound at once is not better: each refusal costs the server almost
as much as an answer (the request is still read, parsed and answered), the refused runners back
off exponentially while the admitted ones keep their places, and in a burst some allocations
then wait a minute for their first job (measured: p99 56 s with 1,000 allocations).

So requests past ``max_concurrent`` wait in a FIFO queue (a slot freed by a finished request is
handed to the oldest waiter, so nobody barges ahead) for at most ``max_wait_s``; only when the
queue already holds ``max_queued`` requests, or the wait runs out, is the answer 503 +
``Retry-After``. With one request per connection in flight, the queue is bounded by the number
of connections anyway. Websocket connections are long-lived and are not counted here (the feed
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
    """ASGI middleware admitting at most ``max_concurrent`` HTTP requests at a time, with up to
    ``max_queued`` more waiting (FIFO) for at most ``max_wait_s`` each."""

    def __init__(self, app: Any, max_concurrent: int, retry_after_s: int = 1, *,
                 max_queued: int = 0, max_wait_s: float = 5.0) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        if max_queued < 0:
            raise ValueError("max_queued must be >= 0")
        self.app: ASGIApp = app
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.max_wait_s = max_wait_s
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.queued = 0
        self.refused = 0
        #: requests that waited in the queue before being admitted
        self.waited = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._idle = trio.Event()
        self._idle.set()
        self._body = json.dumps(
            {"error": "server busy", "detail": "too many concurrent requests; retry later"}
        ).encode()

    def refusal(self) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """The answer to a request :meth:`enter` refused: status, body, headers."""
        return 503, self._body, [
            (b"content-type", b"application/json"),
            (b"retry-after", str(self.retry_after_s).encode()),
        ]

    async def _wait_for_slot(self) -> bool:
        """Queue up; True once a finishing request handed us its slot (``in_flight`` already
        counts us), False when the wait ran out."""
        self.queued += 1
        try:
            with trio.move_on_after(self.max_wait_s):
                await self._lot.park()
                self.waited += 1
                return True
            return False
        finally:
            self.queued -= 1

    async def enter(self) -> bool:
        """Take a slot, waiting in the queue if need be; False: refused (answer
        :meth:`refusal`). Every True is matched by one :meth:`leave`."""
        if self.in_flight >= self.max_concurrent:
            if self.queued >= self.max_queued or not await self._wait_for_slot():
                self.refused += 1
                return False
        else:
            if self.in_flight == 0:
                self._idle = trio.Event()
            self.in_flight += 1
        return True

    def leave(self) -> None:
        """A request that :meth:`enter` admitted is done: its slot goes to the oldest waiter
        (``in_flight`` unchanged), or is freed."""
        if self._lot:
            self._lot.unpark()
        else:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not await self.enter():
            status, body, headers = self.refusal()
            await send({"type": "http.response.start", "status": status,
                        "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.leave()

    async def wait_idle(self) -> None:
        """Return once no HTTP request is being worked on (graceful shutdown)."""
        while self.in_flight:
            await self._idle.wait()
