"""The Quart-Trio application: the HTTP contract of docs/api.md over :class:`Service`.

Theory of operation
-------------------
Routes are data (:data:`torc_net.routes.ROUTES`); one generic view per route authenticates,
reads the body (bounded in size and time), decodes it, checks it against the route's schema
and calls the endpoint with a :class:`~torc_net.service.Call`. The same list produces the
OpenAPI document, so the document, the checks and the routes cannot drift apart.

Errors are always ``{"error", "detail"}`` JSON: :class:`ApiError` (bad input, 401/403/404/409,
429, 503 while a workflow reloads), core errors by their ``status_hint``, Werkzeug HTTP errors
(unknown route 404, 405, 408 for a body not received in time, 413 for a body over the limit)
and a failed commit (503, or 500 if the change itself could not be stored). Only a bug gives a
500.

Work the trio thread does per request stays small: a body over ``_THREAD_DECODE_BYTES`` is
decoded and checked in a worker thread (the service's parse limiter), so a 64 MiB create does
not stall every other request for the second its JSON takes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio
from quart import Response, has_request_context, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from torc_core.errors import SpecError, TorcError

from .auth import Authenticator
from .dash import register_dashboard
from .dispatch import Endpoint, Handler, Headers, failure_parts, path_check
from .jsonbytes import json_bytes
from .openapi import API_PREFIX, Route
from .routes import ROUTES
from .service import Service
from .store import StoreError
from .validate import DEFAULT_MAX_DEPTH, MAX_BODY_BYTES, ApiError

log = logging.getLogger("torc_net.app")


def json_response(status: int, obj: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json_bytes(obj), status=status, content_type="application/json",
                    headers=dict(headers or {}))


def parts_response(parts: tuple[int, bytes, Headers]) -> Response:
    """A :class:`~torc_net.dispatch.Handler`'s answer as a Quart response."""
    status, data, headers = parts
    extra = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers
             if k != b"content-type"}
    return Response(data, status=status, content_type="application/json", headers=extra)


def error_response(exc: ApiError) -> Response:
    return json_response(exc.status, {"error": exc.error, "detail": exc.detail}, exc.headers)


async def _drain_body() -> None:
    """Read (and drop) a request body the answer did not need. A body left unread on a
    keep-alive connection that arrives after the answer kept the connection's next request
    from ever being answered. Bounded like any body: the size limit and the body timeout."""
    if not has_request_context():
        return
    try:
        await request.get_data(cache=False)
    except HTTPException:  # too large or too slow: the connection is closed anyway
        pass


def create_app(service: Service, auth: Authenticator, endpoints: Mapping[str, Endpoint], *,
               max_depth: int = DEFAULT_MAX_DEPTH, body_timeout_s: float = 30.0) -> QuartTrio:
    """Build the app (the API and the dashboard's pages). ``service`` and ``auth`` are owned
    (and started) by the caller; ``endpoints`` is the route table's
    (:func:`torc_net.endpoints.all_endpoints`, the one the fast path answers with)."""
    app = QuartTrio("torc_net")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["BODY_TIMEOUT"] = body_timeout_s
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.extensions["torc_service"] = service

    def make_view(route: Route, endpoint: Endpoint) -> Callable[..., Awaitable[Response]]:
        handler = Handler.of(route, endpoint, max_depth)

        async def view(**params: Any) -> Response:
            try:
                who = await handler.who(auth, request.headers.get("Authorization"),
                                        request.remote_addr, params)
            except ApiError as exc:
                await _drain_body()
                return error_response(exc)
            raw = await request.get_data(cache=False)  # also where none is expected
            assert isinstance(raw, bytes)
            return parts_response(await handler.answer(service, who, raw, request.args, params))

        view.__name__ = route.name
        return view

    def make_feed(route: Route) -> Callable[..., Awaitable[Response | None]]:
        check_path = path_check(route, max_depth)

        async def feed_view(**params: Any) -> Response | None:
            try:
                check_path(params)
                who = await auth.authenticate(websocket.headers.get("Authorization"),
                                              websocket.remote_addr)
                batched = websocket.args.get("batch") in ("1", "true")
                sub, first = service.subscribe(who, params.get("workflow_id"), batched=batched)
            except ApiError as exc:
                return error_response(exc)

            client = websocket.scope.get("client")
            if client:
                sub.client = (str(client[0]), int(client[1]))

            async def send(text: str) -> None:
                # Watched: a send that waits too long is hung up on (Feed.run_watchdog).
                sub.sending_since = trio.current_time()
                try:
                    await websocket.send(text)
                finally:
                    sub.sending_since = None

            try:
                await websocket.accept()
                if batched:
                    await send(json.dumps(first, separators=(",", ":")))
                else:
                    for message in first:
                        await send(json.dumps(message, separators=(",", ":")))
                async for text, count in sub.receive:
                    if sub.overflowed:
                        break
                    await send(text)
                    sub.sent(count)
                with trio.move_on_after(1):
                    if sub.overflowed:
                        await websocket.send('{"type":"overflow"}')
                        await websocket.close(1008, "overflow")
                    else:
                        await websocket.close(1000)
            finally:
                service.feed.unsubscribe(sub)
            return None

        feed_view.__name__ = route.name
        return feed_view

    for route in ROUTES:
        rule = API_PREFIX + route.path
        if route.websocket:
            app.add_websocket(rule, route.name, make_feed(route))
        else:
            app.add_url_rule(rule, route.name, make_view(route, endpoints[route.name]),
                             methods=[route.method])

    register_dashboard(app, service, auth)

    # Errors raised outside an endpoint's answer (the dashboard's pages): the same bodies.
    @app.errorhandler(ApiError)
    @app.errorhandler(SpecError)
    @app.errorhandler(TorcError)
    @app.errorhandler(StoreError)
    async def _known_error(exc: Exception) -> Response:
        return parts_response(failure_parts(exc))

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        short = {404: "not found", 405: "method not allowed", 408: "request timeout",
                 413: "body too large"}.get(code, exc.name.lower())
        detail = exc.description or exc.name
        headers = {}
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        if code not in (408, 413):
            await _drain_body()
        else:
            detail = (f"request body larger than {MAX_BODY_BYTES} bytes" if code == 413 else
                      f"request body not received within {body_timeout_s:g} s")
            # The unread body is still on the wire: this connection cannot be reused.
            headers["Connection"] = "close"
        return json_response(code, {"error": short, "detail": detail}, headers)

    @app.errorhandler(Exception)
    async def _bug(exc: Exception) -> Response:
        return parts_response(failure_parts(exc))

    return app
