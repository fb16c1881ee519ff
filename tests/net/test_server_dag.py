"""``GET /workflows/{id}/dag`` against a real in-process server: graph mode (nodes, stored
edges, a barrier as one node, name patterns, live statuses), summary mode by pattern, bad
``max_nodes``, visibility; and the pattern rule itself."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from torc_core.graph import DEFAULT_BARRIER_THRESHOLD
from torc_net.api_dag import MAX_NODES, OTHER, pattern_of, summary_answer
from torc_net.htpasswd_cli import add_user
from torc_net.http import HttpConnectionPool
from torc_net.openapi import QUERY_SCHEMAS
from torc_net.server import Running

StartFn = Callable[..., Awaitable[Running]]
#: tests/conftest.py's Api, through the `api` fixture only: `from conftest import Api` finds
#: tests/dash/conftest.py instead when both directories are collected in one run.
Api = Any

#: names and their patterns; tests/dash/test_dash_dag.py holds dag.js's patternOf to the same
PATTERNS = {
    "work_007": "work_{}",
    "train_lr0.1_bs32": "train_lr{}_bs{}",
    "v1.2.3": "v{}.{}",
    "prep": "prep",
    "job1.": "job{}.",
    "a.5": "a.{}",
    # Arabic-Indic digits are no numbers here (nor in JavaScript's [0-9])
    "x\u0661\u0662": "x\u0661\u0662",
    "": "",
    "3": "{}",
    "stage2_part10_of_12": "stage{}_part{}_of_{}",
    "ümlaut_09": "ümlaut_{}",
}


def test_pattern_rule() -> None:
    for name, pattern in PATTERNS.items():
        assert pattern_of(name) == pattern, name
    assert QUERY_SCHEMAS["max_nodes"]["maximum"] == MAX_NODES


async def create(api: Api, spec: dict[str, Any]) -> tuple[int, int]:
    """(workflow id, its first job's id)"""
    body = await api.ok("POST", "/workflows", {"spec": spec}, status=201)
    wf = await api.ok("GET", f"/workflows/{body['id']}")
    return int(body["id"]), int(wf["job_id_base"])


def fan(width: int) -> dict[str, Any]:
    """prep -> up_1..up_W -> (one group: every down waits for every up) down_1..down_W."""
    return {"name": "fan", "jobs": [
        {"name": "prep", "command": "true"},
        {"name": "up_{i}", "command": "echo {i}", "depends_on": ["prep"],
         "parameters": {"i": f"1:{width}"}},
        {"name": "down_{i}", "command": "echo {i}", "depends_on_regexes": ["up_.*"],
         "parameters": {"i": f"1:{width}"}},
    ]}


async def test_diamond_graph(api: Api) -> None:
    spec = {"name": "diamond", "jobs": [
        {"name": "a", "command": "true"},
        {"name": "b_1", "command": "true", "depends_on": ["a"]},
        {"name": "b_2", "command": "true", "depends_on": ["a"]},
        {"name": "d", "command": "true", "depends_on": ["b_1", "b_2"]},
    ]}
    wf, base = await create(api, spec)
    dag = await api.ok("GET", f"/workflows/{wf}/dag")
    assert dag["mode"] == "graph" and dag["num_jobs"] == 4 and dag["num_edges"] == 4
    ids = {n["name"]: n["id"] for n in dag["nodes"]}
    assert dag["nodes"] == [
        {"id": f"j{base}", "kind": "job", "job_id": base, "name": "a", "status": "ready",
         "group": "a"},
        {"id": f"j{base + 1}", "kind": "job", "job_id": base + 1, "name": "b_1",
         "status": "blocked", "group": "b_{}"},
        {"id": f"j{base + 2}", "kind": "job", "job_id": base + 2, "name": "b_2",
         "status": "blocked", "group": "b_{}"},
        {"id": f"j{base + 3}", "kind": "job", "job_id": base + 3, "name": "d",
         "status": "blocked", "group": "d"},
    ]
    assert sorted(map(tuple, dag["edges"])) == sorted([
        (ids["a"], ids["b_1"]), (ids["a"], ids["b_2"]), (ids["b_1"], ids["d"]),
        (ids["b_2"], ids["d"])])
    # Statuses are the engine's at the time of the request.
    await api.ok("POST", f"/workflows/{wf}/jobs/{base + 3}/disable")
    dag = await api.ok("GET", f"/workflows/{wf}/dag")
    assert [n["status"] for n in dag["nodes"]] == ["ready", "blocked", "blocked", "disabled"]


async def test_barrier_is_one_node(api: Api) -> None:
    width = 8
    assert width * width >= DEFAULT_BARRIER_THRESHOLD  # the group goes through a barrier
    wf, _ = await create(api, fan(width))
    dag = await api.ok("GET", f"/workflows/{wf}/dag")
    assert dag["mode"] == "graph" and dag["num_jobs"] == 1 + 2 * width
    barriers = [n for n in dag["nodes"] if n["kind"] == "barrier"]
    assert barriers == [{"id": "b0", "kind": "barrier", "job_id": None,
                         "name": f"barrier 0: {width} upstream, {width} downstream",
                         "status": None, "group": ""}]
    by_name = {n["name"]: n for n in dag["nodes"] if n["kind"] == "job"}
    ups = {by_name[f"up_{i}"]["id"] for i in range(1, width + 1)}
    downs = {by_name[f"down_{i}"]["id"] for i in range(1, width + 1)}
    assert {by_name[f"up_{i}"]["group"] for i in range(1, width + 1)} == {"up_{}"}
    edges = {tuple(e) for e in dag["edges"]}
    assert len(edges) == len(dag["edges"]) == dag["num_edges"] == 3 * width  # not width**2
    assert edges == ({(by_name["prep"]["id"], u) for u in ups} | {(u, "b0") for u in ups}
                     | {("b0", d) for d in downs})


async def test_summary_above_max_nodes(api: Api) -> None:
    width = 8
    wf, base = await create(api, fan(width))
    await api.ok("POST", f"/workflows/{wf}/jobs/{base + 1 + width}/disable")  # down_1
    dag = await api.ok("GET", f"/workflows/{wf}/dag?max_nodes=5")
    assert dag == {
        "mode": "summary", "num_jobs": 17, "num_edges": 3 * width, "num_patterns": 3,
        "truncated": False,
        "groups": [
            {"pattern": "prep", "count": 1, "counts": {"ready": 1}},
            {"pattern": "up_{}", "count": width, "counts": {"blocked": width}},
            {"pattern": "down_{}", "count": width,
             "counts": {"blocked": width - 1, "disabled": 1}},
        ],
        # as written: every down waits for every up (through the barrier)
        "edges": [["up_{}", "down_{}", width * width], ["prep", "up_{}", width]],
    }
    # The bound is on jobs: exactly max_nodes is still a graph.
    assert (await api.ok("GET", f"/workflows/{wf}/dag?max_nodes=17"))["mode"] == "graph"
    assert (await api.ok("GET", f"/workflows/{wf}/dag?max_nodes=16"))["mode"] == "summary"
    assert (await api.ok("GET", f"/workflows/{wf}/dag?max_nodes=0"))["mode"] == "summary"


def test_summary_lumps_patterns_beyond_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """More patterns than the bound: the largest are kept, the rest are one "(other)" group
    whose counts and edges add up."""
    import torc_net.api_dag as api_dag

    monkeypatch.setattr(api_dag, "MAX_PATTERNS", 3)
    # a0 a1 a2 (pattern a{}), b0 b1 (b{}), c, d, e; edges a0->c, c->d, d->e, b0->a1
    names = ["a0", "a1", "a2", "b0", "b1", "c", "d", "e"]
    edges = [(0, 5), (5, 6), (6, 7), (3, 1)]
    ptr = [0] * (len(names) + 1)
    for u, _ in edges:
        ptr[u + 1] += 1
    for i in range(len(names)):
        ptr[i + 1] += ptr[i]
    idx = [v for _, v in sorted(edges)]
    statuses = bytes([2] * len(names))  # ready
    out = summary_answer(names, len(names), statuses, ptr, idx, len(names))
    assert out["truncated"] is True and out["num_patterns"] == 5
    assert [(g["pattern"], g["count"]) for g in out["groups"]] == [
        ("a{}", 3), ("b{}", 2), (OTHER, 3)]
    assert sorted(map(tuple, out["edges"])) == sorted([
        ("a{}", OTHER, 1), (OTHER, OTHER, 2), ("b{}", "a{}", 1)])


async def test_bad_max_nodes(api: Api) -> None:
    wf, _ = await create(api, fan(2))
    for value in ("abc", "-1", str(MAX_NODES + 1), "1.5"):
        reply = await api.get(f"/workflows/{wf}/dag?max_nodes={value}")
        assert reply.status == 400, (value, reply.body)
        assert "max_nodes" in reply.body["detail"]
    assert (await api.ok("GET", f"/workflows/{wf}/dag?max_nodes={MAX_NODES}"))["mode"] == \
        "graph"
    reply = await api.get(f"/workflows/{wf + 100}/dag")
    assert reply.status == 404


async def test_visibility(start_inprocess: StartFn, tmp_path: Path) -> None:
    users = tmp_path / "htpasswd"
    add_user(users, "alice", "apw", rounds=4)
    add_user(users, "bob", "bpw", rounds=4)
    server = await start_inprocess(auth_file=str(users))
    base = f"http://127.0.0.1:{server.port}/torc-service/v1"
    alice = HttpConnectionPool(base, auth=("alice", "apw"))
    bob = HttpConnectionPool(base, auth=("bob", "bpw"))
    anon = HttpConnectionPool(base)

    async def get(client: HttpConnectionPool, path: str) -> tuple[int, Any]:
        with trio.fail_after(30):
            resp = await client.request("GET", path)
        return resp.status, json.loads(resp.body)

    try:
        with trio.fail_after(30):
            resp = await alice.request("POST", "/workflows", json_body={"spec": fan(2)})
        assert resp.status == 201, resp.body
        wf = json.loads(resp.body)["id"]
        status, dag = await get(alice, f"/workflows/{wf}/dag")
        assert status == 200 and dag["num_jobs"] == 5
        for client, expected in ((bob, 403), (anon, 401)):
            for path in (f"/workflows/{wf}/dag", f"/workflows/{wf}/dag?max_nodes=1",
                         f"/workflows/{wf}/dag?max_nodes=-1", f"/workflows/{wf}"):
                status, body = await get(client, path)
                assert status == expected, (path, body)
    finally:
        for client in (alice, bob, anon):
            await client.aclose()
