"""`torc-trio access-groups ...` end to end: the real command against a real server with an
htpasswd file (root its admin), Torc's tutorial in miniature."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import ServerProcess, clean_env, torc

from torc_net.htpasswd_cli import add_user

USERS = ("alice", "bob", "carol", "dave", "root")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    htpasswd = tmp_path / "htpasswd"
    for user in USERS:
        add_user(htpasswd, user, f"{user}-pw", rounds=4)
    db = tmp_path / "torc.db"
    srv = ServerProcess(db, cwd=tmp_path, flags=[
        "--database", str(db), "--host", "127.0.0.1", "--port", "0",
        "--auth-file", str(htpasswd), "--admin-user", "root"])
    try:
        yield srv
    finally:
        srv.stop()


def _as(server: ServerProcess, tmp_path: Path, user: str, *args: str) \
        -> subprocess.CompletedProcess[str]:
    env = clean_env(TORC_API_URL=server.url, TORC_USERNAME=user, TORC_PASSWORD=f"{user}-pw")
    return torc(tmp_path, *args, env=env)


def _ok(server: ServerProcess, tmp_path: Path, user: str, *args: str) -> str:
    proc = _as(server, tmp_path, user, *args)
    assert proc.returncode == 0, f"{user} {args}: exit {proc.returncode}\n{proc.stderr}"
    return proc.stdout


def _json(server: ServerProcess, tmp_path: Path, user: str, *args: str) -> Any:
    return json.loads(_ok(server, tmp_path, user, "-f", "json", *args))


def _refused(server: ServerProcess, tmp_path: Path, user: str, *args: str) -> str:
    """The command failed with one line on stderr (the server's refusal); that line."""
    proc = _as(server, tmp_path, user, *args)
    assert proc.returncode != 0, f"{user} {args} succeeded: {proc.stdout}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_share_a_workflow_with_a_team(tmp_path: Path, server: ServerProcess) -> None:
    # root (a server admin) creates the team's group; -f json gives the server's object.
    group = _json(server, tmp_path, "root", "access-groups", "create", "ml-team",
                  "--description", "Machine learning team")
    assert set(group) >= {"id", "name", "description", "created_at"}
    gid = group["id"]
    out = _ok(server, tmp_path, "root", "access-groups", "create", "analytics")
    assert out.startswith("Successfully created access group:\n  ID: ")
    assert "  Name: analytics" in out
    other = int(out.split("ID: ")[1].split()[0])
    assert "409" in _refused(server, tmp_path, "root", "access-groups", "create", "ml-team")
    line = _refused(server, tmp_path, "alice", "access-groups", "create", "mine")
    assert "403" in line and "server admins" in line
    # Members: bob a member, dave the group's admin, who adds carol and removes her again.
    out = _ok(server, tmp_path, "root", "access-groups", "add-user", str(gid), "bob")
    assert f"Successfully added user bob to access group {gid} (role: member)" in out
    _ok(server, tmp_path, "root", "access-groups", "add-user", str(gid), "dave", "--role",
        "admin")
    _ok(server, tmp_path, "dave", "access-groups", "add-user", str(gid), "carol")
    assert "403" in _refused(server, tmp_path, "bob", "access-groups", "add-user", str(gid),
                             "alice")
    out = _ok(server, tmp_path, "dave", "access-groups", "remove-user", str(gid), "carol")
    assert f"Successfully removed user carol from access group {gid}" in out
    members = _json(server, tmp_path, "bob", "access-groups", "list-members", str(gid))
    assert [(m["user_name"], m["role"]) for m in members] == [("bob", "member"),
                                                               ("dave", "admin")]
    table = _ok(server, tmp_path, "root", "access-groups", "list-members", str(gid))
    assert "bob" in table and "admin" in table
    mine = _json(server, tmp_path, "bob", "access-groups", "list-user-groups", "bob")
    assert [(g["id"], g["name"], g["role"]) for g in mine] == [(gid, "ml-team", "member")]
    assert "403" in _refused(server, tmp_path, "carol", "access-groups", "list-user-groups",
                             "bob")
    assert [g["id"] for g in _json(server, tmp_path, "bob", "access-groups", "list")] == [gid]
    assert [g["id"] for g in _json(server, tmp_path, "root", "access-groups", "list")] \
        == [gid, other]
    listing = _ok(server, tmp_path, "root", "access-groups", "list")
    assert "ml-team" in listing and "Machine learning team" in listing
    got = _json(server, tmp_path, "bob", "access-groups", "get", str(gid))
    assert got == group
    assert "Name: ml-team" in _ok(server, tmp_path, "bob", "access-groups", "get", str(gid))
    assert "403" in _refused(server, tmp_path, "carol", "access-groups", "get", str(gid))
    assert "404" in _refused(server, tmp_path, "root", "access-groups", "get", "999")

    # alice's workflow, shared with the team: bob sees it, carol does not.
    (tmp_path / "wf.json").write_text(json.dumps({"name": "training", "jobs": [
        {"name": "train", "command": "true"}]}))
    wf = _json(server, tmp_path, "alice", "create", "wf.json")["id"]
    assert "403" in _refused(server, tmp_path, "bob", "workflows", "get", str(wf))
    out = _ok(server, tmp_path, "alice", "access-groups", "add-workflow", str(wf), str(gid))
    assert f"Successfully added workflow {wf} to access group {gid}" in out
    line = _refused(server, tmp_path, "bob", "access-groups", "add-workflow", str(wf),
                    str(other))
    assert "403" in line and "owner (alice)" in line
    assert [w["id"] for w in _json(server, tmp_path, "bob", "workflows", "list")] == [wf]
    assert _json(server, tmp_path, "bob", "workflows", "get", str(wf))["user"] == "alice"
    assert _json(server, tmp_path, "carol", "workflows", "list") == []
    line = _refused(server, tmp_path, "carol", "workflows", "get", str(wf))
    assert "403" in line and str(wf) in line
    shared = _json(server, tmp_path, "bob", "access-groups", "list-workflow-groups", str(wf))
    assert [g["id"] for g in shared] == [gid]
    assert "ml-team" in _ok(server, tmp_path, "alice", "access-groups",
                            "list-workflow-groups", str(wf))

    # Unsharing, removing and deleting.
    out = _ok(server, tmp_path, "alice", "access-groups", "remove-workflow", str(wf), str(gid))
    assert f"Successfully removed workflow {wf} from access group {gid}" in out
    assert "403" in _refused(server, tmp_path, "bob", "workflows", "get", str(wf))
    assert "404" in _refused(server, tmp_path, "alice", "access-groups", "remove-workflow",
                             str(wf), str(gid))
    assert "403" in _refused(server, tmp_path, "bob", "access-groups", "delete", str(gid))
    assert _json(server, tmp_path, "root", "access-groups", "delete", str(gid)) \
        == {"id": gid, "deleted": True}
    out = _ok(server, tmp_path, "root", "access-groups", "delete", str(other))
    assert f"Successfully deleted access group {other}" in out
    assert _json(server, tmp_path, "root", "access-groups", "list") == []
    assert "none" in _ok(server, tmp_path, "root", "access-groups", "list")
