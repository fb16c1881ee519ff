"""One API request from its raw parts to its answer: authenticate, decode and check the body,
call the endpoint, encode the answer — the one implementation both front doors use.

Why shared: the server has two ways in. The Quart views (:mod:`torc_net.app`) serve every
route; the raw-ASGI fast path (:mod:`torc_net.fastpath`) serves the runner protocol without
Quart's request and response objects. Both hand the same raw parts (the ``Authorization``
header, the client's address, the body bytes, the query and the path's integers) to
:func:`answer` and send what it returns, so auth, validation, error bodies and status codes
cannot differ between them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from torc_core.checks import INT64_MAX
from torc_core.errors import SpecError, TorcError

from .auth import Authenticator
from .fastdecode import Refused, compile_decoder
from .jsonbytes import json_bytes
from .openapi import Route
from .service import OFFLOAD_ITEMS, Answer, Call, Service
from .state import Principal
from .store import StoreError
from .validate import ApiError, Check, compile_schema, decode_body, not_found

log = logging.getLogger("torc_net.app")

#: Bodies larger than this are decoded and checked off the trio thread.
THREAD_DECODE_BYTES = 1 << 20

Endpoint = Callable[[Service, Call], Awaitable[Any]]
Headers = list[tuple[bytes, bytes]]

_JSON = (b"content-type", b"application/json")


def error_parts(status: int, error: str, detail: Any,
                headers: Mapping[str, str] | None = None) -> tuple[int, bytes, Headers]:
    """An error answer: ``{"error", "detail"}`` JSON with its headers."""
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1"))
             for k, v in (headers or {}).items()]
    return status, json_bytes({"error": error, "detail": detail}), [_JSON, *extra]


def failure_parts(exc: BaseException) -> tuple[int, bytes, Headers]:
    """The answer for an exception an endpoint raised (module docstring of torc_net.app)."""
    if isinstance(exc, ApiError):
        return error_parts(exc.status, exc.error, exc.detail, exc.headers)
    if isinstance(exc, SpecError):
        return error_parts(422, "invalid spec", list(exc.errors))
    if isinstance(exc, TorcError):
        short = {404: "not found", 409: "conflict", 422: "unprocessable"}.get(
            exc.status_hint, "bad request")
        return error_parts(exc.status_hint, short, str(exc))
    if isinstance(exc, StoreError):
        if exc.transient:
            return error_parts(503, "storage unavailable", str(exc), {"Retry-After": "5"})
        log.error("a change could not be stored: %s", exc)
        return error_parts(500, "internal error", f"could not store this request: {exc}")
    log.error("internal error", exc_info=exc)
    return error_parts(500, "internal error", type(exc).__name__)


PathCheck = Callable[[Mapping[str, Any]], None]


def path_check(route: Route, max_depth: int) -> PathCheck:
    """The check of a route's path parameters, against their converter's schema
    (:data:`torc_net.openapi.PATH_SCHEMAS`). Ids beyond what the store holds exist nowhere (a
    404; they must not reach SQLite); a name that breaks its schema is a 400 naming it."""
    checks = {name: compile_schema(schema, max_depth)
              for name, schema in route.path_schemas.items() if schema["type"] != "integer"}

    def check(params: Mapping[str, Any]) -> None:
        for name, value in params.items():
            if isinstance(value, int):
                if value > INT64_MAX:
                    raise not_found(f"no {name.removesuffix('_id').replace('_', ' ')} {value}")
            else:
                checks[name](value, f"path parameter {name}", 0)

    return check


BodyReader = Callable[[bytes], Any]


def body_reader(schema: Mapping[str, Any], max_depth: int) -> BodyReader:
    """``read(raw) -> body``: decoded, checked, defaults filled in, or a located 400. The
    typed decoder (:mod:`torc_net.fastdecode`) first where the schema has one; what it does
    not take goes to the checker, which says why or takes it."""
    check: Check = compile_schema(schema, max_depth)
    typed = compile_decoder(schema)

    def read(raw: bytes) -> Any:
        if typed is not None:
            try:
                return typed(raw)
            except Refused:
                pass
        return check(decode_body(raw, max_depth), "", 0)

    return read


@dataclass(frozen=True, slots=True)
class Handler:
    """One route's endpoint with its body check, ready to :meth:`answer` requests."""

    route: Route
    endpoint: Endpoint
    read_body: BodyReader | None
    check_path: PathCheck

    @classmethod
    def of(cls, route: Route, endpoint: Endpoint, max_depth: int) -> Handler:
        read = None if route.body is None else body_reader(route.body, max_depth)
        return cls(route, endpoint, read, path_check(route, max_depth))

    async def who(self, auth: Authenticator, header: str | None, address: str | None,
                  params: Mapping[str, Any]) -> Principal:
        """The path's parameters checked, then the credentials (before the body is read)."""
        self.check_path(params)
        return await auth.authenticate(header, address)

    async def answer(self, service: Service, who: Principal, raw: bytes, args: Mapping[str, str],
                     params: Mapping[str, Any]) -> tuple[int, bytes, Headers]:
        """The whole answer to a request whose caller is ``who`` (:meth:`who`): status, body
        and headers. Never raises for a request's fault (errors are answers)."""
        try:
            body = None
            if self.read_body is not None:
                if len(raw) > THREAD_DECODE_BYTES:
                    body = await trio.to_thread.run_sync(
                        self.read_body, raw, limiter=service.parse_limiter,
                        abandon_on_cancel=True)
                else:
                    body = self.read_body(raw)
            result = await self.endpoint(service, Call(who, body, args, params))
        except Exception as exc:  # every failure becomes its answer
            return failure_parts(exc)
        status = self.route.status
        if isinstance(result, Answer):
            status, result = result.status, result.body
        if isinstance(result, dict) and len(result.get("items") or ()) > OFFLOAD_ITEMS:
            # A big page: encoding 100,000 items would hold the event loop for a second.
            data = await trio.to_thread.run_sync(json_bytes, result,
                                                 limiter=service.parse_limiter,
                                                 abandon_on_cancel=True)
        else:
            data = json_bytes(result)
        return status, data, [_JSON]
