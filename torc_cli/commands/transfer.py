"""Moving workflows between servers: ``workflows export`` and ``workflows import`` (Torc's
names, options and export format, version "1.0").

The export document is Torc's shape: ``export_version``, ``exported_at``, ``workflow``,
``files``, ``user_data``, ``resource_requirements``, ``slurm_schedulers``,
``local_schedulers`` (always empty here), ``failure_handlers``, ``jobs`` (their dependencies,
files and user data by id, under Torc's field names ``depends_on_job_ids``, ``input_file_ids``
...), ``workflow_actions`` (their jobs by id) and, when asked, ``results`` and ``events``.
Resource requirements, schedulers and failure handlers have no ids on this server: jobs name
them, as specs do.

Import rebuilds a spec from the document (jobs by name, dependencies by name, files, user
data, resource requirements, schedulers, failure handlers, actions; parameters are already
expanded) and creates it: the server gives new ids and initializes the jobs (Torc leaves them
uninitialized until ``workflows initialize``; here they are ready or blocked at once, ready to
run). Results, when the document has them, are then recorded against the new job ids through
``POST /workflows/{id}/results/import``; the workflow's run moves past the imported runs, so
its next results never collide with them. Events are not imported (see :func:`_refuse_events`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from torc_core import SpecError

from .. import __version__
from ..command import Command
from ..exits import EXIT_OK, InputError
from ..output import print_json
from ..session import Context
from ..specs import check_spec
from .inspect import workflow_argument

EXPORT_VERSION = "1.0"
#: Results sent per import request: ~200 bytes each, well under the server's 64 MiB body.
RESULTS_PER_REQUEST = 50_000
#: Workflow settings exported at the top of ``workflow`` (as Torc's workflow model has them),
#: besides the ``compute_node_*`` ones.
SETTINGS = ("project", "metadata", "use_pending_failed", "jobs_sort_method", "resource_monitor",
            "slurm_defaults", "execution_config", "enable_ro_crate")
#: Job fields of the spec, copied as they are.
JOB_FIELDS = ("invocation_script", "resource_requirements", "scheduler", "failure_handler",
              "cancel_on_blocking_job_failure", "supports_termination", "priority", "stdio")
#: Torc's relationship fields of a job: (export field, spec field, what the ids name).
JOB_LINKS = (("depends_on_job_ids", "depends_on", "jobs"),
             ("input_file_ids", "input_files", "files"),
             ("output_file_ids", "output_files", "files"),
             ("input_user_data_ids", "input_user_data", "user_data"),
             ("output_user_data_ids", "output_user_data", "user_data"))
_SERVER_LINKS = {"depends_on_job_ids": "depends_on", "input_file_ids": "input_files",
                 "output_file_ids": "output_files", "input_user_data_ids": "input_user_data",
                 "output_user_data_ids": "output_user_data"}
RR_FIELDS = ("name", "num_cpus", "num_gpus", "num_nodes", "memory", "runtime")
RULE_FIELDS = ("exit_codes", "match_all_exit_codes", "recovery_script", "max_retries")
RESULT_FIELDS = ("job_id", "run_id", "attempt", "return_code", "status", "exec_time_s",
                 "completed_at", "stdout_path", "stderr_path")


# ---------------------------------------------------------------------------------------------
# export


async def _all_pages(fetch: Callable[..., Awaitable[dict[str, Any]]], wid: int,
                     page: int = 1000) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        reply = await fetch(wid, offset=len(items), limit=page)
        got = reply.get("items", [])
        items.extend(got)
        if not got or len(items) >= int(reply.get("total", 0)):
            return items


async def build_export(ctx: Context, wid: int, *, results: bool,
                       events: bool) -> dict[str, Any]:
    """The export document of workflow ``wid`` (see the module docstring)."""
    client = ctx.client
    wf = await client.get_workflow(wid)
    defs = await client.workflow_definitions(wid)
    jobs = [j async for j in client.iter_jobs(wid)]
    names = {int(j["id"]): str(j["name"]) for j in jobs}
    by_name = {name: job_id for job_id, name in names.items()}
    settings = dict(defs.get("settings") or {})
    workflow = {key: wf.get(key) for key in ("id", "name", "user", "description", "created_at",
                                             "run_id", "is_complete", "is_canceled",
                                             "job_id_base", "num_jobs")}
    workflow.update({key: settings.get(key) for key in SETTINGS})
    workflow.update(settings.get("compute_node_settings") or {})
    doc: dict[str, Any] = {
        "export_version": EXPORT_VERSION,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "exported_by": f"torc-trio {__version__}",
        "workflow": workflow,
        "files": [f async for f in client.iter_files(wid)],
        "user_data": await _all_pages(client.list_user_data, wid),
        "resource_requirements": defs.get("resource_requirements", []),
        "slurm_schedulers": defs.get("slurm_schedulers", []),
        "local_schedulers": [],
        "failure_handlers": defs.get("failure_handlers", []),
        "jobs": [_export_job(j) for j in jobs],
        "workflow_actions": [
            {**{k: v for k, v in a.items() if k != "jobs"},
             "job_ids": [by_name[n] for n in a.get("jobs") or () if n in by_name]}
            for a in defs.get("actions", [])],
    }
    if results:
        doc["results"] = [r async for r in client.iter_results(wid)]
    if events:
        doc["events"] = await _all_events(ctx, wid)
    return doc


def _export_job(job: dict[str, Any]) -> dict[str, Any]:
    out = {key: job.get(key) for key in ("id", "name", "command", "status", "attempt",
                                          "num_cpus", "num_gpus", "num_nodes",
                                          "memory_bytes", "runtime_s", *JOB_FIELDS)}
    for torc_name, ours in _SERVER_LINKS.items():
        out[torc_name] = list(job.get(ours) or [])
    return out


async def _all_events(ctx: Context, wid: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await ctx.client.list_events(wid, after=after, limit=1000)
        items = page.get("items", [])
        if not items:
            return events
        events.extend(items)
        after = int(items[-1]["id"])


async def cmd_export(ctx: Context) -> int:
    args = ctx.args
    wid = await ctx.workflow_id()
    doc = await build_export(ctx, wid, results=args.include_results,
                             events=args.include_events)
    text = json.dumps(doc, indent=2, default=str) + "\n"
    stats = {"success": True, "workflow_id": wid, "workflow_name": doc["workflow"]["name"],
             "output_file": args.output, "jobs": len(doc["jobs"]), "files": len(doc["files"]),
             "user_data": len(doc["user_data"]), "results": len(doc.get("results", [])),
             "events": len(doc.get("events", []))}
    if args.output in (None, "-"):
        sys.stdout.write(text)
        sys.stdout.flush()
        return EXIT_OK
    _write_atomically(Path(args.output), text)
    if ctx.json:
        print_json(stats)
    else:
        extra = "".join(f", {stats[k]} {k}" for k in ("results", "events")
                        if k in doc)
        print(f"Exported workflow {wid} ({stats['workflow_name']}) to {args.output}: "
              f"{stats['jobs']} jobs, {stats['files']} files, {stats['user_data']} user data"
              f"{extra}.")
    return EXIT_OK


def _write_atomically(path: Path, text: str) -> None:
    """Whole or not at all: a failed export leaves no half document where one was asked for."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write: {exc.strerror}") from None


def _export_arguments(p: argparse.ArgumentParser) -> None:
    workflow_argument(p)
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the document here (default, or -: standard output)")
    p.add_argument("--include-results", action="store_true",
                   help="include every run's job results")
    p.add_argument("--include-events", action="store_true",
                   help="include the workflow's events (its history)")


# ---------------------------------------------------------------------------------------------
# import


def prepare_import(args: argparse.Namespace) -> dict[str, Any]:
    """Read the document and rebuild its spec before any server is used: a bad document
    creates nothing."""
    source = "standard input" if args.file == "-" else args.file
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    except OSError as exc:
        raise InputError(f"{args.file}: cannot read: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{source}: not a JSON export document: {exc}") from None
    if not isinstance(doc, dict) or "export_version" not in doc:
        raise InputError(f"{source}: not a workflow export (no export_version); export one "
                         "with `torc-trio workflows export`")
    if doc["export_version"] != EXPORT_VERSION:
        raise InputError(f"{source}: export_version {doc['export_version']!r} is not "
                         f"supported (this torc-trio reads {EXPORT_VERSION!r})")
    try:
        return _rebuild(doc, source, args)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{source}: malformed export document ({type(exc).__name__}: "
                         f"{exc})") from None


def _refuse_events(doc: dict[str, Any], source: str, args: argparse.Namespace) -> None:
    """Events are not imported. On the new workflow they would follow its own (created,
    initialized), so the last event would say `completed` of a workflow whose jobs are
    about to run, and their data name the source server's compute nodes and jobs. Refused
    rather than dropped unsaid: --skip-events says the user knows."""
    events = doc.get("events") or []
    if events and not args.skip_events:
        raise InputError(
            f"{source}: has {len(events)} events, and torc-trio does not import events (they "
            "would follow the new workflow's own and name the source's compute nodes); "
            "import with --skip-events (the export keeps them)")


def _rebuild(doc: dict[str, Any], source: str, args: argparse.Namespace) -> dict[str, Any]:
    _refuse_events(doc, source, args)
    wf = doc["workflow"]
    names: dict[str, dict[int, str]] = {
        "jobs": {int(j["id"]): str(j["name"]) for j in doc["jobs"]},
        "files": {int(f["id"]): str(f["name"]) for f in doc.get("files", [])},
        "user_data": {int(u["id"]): str(u["name"]) for u in doc.get("user_data", [])},
    }
    spec: dict[str, Any] = {"name": args.name or wf["name"]}
    for key in ("user", "description", *SETTINGS):
        if wf.get(key) is not None:
            spec[key] = wf[key]
    spec.update({k: v for k, v in wf.items() if k.startswith("compute_node_") and v is not None})
    spec["files"] = [{"name": f["name"], "path": f["path"]} for f in doc.get("files", [])]
    spec["user_data"] = [{"name": u["name"], "data": u.get("data"),
                          "is_ephemeral": bool(u.get("is_ephemeral"))}
                         for u in doc.get("user_data", [])]
    spec["resource_requirements"] = [_rr(r) for r in doc.get("resource_requirements", [])]
    spec["failure_handlers"] = [
        {"name": h["name"], "rules": [{k: r[k] for k in RULE_FIELDS if r.get(k) is not None}
                                      for r in h.get("rules", [])]}
        for h in doc.get("failure_handlers", [])]
    spec["slurm_schedulers"] = [{k: v for k, v in s.items() if v is not None}
                                for s in doc.get("slurm_schedulers", [])]
    jobs = []
    for k, job in enumerate(doc["jobs"]):
        out: dict[str, Any] = {"name": job["name"], "command": job["command"]}
        out.update({f: job[f] for f in JOB_FIELDS if job.get(f) is not None})
        for torc_name, ours, kind in JOB_LINKS:
            ids = job.get(torc_name) or []
            missing = [i for i in ids if int(i) not in names[kind]]
            if missing:
                raise InputError(f"{source}: jobs[{k}] {job['name']!r}: {torc_name}: no "
                                 f"{kind.replace('_', ' ')} with id {missing[0]} in the export")
            if ids:
                out[ours] = [names[kind][int(i)] for i in ids]
        jobs.append(out)
    spec["jobs"] = jobs
    spec["actions"] = [_action(a, names["jobs"], source, k)
                       for k, a in enumerate(doc.get("workflow_actions", []))]
    spec = {k: v for k, v in spec.items() if v not in ([], None)}
    try:
        check_spec(spec)
    except SpecError as exc:
        raise SpecError([f"{source}: the rebuilt spec: {e}" for e in exc.errors]) from None
    results = [] if args.skip_results else list(doc.get("results") or [])
    for k, r in enumerate(results):
        if int(r["job_id"]) not in names["jobs"]:
            raise InputError(f"{source}: results[{k}]: no job with id {r['job_id']} in the "
                             "export")
    mtimes = {f["name"]: f["st_mtime"] for f in doc.get("files", [])
              if f.get("st_mtime") is not None}
    # What each job needs as exported: a requirement corrected after creation
    # (correct-resources, recover) is the job's own, not its named requirement's.
    sizes = {job["name"]: {k: job[k] for k in ("num_cpus", "memory_bytes", "runtime_s")
                           if job.get(k) is not None} for job in doc["jobs"]}
    return {"spec": spec, "results": results, "job_names": names["jobs"], "mtimes": mtimes,
            "sizes": sizes,
            "source": source}


def _rr(r: dict[str, Any]) -> dict[str, Any]:
    out = {k: r[k] for k in RR_FIELDS if r.get(k) is not None}
    if "memory" not in out and r.get("memory_bytes") is not None:
        out["memory"] = str(int(r["memory_bytes"]))
    if "runtime" not in out and r.get("runtime_s") is not None:
        out["runtime"] = f"PT{int(r['runtime_s'])}S"
    return out


def _action(a: dict[str, Any], job_names: dict[int, str], source: str, k: int) \
        -> dict[str, Any]:
    out = {key: v for key, v in a.items()
           if key not in ("job_ids", "jobs", "index", "claimed", "due") and v is not None}
    ids = a.get("job_ids") or []
    missing = [i for i in ids if int(i) not in job_names]
    if missing:
        raise InputError(f"{source}: workflow_actions[{k}]: job_ids: no job with id "
                         f"{missing[0]} in the export")
    jobs = [job_names[int(i)] for i in ids] or list(a.get("jobs") or [])
    if jobs:
        out["jobs"] = jobs
    if not out.get("commands"):
        out.pop("commands", None)
    return out


async def cmd_import(ctx: Context) -> int:
    prepared: dict[str, Any] = ctx.args.prepared
    spec = prepared["spec"]
    client = ctx.client
    created = await client.create_workflow(spec)
    wid = int(created["id"])
    try:
        answer = await _fill(ctx, wid, prepared)
    except BaseException:
        # All or nothing: a workflow without the results it was exported with is not the
        # import that was asked for (also when interrupted: the cleanup is shielded).
        await _delete_quietly(ctx, wid)
        raise
    status = await client.workflow_status(wid)
    counts = {k: v for k, v in status["counts"].items() if v}
    summary = {"success": True, "workflow_id": wid, "workflow_name": created["name"],
               "jobs": created["jobs"], "files": created.get("files", 0),
               "user_data": created.get("user_data", 0), "results": answer["imported"],
               "events": 0, "run_id": status["run_id"], "counts": counts}
    if ctx.json:
        print_json(summary)
    else:
        print("Successfully imported workflow:")
        print(f"  Workflow ID: {wid}")
        print(f"  Name: {created['name']}")
        print(f"  Jobs: {created['jobs']} ("
              + ", ".join(f"{v} {k}" for k, v in counts.items()) + ")")
        print(f"  Files: {summary['files']}")
        print(f"  User data: {summary['user_data']}")
        if prepared["results"]:
            print(f"  Results: {answer['imported']} (of earlier runs; the next run is "
                  f"{status['run_id']})")
        print("The jobs start over: the server initialized them, ready to run "
              f"(torc-trio run {wid}).")
    return EXIT_OK


async def _fill(ctx: Context, wid: int, prepared: dict[str, Any]) -> dict[str, Any]:
    """Everything the spec could not carry: file times, requirements corrected after the
    exported workflow was created, and the results, by the new ids."""
    client = ctx.client
    if prepared["mtimes"]:
        new_files = {f["name"]: int(f["id"]) async for f in client.iter_files(wid)}
        await client.record_file_mtimes(wid, {new_files[name]: m
                                              for name, m in prepared["mtimes"].items()})
    changed = [{"job_id": int(j["id"]), **want} async for j in client.iter_jobs(wid)
               if (want := prepared["sizes"].get(j["name"]))
               and any(j.get(k) != v for k, v in want.items())]
    if changed:
        await client.set_job_resources(wid, changed, reason="import: as exported")
    answer: dict[str, Any] = {"imported": 0, "duplicates": 0}
    results = prepared["results"]
    if not results:
        return answer
    new_ids = {j["name"]: int(j["id"]) async for j in client.iter_jobs(wid)}
    job_names: dict[int, str] = prepared["job_names"]
    rows = [{**{k: r[k] for k in RESULT_FIELDS if k in r},
             "job_id": new_ids[job_names[int(r["job_id"])]]} for r in results]
    for start in range(0, len(rows), RESULTS_PER_REQUEST):
        got = await client.import_results(wid, rows[start:start + RESULTS_PER_REQUEST])
        answer["imported"] += got["imported"]
        answer["duplicates"] += got["duplicates"]
    return answer


async def _delete_quietly(ctx: Context, wid: int) -> None:
    """Best effort, inside an error already on its way (a server gone stays gone)."""
    with trio.move_on_after(30) as scope:
        scope.shield = True
        try:
            await ctx.client.delete_workflow(wid)
        except Exception as exc:  # the first error is the one to report
            print(f"torc-trio: the import failed, and workflow {wid}, created for it, could "
                  f"not be deleted ({exc}): delete it with `torc-trio workflows delete {wid}`",
                  file=sys.stderr)
            return
    if not scope.cancelled_caught:
        print(f"torc-trio: the import failed; workflow {wid}, created for it, was deleted",
              file=sys.stderr)


def _import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="an exported workflow (JSON); - reads standard "
                                                "input")
    p.add_argument("--name", help="the new workflow's name (default: the exported one's)")
    p.add_argument("--skip-results", action="store_true",
                   help="leave out the results even if the export has them")
    p.add_argument("--skip-events", action="store_true",
                   help="leave out the events the export has (torc-trio does not import "
                        "events: an export with events needs this)")


COMMANDS = [
    Command("workflows export", "export a workflow to a portable JSON document (Torc's format)",
            """torc-trio workflows export 3 -o wf3.json
               torc-trio workflows export 3 --include-results -o backup.json
               torc-trio workflows export 3 > wf3.json
               torc-trio -f json workflows export 3 -o wf3.json --include-events""",
            arguments=_export_arguments, run=cmd_export),
    Command("workflows import", "create a workflow from an export, with new ids (and its "
                                "results)",
            """torc-trio workflows import wf3.json
               torc-trio workflows import backup.json --name copy --skip-results
               cat wf3.json | torc-trio --url http://other:8080/torc-service/v1 workflows import -
               torc-trio -f json workflows import complete.json --skip-events""",
            arguments=_import_arguments, run=cmd_import, prepare=prepare_import,
            creates=True),
]
