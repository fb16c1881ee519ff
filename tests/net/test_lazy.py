"""Quart is built on first need (torc_net.lazy): a server asked only for the API never imports
it, the first page of the dashboard builds it (in a thread, once, however many ask at once),
and a server that built it still shuts down cleanly."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable

import trio
from conftest import Api, simple_spec

from torc_net.fastpath import FastPath
from torc_net.lazy import LazyApp
from torc_net.server import Running


def _lazy(server: Running) -> LazyApp:
    fast = server.admission.app
    assert isinstance(fast, FastPath) and isinstance(fast.app, LazyApp)
    return fast.app


def test_importing_the_server_does_not_import_quart() -> None:
    """Nor PyYAML (only YAML spec text needs it), psutil (only a pid file does) or
    Hypercorn's trio worker with its HTTP/2 and websocket modules (only a connection handed
    over to Hypercorn does: ~80 ms): each is more of every standalone command's start."""
    code = ("import sys, torc_net.server\n"
            "print(sorted(m for m in ('quart', 'quart_trio', 'flask', 'werkzeug', 'jinja2',"
            " 'yaml', 'psutil', 'hypercorn.trio', 'h2', 'wsproto') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]", out


async def test_the_api_alone_never_builds_quart(server: Running, api: Api) -> None:
    await api.ok("POST", "/workflows", {"spec": simple_spec(2)}, 201)
    first = await api.ok("POST", "/workflows/1/compute_nodes",
                         {"hostname": "h", "workflow": True, "claim": {"limit": 2}}, 201)
    assert len(first["claim"]["jobs"]) == 2
    for path in ("/workflows", "/workflows/1/jobs?limit=1", "/version", "/openapi.json"):
        assert (await api.get(path)).status == 200, path
    assert not _lazy(server).built


async def test_the_first_pages_build_it_once(start_inprocess: Callable[..., Awaitable[Running]],
                                             ) -> None:
    server = await start_inprocess()
    lazy = _lazy(server)
    builds = 0
    build = lazy._build

    def counted() -> object:
        nonlocal builds
        builds += 1
        return build()

    lazy._build = counted  # type: ignore[method-assign]
    statuses: list[int] = []

    async def page() -> None:
        client = Api(server.port)
        try:
            reply = await client.request("GET", "/no/such/route")
            statuses.append(reply.status)
        finally:
            await client.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(page)
    assert statuses == [404] * 5 and builds == 1 and lazy.built
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(30):
            head = await stream.receive_some(65536)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    server.shutdown.set()
    with trio.fail_after(30):
        await server.stopped.wait()
