"""`torc-trio access-groups ...`: Torc's access groups, with its command names and argument
order (docs/access-groups.md). Each command is one call of the server, which decides who may
do what; a refusal is its one-line error (403, 404, 409) and a non-zero exit."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from ..command import Command
from ..exits import EXIT_OK
from ..output import format_value, print_json
from ..session import Context
from .inspect import emit_rows

GROUP_COLUMNS = ["id", "name", "description"]
MEMBER_COLUMNS = ["user_name", "role"]

Page = Callable[[int, int], Awaitable[dict[str, Any]]]


async def _all(fetch: Page, page_size: int = 1000) -> list[dict[str, Any]]:
    """Every item of a paged list."""
    items: list[dict[str, Any]] = []
    while True:
        page = await fetch(len(items), page_size)
        items.extend(page["items"])
        if not page["items"] or len(items) >= page["total"]:
            return items


def _say(ctx: Context, answer: dict[str, Any], text: str) -> int:
    """The server's object with ``-f json``, else ``text``."""
    if ctx.json:
        print_json(answer)
    else:
        print(text)
    return EXIT_OK


def _described(group: dict[str, Any]) -> str:
    lines = [f"  ID: {group['id']}", f"  Name: {group['name']}"]
    if group.get("description"):
        lines.append(f"  Description: {group['description']}")
    return "\n".join(lines)


async def cmd_create(ctx: Context) -> int:
    group = await ctx.client.create_access_group(ctx.args.name, ctx.args.description)
    return _say(ctx, group, "Successfully created access group:\n" + _described(group))


async def cmd_list(ctx: Context) -> int:
    rows = await _all(lambda o, n: ctx.client.list_access_groups(o, n))
    emit_rows(ctx, rows, GROUP_COLUMNS, "Access groups")
    return EXIT_OK


async def cmd_get(ctx: Context) -> int:
    group = await ctx.client.get_access_group(ctx.args.group_id)
    created = format_value("created_at", group.get("created_at"))
    return _say(ctx, group, f"Access group:\n{_described(group)}\n  Created: {created}")


async def cmd_delete(ctx: Context) -> int:
    answer = await ctx.client.delete_access_group(ctx.args.group_id)
    return _say(ctx, answer, f"Successfully deleted access group {answer['id']}")


async def cmd_add_user(ctx: Context) -> int:
    a = ctx.args
    member = await ctx.client.add_user_to_group(a.group_id, a.user_name, a.role)
    return _say(ctx, member, f"Successfully added user {member['user_name']} to access group "
                             f"{member['group_id']} (role: {member['role']})")


async def cmd_remove_user(ctx: Context) -> int:
    a = ctx.args
    member = await ctx.client.remove_user_from_group(a.group_id, a.user_name)
    return _say(ctx, member, f"Successfully removed user {member['user_name']} from access "
                             f"group {member['group_id']}")


async def cmd_list_members(ctx: Context) -> int:
    gid = ctx.args.group_id
    rows = await _all(lambda o, n: ctx.client.list_group_members(gid, o, n))
    emit_rows(ctx, rows, MEMBER_COLUMNS, f"Members of access group {gid}")
    return EXIT_OK


async def cmd_list_user_groups(ctx: Context) -> int:
    user = ctx.args.user_name
    rows = await _all(lambda o, n: ctx.client.list_user_groups(user, o, n))
    emit_rows(ctx, rows, [*GROUP_COLUMNS, "role"], f"Access groups of {user}")
    return EXIT_OK


async def cmd_add_workflow(ctx: Context) -> int:
    a = ctx.args
    link = await ctx.client.add_workflow_to_group(a.workflow_id, a.group_id)
    return _say(ctx, link, f"Successfully added workflow {link['workflow_id']} to access "
                           f"group {link['group_id']}")


async def cmd_remove_workflow(ctx: Context) -> int:
    a = ctx.args
    link = await ctx.client.remove_workflow_from_group(a.workflow_id, a.group_id)
    return _say(ctx, link, f"Successfully removed workflow {link['workflow_id']} from access "
                           f"group {link['group_id']}")


async def cmd_list_workflow_groups(ctx: Context) -> int:
    wid = ctx.args.workflow_id
    rows = await _all(lambda o, n: ctx.client.list_workflow_groups(wid, o, n))
    emit_rows(ctx, rows, GROUP_COLUMNS, f"Access groups of workflow {wid}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# Arguments


def _group_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("group_id", type=int, metavar="GROUP", help="the access group's id")


def _user(p: argparse.ArgumentParser) -> None:
    p.add_argument("user_name", metavar="USER", help="a user name (as the htpasswd file has it)")


def _workflow(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int, metavar="WORKFLOW", help="the workflow's id")


def _create_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the group's name (unique, 1 to 128 "
                                                "characters)")
    p.add_argument("--description", default=None, help="what the group is for")


def _add_user_arguments(p: argparse.ArgumentParser) -> None:
    _group_id(p)
    _user(p)
    p.add_argument("--role", choices=("member", "admin"), default="member",
                   help="member (sees the group's workflows), or admin (also adds and removes "
                        "the group's members); default member. Adding a member again sets "
                        "their role")


def _group_user_arguments(p: argparse.ArgumentParser) -> None:
    _group_id(p)
    _user(p)


def _workflow_group_arguments(p: argparse.ArgumentParser) -> None:
    _workflow(p)
    _group_id(p)


COMMANDS = [
    Command("access-groups create", "create an access group (server admins)",
            """torc-trio access-groups create ml-team --description "Machine learning team"
               torc-trio -f json access-groups create ml-team""",
            arguments=_create_arguments, run=cmd_create),
    Command("access-groups list", "list access groups (admins: all; others: their own)",
            """torc-trio access-groups list
               torc-trio -f json access-groups list""", run=cmd_list),
    Command("access-groups get", "show one access group",
            "torc-trio access-groups get 1", arguments=_group_id, run=cmd_get),
    Command("access-groups delete", "delete an access group (server admins)",
            "torc-trio access-groups delete 1", arguments=_group_id, run=cmd_delete),
    Command("access-groups add-user", "add a user to an access group, or set their role",
            """torc-trio access-groups add-user 1 alice
               torc-trio access-groups add-user 1 bob --role admin""",
            arguments=_add_user_arguments, run=cmd_add_user),
    Command("access-groups remove-user", "remove a user from an access group",
            "torc-trio access-groups remove-user 1 alice", arguments=_group_user_arguments,
            run=cmd_remove_user),
    Command("access-groups list-members", "list an access group's members and their roles",
            "torc-trio access-groups list-members 1", arguments=_group_id,
            run=cmd_list_members),
    Command("access-groups list-user-groups", "list the access groups a user is a member of",
            "torc-trio access-groups list-user-groups alice", arguments=_user,
            run=cmd_list_user_groups),
    Command("access-groups add-workflow", "share a workflow with an access group (its owner)",
            "torc-trio access-groups add-workflow 42 1", arguments=_workflow_group_arguments,
            run=cmd_add_workflow),
    Command("access-groups remove-workflow", "stop sharing a workflow with an access group",
            "torc-trio access-groups remove-workflow 42 1",
            arguments=_workflow_group_arguments, run=cmd_remove_workflow),
    Command("access-groups list-workflow-groups",
            "list the access groups a workflow is shared with",
            "torc-trio access-groups list-workflow-groups 42", arguments=_workflow,
            run=cmd_list_workflow_groups),
]
