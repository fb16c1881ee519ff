"""Tests of torc_net.http / torc_net.client against a real, scriptable h11 server on 127.0.0.1.

No mocks: every test talks over real TCP sockets to ``ScriptServer``, whose per-request
behaviour is set by an async ``script(req) -> Reply`` function (answer, delay, 503, close
mid-way, close after answering, ...). The server counts connections and records requests.
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import pytest
import trio
import trio_websocket

from torc_net.client import (
    ApiError,
    ServerUnreachable,
    TorcClient,
    events_ws_url,
    open_event_feed,
    subscribe_events,
)
from torc_net.http import ConnectionFailed, HttpConnectionPool, parse_base_url

BASE = "/torc-service/v1"
MAX_BODY = 64 * 1024 * 1024


# --------------------------------------------------------------------------- test server
@dataclass
class Req:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int  # serial number of the TCP connection it arrived on

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    close: bool = False  # answer with "Connection: close"
    close_after: bool = False  # answer keep-alive, then silently close the socket
    drop: bool = False  # close without answering
    truncate: bool = False  # send headers and half the body, then close


Script = Callable[[Req], Awaitable[Reply]]


async def echo(req: Req) -> Reply:
    return Reply(json={"method": req.method, "target": req.target, "body": req.json()})


class ScriptServer:
    """HTTP/1.1 server (trio + h11) on 127.0.0.1:0, scripted per request."""

    def __init__(self, script: Script = echo) -> None:
        self.script = script
        self.port = 0
        self.connections = 0
        self.requests: list[Req] = []
        self._scope: trio.CancelScope | None = None
        self._down_for = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{BASE}"

    async def run(self, *, task_status: trio.TaskStatus[ScriptServer] = trio.TASK_STATUS_IGNORED):
        started = False
        for _ in range(10):  # bounded number of outages per test
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            with trio.CancelScope() as scope:
                self._scope = scope
                if not started:
                    started = True
                    task_status.started(self)
                await trio.serve_listeners(self._handle, listeners)
            # cancelled by outage(): listeners and connections are closed; stay down a while
            await trio.sleep(self._down_for)
        raise AssertionError("too many outages")

    def outage(self, seconds: float) -> None:
        """Close the listener and all connections; listen again on the same port later."""
        assert self._scope is not None
        self._down_for = seconds
        self._scope.cancel()

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        serial = self.connections
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            for _ in range(1_000_000):  # bounded keep-alive loop
                req = await self._read_request(stream, conn, serial)
                if req is None:
                    return
                self.requests.append(req)
                reply = await self.script(req)
                if reply.delay:
                    await trio.sleep(reply.delay)
                if reply.drop:
                    return
                body = reply.body
                if body is None:
                    body = json.dumps(reply.json).encode() if reply.json is not None else b""
                headers = [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                    *reply.headers,
                ]
                if reply.close:
                    headers.append(("Connection", "close"))
                out = conn.send(h11.Response(status_code=reply.status, headers=headers))
                assert out is not None
                if reply.truncate:
                    await stream.send_all(out + body[: len(body) // 2])
                    return
                await stream.send_all(out + (conn.send(h11.Data(data=body)) or b""))
                await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
                if reply.close_after or conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            stream.socket.close()

    async def _read_request(
        self, stream: trio.SocketStream, conn: h11.Connection, serial: int
    ) -> Req | None:
        request: h11.Request | None = None
        chunks: list[bytes] = []
        size = 0
        for _ in range(1_000_000):
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(256 * 1024))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
                size += len(event.data)
                assert size <= MAX_BODY
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                headers = {k.decode(): v.decode() for k, v in request.headers}
                return Req(
                    request.method.decode(),
                    request.target.decode(),
                    headers,
                    b"".join(chunks),
                    serial,
                )
            elif isinstance(event, h11.ConnectionClosed):
                return None
        raise AssertionError("unbounded request")


@pytest.fixture
async def server(nursery: trio.Nursery) -> ScriptServer:
    srv: ScriptServer = await nursery.start(ScriptServer().run)
    return srv


def free_port() -> int:
    """A port on 127.0.0.1 with nobody listening (bound then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client_for(server: ScriptServer, **kw: Any) -> TorcClient:
    kw.setdefault("wait_for_server_s", 5.0)
    kw.setdefault("max_backoff_s", 0.2)
    kw.setdefault("rng", random.Random(1))
    return TorcClient(server.url, **kw)


# ------------------------------------------------------------------------- HTTP layer
def test_parse_base_url() -> None:
    b = parse_base_url("http://127.0.0.1:8085/torc-service/v1/")
    assert (b.host, b.port, b.path) == ("127.0.0.1", 8085, "/torc-service/v1")
    assert parse_base_url("http://127.0.0.1").port == 80
    secure = parse_base_url("https://127.0.0.1/x")
    assert (secure.port, secure.tls, secure.host_header) == (443, True, b"127.0.0.1")
    with pytest.raises(ValueError, match="only http:// and https://"):
        parse_base_url("ftp://127.0.0.1/x")


async def test_keep_alive_reuses_one_connection(server: ScriptServer) -> None:
    async with HttpConnectionPool(server.url) as pool:
        with trio.fail_after(10):
            for i in range(100):
                resp = await pool.request("GET", f"/ping?i={i}")
                assert resp.status == 200
                assert resp.json()["target"] == f"{BASE}/ping?i={i}"
    assert server.connections == 1
    assert pool.connections_opened == 1
    assert len(server.requests) == 100


async def test_server_closing_idle_connection_is_retried_transparently(
    server: ScriptServer,
) -> None:
    async def script(req: Req) -> Reply:
        # keep-alive answer, then the server drops the idle connection (idle timeout)
        return Reply(json={"n": len(server.requests)}, close_after=True)

    server.script = script
    async with HttpConnectionPool(server.url) as pool:
        with trio.fail_after(5):
            assert (await pool.request("GET", "/a")).json() == {"n": 1}
            assert pool.idle_connections == 1
            await trio.sleep(0.05)  # let the FIN arrive
            assert (await pool.request("GET", "/b")).json() == {"n": 2}
    # exactly one copy of each request reached the server, over two connections
    assert [r.path for r in server.requests] == [f"{BASE}/a", f"{BASE}/b"]
    assert server.connections == 2


async def test_connection_close_response_is_not_reused(server: ScriptServer) -> None:
    async def script(req: Req) -> Reply:
        return Reply(json={"ok": True}, close=True)

    server.script = script
    async with HttpConnectionPool(server.url) as pool:
        with trio.fail_after(5):
            for _ in range(3):
                resp = await pool.request("GET", "/x")
                assert resp.header("connection") == "close"
            assert pool.idle_connections == 0
    assert server.connections == 3


async def test_truncated_response_raises_connection_failed(server: ScriptServer) -> None:
    async def script(req: Req) -> Reply:
        return Reply(json={"data": "y" * 1000}, truncate=True)

    server.script = script
    async with HttpConnectionPool(server.url) as pool:
        with trio.fail_after(5), pytest.raises(ConnectionFailed) as info:
            await pool.request("GET", "/x")
    assert info.value.response_started
    assert len(server.requests) == 1  # not retried: the response had started


async def test_cancelled_request_discards_connection(server: ScriptServer) -> None:
    async def script(req: Req) -> Reply:
        return Reply(json={"slow": True}, delay=0.5 if req.path.endswith("/slow") else 0)

    server.script = script
    async with HttpConnectionPool(server.url) as pool:
        with trio.move_on_after(0.1) as scope:
            await pool.request("GET", "/slow")
        assert scope.cancelled_caught
        assert pool.idle_connections == 0
        with trio.fail_after(5):
            assert (await pool.request("GET", "/fast")).json() == {"slow": True}
    assert server.connections == 2


async def test_basic_auth_header_sent(server: ScriptServer) -> None:
    async with client_for(server, auth=("alice", "s3cr:t")) as client:
        with trio.fail_after(5):
            await client.ping()
            await client.version()
    expected = "Basic " + base64.b64encode(b"alice:s3cr:t").decode()
    assert [r.headers["authorization"] for r in server.requests] == [expected, expected]
    assert server.requests[0].headers["host"] == f"127.0.0.1:{server.port}"


async def test_large_json_body_both_ways(server: ScriptServer) -> None:
    payload = {"data": "x" * 5_000_000, "n": list(range(1000))}
    async with client_for(server) as client:
        with trio.fail_after(10):
            out = await client.call("POST", "/echo", payload)
    assert out["body"] == payload
    assert len(server.requests[0].body) > 5_000_000


async def test_fifty_concurrent_requests_through_one_pool(server: ScriptServer) -> None:
    async def script(req: Req) -> Reply:
        return Reply(json={"i": req.json()["i"]}, delay=0.05)

    server.script = script
    results: dict[int, Any] = {}
    async with client_for(server) as client:

        async def one(i: int) -> None:
            results[i] = await client.call("POST", "/c", {"i": i})

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(one, i)
        assert results == {i: {"i": i} for i in range(50)}
        assert client.pool.idle_connections <= 4
        assert client.retries == 0
        # the idle connections are reused afterwards
        before = server.connections
        with trio.fail_after(5):
            await client.call("POST", "/c", {"i": 0})
        assert server.connections == before
    assert server.connections <= 50


# ----------------------------------------------------------------------- retry policy
async def test_503_retry_after_then_success(server: ScriptServer) -> None:
    async def script(req: Req) -> Reply:
        if len(server.requests) == 1:
            return Reply(
                503, {"error": "busy", "detail": "admission"}, headers=[("Retry-After", "0.2")]
            )
        return Reply(json={"status": "ok"})

    server.script = script
    async with client_for(server) as client:
        t0 = trio.current_time()
        with trio.fail_after(5):
            assert await client.ping() == {"status": "ok"}
        assert trio.current_time() - t0 >= 0.2  # Retry-After honoured
    assert client.status_503 == 1
    assert client.retries >= 1
    assert client.requests == 2


@pytest.mark.parametrize("status", [429, 502, 504])
async def test_gateway_errors_and_lockouts_are_retried(server: ScriptServer, status: int) -> None:
    """429: a login lockout of this address (someone else's failures) ends by itself."""
    async def script(req: Req) -> Reply:
        if len(server.requests) <= 2:
            return Reply(status, {"error": "gateway"})
        return Reply(json={"status": "ok"})

    server.script = script
    async with client_for(server) as client:
        with trio.fail_after(5):
            assert await client.ping() == {"status": "ok"}
    assert client.retries == 2
    assert client.status_503 == 0


async def test_503_without_retry_raises_api_error(server: ScriptServer) -> None:
    async def script(req: Req) -> Reply:
        return Reply(503, {"error": "busy", "detail": "try later"}, headers=[("Retry-After", "1")])

    server.script = script
    async with client_for(server) as client:
        with trio.fail_after(5), pytest.raises(ApiError) as info:
            await client.call("GET", "/ping", retry=False)
    assert info.value.status == 503
    assert client.retries == 0


async def test_404_raises_api_error_without_retry(server: ScriptServer) -> None:
    async def script(req: Req) -> Reply:
        return Reply(404, {"error": "not found", "detail": "no workflow 42"})

    server.script = script
    async with client_for(server) as client:
        with trio.fail_after(5), pytest.raises(ApiError) as info:
            await client.get_workflow(42)
    err = info.value
    assert (err.status, err.error, err.detail) == (404, "not found", "no workflow 42")
    assert "no workflow 42" in str(err) and "404" in str(err)
    assert client.requests == 1 and client.retries == 0
    assert len(server.requests) == 1


async def test_422_list_detail_in_message(server: ScriptServer) -> None:
    detail = ["jobs[3] 'x': depends_on: no job named 'prep'", "jobs[4] 'y': bad"]

    async def script(req: Req) -> Reply:
        return Reply(422, {"error": "invalid spec", "detail": detail})

    server.script = script
    async with client_for(server) as client:
        with trio.fail_after(5), pytest.raises(ApiError) as info:
            await client.create_workflow({"name": "w", "jobs": []})
    assert info.value.detail == detail
    assert all(d in str(info.value) for d in detail)


async def test_non_json_error_body(server: ScriptServer) -> None:
    async def script(req: Req) -> Reply:
        return Reply(400, body=b"plain failure")

    server.script = script
    async with client_for(server) as client:
        with trio.fail_after(5), pytest.raises(ApiError, match="plain failure") as info:
            await client.ping()
    assert info.value.status == 400


async def test_connection_refused_raises_server_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}{BASE}"
    async with TorcClient(url, wait_for_server_s=0.5, max_backoff_s=0.1) as client:
        t0 = time.monotonic()
        with trio.fail_after(5), pytest.raises(ServerUnreachable, match="gave up") as info:
            await client.ping()
        elapsed = time.monotonic() - t0
    assert 0.4 <= elapsed < 3
    assert client.retries >= 2
    assert isinstance(info.value, ServerUnreachable)


async def test_connection_refused_without_retry_fails_at_once() -> None:
    url = f"http://127.0.0.1:{free_port()}{BASE}"
    async with TorcClient(url, wait_for_server_s=60) as client:
        with trio.fail_after(5), pytest.raises(ServerUnreachable):
            await client.call("GET", "/ping", retry=False)
    assert client.requests == 1


async def test_503_forever_gives_up_after_wait(server: ScriptServer) -> None:
    async def script(req: Req) -> Reply:
        return Reply(503, {"error": "busy"}, headers=[("Retry-After", "0.1")])

    server.script = script
    async with client_for(server, wait_for_server_s=0.5) as client:
        with trio.fail_after(5), pytest.raises(ServerUnreachable, match="HTTP 503"):
            await client.ping()
    assert client.status_503 >= 3


async def test_server_outage_is_survived(server: ScriptServer) -> None:
    async with client_for(server, wait_for_server_s=5.0) as client:
        with trio.fail_after(5):
            assert (await client.call("GET", "/before"))["method"] == "GET"
            server.outage(0.5)  # kept-alive connection is closed, port refuses for 0.5 s
            await trio.sleep(0.05)
            t0 = trio.current_time()
            out = await client.call("POST", "/after", {"x": 1})
            assert trio.current_time() - t0 >= 0.3
    assert out["body"] == {"x": 1}
    assert client.retries >= 1
    assert server.connections == 2


async def test_dropped_connection_is_retried(server: ScriptServer) -> None:
    async def script(req: Req) -> Reply:
        return Reply(json={"ok": True}, drop=len(server.requests) == 1)

    server.script = script
    async with client_for(server) as client:
        with trio.fail_after(5):
            assert await client.call("POST", "/x", {}) == {"ok": True}
    assert client.retries == 1
    assert len(server.requests) == 2


async def test_per_attempt_timeout_is_retried(server: ScriptServer) -> None:
    async def script(req: Req) -> Reply:
        return Reply(json={"ok": True}, delay=0.8 if len(server.requests) == 1 else 0)

    server.script = script
    async with client_for(server, attempt_timeout_s=0.2) as client:
        with trio.fail_after(5):
            assert await client.ping() == {"ok": True}
    assert client.retries == 1


def test_backoff_full_jitter_bounds() -> None:
    client = TorcClient("http://127.0.0.1:1/x", max_backoff_s=1.0, rng=random.Random(7))
    for attempt in range(40):
        cap = min(1.0, 0.1 * 2**attempt)
        delays = [client._backoff_s(attempt) for _ in range(50)]
        assert all(0 <= d <= cap for d in delays)
    assert max(client._backoff_s(30) for _ in range(200)) > 0.5  # jitter spans the cap


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORC_API_URL", "http://127.0.0.1:9/torc-service/v1")
    monkeypatch.setenv("TORC_USERNAME", "bob")
    monkeypatch.setenv("TORC_PASSWORD", "pw")
    c = TorcClient.from_env(None)
    assert c.base_url == "http://127.0.0.1:9/torc-service/v1" and c.auth == ("bob", "pw")
    c = TorcClient.from_env("http://127.0.0.1:10/v1")
    assert c.base_url == "http://127.0.0.1:10/v1"
    monkeypatch.delenv("TORC_USERNAME")
    assert TorcClient.from_env(None).auth is None
    monkeypatch.delenv("TORC_API_URL")
    with pytest.raises(ValueError, match="TORC_API_URL"):
        TorcClient.from_env(None)


# ---------------------------------------------------------------- typed API methods
async def test_typed_methods_paths_and_bodies(server: ScriptServer) -> None:
    async with client_for(server) as c:
        with trio.fail_after(10):
            await c.create_workflow({"name": "w"}, dry_run=True)
            await c.list_workflows(10, 5)
            await c.delete_workflow(3)
            await c.cancel_workflow(3)
            await c.initialize_workflow(3)
            await c.reinitialize_workflow(3, True, {7: 1.5, 8: None})
            await c.reset_status(3, failed_only=True)
            await c.workflow_status(3)
            await c.list_jobs(3, status="ready", offset=2, limit=9)
            await c.get_job(3, 11)
            await c.disable_job(3, 11)
            await c.list_files(3)
            await c.record_file_mtimes(3, {1: 2.0})
            await c.list_user_data(3)
            await c.put_user_data(3, 4, {"k": [1]})
            await c.list_results(3, status="failed")
            await c.list_events(3, after=5)
            await c.register_compute_node(3, hostname="h", pid=1, num_cpus=4)
            await c.heartbeat(3, 2)
            await c.claim_jobs(3, 2, 16, cpus=4, memory_bytes=10, walltime_s=60.0)
            await c.start_jobs(3, 2, [11, 12])
            await c.complete_jobs(3, 2, [{"job_id": 11, "return_code": 0}])
            await c.deactivate(3, 2)
            await c.list_compute_nodes(3)
    got = [(r.method, r.target, r.json()) for r in server.requests]
    w = f"{BASE}/workflows"
    assert got == [
        ("POST", w, {"spec": {"name": "w"}, "dry_run": True}),
        ("GET", f"{w}?offset=10&limit=5", None),
        ("DELETE", f"{w}/3", None),
        ("POST", f"{w}/3/cancel", None),
        ("POST", f"{w}/3/initialize", None),
        ("POST", f"{w}/3/reinitialize", {"dry_run": True, "file_mtimes": {"7": 1.5, "8": None}}),
        ("POST", f"{w}/3/reset_status", {"failed_only": True}),
        ("GET", f"{w}/3/status", None),
        ("GET", f"{w}/3/jobs?status=ready&offset=2&limit=9", None),
        ("GET", f"{w}/3/jobs/11", None),
        ("POST", f"{w}/3/jobs/11/disable", None),
        ("GET", f"{w}/3/files?offset=0&limit=1000", None),
        ("POST", f"{w}/3/files/mtimes", {"mtimes": {"1": 2.0}}),
        ("GET", f"{w}/3/user_data?offset=0&limit=1000", None),
        ("PUT", f"{w}/3/user_data/4", {"data": {"k": [1]}}),
        ("GET", f"{w}/3/results?status=failed&offset=0&limit=1000", None),
        ("GET", f"{w}/3/events?after=5&limit=1000", None),
        ("POST", f"{w}/3/compute_nodes", {"hostname": "h", "pid": 1, "num_cpus": 4}),
        ("POST", f"{w}/3/compute_nodes/2/heartbeat", None),
        (
            "POST",
            f"{w}/3/compute_nodes/2/claim",
            {
                "claim_seq": None,
                "limit": 16,
                "cpus": 4,
                "memory_bytes": 10,
                "gpus": None,
                "nodes": None,
                "walltime_s": 60.0,
                "scheduler": None,
            },
        ),
        ("POST", f"{w}/3/compute_nodes/2/start", {"job_ids": [11, 12]}),
        (
            "POST",
            f"{w}/3/compute_nodes/2/complete",
            {"results": [{"job_id": 11, "return_code": 0}]},
        ),
        ("POST", f"{w}/3/compute_nodes/2/deactivate", None),
        ("GET", f"{w}/3/compute_nodes?offset=0&limit=1000", None),
    ]


async def test_iter_jobs_pages_through_everything(server: ScriptServer) -> None:
    total = 2500

    async def script(req: Req) -> Reply:
        q = req.query
        offset, limit = int(q["offset"][0]), int(q["limit"][0])
        items = [{"id": i} for i in range(offset, min(total, offset + limit))]
        return Reply(json={"items": items, "total": total, "offset": offset, "limit": limit})

    server.script = script
    async with client_for(server) as c:
        with trio.fail_after(10):
            ids = [j["id"] async for j in c.iter_jobs(1, status="ready")]
            results = [r["id"] async for r in c.iter_results(1, page_size=1000)]
    assert ids == list(range(total)) and results == ids
    assert len(server.requests) == 6
    assert server.requests[0].query["status"] == ["ready"]


# ------------------------------------------------------------------------- websocket
async def test_subscribe_events(nursery: trio.Nursery) -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        seen.append((request.path, headers))
        ws = await request.accept()
        for i in range(3):
            await ws.send_message(json.dumps({"type": "job_status", "i": i}))
        await ws.aclose()

    ws_server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
    url = f"http://127.0.0.1:{ws_server.port}{BASE}"
    assert events_ws_url(url, 5) == f"ws://127.0.0.1:{ws_server.port}{BASE}/workflows/5/events/ws"
    with trio.fail_after(5):
        async with aclosing(subscribe_events(url, 5, auth=("u", "p"))) as feed:
            got = [m async for m in feed]
        async with open_event_feed(url, None) as feed2:
            got2 = [m async for m in feed2]
    assert got == got2 == [{"type": "job_status", "i": i} for i in range(3)]
    assert seen[0][0] == f"{BASE}/workflows/5/events/ws"
    assert seen[0][1]["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    assert seen[1][0] == f"{BASE}/events/ws" and "authorization" not in seen[1][1]


# ----------------------------------------------------------------------- measurement
async def test_sequential_throughput_report(server: ScriptServer) -> None:
    """Not a timing assertion: prints req/s of sequential small GETs over keep-alive."""

    async def script(req: Req) -> Reply:
        return Reply(json={"status": "ok"})

    server.script = script
    n = 2000
    async with client_for(server) as client:
        with trio.fail_after(10):
            await client.ping()
            t0 = time.perf_counter()
            for _ in range(n):
                await client.ping()
            dt = time.perf_counter() - t0
    assert server.connections == 1
    print(f"\nsequential keep-alive GET /ping: {n / dt:.0f} req/s ({dt / n * 1e6:.0f} us/req)")
