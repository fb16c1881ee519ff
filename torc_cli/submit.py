"""Workflows on Slurm: submitting allocations, cancelling them, recovering from lost ones.

An allocation runs ``torc-trio runner`` against the URL the server advertises (GET /version:
``serve --advertise-url``, or derived from ``--host``), with ``TORC_API_URL_FILE`` when the
server writes one, so that a server moved elsewhere is found; the runner takes its resources
and end time from the ``SLURM_*`` environment. A server only this host reaches (loopback) is
refused before anything is submitted when the allocations may start on other nodes
(:mod:`torc_cli.reach`). Allocations are recorded on the server
(so ``cancel`` can ``scancel`` them and ``recover`` can find those that vanished); actions that
schedule nodes are claimed on the server first, so each runs exactly once.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from torc_net.client import TorcClient

from . import local_runners, reach, slurm
from .reach import ServerAddress

#: Allocation states in which Slurm still has the job.
LIVE_STATES = ("submitted", "pending", "running")
DEFAULT_END_BUFFER_S = 60


class SubmitError(Exception):
    pass


def _scheduler_by_name(workflow: dict[str, Any], name: str | None) -> dict[str, Any]:
    schedulers: list[dict[str, Any]] = workflow.get("slurm_schedulers") or []
    if name is None:
        if len(schedulers) == 1:
            return schedulers[0]
        if not schedulers:
            raise SubmitError(
                f"workflow {workflow['id']} has no slurm_schedulers: add one to the spec "
                "(e.g. slurm_schedulers: [{name: cpu, account: myproject, walltime: '01:00:00'}])"
            )
        names = ", ".join(s["name"] for s in schedulers)
        raise SubmitError(f"workflow {workflow['id']}: which scheduler? it has {names}")
    for sched in schedulers:
        if sched["name"] == name:
            return sched
    raise SubmitError(f"workflow {workflow['id']}: no slurm scheduler named {name!r}")


#: The widest spread of runner start-ups (reached at 100 runners submitted together).
MAX_STARTUP_JITTER_S = 60.0


def startup_jitter_window(runners: int) -> float:
    """How widely runners submitted together spread their first contact with the server:
    0 for one, growing by 0.6 s a runner to 60 s at 100. A thousand allocations that start
    in the same second would otherwise all register and claim at once; the server copes (it
    queues past its concurrency bound) but every runner waits behind the burst."""
    return 0.0 if runners <= 1 else min(MAX_STARTUP_JITTER_S, 0.6 * runners)


def runner_argv(url: str, workflow_id: int, output_dir: Path, scheduler: str | None,
                end_buffer_s: float, idle_timeout_s: float | None,
                startup_jitter_s: float = 0.0, max_parallel: int | None = None) -> list[str]:
    argv = [sys.executable, "-m", "torc_cli.main", "--url", url, "-o", str(output_dir),
            "runner", str(workflow_id), "--end-buffer-seconds", str(end_buffer_s)]
    if max_parallel is not None:  # the action's max_parallel_jobs
        argv += ["-j", str(max_parallel)]
    if scheduler is not None:
        argv += ["--scheduler", scheduler]
    if idle_timeout_s is not None:
        argv += ["--idle-timeout-seconds", str(idle_timeout_s)]
    if startup_jitter_s > 0:
        argv += ["--startup-jitter-seconds", f"{startup_jitter_s:g}"]
    return argv


def _settings(workflow: dict[str, Any]) -> dict[str, Any]:
    return dict((workflow.get("spec_settings") or {}).get("compute_node_settings") or {})


def allocation_script(workflow: dict[str, Any], where: ServerAddress, output_dir: Path,
                      scheduler: dict[str, Any], *, scheduler_filter: str | None,
                      start_one_worker_per_node: bool = False,
                      startup_jitter_s: float = 0.0, max_parallel: int | None = None) -> str:
    settings = _settings(workflow)
    end_buffer = float(settings.get("compute_node_expiration_buffer_seconds",
                                    DEFAULT_END_BUFFER_S))
    idle = settings.get("compute_node_wait_for_new_jobs_seconds")
    defaults = dict((workflow.get("spec_settings") or {}).get("slurm_defaults") or {})
    wid = int(workflow["id"])
    return slurm.render_sbatch_script(
        job_name=f"torc_wf{wid}_{scheduler['name']}",
        scheduler=scheduler,
        defaults=defaults,
        runner_argv=runner_argv(where.url, wid, output_dir, scheduler_filter, end_buffer,
                                float(idle) if idle is not None else 60.0, startup_jitter_s,
                                max_parallel),
        env=where.env(),
        output_dir=str(output_dir / "slurm"),
        start_one_worker_per_node=start_one_worker_per_node,
    )


async def check_reach(where: ServerAddress, scripts: list[str]) -> None:
    """Refuse (:class:`SubmitError`, one line) scripts whose runners may start on hosts that
    cannot reach the server (it advertises a loopback URL)."""
    reason = await reach.refusal_for_scripts(where.url, scripts)
    if reason is not None:
        raise SubmitError(reason)


async def submit_allocation(client: TorcClient, workflow: dict[str, Any], script: str,
                            output_dir: Path, scheduler: dict[str, Any], *,
                            action_index: int | None = None) -> dict[str, Any]:
    """Write the sbatch script, submit it (sbatch retries with backoff), record it."""
    wid = int(workflow["id"])
    directory = output_dir / "slurm"
    directory.mkdir(parents=True, exist_ok=True)
    existing = len(list(directory.glob(f"torc_wf{wid}_*.sh")))
    path = directory / f"torc_wf{wid}_{scheduler['name']}_{existing + 1}.sh"
    job_id = await slurm.sbatch(script, script_path=str(path))
    return await client.record_allocation(wid, job_id, scheduler=scheduler["name"],
                                          action_index=action_index)


async def plan_allocations(client: TorcClient, workflow: dict[str, Any], *,
                           by_ready_jobs: bool = True) \
        -> list[tuple[dict[str, Any], str | None, int | None, bool, int | None]]:
    """What `submit` starts: (scheduler, runner's scheduler filter, action index, one worker
    per node, the action's max_parallel_jobs) for each on_workflow_start schedule_nodes
    action of Slurm's, or else one allocation per scheduler that the ready jobs need."""
    wid = int(workflow["id"])
    actions = (await client.list_actions(wid))["items"]
    starts = [a for a in actions if a["trigger_type"] == "on_workflow_start"
              and a["action_type"] == "schedule_nodes" and a.get("scheduler_type") != "local"]
    plan: list[tuple[dict[str, Any], str | None, int | None, bool, int | None]] = []
    if starts:
        for action in starts:
            sched = _scheduler_by_name(workflow, action.get("scheduler"))
            for _ in range(int(action.get("num_allocations") or 1)):
                plan.append((sched, sched["name"], action["index"],
                             bool(action.get("start_one_worker_per_node")),
                             action.get("max_parallel_jobs")))
        return plan
    if not by_ready_jobs:
        return plan
    needed: set[str | None] = set()
    async for job in client.iter_jobs(wid, status="ready"):
        needed.add(job.get("scheduler"))
    if not needed:
        return []
    for name in sorted(needed, key=lambda n: n or ""):
        sched = _scheduler_by_name(workflow, name)
        plan.append((sched, name, None, False, None))
    return plan


def _runners(scheduler: dict[str, Any], per_node: bool) -> int:
    """Runners one allocation starts: one, or one a node."""
    if not per_node:
        return 1
    try:
        return max(1, int(scheduler.get("nodes") or 1))
    except (TypeError, ValueError):
        return 1  # the script renderer reports the bad value


async def submit(client: TorcClient, workflow_id: int, url: str, output_dir: Path, *,
                 dry_run: bool, rerun: bool = False) -> list[dict[str, Any]]:
    """Submit the workflow's start allocations (its on_workflow_start schedule_nodes actions,
    each claimed so that it runs once; else one per scheduler the ready jobs need).
    ``rerun`` (recover): the start actions ran before; their allocations are submitted again
    for what was reset, without claiming them."""
    workflow = await client.get_workflow(workflow_id)
    local_starts = [a for a in (await client.list_actions(workflow_id))["items"]
                    if a["trigger_type"] == "on_workflow_start"
                    and a["action_type"] == "schedule_nodes"
                    and a.get("scheduler_type") == "local"]
    # Local runners started by the workflow's own actions stand in for allocations of the
    # ready jobs' schedulers.
    plan = await plan_allocations(client, workflow, by_ready_jobs=not local_starts)
    jitter = startup_jitter_window(sum(_runners(p[0], p[3]) for p in plan))
    access = reach.access_env(client, output_dir, write=not dry_run)
    where = (await reach.server_address(client, url, access) if plan
             else ServerAddress(url, access=access))
    scripts = [allocation_script(workflow, where, output_dir, sched, scheduler_filter=filt,
                                 start_one_worker_per_node=per_node, startup_jitter_s=jitter,
                                 max_parallel=limit)
               for sched, filt, index, per_node, limit in plan]
    await check_reach(where, scripts)  # before anything is claimed or submitted
    if dry_run:
        return [{"scheduler": sched["name"], "action_index": index, "script": script}
                for (sched, _, index, _, _), script in zip(plan, scripts, strict=True)]
    todo = list(zip(plan, scripts, strict=True))
    if any(p[2] is not None for p in plan) and not rerun:
        # Claim the start actions so that they run once, even if submit runs twice.
        claimed = await client.claim_actions(workflow_id, action_types=["schedule_nodes"],
                                             trigger_types=["on_workflow_start"],
                                             scheduler_types=["slurm"])
        won = {a["index"] for a in claimed["actions"]}
        todo = [(p, script) for p, script in todo if p[2] in won]
    out = []
    if local_starts and not dry_run and rerun:
        for action in local_starts:
            out.extend(local_runners.start_local_runners(url, workflow_id, output_dir, action,
                                                         env=where.env()))
    elif local_starts and not dry_run:
        claimed = await client.claim_actions(workflow_id, action_types=["schedule_nodes"],
                                             trigger_types=["on_workflow_start"],
                                             scheduler_types=["local"])
        won = {a["index"] for a in claimed["actions"]}
        for action in local_starts:
            if action["index"] in won:
                out.extend(local_runners.start_local_runners(url, workflow_id, output_dir,
                                                             action, env=where.env()))
    for (sched, _, index, _, _), script in todo:
        out.append(await submit_allocation(client, workflow, script, output_dir, sched,
                                           action_index=index))
    return out


async def run_schedule_action(client: TorcClient, workflow_id: int, url: str, output_dir: Path,
                              action: dict[str, Any]) -> list[dict[str, Any]]:
    """Carry out a claimed schedule_nodes action (from a runner): Slurm allocations, or with
    ``scheduler_type: local`` runners on this machine."""
    access = reach.access_env(client, output_dir)
    if action.get("scheduler_type") == "local":
        return local_runners.start_local_runners(url, workflow_id, output_dir, action,
                                                 env=dict(access))
    workflow = await client.get_workflow(workflow_id)
    sched = _scheduler_by_name(workflow, action.get("scheduler"))
    per_node = bool(action.get("start_one_worker_per_node"))
    count = int(action.get("num_allocations") or 1)
    jitter = startup_jitter_window(count * _runners(sched, per_node))
    where = await reach.server_address(client, url, access)
    script = allocation_script(workflow, where, output_dir, sched,
                               scheduler_filter=sched["name"],
                               start_one_worker_per_node=per_node, startup_jitter_s=jitter,
                               max_parallel=action.get("max_parallel_jobs"))
    await check_reach(where, [script])
    return [
        await submit_allocation(client, workflow, script, output_dir, sched,
                                action_index=action["index"])
        for _ in range(count)
    ]


async def cancel_allocations(client: TorcClient, workflow_id: int) -> list[str]:
    live = [a for a in await client.list_allocations(workflow_id) if a["state"] in LIVE_STATES]
    if not live:
        return []
    await slurm.scancel([a["slurm_job_id"] for a in live])
    for alloc in live:
        await client.set_allocation_state(workflow_id, alloc["id"], "canceled")
    return [a["slurm_job_id"] for a in live]


async def find_orphans(client: TorcClient, workflow_id: int, *,
                       dry_run: bool = False) -> list[dict[str, Any]]:
    """Allocations the server thinks alive that Slurm no longer runs (marked gone, unless
    ``dry_run``)."""
    live = [a for a in await client.list_allocations(workflow_id) if a["state"] in LIVE_STATES]
    if not live:
        return []
    states = await slurm.squeue_states([a["slurm_job_id"] for a in live])
    gone = []
    for alloc in live:
        state = states.get(alloc["slurm_job_id"])
        if state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED"):
            continue
        if not dry_run:
            await client.set_allocation_state(workflow_id, alloc["id"], "gone")
        gone.append(alloc)
    return gone


async def _held_by_orphans(client: TorcClient, workflow_id: int,
                           gone_slurm_ids: set[str]) -> tuple[set[int], dict[int, list[Any]]]:
    """Runners of vanished allocations, and the jobs each holds."""
    nodes = (await client.list_compute_nodes(workflow_id))["items"]
    orphan_nodes = {int(n["id"]) for n in nodes if str(n.get("slurm_job_id")) in gone_slurm_ids}
    held: dict[int, list[dict[str, Any]]] = {}
    if orphan_nodes:
        for status in ("pending", "running"):
            async for job in client.iter_jobs(workflow_id, status=status):
                cn = job.get("compute_node_id")
                if cn is not None and int(cn) in orphan_nodes:
                    held.setdefault(int(cn), []).append(job)
    return orphan_nodes, held


async def orphaned_jobs(client: TorcClient, workflow_id: int,
                        gone_slurm_ids: set[str]) -> list[dict[str, Any]]:
    """Jobs held by runners of vanished allocations (nothing changed)."""
    _, held = await _held_by_orphans(client, workflow_id, gone_slurm_ids)
    return [job for jobs in held.values() for job in jobs]


async def fail_orphaned_jobs(client: TorcClient, workflow_id: int,
                             gone_slurm_ids: set[str]) -> list[dict[str, Any]]:
    """Jobs held by runners of vanished allocations: recorded as terminated, runners released."""
    orphan_nodes, held = await _held_by_orphans(client, workflow_id, gone_slurm_ids)
    if not orphan_nodes:
        return []
    terminated = []
    for cn, jobs in held.items():
        results = [{"job_id": j["id"], "attempt": j["attempt"], "run_id": j["run_id"],
                    "return_code": 137, "status": "terminated", "exec_time_s": 0.0}
                   for j in jobs]
        await client.complete_jobs(workflow_id, cn, results)
        terminated.extend(jobs)
    for cn in orphan_nodes:
        await client.deactivate(workflow_id, cn)
    return terminated


def describe(alloc: dict[str, Any]) -> str:
    if alloc.get("kind") == "local":
        return local_runners.describe(alloc)
    return (f"allocation {alloc['slurm_job_id']} (scheduler {alloc.get('scheduler')}, "
            f"{alloc.get('state')})")


def quote(argv: list[str]) -> str:
    return shlex.join(argv)
