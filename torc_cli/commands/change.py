"""Changing workflows: cancel, reset-status, reinitialize, initialize, delete."""

from __future__ import annotations

import argparse

from ..command import Command
from ..exits import EXIT_OK, SlurmFailure
from ..output import print_counts, print_json
from ..session import Context
from .inspect import workflow_argument
from .run import current_mtimes


async def cmd_cancel(ctx: Context) -> int:
    from .. import slurm, submit

    wid = await ctx.workflow_id()
    status = await ctx.client.cancel_workflow(wid)
    scancelled: list[str] = []
    if await ctx.client.list_allocations(wid):
        try:
            scancelled = await submit.cancel_allocations(ctx.client, wid)
        except (slurm.SlurmError, OSError) as exc:
            raise SlurmFailure(f"workflow {wid} canceled, but scancel failed: {exc}") from None
    if ctx.json:
        print_json({**status, "scancelled": scancelled})
    else:
        print(f"Canceled workflow {wid}."
              + (f" scancel: {', '.join(scancelled)}" if scancelled else ""))
    return EXIT_OK


async def cmd_reinitialize(ctx: Context) -> int:
    wid = await ctx.workflow_id()
    mtimes = await current_mtimes(ctx, wid)
    result = await ctx.client.reinitialize_workflow(wid, dry_run=ctx.args.dry_run,
                                                    file_mtimes=mtimes)
    if ctx.json:
        print_json(result)
    else:
        verb = "Would reset" if ctx.args.dry_run else "Reset"
        print(f"{verb} {len(result['jobs'])} jobs of workflow {wid} (run {result['run_id']}).")
    return EXIT_OK


async def cmd_initialize(ctx: Context) -> int:
    wid = await ctx.workflow_id()
    status = await ctx.client.call("POST", f"/workflows/{wid}/initialize", {})
    if ctx.json:
        print_json(status)
    else:
        print_counts(status["counts"], title=f"Workflow {wid} initialized")
    return EXIT_OK


async def cmd_reset_status(ctx: Context) -> int:
    wid = await ctx.workflow_id()
    status = await ctx.client.reset_status(wid, failed_only=ctx.args.failed_only)
    if ctx.json:
        print_json(status)
    else:
        print_counts(status["counts"], title=f"Workflow {wid} after reset")
    return EXIT_OK


async def cmd_delete(ctx: Context) -> int:
    wid = await ctx.workflow_id()
    result = await ctx.client.delete_workflow(wid)
    if ctx.json:
        print_json(result)
    else:
        print(f"Deleted workflow {wid}.")
    return EXIT_OK


def _dry_run_arguments(p: argparse.ArgumentParser) -> None:
    workflow_argument(p)
    p.add_argument("--dry-run", action="store_true", help="say what would be reset; change nothing")


def _reset_arguments(p: argparse.ArgumentParser) -> None:
    workflow_argument(p)
    p.add_argument("--failed-only", action="store_true",
                   help="only failed, canceled and terminated jobs and what depends on them")


COMMANDS = [
    Command("cancel", "cancel a workflow (and scancel its Slurm allocations)",
            """torc-trio cancel 3
               torc-trio workflows cancel 3""",
            arguments=workflow_argument, run=cmd_cancel, aliases=("workflows cancel",)),
    Command("reset-status", "put jobs back to run again (all, or the failed part)",
            """torc-trio reset-status 3 --failed-only && torc-trio run 3
               torc-trio workflows reset-status 3""",
            arguments=_reset_arguments, run=cmd_reset_status,
            aliases=("workflows reset-status",)),
    Command("reinitialize", "rerun the jobs whose input files changed, and everything downstream",
            """torc-trio reinitialize 3 --dry-run
               torc-trio reinitialize 3 && torc-trio run 3""",
            arguments=_dry_run_arguments, run=cmd_reinitialize,
            aliases=("workflows reinitialize",)),
    Command("workflows initialize", "initialize a workflow's uninitialized jobs",
            """torc-trio workflows initialize 3""",
            arguments=workflow_argument, run=cmd_initialize),
    Command("workflows delete", "delete a workflow and everything it holds",
            """torc-trio workflows delete 3""",
            arguments=workflow_argument, run=cmd_delete),
]
