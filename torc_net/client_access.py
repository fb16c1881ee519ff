"""The access-group calls of :class:`~torc_net.client.TorcClient` (a mixin it inherits), with
Torc's method names. Routes and rules: docs/api.md, "Access groups"."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote


def _path(*parts: object) -> str:
    return "/" + "/".join(quote(str(p), safe="") for p in parts)


class AccessGroupsClient:
    """Needs the :meth:`call` of :class:`~torc_net.client.TorcClient`. The ``list_*`` methods
    answer one page (``{"items", "total", "offset", "limit"}``)."""

    async def call(self, method: str, path: str, json: Any = None, *, retry: bool = True,
                   params: Mapping[str, Any] | None = None) -> Any:
        raise NotImplementedError  # TorcClient's

    async def create_access_group(self, name: str,
                                  description: str | None = None) -> dict[str, Any]:
        """Not retried on a lost answer: the retry would find the name taken (409)."""
        return await self.call(  # type: ignore[no-any-return]
            "POST", "/access_groups", {"name": name, "description": description}, retry=False)

    async def list_access_groups(self, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "GET", "/access_groups", params={"offset": offset, "limit": limit})

    async def get_access_group(self, group_id: int) -> dict[str, Any]:
        return await self.call("GET", _path("access_groups", group_id))  # type: ignore[no-any-return]

    async def delete_access_group(self, group_id: int) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "DELETE", _path("access_groups", group_id))

    async def add_user_to_group(self, group_id: int, user_name: str,
                                role: str = "member") -> dict[str, Any]:
        """Add a member, or set their role."""
        return await self.call(  # type: ignore[no-any-return]
            "POST", _path("access_groups", group_id, "members"),
            {"user_name": user_name, "role": role})

    async def remove_user_from_group(self, group_id: int, user_name: str) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "DELETE", _path("access_groups", group_id, "members", user_name))

    async def list_group_members(self, group_id: int, offset: int = 0,
                                 limit: int = 100) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "GET", _path("access_groups", group_id, "members"),
            params={"offset": offset, "limit": limit})

    async def list_user_groups(self, user_name: str, offset: int = 0,
                               limit: int = 100) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "GET", _path("users", user_name, "groups"),
            params={"offset": offset, "limit": limit})

    async def add_workflow_to_group(self, workflow_id: int, group_id: int) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "POST", _path("workflows", workflow_id, "access_groups", group_id), {})

    async def remove_workflow_from_group(self, workflow_id: int,
                                         group_id: int) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "DELETE", _path("workflows", workflow_id, "access_groups", group_id))

    async def list_workflow_groups(self, workflow_id: int, offset: int = 0,
                                   limit: int = 100) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "GET", _path("workflows", workflow_id, "access_groups"),
            params={"offset": offset, "limit": limit})

    async def check_workflow_access(self, workflow_id: int, user_name: str) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "GET", _path("access_check", workflow_id, user_name))
