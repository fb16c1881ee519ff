"""Endpoints of access groups (Torc's ``/access_groups``, ``/users/{name}/groups``,
``/workflows/{id}/access_groups`` and ``/access_check``).

Who may do what (:mod:`torc_net.access` holds the groups and the visibility rule):

* create or delete a group: server admins (``serve --admin-user``);
* add or remove a group's members: its members of role ``admin``, and server admins;
* see a group and its members: its members (either role) and server admins;
* list groups: server admins all, anyone else their own (an anonymous request: none);
* a user's groups, and whether a user may see a workflow: that user and server admins;
* share a workflow with a group or stop sharing it: the workflow's owner and server admins
  (a member who sees it through a group may not pass it on);
* a workflow's groups: whoever may see the workflow.

On a server without an auth file everyone may do everything (as everyone sees everything
there). Elsewhere an anonymous request gets a 401 wherever credentials would help.

Every change: checked in full, then written in a store transaction of its own, then applied in
memory, all under the groups' lock (so that checks and writes of two changes never interleave);
the answer is sent once the write committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .access import AccessGroups, Group
from .api_workflows import Endpoint
from .service import Answer, Call, Service
from .state import Principal, WorkflowState
from .store import access as sql
from .validate import ApiError, not_found, page_args


def _server_admin(who: Principal) -> bool:
    """Server admins, and everyone on a server without an auth file."""
    return who.admin or who.mode == "open"


def _refuse(who: Principal, detail: str) -> ApiError:
    """The refusal of a request ``who`` may not make: 401 if credentials might help."""
    if not who.authenticated:
        return ApiError(401, "unauthorized", f"{detail}: send credentials",
                        {"WWW-Authenticate": 'Basic realm="torc"'})
    return ApiError(403, "forbidden", f"{detail}; {who.name} may not")


def _group(access: AccessGroups, group_id: int) -> Group:
    group = access.groups.get(group_id)
    if group is None:
        raise not_found(f"no access group {group_id}")
    return group


def _page(c: Call, items: Sequence[Any], to_json: Any) -> dict[str, Any]:
    offset, limit = page_args(c.args, 100)
    return {"items": [to_json(x) for x in items[offset : offset + limit]],
            "total": len(items), "offset": offset, "limit": limit}


def _membership(group_id: int, user: str, role: str, created_at: float) -> dict[str, Any]:
    return {"group_id": group_id, "user_name": user, "role": role, "created_at": created_at}


def _groups(access: AccessGroups, ids: Iterable[int]) -> list[Group]:
    return [access.groups[g] for g in sorted(ids)]


# ---------------------------------------------------------------------------------------------
# Groups


async def create_access_group(s: Service, c: Call) -> dict[str, Any]:
    who = c.who
    name: str = c.body["name"]
    description: str | None = c.body["description"]
    access = s.access
    if not _server_admin(who):
        raise _refuse(who, "creating an access group is for server admins (serve --admin-user)")
    async with access.lock:
        if name in access.by_name:
            raise ApiError(409, "conflict", f"name: an access group named {name!r} exists "
                           f"already (id {access.by_name[name]})")
        now = s.clock()
        group_id = await s.store.write(lambda conn: sql.insert_group(conn, name, description,
                                                                     now))
        group = Group(group_id, name, description, now)
        access.add_group(group)
    return group.to_json()


async def list_access_groups(s: Service, c: Call) -> dict[str, Any]:
    access, who = s.access, c.who
    if _server_admin(who):
        groups = list(access.groups.values())
    else:
        groups = _groups(access, access.user_groups.get(who.name or "", ()))
    return _page(c, groups, Group.to_json)


def _readable_group(s: Service, c: Call) -> Group:
    """The path's group, if the caller is one of its members or a server admin."""
    group = _group(s.access, c.path["group_id"])
    if not _server_admin(c.who) and s.access.role(group.id, c.who.name) is None:
        raise _refuse(c.who, f"access group {group.id} is visible to its members and server "
                             "admins")
    return group


async def get_access_group(s: Service, c: Call) -> dict[str, Any]:
    return _readable_group(s, c).to_json()


async def delete_access_group(s: Service, c: Call) -> dict[str, Any]:
    who, access = c.who, s.access
    async with access.lock:
        group = _group(access, c.path["group_id"])
        if not _server_admin(who):
            raise _refuse(who, "deleting an access group is for server admins "
                               "(serve --admin-user)")
        await s.store.write(lambda conn: sql.delete_group(conn, group.id))
        access.remove_group(group.id)
    s.access_changed()
    return {"id": group.id, "deleted": True}


# ---------------------------------------------------------------------------------------------
# Members


def _check_member_admin(s: Service, who: Principal, group: Group) -> None:
    if not _server_admin(who) and s.access.role(group.id, who.name) != "admin":
        raise _refuse(who, f"the members of access group {group.id} are changed by its "
                           "admins (role admin) and server admins")


async def add_user_to_group(s: Service, c: Call) -> dict[str, Any] | Answer:
    """Add a member, or set the role of one (idempotent): 201 when added, 200 otherwise."""
    user: str = c.body["user_name"]
    role: str = c.body["role"]
    access = s.access
    async with access.lock:
        group = _group(access, c.path["group_id"])
        _check_member_admin(s, c.who, group)
        old = access.members[group.id].get(user)
        if old is not None and old[0] == role:
            return Answer(200, _membership(group.id, user, *old))
        now = s.clock()
        await s.store.write(lambda conn: sql.set_member(conn, group.id, user, role, now))
        access.set_member(group.id, user, role, now)
        answer = _membership(group.id, user, *access.members[group.id][user])
    return answer if old is None else Answer(200, answer)


async def remove_user_from_group(s: Service, c: Call) -> dict[str, Any]:
    user: str = c.path["user_name"]
    access = s.access
    async with access.lock:
        group = _group(access, c.path["group_id"])
        _check_member_admin(s, c.who, group)
        found = access.members[group.id].get(user)
        if found is None:
            raise not_found(f"{user} is not a member of access group {group.id}")
        await s.store.write(lambda conn: sql.remove_member(conn, group.id, user))
        access.remove_member(group.id, user)
    s.access_changed()
    return _membership(group.id, user, *found)


async def list_group_members(s: Service, c: Call) -> dict[str, Any]:
    group = _readable_group(s, c)
    members = sorted(s.access.members[group.id].items())
    return _page(c, members, lambda m: _membership(group.id, m[0], *m[1]))


async def list_user_groups(s: Service, c: Call) -> dict[str, Any]:
    user: str = c.path["user_name"]
    who, access = c.who, s.access
    if not _server_admin(who) and who.name != user:
        raise _refuse(who, f"the groups of {user} are visible to {user} and server admins")

    def item(group: Group) -> dict[str, Any]:
        return {**group.to_json(), "role": access.members[group.id][user][0]}

    return _page(c, _groups(access, access.user_groups.get(user, ())), item)


# ---------------------------------------------------------------------------------------------
# Workflows


def _owned(s: Service, c: Call) -> WorkflowState:
    """The path's workflow, if the caller may change whom it is shared with."""
    who = c.who
    wf = s.workflow(c.path["workflow_id"], who)
    if not _server_admin(who) and (who.name is None or who.name != wf.user):
        owner = "no one" if wf.user is None else wf.user
        raise _refuse(who, f"workflow {wf.id} is shared by its owner ({owner}) and server "
                           "admins")
    return wf


async def add_workflow_to_group(s: Service, c: Call) -> dict[str, Any] | Answer:
    """Share (idempotent): 201 when new, 200 if it was shared already."""
    access = s.access
    async with access.lock:
        wf = _owned(s, c)
        group = _group(access, c.path["group_id"])
        shared = access.workflow_groups.get(wf.id, {}).get(group.id)
        if shared is not None:
            return Answer(200, {"workflow_id": wf.id, "group_id": group.id,
                                "created_at": shared})
        now = s.clock()
        if not await s.store.write(lambda conn: sql.link_workflow(conn, wf.id, group.id, now)):
            raise not_found(f"no workflow {wf.id}")  # deleted while this request waited
        access.link(wf.id, group.id, now)
    return {"workflow_id": wf.id, "group_id": group.id, "created_at": now}


async def remove_workflow_from_group(s: Service, c: Call) -> dict[str, Any]:
    access = s.access
    async with access.lock:
        wf = _owned(s, c)
        group = _group(access, c.path["group_id"])
        shared = access.workflow_groups.get(wf.id, {}).get(group.id)
        if shared is None:
            raise not_found(f"workflow {wf.id} is not shared with access group {group.id}")
        await s.store.write(lambda conn: sql.unlink_workflow(conn, wf.id, group.id))
        access.unlink(wf.id, group.id)
    s.access_changed()
    return {"workflow_id": wf.id, "group_id": group.id, "created_at": shared}


async def list_workflow_groups(s: Service, c: Call) -> dict[str, Any]:
    who = c.who
    if not who.authenticated and who.mode != "open":
        raise _refuse(who, "the access groups of a workflow are shown to signed-in users")
    wf = s.workflow(c.path["workflow_id"], who)
    return _page(c, _groups(s.access, s.access.workflow_groups.get(wf.id, {})),
                 Group.to_json)


async def check_workflow_access(s: Service, c: Call) -> dict[str, Any]:
    user: str = c.path["user_name"]
    who = c.who
    if not _server_admin(who) and who.name != user:
        raise _refuse(who, f"whether {user} may see a workflow is told to {user} and server "
                           "admins")
    # Any workflow (an open principal sees all): whether it exists, not whether we see it.
    wf = s.workflow(c.path["workflow_id"], Principal(mode="open"))
    target = Principal(user, user in s.access.admins, who.mode)
    return {"workflow_id": wf.id, "user_name": user, "has_access": s.may_see(target, wf)}


ENDPOINTS: dict[str, Endpoint] = {
    "create_access_group": create_access_group,
    "list_access_groups": list_access_groups,
    "get_access_group": get_access_group,
    "delete_access_group": delete_access_group,
    "add_user_to_group": add_user_to_group,
    "remove_user_from_group": remove_user_from_group,
    "list_group_members": list_group_members,
    "list_user_groups": list_user_groups,
    "list_workflow_groups": list_workflow_groups,
    "add_workflow_to_group": add_workflow_to_group,
    "remove_workflow_from_group": remove_workflow_from_group,
    "check_workflow_access": check_workflow_access,
}
