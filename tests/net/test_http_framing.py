"""The client's reading of responses (torc_net.http): every way HTTP/1.1 frames a body, what
allows a connection's reuse and what does not, and what is refused. A raw server on
127.0.0.1 answers each request with scripted bytes, so the bytes are exactly as written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
import trio

from torc_net.http import ConnectionFailed, HttpConnectionPool, HttpError


class RawServer:
    """Answers the n-th request with ``answers[n]`` (bytes), on whatever connection it came."""

    def __init__(self) -> None:
        self.answers: list[bytes] = []
        self.requests: list[bytes] = []
        self.connections = 0
        self.port = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buf = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += await stream.receive_some(65536)
                self.requests.append(head + b"\r\n\r\n" + buf[:length])
                buf = buf[length:]
                answer = self.answers[len(self.requests) - 1]
                await stream.send_all(answer)
                if answer.endswith(b"<close>"):
                    return


@pytest.fixture
async def raw(nursery: trio.Nursery) -> AsyncIterator[RawServer]:
    server = RawServer()
    listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    server.port = listeners[0].socket.getsockname()[1]
    yield server


async def _get(raw: RawServer, *answers: bytes, method: str = "GET") -> list[Any]:
    raw.answers.extend(answers)
    out = []
    async with HttpConnectionPool(f"http://127.0.0.1:{raw.port}") as pool:
        for _ in answers:
            resp = await pool.request(method, "/x")
            out.append((resp.status, resp.body, resp.headers))
    return out


async def test_every_framing_of_a_body(raw: RawServer) -> None:
    got = await _get(
        raw,
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 204 No Content\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\nabc",
        b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",  # no reason phrase
    )
    assert [(s, b) for s, b, _ in got] == [
        (200, b"hello"), (200, b"abc0123456789abcdef"), (201, b"ok"), (204, b""), (200, b"abc"),
        (200, b"")]
    assert got[3][2]["x-a"] == "1, 2"
    assert raw.connections == 1  # all on one kept-alive connection


async def test_a_head_answer_has_no_body(raw: RawServer) -> None:
    got = await _get(raw, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
                     b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", method="HEAD")
    assert [(s, b) for s, b, _ in got] == [(200, b""), (200, b"")]
    assert raw.connections == 1


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok+extra bytes",
    b"HTTP/1.1 200 OK\r\n\r\nok<close>",  # no length: the body ends with the connection
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok<close>",
])
async def test_answers_that_end_a_connection(raw: RawServer, answer: bytes) -> None:
    got = await _get(raw, answer, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
    assert got[0][0] == 200 and got[0][1].startswith(b"ok")
    assert got[1][:2] == (200, b"next")
    assert raw.connections == 2  # the second request needed a new connection


@pytest.mark.parametrize("answer", [
    b"HTTX/1.1 200 OK\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\nshort<close>",
])
async def test_malformed_or_cut_answers_fail_the_request(raw: RawServer,
                                                         answer: bytes) -> None:
    raw.answers.append(answer)
    async with HttpConnectionPool(f"http://127.0.0.1:{raw.port}") as pool:
        with pytest.raises(ConnectionFailed) as caught:
            await pool.request("GET", "/x")
    assert caught.value.response_started


async def test_requests_that_would_break_the_framing_are_refused(raw: RawServer) -> None:
    async with HttpConnectionPool(f"http://127.0.0.1:{raw.port}") as pool:
        with pytest.raises(HttpError, match="invalid header"):
            await pool.request("GET", "/x", headers=[("X-A", "1\r\nX-Injected: 2")])
        with pytest.raises(HttpError, match="invalid header"):
            await pool.request("GET", "/x", headers=[("Bad Name", "1")])
        with pytest.raises(HttpError, match="invalid target"):
            await pool.request("GET", "/a b")
    assert raw.requests == []


async def test_what_the_client_writes(raw: RawServer) -> None:
    raw.answers.append(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    async with HttpConnectionPool(f"http://127.0.0.1:{raw.port}/base") as pool:
        await pool.request("POST", "/x?y=1", json_body={"a": [1, 2**70]})
    head, _, body = raw.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /base/x?y=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{raw.port}".encode() in lines
    assert b"Content-Type: application/json" in lines
    assert body == b'{"a":[1,1180591620717411303424]}'  # beyond 64 bits: the stdlib encodes
    assert f"Content-Length: {len(body)}".encode() in lines
