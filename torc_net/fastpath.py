"""The API at the speed of the wire: every HTTP route answered without Quart.

Theory of operation
-------------------
:meth:`FastPath.route` finds a request's route in the route table (:data:`torc_net.routes.
ROUTES`, every route but the websocket feeds) by method and path, and
:meth:`FastPath.respond` answers it from its raw parts (the path's parameters, the query
string, the ``Authorization`` header, the client's address, a way to read the body, bounded
in size and time as Quart bounds it: 413, 408) through the same
:class:`~torc_net.dispatch.Handler` the Quart views use — same auth, same schema check, same
endpoint, same error bodies. Two carriers call it: the server's connection loop
(:mod:`torc_net.wire`, the usual way in) and :class:`FastPath` as an ASGI app in front of Quart
(inside :class:`~torc_net.admission.Admission`), for connections Hypercorn serves. Everything
else (websockets, the dashboard, unknown routes, other methods on the API's paths) goes to
Quart, whose views answer the API only under ``serve --no-fast-path``.

Why: measured on this machine, a bare ASGI handler under Hypercorn answered 2,013 requests/s
where the same handler in Quart-Trio answered 1,259: Quart's request context, Werkzeug routing
and Response object were a third of a request's cost before any work was done. And without
them a server that is only asked for the API never imports Quart at all.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import trio

from .auth import Authenticator
from .dispatch import Endpoint, Handler, Headers, error_parts
from .openapi import API_PREFIX, Route
from .service import Service
from .validate import MAX_BODY_BYTES, ApiError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

def query_args(query: bytes) -> dict[str, str]:
    """The query string as the endpoints read it: each name's first value, ``+`` and escapes
    decoded (UTF-8, undecodable bytes replaced), blank values kept — as Werkzeug's
    ``request.args.get`` gives them."""
    if not query:
        return {}
    args: dict[str, str] = {}
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True,
                                 errors="replace"):
        args.setdefault(name, value)
    return args


class BodyError(Exception):
    """The body could not be read: the answer says why (413, 408) or the client left."""

    def __init__(self, parts: tuple[int, bytes, Headers] | None) -> None:
        super().__init__()
        self.parts = parts


def too_large() -> BodyError:
    """A body over :data:`MAX_BODY_BYTES`: 413."""
    return BodyError(error_parts(413, "body too large",
                                 f"request body larger than {MAX_BODY_BYTES} bytes"))


class FastPath:
    """ASGI app: every HTTP route of the API answered here, the rest by ``app`` (module
    docstring)."""

    def __init__(self, app: App, service: Service, auth: Authenticator,
                 routes: list[Route], endpoints: Mapping[str, Endpoint], *,
                 max_depth: int, body_timeout_s: float) -> None:
        self.app = app
        self.service = service
        self.auth = auth
        self.body_timeout_s = body_timeout_s
        #: (method, the path's number of '/') -> [(its matcher, its handler, the names of its
        #: integer parameters)], paths with fewer parameters first (a fixed segment wins over
        #: a parameter, as in Werkzeug)
        self._routes: dict[tuple[str, int], list[tuple[Callable[[str], re.Match[str] | None],
                                                       Handler, frozenset[str]]]] = {}
        for r in sorted((r for r in routes if not r.websocket), key=lambda r: len(r.path_params)):
            ints = frozenset(name for name, schema in r.path_schemas.items()
                             if schema["type"] == "integer")
            key = (r.method, (API_PREFIX + r.path).count("/"))
            self._routes.setdefault(key, []).append(
                (re.compile(r.path_regex).match, Handler.of(r, endpoints[r.name], max_depth),
                 ints))
        #: requests answered here (tests and diagnostics)
        self.served = 0

    def route(self, method: str, path: str) -> tuple[Handler, dict[str, Any]] | None:
        """The handler of the API route ``method path`` and the path's parameters, or None
        (not an API route: Quart's)."""
        for match, handler, ints in self._routes.get((method, path.count("/")), ()):
            m = match(path)
            if m is not None:
                return handler, {name: int(value) if name in ints else value
                                 for name, value in m.groupdict().items()}
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.route(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        header = None
        length = None
        for key, value in scope["headers"]:
            if key == b"authorization" and header is None:  # the first, as Quart reads it
                header = value.decode("latin-1")
            elif key == b"content-length" and value.isdigit():
                length = int(value)
        client = scope.get("client")
        address = str(client[0]) if client else None

        async def read() -> bytes:
            return await self._receive_body(receive)

        answer = await self.respond(*found, header, address, length, read,
                                    scope.get("query_string", b""))
        if answer is None:
            return  # the client went away: nobody to answer
        status, data, headers, close = answer
        headers = [*headers, (b"content-length", str(len(data)).encode())]
        if close:  # the unread body is still on the wire: this connection cannot be reused
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def respond(self, handler: Handler, params: dict[str, Any], header: str | None,
                      address: str | None, length: int | None,
                      read: Callable[[], Awaitable[bytes]], query: bytes = b""
                      ) -> tuple[int, bytes, Headers, bool] | None:
        """The answer to one fast request, whatever carried it (this ASGI app, or
        :mod:`torc_net.wire`): status, body, headers, and whether the connection must close
        (a body left unread); None if the client went away. ``read`` returns the whole body,
        within the body timeout, or raises :class:`BodyError`."""
        self.served += 1
        close = False
        try:
            who = await handler.who(self.auth, header, address, params)
        except ApiError as exc:
            parts = error_parts(exc.status, exc.error, exc.detail, exc.headers)
            close = not await self.drain(read, length)
        else:
            try:
                raw = await self.bounded(read, length)
            except BodyError as exc:
                if exc.parts is None:
                    return None
                parts, close = exc.parts, True
            else:
                parts = await handler.answer(self.service, who, raw, query_args(query),
                                             params)
        return (*parts, close)

    async def bounded(self, read: Callable[[], Awaitable[bytes]], length: int | None) -> bytes:
        """``read()``, refused from its Content-Length when that is over the limit, and
        within the body timeout."""
        if length is not None and length > MAX_BODY_BYTES:
            raise too_large()
        with trio.move_on_after(self.body_timeout_s):
            return await read()
        raise BodyError(error_parts(
            408, "request timeout",
            f"request body not received within {self.body_timeout_s:g} s"))

    async def drain(self, read: Callable[[], Awaitable[bytes]], length: int | None) -> bool:
        """Read and drop the body of a refused request (a body left unread on a keep-alive
        connection kept its next request from being answered); False if it could not be."""
        try:
            await self.bounded(read, length)
        except BodyError:
            return False
        return True

    @staticmethod
    async def _receive_body(receive: Receive) -> bytes:
        """The whole body from ASGI messages, at most MAX_BODY_BYTES."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise BodyError(None)
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise too_large()
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
