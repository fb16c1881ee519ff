"""Access groups (torc_net.access, torc_net.api_access): members of a group a workflow is shared
with see and change it; nobody else does, on any route, in lists or in the feeds; group admins
manage members; everything survives a restart; the schema migrates from version 6."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket
from conftest import Api, simple_spec

from torc_net.htpasswd_cli import add_user
from torc_net.http import HttpConnectionPool, basic_auth_header
from torc_net.routes import ROUTES
from torc_net.server import Running
from torc_net.store import access as sql
from torc_net.store.schema import SCHEMA_VERSION, ensure_schema

StartFn = Callable[..., Awaitable[Running]]
USERS = ("alice", "bob", "carol", "dave", "erin", "root")


def _htpasswd(tmp_path: Path) -> str:
    path = tmp_path / "htpasswd"
    for user in USERS:
        add_user(path, user, f"{user}-pw", rounds=4)
    return str(path)


class Team:
    """A server with an htpasswd file (root its admin) and a client per user."""

    def __init__(self, server: Running) -> None:
        self.server = server
        self.anon = Api(server.port)
        self.users = {u: Api(server.port, auth=(u, f"{u}-pw")) for u in USERS}

    def __getattr__(self, user: str) -> Api:
        try:
            return self.users[user]
        except KeyError:
            raise AttributeError(user) from None

    async def aclose(self) -> None:
        for client in (self.anon, *self.users.values()):
            await client.aclose()

    async def stop(self) -> None:
        """Stop the server, its clients' connections closed first: the shutdown's hang-up of
        open connections (torc_net.hangup) leaves a duplicate of the database's lock file
        open in this process, which would refuse the next in-process server on it."""
        await self.aclose()
        await _stop(self.server)


@asynccontextmanager
async def team(start: StartFn, tmp_path: Path, **overrides: Any) -> AsyncIterator[Team]:
    server = await start(auth_file=_htpasswd(tmp_path), admin_users=["root"], **overrides)
    t = Team(server)
    try:
        yield t
    finally:
        await t.aclose()


async def _stop(server: Running) -> None:
    server.shutdown.set()
    with trio.fail_after(20):
        await server.stopped.wait()


async def _group(api: Api, name: str, **more: Any) -> int:
    return int((await api.ok("POST", "/access_groups", {"name": name, **more},
                             status=201))["id"])


async def _workflow(api: Api, n: int = 3, name: str = "wf") -> int:
    return int((await api.ok("POST", "/workflows", {"spec": simple_spec(n, name=name)},
                             status=201))["id"])


def _ids(page: dict[str, Any]) -> list[int]:
    return [item["id"] for item in page["items"]]


def _ws_url(port: int, wf: int | None) -> str:
    tail = "/events/ws" if wf is None else f"/workflows/{wf}/events/ws"
    return f"ws://127.0.0.1:{port}/torc-service/v1{tail}"


def _ws_auth(user: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", basic_auth_header(user, f"{user}-pw"))]


async def _recv(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(10):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def _next_about(ws: trio_websocket.WebSocketConnection, *,
                      until: int) -> list[dict[str, Any]]:
    """Every message up to and including the first one about workflow ``until``. Messages come
    in commit order: whatever was committed before a change to ``until`` arrives before it."""
    seen = []
    while True:
        message = await _recv(ws)
        seen.append(message)
        if message.get("workflow_id") == until:
            return seen


async def _feed_rejected(port: int, wf: int, user: str) -> int:
    try:
        async with trio_websocket.open_websocket_url(_ws_url(port, wf),
                                                     extra_headers=_ws_auth(user)):
            raise AssertionError(f"{user} subscribed to workflow {wf}")
    except trio_websocket.ConnectionRejected as exc:
        return int(exc.status_code)


# ---------------------------------------------------------------------------------------------
# Every workflow route, for someone who may not see the workflow


def _minimal(schema: dict[str, Any]) -> Any:
    """The smallest value ``schema`` accepts (so that a body passes its check and the request
    reaches the endpoint, whose access check is what is tested)."""
    kinds = schema.get("type")
    kind = next((k for k in ([kinds] if isinstance(kinds, str) else kinds or [])
                 if k != "null"), None)
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        props = schema.get("properties", {})
        return {k: _minimal(props[k]) for k in schema.get("required", ())}
    if kind == "array":
        return [_minimal(schema.get("items", {}))] if schema.get("minItems") else []
    if kind == "string":
        return "x" * max(1, schema.get("minLength", 0))
    if kind in ("integer", "number"):
        return max(1, schema.get("minimum", 1))
    if kind == "boolean":
        return False
    return 1


WORKFLOW_ROUTES = [r for r in ROUTES if "workflow_id" in r.path_params]


def _fill(route_path: str, values: dict[str, Any]) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), route_path)


async def test_every_workflow_route_refuses_a_non_member(start_inprocess: StartFn,
                                                         tmp_path: Path) -> None:
    """Iterates over the route table: a route added later is held to the rule too."""
    async with team(start_inprocess, tmp_path) as t:
        wf = await _workflow(t.alice)
        gid = await _group(t.root, "team")
        await t.root.ok("POST", f"/access_groups/{gid}/members", {"user_name": "bob"},
                        status=201)
        await t.alice.ok("POST", f"/workflows/{wf}/access_groups/{gid}", status=201)
        cn = (await t.alice.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "h"},
                               status=201))["id"]
        before = await t.alice.ok("GET", f"/workflows/{wf}/status")
        events_before = (await t.alice.ok("GET", f"/workflows/{wf}/events"))["total"]
        values = {"workflow_id": wf, "job_id": 1, "file_id": 1, "user_data_id": 1,
                  "compute_node_id": cn, "allocation_id": 1, "group_id": gid,
                  "user_name": "bob"}
        http_routes = [r for r in WORKFLOW_ROUTES if not r.websocket]
        assert len(http_routes) >= 40
        for route in http_routes:
            body = None if route.body is None else _minimal(route.body)
            path = _fill(route.path, values)
            for who, status in (("carol", 403), ("anon", 401)):
                client = t.anon if who == "anon" else t.users[who]
                reply = await client.request(route.method, path, body)
                assert reply.status == status, (who, route.method, path, reply.status,
                                                reply.body)
        for route in (r for r in WORKFLOW_ROUTES if r.websocket):
            assert await _feed_rejected(t.server.port, wf, "carol") == 403, route.path
        # Refused requests changed nothing.
        assert await t.alice.ok("GET", f"/workflows/{wf}/status") == before
        assert (await t.alice.ok("GET", f"/workflows/{wf}/events"))["total"] == events_before
        assert _ids(await t.alice.ok("GET", f"/workflows/{wf}/access_groups")) == [gid]
        assert [m["user_name"] for m in (await t.root.ok(
            "GET", f"/access_groups/{gid}/members"))["items"]] == ["bob"]
        assert (await t.carol.ok("GET", "/workflows"))["total"] == 0


# ---------------------------------------------------------------------------------------------
# Sharing: see, change, hear; and revocation


async def _claim_and_complete(api: Api, wf: int) -> int:
    cn = (await api.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "bobs-node"},
                       status=201))["id"]
    base = f"/workflows/{wf}/compute_nodes/{cn}"
    jobs = (await api.ok("POST", f"{base}/claim", {"limit": 10}))["jobs"]
    await api.ok("POST", f"{base}/complete", {"results": [
        {"job_id": j["id"], "attempt": j["attempt"], "run_id": j["run_id"], "return_code": 0}
        for j in jobs]})
    return len(jobs)


async def _dashboard_page(port: int, user: str, wf: int) -> int:
    """The status of the dashboard's page of workflow ``wf`` (torc_net.dash) for ``user``."""
    pool = HttpConnectionPool(f"http://127.0.0.1:{port}", auth=(user, f"{user}-pw"))
    try:
        with trio.fail_after(30):
            return (await pool.request("GET", f"/workflows/{wf}")).status
    finally:
        await pool.aclose()


async def test_members_see_change_and_hear_a_shared_workflow(start_inprocess: StartFn,
                                                             tmp_path: Path) -> None:
    async with team(start_inprocess, tmp_path) as t:
        port = t.server.port
        wf = await _workflow(t.alice, 3)
        gid = await _group(t.root, "ml-team", description="Machine learning team")
        await t.root.ok("POST", f"/access_groups/{gid}/members", {"user_name": "bob"},
                        status=201)
        # Not shared yet: bob is refused like anyone else.
        assert (await t.bob.get(f"/workflows/{wf}")).status == 403
        assert (await t.bob.ok("GET", "/workflows"))["total"] == 0
        assert (await t.bob.ok("GET", f"/access_check/{wf}/bob"))["has_access"] is False
        link = await t.alice.ok("POST", f"/workflows/{wf}/access_groups/{gid}", status=201)
        assert link["workflow_id"] == wf and link["group_id"] == gid
        assert await t.alice.ok("POST", f"/workflows/{wf}/access_groups/{gid}") == link
        # bob sees it in lists, reads it, and changes it (a runner of his, then a reset and a
        # cancel); carol sees nothing.
        assert _ids(await t.bob.ok("GET", "/workflows")) == [wf]
        assert (await t.bob.ok("GET", f"/workflows/{wf}"))["user"] == "alice"
        assert (await t.bob.ok("GET", f"/access_check/{wf}/bob"))["has_access"] is True
        assert (await t.root.ok("GET", f"/access_check/{wf}/carol"))["has_access"] is False
        assert _ids(await t.bob.ok("GET", f"/workflows/{wf}/access_groups")) == [gid]
        assert await _dashboard_page(port, "bob", wf) == 200
        assert await _dashboard_page(port, "carol", wf) == 403
        carols = await _workflow(t.carol, 1, name="carols")
        bobs = await _workflow(t.bob, 1, name="bobs")
        assert _ids(await t.carol.ok("GET", "/workflows")) == [carols]
        async with trio_websocket.open_websocket_url(
                _ws_url(port, None), extra_headers=_ws_auth("bob")) as bob_all, \
                trio_websocket.open_websocket_url(
                    _ws_url(port, wf), extra_headers=_ws_auth("bob")) as bob_one, \
                trio_websocket.open_websocket_url(
                    _ws_url(port, None), extra_headers=_ws_auth("carol")) as carol_all:
            assert {(await _recv(bob_all))["workflow_id"] for _ in range(2)} == {wf, bobs}
            assert (await _recv(bob_one))["workflow_id"] == wf
            assert (await _recv(carol_all))["workflow_id"] == carols
            assert await _claim_and_complete(t.bob, wf) == 3
            status = await t.bob.ok("POST", f"/workflows/{wf}/reset_status", {})
            assert status["counts"]["ready"] == 3
            assert (await t.bob.ok("POST", f"/workflows/{wf}/cancel"))["is_canceled"]
            heard = await _next_about(bob_all, until=wf)
            assert heard[-1]["type"] == "job_status"
            assert (await _recv(bob_one))["type"] == "job_status"
            # carol heard none of it: her own next change is the next thing she hears.
            await t.carol.ok("POST", f"/workflows/{carols}/cancel")
            assert all(m["workflow_id"] == carols
                       for m in await _next_about(carol_all, until=carols))
            # Removing bob from the group revokes everything at once (a reset is the marker
            # that what came before it was heard).
            await t.bob.ok("POST", f"/workflows/{bobs}/reset_status", {})
            await _next_about(bob_all, until=bobs)
            await t.root.ok("DELETE", f"/access_groups/{gid}/members/bob")
            with trio.fail_after(10):
                with pytest.raises(trio_websocket.ConnectionClosed):
                    while True:  # what was queued before, then the close
                        await bob_one.get_message()
            await t.alice.ok("POST", f"/workflows/{wf}/reset_status", {})
            await t.bob.ok("POST", f"/workflows/{bobs}/reset_status", {})
            assert all(m["workflow_id"] != wf
                       for m in await _next_about(bob_all, until=bobs))
        assert _ids(await t.bob.ok("GET", "/workflows")) == [bobs]
        assert (await t.bob.get(f"/workflows/{wf}")).status == 403
        assert (await t.bob.post(f"/workflows/{wf}/cancel")).status == 403
        assert await _feed_rejected(port, wf, "bob") == 403
        assert await _dashboard_page(port, "bob", wf) == 403
        assert (await t.bob.ok("GET", f"/access_check/{wf}/bob"))["has_access"] is False


async def test_unsharing_and_deleting_revoke(start_inprocess: StartFn, tmp_path: Path) -> None:
    async with team(start_inprocess, tmp_path) as t:
        wf = await _workflow(t.alice)
        g1, g2 = await _group(t.root, "one"), await _group(t.root, "two")
        for gid, user in ((g1, "bob"), (g2, "carol")):
            await t.root.ok("POST", f"/access_groups/{gid}/members", {"user_name": user},
                            status=201)
            await t.alice.ok("POST", f"/workflows/{wf}/access_groups/{gid}", status=201)
        assert _ids(await t.alice.ok("GET", f"/workflows/{wf}/access_groups")) == [g1, g2]
        # A member who sees it through a group may not pass it on, nor take it away.
        reply = await t.bob.post(f"/workflows/{wf}/access_groups/{g2}")
        assert reply.status == 403 and "owner (alice)" in reply.body["detail"]
        assert (await t.bob.request("DELETE", f"/workflows/{wf}/access_groups/{g1}")).status \
            == 403
        await t.alice.ok("DELETE", f"/workflows/{wf}/access_groups/{g1}")
        assert (await t.alice.request("DELETE", f"/workflows/{wf}/access_groups/{g1}")).status \
            == 404
        assert (await t.bob.get(f"/workflows/{wf}")).status == 403
        assert (await t.carol.ok("GET", f"/workflows/{wf}"))["id"] == wf
        # Deleting the group takes its members' access and its links with it.
        assert (await t.carol.request("DELETE", f"/access_groups/{g2}")).status == 403
        assert await t.root.ok("DELETE", f"/access_groups/{g2}") == {"id": g2, "deleted": True}
        assert (await t.carol.get(f"/workflows/{wf}")).status == 403
        assert (await t.alice.ok("GET", f"/workflows/{wf}/access_groups"))["total"] == 0
        assert (await t.root.get(f"/access_groups/{g2}")).status == 404
        assert (await t.carol.ok("GET", "/users/carol/groups"))["total"] == 0
        # Deleting a workflow takes its links with it.
        await t.alice.ok("POST", f"/workflows/{wf}/access_groups/{g1}", status=201)
        await t.root.ok("POST", f"/access_groups/{g1}/members", {"user_name": "carol"},
                        status=201)
        await t.alice.ok("DELETE", f"/workflows/{wf}")
        assert (await t.carol.get(f"/workflows/{wf}")).status == 404
        wf2 = await _workflow(t.alice)
        assert (await t.alice.ok("GET", f"/workflows/{wf2}/access_groups"))["total"] == 0
        await t.stop()
    with sqlite3.connect(tmp_path / "torc.db") as conn:
        assert conn.execute("SELECT count(*) FROM workflow_access_group").fetchone()[0] == 0
        assert conn.execute("SELECT group_id, user_name FROM user_group_membership"
                            " ORDER BY user_name").fetchall() == [(g1, "bob"), (g1, "carol")]
        assert conn.execute("SELECT id FROM access_groups").fetchall() == [(g1,)]


# ---------------------------------------------------------------------------------------------
# Managing groups


async def test_admins_and_group_admins_manage_groups(start_inprocess: StartFn,
                                                     tmp_path: Path) -> None:
    async with team(start_inprocess, tmp_path) as t:
        # Only server admins create and delete groups; anonymous requests are asked for
        # credentials and may only list (nothing).
        reply = await t.alice.post("/access_groups", {"name": "mine"})
        assert reply.status == 403 and "server admins" in reply.body["detail"]
        assert (await t.anon.post("/access_groups", {"name": "mine"})).status == 401
        gid = await _group(t.root, "ops", description="operations")
        reply = await t.root.post("/access_groups", {"name": "ops"})
        assert reply.status == 409 and "'ops'" in reply.body["detail"]
        for bad, field in (({"name": ""}, "name"), ({"name": "x" * 129}, "name"),
                           ({"name": "a\nb"}, "name")):
            reply = await t.root.post("/access_groups", bad)
            assert reply.status == 400 and reply.body["detail"].startswith(field), reply.body
        assert (await t.anon.ok("GET", "/access_groups"))["total"] == 0
        assert (await t.anon.get(f"/access_groups/{gid}")).status == 401
        # root makes dave the group's admin; dave manages its members, erin (a member)
        # cannot.
        await t.root.ok("POST", f"/access_groups/{gid}/members",
                        {"user_name": "dave", "role": "admin"}, status=201)
        member = await t.dave.ok("POST", f"/access_groups/{gid}/members",
                                 {"user_name": "erin"}, status=201)
        assert member["role"] == "member" and member["group_id"] == gid
        again = await t.dave.ok("POST", f"/access_groups/{gid}/members", {"user_name": "erin"})
        assert again == member  # idempotent: 200, nothing changed
        members_before = await t.root.ok("GET", f"/access_groups/{gid}/members")
        for method, path, body in (
                ("POST", f"/access_groups/{gid}/members", {"user_name": "carol"}),
                ("POST", f"/access_groups/{gid}/members", {"user_name": "erin",
                                                           "role": "admin"}),
                ("DELETE", f"/access_groups/{gid}/members/dave", None),
                ("DELETE", f"/access_groups/{gid}", None)):
            reply = await t.erin.request(method, path, body)
            assert reply.status == 403, (method, path, reply.body)
        reply = await t.carol.request("POST", f"/access_groups/{gid}/members",
                                      {"user_name": "carol"})
        assert reply.status == 403
        assert await t.root.ok("GET", f"/access_groups/{gid}/members") == members_before
        # Bad user names: 400 naming where.
        reply = await t.dave.post(f"/access_groups/{gid}/members", {"user_name": "a:b"})
        assert reply.status == 400 and reply.body["detail"].startswith("user_name"), reply.body
        reply = await t.dave.request("DELETE", f"/access_groups/{gid}/members/a%01b")
        assert reply.status == 400
        assert reply.body["detail"].startswith("path parameter user_name"), reply.body
        reply = await t.dave.request("DELETE", f"/access_groups/{gid}/members/{'x' * 129}")
        assert reply.status == 400 and "128" in reply.body["detail"]
        assert (await t.dave.request("DELETE", f"/access_groups/{gid}/members/nobody")).status \
            == 404
        # Re-adding sets the role.
        promoted = await t.dave.ok("POST", f"/access_groups/{gid}/members",
                                   {"user_name": "erin", "role": "admin"})
        assert promoted["role"] == "admin" and promoted["created_at"] == member["created_at"]
        await t.erin.ok("POST", f"/access_groups/{gid}/members", {"user_name": "carol"},
                        status=201)
        await t.erin.ok("DELETE", f"/access_groups/{gid}/members/carol")
        # Who sees what of groups.
        other = await _group(t.root, "other")
        assert _ids(await t.root.ok("GET", "/access_groups")) == [gid, other]
        assert _ids(await t.erin.ok("GET", "/access_groups")) == [gid]
        assert (await t.alice.ok("GET", "/access_groups"))["total"] == 0
        assert (await t.erin.ok("GET", f"/access_groups/{gid}"))["description"] == "operations"
        assert (await t.alice.get(f"/access_groups/{gid}")).status == 403
        assert (await t.alice.get(f"/access_groups/{gid}/members")).status == 403
        assert (await t.root.get("/access_groups/999")).status == 404
        mine = await t.erin.ok("GET", "/users/erin/groups")
        assert [(g["id"], g["role"]) for g in mine["items"]] == [(gid, "admin")]
        assert (await t.alice.get("/users/erin/groups")).status == 403
        assert (await t.anon.get("/users/erin/groups")).status == 401
        assert (await t.root.ok("GET", "/users/erin/groups"))["total"] == 1
        page = await t.root.ok("GET", f"/access_groups/{gid}/members?limit=1&offset=1")
        assert page["total"] == 2 and [m["user_name"] for m in page["items"]] == ["erin"]
        # Whether a user may see a workflow: asked by them or an admin.
        wf = await _workflow(t.alice)
        assert (await t.erin.get(f"/access_check/{wf}/alice")).status == 403
        assert (await t.root.ok("GET", f"/access_check/{wf}/alice"))["has_access"] is True
        assert (await t.root.ok("GET", f"/access_check/{wf}/root"))["has_access"] is True
        assert (await t.root.get(f"/access_check/{wf + 100}/alice")).status == 404
        await t.root.ok("DELETE", f"/access_groups/{gid}")
        assert (await t.erin.ok("GET", "/access_groups"))["total"] == 0


async def test_an_open_server_lets_everyone_manage_groups(server: Running, api: Api) -> None:
    """Without an auth file everyone sees everything, and may do everything with groups."""
    gid = await _group(api, "open")
    await api.ok("POST", f"/access_groups/{gid}/members", {"user_name": "x"}, status=201)
    wf = await _workflow(api)
    await api.ok("POST", f"/workflows/{wf}/access_groups/{gid}", status=201)
    assert (await api.ok("GET", f"/access_check/{wf}/nobody"))["has_access"] is True
    await api.ok("DELETE", f"/access_groups/{gid}")


async def test_required_auth_shares_an_ownerless_workflow(start_inprocess: StartFn,
                                                          tmp_path: Path) -> None:
    """Under --require-auth an owner-less workflow is the admins' only; an admin may share it
    (its owner is no one: only admins may)."""
    db = str(tmp_path / "old.db")
    server = await start_inprocess(database=db)
    anon = Api(server.port)
    old = await _workflow(anon)
    await anon.aclose()
    await _stop(server)
    async with team(start_inprocess, tmp_path, database=db, require_auth=True) as t:
        gid = await _group(t.root, "heirs")
        await t.root.ok("POST", f"/access_groups/{gid}/members", {"user_name": "bob"},
                        status=201)
        assert (await t.bob.get(f"/workflows/{old}")).status == 403
        assert (await t.bob.post(f"/workflows/{old}/access_groups/{gid}")).status == 403
        await t.root.ok("POST", f"/workflows/{old}/access_groups/{gid}", status=201)
        assert (await t.bob.ok("GET", f"/workflows/{old}"))["id"] == old
        assert (await t.alice.get(f"/workflows/{old}")).status == 403


# ---------------------------------------------------------------------------------------------
# Durability


async def test_groups_survive_a_restart_and_ids_are_never_reused(start_inprocess: StartFn,
                                                                  tmp_path: Path) -> None:
    async with team(start_inprocess, tmp_path) as t:
        wf = await _workflow(t.alice)
        g1 = await _group(t.root, "kept", description="stays")
        g2 = await _group(t.root, "gone")
        await t.root.ok("POST", f"/access_groups/{g1}/members",
                        {"user_name": "bob", "role": "admin"}, status=201)
        await t.alice.ok("POST", f"/workflows/{wf}/access_groups/{g1}", status=201)
        await t.root.ok("DELETE", f"/access_groups/{g2}")
        groups = await t.root.ok("GET", "/access_groups")
        await t.stop()
    async with team(start_inprocess, tmp_path) as t:
        assert await t.root.ok("GET", "/access_groups") == groups
        assert (await t.bob.ok("GET", f"/workflows/{wf}"))["id"] == wf
        members = (await t.bob.ok("GET", f"/access_groups/{g1}/members"))["items"]
        assert [(m["user_name"], m["role"]) for m in members] == [("bob", "admin")]
        assert (await t.carol.get(f"/workflows/{wf}")).status == 403
        assert await _group(t.root, "new") == g2 + 1  # g2's id is not handed out again


async def test_a_version_6_database_is_migrated(start_inprocess: StartFn,
                                                tmp_path: Path) -> None:
    server = await start_inprocess(auth_file=_htpasswd(tmp_path))
    alice = Api(server.port, auth=("alice", "alice-pw"))
    wf = await _workflow(alice)
    await alice.aclose()
    await _stop(server)
    db = tmp_path / "torc.db"
    with sqlite3.connect(db) as conn:  # as version 6 left it: no access-group tables
        for table in ("access_groups", "user_group_membership", "workflow_access_group"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("UPDATE meta SET value='6' WHERE key='schema_version'")
    async with team(start_inprocess, tmp_path) as t:
        assert (await t.alice.ok("GET", f"/workflows/{wf}"))["user"] == "alice"
        assert (await t.root.ok("GET", "/access_groups"))["total"] == 0
        gid = await _group(t.root, "after")
        await t.root.ok("POST", f"/access_groups/{gid}/members", {"user_name": "bob"},
                        status=201)
        await t.alice.ok("POST", f"/workflows/{wf}/access_groups/{gid}", status=201)
        assert (await t.bob.ok("GET", f"/workflows/{wf}"))["id"] == wf
        await t.stop()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] \
            == str(SCHEMA_VERSION) == "8"


def test_a_link_to_a_deleted_workflow_is_not_written(tmp_path: Path) -> None:
    """The link's insert checks, in its own transaction, that the workflow is still there: a
    delete committed while the request waited leaves no orphan."""
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    ensure_schema(conn, "t.db")
    gid = sql.insert_group(conn, "g", None, 0.0)
    assert sql.link_workflow(conn, 42, gid, 0.0) is False
    assert conn.execute("SELECT count(*) FROM workflow_access_group").fetchone()[0] == 0
    conn.close()
