"""The Trio job runner: claims ready jobs in batches and runs many of them at once.

One nursery per runner. The main loop alternates two round trips: report what finished (one
batch) and claim as many jobs as there are free slots (one batch). Each job runs in its own task
(:class:`~torc_cli.procs.JobProcess`); when it ends, it wakes the main loop. A heartbeat task
keeps the lease and learns of a cancel; a signal task and a walltime task stop the runner.

Stopping (SIGTERM, SIGINT, end of walltime, workflow canceled): every running job gets SIGTERM,
a grace period, then SIGKILL to its process group; those jobs are reported as terminated so they
can be rerun, and the runner deactivates.

Server outages: every call retries with backoff and jitter (in :class:`TorcClient`) for up to
``wait_for_server_s``. Jobs keep running meanwhile and their results wait in memory, then go out
in one batch. Reports are idempotent by (job, run, attempt), so a retried batch never counts
twice. If the server does not come back, the unreported results are written to a JSON file in
the output directory and the runner exits non-zero.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from torc_net.client import ServerUnreachable, TorcClient

from .procs import JobProcess
from .resources import Resources


@dataclass(slots=True, kw_only=True)
class RunnerConfig:
    workflow_id: int
    api_url: str
    output_dir: Path
    resources: Resources
    max_parallel: int | None = None  # queue mode: this many jobs regardless of resources
    scheduler: str | None = None
    poll_interval_s: float = 1.0
    end_buffer_s: float = 60.0  # stop claiming/terminate this long before the allocation ends
    grace_s: float = 5.0
    startup_jitter_s: float = 0.0
    max_batch: int = 1000
    handle_signals: bool = True
    #: Stop after this long with nothing to run (allocations should not idle to walltime).
    idle_timeout_s: float | None = None
    #: Which claimed actions this runner carries out; schedule_nodes needs ``schedule_nodes``.
    action_types: tuple[str, ...] = ("run_commands",)
    schedule_nodes: Callable[[dict[str, Any]], Awaitable[Any]] | None = None


@dataclass(slots=True)
class RunnerSummary:
    compute_node_id: int = 0
    jobs_run: int = 0
    succeeded: int = 0
    failed: int = 0
    terminated: int = 0
    stop_reason: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    is_complete: bool = False
    is_canceled: bool = False


@dataclass(slots=True)
class _Running:
    job: dict[str, Any]
    process: JobProcess
    start_reported: bool = False


ProgressFn = Callable[[dict[str, int], int], None]


class JobRunner:
    def __init__(self, client: TorcClient, config: RunnerConfig, *,
                 on_progress: ProgressFn | None = None) -> None:
        self.client = client
        self.cfg = config
        self.on_progress = on_progress
        self.summary = RunnerSummary()
        self._running: dict[int, _Running] = {}
        self._results: list[dict[str, Any]] = []
        self._wake = trio.Event()
        self._stopping = ""
        self._cn = 0
        self._claim_seq = 0
        self._actions_pending = False
        res = config.resources
        self._free_cpus = res.cpus
        self._free_mem = res.memory_bytes
        self._free_gpus = res.gpus
        self._stdio = config.output_dir / "job_stdio"
        self._base_env = dict(os.environ)
        self._base_env["TORC_API_URL"] = config.api_url
        self._base_env["TORC_WORKFLOW_ID"] = str(config.workflow_id)
        self._base_env["TORC_OUTPUT_DIR"] = str(config.output_dir)

    # ------------------------------------------------------------------------------------------

    async def run(self) -> RunnerSummary:
        cfg = self.cfg
        self._stdio.mkdir(parents=True, exist_ok=True)
        if cfg.startup_jitter_s > 0:
            await trio.sleep(random.uniform(0, cfg.startup_jitter_s))  # spread a burst of runners
        res = cfg.resources
        node = await self.client.register_compute_node(
            cfg.workflow_id, hostname=socket.gethostname(), pid=os.getpid(), num_cpus=res.cpus,
            memory_bytes=res.memory_bytes, num_gpus=res.gpus, num_nodes=res.nodes,
            slurm_job_id=res.slurm_job_id,
        )
        self._cn = self.summary.compute_node_id = int(node["id"])
        lease_s = float(node.get("lease_s", 1800))
        workflow = await self.client.get_workflow(cfg.workflow_id)
        self._actions_pending = bool(workflow.get("num_actions"))
        await self._run_actions()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._heartbeat_loop, lease_s)
                if cfg.handle_signals:
                    nursery.start_soon(self._signal_watch)
                if res.end_time is not None:
                    nursery.start_soon(self._walltime_watch, res.end_time)
                await self._main_loop(nursery)
                nursery.cancel_scope.cancel()
        except ServerUnreachable:
            self._save_unreported()
            raise
        with trio.move_on_after(30) as scope:
            scope.shield = True
            try:
                await self.client.deactivate(cfg.workflow_id, self._cn)
            except ServerUnreachable:
                pass
        return self.summary

    def stop(self, reason: str) -> None:
        """Stop claiming and terminate running jobs (they are reported as terminated)."""
        if not self._stopping:
            self._stopping = reason
            self.summary.stop_reason = reason
        for running in self._running.values():
            running.process.terminate()
        self._wake.set()

    # ------------------------------------------------------------------------------------------

    async def _main_loop(self, nursery: trio.Nursery) -> None:
        cfg = self.cfg
        done = False
        last_busy = time.monotonic()
        while True:
            if self._results:
                await self._flush()
                await self._run_actions()
            else:
                await self._flush()
            if self._running:
                last_busy = time.monotonic()
            if self._stopping:
                if not self._running and not self._results:
                    return
            elif not done:
                free = self._free_slots()
                if free > 0:
                    reply = await self._claim(free)
                    for job in reply["jobs"]:
                        self._launch(nursery, job)
                    self._note_progress(reply)
                    if reply.get("is_canceled"):
                        self.stop("workflow canceled")
                        continue
                    if reply["jobs"]:
                        last_busy = time.monotonic()
                        if self._free_slots() > 0:
                            continue  # more may be ready: ask again before sleeping
                    done = bool(reply.get("is_complete"))
            if done and not self._running and not self._results:
                await self._run_actions()  # on_workflow_complete
                self.summary.stop_reason = self.summary.stop_reason or "workflow complete"
                return
            if (cfg.idle_timeout_s is not None and not self._running and not self._results
                    and time.monotonic() - last_busy > cfg.idle_timeout_s):
                self.summary.stop_reason = f"nothing to run for {cfg.idle_timeout_s:g} s"
                return
            if not self._results:
                with trio.move_on_after(cfg.poll_interval_s):
                    await self._wake.wait()
            self._wake = trio.Event()

    def _free_slots(self) -> int:
        if self.cfg.max_parallel is not None:
            return min(self.cfg.max_parallel - len(self._running), self.cfg.max_batch)
        return min(self._free_cpus, self.cfg.max_batch)

    async def _claim(self, free: int) -> dict[str, Any]:
        cfg = self.cfg
        self._claim_seq += 1
        walltime: float | None = None
        if cfg.resources.end_time is not None:
            walltime = max(0.0, cfg.resources.end_time - time.time() - cfg.end_buffer_s)
        if cfg.max_parallel is not None:
            return await self.client.claim_jobs(
                cfg.workflow_id, self._cn, limit=free, walltime_s=walltime,
                scheduler=cfg.scheduler, claim_seq=self._claim_seq,
            )
        return await self.client.claim_jobs(
            cfg.workflow_id, self._cn, limit=free, cpus=self._free_cpus,
            memory_bytes=self._free_mem, gpus=self._free_gpus, nodes=cfg.resources.nodes,
            walltime_s=walltime, scheduler=cfg.scheduler, claim_seq=self._claim_seq,
        )

    def _note_progress(self, reply: dict[str, Any]) -> None:
        counts = reply.get("counts")
        if counts:
            self.summary.counts = counts
            if self.on_progress is not None:
                self.on_progress(counts, len(self._running))

    async def _flush(self) -> None:
        """Report finished jobs, and start reports for jobs still running, in batches."""
        cfg = self.cfg
        starts = [jid for jid, r in self._running.items() if not r.start_reported]
        if starts:
            for jid in starts:
                self._running[jid].start_reported = True
            try:
                await self.client.start_jobs(cfg.workflow_id, self._cn, starts)
            except Exception as exc:
                if isinstance(exc, ServerUnreachable):
                    raise
        while self._results:
            batch = self._results[: cfg.max_batch]
            reply = await self.client.complete_jobs(cfg.workflow_id, self._cn, batch)
            del self._results[: len(batch)]
            self.summary.is_complete = bool(reply.get("is_complete"))
            self.summary.is_canceled = bool(reply.get("is_canceled"))

    # ------------------------------------------------------------------------------------------

    def _launch(self, nursery: trio.Nursery, job: dict[str, Any]) -> None:
        cfg = self.cfg
        jid = int(job["id"])
        attempt = int(job.get("attempt", 1))
        run_id = int(job.get("run_id", 1))
        stem = f"job_wf{cfg.workflow_id}_j{jid}_r{run_id}_a{attempt}"
        env = dict(self._base_env)
        env["TORC_JOB_ID"] = str(jid)
        env["TORC_JOB_NAME"] = str(job.get("name", ""))
        env["TORC_ATTEMPT_ID"] = str(attempt)
        env["TORC_RUN_ID"] = str(run_id)
        command = str(job["command"])
        if job.get("invocation_script"):
            command = f"{job['invocation_script']} {command}"
        if job.get("recovery_script"):
            command = f"{job['recovery_script']}\n{command}"
        process = JobProcess(
            ["bash", "-c", command], env=env,
            stdout_path=str(self._stdio / f"{stem}.o"),
            stderr_path=str(self._stdio / f"{stem}.e"),
            grace_s=cfg.grace_s,
        )
        self._running[jid] = _Running(job=job, process=process)
        if cfg.max_parallel is None:
            self._free_cpus -= int(job.get("num_cpus", 1))
            self._free_mem -= int(job.get("memory_bytes", 0))
            self._free_gpus -= int(job.get("num_gpus", 0))
        if self._stopping:
            process.terminate()
        nursery.start_soon(self._run_job, jid, attempt, run_id, process)

    async def _run_job(self, jid: int, attempt: int, run_id: int, process: JobProcess) -> None:
        try:
            outcome = await process.run()
            return_code, terminated, exec_time = (
                outcome.return_code, outcome.terminated, outcome.exec_time_s)
        except OSError as exc:  # bash missing, fd limit: the job failed to start
            return_code, terminated, exec_time = 127, False, 0.0
            _write_text(process.stderr_path, f"torc-trio: could not start job: {exc}\n")
        running = self._running.pop(jid)
        if self.cfg.max_parallel is None:
            job = running.job
            self._free_cpus += int(job.get("num_cpus", 1))
            self._free_mem += int(job.get("memory_bytes", 0))
            self._free_gpus += int(job.get("num_gpus", 0))
        status = "terminated" if terminated else "completed" if return_code == 0 else "failed"
        self._results.append({
            "job_id": jid, "attempt": attempt, "run_id": run_id, "return_code": return_code,
            "status": status, "exec_time_s": round(exec_time, 6),
        })
        s = self.summary
        s.jobs_run += 1
        if terminated:
            s.terminated += 1
        elif return_code == 0:
            s.succeeded += 1
        else:
            s.failed += 1
        self._wake.set()

    # ------------------------------------------------------------------------------------------

    async def _run_actions(self) -> None:
        """Claim the workflow's due actions of our types and carry them out (each action is
        handed to exactly one claimant by the server)."""
        if not self._actions_pending or self._stopping:
            return
        cfg = self.cfg
        reply = await self.client.claim_actions(cfg.workflow_id, self._cn,
                                                action_types=list(cfg.action_types))
        self._actions_pending = int(reply.get("pending", 0)) > 0
        for action in reply["actions"]:
            if action["action_type"] == "run_commands":
                for k, command in enumerate(action.get("commands") or []):
                    stem = f"action_wf{cfg.workflow_id}_a{action['index']}_{k}"
                    process = JobProcess(
                        ["bash", "-c", command], env=self._base_env,
                        stdout_path=str(self._stdio / f"{stem}.o"),
                        stderr_path=str(self._stdio / f"{stem}.e"), grace_s=cfg.grace_s,
                    )
                    await process.run()
            elif action["action_type"] == "schedule_nodes" and cfg.schedule_nodes is not None:
                await cfg.schedule_nodes(action)

    # ------------------------------------------------------------------------------------------

    async def _heartbeat_loop(self, lease_s: float) -> None:
        interval = max(1.0, min(lease_s / 3, 60.0))
        while True:
            await trio.sleep(interval)
            reply = await self.client.heartbeat(self.cfg.workflow_id, self._cn)
            if reply.get("is_canceled"):
                self.stop("workflow canceled")

    async def _signal_watch(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                self.stop(f"received {signal.Signals(signum).name}")

    async def _walltime_watch(self, end_time: float) -> None:
        await trio.sleep(max(0.0, end_time - time.time() - self.cfg.end_buffer_s / 2))
        self.stop("allocation walltime ending")

    def _save_unreported(self) -> None:
        if not self._results:
            return
        name = f"unreported_results_wf{self.cfg.workflow_id}_cn{self._cn}.json"
        _write_text(str(self.cfg.output_dir / name), json.dumps(self._results, indent=1))


def _write_text(path: str, text: str) -> None:
    """A small local write on a rare path (errors); not worth a thread hop."""
    with open(path, "w") as f:
        f.write(text)
