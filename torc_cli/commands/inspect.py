"""Looking at workflows: status, watch, workflows list/get/is-complete, jobs list, results list,
ping."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import trio

from ..command import Command
from ..exits import EXIT_FAILED_JOBS, EXIT_OK, InputError
from ..feed import follow_workflow_feed
from ..output import (
    STATUS_ORDER,
    ProgressView,
    format_value,
    print_counts,
    print_json,
    print_json_line,
    print_table,
)
from ..recovery_plan import AutoSchedule
from ..session import Context

JOB_COLUMNS = ["id", "name", "status", "attempt", "command"]
RESULT_COLUMNS = ["job_id", "job_name", "run_id", "attempt", "status", "return_code",
                  "exec_time_s", "completed_at"]
WORKFLOW_COLUMNS = ["id", "name", "user", "num_jobs", "run_id", "is_complete", "is_canceled",
                    "created_at"]
FAILED = ("failed", "canceled", "terminated")


def workflow_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int, nargs="?",
                   help="the workflow (default: the only one; asked for in a terminal)")


def exit_status_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--exit-status", action="store_true",
                   help="exit 1 when any job failed, was canceled or terminated (default: 0 "
                        "whenever the command itself worked)")


def _failed_any(counts: dict[str, int]) -> bool:
    return any(counts.get(s, 0) for s in FAILED)


async def cmd_status(ctx: Context) -> int:
    status = await ctx.client.workflow_status(await ctx.workflow_id())
    if ctx.json:
        print_json(status)
    else:
        state = ("canceled" if status.get("is_canceled") else
                 "complete" if status.get("is_complete") else "in progress")
        print_counts(status["counts"],
                     title=f"Workflow {status['id']} (run {status.get('run_id')}): {state}")
    return EXIT_FAILED_JOBS if ctx.args.exit_status and _failed_any(status["counts"]) else EXIT_OK


async def cmd_is_complete(ctx: Context) -> int:
    wid = await ctx.workflow_id()
    status = await ctx.client.workflow_status(wid)
    answer = {"workflow_id": wid, "is_complete": bool(status.get("is_complete")),
              "is_canceled": bool(status.get("is_canceled"))}
    if ctx.json:
        print_json(answer)
    else:
        print(f"Workflow {wid} is {'complete' if answer['is_complete'] else 'not complete'}"
              + (" (canceled)" if answer["is_canceled"] else ""))
    return EXIT_OK


async def cmd_watch(ctx: Context) -> int:
    """Follow the workflow to its end; with ``--recover`` (Torc's watch -r), recover it each
    time it ends with failures (``recover``'s diagnosis, fixes, reset and rerun), until it
    completes or ``--max-retries`` recoveries were made."""
    wid = await ctx.workflow_id()
    args = ctx.args
    retries = 0
    policy = None
    if getattr(args, "auto_schedule", False):
        from .slurm import is_slurm_workflow

        if not await is_slurm_workflow(ctx, wid):
            raise InputError(f"--auto-schedule: workflow {wid} has no slurm_schedulers "
                             "(it submits Slurm allocations)")
        policy = AutoSchedule(threshold=args.auto_schedule_threshold,
                              cooldown_s=args.auto_schedule_cooldown,
                              stranded_s=args.auto_schedule_stranded_timeout)
    while True:
        async with trio.open_nursery() as nursery:
            if policy is not None:
                nursery.start_soon(_auto_schedule, ctx, wid, policy, args.poll_interval)
            counts = await _watch_once(ctx, wid)
            nursery.cancel_scope.cancel()
        if not getattr(args, "recover", False) or not _failed_any(counts):
            break
        if retries >= args.max_retries:
            _say(ctx, f"Max retries ({args.max_retries}) exceeded. Manual intervention "
                      "required.")
            return EXIT_FAILED_JOBS
        retries += 1
        _say(ctx, f"Workflow {wid} completed with failures: "
                  + ", ".join(f"{s} {counts.get(s, 0)}" for s in (*FAILED, "completed"))
                  + f"\nAttempting automatic recovery (attempt {retries}/{args.max_retries})")
        from .slurm import recover_failures, rerun

        out = await recover_failures(ctx, wid)
        _say(ctx, "\n".join(out.lines))
        if not out.reset:
            _say(ctx, f"No recoverable jobs found. {len(out.skipped)} job(s) failed with "
                      "unknown causes.\nUse --retry-unknown to retry jobs with unknown "
                      "failure causes.")
            return EXIT_FAILED_JOBS
        _say(ctx, "Recovery initiated. Resuming monitoring...")
        await rerun(ctx, wid)
    return EXIT_FAILED_JOBS if args.exit_status and _failed_any(counts) else EXIT_OK


async def _auto_schedule(ctx: Context, wid: int, policy: AutoSchedule, interval: float) -> None:
    """watch --auto-schedule: every ``interval`` seconds, submit the workflow's allocations
    again when :class:`~torc_cli.recovery_plan.AutoSchedule` says so (a task beside the
    feed; cancelled when the workflow ends)."""
    from .. import slurm, submit

    client = ctx.client
    while True:
        await trio.sleep(interval)
        now = trio.current_time()
        await submit.find_orphans(client, wid)  # allocations Slurm no longer has: gone
        live = [a for a in await client.list_allocations(wid)
                if a["state"] in submit.LIVE_STATES]
        ready = [j async for j in client.iter_jobs(wid, status="ready")]
        reason = policy.reason(now, ready=len(ready), live_allocations=len(live),
                               retry_ready=sum(1 for j in ready if int(j["attempt"]) > 1))
        if reason is None:
            continue
        try:
            submitted = await submit.submit(client, wid, ctx.url, ctx.output_dir.resolve(),
                                            dry_run=False, rerun=True)
        except (submit.SubmitError, slurm.SlurmError) as exc:
            _say(ctx, f"Auto-schedule failed: {exc}")
            continue
        policy.scheduled(now)
        _say(ctx, f"Auto-scheduled ({reason}): "
                  + (", ".join(submit.describe(a) for a in submitted) or "nothing to submit"))


def _say(ctx: Context, text: str) -> None:
    """What watch --recover does, for people: on stdout, or stderr under -f json (whose
    stdout is one message per line)."""
    print(text, file=sys.stderr if ctx.json else sys.stdout, flush=True)


async def _watch_once(ctx: Context, wid: int) -> dict[str, int]:
    with ProgressView(f"workflow {wid}", enabled=not ctx.json) as view:

        def show(message: dict[str, Any], counts: dict[str, int]) -> None:
            kind = message.get("type")
            if ctx.json:
                if kind != "counts":
                    print_json_line(message)
            elif kind == "job_status":
                view.log(f"job {message.get('name')} ({message['job_id']}): "
                         f"{message['old']} -> {message['new']}")
            view.update(counts)

        return await follow_workflow_feed(ctx, wid, show, "watch")


def emit_rows(ctx: Context, rows: list[dict[str, Any]], columns: list[str], title: str) -> None:
    if ctx.json:
        print_json(rows)
    else:
        print_table(rows, columns, title=title)


async def cmd_jobs_list(ctx: Context) -> int:
    wid = await ctx.workflow_id()
    rows = [j async for j in ctx.client.iter_jobs(wid, status=ctx.args.status)]
    emit_rows(ctx, rows, JOB_COLUMNS, f"Jobs of workflow {wid}")
    return EXIT_OK


def _jobs_list_arguments(p: argparse.ArgumentParser) -> None:
    workflow_argument(p)
    p.add_argument("-s", "--status", choices=STATUS_ORDER, help="only jobs with this status")


async def cmd_results_list(ctx: Context) -> int:
    args = ctx.args
    wid = await ctx.workflow_id()
    run_id = None
    if not args.all_runs:  # Torc's default: the results of the latest run
        run_id = int((await ctx.client.workflow_status(wid))["run_id"])
    rows = [r async for r in ctx.client.iter_results(
        wid, status=args.status, run_id=run_id, job_id=args.job_id, failed=args.failed)]
    which = "all runs" if args.all_runs else f"run {run_id}"
    title = f"Results of workflow {wid} ({which})"
    if ctx.json:  # every stored field, the metrics whole
        print_json(rows)
    else:
        print_table(*_result_table(rows), title=title)
    return EXIT_OK


def _result_table(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The table's rows and columns: the resource monitor's peaks (memory in MiB/GiB, CPU in
    percent of one core) and the failure cause, as compact columns when any result has
    them (``-f json`` has every value)."""
    columns = list(RESULT_COLUMNS)
    shown = rows
    if any(r.get("peak_memory_bytes") is not None for r in rows):
        columns += ["peak_mem", "peak_cpu"]
        shown = [{**r, "peak_mem": _bytes_text(r.get("peak_memory_bytes")),
                  "peak_cpu": None if r.get("peak_cpu_percent") is None
                  else f"{r['peak_cpu_percent']:.0f}%"} for r in shown]
    if any(r.get("failure_cause") for r in rows):
        columns.append("failure_cause")
    return shown, columns


def _bytes_text(n: int | None) -> str | None:
    if n is None:
        return None
    return f"{n / 2**30:.1f}G" if n >= 2**30 else f"{n / 2**20:.0f}M"


def _results_list_arguments(p: argparse.ArgumentParser) -> None:
    workflow_argument(p)
    p.add_argument("-s", "--status", choices=("completed", "failed", "terminated"),
                   help="only results with this status")
    p.add_argument("--failed", action="store_true",
                   help="only results with a non-zero return code")
    p.add_argument("-j", "--job-id", type=int, default=None, help="only this job's results")
    p.add_argument("--all-runs", action="store_true",
                   help="every run's results (default: the latest run's)")


async def cmd_workflows_list(ctx: Context) -> int:
    rows = [w async for w in ctx.client.iter_workflows()]
    emit_rows(ctx, rows, WORKFLOW_COLUMNS, "Workflows")
    return EXIT_OK


async def cmd_workflows_get(ctx: Context) -> int:
    result = await ctx.client.get_workflow(await ctx.workflow_id())
    if ctx.json:
        print_json(result)
    else:
        width = max((len(k) for k in result), default=0)
        for key, value in result.items():
            shown = json.dumps(value) if isinstance(value, dict | list) else format_value(
                key, value)
            print(f"{key:>{width}}: {shown}")
    return EXIT_OK


async def cmd_ping(ctx: Context) -> int:
    version = await ctx.client.version()
    answer = {"url": ctx.url, **version}
    if ctx.json:
        print_json(answer)
    else:
        print(f"The server at {ctx.url} answers (API {version.get('api')}, "
              f"version {version.get('version')}).")
    return EXIT_OK


def _status_arguments(p: argparse.ArgumentParser) -> None:
    workflow_argument(p)
    exit_status_option(p)


def _watch_arguments(p: argparse.ArgumentParser) -> None:
    from .run import runner_options
    from .slurm import recovery_options

    _status_arguments(p)
    p.add_argument("-r", "--recover", action="store_true",
                   help="when the workflow ends with failures, recover it (as `recover` "
                        "does) and watch again, until it completes or retries run out")
    p.add_argument("-m", "--max-retries", type=int, default=3, metavar="N",
                   help="with --recover: at most N recoveries (default 3)")
    p.add_argument("--auto-schedule", action="store_true",
                   help="submit the workflow's Slurm allocations again when jobs are ready "
                        "and none is pending or running, or when retry jobs wait (below)")
    p.add_argument("--auto-schedule-threshold", type=int, default=5, metavar="N",
                   help="retry jobs (attempt > 1) waiting that call for more allocations "
                        "while some run (default 5)")
    p.add_argument("--auto-schedule-cooldown", type=float, default=1800.0, metavar="S",
                   help="seconds between two auto-schedules for retry jobs (default 1800)")
    p.add_argument("--auto-schedule-stranded-timeout", type=float, default=7200.0,
                   metavar="S", help="fewer retry jobs than the threshold are scheduled "
                                     "after waiting this long (default 7200)")
    recovery_options(p)
    runner_options(p)  # a workflow that does not use Slurm is rerun here


COMMANDS = [
    Command("status", "show job counts per status",
            """torc-trio status 3
               torc-trio -f json status 3
               torc-trio status --exit-status && echo 'no job failed'""",
            arguments=_status_arguments, run=cmd_status, aliases=("workflows status",)),
    Command("watch", "follow a workflow live until it ends",
            """torc-trio watch 3
               torc-trio watch 3 -f json | jq .new
               torc-trio watch 3 --recover --max-retries 3 --memory-multiplier 2
               torc-trio watch 3 --recover --auto-schedule   # Slurm: no allocation left""",
            arguments=_watch_arguments, run=cmd_watch),
    Command("workflows list", "list the workflows you may see",
            """torc-trio workflows list
               torc-trio workflows list -f json""", run=cmd_workflows_list),
    Command("workflows get", "show one workflow's details",
            """torc-trio workflows get 3
               torc-trio workflows get 3 -f json""",
            arguments=workflow_argument, run=cmd_workflows_get),
    Command("workflows is-complete", "say whether every job of a workflow is done",
            """torc-trio workflows is-complete 3
               torc-trio -f json workflows is-complete 3""",
            arguments=workflow_argument, run=cmd_is_complete),
    Command("jobs list", "list a workflow's jobs",
            """torc-trio jobs list 3
               torc-trio jobs list 3 -s failed
               torc-trio jobs list 3 --status ready -f json""",
            arguments=_jobs_list_arguments, run=cmd_jobs_list),
    Command("results list", "list a workflow's results (the latest run's by default)",
            """torc-trio results list 3
               torc-trio results list 3 --failed
               torc-trio results list 3 --all-runs -j 17""",
            arguments=_results_list_arguments, run=cmd_results_list),
    Command("ping", "check that the server answers",
            """torc-trio ping
               torc-trio --url http://login1:8080/torc-service/v1 ping""", run=cmd_ping),
]
