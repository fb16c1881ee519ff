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
    given: list[list[int]] | None = ctx.args.job_ids
    chosen = None if given is None else list(dict.fromkeys(j for ids in given for j in ids))
    status = await ctx.client.reset_status(
        wid, failed_only=getattr(ctx.args, "failed_only", False), job_ids=chosen)
    if ctx.json:
        print_json(status)
        return EXIT_OK
    if chosen is not None:
        reset = status.get("jobs", [])
        shown = ", ".join(map(str, reset[:_SHOWN_IDS]))
        more = f" and {len(reset) - _SHOWN_IDS} more" if len(reset) > _SHOWN_IDS else ""
        print(f"Reset {len(reset)} jobs of workflow {wid} for run {status['run_id']} "
              f"(the {len(chosen)} named and what depends on them): {shown}{more}")
    print_counts(status["counts"], title=f"Workflow {wid} after reset")
    return EXIT_OK


#: Job ids printed after a selective reset; the rest are counted (-f json has them all).
_SHOWN_IDS = 20


def job_ids_value(text: str) -> list[int]:
    """``--job-ids 3,4``: job ids, comma-separated (the option may also be repeated)."""
    ids = []
    for part in text.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected job ids like 3,4, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected job ids (1 or more), got {value}")
        ids.append(value)
    return ids


def _job_ids_option(p: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup, *,
                    required: bool = False) -> None:
    p.add_argument("--job-ids", type=job_ids_value, action="append", metavar="ID[,ID...]",
                   required=required,
                   help="reset these jobs and everything downstream of them, while the rest "
                        "of the workflow may go on running (refused, naming them, if one of "
                        "those jobs is pending or running; jobs upstream are not touched); "
                        "comma-separated, or repeat the option")


async def cmd_confirm_failed(ctx: Context) -> int:
    wid = await ctx.workflow_id()
    given: list[list[int]] | None = ctx.args.job_ids
    chosen = None if given is None else list(dict.fromkeys(j for ids in given for j in ids))
    status = await ctx.client.confirm_failed(wid, chosen)
    if ctx.json:
        print_json(status)
    else:
        print_counts(status["counts"], title=f"Workflow {wid} after confirming failures")
    return EXIT_OK


def _confirm_arguments(p: argparse.ArgumentParser) -> None:
    workflow_argument(p)
    p.add_argument("--job-ids", type=job_ids_value, action="append", metavar="ID[,ID...]",
                   help="only these held failures (default: every pending_failed job); "
                        "comma-separated, or repeat the option")


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
    choose = p.add_mutually_exclusive_group()
    choose.add_argument("--failed-only", action="store_true",
                        help="only failed, canceled and terminated jobs and what depends on "
                             "them (not with --job-ids: two ways to choose, as in Torc)")
    _job_ids_option(choose)


def _jobs_reset_arguments(p: argparse.ArgumentParser) -> None:
    workflow_argument(p)
    _job_ids_option(p, required=True)


COMMANDS = [
    Command("cancel", "cancel a workflow (and scancel its Slurm allocations)",
            """torc-trio cancel 3
               torc-trio workflows cancel 3""",
            arguments=workflow_argument, run=cmd_cancel, aliases=("workflows cancel",)),
    Command("reset-status", "put jobs back to run again (all, the failed part, or chosen jobs "
            "and what depends on them)",
            """torc-trio reset-status 3 --failed-only && torc-trio run 3
               torc-trio workflows reset-status 3
               torc-trio reset-status 3 --job-ids 41,42   # while other jobs of 3 run""",
            arguments=_reset_arguments, run=cmd_reset_status,
            aliases=("workflows reset-status",)),
    Command("jobs reset-status", "rerun chosen jobs and everything downstream of them, while "
            "the rest of the workflow may run",
            """torc-trio jobs reset-status 3 --job-ids 41,42
               torc-trio jobs reset-status 3 --job-ids 41 --job-ids 57""",
            arguments=_jobs_reset_arguments, run=cmd_reset_status,
            description="Rerun the jobs named by --job-ids and everything downstream of them "
                        "(ready, or blocked while their upstream is not done), while the rest "
                        "of the workflow may run; refused, naming them, if one of those jobs "
                        "is pending or running. Torc's `torc jobs reset-status 41 42` names "
                        "jobs alone and resets only them (its `workflows reinit` then resets "
                        "what depends on them); here the workflow comes first, the jobs follow "
                        "--job-ids, and what depends on them is reset in the same step."),
    Command("jobs confirm-failed", "decide that held failures (pending_failed) are failures",
            """torc-trio jobs confirm-failed 3
               torc-trio jobs confirm-failed 3 --job-ids 41,42
               torc-trio reset-status 3 --failed-only   # or: run them again instead""",
            arguments=_confirm_arguments, run=cmd_confirm_failed,
            description="With use_pending_failed: true a job that fails with no retry left "
                        "waits as pending_failed, its dependents blocked and the workflow not "
                        "complete, for a decision: this command makes them failures (their "
                        "dependents are then canceled or run, as cancel_on_blocking_job_failure "
                        "says); reset-status --failed-only runs them again."),
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
