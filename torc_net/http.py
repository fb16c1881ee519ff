"""A minimal async HTTP/1.1 client on trio + h11, with a keep-alive connection pool.

Theory of operation
-------------------
An :class:`HttpConnectionPool` is bound to one base URL (``http://host:port/base``, or
``https://``: TLS with the trust of :mod:`torc_net.tls`, the handshake done when the connection
opens, so that a certificate that cannot be verified is a :class:`~torc_net.tls.TlsError` at
once, never a retried "connection failed"). Each
request takes an idle connection from the pool (or opens a new one), writes the whole request
in one ``send_all``, reads until h11 reports ``EndOfMessage`` and, when both sides of the h11
state machine are ``DONE``, puts the connection back with ``start_next_cycle()``. Anything
else (``Connection: close``, an error, a cancellation mid-flight) closes the connection: a
connection in an unknown state is never reused.

Rule 1: a *reused* connection that fails before a single response byte arrived was, almost
surely, closed by the server while idle. The request is retried once, transparently, on a fresh
connection. A failure on a fresh connection, or after response bytes arrived, is reported as
:class:`ConnectionFailed` and the caller decides (see ``torc_net.client``).

Rule 2: no timeouts here. Callers put ``trio.fail_after`` / ``move_on_after`` around
:meth:`HttpConnectionPool.request`; a cancelled request closes its connection.

Rule 3: bounded. At most ``max_connections`` connections are open at once (further requests
wait) and at most ``max_idle`` are kept for reuse.

Rule 4: a plain ``http://`` request that a fresh connection cannot complete may have reached a
TLS port (the server drops it without a word). The pool then tries a TLS handshake there; if one
succeeds, the answer is a :class:`~torc_net.tls.TlsError` saying to use ``https://``, instead of
retries that could never succeed.
"""

from __future__ import annotations

import base64
import json as _json
import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h11
import trio

from .tls import TlsError, TlsSettings, default_settings, describe_ssl_error

__all__ = [
    "ConnectionFailed",
    "HttpConnectionPool",
    "HttpError",
    "HttpResponse",
    "basic_auth_header",
    "parse_base_url",
]

_RECEIVE_SIZE = 256 * 1024
_USER_AGENT = b"torc-trio/0.1"


class HttpError(Exception):
    """Base class of this module's errors."""


class ConnectionFailed(HttpError):
    """The request could not be completed on the wire (refused, reset, EOF, protocol error).

    ``response_started`` tells whether any byte of a response had arrived.
    """

    def __init__(self, message: str, *, response_started: bool = False) -> None:
        super().__init__(message)
        self.response_started = response_started


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A complete response. ``headers`` maps lower-cased names to values (repeats joined)."""

    status: int
    headers: dict[str, str]
    body: bytes
    reason: str = ""

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        """The body decoded as JSON (``None`` for an empty body)."""
        if not self.body:
            return None
        return _json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


_DEFAULT_PORTS = {"http": 80, "https": 443}
#: How long the Rule 4 probe may take (it runs only after a failure).
_PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class BaseUrl:
    host: str
    port: int
    path: str  # no trailing slash; "" for the root
    scheme: str = "http"

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def host_header(self) -> bytes:
        default = self.port == _DEFAULT_PORTS[self.scheme]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (host if default else f"{host}:{self.port}").encode("ascii")

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_base_url(url: str) -> BaseUrl:
    """Split ``http[s]://host[:port][/base]`` into host, port, base path and scheme."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValueError(f"only http:// and https:// URLs are supported, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"base URL must not carry a query or fragment: {url!r}")
    return BaseUrl(parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme],
                   parts.path.rstrip("/"), parts.scheme)


def basic_auth_header(user: str, password: str) -> bytes:
    token = base64.b64encode(f"{user}:{password}".encode())
    return b"Basic " + token


def _decode_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1")  # h11 already lower-cases names
        val = value.decode("latin-1")
        out[key] = f"{out[key]}, {val}" if key in out else val
    return out


@dataclass(eq=False, slots=True)
class _Connection:
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    h11: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    #: set when the request could not be fully written: never reuse, whatever h11 says
    broken: bool = False

    async def roundtrip(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> HttpResponse:
        """One request/response. Raises :class:`ConnectionFailed`; leaves reuse to the pool."""
        conn = self.h11
        try:
            data = conn.send(h11.Request(method=method, target=target, headers=headers))
            assert data is not None
            chunks = [data]
            if body:
                more = conn.send(h11.Data(data=body))
                assert more is not None
                chunks.append(more)
            end = conn.send(h11.EndOfMessage())
            assert end is not None
            chunks.append(end)
        except h11.LocalProtocolError as exc:  # our bug or bad caller headers
            raise HttpError(f"cannot encode request: {exc}") from exc
        payload = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        send_error: BaseException | None = None
        try:
            await self.stream.send_all(payload)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            # The server may have answered (e.g. 413) and closed before reading everything:
            # try to read that answer before giving up.
            send_error = exc
            self.broken = True
        return await self._read_response(send_error)

    async def _read_response(self, send_error: BaseException | None) -> HttpResponse:
        conn = self.h11
        started = False
        status = 0
        reason = ""
        raw_headers: list[tuple[bytes, bytes]] = []
        body_parts: list[bytes] = []
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise ConnectionFailed(f"protocol error: {exc}", response_started=started) from (
                    send_error or exc
                )
            if event is h11.NEED_DATA:
                try:
                    data = await self.stream.receive_some(_RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise ConnectionFailed(
                        f"connection lost: {exc!r}", response_started=started
                    ) from (send_error or exc)
                if data:
                    started = True
                conn.receive_data(data if isinstance(data, bytes) else bytes(data))
                continue
            if isinstance(event, h11.Response):
                if event.status_code == 100:  # pragma: no cover - we never send Expect
                    continue
                started = True
                status = event.status_code
                reason = event.reason.decode("latin-1")
                raw_headers = list(event.headers)
            elif isinstance(event, h11.InformationalResponse):
                started = True
            elif isinstance(event, h11.Data):
                body_parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                body = body_parts[0] if len(body_parts) == 1 else b"".join(body_parts)
                return HttpResponse(status, _decode_headers(raw_headers), body, reason)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionFailed(
                    "connection closed before a complete response", response_started=started
                ) from send_error
            else:  # pragma: no cover - PAUSED cannot happen for a client awaiting a response
                raise ConnectionFailed(f"unexpected h11 event {event!r}", response_started=True)

    @property
    def reusable(self) -> bool:
        return (
            not self.broken and self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE
        )

    def close_now(self) -> None:
        """Close without awaiting (safe in cleanup paths, including cancellation)."""
        stream = self.stream
        if isinstance(stream, trio.SSLStream):
            stream.transport_stream.socket.close()
        else:
            stream.socket.close()


class HttpConnectionPool:
    """Keep-alive HTTP/1.1 client for one ``http[s]://host:port/base`` URL. ``tls``: what an
    ``https://`` URL trusts (default: the environment's, :func:`torc_net.tls.default_settings`);
    a CA file that cannot be read is a :class:`~torc_net.tls.TlsError` here, at once."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: tuple[str, str] | None = None,
        max_idle: int = 4,
        max_connections: int = 64,
        tls: TlsSettings | None = None,
    ) -> None:
        if max_idle < 0 or max_connections < 1:
            raise ValueError("max_idle must be >= 0 and max_connections >= 1")
        self.base_url = base_url
        self._base = parse_base_url(base_url)
        self.tls = tls if tls is not None else default_settings()
        self._ssl_context = self.tls.context() if self._base.tls else None
        self._base_path = self._base.path.encode("ascii")
        self._idle: deque[_Connection] = deque()
        self._max_idle = max_idle
        self._limiter = trio.CapacityLimiter(max_connections)
        self._closed = False
        static: list[tuple[bytes, bytes]] = [
            (b"Host", self._base.host_header),
            (b"User-Agent", _USER_AGENT),
            (b"Accept", b"application/json"),
        ]
        if auth is not None:
            static.append((b"Authorization", basic_auth_header(*auth)))
        self._static_headers = static
        #: connections opened so far (for tests and diagnostics)
        self.connections_opened = 0

    @property
    def host(self) -> str:
        return self._base.host

    @property
    def port(self) -> int:
        return self._base.port

    @property
    def base_path(self) -> str:
        return self._base.path

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def _connect(self) -> _Connection:
        try:
            stream = await trio.open_tcp_stream(self._base.host, self._base.port)
        except OSError as exc:
            raise ConnectionFailed(
                f"cannot connect to {self._base.host}:{self._base.port}: {exc}"
            ) from exc
        self.connections_opened += 1
        if self._ssl_context is None:
            return _Connection(stream)
        tls = trio.SSLStream(stream, self._ssl_context, server_hostname=self._base.host,
                             https_compatible=True)
        try:
            await tls.do_handshake()
        except (trio.BrokenResourceError, OSError) as exc:
            stream.socket.close()
            problem = describe_ssl_error(exc, self._base.where, self.tls)
            if problem is not None:
                raise TlsError(problem) from exc
            raise ConnectionFailed(f"TLS handshake with {self._base.where}: connection "
                                   f"lost: {exc!r}") from exc
        except BaseException:
            stream.socket.close()
            raise
        return _Connection(tls)

    async def _speaks_tls(self) -> bool:
        """Rule 4: whether a TLS server answers at our (plain HTTP) address."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with trio.move_on_after(_PROBE_TIMEOUT_S):
            try:
                stream = await trio.open_tcp_stream(self._base.host, self._base.port)
            except OSError:
                return False
            try:
                await trio.SSLStream(stream, context).do_handshake()
                return True
            except (trio.BrokenResourceError, OSError):
                return False
            finally:
                stream.socket.close()
        return False

    async def _plain_to_tls(self, exc: ConnectionFailed) -> None:
        """Raise the Rule 4 error if ``exc`` came from a TLS port."""
        if not self._base.tls and await self._speaks_tls():
            raise TlsError(
                f"the server at {self._base.where} speaks HTTPS (TLS) and refused this plain "
                f"HTTP request: use https://{self._base.where}{self._base.path}") from exc

    async def request(
        self,
        method: str,
        url_path: str,
        *,
        json_body: Any = None,
        body: bytes | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> HttpResponse:
        """Send ``method`` to ``base + url_path`` and return the whole response.

        ``url_path`` is relative to the base path and may carry a query string. ``json_body``
        (any JSON value except ``None``) is encoded; ``body`` sends raw bytes instead.
        """
        if self._closed:
            raise HttpError("pool is closed")
        if not url_path.startswith("/"):
            url_path = "/" + url_path
        target = self._base_path + url_path.encode("ascii")
        hdrs = list(self._static_headers)
        if json_body is not None:
            if body is not None:
                raise ValueError("pass json_body or body, not both")
            body = _json.dumps(json_body, separators=(",", ":")).encode()
            hdrs.append((b"Content-Type", b"application/json"))
        payload = body or b""
        if payload or method in ("POST", "PUT", "PATCH"):
            hdrs.append((b"Content-Length", str(len(payload)).encode("ascii")))
        if headers:
            hdrs.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers)
        verb = method.upper().encode("ascii")

        async with self._limiter:
            conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect()
            try:
                try:
                    resp = await conn.roundtrip(verb, target, hdrs, payload)
                except ConnectionFailed as exc:
                    if not reused:
                        await self._plain_to_tls(exc)
                    if not reused or exc.response_started:
                        raise
                    # Rule 1: stale idle connection; retry once on a fresh one.
                    conn.close_now()
                    conn = await self._connect()
                    resp = await conn.roundtrip(verb, target, hdrs, payload)
            except BaseException:
                conn.close_now()
                raise
            if conn.reusable and not self._closed and len(self._idle) < self._max_idle:
                conn.h11.start_next_cycle()
                self._idle.append(conn)
            else:
                conn.close_now()
            return resp

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close_now()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> HttpConnectionPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
