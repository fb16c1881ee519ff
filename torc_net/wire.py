"""The server's HTTP/1.1 front door: requests answered straight off the socket, and what it
does not fully understand handed to Hypercorn.

Theory of operation
-------------------
:func:`serve` accepts the connections itself (Hypercorn's sockets and TLS, set up as
``hypercorn.trio.serve`` sets them up; the app's lifespan driven as it drives it, by
:class:`torc_net.lazy.AppLifespan`, so that Hypercorn's trio worker is imported only when a
connection is first handed over to it). Each connection starts in :meth:`Wire.connection`, a
plain loop: read a request's head; if it is in the narrow shape every client of ours sends
(HTTP/1.1 with a ``Host``, a ``Content-Length`` body or none, no ``Transfer-Encoding``,
``Expect`` or ``Upgrade``, an origin-form target, every header line well formed, the head
within Hypercorn's size limit), answer it and read the next:

- a request to a route of the API (every route but the websocket feeds) through
  :meth:`torc_net.fastpath.FastPath.respond` (the same auth, checks, endpoint and error bodies
  as every other way in), under an :class:`~torc_net.admission.Admission` slot, head and body
  written in one ``send_all``;
- any other request (the dashboard's pages, an unknown route's 404, a ``HEAD``): the ASGI
  app (admission, then Quart, built on first use: :mod:`torc_net.lazy`) called with a minimal
  HTTP scope, the body read from the connection as the app asks for it, the answer written as
  it comes (``Content-Length`` when the app gives one or sends its body in one piece, else
  chunked); a body the app left unread closes the connection after the answer.

The first request in any other shape (a websocket, chunked or ``Expect`` bodies, HTTP/1.0, a
malformed or oversized head) hands the connection, with the bytes already read,
to Hypercorn's own connection handler for the rest of its life: Hypercorn stays the judge of
general HTTP, and the loop here only accepts what it fully understands. ``serve
--no-fast-path`` hands over every connection at once.

Why: under Hypercorn every request cost a task spawned for the app, another restarted for the
keep-alive timer, h11's general parser and three writes (head, body, end of message): about
half of the server's CPU per request under ``bench_server.py`` batch 1. A runner's traffic is
nearly all small requests on one kept-alive connection (BENCHMARKS.md, "The connection loop").

Timeouts are Hypercorn's: a connection idle (or sending a head) longer than its keep-alive
timeout is closed, a body gets the body timeout (408, and the connection closes), and at
shutdown idle connections close at once while requests being answered are finished.
"""

from __future__ import annotations

import http
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from functools import partial
from typing import Any
from urllib.parse import unquote
from wsgiref.handlers import format_date_time

import hypercorn.config
import trio

from .admission import Admission
from .fastpath import BodyError, FastPath
from .http import TCHAR
from .lazy import AppLifespan
from .listener import DrainingListener

log = logging.getLogger("torc_net.wire")

MAX_RECV = 1 << 16

#: The request line: a method, an origin-form target, HTTP/1.1 (anything else: Hypercorn's).
_REQUEST_LINE = re.compile(rb"(" + TCHAR + rb"+) (/[\x21-\x7e]*) HTTP/1\.1\Z")
#: The start of a request line while it is still arriving: a method so far.
_METHOD_SO_FAR = re.compile(TCHAR + rb"*(?: |\Z)")
#: One header line as RFC 9110 allows it (h11's own rule): a token, a colon, a value of visible
#: characters with inner spaces and tabs; optional whitespace around the value.
_HEADER = re.compile(
    rb"(" + TCHAR + rb"+):[ \t]*"
    rb"((?:[\x21-\x7e\x80-\xff](?:[\x20-\x7e\x80-\xff\t]*[\x21-\x7e\x80-\xff])?)?)[ \t]*\Z")
#: Headers that ask for more than the loop here does: Hypercorn answers them.
_NOT_HERE = frozenset({b"transfer-encoding", b"expect", b"upgrade"})

_REASONS = {s.value: s.phrase.encode() for s in http.HTTPStatus}


class Request:
    """What the loop needs of a request head."""

    __slots__ = ("authorization", "close", "headers", "length", "method", "path", "query",
                 "raw_path")

    def __init__(self, method: str, raw_path: bytes, query: bytes,
                 headers: list[tuple[bytes, bytes]], authorization: str | None, length: int,
                 close: bool) -> None:
        self.method = method
        self.raw_path = raw_path
        self.path = unquote(raw_path.decode("ascii")) if b"%" in raw_path else \
            raw_path.decode("ascii")
        self.query = query
        self.headers = headers
        self.authorization = authorization
        self.length = length
        self.close = close


def parse_head(head: bytes) -> Request | None:
    """A request head (without its blank line) in the shape the loop serves, or None: then
    Hypercorn gets the connection (module docstring)."""
    lines = head.split(b"\r\n")
    m = _REQUEST_LINE.match(lines[0])
    if m is None:
        return None
    headers = []
    authorization = None
    length = None
    close = host = False
    for line in lines[1:]:
        h = _HEADER.match(line)
        if h is None:
            return None
        name = h.group(1).lower()
        value = h.group(2)
        headers.append((name, value))
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif name == b"authorization":
            if authorization is None:  # the first, as Quart reads it
                authorization = value.decode("latin-1")
        elif name == b"host":
            host = True
        elif name == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if b"upgrade" in tokens:
                return None
            close = b"close" in tokens
        elif name in _NOT_HERE:
            return None
    if not host:  # HTTP/1.1 requires it; h11 names the fault
        return None
    raw_path, _, query = m.group(2).partition(b"?")
    return Request(m.group(1).decode("ascii"), raw_path, query, headers, authorization,
                   length or 0, close)


def not_a_head(buf: bytearray) -> bool:
    """Whether the bytes so far can no longer begin a head the loop serves (a TLS handshake
    sent to the plain port, lines ending in a bare LF, a malformed request line): then
    Hypercorn answers at once, rather than the loop waiting for a blank line that will never
    come."""
    line_end = buf.find(b"\n")
    if line_end < 0:
        return _METHOD_SO_FAR.match(buf) is None
    if line_end == 0 or buf[line_end - 1] != 13:  # a bare LF
        return True
    return _REQUEST_LINE.match(buf, 0, line_end - 1) is None or buf.find(b"\n\n") >= 0


class _Date:
    """The ``Date`` header's value, formatted once a second."""

    def __init__(self) -> None:
        self.second = -1
        self.value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = format_date_time(now).encode()
        return self.value


def response_head(status: int, headers: Iterable[tuple[bytes, bytes]], date: bytes) -> bytes:
    """The status line and headers of a response, with ``Date``, ending in the blank line.
    A header with a line break in it is refused (ValueError): it would split the response."""
    out = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
    for name, value in headers:
        line = b"%s: %s\r\n" % (bytes(name).strip(), bytes(value).strip())
        if line.count(b"\n") != 1 or b"\r" in line[:-2]:
            raise ValueError(f"a response header with a line break: {bytes(name)!r}")
        out.append(line)
    out.append(b"date: %s\r\n\r\n" % date)
    return b"".join(out)


def response_bytes(status: int, body: bytes, headers: list[tuple[bytes, bytes]], date: bytes,
                   close: bool) -> bytes:
    """A whole response of the fast path: head with ``Content-Length``, then the body."""
    extra = [(b"content-length", b"%d" % len(body))]
    if close:
        extra.append((b"connection", b"close"))
    return response_head(status, [*headers, *extra], date) + body


def _suppress_body(method: str, status: int) -> bool:
    return method == "HEAD" or 100 <= status < 200 or status in (204, 304)


class _Exchange:
    """One request served through the ASGI app: its ``receive`` (the body, read from the
    connection as the app asks for it, then nothing until the answer is out) and ``send`` (the
    answer written as it comes: with ``Content-Length`` when the app gave one or sent its body
    in one piece, else chunked)."""

    def __init__(self, stream: trio.abc.Stream, request: Request, buf: bytearray,
                 start: int, date: bytes) -> None:
        self.stream = stream
        self.request = request
        #: the connection's bytes: the body is ``buf[start:end]``, read into it as asked for
        self.buf = buf
        self.pos = start
        self.end = start + request.length
        self.asked = False  # the app asked for the body (an empty one is one message)
        self.date = date
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.started = False  # the app sent http.response.start
        self.written = False  # the head is on the wire
        self.chunked = False
        self.complete = False  # the last of the body is on the wire
        self.done = trio.Event()  # the exchange is over (receive's disconnect)
        self.close = request.close

    @property
    def body_read(self) -> bool:
        return self.pos >= self.end

    async def receive(self) -> dict[str, Any]:
        if not self.asked or not self.body_read:
            self.asked = True
            if self.pos >= len(self.buf) and not self.body_read:
                try:
                    data = await self.stream.receive_some(MAX_RECV)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:  # the client left mid-body
                    self.close = True
                    return {"type": "http.disconnect"}
                self.buf.extend(data)
            stop = min(self.end, len(self.buf))
            chunk = bytes(self.buf[self.pos:stop])
            self.pos = stop
            return {"type": "http.request", "body": chunk, "more_body": not self.body_read}
        await self.done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start" and not self.started:
            self.started = True
            self.status = int(message["status"])
            self.headers = list(message.get("headers", []))
            for name, value in self.headers:
                if name.lower() == b"connection" and b"close" in value.lower():
                    self.close = True
        elif kind == "http.response.body" and self.started and not self.complete:
            await self._body(bytes(message.get("body", b"")), message.get("more_body", False))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in this state")

    async def _body(self, data: bytes, more: bool) -> None:
        suppress = _suppress_body(self.request.method, self.status)
        out = b""
        if not self.written:
            self.written = True
            headers = self.headers
            sized = any(name.lower() == b"content-length" for name, _ in headers)
            if not sized and not suppress:
                if more:
                    self.chunked = True
                    headers = [*headers, (b"transfer-encoding", b"chunked")]
                else:
                    headers = [*headers, (b"content-length", b"%d" % len(data))]
            if self.close:
                headers = [*headers, (b"connection", b"close")]
            out = response_head(self.status, headers, self.date)
        if not suppress:
            if self.chunked:
                if data:
                    out += b"%x\r\n%s\r\n" % (len(data), data)
                if not more:
                    out += b"0\r\n\r\n"
            else:
                out += data
        if not more:
            self.complete = True
        if out:
            await self.stream.send_all(out)


class _Replay(trio.abc.Stream):
    """A stream whose first bytes are ones already read from it: what Hypercorn gets when a
    connection is handed over. Everything else (TLS details, the socket) is the stream's."""

    def __init__(self, stream: trio.abc.Stream, first: bytes) -> None:
        self._stream = stream
        self._first = first

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._first:
            data, self._first = self._first, b""
            return data
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        await self._stream.aclose()


class Wire:
    """The connection loop (module docstring); ``fast`` None hands every connection over."""

    def __init__(self, fast: FastPath | None, admission: Admission,
                 config: hypercorn.config.Config, state: dict[str, Any],
                 hypercorn_connection: Callable[[trio.abc.Stream], Awaitable[None]]) -> None:
        self.fast = fast
        self.admission = admission
        self.config = config
        self.state = state
        self.hypercorn_connection = hypercorn_connection
        self.max_head = config.h11_max_incomplete_size
        self.date = _Date()
        #: the cancel scopes of connections waiting for a request (closed at shutdown)
        self._idle: set[trio.CancelScope] = set()
        self.closing = False
        #: requests answered here through the ASGI app (the fast ones: ``fast.served``), and
        #: connections handed to Hypercorn (tests and diagnostics)
        self.served = 0
        self.handed_over = 0

    def close_idle(self) -> None:
        """Shutdown: close the connections waiting for a request, now and from now on."""
        self.closing = True
        for scope in self._idle:
            scope.cancel()

    async def connection(self, stream: trio.abc.Stream) -> None:
        """Serve one accepted connection until it closes or is handed over."""
        if self.fast is None:
            await self.hypercorn_connection(stream)
            return
        rest: bytes | None = None
        try:
            rest = await self._serve(stream, self.fast)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:  # a bug must cost this connection, never the server
            log.exception("connection failed")
        finally:
            if rest is None:
                await trio.aclose_forcefully(stream)
        if rest is not None:
            self.handed_over += 1
            await self.hypercorn_connection(_Replay(stream, rest))

    async def _serve(self, stream: trio.abc.Stream, fast: FastPath) -> bytes | None:
        """The loop: None when the connection is done, or the bytes read but not answered
        when Hypercorn is to have it."""
        if isinstance(stream, trio.SSLStream):
            try:
                with trio.fail_after(self.config.ssl_handshake_timeout):
                    await stream.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError):
                return None
            sock = stream.transport_stream.socket
            scheme = "https"
        else:
            sock = stream.socket  # type: ignore[attr-defined]
            scheme = "http"
        client = _address(sock.family, sock.getpeername())
        server = _address(sock.family, sock.getsockname())
        address = str(client[0]) if client else None
        buf = bytearray()
        need = 0  # the length of the request being answered, head and body

        async def read() -> bytes:
            """The request's body, read into ``buf``."""
            while len(buf) < need:
                data = await stream.receive_some(max(MAX_RECV, min(need - len(buf), 1 << 20)))
                if not data:
                    raise BodyError(None)
                buf.extend(data)
            return bytes(buf[need - request.length:need])

        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if self.closing or not await self._next_head(stream, buf):
                    return None
                end = buf.find(b"\r\n\r\n")
                if end < 0:  # a head too large, or lines ending in a bare LF: not ours
                    return bytes(buf)
            parsed = parse_head(bytes(buf[:end])) if end <= self.max_head else None
            if parsed is None:
                return bytes(buf)
            request = parsed
            need = end + 4 + request.length
            found = fast.route(request.method, request.path)
            if found is not None:
                if await self.admission.enter():
                    try:
                        answer = await fast.respond(*found, request.authorization, address,
                                                    request.length, read, request.query)
                        if answer is None:
                            return None
                        status, body, headers, close = answer
                        close = close or request.close
                        await stream.send_all(response_bytes(status, body, headers,
                                                             self.date(), close))
                    finally:
                        self.admission.leave()
                else:
                    status, body, headers = self.admission.refusal()
                    close = request.close or not await fast.drain(read, request.length)
                    await stream.send_all(response_bytes(status, body, headers, self.date(),
                                                         close))
            else:
                close = await self._asgi(stream, request, buf, end + 4, scheme, client, server)
            if close:
                return None
            del buf[:need]

    async def _asgi(self, stream: trio.abc.Stream, request: Request, buf: bytearray,
                    start: int, scheme: str, client: Any, server: Any) -> bool:
        """One request through the ASGI app (admission, then Quart), its body from
        ``buf[start:]`` on; True when the connection must close after it (the app asked it,
        or left some of the body unread, or did not finish its answer)."""
        self.served += 1
        scope = {
            "type": "http", "http_version": "1.1",
            "asgi": {"spec_version": "2.1", "version": "3.0"},
            "method": request.method, "scheme": scheme,
            "path": request.path, "raw_path": request.raw_path,
            "query_string": request.query, "root_path": self.config.root_path,
            "headers": request.headers, "client": client, "server": server,
            "state": self.state.copy(), "extensions": {},
        }
        exchange = _Exchange(stream, request, buf, start, self.date())
        failed = False
        try:
            await self.admission(scope, exchange.receive, exchange.send)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise
        except Exception:
            log.exception("error answering %s %s", request.method, request.path)
            failed = True
        finally:
            exchange.done.set()
        if failed or not exchange.complete:
            # The app failed, or returned without finishing its answer: nothing on the wire
            # can be trusted to end where the client expects.
            if not exchange.written:
                await stream.send_all(response_bytes(500, b"", [], self.date(), True))
            return True
        return exchange.close or not exchange.body_read

    async def _next_head(self, stream: trio.abc.Stream, buf: bytearray) -> bool:
        """Read until ``buf`` holds a whole head (or more than a head may be, or a bare-LF
        line end); False when the client left, or sent nothing whole within the keep-alive
        timeout, or the server is shutting down."""
        with trio.move_on_after(self.config.keep_alive_timeout) as idle:
            self._idle.add(idle)
            try:
                while True:
                    data = await stream.receive_some(MAX_RECV)
                    if not data:
                        return False
                    buf.extend(data)
                    if (buf.find(b"\r\n\r\n", max(0, len(buf) - len(data) - 3)) >= 0
                            or len(buf) > self.max_head or not_a_head(buf)):
                        return True
            finally:
                self._idle.discard(idle)
        return False


class _HandOver:
    """Hypercorn's own handling of a connection, for the rest of its life. Its trio worker
    (with its HTTP/2 and websocket modules, ~80 ms to import) is imported, in a worker
    thread, when the first connection is handed over: a standalone run never needs it."""

    def __init__(self, admission: Admission, config: hypercorn.config.Config,
                 state: dict[str, Any]) -> None:
        self.admission = admission
        self.config = config
        self.state = state
        self._worker: tuple[Any, Any, Any, Any] | None = None  # app, context, classes
        self._lock = trio.Lock()

    async def __call__(self, stream: trio.abc.Stream) -> None:
        if self._worker is None:
            async with self._lock:
                if self._worker is None:
                    self._worker = await trio.to_thread.run_sync(self._load)
        app, context, tcp_server, connection_state = self._worker
        await tcp_server(app, self.config, context, connection_state(self.state.copy()), stream)

    def _load(self) -> tuple[Any, Any, Any, Any]:
        from hypercorn.app_wrappers import ASGIWrapper
        from hypercorn.trio.tcp_server import TCPServer
        from hypercorn.trio.worker_context import WorkerContext
        from hypercorn.typing import ConnectionState

        app = ASGIWrapper(self.admission)  # type: ignore[arg-type]
        return app, WorkerContext(None), TCPServer, ConnectionState

    async def terminated(self) -> None:
        """Shutdown: the connections Hypercorn serves finish their requests and close."""
        if self._worker is not None:
            await self._worker[1].terminated.set()


def _address(family: int, address: Any) -> tuple[str, int] | None:
    """An ASGI scope's ``client`` or ``server`` (None for a Unix socket)."""
    if family in (socket.AF_INET, socket.AF_INET6):
        return address[0], address[1]
    return None


def _bind(family: int, address: Any) -> str:
    """How a bound socket is named in the URLs the server reports."""
    if family == socket.AF_INET6:
        return f"[{address[0]}]:{address[1]}"
    if family == socket.AF_INET:
        return f"{address[0]}:{address[1]}"
    return f"unix:{address}" if family == socket.AF_UNIX else str(address)


async def serve(admission: Admission, fast: FastPath | None, config: hypercorn.config.Config, *,
                shutdown_trigger: Callable[[], Awaitable[None]],
                task_status: trio.TaskStatus[tuple[list[str], Wire]] = trio.TASK_STATUS_IGNORED
                ) -> None:
    """Serve ``admission`` (the ASGI app) as ``hypercorn.trio.serve`` would — its lifespan,
    sockets, TLS, graceful shutdown — with each connection starting in :class:`Wire`.
    Reports the bound URLs and the :class:`Wire`; returns once shut down."""
    state: dict[str, Any] = {}
    lifespan = AppLifespan(admission, state, config.startup_timeout)
    hand_over = _HandOver(admission, config, state)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan.start(lifespan_nursery)
        async with trio.open_nursery() as connections:
            sockets = config.create_sockets()
            ssl_context = config.create_ssl_context()
            listeners: list[trio.abc.Listener[Any]] = []
            binds = []
            for secure, group in ((True, sockets.secure_sockets),
                                  (False, sockets.insecure_sockets)):
                for sock in group:
                    sock.listen(config.backlog)
                    listener: trio.abc.Listener[Any] = DrainingListener(sock)
                    if secure:
                        assert ssl_context is not None
                        listener = trio.SSLListener(listener, ssl_context,
                                                    https_compatible=True)
                    listeners.append(listener)
                    scheme = "https" if secure else "http"
                    binds.append(f"{scheme}://{_bind(sock.family, sock.getsockname())}")
            wire = Wire(fast, admission, config, state, hand_over)
            task_status.started((binds, wire))
            async with trio.open_nursery() as accepting:
                accepting.start_soon(partial(trio.serve_listeners, wire.connection, listeners,
                                             handler_nursery=connections))
                await shutdown_trigger()
                accepting.cancel_scope.cancel()
            wire.close_idle()
            await hand_over.terminated()
            connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.shutdown()
        lifespan_nursery.cancel_scope.cancel()
