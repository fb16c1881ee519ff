"""Reports from measured use and correcting requirements by it: ``reports
check-resource-utilization``, ``reports results`` and ``correct-resources`` (Torc's names,
output and JSON shapes; the rules are in :mod:`torc_cli.recovery_plan`).

Where the numbers come from: each result carries what the runner's resource monitor measured
(``peak_memory_bytes``, ``avg_memory_bytes``, ``peak_cpu_percent``, ``avg_cpu_percent``) and
why a job failed (``failure_cause``); each job what it asked for (``num_cpus``,
``memory_bytes``, ``runtime_s``). A result without measurements is compared by its run time
alone.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import recovery_plan as plan
from ..command import Command
from ..exits import EXIT_OK, InputError
from ..output import print_json, print_table
from ..session import Context
from .inspect import workflow_argument

#: Torc's column headings of check-resource-utilization.
VIOLATION_COLUMNS = {"job_id": "Job ID", "job_name": "Job Name", "resource_type": "Resource",
                     "specified": "Specified", "peak_used": "Peak Used",
                     "over_utilization": "Over-Utilization"}
RESULT_COLUMNS = ["job_id", "job_name", "run_id", "attempt", "status", "return_code",
                  "exec_time", "peak_memory", "avg_memory", "peak_cpu", "avg_cpu",
                  "failure_cause"]
METRICS = ("failure_cause", "peak_memory_bytes", "avg_memory_bytes", "peak_cpu_percent",
           "avg_cpu_percent", "note")


async def _jobs(ctx: Context, wid: int) -> dict[int, dict[str, Any]]:
    return {int(j["id"]): j async for j in ctx.client.iter_jobs(wid)}


async def _results(ctx: Context, wid: int, run_id: int | None,
                   statuses: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every result of ``run_id`` with one of ``statuses``; without a run, each job's latest
    (a workflow reset or recovered has older runs whose numbers no longer apply)."""
    found = [r for s in statuses async for r in ctx.client.iter_results(wid, status=s,
                                                                         run_id=run_id)]
    if run_id is None:
        found = list(plan.latest_per_job(found).values())
    return sorted(found, key=lambda r: (int(r["job_id"]), int(r["run_id"]), int(r["attempt"])))


# ---------------------------------------------------------------------------------------------
# reports check-resource-utilization


async def cmd_check_utilization(ctx: Context) -> int:
    args = ctx.args
    wid = await ctx.workflow_id()
    statuses = ("completed", *plan.FAILED_STATUSES) if args.include_failed else ("completed",)
    results = await _results(ctx, wid, args.run_id, statuses)
    if not results:
        print(f"No completed, failed, or terminated job results found for workflow {wid}"
              if args.include_failed else f"No completed job results found for workflow {wid}")
        return EXIT_OK
    jobs = await _jobs(ctx, wid)
    rows: list[dict[str, Any]] = []
    diagnoses: list[plan.Diagnosis] = []
    for r in results:
        job = jobs[int(r["job_id"])]
        rows += plan.violations(job, r, show_all=args.all,
                                min_over=args.min_over_utilization)
        if r["status"] in plan.FAILED_STATUSES:
            diagnoses.append(plan.diagnose(job, r))
    over = sum(1 for row in rows if row["over_utilization"].startswith("+"))
    if ctx.json:
        report: dict[str, Any] = {"workflow_id": wid}
        if args.run_id is not None:
            report["run_id"] = args.run_id
        report.update(total_results=len(results), over_utilization_count=over,
                      violations=rows)
        if diagnoses:
            report.update(resource_violations_count=len(diagnoses),
                          resource_violations=[d.to_json() for d in diagnoses])
        print_json(report)
        return EXIT_OK
    if not rows:
        mark = "" if args.all else "✓ "
        print(f"{mark}All {len(results)} jobs stayed within their specified resource "
              "requirements")
    else:
        if not args.all:
            print(f"\n⚠ Found {over} resource over-utilization violations:\n")
        print_table([{VIOLATION_COLUMNS[k]: v for k, v in row.items()} for row in rows],
                    list(VIOLATION_COLUMNS.values()))
        if over:
            print(f"\nTo automatically correct these violations, run:\n"
                  f"  torc-trio correct-resources {wid}", file=sys.stderr)
        if not args.all:
            print("\nNote: Use --all to see all jobs, including those that stayed within "
                  "limits")
    for d in diagnoses:
        print(f"Job {d.job_id} ({d.job_name}): {d.status}, return code {d.return_code}, "
              f"likely cause: {d.cause}"
              + (f" ({d.oom_reason or d.timeout_reason})" if d.cause != "unknown" else ""))
    return EXIT_OK


def _percent(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a percentage >= 0, got {text}")
    return value


def _check_arguments(p: argparse.ArgumentParser) -> None:
    workflow_argument(p)
    p.add_argument("-r", "--run-id", type=int, default=None,
                   help="every result of this run (default: each job's latest result)")
    p.add_argument("-a", "--all", action="store_true",
                   help="also the jobs that stayed within their requirements")
    p.add_argument("--include-failed", action="store_true",
                   help="also failed and terminated jobs, each with its likely cause (oom, "
                        "timeout, unknown)")
    p.add_argument("--min-over-utilization", type=_percent,
                   default=plan.MIN_OVER_UTILIZATION, metavar="PERCENT",
                   help="smaller excesses are not violations (default 1.0)")


# ---------------------------------------------------------------------------------------------
# reports results


def _mem(n: Any) -> str | None:
    return None if n is None else plan.format_memory(int(n))


def _cpu(p: Any) -> str | None:
    return None if p is None else f"{float(p):.1f}%"


async def cmd_reports_results(ctx: Context) -> int:
    args = ctx.args
    wid = await ctx.workflow_id()
    wf = await ctx.client.get_workflow(wid)
    found = [r async for r in ctx.client.iter_results(wid)]
    if not args.all_runs:
        found = list(plan.latest_per_job(found).values())
    if args.job_ids:
        wanted = set(args.job_ids)
        found = [r for r in found if int(r["job_id"]) in wanted]
    found.sort(key=lambda r: (int(r["job_id"]), int(r["run_id"]), int(r["attempt"])))
    jobs = await _jobs(ctx, wid)
    records = []
    for r in found:
        job = jobs[int(r["job_id"])]
        records.append({
            "job_id": r["job_id"], "job_name": r.get("job_name") or job["name"],
            "status": r["status"], "run_id": r["run_id"], "attempt": r["attempt"],
            "return_code": r["return_code"], "completion_time": r.get("completed_at"),
            "exec_time_s": r["exec_time_s"], "exec_time_minutes": r["exec_time_s"] / 60,
            "compute_node_id": r.get("compute_node_id"),
            "num_cpus": job["num_cpus"], "memory_bytes": job["memory_bytes"],
            "runtime_s": job["runtime_s"],
            **{k: r.get(k) for k in METRICS},
            "job_stdout": r.get("stdout_path"), "job_stderr": r.get("stderr_path"),
        })
    if ctx.json:
        print_json({"workflow_id": wid, "workflow_name": wf["name"],
                    "workflow_user": wf.get("user"), "all_runs": args.all_runs,
                    "total_results": len(records), "results": records})
        return EXIT_OK
    shown = [{**rec, "exec_time": plan.format_duration(float(rec["exec_time_s"])),
              "peak_memory": _mem(rec["peak_memory_bytes"]),
              "avg_memory": _mem(rec["avg_memory_bytes"]),
              "peak_cpu": _cpu(rec["peak_cpu_percent"]), "avg_cpu": _cpu(rec["avg_cpu_percent"])}
             for rec in records]
    which = "all runs" if args.all_runs else "each job's latest"
    print_table(shown, RESULT_COLUMNS, title=f"Results of workflow {wid} ({which})")
    return EXIT_OK


def _results_arguments(p: argparse.ArgumentParser) -> None:
    workflow_argument(p)
    p.add_argument("--all-runs", action="store_true",
                   help="every result of every run (default: each job's latest)")
    p.add_argument("-j", "--job-id", dest="job_ids", type=int, action="append", default=[],
                   metavar="JOB", help="only this job (repeat for more)")


# ---------------------------------------------------------------------------------------------
# correct-resources


def _job_ids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected job ids like 3,4,7, got {text!r}") from None


def multiplier(text: str) -> float:
    value = float(text)
    if not value >= 1.0:
        raise argparse.ArgumentTypeError(f"expected a multiplier >= 1, got {text}")
    return value


async def cmd_correct_resources(ctx: Context) -> int:
    args = ctx.args
    wid = await ctx.workflow_id()
    jobs = await _jobs(ctx, wid)
    if args.job_ids:
        unknown = sorted(set(args.job_ids) - set(jobs))
        if unknown:
            raise InputError(f"--job-ids: no job {', '.join(map(str, unknown))} in "
                             f"workflow {wid}")
    results = await _results(ctx, wid, None, ("completed", *plan.FAILED_STATUSES))
    by_job: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        if not args.job_ids or int(r["job_id"]) in args.job_ids:
            by_job.setdefault(int(r["job_id"]), []).append(r)
    corrections = []
    for job_id, rs in sorted(by_job.items()):
        change = plan.correction(jobs[job_id], rs, args.memory_multiplier,
                                 args.runtime_multiplier)
        if change is not None:
            corrections.append((jobs[job_id], change))
    if corrections and not args.dry_run:
        await ctx.client.set_job_resources(
            wid, [{"job_id": int(job["id"]), **change} for job, change in corrections],
            reason=f"correct-resources (memory x{args.memory_multiplier}, runtime "
                   f"x{args.runtime_multiplier})")
    if ctx.json:
        print_json({"workflow_id": wid, "dry_run": args.dry_run, "jobs_analyzed": len(by_job),
                    "corrections": [{"job_id": job["id"], "job_name": job["name"],
                                     "old": {k: job[k] for k in change}, "new": change}
                                    for job, change in corrections]})
        return EXIT_OK
    print(f"Analyzing and correcting resource requirements for workflow {wid}")
    if not corrections:
        print(f"✓ No corrections needed ({len(by_job)} jobs with results analyzed)")
        return EXIT_OK
    print("Dry run: nothing was changed\n\nCorrections that would be applied:" if args.dry_run
          else "✓ Resource requirements updated successfully\n\nCorrections applied:")
    for job, change in corrections:
        print(f"  {job['name']} (id {job['id']}): {', '.join(plan.describe_change(job, change))}")
    return EXIT_OK


def _correct_arguments(p: argparse.ArgumentParser) -> None:
    workflow_argument(p)
    p.add_argument("--dry-run", action="store_true", help="say what would change; change nothing")
    p.add_argument("--memory-multiplier", "--memory-buffer", dest="memory_multiplier",
                   type=multiplier, default=1.2, metavar="X",
                   help="new memory (and CPUs) = peak use times X (default 1.2)")
    p.add_argument("--runtime-multiplier", "--runtime-buffer", dest="runtime_multiplier",
                   type=multiplier, default=1.2, metavar="X",
                   help="new runtime = longest run time times X (default 1.2)")
    p.add_argument("--job-ids", type=_job_ids, default=None, metavar="IDS",
                   help="only these jobs (comma-separated ids)")


COMMANDS = [
    Command("reports check-resource-utilization",
            "compare jobs' measured peaks with what they asked for (memory, CPU, runtime)",
            """torc-trio reports check-resource-utilization 3
               torc-trio reports check-resource-utilization 3 --all
               torc-trio reports check-resource-utilization 3 --run-id 2 --include-failed
               torc-trio -f json reports check-resource-utilization 3 | jq .violations""",
            arguments=_check_arguments, run=cmd_check_utilization),
    Command("reports results", "every result with its measured memory and CPU use",
            """torc-trio reports results 3
               torc-trio reports results 3 --all-runs -j 17
               torc-trio -f json reports results 3 > results.json""",
            arguments=_results_arguments, run=cmd_reports_results),
    Command("correct-resources",
            "raise jobs' memory, CPUs and runtime to their measured peaks times a buffer",
            """torc-trio correct-resources 3 --dry-run
               torc-trio correct-resources 3
               torc-trio correct-resources 3 --memory-multiplier 1.5 --runtime-multiplier 1.4
               torc-trio correct-resources 3 --job-ids 15,16""",
            arguments=_correct_arguments, run=cmd_correct_resources,
            aliases=("workflows correct-resources",)),
]
