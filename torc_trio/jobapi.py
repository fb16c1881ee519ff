"""A small blocking client of the API for code that runs inside a job.

Why not :class:`torc_net.client.TorcClient`: a function job is a Python process started for
one call, and importing Trio and the async client costs it about 0.25 s of CPU against
0.03 s for ``http.client``; over ten thousand calls that is the difference between the
calls' own work and forty minutes of imports. So this client uses the standard library only,
and keeps the retry policy of TorcClient: connection failures, per-attempt timeouts and
``429``/``502``/``503``/``504`` answers are retried with exponential backoff and full jitter
(``Retry-After`` honoured) until ``wait_for_server_s`` have passed. A request that is not
idempotent (a POST that adds jobs) is retried only when it certainly did not reach the
server: a refused connection, or an answer saying nothing changed (429, 503). Errors are
:class:`torc_net.client.ApiError` and :class:`torc_net.client.ServerUnreachable`, imported
only when one is raised, so that callers catch the same classes as everywhere else.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import time
from typing import Any
from urllib.parse import quote, urlsplit

_RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: answers after which the request certainly changed nothing
_NOTHING_CHANGED = frozenset({429, 503})


def path(*parts: object) -> str:
    return "/" + "/".join(quote(str(p), safe="") for p in parts)


class JobApi:
    """``base_url`` like ``http://host:8080/torc-service/v1``."""

    def __init__(self, base_url: str, *, auth: tuple[str, str] | None = None,
                 wait_for_server_s: float = 1200.0, attempt_timeout_s: float = 120.0,
                 max_backoff_s: float = 30.0) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"server URL {base_url!r}: expected http://HOST:PORT/torc-service/v1")
        self.base_url = base_url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self.wait_for_server_s = wait_for_server_s
        self.attempt_timeout_s = attempt_timeout_s
        self.max_backoff_s = max_backoff_s
        self._conn: http.client.HTTPConnection | None = None

    @classmethod
    def from_env(cls, url: str | None = None) -> JobApi:
        """``url`` or ``$TORC_API_URL``; Basic auth from ``$TORC_USERNAME``/``$TORC_PASSWORD``
        (as :meth:`torc_net.client.TorcClient.from_env`)."""
        url = url or os.environ.get("TORC_API_URL")
        if not url:
            raise ValueError("no server URL: pass one or set TORC_API_URL")
        user = os.environ.get("TORC_USERNAME")
        auth = (user, os.environ.get("TORC_PASSWORD", "")) if user else None
        return cls(url, auth=auth)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> JobApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.attempt_timeout_s)
        return self._conn

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
        payload = None if body is None else json.dumps(body).encode()
        start = time.monotonic()
        attempt = 0
        while True:
            failure: str
            retry_after = 0.0
            sent = False
            if not idempotent:
                self.close()  # a kept-alive connection the server dropped would look "sent"
            try:
                conn = self._connection()
                if conn.sock is None:
                    conn.connect()
                sent = True
                conn.request(method, self._prefix + route, body=payload, headers=self._headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                failure = f"{type(exc).__name__}: {exc}"
                refused = isinstance(exc, ConnectionRefusedError) or not sent
                if not (idempotent or refused):
                    raise self._unreachable(method, route, failure) from exc
            else:
                if resp.getheader("connection", "").lower() == "close":
                    self.close()
                if resp.status < 400:
                    return json.loads(data) if data else None
                retryable = resp.status in (
                    _RETRY_STATUSES if idempotent else _NOTHING_CHANGED)
                if not retryable:
                    raise self._api_error(resp.status, resp.reason, data, method, route)
                failure = f"HTTP {resp.status}"
                try:
                    retry_after = float(resp.getheader("retry-after") or 0)
                except ValueError:
                    retry_after = 0.0
            elapsed = time.monotonic() - start
            remaining = self.wait_for_server_s - elapsed
            if remaining <= 0:
                raise self._unreachable(
                    method, route, f"gave up after {attempt + 1} attempts in {elapsed:.1f} s; "
                    f"last error: {failure}")
            delay = max(retry_after, random.uniform(0, min(self.max_backoff_s, 0.1 * 2 ** attempt)))
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
