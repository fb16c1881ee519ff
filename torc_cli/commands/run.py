"""Creating and running workflows: create, run, exec, runner."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torc_core.graph import compile_spec_summary
from torc_core.settings import MONITOR_OFF

from ..command import Command
from ..exec_watch import ExecWatch, Halt, JobLog, joblog_path, parse_halt
from ..exits import EXIT_FAILED_JOBS, EXIT_OK, EXIT_PIPE, InputError, signal_exit
from ..output import ProgressView, err_console, print_counts, print_json
from ..parallel import has_sources, parallel_spec, split_sources
from ..procs import Spawners, describe_exit, spawner_count
from ..resources import Resources, detect_allocation_resources, with_gpu_count
from ..runner import JobRunner, RunnerConfig
from ..session import Context
from ..specs import (
    argv_command,
    check_spec,
    commands_spec,
    exec_spec,
    is_spec_path,
    load_spec_file,
    missing_input_files,
    read_command_lines,
    unknown_placeholders,
    with_retries,
)


def _spec_from_target(target: str) -> dict[str, Any]:
    if target == "-":
        return commands_spec("stdin", read_command_lines("-"), source="standard input")
    if is_spec_path(target):
        return load_spec_file(target)
    if not Path(target).exists():
        raise InputError(f"{target}: no such file (expected a spec, a command file, or an id)")
    return commands_spec(Path(target).stem, read_command_lines(target), source=target)


def _validate_for_run(doc: dict[str, Any]) -> None:
    spec = check_spec(doc, warn=True)
    missing = missing_input_files(spec, Path.cwd())
    if missing:
        raise InputError("\n".join(missing))


def is_workflow_id(target: str) -> bool:
    return target.isdigit() and not Path(target).exists()


def with_monitoring(doc: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The spec with the monitoring options applied to its ``resource_monitor``, as Torc's
    ``--no-resource-monitoring`` does on create: the stored workflow says what its runners
    do. `exec`: ``--monitor summary|time-series``, ``--sample-interval-seconds``,
    ``--generate-plots``."""
    if getattr(args, "no_resource_monitoring", False):
        return {**doc, "resource_monitor": {"enabled": False}}
    changes: dict[str, Any] = {}
    if getattr(args, "monitor", None) is not None:
        changes.update(enabled=True, granularity=args.monitor.replace("-", "_"))
    if getattr(args, "sample_interval_seconds", None) is not None:
        changes["sample_interval_seconds"] = args.sample_interval_seconds
    if getattr(args, "generate_plots", False):
        changes["generate_plots"] = True
    if not changes:
        return doc
    return {**doc, "resource_monitor": {**(doc.get("resource_monitor") or {}), **changes}}


def _monitoring_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-resource-monitoring", action="store_true",
                   help="do not sample the jobs' CPU and memory (spec: resource_monitor: "
                        "{enabled: false}); direct mode's limits still apply")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"expected more than 0 and at most 86400 seconds, "
                                         f"got {text}")
    return value


# ---------------------------------------------------------------------------------------------
# create


def prepare_create(args: argparse.Namespace) -> dict[str, Any]:
    """Read and check the spec before any server (a refused spec leaves nothing behind)."""
    doc = with_monitoring(load_spec_file(args.spec), args)
    spec = check_spec(doc, warn=True)
    for problem in missing_input_files(spec, Path.cwd()):
        print(f"torc-trio: warning: {args.spec}: {problem} (a run would stop here)",
              file=sys.stderr)
    return doc


async def cmd_create(ctx: Context) -> int:
    doc: dict[str, Any] = ctx.args.prepared
    if ctx.args.dry_run:
        spec = check_spec(doc)
        summary: dict[str, Any] = {"dry_run": True, "name": doc.get("name"),
                                   **compile_spec_summary(spec), "warnings": list(spec.warnings)}
        if ctx.json:
            print_json(summary)
        else:
            print(f"Spec is valid: would create workflow {doc.get('name')!r} with "
                  f"{summary['jobs']} jobs, {summary['dependencies']} dependencies stored "
                  f"({summary['barriers']} barriers), {summary['files']} files, "
                  f"{summary['user_data']} user_data.")
        return EXIT_OK
    created = await ctx.client.create_workflow(doc)
    if ctx.json:
        print_json(created)
    else:
        print(f"Created workflow {created['id']} ({created['name']}): {created['jobs']} jobs, "
              f"{created['dependencies']} dependencies.")
    return EXIT_OK


def _create_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="the spec file (YAML, JSON, JSON5 or KDL)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and report what would be created, without a server")
    _monitoring_arguments(p)


# ---------------------------------------------------------------------------------------------
# run and exec


def prepare_run(args: argparse.Namespace) -> dict[str, Any] | None:
    """`run`'s spec, read and checked before the server is needed; None for a workflow id."""
    if args.target is None or is_workflow_id(args.target):
        return None
    doc = with_monitoring(_spec_from_target(args.target), args)
    _validate_for_run(doc)
    return doc


async def cmd_run(ctx: Context) -> int:
    doc = ctx.args.prepared
    if doc is None:  # an existing workflow: a wrong id is an error before anything else
        ctx.args.workflow_id = None if ctx.args.target is None else int(ctx.args.target)
        workflow_id = await ctx.workflow_id()
        await ctx.client.get_workflow(workflow_id)
        return await run_workflow(ctx, workflow_id)
    # The spawners start while the workflow is created.
    with Spawners.start(spawner_count(ctx.args.jobs)) as spawners:
        created = await ctx.client.create_workflow(doc)
        return await run_workflow(ctx, int(created["id"]), spawners=spawners)


@dataclass(frozen=True, slots=True)
class ExecPlan:
    """What `exec` will do, read and checked before the server is needed."""

    doc: dict[str, Any]
    total_jobs: int
    retries: int = 0
    halt: Halt | None = None
    joblog: tuple[Path, bool] | None = None  # the file, and whether to append
    keep_order: bool = False


def prepare_exec(args: argparse.Namespace) -> ExecPlan:
    """`exec`'s spec, built and checked before the server is needed."""
    argv: list[str] = list(args.argv or [])
    if argv and argv[0] == "--":
        argv = argv[1:]
    halt = parse_halt(args.halt) if args.halt is not None else None
    joblog = joblog_path(args.joblog) if args.joblog is not None else None
    if args.retries < 0:
        raise InputError(f"--retries {args.retries}: expected 0 or more")
    if args.keep_order and args.format == "json":
        raise InputError("-k prints the jobs' output on standard output, where -f json would "
                         "print the report: use one of them")
    if has_sources(argv) or args.arg_files:
        doc = _parallel_doc(args, argv)
    else:
        commands: list[str] = list(args.commands or [])
        if args.commands_file:
            commands += read_command_lines(args.commands_file)
        if argv:
            commands.append(argv_command(argv))
        doc = exec_spec(args.name, commands, args.param or [], args.link)
        if args.param:
            for name in unknown_placeholders(commands, args.param):
                print(f"torc-trio: warning: {{{name}}} is not a --param; it is left as "
                      "written", file=sys.stderr)
    if args.retries:
        doc = with_retries(doc, args.retries)
    doc = with_monitoring(doc, args)
    spec = check_spec(doc)
    missing = missing_input_files(spec, Path.cwd())
    if missing:
        raise InputError("\n".join(missing))
    if args.dry_run:
        if args.format == "json":
            print_json({"dry_run": True, "jobs": [{"name": job.name, "command": job.command}
                                                  for job in spec.jobs]})
        else:
            sys.stdout.write("".join(f"{job.command}\n" for job in spec.jobs))
    return ExecPlan(doc, len(spec.jobs), args.retries, halt, joblog, args.keep_order)


def _parallel_doc(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """GNU parallel's form: `exec [CMD...] ::: VALUES... [:::+ ...] [:::: FILE...]`."""
    if args.param:
        raise InputError("--param and ::: input sources do not mix: give every list with ::: "
                         "(named {1}, {2}, ... by position) or every one with --param")
    if args.commands_file:
        raise InputError("-C gives many commands; ::: input sources go with one command "
                         "(-c CMD, or the words before :::)")
    parsed = split_sources(argv, args.arg_files or [])
    commands: list[str] = list(args.commands or [])
    if len(commands) > 1:
        raise InputError(f"::: input sources go with one command; -c was given {len(commands)} "
                         "times")
    if commands and parsed.words:
        raise InputError(f"two commands: -c {commands[0]!r} and the words before ::: "
                         f"({' '.join(parsed.words)!r}); give one of them")
    # parallel's: the words are one shell command line, joined as they are (not quoted).
    command = commands[0] if commands else (" ".join(parsed.words) if parsed.words else None)
    options = _exec_option_strings()
    for source in parsed.sources:
        for value in source.values:
            if value in options:
                print(f"torc-trio: warning: {value!r} in {source.origin} is a value, not an "
                      "option (options go before the command)", file=sys.stderr)
                break
    return parallel_spec(args.name, command, parsed.sources, link_all=args.link == "zip")


def _exec_option_strings() -> set[str]:
    parser = argparse.ArgumentParser(add_help=False)
    _exec_arguments(parser)
    return set(parser._option_string_actions)


async def cmd_exec(ctx: Context) -> int:
    if ctx.args.dry_run:  # prepare_exec printed the commands; no server was needed
        return EXIT_OK
    plan: ExecPlan = ctx.args.prepared
    # The spawners start while the workflow is created.
    with Spawners.start(spawner_count(ctx.args.jobs)) as spawners:
        created = await ctx.client.create_workflow(plan.doc)
        workflow_id = int(created["id"])
        watch = None
        if plan.halt is not None or plan.joblog is not None or plan.keep_order:
            joblog = None if plan.joblog is None else JobLog(plan.joblog[0],
                                                              append=plan.joblog[1])
            watch = ExecWatch(output_dir=ctx.output_dir.resolve(), workflow_id=workflow_id,
                              total_jobs=plan.total_jobs, retries=plan.retries,
                              halt=plan.halt, joblog=joblog, keep_order=plan.keep_order)
        return await run_workflow(ctx, workflow_id, watch=watch, spawners=spawners)


def _resources(args: argparse.Namespace, detected: Resources) -> Resources:
    """This machine's (or allocation's) resources, with what the user said overriding them."""
    from dataclasses import replace

    changes: dict[str, Any] = {}
    if args.num_cpus is not None:
        changes["cpus"] = args.num_cpus
    if args.memory_gb is not None:
        changes["memory_bytes"] = int(args.memory_gb * (1 << 30))
    res = replace(detected, **changes) if changes else detected
    # GPUs are device ids handed to jobs, not just a count (torc_cli/gpus.py).
    return res if args.num_gpus is None else with_gpu_count(res, args.num_gpus)


async def run_workflow(ctx: Context, workflow_id: int, *, watch: ExecWatch | None = None,
                       spawners: Spawners | None = None) -> int:
    """Run the workflow here and report. ``watch``: `exec`'s --joblog, --halt and -k (with
    -k the jobs' output has standard output to itself; the report goes to stderr);
    ``spawners``: the runner's job spawners, started already."""
    args = ctx.args
    cfg = RunnerConfig(
        workflow_id=workflow_id, api_url=ctx.url, output_dir=ctx.output_dir.resolve(),
        # Inside an allocation (`torc-trio -s run` in an sbatch script): its CPUs, memory and
        # end, so that jobs are claimed only if they fit the time left and are ended cleanly
        # before Slurm's limit. Elsewhere the machine's.
        resources=_resources(args, await detect_allocation_resources(
            probe_gpus=args.num_gpus is None)),
        max_parallel=args.jobs, poll_interval_s=args.poll_interval,
        stop_when_nothing_fits=True,
        on_job_end=None if watch is None else watch.job_ended,
        # run is the local runner: it starts the runners of scheduler_type: local actions
        # (Slurm's are for submit and the runners in allocations)
        action_types=("run_commands", "schedule_nodes"), scheduler_types=("local",),
        # `run WF --no-resource-monitoring`: a stored workflow, monitored or not as it says
        monitor=MONITOR_OFF if getattr(args, "no_resource_monitoring", False) else None,
    )
    own_stdout = watch is not None and watch.keep_order
    started: list[dict[str, Any]] = []
    cfg.schedule_nodes = lambda action: _start_local(ctx, workflow_id, action, started)
    if not ctx.json:
        err_console.print(f"Running workflow {workflow_id} (output in {ctx.output_dir}/)")
    with ProgressView(f"workflow {workflow_id}", enabled=not ctx.json and not own_stdout) \
            as view:
        runner = JobRunner(ctx.client, cfg, on_progress=view.update, spawners=spawners)
        summary = await (runner.run() if watch is None else watch.run(runner))
        if ctx.standalone:  # the server ends with this command: so do the runners it started
            await _stop_local(started)
        status = await ctx.client.workflow_status(workflow_id)
        view.update(status["counts"])
    await record_file_mtimes(ctx, workflow_id)
    with redirect_stdout(sys.stderr) if own_stdout else nullcontext():
        code = await report(ctx, workflow_id, status, stop_reason=summary.stop_reason)
    if summary.signal is not None:
        code = signal_exit(summary.signal)
    elif watch is not None and watch.output_closed:
        code = EXIT_PIPE
    if code != EXIT_OK and not ctx.json:
        _next_step(ctx, workflow_id, status)
    return code


def _next_step(ctx: Context, workflow_id: int, status: dict[str, Any]) -> None:
    """One line: the command that reruns what did not complete."""
    counts = status["counts"]
    prefix = "torc-trio " + ("-s " if ctx.standalone and ctx.args.standalone else "")
    if ctx.args.db:
        prefix += f"--db {ctx.args.db} "
    unfinished = sum(counts.get(s, 0) for s in ("failed", "canceled", "terminated"))
    if unfinished:
        line = (f"{prefix}reset-status {workflow_id} --failed-only && "
                f"{prefix}run {workflow_id}")
    else:
        line = f"{prefix}run {workflow_id}"
    print(f"To run what did not complete: {line}", file=sys.stderr)


async def report(ctx: Context, workflow_id: int, status: dict[str, Any], *,
                 stop_reason: str = "") -> int:
    counts: dict[str, int] = status["counts"]
    total = int(status.get("total", sum(counts.values())))
    # Only the latest result of each job matters for the summary: a job that failed and
    # then completed on a retry (a failure handler, exec --retries) did succeed.
    latest: dict[int, dict[str, Any]] = {}
    if total != counts.get("completed", 0):
        async for r in ctx.client.iter_results(workflow_id):
            key = int(r["job_id"])
            seen = latest.get(key)
            if seen is None or (r.get("run_id", 0), r.get("attempt", 0)) >= (
                    seen.get("run_id", 0), seen.get("attempt", 0)):
                latest[key] = r
    rows = []
    for r in latest.values():
        if r.get("status") == "completed":
            continue
        log = r.get("stderr_path") or r.get("stdout_path")  # None: not kept
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
    return EXIT_OK if ok else EXIT_FAILED_JOBS


def _exit_text(return_code: int | None) -> str:
    """', exit code 3' or ', exit code 143 (killed by SIGTERM)' (128 + N: signal N)."""
    return "" if return_code is None else f", {describe_exit(return_code)}"


async def record_file_mtimes(ctx: Context, workflow_id: int) -> None:
    mtimes = await current_mtimes(ctx, workflow_id)
    if mtimes:
        await ctx.client.record_file_mtimes(workflow_id, mtimes)


async def current_mtimes(ctx: Context, workflow_id: int) -> dict[int, float | None]:
    mtimes: dict[int, float | None] = {}
    async for f in ctx.client.iter_files(workflow_id):
        try:
            mtimes[int(f["id"])] = os.stat(f["path"]).st_mtime
        except OSError:
            mtimes[int(f["id"])] = None
    return mtimes


def _gpu_count(text: str) -> int:
    """--num-gpus: a count of devices (0 turns GPU assignment off)."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of GPUs, got {text!r}") from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more GPUs, got {count}")
    return count


def runner_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-j", "--jobs", "--max-parallel-jobs", dest="jobs", type=int, default=None,
                   metavar="N",
                   help="run N jobs at once regardless of resources (queue mode); default: "
                        "pack jobs into this machine's CPUs, memory and GPUs")
    p.add_argument("--num-cpus", type=int, default=None, metavar="N",
                   help="CPUs to pack jobs into (default: the machine's or allocation's)")
    p.add_argument("--memory-gb", type=float, default=None, metavar="G",
                   help="memory to pack jobs into, in GiB (default: the machine's)")
    p.add_argument("--num-gpus", type=_gpu_count, default=None, metavar="N",
                   help="GPUs to hand out, each job its own devices through "
                        "CUDA_VISIBLE_DEVICES (default: CUDA_VISIBLE_DEVICES, the "
                        "allocation's, or nvidia-smi -L; README: Runner options)")
    p.add_argument("--wait-for-server-minutes", type=float, default=20.0,
                   help="keep retrying an unreachable server this long (default 20)")
    p.add_argument("-p", "--poll-interval", type=float, default=1.0,
                   help="seconds between claims when nothing is ready (default 1)")
    p.add_argument("-o", "--output-dir", default=argparse.SUPPRESS,
                   help="where job stdout/stderr go (default: torc_output)")


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?",
                   help="a SPEC file, a COMMANDS file (one job per line; - reads standard "
                        "input), or a WORKFLOW_ID (default: the only workflow)")
    runner_options(p)
    _monitoring_arguments(p)


def _exec_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--command", action="append", dest="commands",
                   help="a command (repeatable; one with ::: sources)")
    p.add_argument("-C", "--commands-file", help="file with one command per line, or -")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="parameter: 1:10, 0:100:10, [1,5,10], ['a','b'], @values.txt "
                        "(not with ::: sources)")
    p.add_argument("--link", choices=("product", "zip"), default="product",
                   help="how several --param or ::: sources combine: every combination "
                        "(product, the default) or pairwise in order (zip, parallel's --link)")
    p.add_argument("-a", "--arg-file", action="append", dest="arg_files", metavar="FILE",
                   help="an input source: the file's lines (as :::: FILE; repeatable)")
    p.add_argument("--retries", type=int, default=0, metavar="N",
                   help="run a failed job again, up to N more times (a failure handler in the "
                        "spec; GNU parallel's --retries counts the first run too)")
    p.add_argument("--halt", "--halt-on-error", dest="halt", metavar="WHEN",
                   help="now,fail=N: at the Nth failed job terminate the running jobs and "
                        "start no more; soon,fail=N: start no more, let the running finish; "
                        "fail=P%% counts P%% of all jobs (default: never)")
    p.add_argument("--joblog", "--jl", dest="joblog", metavar="FILE",
                   help="write GNU parallel's job log (one tab-separated line per finished "
                        "attempt); +FILE appends")
    p.add_argument("-k", "--keep-order", action="store_true",
                   help="print each job's standard output, in input order, as jobs finish "
                        "(the report goes to stderr)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the commands that would run, one per line; create nothing")
    p.add_argument("-n", "--name", default="exec", help="workflow name (default exec)")
    _monitoring_arguments(p)
    p.add_argument("--monitor", choices=("summary", "time-series"), default=None,
                   help="sample the jobs: summary (peak/average CPU and memory with each "
                        "result, the default) or time-series (also every sample, in "
                        "<output>/resource_utilization/*.db)")
    p.add_argument("--sample-interval-seconds", type=_positive_seconds, default=None,
                   metavar="S", help="seconds between samples (default 10)")
    p.add_argument("--generate-plots", action="store_true",
                   help="with --monitor time-series: when the run ends, write Torc's plot "
                        "files (HTML) next to the database (see plot-resources)")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD ... [::: VALUES ...]",
                   help="the command's words, then GNU parallel's input sources: "
                        "::: VALUES, :::+ VALUES (linked), :::: FILES, ::::+ FILES "
                        "(or -- CMD ARGS: one command, its words quoted as given)")
    runner_options(p)


async def _start_local(ctx: Context, workflow_id: int, action: dict[str, Any],
                       started: list[dict[str, Any]]) -> None:
    from ..local_runners import describe, start_local_runners

    for runner in start_local_runners(ctx.url, workflow_id, ctx.output_dir.resolve(), action):
        started.append(runner)
        print(f"torc-trio: started {describe(runner)} for action {action['index']}",
              file=sys.stderr)


async def _stop_local(started: list[dict[str, Any]]) -> None:
    """The local runners a standalone run started: they would outlive its server and wait
    for it in vain (20 minutes), so they are told to stop (SIGTERM: they release their jobs
    while the server is still up) and waited for, a bounded time."""
    import trio

    from ..local_runners import stop_local_runners

    if started:
        await trio.to_thread.run_sync(stop_local_runners, started)


# ---------------------------------------------------------------------------------------------
# runner


async def cmd_runner(ctx: Context) -> int:
    from .. import submit

    args = ctx.args
    resources = _resources(args, await detect_allocation_resources(
        probe_gpus=args.num_gpus is None))
    output_dir = ctx.output_dir.resolve()
    workflow_id = await ctx.workflow_id()

    async def schedule_nodes(action: dict[str, Any]) -> None:
        for alloc in await submit.run_schedule_action(ctx.client, workflow_id, ctx.url,
                                                      output_dir, action):
            print(f"submitted {submit.describe(alloc)} for action {action['index']}",
                  file=sys.stderr)

    cfg = RunnerConfig(
        workflow_id=workflow_id, api_url=ctx.url, output_dir=output_dir,
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
    if summary.signal is not None:
        return signal_exit(summary.signal)
    return EXIT_OK if summary.failed == 0 and summary.terminated == 0 else EXIT_FAILED_JOBS


def _runner_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int, nargs="?",
                   help="the workflow (default: the only one)")
    runner_options(p)
    p.add_argument("--scheduler", help="only jobs of this scheduler (and jobs with none)")
    p.add_argument("--end-buffer-seconds", type=float, default=60.0,
                   help="stop before the allocation ends, to terminate and report (default 60)")
    p.add_argument("--startup-jitter-seconds", type=float, default=0.0,
                   help="wait a random time up to this before starting (spreads a burst)")
    p.add_argument("--idle-timeout-seconds", type=float, default=None,
                   help="exit after this long with nothing to run (default: wait until the "
                        "workflow is complete)")


EXEC_DESCRIPTION = """\
Run ad-hoc commands as a workflow, one job each: -c CMD, -C FILE, -- CMD ARGS (one command,
its words quoted as given), optionally over --param lists, or GNU parallel's input sources.

GNU parallel's forms (one job per value, or per combination of values):
  exec CMD... ::: A B C        one job per value; {} is the value (a command without any
                               replacement string gets the values appended)
  exec CMD... ::: A B ::: X Y  every combination (the first list varies slowest); {1}, {2}
                               name the lists by position, {} is all of them
  :::+ VALUES, ::::+ FILE      linked to the previous list: pairwise, of equal lengths
                               (--link zip links every list, like parallel's --link)
  :::: FILE..., -a FILE        each file's lines are a list (- is standard input)
  exec ::: 'CMD 1' 'CMD 2'     no command: the values are the commands
  {.} {/} {//} {/.}            the value without its extension, basename, dirname, basename
                               without extension; by position too: {2.} {1/}
  {#} {##}                     the job's number (from 1), the number of jobs
Quoting, as parallel's default: a value is quoted for the shell unless it is a plain word
('a b' stays one argument, $HOME stays literal); the words before ::: (after -- too) are
joined by spaces into one shell command line, not quoted (pass '>' or a whole
'cmd {} > {}.out' as one word). Options go before the command: after ::: all are values.
Not supported: {%} and {= perl =}. --param and ::: do not mix.

--halt, --joblog, -k, --retries and --dry-run are parallel's, except that: --retries N runs a
failed job up to N more times (parallel's counts the first run); -k prints each job's stdout
(its stderr stays in its .e file) and sends the report to stderr; the exit status is
torc-trio's, 1 if any job did not complete, with --halt too (parallel's would be the failed
job's own status, and 2 or 3 mean bad input or the server here). A halted run leaves the
jobs it did not start ready, so `reset-status ID --failed-only && run ID` finishes it.
"""

COMMANDS = [
    Command("create", "create a workflow from a spec (YAML, JSON, JSON5 or KDL)",
            """torc-trio create workflow.yaml
               torc-trio -f json create --dry-run workflow.yaml
               torc-trio workflows create workflow.yaml""",
            arguments=_create_arguments, run=cmd_create, prepare=prepare_create,
            offline=lambda args: bool(args.dry_run), creates=True,
            aliases=("workflows create",)),
    Command("run", "run a spec, a command file (one job per line) or a workflow",
            """torc-trio run -j 32 commands.txt
               torc-trio run workflow.yaml --poll-interval 1
               torc-trio run 3 --num-cpus 8 -o results
               printf 'echo a\\necho b\\n' | torc-trio run -""",
            arguments=_run_arguments, run=cmd_run, prepare=prepare_run, creates=True,
            aliases=("workflows run",)),
    Command("exec", "run ad-hoc commands, optionally over parameters",
            """torc-trio exec echo {} ::: a b c
               torc-trio exec -c 'echo {1}-{2}' ::: a b ::: x y
               torc-trio exec echo {1} {2} ::: a b c :::+ 1 2 3
               printf '%s\\n' a b c | torc-trio exec -j 2 'echo {#}: {}' :::: -
               torc-trio exec -k -j 3 'sleep {}; echo {}' ::: 0.3 0.1 0.2
               torc-trio exec --halt now,fail=1 --retries 2 --joblog log.tsv test {} -lt 9 ::: 1 2
               torc-trio exec --dry-run 'convert {} {.}.png' ::: a.jpg 'my photo.jpg'
               torc-trio exec -c 'echo hi' -c 'echo there'
               torc-trio exec -C commands.txt -j 4
               torc-trio exec --param i=1:3 --param x="['a','b']" -c 'echo {i} {x}'
               torc-trio exec --param i=1:3 --param j=4:6 --link zip -c 'echo {i} {j}'
               torc-trio exec -j 2 -- python3 -c 'print(1)'""",
            arguments=_exec_arguments, run=cmd_exec, prepare=prepare_exec, creates=True,
            offline=lambda args: bool(args.dry_run),
            description=EXEC_DESCRIPTION),
    Command("runner", "run jobs of a workflow on this node (used in allocations)",
            """torc-trio --url http://login1:8080/torc-service/v1 runner 3
               torc-trio runner 3 --scheduler gpu --idle-timeout-seconds 300""",
            arguments=_runner_arguments, run=cmd_runner),
]
