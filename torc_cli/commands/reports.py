"""Reading what happened: ``reports summary``, ``logs analyze``, ``events monitor``, ``jobs get``
and ``jobs log`` (Torc's names).

Where a job's output is: each result records it (``stdout_path``/``stderr_path``, written by
the runner in the job's stdio mode: :mod:`torc_cli.stdio`); for a job still running, where a
runner writing to the same output directory puts it, under the
output directory the runner was given (``-o/--output-dir``, default ``torc_output``). These
commands read them from this machine's file system: a runner on a node that does not share it
wrote them elsewhere, and the commands say which path they looked for.

:func:`follow_workflow_feed` is the event-feed loop of ``watch`` as a helper (counts kept from
the messages, the end of the workflow, a lost or overflowing feed as
:class:`~torc_cli.exits.FeedLost`); ``events monitor`` uses it, and ``watch`` could too.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .. import stdio as job_stdio
from ..command import Command
from ..exits import EXIT_OK, InputError
from ..feed import follow_workflow_feed
from ..output import DONE_STATUSES, STATUS_ORDER, format_value, print_json, print_json_line
from ..procs import describe_exit
from ..session import Context
from .inspect import workflow_argument

#: At most this much of the end of each log file is read (a job may write gigabytes).
TAIL_BYTES = 1 << 20
#: Lines of stderr shown when no known cause is found.
TAIL_LINES = 5
#: Statuses whose jobs will not run again in this run (unless reset).
FINAL = frozenset(DONE_STATUSES)


def _output_dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output-dir", dest="output_dir", default=argparse.SUPPRESS,
                   help="the runner's output directory, where job_stdio/ is (default: "
                        "torc_output)")


def _wf_stdio(wf: dict[str, Any]) -> dict[str, Any] | None:
    return ((wf.get("spec_settings") or {}).get("execution_config") or {}).get("stdio")


def _log_paths(ctx: Context, wid: int, job: dict[str, Any], run_id: int, attempt: int,
               result: dict[str, Any] | None, wf_stdio: dict[str, Any] | None) \
        -> tuple[Path | None, Path | None]:
    """(stdout, stderr) of a job attempt; None where it was not kept. A result says where its
    runner put them; where that file is not (moved, or on another node's disk), and for a job
    still running, they are where a runner writing to ``--output-dir`` puts them in the job's
    stdio mode."""
    stem = job_stdio.job_stem(ctx.output_dir, wid, job["id"], run_id, attempt)
    p = job_stdio.plan(stem, *job_stdio.effective(wf_stdio, job.get("stdio")))
    if result is None or not ("stdout_path" in result or "stderr_path" in result):
        return _path(p.stdout), _path(p.stderr)
    return (_pick(result.get("stdout_path"), p.stdout),
            _pick(result.get("stderr_path"), p.stderr))


def _path(text: str | None) -> Path | None:
    return None if text is None else Path(text)


def _pick(recorded: str | None, under_output_dir: str | None) -> Path | None:
    """The recorded file if it is there, else the one under --output-dir if that is; else
    the recorded one (named in what the command says). None: not kept."""
    if recorded is None:
        return None
    for candidate in (recorded, under_output_dir):
        if candidate is not None and Path(candidate).exists():
            return Path(candidate)
    return Path(recorded)


def _shown(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _duration(seconds: float) -> str:
    """'2h 30m 15s', '45m 30s', '4.2s'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    h, rest = divmod(round(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m}m {s}s" if h else f"{m}m {s}s"


def _exit_text(code: int | None) -> str:
    if code is None:
        return "no result"
    return describe_exit(code)  # 137: 'exit code 137 (killed by SIGKILL)'


def _latest_per_job(results: Iterable[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each job's result of its latest attempt."""
    latest: dict[int, dict[str, Any]] = {}
    for r in results:
        job = int(r["job_id"])
        if job not in latest or int(r["attempt"]) >= int(latest[job]["attempt"]):
            latest[job] = r
    return latest


async def _failed_jobs(ctx: Context, wid: int) -> list[dict[str, Any]]:
    """The jobs that failed or were terminated, in id order."""
    jobs = [j for status in ("failed", "terminated")
            async for j in ctx.client.iter_jobs(wid, status=status)]
    return sorted(jobs, key=lambda j: int(j["id"]))


# ---------------------------------------------------------------------------------------------
# reports summary


async def cmd_reports_summary(ctx: Context) -> int:
    wid = await ctx.workflow_id()
    client = ctx.client
    wf = await client.get_workflow(wid)
    status = await client.workflow_status(wid)
    run_id = int(status["run_id"])
    results = [r async for r in client.iter_results(wid, run_id=run_id)]
    latest = _latest_per_job(results)
    total_exec = sum(float(r["exec_time_s"]) for r in results)
    starts = [float(r["completed_at"]) - float(r["exec_time_s"]) for r in results]
    walltime = max(float(r["completed_at"]) for r in results) - min(starts) if results else 0.0
    failed = []
    for job in await _failed_jobs(ctx, wid):
        r = latest.get(int(job["id"]))
        attempt = int(r["attempt"]) if r else int(job["attempt"])
        out, err = _log_paths(ctx, wid, job, run_id, attempt, r, _wf_stdio(wf))
        failed.append({"job_id": job["id"], "job_name": job["name"], "status": job["status"],
                       "return_code": r["return_code"] if r else None, "run_id": run_id,
                       "attempt": attempt, "stdout": _shown(out), "stderr": _shown(err)})
    counts = {s: int(status["counts"].get(s, 0)) for s in STATUS_ORDER}
    summary = {
        "workflow_id": wid, "workflow_name": wf["name"], "workflow_user": wf.get("user"),
        "run_id": run_id, "is_complete": bool(status["is_complete"]),
        "is_canceled": bool(status["is_canceled"]), "total_jobs": int(status["total"]),
        "jobs_by_status": counts, "results": len(results),
        "total_exec_time_seconds": total_exec,
        "total_exec_time_minutes": total_exec / 60,
        "total_exec_time_formatted": _duration(total_exec),
        "mean_exec_time_seconds": total_exec / len(results) if results else 0.0,
        "walltime_seconds": walltime, "walltime_formatted": _duration(walltime),
        "failed_jobs": failed,
    }
    if ctx.json:
        print_json(summary)
        return EXIT_OK
    state = ("canceled" if summary["is_canceled"] else "complete" if summary["is_complete"]
             else "in progress")
    lines = ["Workflow Summary", "================", "",
             f"Workflow ID: {wid}", f"Name: {wf['name']}",
             f"User: {format_value('user', wf.get('user'))}", f"Run: {run_id} ({state})", "",
             f"Job Status (total: {summary['total_jobs']}):"]
    lines += [f"  {s.capitalize() + ':':<15}{n}" for s, n in counts.items() if n]
    lines += ["", f"Results (run {run_id}): {len(results)}",
              f"Total Execution Time: {_duration(total_exec)}",
              f"Mean Execution Time:  {_duration(summary['mean_exec_time_seconds'])}",
              f"Walltime:             {_duration(walltime)}"]
    if failed:
        lines += ["", f"Jobs that failed ({len(failed)}):"]
        for f in failed:
            lines += [f"  {f['job_name']} (id {f['job_id']}): {f['status']}, "
                      f"{_exit_text(f['return_code'])}, attempt {f['attempt']}",
                      f"    stdout: {f['stdout']}", f"    stderr: {f['stderr']}"]
    elif summary["is_complete"] and counts["completed"] == summary["total_jobs"]:
        lines += ["", "All jobs completed successfully."]
    print("\n".join(lines))
    return EXIT_OK


def _summary_arguments(p: argparse.ArgumentParser) -> None:
    workflow_argument(p)
    _output_dir_option(p)


# ---------------------------------------------------------------------------------------------
# logs analyze


@dataclass(frozen=True, slots=True)
class Cause:
    key: str
    label: str
    #: a line matching this is evidence
    pattern: re.Pattern[str] | None
    #: return codes that are evidence by themselves
    codes: frozenset[int] = frozenset()
    #: return codes that a matching line needs (empty: any)
    needs_codes: frozenset[int] = frozenset()


#: Known causes, in the order they are tried: the first with evidence wins (a MemoryError in
#: a Python traceback is a memory problem first).
CAUSES = (
    Cause("out_of_memory", "out of memory", re.compile(
        r"(?i:out of memory|oom[-_ ]kill)|\bMemoryError\b|std::bad_alloc|"
        r"Cannot allocate memory|\bKilled\b")),
    Cause("time_limit", "time limit", re.compile(r"DUE TO TIME LIMIT|\bTIMEOUT\b")),
    Cause("time_limit", "time limit", re.compile(r"\bTerminated\b"),
          needs_codes=frozenset({143, -15})),
    Cause("segfault", "segmentation fault", re.compile(r"Segmentation fault|SIGSEGV"),
          codes=frozenset({139, -11})),
    Cause("command_not_found", "command not found", re.compile(r"command not found"),
          codes=frozenset({127})),
    Cause("python_traceback", "Python exception",
          re.compile(r"^Traceback \(most recent call last\):", re.MULTILINE)),
)
_TERM_CODES = frozenset({143, -15})
_TERMINATED = Cause("time_limit", "time limit", None)


def read_tail(path: Path, limit: int = TAIL_BYTES) -> str | None:
    """The last ``limit`` bytes of a file as text (a cut first line dropped), or None when it
    cannot be read."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - limit))
            data = f.read(limit)
    except OSError:
        return None
    text = data.decode("utf-8", errors="replace")
    if size > limit:
        text = text.partition("\n")[2]
    return text


def diagnose(code: int | None, texts: list[tuple[Path, str]], *, terminated: bool = False) \
        -> tuple[Cause | None, str, str]:
    """The first known cause with evidence: (cause, the matching line, the file it is in);
    a return code alone is evidence for some (139: a segfault), and a job the runner
    terminated (SIGTERM, 143 or -15) ran into its allocation's time limit."""
    for cause in CAUSES:
        if cause.needs_codes and code not in cause.needs_codes:
            continue
        for path, text in texts:
            if cause.pattern is None:
                continue
            found = _last_match(cause.pattern, text)
            if found is not None:
                if cause.key == "python_traceback":  # the exception says more
                    found = _raised(text[text.rfind(found):]) or found
                return cause, found.strip(), str(path)
        if code is not None and code in cause.codes:
            return cause, f"(return code {code})", ""
    if terminated and code in _TERM_CODES:  # the runner's SIGTERM before the allocation ended
        return _TERMINATED, f"(terminated by the runner, return code {code})", ""
    return None, "", ""


def _raised(traceback: str) -> str | None:
    """The exception line of a traceback: the first line after it that is not indented (the
    frames are)."""
    for line in traceback.splitlines()[1:]:
        if line.strip() and not line[0].isspace():
            return line
    return None


def _last_match(pattern: re.Pattern[str], text: str) -> str | None:
    """The whole last line holding a match."""
    last = None
    for m in pattern.finditer(text):
        last = m
    if last is None:
        return None
    start = text.rfind("\n", 0, last.start()) + 1
    end = text.find("\n", last.end())
    return text[start:] if end < 0 else text[start:end]


async def cmd_logs_analyze(ctx: Context) -> int:
    wid = await ctx.workflow_id()
    client = ctx.client
    run_id = int((await client.workflow_status(wid))["run_id"])
    wf_stdio = _wf_stdio(await client.get_workflow(wid))
    latest = _latest_per_job([r async for r in client.iter_results(wid, run_id=run_id)])
    rows = []
    for job in await _failed_jobs(ctx, wid):
        job_id = int(job["id"])
        r = latest.get(job_id)
        code = None if r is None else int(r["return_code"])
        attempt = int(r["attempt"]) if r else int(job["attempt"])
        out, err = _log_paths(ctx, wid, job, run_id, attempt, r, wf_stdio)
        kept = list(dict.fromkeys(p for p in (err, out) if p is not None))
        texts = [(p, t) for p in kept if (t := read_tail(p)) is not None]
        missing = [str(p) for p in kept if not p.exists()]
        cause, line, where = diagnose(code, texts,
                                      terminated=job["status"] == "terminated")
        stderr_text = next((t for p, t in texts if p == err), "")
        tail = [ln for ln in stderr_text.splitlines() if ln.strip()][-TAIL_LINES:]
        rows.append({"job_id": job_id, "job_name": job["name"], "status": job["status"],
                     "return_code": code, "run_id": run_id, "attempt": attempt,
                     "cause": cause.key if cause else None,
                     "cause_label": cause.label if cause else "no known cause",
                     "match": line or None, "file": where or None, "stdout": _shown(out),
                     "stderr": _shown(err), "missing": missing,
                     "stderr_tail": [] if cause else tail})
    if ctx.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        print(f"Workflow {wid} (run {run_id}): no failed or terminated jobs.")
        return EXIT_OK
    print(f"Workflow {wid} (run {run_id}): {len(rows)} failed or terminated jobs")
    for row in rows:
        head = (f"{row['job_name']} (id {row['job_id']}, {row['status']}, "
                f"{_exit_text(row['return_code'])}): {row['cause_label']}")
        if row["cause"] and row["file"]:
            print(f"{head}: {row['file']}: {row['match']}")
        elif row["cause"]:
            print(f"{head} {row['match']}")
        elif len(row["missing"]) == 2:
            print(f"{head}: no output files at {row['stdout']} or {row['stderr']} (the runner "
                  "wrote elsewhere: another --output-dir, or a file system not shared here)")
        else:
            print(f"{head}; the last lines of {row['stderr']}:"
                  if row["stderr_tail"] else f"{head}; its stderr {row['stderr']} is empty")
            for line in row["stderr_tail"]:
                print(f"    {line}")
    return EXIT_OK


def _analyze_arguments(p: argparse.ArgumentParser) -> None:
    workflow_argument(p)
    _output_dir_option(p)


# ---------------------------------------------------------------------------------------------
# events monitor, and the feed loop it shares with watch

def _event_line(message: dict[str, Any], counts: dict[str, int]) -> str:
    ts = format_value("ts_at", message.get("ts", time.time()))
    kind = message.get("type")
    wid = message.get("workflow_id")
    if kind == "job_status":
        return (f"{ts} job {message.get('name')} ({message.get('job_id')}): "
                f"{message.get('old')} -> {message.get('new')}")
    if kind == "workflow":
        return f"{ts} workflow {wid}: {message.get('event')}"
    if kind == "counts":
        shown = ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER if counts.get(s))
        return f"{ts} workflow {wid}: {shown or 'no jobs'}"
    return f"{ts} {message}"


async def cmd_events_monitor(ctx: Context) -> int:
    wid = await ctx.workflow_id()
    minutes = ctx.args.duration

    def show(message: dict[str, Any], counts: dict[str, int]) -> None:
        if ctx.json:
            print_json_line(message)
        else:
            print(_event_line(message, counts), flush=True)

    with trio.move_on_after(math.inf if minutes is None else minutes * 60) as scope:
        await follow_workflow_feed(ctx, wid, show, "events monitor",
                                   end_events=("completed", "canceled", "deleted"))
    if scope.cancelled_caught:
        print(f"torc-trio: events monitor: stopped after {minutes:g} minutes; workflow {wid} "
              "goes on", file=sys.stderr)
    return EXIT_OK


def _positive_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of minutes: {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a positive number of minutes, got {text}")
    return value


def _monitor_arguments(p: argparse.ArgumentParser) -> None:
    workflow_argument(p)
    p.add_argument("-d", "--duration", type=_positive_minutes, default=None, metavar="MINUTES",
                   help="stop after this many minutes (default: when the workflow completes "
                        "or is canceled)")


# ---------------------------------------------------------------------------------------------
# jobs get, jobs log


def _print_record(record: dict[str, Any]) -> None:
    width = max((len(k) for k in record), default=0)
    for key, value in record.items():
        shown = (json.dumps(value) if isinstance(value, dict | list)
                 else format_value(key, value))
        print(f"{key:>{width}}: {shown}")


async def cmd_jobs_get(ctx: Context) -> int:
    job_id = ctx.args.job_id
    async for wf in ctx.client.iter_workflows():
        ranges = wf.get("job_id_ranges") or []
        if any(int(lo) <= job_id <= int(hi) for lo, hi in ranges):
            job = await ctx.client.get_job(int(wf["id"]), job_id)
            if ctx.json:
                print_json(job)
            else:
                _print_record(job)
            return EXIT_OK
    raise InputError(f"no job {job_id} in any workflow you may see (job ids are global: "
                     "`torc-trio jobs list WORKFLOW` lists a workflow's)")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _job_get_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", type=_positive_int, metavar="JOB_ID",
                   help="the job's id (ids are global: no workflow needed)")


class _Printer:
    """A log's bytes to stdout: raw for people, one JSON object per line with -f json."""

    def __init__(self, ctx: Context, about: dict[str, Any]) -> None:
        self.json = ctx.json
        self.about = about
        self.partial = b""

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self.json:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            print_json_line({**self.about, "line": line.decode("utf-8", errors="replace")})

    def close(self) -> None:
        if self.partial:
            lines, self.partial = self.partial, b""
            if self.json:
                print_json_line({**self.about, "line": lines.decode("utf-8", errors="replace")})


def _copy_from(path: Path, offset: int, printer: _Printer) -> int:
    """Print what ``path`` holds past ``offset``; the new offset."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            while chunk := f.read(1 << 20):
                printer.write(chunk)
                offset += len(chunk)
    except FileNotFoundError:
        pass
    return offset


def _no_file(path: Path, stream: str, job: dict[str, Any], run_id: int, attempt: int) \
        -> InputError:
    status = job["status"]
    if status in ("uninitialized", "blocked", "ready") and attempt == int(job["attempt"]):
        why = f"job {job['id']} has not run in run {run_id} yet (it is {status})"
    elif status == "pending":
        why = f"job {job['id']} is about to start (pending): --follow waits for it"
    elif status == "canceled" or status == "disabled":
        why = f"job {job['id']} is {status}: it did not run"
    else:
        why = (f"job {job['id']} is {status}: its runner wrote elsewhere (another "
               "--output-dir, or a node whose file system is not shared with this one)")
    return InputError(f"{path}: no such file (the {stream} of job {job['id']}, run {run_id}, "
                      f"attempt {attempt}); {why}")


async def cmd_jobs_log(ctx: Context) -> int:
    args = ctx.args
    wid, job_id = args.workflow_id, args.job_id
    job = await ctx.client.get_job(wid, job_id)
    run_id, current = int(job["run_id"]), int(job["attempt"])
    attempt = args.attempt or current
    if attempt > current:
        raise InputError(f"--attempt {attempt}: job {job_id} is at attempt {current} of run "
                         f"{run_id}")
    stream = "stderr" if args.stderr else "stdout"
    result = None
    async for r in ctx.client.iter_results(wid, run_id=run_id, job_id=job_id):
        if int(r["attempt"]) == attempt:
            result = r
    wf_stdio = _wf_stdio(await ctx.client.get_workflow(wid))
    out, err = _log_paths(ctx, wid, job, run_id, attempt, result, wf_stdio)
    path = err if args.stderr else out
    if path is None:
        raise InputError(f"job {job_id}, run {run_id}, attempt {attempt}: its {stream} was not "
                         "kept (stdio mode "
                         f"{job_stdio.effective(wf_stdio, job.get('stdio'))[0]!r}, or "
                         "delete_on_success after it completed)")
    printer = _Printer(ctx, {"workflow_id": wid, "job_id": job_id, "run_id": run_id,
                             "attempt": attempt, "stream": stream})
    done = job["status"] in FINAL or attempt < current
    if not path.exists() and (not args.follow or done):
        raise _no_file(path, stream, job, run_id, attempt)
    offset = _copy_from(path, 0, printer)
    if args.follow:
        if not path.exists():
            print(f"torc-trio: waiting for {path} (job {job_id} is {job['status']})",
                  file=sys.stderr, flush=True)
        while True:
            await trio.sleep(args.poll_interval)
            job = await ctx.client.get_job(wid, job_id)
            ended = (job["status"] in FINAL or int(job["run_id"]) != run_id
                     or int(job["attempt"]) != attempt)
            offset = _copy_from(path, offset, printer)  # after the status: nothing is missed
            if ended:
                if job["status"] not in FINAL:
                    print(f"torc-trio: job {job_id} moved on to run {job['run_id']} attempt "
                          f"{job['attempt']} ({job['status']})", file=sys.stderr)
                break
    printer.close()
    return EXIT_OK


def _job_log_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int, metavar="WORKFLOW", help="the job's workflow")
    p.add_argument("job_id", type=int, metavar="JOB", help="the job's id")
    p.add_argument("--stderr", action="store_true", help="its stderr (default: stdout)")
    p.add_argument("--attempt", type=_positive_int, metavar="N",
                   help="this attempt of the current run (default: the latest)")
    p.add_argument("--follow", action="store_true",
                   help="keep printing as the file grows, until the job ends (Ctrl-C stops)")
    p.add_argument("--poll-interval", type=float, default=1.0, metavar="SECONDS",
                   help="with --follow: how often to look at the job (default 1)")
    _output_dir_option(p)


COMMANDS = [
    Command("reports summary", "summarize a workflow's results: counts, run times, failures",
            """torc-trio reports summary 3
               torc-trio -f json reports summary 3 | jq .failed_jobs
               torc-trio reports summary 3 --output-dir /scratch/run1""",
            arguments=_summary_arguments, run=cmd_reports_summary),
    Command("logs analyze", "find known causes of failed jobs in their output",
            """torc-trio logs analyze 3
               torc-trio logs analyze 3 -o /scratch/run1
               torc-trio -f json logs analyze 3 | jq '.[] | {job_name, cause}'""",
            arguments=_analyze_arguments, run=cmd_logs_analyze),
    Command("events monitor", "print a workflow's events as they happen, until it ends",
            """torc-trio events monitor 3
               torc-trio events monitor 3 --duration 10
               torc-trio -f json events monitor 3 | jq -c 'select(.type == "job_status")'""",
            arguments=_monitor_arguments, run=cmd_events_monitor),
    Command("jobs get", "show one job (by its id alone)",
            """torc-trio jobs get 17
               torc-trio -f json jobs get 17 | jq .depends_on""",
            arguments=_job_get_arguments, run=cmd_jobs_get),
    Command("jobs log", "print a job's stdout or stderr (the latest attempt of the current run)",
            """torc-trio jobs log 3 17
               torc-trio jobs log 3 17 --stderr --attempt 1
               torc-trio jobs log 3 17 --follow
               torc-trio jobs log 3 17 -o /scratch/run1""",
            arguments=_job_log_arguments, run=cmd_jobs_log),
]
