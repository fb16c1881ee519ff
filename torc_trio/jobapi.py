"""A small blocking client of the API for code that runs inside a job.

Why not :class:`torc_net.client.TorcClient`: a function job is a Python process started for
one call, and its imports are most of what a trivial call costs. Measured on the project's
machine (``python -X importtime``): Trio and the async client take 0.25 s of CPU,
``http.client`` 0.045 s (it brings in the ``email`` parser and ``ssl``), and a plain socket
speaking HTTP/1.1 next to nothing; the interpreter itself starts in about 0.03 s. Over ten
thousand calls that is the difference between the calls' own work and forty minutes of
imports. So this is HTTP/1.1 over a socket, one kept-alive connection, JSON bodies with a
``Content-Length`` (chunked answers are read too). An ``https://`` server is spoken to through
:mod:`ssl` (imported only then) with the trust every client has (:mod:`torc_net.tls`:
``TORC_CA_FILE``, verification on, host name checked); a certificate that cannot be verified
is a :class:`torc_net.tls.TlsError` at once, not retried.

The retry policy is TorcClient's: connection failures, per-attempt timeouts and
``429``/``502``/``503``/``504`` answers are retried with exponential backoff and full jitter
(``Retry-After`` honoured) until ``wait_for_server_s`` have passed. A request that is not
idempotent (a POST that adds jobs) is retried only when it certainly did not reach the
server: a refused connection, or an answer saying nothing changed (429, 503). Errors are
:class:`torc_net.client.ApiError` and :class:`torc_net.client.ServerUnreachable`, imported
only when one is raised, so that callers catch the same classes as everywhere else.
"""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import time
from typing import Any
from urllib.parse import quote, urlsplit

_RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: answers after which the request certainly changed nothing
_NOTHING_CHANGED = frozenset({429, 503})
#: an answer's head (status line and headers) may be at most this long
_MAX_HEAD = 64 * 1024


def path(*parts: object) -> str:
    return "/" + "/".join(quote(str(p), safe="") for p in parts)


class _Broken(Exception):
    """The connection failed mid-request (reset, closed, a malformed answer)."""


class _Answer:
    __slots__ = ("body", "headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body


class _Connection:
    """One HTTP/1.1 connection: send a request, read its answer."""

    def __init__(self, host: str, port: int, timeout_s: float, tls: Any = None) -> None:
        sock = socket.create_connection((host, port), timeout=timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:  # (TlsSettings, its ssl.SSLContext)
            settings, context = tls
            try:
                sock = context.wrap_socket(sock, server_hostname=host)
            except OSError as exc:
                sock.close()
                from torc_net.tls import TlsError, describe_ssl_error

                where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                problem = describe_ssl_error(exc, where, settings)
                if problem is None:
                    raise
                raise TlsError(problem) from exc
        self.sock = sock
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise _Broken("the server closed the connection")
        self.buffer += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if len(self.buffer) > _MAX_HEAD:
                raise _Broken("an answer's head is too long")
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def exchange(self, head: bytes, payload: bytes | None) -> _Answer:
        self.sock.sendall(head + (payload or b""))
        status_line = self._line().decode("latin-1")
        try:
            _, code, *reason = status_line.split(" ", 2)
            status = int(code)
        except ValueError:
            raise _Broken(f"not an HTTP answer: {status_line[:100]!r}") from None
        headers: dict[str, str] = {}
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while size := int(self._line().split(b";", 1)[0], 16):
                parts.append(self._take(size))
                self._take(2)
            while self._line():  # trailers
                pass
            body = b"".join(parts)
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        else:  # the body runs to the end of the connection
            try:
                while True:
                    self._fill()
            except _Broken:
                pass
            body, self.buffer = self.buffer, b""
            headers["connection"] = "close"
        return _Answer(status, reason[0] if reason else "", headers, body)


class JobApi:
    """``base_url`` like ``http://host:8080/torc-service/v1``."""

    def __init__(self, base_url: str, *, auth: tuple[str, str] | None = None,
                 wait_for_server_s: float = 1200.0, attempt_timeout_s: float = 120.0,
                 max_backoff_s: float = 30.0) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"server URL {base_url!r}: expected http://HOST:PORT/torc-service/v1")
        self.base_url = base_url.rstrip("/")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._tls: Any = None
        if parts.scheme == "https":
            from torc_net.tls import default_settings

            settings = default_settings()
            self._tls = (settings, settings.context())
        self._prefix = parts.path
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._fixed_headers = (f"Host: {host}:{self._port}\r\nAccept: application/json\r\n"
                               "User-Agent: torc-trio-job\r\n")
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self._fixed_headers += f"Authorization: Basic {token}\r\n"
        self.wait_for_server_s = wait_for_server_s
        self.attempt_timeout_s = attempt_timeout_s
        self.max_backoff_s = max_backoff_s
        self._conn: _Connection | None = None

    @classmethod
    def from_env(cls, url: str | None = None) -> JobApi:
        """``url`` or ``$TORC_API_URL``; Basic auth from ``$TORC_USERNAME``/``$TORC_PASSWORD``
        (as :meth:`torc_net.client.TorcClient.from_env`)."""
        url = url or os.environ.get("TORC_API_URL")
        if not url:
            raise ValueError("no server URL: pass one or set TORC_API_URL")
        from torc_net.credentials import env_credentials

        return cls(url, auth=env_credentials())

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> JobApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, route: str, params: dict[str, Any] | None = None) -> Any:
        if params:
            route += "?" + "&".join(f"{k}={quote(str(v))}" for k, v in params.items())
        return self.request("GET", route)

    def put(self, route: str, body: Any) -> Any:
        return self.request("PUT", route, body)

    def post(self, route: str, body: Any, *, idempotent: bool = False) -> Any:
        return self.request("POST", route, body, idempotent=idempotent)

    def request(self, method: str, route: str, body: Any = None, *,
                idempotent: bool = True) -> Any:
        """One API call, retried per the module policy; the parsed JSON answer."""
        payload = None if body is None else json.dumps(body, allow_nan=False).encode()
        head = f"{method} {self._prefix}{route} HTTP/1.1\r\n{self._fixed_headers}"
        if payload is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        raw_head = (head + "\r\n").encode()
        start = time.monotonic()
        attempt = 0
        while True:
            failure: str
            retry_after = 0.0
            if not idempotent:
                self.close()  # a kept-alive connection the server dropped would look "sent"
            connected = self._conn is not None
            try:
                if self._conn is None:
                    self._conn = _Connection(self._host, self._port, self.attempt_timeout_s,
                                             self._tls)
                connected = True
                answer = self._conn.exchange(raw_head, payload)
            except (OSError, _Broken, ValueError) as exc:
                self.close()
                failure = f"{type(exc).__name__}: {exc}"
                if not (idempotent or not connected):
                    raise self._unreachable(method, route, failure) from exc
            else:
                if answer.headers.get("connection", "").lower() == "close":
                    self.close()
                if answer.status < 400:
                    return json.loads(answer.body) if answer.body else None
                retryable = answer.status in (
                    _RETRY_STATUSES if idempotent else _NOTHING_CHANGED)
                if not retryable:
                    raise self._api_error(answer.status, answer.reason, answer.body, method,
                                          route)
                failure = f"HTTP {answer.status}"
                try:
                    retry_after = float(answer.headers.get("retry-after") or 0)
                except ValueError:
                    retry_after = 0.0
            elapsed = time.monotonic() - start
            remaining = self.wait_for_server_s - elapsed
            if remaining <= 0:
                raise self._unreachable(
                    method, route, f"gave up after {attempt + 1} attempts in {elapsed:.1f} s; "
                    f"last error: {failure}")
            delay = max(retry_after,
                        random.uniform(0, min(self.max_backoff_s, 0.1 * 2 ** min(attempt, 32))))
            attempt += 1
            time.sleep(min(delay, remaining))

    def _unreachable(self, method: str, route: str, why: str) -> Exception:
        from torc_net.client import ServerUnreachable

        return ServerUnreachable(f"{method} {self.base_url}{route}: {why}")

    def _api_error(self, status: int, reason: str, data: bytes, method: str,
                   route: str) -> Exception:
        from torc_net.client import ApiError

        error, detail = reason or "error", None
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and ("error" in doc or "detail" in doc):
            error, detail = str(doc.get("error", error)), doc.get("detail")
        elif data:
            detail = data.decode(errors="replace")[:2000]
        return ApiError(status, error, detail, method=method, path=route)
