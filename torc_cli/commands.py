"""The `torc-trio` commands and their argument parser."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

from torc_core.graph import compile_spec_summary

from .early import add_global_options
from .output import (
    STATUS_ORDER,
    ProgressView,
    err_console,
    print_counts,
    print_json,
    print_json_line,
    print_table,
)
from .resources import detect_allocation_resources
from .runner import JobRunner, RunnerConfig, stdio_stem
from .session import Context
from .specs import (
    InputError,
    argv_command,
    check_spec,
    commands_spec,
    exec_spec,
    is_spec_path,
    load_spec_file,
    missing_input_files,
    read_command_lines,
    unknown_placeholders,
)

# ------------------------------------------------------------------------------------------------
# Creating and running


def _spec_from_target(target: str) -> dict[str, Any]:
    if is_spec_path(target):
        return load_spec_file(target)
    if not Path(target).exists():
        raise InputError(f"{target}: no such file (expected a spec, a command file, or an id)")
    return commands_spec(Path(target).stem, read_command_lines(target))


def _validate_for_run(doc: dict[str, Any]) -> None:
    spec = check_spec(doc)
    missing = missing_input_files(spec, Path.cwd())
    if missing:
        raise InputError("\n".join(missing))


async def cmd_create(ctx: Context) -> int:
    doc = load_spec_file(ctx.args.spec)
    if ctx.args.dry_run:
        counts = compile_spec_summary(check_spec(doc))
        summary: dict[str, Any] = {"dry_run": True, "name": doc.get("name"), **counts}
        if ctx.json:
            print_json(summary)
        else:
            print(f"Spec is valid: would create workflow {doc.get('name')!r} with "
                  f"{summary['jobs']} jobs, {summary['dependencies']} dependencies stored "
                  f"({summary['barriers']} barriers), {summary['files']} files, "
                  f"{summary['user_data']} user_data.")
        return 0
    created = await ctx.client.create_workflow(doc)
    if ctx.json:
        print_json(created)
    else:
        print(f"Created workflow {created['id']} ({created['name']}): {created['jobs']} jobs, "
              f"{created['dependencies']} dependencies.")
    return 0


def _is_workflow_id(target: str) -> bool:
    return target.isdigit() and not Path(target).exists()


def prepare_run(args: argparse.Namespace) -> dict[str, Any] | None:
    """`run`'s spec, read and checked before the server is needed; None for a workflow id."""
    if _is_workflow_id(args.target):
        return None
    doc = _spec_from_target(args.target)
    _validate_for_run(doc)
    return doc


async def cmd_run(ctx: Context) -> int:
    doc = ctx.args.prepared
    if doc is None:  # an existing workflow: a wrong id is an error before anything else
        workflow_id = int(ctx.args.target)
        await ctx.client.get_workflow(workflow_id)
        return await run_workflow(ctx, workflow_id)
    created = await ctx.client.create_workflow(doc)
    return await run_workflow(ctx, int(created["id"]))


def prepare_exec(args: argparse.Namespace) -> dict[str, Any]:
    """`exec`'s spec, built and checked before the server is needed."""
    commands: list[str] = list(args.commands or [])
    if args.commands_file:
        commands += read_command_lines(args.commands_file)
    if args.argv:
        argv = args.argv[1:] if args.argv[0] == "--" else args.argv
        if argv:
            commands.append(argv_command(argv))
    doc = exec_spec(args.name, commands, args.param or [], args.link)
    _validate_for_run(doc)
    if args.param:
        for name in unknown_placeholders(commands, args.param):
            print(f"torc-trio: warning: {{{name}}} is not a --param; it is left as written",
                  file=sys.stderr)
    return doc


async def cmd_exec(ctx: Context) -> int:
    created = await ctx.client.create_workflow(ctx.args.prepared)
    return await run_workflow(ctx, int(created["id"]))


async def run_workflow(ctx: Context, workflow_id: int) -> int:
    args = ctx.args
    cfg = RunnerConfig(
        workflow_id=workflow_id, api_url=ctx.url, output_dir=ctx.output_dir.resolve(),
        # Inside an allocation (`torc-trio -s run` in an sbatch script): its CPUs, memory and
        # end, so that jobs are claimed only if they fit the time left and are ended cleanly
        # before Slurm's limit. Elsewhere the machine's.
        resources=await detect_allocation_resources(), max_parallel=args.jobs,
        poll_interval_s=args.poll_interval, stop_when_nothing_fits=True,
    )
    if not ctx.json:
        err_console.print(f"Running workflow {workflow_id} (output in {ctx.output_dir}/)")
    with ProgressView(f"workflow {workflow_id}", enabled=not ctx.json) as view:
        runner = JobRunner(ctx.client, cfg, on_progress=view.update)
        summary = await runner.run()
        status = await ctx.client.workflow_status(workflow_id)
        view.update(status["counts"])
    await _record_file_mtimes(ctx, workflow_id)
    return await _report(ctx, workflow_id, status, stop_reason=summary.stop_reason)


async def _report(ctx: Context, workflow_id: int, status: dict[str, Any], *,
                  stop_reason: str = "") -> int:
    counts: dict[str, int] = status["counts"]
    total = int(status.get("total", sum(counts.values())))
    failed = [r async for r in ctx.client.iter_results(workflow_id)
              if r.get("status") != "completed"] if total != counts.get("completed", 0) else []
    # Only the latest result of each job matters for the summary.
    latest: dict[int, dict[str, Any]] = {}
    for r in failed:
        latest[int(r["job_id"])] = r
    rows = []
    for r in latest.values():
        log = stdio_stem(ctx.output_dir, workflow_id, r["job_id"], r.get("run_id"),
                         r.get("attempt")) + ".e"
        rows.append({"job_id": r["job_id"], "name": r.get("job_name"), "status": r.get("status"),
                     "return_code": r.get("return_code"), "log": log})
    ok = counts.get("completed", 0) == total
    if ctx.json:
        print_json({"workflow_id": workflow_id, "counts": counts, "total": total,
                    "success": ok, "failed_jobs": rows, "stop_reason": stop_reason})
    else:
        print_counts(counts, title=f"Workflow {workflow_id}")
        if rows:
            # Plain lines, not a table: a log path must stay whole to be copied.
            print(f"Jobs that ran and did not succeed ({len(rows)}):")
            for row in rows:
                code = _exit_text(row["return_code"])
                print(f"  {row['name']} (id {row['job_id']}): {row['status']}{code}, "
                      f"log {row['log']}")
        if stop_reason and stop_reason != "workflow complete":
            print(f"Runner stopped: {stop_reason}")
    return 0 if ok else 1


def _exit_text(return_code: int | None) -> str:
    """', exit code 3' or ', killed by SIGTERM' (a negative code is a signal, as in Popen)."""
    if return_code is None:
        return ""
    if return_code < 0:
        try:
            return f", killed by {signal.Signals(-return_code).name}"
        except ValueError:
            return f", killed by signal {-return_code}"
    return f", exit code {return_code}"


async def _record_file_mtimes(ctx: Context, workflow_id: int) -> None:
    mtimes = await _current_mtimes(ctx, workflow_id)
    if mtimes:
        await ctx.client.record_file_mtimes(workflow_id, mtimes)


async def _current_mtimes(ctx: Context, workflow_id: int) -> dict[int, float | None]:
    mtimes: dict[int, float | None] = {}
    async for f in ctx.client.iter_files(workflow_id):
        try:
            mtimes[int(f["id"])] = os.stat(f["path"]).st_mtime
        except OSError:
            mtimes[int(f["id"])] = None
    return mtimes


async def cmd_runner(ctx: Context) -> int:
    from . import submit

    args = ctx.args
    resources = await detect_allocation_resources()
    output_dir = ctx.output_dir.resolve()

    async def schedule_nodes(action: dict[str, Any]) -> None:
        for alloc in await submit.run_schedule_action(ctx.client, args.workflow_id, ctx.url,
                                                      output_dir, action):
            print(f"submitted {submit.describe(alloc)} for action {action['index']}",
                  file=sys.stderr)

    cfg = RunnerConfig(
        workflow_id=args.workflow_id, api_url=ctx.url, output_dir=output_dir,
        resources=resources, max_parallel=args.jobs, scheduler=args.scheduler,
        poll_interval_s=args.poll_interval, end_buffer_s=args.end_buffer_seconds,
        startup_jitter_s=args.startup_jitter_seconds,
        idle_timeout_s=args.idle_timeout_seconds,
        action_types=("run_commands", "schedule_nodes"), schedule_nodes=schedule_nodes,
    )
    runner = JobRunner(ctx.client, cfg)
    summary = await runner.run()
    line = (f"runner {summary.compute_node_id}: ran {summary.jobs_run} jobs "
            f"({summary.succeeded} ok, {summary.failed} failed, {summary.terminated} terminated);"
            f" {summary.stop_reason}")
    if ctx.json:
        print_json({"compute_node_id": summary.compute_node_id, "jobs_run": summary.jobs_run,
                    "succeeded": summary.succeeded, "failed": summary.failed,
                    "terminated": summary.terminated, "stop_reason": summary.stop_reason})
    else:
        print(line, file=sys.stderr)
    return 0 if summary.failed == 0 and summary.terminated == 0 else 1


# ------------------------------------------------------------------------------------------------
# Inspecting


async def cmd_status(ctx: Context) -> int:
    status = await ctx.client.workflow_status(ctx.args.workflow_id)
    if ctx.json:
        print_json(status)
    else:
        state = ("canceled" if status.get("is_canceled") else
                 "complete" if status.get("is_complete") else "in progress")
        print_counts(status["counts"],
                     title=f"Workflow {status['id']} (run {status.get('run_id')}): {state}")
    return 0


async def cmd_watch(ctx: Context) -> int:
    from torc_net.client import open_event_feed

    wid = ctx.args.workflow_id
    counts: dict[str, int] = {}
    names: dict[int, str] = {}
    with ProgressView(f"workflow {wid}", enabled=not ctx.json) as view:
        async with open_event_feed(ctx.url, wid, auth=ctx.client.auth) as feed:
            async for message in feed:
                kind = message.get("type")
                if kind == "counts":
                    counts = dict(message["counts"])
                elif kind == "job_status":
                    old, new = message["old"], message["new"]
                    counts[old] = counts.get(old, 0) - 1
                    counts[new] = counts.get(new, 0) + 1
                    names[int(message["job_id"])] = message.get("name", "")
                    line = f"job {message.get('name')} ({message['job_id']}): {old} -> {new}"
                    if ctx.json:
                        print_json_line(message)
                    else:
                        view.log(line)
                elif kind == "overflow":
                    raise InputError("watch: fell behind the event feed; run watch again")
                elif ctx.json:
                    print_json_line(message)
                view.update(counts)
                if kind == "workflow" and message.get("event") in ("completed", "canceled"):
                    break
                if kind == "counts" and _all_done(counts):
                    break
    return 0


def _all_done(counts: dict[str, int]) -> bool:
    return sum(counts.values()) > 0 and not any(
        counts.get(s, 0) for s in ("uninitialized", "blocked", "ready", "pending", "running"))


JOB_COLUMNS = ["id", "name", "status", "attempt", "command"]
RESULT_COLUMNS = ["job_id", "job_name", "run_id", "attempt", "status", "return_code",
                  "exec_time_s"]
WORKFLOW_COLUMNS = ["id", "name", "user", "num_jobs", "run_id", "is_complete", "is_canceled"]


async def cmd_jobs_list(ctx: Context) -> int:
    rows = [j async for j in ctx.client.iter_jobs(ctx.args.workflow_id, status=ctx.args.status)]
    _emit_rows(ctx, rows, JOB_COLUMNS, f"Jobs of workflow {ctx.args.workflow_id}")
    return 0


async def cmd_results_list(ctx: Context) -> int:
    rows = [r async for r in ctx.client.iter_results(ctx.args.workflow_id,
                                                     status=ctx.args.status)]
    _emit_rows(ctx, rows, RESULT_COLUMNS, f"Results of workflow {ctx.args.workflow_id}")
    return 0


async def cmd_workflows(ctx: Context) -> int:
    action = ctx.args.action
    client = ctx.client
    if action == "list":
        rows = [w async for w in client.iter_workflows()]
        _emit_rows(ctx, rows, WORKFLOW_COLUMNS, "Workflows")
        return 0
    if ctx.args.workflow_id is None:
        raise InputError(f"workflows {action}: a workflow id is required")
    wid = ctx.args.workflow_id
    if action == "get":
        result = await client.get_workflow(wid)
    elif action == "delete":
        result = await client.delete_workflow(wid)
    else:
        return await cmd_cancel(ctx)
    if ctx.json:
        print_json(result)
    else:
        width = max((len(k) for k in result), default=0)
        for key, value in result.items():
            shown = json.dumps(value) if isinstance(value, dict | list) else value
            print(f"{key:>{width}}: {shown}")
    return 0


def _emit_rows(ctx: Context, rows: list[dict[str, Any]], columns: list[str], title: str) -> None:
    if ctx.json:
        print_json(rows)
    else:
        print_table(rows, columns, title=title)


# ------------------------------------------------------------------------------------------------
# Changing


async def cmd_cancel(ctx: Context) -> int:
    from . import slurm, submit

    wid = ctx.args.workflow_id
    status = await ctx.client.cancel_workflow(wid)
    scancelled: list[str] = []
    if await ctx.client.list_allocations(wid):
        try:
            scancelled = await submit.cancel_allocations(ctx.client, wid)
        except (slurm.SlurmError, OSError) as exc:
            raise InputError(f"workflow {wid} canceled, but scancel failed: {exc}") from None
    if ctx.json:
        print_json({**status, "scancelled": scancelled})
    else:
        print(f"Canceled workflow {wid}."
              + (f" scancel: {', '.join(scancelled)}" if scancelled else ""))
    return 0


async def cmd_submit(ctx: Context) -> int:
    from . import slurm, submit

    target = ctx.args.target
    if _is_workflow_id(target):
        wid = int(target)
    else:
        doc = _spec_from_target(target)
        _validate_for_run(doc)
        if ctx.args.dry_run:
            raise InputError("submit --dry-run needs an existing workflow id (create it first)")
        wid = int((await ctx.client.create_workflow(doc))["id"])
    output_dir = ctx.output_dir.resolve()
    try:
        submitted = await submit.submit(ctx.client, wid, ctx.url, output_dir,
                                        dry_run=ctx.args.dry_run)
    except (submit.SubmitError, slurm.SlurmError) as exc:
        raise InputError(str(exc)) from None
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
    return 0


async def cmd_recover(ctx: Context) -> int:
    from . import slurm, submit

    wid = ctx.args.workflow_id
    try:
        gone = await submit.find_orphans(ctx.client, wid)
        jobs = await submit.fail_orphaned_jobs(ctx.client, wid, {a["slurm_job_id"] for a in gone})
        reset: dict[str, Any] = {}
        if jobs or gone:
            reset = await ctx.client.reset_status(wid, failed_only=True)
        submitted = [] if ctx.args.no_submit else await submit.submit(
            ctx.client, wid, ctx.url, ctx.output_dir.resolve(), dry_run=False)
    except (submit.SubmitError, slurm.SlurmError) as exc:
        raise InputError(str(exc)) from None
    if ctx.json:
        print_json({"workflow_id": wid, "orphaned_allocations": gone,
                    "terminated_jobs": [j["id"] for j in jobs], "submitted": submitted,
                    "counts": reset.get("counts")})
    else:
        for alloc in gone:
            print(f"{submit.describe(alloc)}: no longer in Slurm")
        for job in jobs:
            print(f"job {job['name']} ({job['id']}): terminated (its allocation disappeared)")
        for alloc in submitted:
            print(f"submitted {submit.describe(alloc)}")
        if not (gone or submitted):
            print(f"Workflow {wid}: nothing to recover.")
    return 0


async def cmd_reinitialize(ctx: Context) -> int:
    wid = ctx.args.workflow_id
    mtimes = await _current_mtimes(ctx, wid)
    result = await ctx.client.reinitialize_workflow(wid, dry_run=ctx.args.dry_run,
                                                    file_mtimes=mtimes)
    if ctx.json:
        print_json(result)
    else:
        verb = "Would reset" if ctx.args.dry_run else "Reset"
        print(f"{verb} {len(result['jobs'])} jobs of workflow {wid} (run {result['run_id']}).")
    return 0


async def cmd_reset_status(ctx: Context) -> int:
    wid = ctx.args.workflow_id
    status = await ctx.client.reset_status(wid, failed_only=ctx.args.failed_only)
    if ctx.json:
        print_json(status)
    else:
        print_counts(status["counts"], title=f"Workflow {wid} after reset")
    return 0


# ------------------------------------------------------------------------------------------------
# The parser


def _examples(text: str) -> str:
    return "examples:\n" + textwrap.indent(textwrap.dedent(text).strip(), "  ")


def _main_serve(args: argparse.Namespace) -> int:
    from torc_net.server import main_serve

    return main_serve(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torc-trio",
        description="Run workflows of shell jobs with dependencies: on a laptop, one node, or "
                    "many Slurm allocations.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples("""
            torc-trio run -j 4 examples/commands.txt     # standalone: no server needed
            torc-trio -s run examples/diamond.yaml
            torc-trio -s exec -C commands.txt -j 4
            export TORC_API_URL=http://host:8085/torc-service/v1
            torc-trio create workflow.yaml && torc-trio status 1
        """),
    )
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, fn: Any, help_text: str, examples: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=_examples(examples))
        p.set_defaults(fn=fn)
        return p

    # serve (the server's own options live with the server; Hypercorn and Quart are imported
    # only when it runs)
    from torc_net.config import add_serve_arguments

    p = sub.add_parser("serve", help="run the server", description="Run the torc-trio server.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=_examples("""
                           torc-trio serve --database /tmp/torc.db --host 0.0.0.0 --port 8085
                           torc-trio serve -d ":memory:" --host 0.0.0.0 --port 8085 --threads 8
                       """))
    add_serve_arguments(p)
    p.set_defaults(sync_main=_main_serve)

    p = add("create", cmd_create, "create a workflow from a spec (YAML, JSON or JSON5)",
            "torc-trio create workflow.yaml\ntorc-trio -f json create --dry-run workflow.yaml")
    p.add_argument("spec")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and report what would be created, without a server")

    def runner_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("-j", "--jobs", type=int, default=None, metavar="N",
                       help="run N jobs at once regardless of resources (queue mode); default: "
                            "pack jobs into this machine's CPUs, memory and GPUs")
        p.add_argument("--wait-for-server-minutes", type=float, default=20.0,
                       help="keep retrying an unreachable server this long (default 20)")
        p.add_argument("--poll-interval", type=float, default=1.0,
                       help="seconds between claims when nothing is ready (default 1)")

    p = add("run", cmd_run, "run a spec, a command file (one job per line) or a workflow id",
            "torc-trio run -j 32 commands.txt\ntorc-trio -s run workflow.yaml\ntorc-trio run 3")
    p.add_argument("target", help="SPEC file, COMMANDS_FILE, or WORKFLOW_ID")
    p.set_defaults(prepare=prepare_run)
    runner_options(p)

    p = add("exec", cmd_exec, "run ad-hoc commands, optionally over parameters",
            """torc-trio exec -c 'echo hi' -c 'echo there'
               torc-trio -s exec -C commands.txt -j 4
               torc-trio exec --param i=1:3 --param x="['a','b']" -c 'echo {i} {x}'
               torc-trio exec --param i=1:3 --param j=4:6 --link zip -c 'echo {i} {j}'
               torc-trio exec -j 2 -- python -c 'print(1)'""")
    p.add_argument("-c", "--command", action="append", dest="commands",
                   help="a command (repeatable)")
    p.add_argument("-C", "--commands-file", help="file with one command per line, or -")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="parameter: 1:10, 0:100:10, [1,5,10], ['a','b'], @values.txt")
    p.add_argument("--link", choices=("product", "zip"), default="product")
    p.add_argument("-n", "--name", default="exec", help="workflow name (default exec)")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    p.set_defaults(prepare=prepare_exec)
    runner_options(p)

    p = add("runner", cmd_runner, "run jobs of a workflow on this node (used in allocations)",
            "torc-trio --url http://login1:8085/torc-service/v1 runner 3")
    p.add_argument("workflow_id", type=int)
    runner_options(p)
    p.add_argument("--scheduler", help="only jobs of this scheduler (and jobs with none)")
    p.add_argument("--end-buffer-seconds", type=float, default=60.0,
                   help="stop before the allocation ends, to terminate and report (default 60)")
    p.add_argument("--startup-jitter-seconds", type=float, default=0.0,
                   help="wait a random time up to this before starting (spreads a burst)")
    p.add_argument("--idle-timeout-seconds", type=float, default=None,
                   help="exit after this long with nothing to run (default: wait until the "
                        "workflow is complete)")

    p = add("submit", cmd_submit,
            "submit Slurm allocations that run the workflow's jobs",
            """torc-trio submit 3
               torc-trio submit 3 --dry-run      # print the sbatch scripts
               torc-trio submit workflow.yaml    # create, then submit""")
    p.add_argument("target", help="WORKFLOW_ID or SPEC")
    p.add_argument("--dry-run", action="store_true", help="print the scripts, submit nothing")

    p = add("recover", cmd_recover,
            "find allocations that vanished, mark their jobs terminated, rerun what remains",
            "torc-trio recover 3")
    p.add_argument("workflow_id", type=int)
    p.add_argument("--no-submit", action="store_true", help="do not submit new allocations")

    p = add("status", cmd_status, "show job counts per status",
            "torc-trio status 3\ntorc-trio -f json status 3")
    p.add_argument("workflow_id", type=int)

    p = add("watch", cmd_watch, "follow a workflow live until it ends", "torc-trio watch 3")
    p.add_argument("workflow_id", type=int)

    p = add("workflows", cmd_workflows, "list, get, delete or cancel workflows",
            "torc-trio workflows list\ntorc-trio workflows delete 3")
    p.add_argument("action", choices=("list", "get", "delete", "cancel"))
    p.add_argument("workflow_id", type=int, nargs="?")

    p = sub.add_parser("jobs", help="list a workflow's jobs")
    jobs_sub = p.add_subparsers(dest="jobs_command", required=True)
    p = jobs_sub.add_parser("list", help="list jobs", epilog=_examples(
        "torc-trio jobs list 3 --status failed"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workflow_id", type=int)
    p.add_argument("--status", choices=STATUS_ORDER)
    p.set_defaults(fn=cmd_jobs_list)

    p = sub.add_parser("results", help="list a workflow's results")
    results_sub = p.add_subparsers(dest="results_command", required=True)
    p = results_sub.add_parser("list", help="list results", epilog=_examples(
        "torc-trio results list 3"), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workflow_id", type=int)
    p.add_argument("--status", choices=("completed", "failed", "terminated", "canceled"))
    p.set_defaults(fn=cmd_results_list)

    p = add("reinitialize", cmd_reinitialize,
            "rerun the jobs whose input files changed, and everything downstream",
            "torc-trio reinitialize 3 --dry-run\ntorc-trio reinitialize 3 && torc-trio run 3")
    p.add_argument("workflow_id", type=int)
    p.add_argument("--dry-run", action="store_true")

    p = add("reset-status", cmd_reset_status,
            "put jobs back to run again (all, or only failed ones and their dependents)",
            "torc-trio reset-status 3 --failed-only && torc-trio run 3")
    p.add_argument("workflow_id", type=int)
    p.add_argument("--failed-only", action="store_true")

    p = add("cancel", cmd_cancel, "cancel a workflow", "torc-trio cancel 3")
    p.add_argument("workflow_id", type=int)

    from torc_net.htpasswd_cli import add_htpasswd_arguments, main_htpasswd

    p = sub.add_parser("htpasswd", help="manage an htpasswd file (bcrypt) for the server",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=_examples("torc-trio htpasswd add users.htpasswd alice"))
    add_htpasswd_arguments(p)
    p.set_defaults(sync_main=main_htpasswd)
    return parser


