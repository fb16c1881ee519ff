"""The fast path (torc_net.fastpath) answers the API exactly as the Quart
views do: two real servers, one with the fast path and one without (``--no-fast-path``), get
the same requests — valid ones and every kind of refusal — and must give the same answers,
while the fast one really served them itself.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import bcrypt
import trio
from conftest import Api, basic, simple_spec

from torc_net.fastpath import FastPath
from torc_net.server import Running
from torc_net.validate import MAX_BODY_BYTES

CN = "/workflows/1/compute_nodes"


def _htpasswd(path: Path) -> Path:
    path.write_text(f"alice:{bcrypt.hashpw(b'apw', bcrypt.gensalt(4)).decode()}\n"
                    f"bob:{bcrypt.hashpw(b'bpw', bcrypt.gensalt(4)).decode()}\n")
    return path


async def _pair(start_inprocess: Callable[..., Awaitable[Running]],
                tmp_path: Path) -> list[tuple[Running, Api]]:
    users = str(_htpasswd(tmp_path / "htpasswd"))
    out = []
    for fast in (True, False):
        srv = await start_inprocess(database=str(tmp_path / f"fast-{fast}.db"), fast_path=fast,
                                    auth_file=users)
        out.append((srv, Api(srv.port, auth=("alice", "apw"))))
    assert isinstance(out[0][0].admission.app, FastPath)
    assert not isinstance(out[1][0].admission.app, FastPath)
    return out


def _timeless(body: Any) -> Any:
    """``body`` without the times in it (the two servers made their rows at other times)."""
    if isinstance(body, dict):
        return {k: _timeless(v) for k, v in body.items()
                if not k.endswith(("_at", "_time", "_s")) and "lease" not in k}
    if isinstance(body, list):
        return [_timeless(v) for v in body]
    return body


async def test_the_fast_path_answers_as_quart_does(
        start_inprocess: Callable[..., Awaitable[Running]], tmp_path: Path) -> None:
    pair = await _pair(start_inprocess, tmp_path)
    fast = pair[0][0].admission.app
    assert isinstance(fast, FastPath)
    try:
        for _, api in pair:
            await api.ok("POST", "/workflows", {"spec": simple_spec(4, chain=True)}, 201)
            await api.ok("POST", CN, {"hostname": "h", "pid": 1}, 201)

        async def same(method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                       headers: list[tuple[str, str]] | None = None,
                       anonymous: bool = False, timeless: bool = False) -> Any:
            replies = []
            for srv, api in pair:
                client = Api(srv.port) if anonymous else api
                try:
                    reply = await client.request(method, path, body, raw=raw, headers=headers)
                finally:
                    if anonymous:
                        await client.aclose()
                replies.append((reply.status, _timeless(reply.body) if timeless else reply.body,
                                reply.headers.get("content-type"),
                                reply.headers.get("www-authenticate")))
            assert replies[0] == replies[1], (method, path, replies)
            return replies[0]

        served = fast.served
        # The protocol, valid: register, claim, start, complete riding on the next claim.
        status, claimed, ctype, _ = await same("POST", f"{CN}/1/claim", {"limit": 2})
        assert (status, ctype) == (200, "application/json") and len(claimed["jobs"]) == 1
        job = claimed["jobs"][0]
        assert (await same("POST", f"{CN}/1/start", {"job_ids": [job["id"]]}))[0] == 200
        result = {"job_id": job["id"], "attempt": 1, "run_id": 1, "return_code": 0}
        status, claimed, _, _ = await same("POST", f"{CN}/1/claim",
                                           {"limit": 1, "results": [result], "claim_seq": 7})
        assert status == 200 and claimed["accepted"] == 1 and len(claimed["jobs"]) == 1
        # ... its retry gets the same answer, not new jobs
        assert (await same("POST", f"{CN}/1/claim",
                           {"limit": 1, "results": [result], "claim_seq": 7}))[1] == claimed
        assert (await same("POST", f"{CN}/1/heartbeat"))[0] == 200
        # Refusals, each of which changes nothing.
        refusals: list[tuple[str, Any, dict[str, Any]]] = [
            (f"{CN}/1/claim", {"limit": -1}, {}),  # schema
            (f"{CN}/1/claim", {"limit": "3"}, {}),
            (f"{CN}/1/claim", None, {"raw": b"{not json"}),
            (f"{CN}/1/claim", None, {"raw": b"[" * 100 + b"]" * 100}),  # too deep
            (f"{CN}/1/claim", {"results": [{"job_id": 999, "attempt": 1, "run_id": 1,
                                            "return_code": 0}]}, {}),  # unknown job: 404
            (f"{CN}/1/claim", {"scheduler": "nope"}, {}),  # 422
            (f"{CN}/1/start", {"job_ids": [12345]}, {}),
            (f"{CN}/77/claim", {}, {}),  # no such compute node
            ("/workflows/9/compute_nodes/1/claim", {}, {}),  # no such workflow
            (f"/workflows/{2**70}/compute_nodes/1/claim", {}, {}),  # beyond the store
            (CN, {"pid": 1}, {}),  # register without a hostname
            (f"{CN}/1/claim", {}, {"headers": basic("alice", "wrong"), "anonymous": True}),
            (f"{CN}/1/claim", {}, {"headers": basic("bob", "bpw"), "anonymous": True}),  # 403
            (f"{CN}/1/claim", {}, {"anonymous": True}),  # 401: anonymous, an owned workflow
        ]
        for path, body, how in refusals:
            status, answer, _, _ = await same("POST", path, body, **how)
            assert status >= 400 and set(answer) == {"error", "detail"}, (path, answer)
        assert fast.served - served == 5 + len(refusals)  # claim, start, claim twice, heartbeat
        # The rest of the API: reads with query strings, a string parameter, errors.
        before = fast.served
        for path in ("/workflows?limit=1&offset=0", "/workflows/1/jobs?status=completed",
                     "/workflows/1/jobs?limit=2&limit=1&name_contains=", "/workflows/1/jobs?"
                     "sort_by=name&reverse_sort=true", "/workflows/1/jobs?limit=x",
                     "/workflows/1/jobs?limit=-1", "/workflows/1/results?failed=false",
                     "/users/alice/groups", "/users/bob/groups", "/users/%20x/groups",
                     "/workflows/1/status", "/openapi.json", "/ping", "/workflows/2"):
            await same("GET", path, timeless=True)
        assert fast.served - before == 14
        # Not the fast path's: other methods on its paths, and unknown routes.
        before = fast.served
        assert (await same("GET", f"{CN}/1/claim"))[0] == 405
        assert (await same("POST", f"{CN}/1/claim/"))[0] == 404
        assert (await same("GET", "/no/such/route"))[0] == 404
        assert fast.served == before
        # Deactivated: a claim is a conflict, on both.
        assert (await same("POST", f"{CN}/1/deactivate"))[0] == 200
        assert (await same("POST", f"{CN}/1/claim", {}))[0] == 409
    finally:
        for _, api in pair:
            await api.aclose()


async def test_the_fast_path_bounds_bodies(server: Running, api: Api) -> None:
    await api.ok("POST", "/workflows", {"spec": simple_spec(2)}, 201)
    await api.ok("POST", CN, {"hostname": "h"}, 201)
    # A body over the limit is refused from its Content-Length, before it is read, and the
    # connection is closed (its body is still on the wire).
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(
            f"POST /torc-service/v1{CN}/1/claim HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n{{".encode())
        answer = b""
        with trio.fail_after(30):
            while chunk := await stream.receive_some(65536):
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"connection: close" in head.lower(), head
    assert json.loads(body)["error"] == "body too large"
    # Other connections are served as ever.
    assert (await api.post(f"{CN}/1/claim", {"limit": 1})).status == 200
    served = server.admission.app
    assert isinstance(served, FastPath) and served.served >= 3


async def test_first_contact_registers_and_claims_in_one_round_trip(server: Running,
                                                                    api: Api) -> None:
    await api.ok("POST", "/workflows", {"spec": simple_spec(3)}, 201)
    # A claim that cannot be served as asked registers nothing either.
    bad = await api.request("POST", CN, {"hostname": "h", "claim": {"scheduler": "nope"}})
    assert bad.status == 422 and "scheduler" in bad.body["detail"], bad
    bad = await api.request("POST", CN, {"hostname": "h", "claim": {"limit": -1}})
    assert bad.status == 400 and "claim.limit" in bad.body["detail"], bad
    assert (await api.ok("GET", CN))["total"] == 0
    first = await api.ok("POST", CN, {"hostname": "h", "claim": {"limit": 2}}, 201)
    assert len(first["claim"]["jobs"]) == 2
    assert first["claim"]["counts"]["pending"] == 2
    # Registered and holding the jobs: the next claim reports them and takes the last one.
    done = [{"job_id": j["id"], "attempt": j["attempt"], "run_id": j["run_id"],
             "return_code": 0} for j in first["claim"]["jobs"]]
    more = await api.ok("POST", f"{CN}/{first['id']}/claim", {"limit": 2, "results": done})
    assert more["accepted"] == 2 and len(more["jobs"]) == 1
    nodes = (await api.ok("GET", CN))["items"]
    assert [n["id"] for n in nodes] == [first["id"]]
    # Without ``claim``: no ``claim`` in the answer (older runners see what they saw).
    assert "claim" not in await api.ok("POST", CN, {"hostname": "h2"}, 201)
    both = await api.ok("POST", CN, {"hostname": "h3", "workflow": True, "claim": {}}, 201)
    assert both["workflow"] == await api.ok("GET", "/workflows/1")
    assert both["claim"]["jobs"] == [] and both["claim"]["counts"]["completed"] == 2


def test_bodies_decode_alike_and_deep_ones_never_reach_orjson() -> None:
    """orjson decodes small bodies (faster); it must give what json gives, and never see a body
    deep enough to overflow its stack (orjson 3.8 has no depth limit: 300,000 levels crash the
    process), which json refuses as a located 400 instead."""
    import math

    import pytest

    from torc_net.validate import ApiError, decode_body

    def stdlib(raw: bytes) -> object:
        def refuse(name: str) -> object:
            raise ValueError(name)
        try:
            return json.loads(raw, parse_constant=refuse)
        except (ValueError, RecursionError):
            return ApiError

    def ours(raw: bytes) -> object:
        try:
            return decode_body(raw, 64)
        except ApiError:
            return ApiError

    sample = {"limit": 3, "results": [{"job_id": 2**63 - 1, "attempt": 1, "run_id": 1,
                                       "return_code": -9, "exec_time_s": 0.1 + 0.2,
                                       "note": 'é \u2603 "q"'}], "held_job_ids": []}
    cases = [json.dumps(sample).encode(), b'{"a": NaN}', b'{"a": -Infinity}',
             b'{"a": 18446744073709551616}', b"{'a': 1}", b'{"a": "\\ud800"}', b"\xff",
             b'{"a": 1, "a": 2}', b"[" * 600 + b"]" * 600, b"[" * 2000 + b"]" * 2000]
    for raw in cases:
        assert ours(raw) == stdlib(raw), raw[:40]
    assert ours(cases[0]) == sample
    assert math.isinf(ours(b'{"a": 1e999}')["a"])  # type: ignore[index]
    with pytest.raises(ApiError, match="nested deeper than 64"):
        decode_body(b"[" * 400_000 + b"]" * 400_000, 64)
