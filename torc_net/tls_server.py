"""The server's TLS: Hypercorn's own, plus a plain answer for plain HTTP sent to it.

Why the answer: a browser or ``curl`` pointed at ``http://`` on a TLS port got an empty reply
(the handshake fails on the first bytes, and Hypercorn closes the connection without a word).
OpenSSL recognises such bytes (its reason ``HTTP_REQUEST``: they begin with ``GET``, ``POST``
...). The server's SSL objects are of :class:`_PlainHttpAnswer` (``SSLContext.sslobject_class``,
the standard library's hook for this): when a handshake fails for that reason, it puts a plain
``400`` saying to use ``https://`` into the bytes Trio sends next, and reports "want read"
instead of the error, so that Trio sends them; the client reads the answer and closes, and the
handshake then ends as any failed one does. Every other failure is left as it was.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import hypercorn.config

_BODY = json.dumps({
    "error": "bad request",
    "detail": "this server speaks HTTPS (TLS): use an https:// URL",
}).encode()
PLAIN_HTTP_ANSWER = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + _BODY
)


class _PlainHttpAnswer(ssl.SSLObject):
    """An SSL object that answers a plain HTTP request instead of failing in silence."""

    _torc_outgoing: ssl.MemoryBIO | None = None
    _torc_answered = False

    @classmethod
    def _create(cls, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, *args: Any,
                **kwargs: Any) -> _PlainHttpAnswer:
        obj: _PlainHttpAnswer = super()._create(  # type: ignore[misc]
            incoming, outgoing, *args, **kwargs)
        obj._torc_outgoing = outgoing
        return obj

    def do_handshake(self) -> None:
        if self._torc_answered:  # the answer is out: whatever comes now ends it
            raise ssl.SSLError("plain HTTP request answered")
        try:
            super().do_handshake()
        except ssl.SSLError as exc:
            if exc.reason != "HTTP_REQUEST" or self._torc_outgoing is None:
                raise
            self._torc_answered = True
            self._torc_outgoing.write(PLAIN_HTTP_ANSWER)
            raise ssl.SSLWantReadError("plain HTTP request: answered in plain HTTP") from exc


class TlsConfig(hypercorn.config.Config):
    """Hypercorn's configuration whose TLS context answers plain HTTP (module docstring)."""

    def create_ssl_context(self) -> ssl.SSLContext | None:
        context = super().create_ssl_context()
        if context is not None:
            context.sslobject_class = _PlainHttpAnswer
        return context
