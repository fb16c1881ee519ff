"""The websocket feed: counts first, every transition in order, overflow, per-workflow and
global subscriptions."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio_websocket
from conftest import Api, simple_spec

from torc_net.server import Running


async def recv(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(10):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def test_every_transition_in_order(api: Api) -> None:
    wf = (await api.ok("POST", "/workflows", {"spec": simple_spec(3, chain=True)},
                       status=201))["id"]
    url = f"ws://127.0.0.1:{api.port}/torc-service/v1/workflows/{wf}/events/ws"
    async with trio_websocket.open_websocket_url(url) as ws, \
            trio_websocket.open_websocket_url(
                f"ws://127.0.0.1:{api.port}/torc-service/v1/events/ws") as all_ws:
        first = await recv(ws)
        assert first["type"] == "counts" and first["workflow_id"] == wf
        assert first["counts"]["ready"] == 1 and first["counts"]["blocked"] == 2
        assert (await recv(all_ws))["type"] == "counts"
        cn = (await api.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "h"},
                           status=201))["id"]
        base = f"/workflows/{wf}/compute_nodes/{cn}"
        for _ in range(3):
            job = (await api.ok("POST", f"{base}/claim", {"limit": 1}))["jobs"][0]
            await api.ok("POST", f"{base}/start", {"job_ids": [job["id"]]})
            await api.ok("POST", f"{base}/complete", {"results": [
                {"job_id": job["id"], "attempt": 1, "run_id": 1, "return_code": 0,
                 "status": "completed", "exec_time_s": 0}]})
        expected = []
        for i in range(3):
            expected += [(f"job{i}", "ready", "pending"), (f"job{i}", "pending", "running"),
                         (f"job{i}", "running", "completed")]
            if i < 2:
                expected.append((f"job{i + 1}", "blocked", "ready"))
        for stream in (ws, all_ws):
            got = []
            for _ in expected:
                m = await recv(stream)
                assert m["type"] == "job_status" and m["workflow_id"] == wf
                got.append((m["name"], m["old"], m["new"]))
            assert got == expected
            final = await recv(stream)
            assert final["type"] == "workflow" and final["event"] == "completed"


async def test_unknown_workflow_is_refused(api: Api) -> None:
    url = f"ws://127.0.0.1:{api.port}/torc-service/v1/workflows/99/events/ws"
    try:
        async with trio_websocket.open_websocket_url(url):
            raise AssertionError("connected to the feed of an unknown workflow")
    except trio_websocket.ConnectionRejected as exc:
        assert exc.status_code == 404
        assert json.loads(exc.body)["error"] == "not found"


async def test_slow_subscriber_overflows(
    start_inprocess: Callable[..., Awaitable[Running]]
) -> None:
    server = await start_inprocess(feed_queue_size=5)
    api = Api(server.port)
    wf = (await api.ok("POST", "/workflows", {"spec": simple_spec(40)}, status=201))["id"]
    url = f"ws://127.0.0.1:{server.port}/torc-service/v1/workflows/{wf}/events/ws"
    async with trio_websocket.open_websocket_url(url) as ws:
        assert (await recv(ws))["type"] == "counts"
        cn = (await api.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "h"},
                           status=201))["id"]
        # 40 transitions published at once into a queue of 5.
        await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim", {"limit": 40})
        messages = []
        with trio.fail_after(10):
            try:
                while True:
                    messages.append(json.loads(await ws.get_message()))
            except trio_websocket.ConnectionClosed:
                pass
        assert messages[-1] == {"type": "overflow"}
        assert len(messages) <= 6
    assert server.service.feed.num_subscribers == 0
    await api.aclose()


async def test_batched_frames_carry_each_change_as_one_array(
        start_inprocess: Callable[..., Awaitable[Running]]) -> None:
    """?batch=1: the first counts as one array, then one frame per change (a claim of 40 jobs
    is one frame of 40 transitions), split at MAX_BATCH; the queue still bounds messages, not
    frames: 40 messages into a queue of 30 overflow."""
    server = await start_inprocess(feed_queue_size=50)
    api = Api(server.port)
    wf = (await api.ok("POST", "/workflows", {"spec": simple_spec(40)}, status=201))["id"]
    base_ws = f"ws://127.0.0.1:{server.port}/torc-service/v1"
    async with trio_websocket.open_websocket_url(f"{base_ws}/workflows/{wf}/events/ws?batch=1") \
            as ws, trio_websocket.open_websocket_url(f"{base_ws}/events/ws?batch=true") as all_ws:
        for stream in (ws, all_ws):
            first = await recv(stream)
            assert isinstance(first, list) and first[0]["type"] == "counts"
        cn = (await api.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "h"},
                           status=201))["id"]
        claimed = (await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim",
                                {"limit": 40}))["jobs"]
        for stream in (ws, all_ws):
            frame = await recv(stream)
            assert isinstance(frame, list) and len(frame) == 40
            assert {(m["type"], m["old"], m["new"]) for m in frame} == {
                ("job_status", "ready", "pending")}
            assert sorted(m["job_id"] for m in frame) == sorted(j["id"] for j in claimed)
    # The bound counts messages: 40 in one frame do not fit a queue of 30.
    server.service.feed.queue_size = 30
    wf2 = (await api.ok("POST", "/workflows", {"spec": simple_spec(40)}, status=201))["id"]
    async with trio_websocket.open_websocket_url(
            f"{base_ws}/workflows/{wf2}/events/ws?batch=1") as ws:
        assert isinstance(await recv(ws), list)
        cn = (await api.ok("POST", f"/workflows/{wf2}/compute_nodes", {"hostname": "h"},
                           status=201))["id"]
        await api.ok("POST", f"/workflows/{wf2}/compute_nodes/{cn}/claim", {"limit": 40})
        assert await recv(ws) == {"type": "overflow"}
    await api.aclose()


def test_a_change_bigger_than_a_frame_is_split() -> None:
    from torc_net.feed import MAX_BATCH, Feed

    feed = Feed(queue_size=5 * MAX_BATCH)
    sub = feed.subscribe(7, lambda wf, owner: True, batched=True)
    plain = feed.subscribe(7, lambda wf, owner: True)
    messages = [{"type": "job_status", "job_id": i} for i in range(MAX_BATCH + 5)]
    feed.publish_many(7, None, messages)
    frames = []
    while True:
        try:
            frames.append(sub.receive.receive_nowait())
        except trio.WouldBlock:
            break
    assert [count for _, count in frames] == [MAX_BATCH, 5]
    assert [m["job_id"] for text, _ in frames for m in json.loads(text)] == \
        list(range(MAX_BATCH + 5))
    assert sub.pending == MAX_BATCH + 5 and plain.pending == MAX_BATCH + 5
    sub.sent(MAX_BATCH)
    assert sub.pending == 5
