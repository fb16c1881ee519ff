"""A minimal async HTTP/1.1 client on trio, with a keep-alive connection pool.

Theory of operation
-------------------
An :class:`HttpConnectionPool` is bound to one base URL (``http://host:port/base``, or
``https://``: TLS with the trust of :mod:`torc_net.tls`, the handshake done when the connection
opens, so that a certificate that cannot be verified is a :class:`~torc_net.tls.TlsError` at
once, never a retried "connection failed"). Each
request takes an idle connection from the pool (or opens a new one), writes the whole request
in one ``send_all``, reads the response as RFC 9112 frames it (``Content-Length``, chunked, or
until the connection closes; none after ``HEAD``, 204 and 304; 1xx skipped) and puts the
connection back when the response ended where its framing said and allowed reuse. Anything
else (``Connection: close``, HTTP/1.0, bytes after the response, an error, a cancellation
mid-flight) closes the connection: a connection in an unknown state is never reused.

Why not h11 (as before): h11's general state machine was about a quarter of a runner's CPU per
request (py-spy, ``bench_server.py`` batch 1); the client only ever talks to servers that
answer well-formed HTTP/1.1, and every way a response can be framed is handled here.

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
import re
import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import trio

from .jsonbytes import json_bytes, json_loads
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
#: Answers with at most this many ``[`` and ``{`` are decoded by orjson (torc_net.jsonbytes):
#: far below the depth that overflows its stack, far above a claim's.
_MAX_OPENERS = 10_000
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
        return json_loads(self.body, max_openers=_MAX_OPENERS)

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
        key = name.decode("latin-1")  # already lower-cased
        val = value.decode("latin-1")
        out[key] = f"{out[key]}, {val}" if key in out else val
    return out


#: One character of an RFC 9110 token (a method, a header name): the server's loop
#: (torc_net.wire) reads heads with the same rule this client writes them by.
TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
#: A header name, and what a header value or request target must not hold.
_TOKEN = re.compile(TCHAR + rb"+\Z")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\r\n]*))?\Z")
#: The most a response's head (or a chunk's size line) may take.
_MAX_HEAD = 64 * 1024


def _protocol_error(what: str, cause: BaseException | None) -> ConnectionFailed:
    error = ConnectionFailed(f"protocol error: {what}", response_started=True)
    error.__cause__ = cause
    return error


@dataclass(eq=False, slots=True)
class _Connection:
    """One kept-alive connection: a request written in one ``send_all``, its response read
    with Content-Length, chunked or until-close framing (RFC 9112 section 6.3)."""

    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    #: bytes received and not yet consumed
    buf: bytearray = field(default_factory=bytearray)
    #: set when the request could not be fully written, or the last response's end was the
    #: connection's: never reuse
    broken: bool = False
    #: the last response allows another request on this connection
    keep_alive: bool = True

    async def roundtrip(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> HttpResponse:
        """One request/response. Raises :class:`ConnectionFailed`; leaves reuse to the pool."""
        if _BAD_TARGET.search(target):
            raise HttpError(f"cannot encode request: invalid target {target[:80]!r}")
        head = [b"%s %s HTTP/1.1\r\n" % (method, target)]
        for name, value in headers:
            if not _TOKEN.match(name) or _BAD_VALUE.search(value):
                raise HttpError(f"cannot encode request: invalid header {name[:80]!r}")
            head.append(b"%s: %s\r\n" % (name, value.strip(b" \t")))
        head.append(b"\r\n")
        head.append(body)
        send_error: BaseException | None = None
        try:
            await self.stream.send_all(b"".join(head))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            # The server may have answered (e.g. 413) and closed before reading everything:
            # try to read that answer before giving up.
            send_error = exc
            self.broken = True
        return await self._read_response(send_error, method == b"HEAD")

    async def _more(self, started: bool, send_error: BaseException | None) -> None:
        """Receive more bytes into ``buf``; the connection's end is a failure here."""
        try:
            data = await self.stream.receive_some(_RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionFailed(f"connection lost: {exc!r}",
                                   response_started=started) from (send_error or exc)
        if not data:
            raise ConnectionFailed("connection closed before a complete response",
                                   response_started=started) from send_error
        self.buf.extend(data)

    async def _line(self, send_error: BaseException | None) -> bytes:
        """The next CRLF-ended line of the body's framing (chunk sizes, trailers)."""
        end = self.buf.find(b"\r\n")
        while end < 0:
            if len(self.buf) > _MAX_HEAD:
                raise _protocol_error("chunk line too long", send_error)
            await self._more(True, send_error)
            end = self.buf.find(b"\r\n")
        line = bytes(self.buf[:end])
        del self.buf[:end + 2]
        return line

    async def _exactly(self, n: int, send_error: BaseException | None) -> bytes:
        while len(self.buf) < n:
            await self._more(True, send_error)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def _read_response(self, send_error: BaseException | None,
                             head_only: bool) -> HttpResponse:
        started = bool(self.buf)
        while True:
            end = self.buf.find(b"\r\n\r\n")
            while end < 0:
                if len(self.buf) > _MAX_HEAD:
                    raise _protocol_error("response head too large", send_error)
                await self._more(started, send_error)
                started = True
                end = self.buf.find(b"\r\n\r\n")
            lines = bytes(self.buf[:end]).split(b"\r\n")
            del self.buf[:end + 4]
            status_line = _STATUS_LINE.match(lines[0])
            if status_line is None:
                raise _protocol_error(f"bad status line {lines[0][:80]!r}", send_error)
            raw_headers = []
            for line in lines[1:]:
                name, colon, value = line.partition(b":")
                if not colon or not _TOKEN.match(name):
                    raise _protocol_error(f"bad header line {line[:80]!r}", send_error)
                raw_headers.append((name.lower(), value.strip(b" \t")))
            status = int(status_line.group(2))
            if status >= 200:
                break
            # 1xx: informational, the real answer follows
        headers = _decode_headers(raw_headers)
        reason = (status_line.group(3) or b"").decode("latin-1")
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        self.keep_alive = status_line.group(1) == b"1" and "close" not in tokens
        framing = headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        if head_only or status in (204, 304):
            body = b""
        elif framing:
            if framing.rsplit(",", 1)[-1].strip() != "chunked":
                body = await self._until_close()
            else:
                body = await self._chunked(send_error)
        elif length is not None:
            values = {v.strip() for v in length.split(",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise _protocol_error(f"bad Content-Length {length[:80]!r}", send_error)
            body = await self._exactly(int(next(iter(values))), send_error)
        else:
            body = await self._until_close()
        return HttpResponse(status, headers, body, reason)

    async def _chunked(self, send_error: BaseException | None) -> bytes:
        parts: list[bytes] = []
        while True:
            line = await self._line(send_error)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _protocol_error(f"bad chunk size {line[:80]!r}", send_error) from None
            if size == 0:
                while await self._line(send_error):  # trailers, up to the blank line
                    pass
                return b"".join(parts)
            chunk = await self._exactly(size + 2, send_error)
            if chunk[-2:] != b"\r\n":
                raise _protocol_error("chunk without its CRLF", send_error)
            parts.append(chunk[:-2])

    async def _until_close(self) -> bytes:
        """A body whose end is the connection's (no length given)."""
        self.keep_alive = False
        while True:
            try:
                data = await self.stream.receive_some(_RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            if not data:
                body = bytes(self.buf)
                self.buf.clear()
                return body
            self.buf.extend(data)

    @property
    def reusable(self) -> bool:
        return not self.broken and self.keep_alive and not self.buf

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
            body = json_bytes(json_body)
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
