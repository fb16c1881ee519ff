"""Slurm: submit, recover, workflows sync-status, slurm sacct."""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext, redirect_stdout
from dataclasses import dataclass, field
from typing import Any

from .. import recovery_plan as plan
from ..command import Command
from ..exits import EXIT_FAILED_JOBS, EXIT_OK, InputError, SlurmFailure
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


@dataclass(slots=True)
class Recovery:
    """What one recovery did (or, dry, would do): the diagnoses, the new requirements, the
    jobs reset, and the jobs left as they are (a failure of unknown cause, likely a bug)."""

    diagnoses: list[plan.Diagnosis] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    reset: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"diagnoses": [d.to_json() for d in self.diagnoses], "changes": self.changes,
                "retried_jobs": self.retry, "skipped_jobs": self.skipped,
                "reset_jobs": self.reset}


async def recover_failures(ctx: Context, wid: int, *, lost: frozenset[int] = frozenset(),
                           dry_run: bool = False) -> Recovery:
    """Diagnose the failed and terminated jobs, raise the requirements of those that ran
    out of memory or time (one request: each change a job_resources event), and reset them
    and everything downstream (one reset event). Jobs in ``lost`` were held by an allocation
    that vanished: retried as they are. ``dry_run``: say it, change nothing. Uses ``ctx.args``'
    memory_multiplier, runtime_multiplier and retry_unknown."""
    args = ctx.args
    client = ctx.client
    failed = [j for status in plan.FAILED_STATUSES
              async for j in client.iter_jobs(wid, status=status)]
    failed.sort(key=lambda j: int(j["id"]))
    runs = {int(j["id"]): int(j["run_id"]) for j in failed}
    latest = plan.latest_per_job([r for status in plan.FAILED_STATUSES
                                  async for r in client.iter_results(wid, status=status)
                                  if runs.get(int(r["job_id"])) == int(r["run_id"])])
    out = Recovery()
    say = out.lines.append
    say("Diagnosing failures...")
    say("Applying recovery heuristics...")
    unknown = []
    for job in failed:
        jid = int(job["id"])
        if jid in lost:
            say(f"  Job {jid} ({job['name']}): its allocation vanished, retrying as it is")
            out.retry.append(jid)
            continue
        result = latest.get(jid)
        d = None if result is None else plan.diagnose(job, result)
        if d is not None:
            out.diagnoses.append(d)
        change = None if d is None else plan.recovery_change(d, args.memory_multiplier,
                                                             args.runtime_multiplier)
        if change is None and job["status"] == "terminated":
            # ended by its runner (its allocation ended or was canceled), not by a bug
            say(f"  Job {jid} ({job['name']}): terminated by its runner, retrying as it is")
            out.retry.append(jid)
            continue
        if d is None or change is None:
            unknown.append(jid)
            continue
        words = " and ".join(w for w, k in (("OOM", "memory_bytes"), ("Timeout", "runtime_s"))
                             if k in change)
        say(f"  Job {jid} ({job['name']}): {words} detected, increasing "
            f"{', '.join(plan.describe_change(job, change))}")
        out.changes.append({"job_id": jid, "job_name": job["name"], "cause": d.cause,
                            "reason": d.oom_reason or d.timeout_reason,
                            "old": {k: job[k] for k in change}, "new": change})
        out.retry.append(jid)
    if unknown and args.retry_unknown:
        say(f"  {len(unknown)} job(s) with unknown failure cause: retrying (--retry-unknown)")
        out.retry += unknown
    elif unknown:
        say(f"  {len(unknown)} job(s) with unknown failure cause (skipped, use "
            "--retry-unknown to include)")
        out.skipped = unknown
    ooms = sum(1 for c in out.changes if "memory_bytes" in c["new"])
    timeouts = sum(1 for c in out.changes if "runtime_s" in c["new"])
    say(f"  Applied fixes: {ooms} OOM, {timeouts} timeout" if not dry_run
        else f"  Would apply fixes: {ooms} OOM, {timeouts} timeout")
    out.retry.sort()
    if not out.retry:
        return out
    if dry_run:
        say(f"Would reset {len(out.retry)} job(s) and their downstream for a retry")
        return out
    if out.changes:
        await client.set_job_resources(
            wid, [{"job_id": c["job_id"], **c["new"]} for c in out.changes],
            reason="recover")
    say(f"Resetting {len(out.retry)} job(s) for retry...")
    answer = await client.reset_status(wid, job_ids=out.retry)
    out.reset = [int(j) for j in answer.get("jobs", out.retry)]
    say(f"  Reset {len(out.reset)} job(s)")
    return out


async def is_slurm_workflow(ctx: Context, wid: int) -> bool:
    """Its jobs run in Slurm allocations (submit): it has Slurm schedulers or allocations."""
    wf = await ctx.client.get_workflow(wid)
    return bool(wf.get("slurm_schedulers")) or bool(await ctx.client.list_allocations(wid))


async def rerun(ctx: Context, wid: int) -> tuple[int, list[dict[str, Any]]]:
    """Run what was reset: new allocations for a Slurm workflow (``submit``), else the jobs
    here in the foreground as ``run`` does (its exit status: 0 when every job completed)."""
    from .. import slurm, submit
    from .run import run_workflow

    if await is_slurm_workflow(ctx, wid):
        try:
            return EXIT_OK, await submit.submit(ctx.client, wid, ctx.url,
                                                ctx.output_dir.resolve(), dry_run=False,
                                                rerun=True)
        except (submit.SubmitError, slurm.SlurmError) as exc:
            raise SlurmFailure(str(exc)) from None
    # -f json: recover's own document is the one on stdout; the run's report goes to stderr
    with redirect_stdout(sys.stderr) if ctx.json else nullcontext():
        return await run_workflow(ctx, wid), []


async def active_jobs(ctx: Context, wid: int) -> int:
    counts = (await ctx.client.workflow_status(wid))["counts"]
    return int(counts.get("pending", 0)) + int(counts.get("running", 0))


async def cmd_recover(ctx: Context) -> int:
    from .. import submit

    args = ctx.args
    wid = await ctx.workflow_id()
    gone, orphaned = await _orphans(ctx, wid, dry_run=args.dry_run)
    active = await active_jobs(ctx, wid)
    if active and not args.dry_run:
        raise InputError(f"workflow {wid} has {active} job(s) pending or running: wait for "
                         f"them (torc-trio watch {wid}) or cancel it, then recover")
    out = await recover_failures(ctx, wid, lost=frozenset(int(j["id"]) for j in orphaned),
                                 dry_run=args.dry_run)
    code: int = EXIT_OK
    submitted: list[dict[str, Any]] = []
    # Also with nothing reset: ready jobs whose allocations vanished need new ones.
    if not (args.dry_run or args.no_submit) and (
            out.reset or not (await ctx.client.workflow_status(wid))["is_complete"]):
        if not ctx.json:
            _print_orphans(gone, orphaned)
            print("\n".join(out.lines))
            print(f"Rerunning workflow {wid}...", flush=True)
        code, submitted = await rerun(ctx, wid)
    elif not ctx.json:
        _print_orphans(gone, orphaned, "would be terminated" if args.dry_run else "terminated")
        print("\n".join(out.lines))
    if out.skipped and not out.retry:
        code = EXIT_FAILED_JOBS
    if ctx.json:
        status = await ctx.client.workflow_status(wid)
        print_json({"workflow_id": wid, "dry_run": args.dry_run, "orphaned_allocations": gone,
                    "terminated_jobs": [j["id"] for j in orphaned], **out.to_json(),
                    "submitted": submitted, "counts": status["counts"]})
        return code
    for alloc in submitted:
        print(f"submitted {submit.describe(alloc)}")
    if out.skipped and not out.retry:
        print(f"No recoverable jobs found. {len(out.skipped)} job(s) failed with unknown "
              "causes.\nUse --retry-unknown to retry jobs with unknown failure causes.")
    elif not out.diagnoses and not out.retry:
        print(f"Workflow {wid}: nothing to recover.")
    elif not args.dry_run:
        print(f"Recovery complete for workflow {wid}")
    return code


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


def recovery_options(p: argparse.ArgumentParser) -> None:
    """The options of a recovery (``recover``, ``watch --recover``): Torc's names."""
    from .utilization import multiplier

    p.add_argument("--memory-multiplier", type=multiplier, default=1.5, metavar="X",
                   help="memory of a job that ran out of it: X times its peak or requirement "
                        "(default 1.5)")
    p.add_argument("--runtime-multiplier", type=multiplier, default=1.4, metavar="X",
                   help="runtime of a job that ran out of time: X times its run time or "
                        "requirement (default 1.4)")
    p.add_argument("--retry-unknown", action="store_true",
                   help="also retry jobs that failed for an unknown cause (default: they are "
                        "likely bugs and stay failed)")


def _recover_arguments(p: argparse.ArgumentParser) -> None:
    from .run import runner_options

    workflow_argument(p)
    recovery_options(p)
    p.add_argument("--dry-run", action="store_true",
                   help="say what would be done; change nothing")
    p.add_argument("--no-submit", action="store_true",
                   help="fix and reset, but neither submit allocations nor run the jobs here")
    runner_options(p)  # the rerun of a workflow that does not use Slurm runs here


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
            "diagnose failed jobs (out of memory, out of time), raise what they ask for, "
            "reset and rerun them",
            """torc-trio recover 3 --dry-run
               torc-trio recover 3
               torc-trio recover 3 --memory-multiplier 2 --runtime-multiplier 1.5
               torc-trio recover 3 --retry-unknown --no-submit""",
            arguments=_recover_arguments, run=cmd_recover,
            description="Torc's recover: first the jobs of Slurm allocations that vanished "
                        "are marked terminated (retried as they are); then each failed or "
                        "terminated job is diagnosed from its result: out of memory (the "
                        "runner's failure_cause, a peak above its memory, return code 137) "
                        "gets --memory-multiplier times more memory, out of time (timeout, "
                        "152, a run near its runtime) --runtime-multiplier times more runtime; "
                        "a failure of unknown cause is left alone unless --retry-unknown. "
                        "The retried jobs and their downstream are reset and rerun: new "
                        "allocations for a Slurm workflow, else here in the foreground as "
                        "`run` does. Refused while jobs are pending or running. Every change "
                        "is a workflow event (job_resources, reset)."),
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
