"""The connection loop (torc_net.wire): runner-protocol and ordinary requests answered straight
off the socket on one kept-alive connection, pipelined requests in order, and every request it
does not fully understand handed, with the bytes already read, to Hypercorn — which then
answers it as it always did. Raw sockets against a real server, so the bytes on the wire are
what is checked."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from conftest import Api, simple_spec
from trio_websocket import open_websocket_url

from torc_net import wire
from torc_net.fastpath import FastPath
from torc_net.server import Running
from torc_net.wire import not_a_head, parse_head

PREFIX = "/torc-service/v1"
CN = "/workflows/1/compute_nodes"
BIG = 2 << 20  # bytes: a body that arrives in many pieces


class Conn:
    """One raw HTTP/1.1 connection: send bytes, read whole responses (Content-Length or
    chunked) back."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    async def _more(self) -> None:
        with trio.fail_after(30):
            data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    async def response(self, *, head_request: bool = False
                       ) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            await self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        if head_request:
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    await self._more()
                size_line, _, self.buf = self.buf.partition(b"\r\n")
                size = int(size_line, 16)
                while len(self.buf) < size + 2:
                    await self._more()
                body += self.buf[:size]
                self.buf = self.buf[size + 2:]
                if size == 0:
                    return status, headers, body
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            await self._more()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    async def closed(self) -> bool:
        """True once the server has closed the connection (nothing more to read)."""
        try:
            while True:
                await self._more()
        except (EOFError, trio.BrokenResourceError):
            return True


def request(method: str, path: str, body: Any = None, *, headers: str = "") -> bytes:
    data = b"" if body is None else json.dumps(body).encode()
    return (f"{method} {PREFIX}{path} HTTP/1.1\r\nHost: x\r\n{headers}"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


@pytest.fixture
async def conn(server: Running) -> Any:
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        yield Conn(stream)


async def test_the_protocol_and_other_requests_share_one_connection(
        server: Running, conn: Conn) -> None:
    fast = server.admission.app
    assert isinstance(fast, FastPath)
    await conn.stream.send_all(request("POST", "/workflows", {"spec": simple_spec(3)}))
    assert (await conn.response())[0] == 201
    await conn.stream.send_all(request("GET", "/version"))
    assert (await conn.response())[0] == 200
    before_fast, before_wire = fast.served, server.wire.served
    await conn.stream.send_all(request("POST", CN, {"hostname": "h", "claim": {"limit": 1}}))
    status, headers, body = await conn.response()
    assert status == 201 and headers["content-type"] == "application/json", (status, body)
    claim = json.loads(body)["claim"]
    job = claim["jobs"][0]
    result = {"job_id": job["id"], "attempt": job["attempt"], "run_id": job["run_id"],
              "return_code": 0}
    await conn.stream.send_all(request("POST", f"{CN}/1/claim",
                                       {"limit": 1, "results": [result]}))
    status, _, body = await conn.response()
    assert status == 200 and json.loads(body)["accepted"] == 1
    # An ordinary read in between, with a query string, then the protocol again.
    await conn.stream.send_all(request("GET", "/workflows/1/jobs?limit=1&offset=1"))
    status, _, body = await conn.response()
    assert status == 200 and len(json.loads(body)["items"]) == 1, body
    await conn.stream.send_all(request("POST", f"{CN}/1/heartbeat"))
    assert (await conn.response())[0] == 200
    # Errors from either side keep the connection: 404, 405, a refused claim.
    await conn.stream.send_all(request("GET", "/nowhere"))
    assert (await conn.response())[0] == 404
    await conn.stream.send_all(request("GET", f"{CN}/1/claim"))
    status, headers, _ = await conn.response()
    assert status == 405 and headers["allow"] == "POST"
    await conn.stream.send_all(request("POST", f"{CN}/1/claim", {"limit": -1}))
    assert (await conn.response())[0] == 400
    # HEAD: the head only, and the connection goes on.
    await conn.stream.send_all(request("HEAD", "/version"))
    status, headers, _ = await conn.response(head_request=True)
    assert status == 200 and "date" in headers
    await conn.stream.send_all(request("GET", "/ping"))
    assert (await conn.response())[0] == 200
    # The API's: register+claim, claim, jobs, heartbeat, the refused claim, ping; Quart's:
    # 404, 405, HEAD.
    assert fast.served - before_fast == 6
    assert server.wire.served - before_wire == 3
    assert server.wire.handed_over == 0


async def test_pipelined_requests_are_answered_in_order(server: Running, conn: Conn) -> None:
    await conn.stream.send_all(request("POST", "/workflows", {"spec": simple_spec(2)}))
    assert (await conn.response())[0] == 201
    await conn.stream.send_all(
        request("POST", CN, {"hostname": "a"}) + request("GET", "/workflows/1")
        + request("POST", CN, {"hostname": "b"}) + request("GET", "/ping"))
    answers = [await conn.response() for _ in range(4)]
    assert [a[0] for a in answers] == [201, 200, 201, 200]
    assert [json.loads(answers[k][2])["id"] for k in (0, 2)] == [1, 2]
    assert json.loads(answers[1][2])["name"] == "wf"
    # One byte at a time arrives as well.
    for byte in request("GET", "/ping"):
        await conn.stream.send_all(bytes([byte]))
    assert (await conn.response())[0] == 200
    assert server.wire.handed_over == 0


@pytest.mark.parametrize("how", ["chunked", "expect", "http/1.0", "bare-lf"])
async def test_what_the_loop_does_not_serve_goes_to_hypercorn(
        server: Running, api: Api, conn: Conn, how: str) -> None:
    await api.ok("POST", "/workflows", {"spec": simple_spec(2)}, 201)
    data = json.dumps({"hostname": "h"}).encode()
    path = f"{PREFIX}{CN}"
    if how == "chunked":
        raw = (f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               f"{len(data):x}\r\n").encode() + data + b"\r\n0\r\n\r\n"
    elif how == "expect":
        raw = (f"POST {path} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
               f"Content-Length: {len(data)}\r\n\r\n").encode() + data
    elif how == "http/1.0":
        raw = (f"POST {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
               "Connection: keep-alive\r\n\r\n").encode() + data
    else:
        raw = f"POST {path} HTTP/1.1\nHost: x\nContent-Length: {len(data)}\n\n".encode() + data
    await conn.stream.send_all(raw)
    status, _, body = await conn.response()
    if how == "expect" and status == 100:
        status, _, body = await conn.response()
    assert status == 201, (how, status, body)
    assert server.wire.handed_over == 1
    if how == "http/1.0":  # h11 keeps no HTTP/1.0 connection alive
        assert await conn.closed()
        return
    # Hypercorn keeps the connection and answers what follows on it.
    await conn.stream.send_all(request("GET", "/ping"))
    assert (await conn.response())[0] == 200
    assert server.wire.handed_over == 1


async def test_big_bodies_are_read_in_pieces(server: Running, conn: Conn) -> None:
    # The API's (a workflow with a long description) and Quart's (an unknown route, whose
    # answer reads and drops the body): the connection goes on after both.
    spec = simple_spec(2, description="x" * BIG)
    data = json.dumps({"spec": spec}).encode()
    await conn.stream.send_all((f"POST {PREFIX}/workflows HTTP/1.1\r\nHost: x\r\n"
                                f"Content-Length: {len(data)}\r\n\r\n").encode() + data)
    status, _, body = await conn.response()
    assert status == 201, body
    await conn.stream.send_all((f"POST {PREFIX}/nowhere HTTP/1.1\r\nHost: x\r\n"
                                f"Content-Length: {BIG}\r\n\r\n").encode() + b"y" * BIG)
    assert (await conn.response())[0] == 404
    await conn.stream.send_all(request("GET", "/workflows/1"))
    status, _, body = await conn.response()
    assert status == 200 and len(json.loads(body)["description"]) == BIG
    assert server.wire.handed_over == 0


async def test_a_websocket_upgrade_goes_to_hypercorn(server: Running, api: Api) -> None:
    async with open_websocket_url(f"ws://127.0.0.1:{server.port}{PREFIX}/events/ws") as ws:
        await api.ok("POST", "/workflows", {"spec": simple_spec(2)}, 201)
        with trio.fail_after(10):
            event = json.loads(await ws.get_message())
    assert event["workflow_id"] == 1, event
    assert server.wire.handed_over == 1


async def test_connection_close_is_honoured(server: Running, conn: Conn) -> None:
    await conn.stream.send_all(request("GET", "/ping", headers="Connection: close\r\n"))
    status, headers, _ = await conn.response()
    assert status == 200 and headers["connection"] == "close"
    assert await conn.closed()


async def test_a_body_that_never_comes_gets_408_and_the_connection_closes(
        start_inprocess: Any) -> None:
    srv = await start_inprocess(body_timeout_s=0.5)
    for path in (f"{CN}/1/claim", "/workflows"):  # the protocol's and an ordinary route
        stream = await trio.open_tcp_stream("127.0.0.1", srv.port)
        async with stream:
            conn = Conn(stream)
            await stream.send_all(f"POST {PREFIX}{path} HTTP/1.1\r\nHost: x\r\n"
                                  "Content-Length: 100\r\n\r\n{".encode())
            status, headers, body = await conn.response()
            assert status == 408 and headers["connection"] == "close", (path, body)
            assert json.loads(body)["error"] == "request timeout"
            assert await conn.closed()


def test_heads_the_loop_serves_and_those_it_leaves() -> None:
    ok = parse_head(b"POST /a/b%20c?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n"
                    b"Authorization: Basic eA==\r\nAuthorization: other\r\n"
                    b"X-Thing:   spaced value \t")
    assert ok is not None
    assert (ok.method, ok.path, ok.raw_path, ok.query, ok.length, ok.close) == (
        "POST", "/a/b c", b"/a/b%20c", b"x=1", 12, False)
    assert ok.authorization == "Basic eA=="  # the first, as Quart reads it
    assert (b"x-thing", b"spaced value") in ok.headers
    closing = parse_head(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close")
    assert closing is not None and closing.close and closing.length == 0
    for head in (
        b"GET / HTTP/1.0\r\nHost: h",  # another version
        b"GET / HTTP/1.1",  # no Host
        b"GET http://h/ HTTP/1.1\r\nHost: h",  # absolute form
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1",
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1",
        b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked",
        b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue",
        b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade",
        b"GET / HTTP/1.1\r\nHost: h\r\n folded",  # obsolete line folding
        b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: x",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b",
        b"G\xc3T / HTTP/1.1\r\nHost: h",
    ):
        assert parse_head(head) is None, head


def test_bytes_that_cannot_become_a_head_are_seen_at_once() -> None:
    for so_far in (b"\x16\x03\x01\x02\x00\x01", b"GET / HTTP/1.0\r\n", b"GET / HTTP/1.1\nHo",
                   b"POST /a HTTP/1.1\r\nHost: x\n\n", b"GET\x00", b"GET /a\tb HTTP/1.1\r\n"):
        assert not_a_head(bytearray(so_far)), so_far
    for so_far in (b"", b"PO", b"POST ", b"POST /torc-serv", b"POST /a HTTP/1.1\r\nHost: x",
                   b"GET /a HTTP/1.1\r\nHost: x\r\n\r"):
        assert not not_a_head(bytearray(so_far)), so_far


async def test_tls_sent_to_the_plain_port_is_answered_at_once(server: Running,
                                                              conn: Conn) -> None:
    # A client that believes this is an HTTPS port: its handshake's first bytes. The server
    # must not wait for a head's blank line (the client waits for the server's hello).
    await conn.stream.send_all(b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03" + bytes(40))
    with trio.fail_after(10):
        status, _, _ = await conn.response()
    assert status == 400
    assert server.wire.handed_over == 1


async def test_a_connection_that_fails_costs_only_itself(
        server: Running, conn: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    real = wire.parse_head

    def broken(head: bytes) -> Any:
        if b"/boom" in head:
            raise RuntimeError("a bug in the loop")
        return real(head)

    monkeypatch.setattr(wire, "parse_head", broken)
    await conn.stream.send_all(request("GET", "/boom"))
    assert await conn.closed()
    other = Api(server.port)
    try:
        assert (await other.get("/ping")).status == 200
    finally:
        await other.aclose()
