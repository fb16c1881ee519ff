"""Authentication (htpasswd + bcrypt, HTTP Basic) and ownership (401/403, admins)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import bcrypt
import trio
import trio_websocket
from conftest import Api, basic, simple_spec

from torc_net.htpasswd_cli import add_user, list_users, remove_user
from torc_net.http import basic_auth_header
from torc_net.server import Running

StartFn = Callable[..., Awaitable[Running]]


def make_htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    add_user(path, "alice", "apw", rounds=4)
    add_user(path, "bob", "bpw", rounds=4)
    # An Apache `htpasswd -B` style entry ($2y$).
    hashed = bcrypt.hashpw(b"rpw", bcrypt.gensalt(rounds=4)).decode()
    with path.open("a") as f:
        f.write("root:$2y$" + hashed[4:] + "\n")
    return path


async def test_optional_auth_and_ownership(start_inprocess: StartFn, tmp_path: Path) -> None:
    server = await start_inprocess(auth_file=str(make_htpasswd(tmp_path)),
                                   admin_users=["root"])
    anon = Api(server.port)
    alice = Api(server.port, auth=("alice", "apw"))
    bob = Api(server.port, auth=("bob", "bpw"))
    root = Api(server.port, auth=("root", "rpw"))
    wrong = Api(server.port, auth=("alice", "nope"))
    reply = await wrong.get("/ping")
    assert reply.status == 401 and "basic" in reply.headers["www-authenticate"].lower()
    assert (await Api(server.port, auth=("mallory", "x")).get("/ping")).status == 401
    reply = await anon.request("GET", "/ping", headers=[("Authorization", "Bearer abc")])
    assert reply.status == 401
    wf = (await alice.ok("POST", "/workflows",
                         {"spec": simple_spec(2, user="someone-else")}, status=201))["id"]
    assert (await alice.ok("GET", f"/workflows/{wf}"))["user"] == "alice"
    reply = await bob.get(f"/workflows/{wf}")
    assert reply.status == 403 and reply.body["error"] == "forbidden"
    assert (await bob.post(f"/workflows/{wf}/cancel")).status == 403
    assert (await bob.ok("GET", "/workflows"))["total"] == 0
    assert (await root.ok("GET", f"/workflows/{wf}"))["id"] == wf
    assert (await root.ok("GET", "/workflows"))["total"] == 1
    # An auth file without --require-auth: an anonymous request never reads, changes or
    # deletes an owned workflow (it did, and anonymous DELETE removed alice's work) ...
    for method, path in (("GET", f"/workflows/{wf}/status"), ("GET", f"/workflows/{wf}/jobs"),
                         ("POST", f"/workflows/{wf}/cancel"), ("DELETE", f"/workflows/{wf}")):
        reply = await anon.request(method, path, {} if method == "POST" else None)
        assert reply.status == 401, (method, path, reply.body)
        assert "credentials" in reply.body["detail"]
    assert (await alice.ok("GET", f"/workflows/{wf}/status"))["counts"]["ready"] == 2
    assert (await anon.ok("GET", "/workflows"))["total"] == 0
    # ... and never acts as a named user: a spec naming alice is not alice's to create.
    reply = await anon.post("/workflows", {"spec": simple_spec(1, user="alice")})
    assert reply.status == 401 and "alice" in reply.body["detail"]
    assert (await root.ok("GET", "/workflows"))["total"] == 1
    # Anonymous work stays anonymous and visible to all; named users see theirs and it.
    shared = (await anon.ok("POST", "/workflows", {"spec": simple_spec(1)}, status=201))["id"]
    assert (await anon.ok("GET", f"/workflows/{shared}"))["user"] is None
    assert [w["id"] for w in (await bob.ok("GET", "/workflows"))["items"]] == [shared]
    assert [w["id"] for w in (await alice.ok("GET", "/workflows"))["items"]] == [wf, shared]
    # The cache answers repeated requests (and still refuses wrong passwords).
    for _ in range(3):
        assert (await alice.get("/ping")).status == 200
        assert (await wrong.get("/ping")).status == 401
    for client in (anon, alice, bob, root, wrong):
        await client.aclose()


async def test_required_auth(start_inprocess: StartFn, tmp_path: Path) -> None:
    server = await start_inprocess(auth_file=str(make_htpasswd(tmp_path)), require_auth=True)
    anon = Api(server.port)
    reply = await anon.get("/ping")
    assert reply.status == 401 and reply.body["error"] == "unauthorized"
    assert reply.headers["www-authenticate"].startswith("Basic")
    alice = Api(server.port, auth=("alice", "apw"))
    assert (await alice.get("/ping")).status == 200
    url = f"ws://127.0.0.1:{server.port}/torc-service/v1/events/ws"
    try:
        async with trio_websocket.open_websocket_url(url):
            raise AssertionError("websocket opened without credentials")
    except trio_websocket.ConnectionRejected as exc:
        assert exc.status_code == 401
    header = [(b"Authorization", basic_auth_header("alice", "apw"))]
    async with trio_websocket.open_websocket_url(url, extra_headers=header) as ws:
        # No workflows yet: nothing is sent; the connection is open.
        assert ws.closed is None
    wf = (await alice.ok("POST", "/workflows", {"spec": simple_spec(1)}, status=201))["id"]
    bob_header = [(b"Authorization", basic_auth_header("bob", "bpw"))]
    try:
        async with trio_websocket.open_websocket_url(
            f"ws://127.0.0.1:{server.port}/torc-service/v1/workflows/{wf}/events/ws",
            extra_headers=bob_header,
        ):
            raise AssertionError("bob subscribed to alice's workflow")
    except trio_websocket.ConnectionRejected as exc:
        assert exc.status_code == 403
        assert json.loads(exc.body)["error"] == "forbidden"
    reply = await anon.request("GET", "/ping", headers=basic("bob", "wrong"))
    assert reply.status == 401
    await anon.aclose()
    await alice.aclose()


async def test_ownerless_workflows_are_admins_only_under_required_auth(
        start_inprocess: StartFn, tmp_path: Path) -> None:
    """Workflows created before auth was turned on have no owner: with --require-auth only
    admins see them (they were visible to every user)."""
    db = str(tmp_path / "shared.db")
    server = await start_inprocess(database=db)
    anon = Api(server.port)
    old = (await anon.ok("POST", "/workflows", {"spec": simple_spec(1)}, status=201))["id"]
    await anon.aclose()
    server.shutdown.set()
    with trio.fail_after(10):
        await server.stopped.wait()
    server = await start_inprocess(database=db, auth_file=str(make_htpasswd(tmp_path)),
                                   require_auth=True, admin_users=["root"])
    alice = Api(server.port, auth=("alice", "apw"))
    root = Api(server.port, auth=("root", "rpw"))
    assert (await alice.ok("GET", "/workflows"))["total"] == 0
    assert (await alice.get(f"/workflows/{old}")).status == 403
    assert (await root.ok("GET", f"/workflows/{old}"))["id"] == old
    await alice.aclose()
    await root.aclose()


def test_htpasswd_cli(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    run = [sys.executable, "-m", "torc_net.htpasswd_cli"]
    out = subprocess.run([*run, "add", str(path), "carol", "--password", "c1", "--rounds", "4"],
                         capture_output=True, text=True, check=True)
    assert "added carol" in out.stdout
    subprocess.run([*run, "add", str(path), "dave", "--rounds", "4"], input="d1\n",
                   capture_output=True, text=True, check=True)
    assert list_users(path) == ["carol", "dave"]
    hashed = path.read_text().splitlines()[1].split(":", 1)[1]
    assert bcrypt.checkpw(b"d1", hashed.encode())
    listed = subprocess.run([*run, "list", str(path)], capture_output=True, text=True,
                            check=True)
    assert listed.stdout.split() == ["carol", "dave"]
    assert remove_user(path, "carol") and not remove_user(path, "carol")
    missing = subprocess.run([*run, "remove", str(path), "zed"], capture_output=True, text=True)
    assert missing.returncode == 1
