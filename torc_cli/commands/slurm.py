"""Slurm: submit, recover, workflows sync-status, slurm sacct."""

from __future__ import annotations

import argparse
from typing import Any

from ..command import Command
from ..exits import EXIT_OK, SlurmFailure
from ..output import print_json, print_table
from ..session import Context
from .inspect import workflow_argument
from .run import _spec_from_target, _validate_for_run, is_workflow_id


async def cmd_submit(ctx: Context) -> int:
    from .. import slurm, submit

    target = ctx.args.target
    doc = ctx.args.prepared
    if doc is None:
        ctx.args.workflow_id = None if target is None else int(target)
        wid = await ctx.workflow_id()
    else:
        wid = int((await ctx.client.create_workflow(doc))["id"])
    output_dir = ctx.output_dir.resolve()
    try:
        submitted = await submit.submit(ctx.client, wid, ctx.url, output_dir,
                                        dry_run=ctx.args.dry_run)
    except (submit.SubmitError, slurm.SlurmError) as exc:
        raise SlurmFailure(str(exc)) from None
    if ctx.json:
        print_json({"workflow_id": wid, "allocations": submitted, "dry_run": ctx.args.dry_run})
    elif ctx.args.dry_run:
        for item in submitted:
            print(f"# scheduler {item['scheduler']} (action {item['action_index']})")
            print(item["script"])
    else:
        if not submitted:
            print(f"Workflow {wid}: nothing to submit (no ready jobs, no start actions).")
        for alloc in submitted:
            print(f"Workflow {wid}: submitted {submit.describe(alloc)}")
    return EXIT_OK


def prepare_submit(args: argparse.Namespace) -> dict[str, Any] | None:
    from ..exits import InputError

    if args.target is None or is_workflow_id(args.target):
        return None
    doc = _spec_from_target(args.target)
    _validate_for_run(doc)
    if args.dry_run:
        raise InputError("submit --dry-run needs an existing workflow id (create it first)")
    return doc


def _submit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", help="WORKFLOW_ID or SPEC (default: the only workflow)")
    p.add_argument("--dry-run", action="store_true", help="print the scripts, submit nothing")
    p.add_argument("-o", "--output-dir", default=argparse.SUPPRESS,
                   help="where job stdout/stderr go (default: torc_output)")


async def _orphans(ctx: Context, wid: int, *, dry_run: bool = False) \
        -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Allocations that vanished from Slurm, and the jobs their runners held (recorded as
    terminated unless ``dry_run``)."""
    from .. import slurm, submit

    try:
        gone = await submit.find_orphans(ctx.client, wid, dry_run=dry_run)
        gone_ids = {a["slurm_job_id"] for a in gone}
        if dry_run:
            jobs = await submit.orphaned_jobs(ctx.client, wid, gone_ids)
        else:
            jobs = await submit.fail_orphaned_jobs(ctx.client, wid, gone_ids)
    except (submit.SubmitError, slurm.SlurmError) as exc:
        raise SlurmFailure(str(exc)) from None
    return gone, jobs


async def cmd_recover(ctx: Context) -> int:
    from .. import slurm, submit

    wid = await ctx.workflow_id()
    gone, jobs = await _orphans(ctx, wid)
    reset: dict[str, Any] = {}
    if jobs or gone:
        reset = await ctx.client.reset_status(wid, failed_only=True)
    try:
        submitted = [] if ctx.args.no_submit else await submit.submit(
            ctx.client, wid, ctx.url, ctx.output_dir.resolve(), dry_run=False)
    except (submit.SubmitError, slurm.SlurmError) as exc:
        raise SlurmFailure(str(exc)) from None
    if ctx.json:
        print_json({"workflow_id": wid, "orphaned_allocations": gone,
                    "terminated_jobs": [j["id"] for j in jobs], "submitted": submitted,
                    "counts": reset.get("counts")})
    else:
        _print_orphans(gone, jobs)
        for alloc in submitted:
            print(f"submitted {submit.describe(alloc)}")
        if not (gone or submitted):
            print(f"Workflow {wid}: nothing to recover.")
    return EXIT_OK


def _print_orphans(gone: list[dict[str, Any]], jobs: list[dict[str, Any]],
                   verb: str = "terminated") -> None:
    from .. import submit

    for alloc in gone:
        print(f"{submit.describe(alloc)}: no longer in Slurm")
    for job in jobs:
        print(f"job {job['name']} ({job['id']}): {verb} (its allocation disappeared)")


async def cmd_sync_status(ctx: Context) -> int:
    wid = await ctx.workflow_id()
    dry_run = ctx.args.dry_run
    gone, jobs = await _orphans(ctx, wid, dry_run=dry_run)
    if ctx.json:
        print_json({"workflow_id": wid, "dry_run": dry_run, "orphaned_allocations": gone,
                    "orphaned_jobs": [j["id"] for j in jobs]})
    else:
        _print_orphans(gone, jobs, "would be terminated" if dry_run else "terminated")
        if not (gone or jobs):
            print(f"Workflow {wid}: every allocation the server knows of is still in Slurm.")
    return EXIT_OK


def _recover_arguments(p: argparse.ArgumentParser) -> None:
    workflow_argument(p)
    p.add_argument("--no-submit", action="store_true", help="do not submit new allocations")
    p.add_argument("-o", "--output-dir", default=argparse.SUPPRESS,
                   help="where job stdout/stderr go (default: torc_output)")


def _sync_arguments(p: argparse.ArgumentParser) -> None:
    workflow_argument(p)
    p.add_argument("--dry-run", action="store_true", help="say what would change; change nothing")


async def _slurm_job_ids(ctx: Context, wid: int) -> list[str]:
    """Every Slurm job the workflow's runners ran in: the allocations submitted for it, and
    the allocations runners registered from (a `run` inside an sbatch script submits none)."""
    ids = {str(a["slurm_job_id"]) for a in await ctx.client.list_allocations(wid)}
    offset = 0
    while True:
        page = await ctx.client.list_compute_nodes(wid, offset=offset)
        items = page["items"]
        ids.update(str(n["slurm_job_id"]) for n in items if n.get("slurm_job_id"))
        offset += len(items)
        if not items or offset >= int(page.get("total", offset)):
            break
    return sorted((i for i in ids if i.isdigit()), key=int)


SACCT_COLUMNS = ["step_name", "job_id", "state", "exit_code", "max_rss", "elapsed",
                 "slurm_job_id", "step"]


async def cmd_sacct(ctx: Context) -> int:
    from .. import slurm, srun

    wid = await ctx.workflow_id()
    ids = await _slurm_job_ids(ctx, wid)
    try:
        records = await slurm.sacct_steps(ids) if ids else []
    except slurm.SlurmError as exc:
        raise SlurmFailure(str(exc)) from None
    rows = srun.step_rows(records, wid)
    if ctx.json:
        print_json({"workflow_id": wid, "slurm_job_ids": ids, "steps": rows})
    elif not ids:
        print(f"Workflow {wid}: no Slurm allocations (its runners ran outside Slurm).")
    else:
        print_table(rows, SACCT_COLUMNS,
                    title=f"Workflow {wid}: job steps in Slurm jobs {', '.join(ids)}")
    return EXIT_OK


def _sacct_arguments(p: argparse.ArgumentParser) -> None:
    workflow_argument(p)


COMMANDS = [
    Command("submit", "submit Slurm allocations that run the workflow's jobs",
            """torc-trio submit 3
               torc-trio submit 3 --dry-run      # print the sbatch scripts
               torc-trio submit workflow.yaml    # create, then submit""",
            arguments=_submit_arguments, run=cmd_submit, prepare=prepare_submit, creates=True,
            aliases=("workflows submit",)),
    Command("recover",
            "find allocations that vanished, mark their jobs terminated, rerun what remains",
            """torc-trio recover 3
               torc-trio recover 3 --no-submit""",
            arguments=_recover_arguments, run=cmd_recover),
    Command("workflows sync-status",
            "find allocations that vanished from Slurm and mark their jobs terminated",
            """torc-trio workflows sync-status 3 --dry-run
               torc-trio workflows sync-status 3""",
            arguments=_sync_arguments, run=cmd_sync_status),
    Command("slurm sacct",
            "Slurm's accounting of the workflow's jobs that ran as srun steps: state, exit "
            "code, MaxRSS",
            """torc-trio slurm sacct 3
               torc-trio -f json slurm sacct 3""",
            arguments=_sacct_arguments, run=cmd_sacct,
            description="Slurm's accounting (sacct) of the workflow's jobs that ran as srun "
                        "steps (execution_config mode: slurm), one row per job attempt, named "
                        "wf<workflow>_j<job>_r<run>_a<attempt>: its state (COMPLETED, FAILED, "
                        "OUT_OF_MEMORY, TIMEOUT, CANCELLED...), exit code (EXIT:SIGNAL), "
                        "MaxRSS and elapsed time. Needs Slurm accounting (slurmdbd)."),
]
