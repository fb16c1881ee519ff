"""Access groups: who, besides its owner and the admins, may see and change a workflow.

Theory of operation
-------------------
A group has members, each a ``member`` or an ``admin`` of it, and workflows shared with it.
The rule, in one place (:meth:`AccessGroups.may_see`): a workflow is visible to — and may be
changed by — whoever :meth:`Principal.may_see <torc_net.state.Principal.may_see>` lets see it
(its owner, the server's admins, everyone on an open server, owner-less workflows as the mode
says) **and** to every member, of either role, of any group it is shared with. The service
applies it to every workflow route (:meth:`Service.workflow <torc_net.service.Service.workflow>`),
to lists (:meth:`Service.visible <torc_net.service.Service.visible>`), and to the feed, whose
subscribers ask it on every publish: a member removed from a group stops hearing at once.

Hot path. Every runner request looks its workflow up through the rule, so the owner check comes
first and the groups are looked at only when it fails: two dict lookups and a set
intersection, in memory (no database read per request). Everything is held here:
``groups``, each group's ``members`` (user -> role), the user -> groups index and the links
both ways.

Changes (:mod:`torc_net.api_access`) are rare: each is validated, written in a store
transaction of its own (:mod:`torc_net.store.access`), and only then applied here, all under
:attr:`AccessGroups.lock`, so that no other group change interleaves between the check and
the write, and memory is never ahead of the disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio

from .state import Principal
from .store.access import StoredAccess

#: The roles a member may have in a group: an ``admin`` of it may also add and remove its
#: members.
ROLES = ("member", "admin")
#: Longest group or user name.
MAX_NAME_CHARS = 128


@dataclass(slots=True)
class Group:
    id: int
    name: str
    description: str | None
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "description": self.description,
                "created_at": self.created_at}


class AccessGroups:
    """Groups, memberships and workflow links, in memory (see the module docstring)."""

    def __init__(self) -> None:
        #: by id, in id order (ids only grow)
        self.groups: dict[int, Group] = {}
        self.by_name: dict[str, int] = {}
        #: group id -> user -> (role, created_at)
        self.members: dict[int, dict[str, tuple[str, float]]] = {}
        #: user -> the groups they are a member of
        self.user_groups: dict[str, set[int]] = {}
        #: workflow id -> group id -> created_at, and group id -> workflow ids
        self.workflow_groups: dict[int, dict[int, float]] = {}
        self.group_workflows: dict[int, set[int]] = {}
        #: the server's admins (``serve --admin-user``), for ``access_check`` of another user
        self.admins: frozenset[str] = frozenset()
        #: held from the check of a group change to its application here
        self.lock = trio.Lock()

    # -- the rule ------------------------------------------------------------------------------

    def may_see(self, who: Principal, workflow_id: int, owner: str | None) -> bool:
        if who.may_see(owner):
            return True
        name = who.name
        if name is None:
            return False
        shared = self.workflow_groups.get(workflow_id)
        if not shared:
            return False
        mine = self.user_groups.get(name)
        return mine is not None and not mine.isdisjoint(shared)

    def role(self, group_id: int, user: str | None) -> str | None:
        """``user``'s role in the group, None if not a member."""
        if user is None:
            return None
        found = self.members.get(group_id, {}).get(user)
        return None if found is None else found[0]

    # -- loading and applying committed changes ------------------------------------------------

    def load(self, stored: StoredAccess) -> None:
        """Everything the database holds (at start-up), in place of what was here."""
        for table in (self.groups, self.by_name, self.members, self.user_groups,
                      self.workflow_groups, self.group_workflows):
            table.clear()
        for gid, name, description, created_at in stored.groups:
            self.add_group(Group(gid, name, description, created_at))
        for gid, user, role, created_at in stored.members:
            if gid in self.groups:
                self.set_member(gid, user, role, created_at)
        for wf_id, gid, created_at in stored.links:
            if gid in self.groups:
                self.link(wf_id, gid, created_at)

    def add_group(self, group: Group) -> None:
        self.groups[group.id] = group
        self.by_name[group.name] = group.id
        self.members[group.id] = {}
        self.group_workflows[group.id] = set()

    def remove_group(self, group_id: int) -> None:
        group = self.groups.pop(group_id)
        del self.by_name[group.name]
        for user in self.members.pop(group_id):
            self._leave(user, group_id)
        for wf_id in self.group_workflows.pop(group_id):
            self._unlink_workflow_side(wf_id, group_id)

    def set_member(self, group_id: int, user: str, role: str, created_at: float) -> None:
        members = self.members[group_id]
        old = members.get(user)
        members[user] = (role, created_at if old is None else old[1])
        self.user_groups.setdefault(user, set()).add(group_id)

    def remove_member(self, group_id: int, user: str) -> None:
        del self.members[group_id][user]
        self._leave(user, group_id)

    def link(self, workflow_id: int, group_id: int, created_at: float) -> None:
        self.workflow_groups.setdefault(workflow_id, {})[group_id] = created_at
        self.group_workflows[group_id].add(workflow_id)

    def unlink(self, workflow_id: int, group_id: int) -> None:
        self.group_workflows[group_id].discard(workflow_id)
        self._unlink_workflow_side(workflow_id, group_id)

    def forget_workflow(self, workflow_id: int) -> None:
        """A deleted workflow's links (once its deletion is committed)."""
        for gid in self.workflow_groups.pop(workflow_id, {}):
            self.group_workflows[gid].discard(workflow_id)

    def _leave(self, user: str, group_id: int) -> None:
        groups = self.user_groups[user]
        groups.discard(group_id)
        if not groups:
            del self.user_groups[user]

    def _unlink_workflow_side(self, workflow_id: int, group_id: int) -> None:
        links = self.workflow_groups.get(workflow_id)
        if links is not None:
            links.pop(group_id, None)
            if not links:
                del self.workflow_groups[workflow_id]
