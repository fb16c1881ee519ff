"""The Trio job runner: claims ready jobs in batches and runs many of them at once.

One nursery per runner. Each cycle of the main loop is one round trip: a claim for as many jobs
as there are free slots that also carries the results of the jobs that finished since the last
one (a plain report when there is nothing to claim). Job processes live in a
:class:`~torc_cli.procs.ProcessTable`: a helper process starts and reaps them, and one task
delivers their ends; a job's end refills its slot from the local queue at once and wakes the
main loop when a cycle is due. A heartbeat task
keeps the lease and learns of a cancel; a signal task and a walltime task stop the runner.

What to claim, report, start and stop, and when, is decided by a sans-I/O
:class:`~torc_cli.runner_state.RunnerState` (slots, queue, rate estimate, due times); this
module carries it out. Every time it reads is ``trio.current_time()`` (one clock, which tests
replace with ``trio.testing.MockClock``); the allocation's end, an epoch time, is converted to
that clock once at start.

Batching, so that round trips are few when jobs are short (thousands of ``true``s):

* Queue mode (``-j N``) keeps a small local queue of claimed jobs beyond the N slots, sized to
  the observed completion rate times ``prefetch_horizon_s`` (at most ``max_batch``; a queued
  job waits about that horizon at most): a finished job's slot
  is refilled at once from the queue, and the main loop wakes only when the queue is half
  drained (or ``max_report_delay_s`` after a result), so each cycle carries many jobs. The
  horizon is long enough (1 s) that the queue outlasts a round trip even when the server and
  the runner get a small share of CPUs kept busy by the jobs themselves (measured: 0.1-0.4 s
  per cycle with 32 jobs on 2 cores). Long jobs give a rate near zero, hence no queue: claimed
  work never waits long behind
  other runners' idle slots. Queued jobs are ``pending`` on the server; if the runner stops,
  deactivation puts them back to ``ready``.
* Start reports go out only for jobs that have run ``start_report_delay_s``; a job that ends
  sooner goes from pending straight to its final status (the state machine allows it), which
  saves a round trip per cycle.

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
import shutil
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from torc_core.settings import MONITOR_OFF, ResourceMonitor
from torc_core.spec import FailureHandler
from torc_net.client import ServerUnreachable, TorcClient
from torc_net.tls import TlsError

from . import monitor as job_monitor
from . import recovery, srun
from . import stdio as job_stdio
from .gpus import gpu_env
from .limits import TERMINATION_SIGNALS
from .procs import ProcessOutcome, ProcessTable, Spawners, spawner_count
from .resources import Resources, device_ids
from .runner_state import RunnerState


def job_misfit(job: dict[str, Any], res: Resources, walltime_s: float | None,
               scheduler: str | None, *, check_resources: bool = True) -> str:
    """What keeps ``job`` (as the server lists it) from ever running on a runner with
    ``res``, in words ('needs 64 CPUs'); '' if it would fit an idle one."""
    if scheduler is not None and job.get("scheduler") not in (None, scheduler):
        return f"is for scheduler {job.get('scheduler')!r}"
    if check_resources:
        if int(job.get("num_cpus") or 0) > res.cpus:
            return f"needs {job['num_cpus']} CPUs"
        if int(job.get("memory_bytes") or 0) > res.memory_bytes:
            return f"needs {_gib(int(job['memory_bytes']))} of memory"
        if int(job.get("num_gpus") or 0) > res.gpus:
            return f"needs {job['num_gpus']} GPUs"
        if int(job.get("num_nodes") or 1) > res.nodes:
            return f"needs {job['num_nodes']} nodes"
    if walltime_s is not None and float(job.get("runtime_s") or 0) > walltime_s:
        return f"needs {job['runtime_s']:g} s and {walltime_s:.0f} s are left"
    return ""


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


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
    #: Queue mode: keep about (completion rate x this) claimed jobs queued beyond the slots.
    prefetch_horizon_s: float = 1.0
    #: Report a finished job at most this long after it ended (when the queue is not low yet).
    max_report_delay_s: float = 0.25
    #: Report a job as started once it has run this long (shorter jobs skip the start report).
    start_report_delay_s: float = 0.5
    handle_signals: bool = True
    #: Stop after this long with nothing to run (allocations should not idle to walltime).
    idle_timeout_s: float | None = None
    #: Stop (with the reason) when the only jobs left to run can never fit this runner and
    #: no other runner is busy: `run`/`exec`, whose runner is usually the only one. Runners
    #: in allocations wait instead (another allocation may take those jobs).
    stop_when_nothing_fits: bool = False
    #: Which claimed actions this runner carries out; schedule_nodes needs ``schedule_nodes``.
    action_types: tuple[str, ...] = ("run_commands",)
    schedule_nodes: Callable[[dict[str, Any]], Awaitable[Any]] | None = None
    #: schedule_nodes actions of these scheduler types only (None: any)
    scheduler_types: tuple[str, ...] | None = None
    #: Called as each job attempt ends, on the runner's task, before its result is reported:
    #: ``on_job_end(job, result)``, the job as claimed (id, name, command, attempt, run_id)
    #: and the result that will be sent (return_code, status, exec_time_s). It runs on the
    #: hot path, so it must be quick and must not block (buffer, and write elsewhere); it
    #: may call :meth:`JobRunner.stop` (``exec --halt``). Its errors stop the runner.
    on_job_end: Callable[[dict[str, Any], dict[str, Any]], None] | None = None
    #: The resource monitor's settings instead of the workflow's (--no-resource-monitoring)
    monitor: ResourceMonitor | None = None


@dataclass(slots=True)
class RunnerSummary:
    compute_node_id: int = 0
    jobs_run: int = 0
    succeeded: int = 0
    failed: int = 0
    terminated: int = 0
    stop_reason: str = ""
    #: the first signal that stopped the runner (SIGINT, SIGTERM, SIGHUP), if one did
    signal: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    is_complete: bool = False
    is_canceled: bool = False


@dataclass(slots=True)
class _Running:
    """A started job's I/O side (its bookkeeping is the state's :class:`Slot`)."""

    job: dict[str, Any]
    token: int  # the process table's handle; 0: it could not be started
    stdio: job_stdio.StdioPlan
    #: the result's measured fields (monitor.py: metrics, failure_cause)
    info: dict[str, Any] = field(default_factory=dict)


ProgressFn = Callable[[dict[str, int], int], None]

#: Characters of output tails waiting in unreported results, at most (see _attach_tails):
#: 128 full tails (2 x 16 KiB each); a report with all of them is < 25 MiB even if every
#: character were sent as a 6-byte JSON escape.
MAX_PENDING_TAIL_CHARS = 4 * 1024 * 1024


class JobRunner:
    def __init__(self, client: TorcClient, config: RunnerConfig, *,
                 on_progress: ProgressFn | None = None,
                 spawners: Spawners | None = None) -> None:
        """``spawners``: the job spawners, started already (else run() starts them); the
        runner closes them when it is done."""
        self.client = client
        self.cfg = config
        self.on_progress = on_progress
        self.summary = RunnerSummary()
        res = config.resources
        #: the policy: slots, queue, results, rate, what is due when (runner_state.py)
        self.state = RunnerState(
            cpus=res.cpus, memory_bytes=res.memory_bytes, gpu_ids=tuple(device_ids(res)),
            max_parallel=config.max_parallel, max_batch=config.max_batch,
            prefetch_horizon_s=config.prefetch_horizon_s,
            max_report_delay_s=config.max_report_delay_s,
            start_report_delay_s=config.start_report_delay_s,
            poll_interval_s=config.poll_interval_s, idle_timeout_s=config.idle_timeout_s,
            end_buffer_s=config.end_buffer_s)
        #: the started jobs' process handles and output files (keys: state.running's)
        self._running: dict[int, _Running] = {}
        self._wake = trio.Event()
        self._cn = 0
        self._claim_seq = 0
        #: the answer of the claim the registration made, until the main loop takes it
        self._first_reply: dict[str, Any] | None = None
        self._actions_pending = False
        self._stdio = config.output_dir / job_stdio.STDIO_DIR
        self._shards = job_stdio.ShardDirs()
        #: absolute: results record where the files are, for readers in any directory
        self._out = config.output_dir.resolve()
        #: the workflow's execution_config.stdio (a job's own stdio overrides it)
        self._wf_stdio: dict[str, Any] | None = None
        #: execution_config.output_tails: the results that carry their output's end
        self._output_tails = "failed"
        #: characters of tails in results not yet reported (bounded: _attach_tails)
        self._pending_tail_chars = 0
        self._ignore_completion = False
        self._handlers: dict[str, FailureHandler] = {}
        self._procs = ProcessTable(grace_s=config.grace_s, spawners=spawners,
                                   count=spawner_count(config.max_parallel))
        #: samples jobs, enforces direct mode's limits (set up from the workflow in run())
        self._monitor = job_monitor.JobMonitor(self._procs, MONITOR_OFF, enforce_limits=False,
                                               db_path=None)
        #: execution_config: jobs as srun steps in slurm mode, the end of the allocation
        self._execution = srun.Execution()
        #: execution_config's termination_signal (set in run())
        self._termination_signal = int(signal.SIGTERM)
        self._steps: srun.SrunSteps | None = None
        self._base_env = dict(os.environ)
        self._base_env["TORC_API_URL"] = config.api_url
        self._base_env["TORC_WORKFLOW_ID"] = str(config.workflow_id)
        self._base_env["TORC_OUTPUT_DIR"] = str(config.output_dir)
        #: the spawner's copy of _base_env (sent in run(), before any job)
        self._env_id = 0
        # Resolved once: the spawn then needs no PATH search per job.
        self._bash = shutil.which("bash", path=self._base_env.get("PATH"))

    # ------------------------------------------------------------------------------------------

    async def run(self) -> RunnerSummary:
        cfg = self.cfg
        self._stdio.mkdir(parents=True, exist_ok=True)
        self._env_id = self._procs.base_environment(self._base_env)
        if cfg.startup_jitter_s > 0:
            await trio.sleep(random.uniform(0, cfg.startup_jitter_s))  # spread a burst of runners
        res = cfg.resources
        # The first contact is one request: register, read the workflow and claim the first
        # jobs (a server that does not know `workflow` and `claim` answers neither: they
        # are then asked for as before).
        node = await self.client.register_compute_node(
            cfg.workflow_id, hostname=socket.gethostname(), pid=os.getpid(), num_cpus=res.cpus,
            memory_bytes=res.memory_bytes, num_gpus=res.gpus, num_nodes=res.nodes,
            slurm_job_id=res.slurm_job_id, workflow=True, claim=self._first_claim(),
        )
        self._cn = self.summary.compute_node_id = int(node["id"])
        lease_s = float(node.get("lease_s", 1800))
        self._first_reply = node.get("claim")
        workflow = node.get("workflow") or await self.client.get_workflow(cfg.workflow_id)
        execution = (workflow.get("spec_settings") or {}).get("execution_config") or {}
        self._wf_stdio = execution.get("stdio")
        self._output_tails = str(execution.get("output_tails") or "failed")
        self._handlers = recovery.handlers_of(workflow)
        settings = (workflow.get("spec_settings") or {}).get("compute_node_settings") or {}
        # Torc's compute_node_ignore_workflow_completion: a completed workflow may be reset
        # or given more jobs, and this runner waits for them, until its idle timeout (a runner
        # without one, as `run`'s, ends at completion: it would never end otherwise).
        self._ignore_completion = bool(
            settings.get("compute_node_ignore_workflow_completion")
            and cfg.idle_timeout_s is not None)
        self._execution = srun.execution_from_workflow(workflow, os.environ)
        self._steps = srun.runner_steps(
            self._execution, workflow_id=cfg.workflow_id, slurm_job_id=res.slurm_job_id,
            cpus=res.cpus, memory_bytes=res.memory_bytes, end_time=res.end_time,
            end_buffer_s=cfg.end_buffer_s)
        self._actions_pending = bool(workflow.get("num_actions"))
        self._monitor = job_monitor.for_workflow(workflow, self._execution, self._procs,
                                                 output_dir=self._out, override=cfg.monitor)
        # One clock from here on (trio's, which tests replace with a MockClock): the
        # allocation's end, an absolute time, is read against the wall clock once.
        lead, self._termination_signal = self._execution.end_of_allocation(cfg.end_buffer_s)
        self.state.start(trio.current_time(), lease_s=lease_s, termination_lead_s=lead,
                         end_in_s=None if res.end_time is None else res.end_time - time.time())
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._procs.run)
                if self._monitor.needed:
                    nursery.start_soon(self._monitor.run)
                await self._run_actions()
                nursery.start_soon(self._heartbeat_loop)
                if cfg.handle_signals:
                    nursery.start_soon(self._signal_watch)
                if self.state.terminate_at is not None:
                    nursery.start_soon(self._walltime_watch, self.state.terminate_at)
                await self._main_loop()
                nursery.cancel_scope.cancel()
        except* (ServerUnreachable, TlsError):  # a nursery's error comes in a group
            self._save_unreported()
            raise
        finally:
            self._procs.close()
        with trio.move_on_after(30) as scope:
            scope.shield = True
            try:
                await self.client.deactivate(cfg.workflow_id, self._cn)
            except ServerUnreachable:
                pass
        await job_monitor.plot_if_asked(self._monitor)
        return self.summary

    def stop(self, reason: str, *, terminate: bool = True) -> None:
        """Stop claiming and terminate running jobs (they are reported as terminated).
        ``terminate=False``: let the running jobs finish (``exec --halt soon``); a later
        stop may still terminate them."""
        if self.state.stop(reason):  # the queue, never started, goes back to ready
            self.summary.stop_reason = reason
        if terminate:
            for running in self._running.values():
                self._procs.terminate(running.token)
        self._wake.set()

    # ------------------------------------------------------------------------------------------

    async def _main_loop(self) -> None:
        """Each cycle: start reports, then one round trip (a claim carrying the results, or a
        plain report), then wait for a job's end or the state's next wakeup. The decisions
        are the state's (runner_state.py); this carries them out."""
        cfg = self.cfg
        state = self.state
        done = False
        while True:
            await self._report_starts()
            state.note_busy(trio.current_time())
            free = 0 if state.stopping or done else state.claim_size(trio.current_time())
            if free <= 0 and state.results:
                await self._flush()
                await self._run_actions()
            if state.stopping:
                if state.finished_stopping():
                    return
            elif free > 0:
                # One round trip reports what finished and refills the slots.
                reported = bool(state.results)
                reply = await self._claim(free)
                jobs = reply["jobs"]
                state.claimed(jobs)
                self._fill_slots()
                self._note_progress(reply)
                if reported:
                    await self._run_actions()
                if reply.get("is_canceled"):
                    self.stop("workflow canceled")
                    continue
                if jobs:
                    state.last_busy = trio.current_time()
                    if state.batch_was_full(free, len(jobs), trio.current_time()):
                        continue  # more may be ready, ask again
                done = bool(reply.get("is_complete")) and not self._ignore_completion
                counts = reply.get("counts") or {}
                held = state.held_failures(counts) if not jobs and not done else 0
                if held:
                    self.stop(f"{held} failed jobs wait for a decision (pending_failed): "
                              "torc-trio jobs confirm-failed, or reset-status --failed-only "
                              "to run them again", terminate=False)
                    continue
                if not jobs and not done and cfg.stop_when_nothing_fits and state.stuck(counts):
                    reason = await self._nothing_fits()
                    if reason:
                        self.stop(reason)
                        continue
            if done and not state.running and not state.results:
                await self._run_actions()  # on_workflow_complete
                self.summary.stop_reason = self.summary.stop_reason or "workflow complete"
                return
            if state.idle_expired(trio.current_time()):
                self.summary.stop_reason = f"nothing to run for {cfg.idle_timeout_s:g} s"
                return
            self._wake = trio.Event()
            if state.stopping:
                # Terminating: wait for the jobs to end (each end sets _wake). Never spin:
                # a loop with no checkpoint would starve the very tasks it waits for.
                if not state.results:
                    with trio.move_on_at(state.next_wakeup(trio.current_time())):
                        await self._wake.wait()
            elif not state.cycle_due():
                with trio.move_on_at(state.next_wakeup(trio.current_time())):
                    await self._wake.wait()

    async def _nothing_fits(self) -> str:
        """Why no ready job can run here ('' if one could: it became ready meanwhile)."""
        cfg = self.cfg
        res = cfg.resources
        walltime = self.state.walltime_s(trio.current_time())
        short: list[str] = []
        async for job in self.client.iter_jobs(cfg.workflow_id, status="ready", page_size=100):
            why = job_misfit(job, res, walltime, cfg.scheduler,
                             check_resources=cfg.max_parallel is None)
            if not why:
                return ""
            short.append(f"{job.get('name')} {why}")
            if len(short) >= 100:
                break
        if not short:
            return ""
        shown = "; ".join(short[:5]) + ("; ..." if len(short) > 5 else "")
        return (f"no ready job fits this runner ({res.cpus} CPUs, {_gib(res.memory_bytes)}, "
                f"{res.gpus} GPUs): {shown}. Run them where they fit, or with -j N to run "
                f"N at a time whatever they ask for")

    def _fill_slots(self) -> None:
        """Start queued jobs while there are free slots."""
        while (job := self.state.next_to_start()) is not None:
            self._launch(job)

    def _first_claim(self) -> dict[str, Any]:
        """The claim the registration makes (:meth:`_claim`'s body before the runner has
        started: no results, nothing held)."""
        cfg, state = self.cfg, self.state
        self._claim_seq += 1
        end = cfg.resources.end_time
        body: dict[str, Any] = {
            "limit": max(0, state.claim_size(trio.current_time(), update=False)),
            "walltime_s": None if end is None else max(0.0, end - time.time()
                                                       - cfg.end_buffer_s),
            "scheduler": cfg.scheduler, "claim_seq": self._claim_seq}
        resources = state.claim_resources()
        if resources:
            body.update(resources, nodes=cfg.resources.nodes)
        return body

    async def _claim(self, free: int) -> dict[str, Any]:
        if self._first_reply is not None:  # the registration's claim, made already
            reply, self._first_reply = self._first_reply, None
            return reply
        cfg = self.cfg
        state = self.state
        self._claim_seq += 1
        results = state.report_batch()
        common: dict[str, Any] = {"limit": free,
                                  "walltime_s": state.walltime_s(trio.current_time()),
                                  "scheduler": cfg.scheduler, "claim_seq": self._claim_seq,
                                  "held_job_ids": state.held_ids(), "results": results}
        resources = state.claim_resources()
        if resources:
            common.update(resources, nodes=cfg.resources.nodes)
        reply = await self.client.claim_jobs(cfg.workflow_id, self._cn, **common)
        self._reported(len(results), reply)
        return reply

    def _note_progress(self, reply: dict[str, Any]) -> None:
        counts = reply.get("counts")
        if counts:
            self.summary.counts = counts
            if self.on_progress is not None:
                self.on_progress(counts, len(self._running))

    async def _flush(self) -> None:
        """Report finished jobs in batches (when there is nothing to claim with them)."""
        cfg = self.cfg
        while self.state.results:
            batch = self.state.report_batch()
            reply = await self.client.complete_jobs(cfg.workflow_id, self._cn, batch)
            self._reported(len(batch), reply)

    def _reported(self, n: int, reply: dict[str, Any]) -> None:
        """The first ``n`` results reached the server (jobs that ended meanwhile were
        appended after them)."""
        if self._pending_tail_chars:
            self._pending_tail_chars -= sum(
                len(r.get("stdout_tail") or "") + len(r.get("stderr_tail") or "")
                for r in self.state.results[:n])
        self.state.reported(n)
        self.summary.is_complete = bool(reply.get("is_complete"))
        self.summary.is_canceled = bool(reply.get("is_canceled"))

    async def _report_starts(self) -> None:
        """Start reports, in one batch, for the jobs that have run ``start_report_delay_s``."""
        starts = self.state.starts_due(trio.current_time())
        if starts:
            try:
                await self.client.start_jobs(self.cfg.workflow_id, self._cn, starts)
            except Exception as exc:
                if isinstance(exc, ServerUnreachable):
                    raise

    # ------------------------------------------------------------------------------------------

    def _launch(self, job: dict[str, Any]) -> None:
        cfg = self.cfg
        jid = int(job["id"])
        attempt = int(job.get("attempt", 1))
        run_id = int(job.get("run_id", 1))
        stdio = job_stdio.plan(
            job_stdio.job_stem(self._out, cfg.workflow_id, jid, run_id, attempt),
            *job_stdio.effective(self._wf_stdio, job.get("stdio")))
        # The job's own variables; the rest of its environment is the runner's (_base_env,
        # which the spawner holds once).
        env: dict[str, str] = {
            "TORC_API_URL": self.client.base_url,  # where the server is now (it may move)
            "TORC_JOB_ID": str(jid), "TORC_JOB_NAME": str(job.get("name", "")),
            "TORC_ATTEMPT_ID": str(attempt), "TORC_RUN_ID": str(run_id)}
        command = str(job["command"])
        if job.get("invocation_script"):
            command = f"{job['invocation_script']} {command}"
        gpus = self.state.launch(job, trio.current_time())
        if cfg.max_parallel is None and self.state.gpus.total:
            env.update(gpu_env(gpus))  # its own devices; none for a GPU-less job (gpus.py)

        def on_exit(outcome: ProcessOutcome) -> None:
            if outcome.error is not None:  # output directory unwritable, process limit
                where = stdio.stderr or stdio.stdout
                try:
                    if where is not None:
                        _write_text(where, f"torc-trio: could not start job: {outcome.error}\n")
                except OSError:
                    pass  # the job is still recorded as failed (exit code 127)
            self._job_ended(jid, attempt, run_id, outcome)

        problem: OSError | None = None
        try:
            self._shards.ensure(stdio)
        except OSError as exc:
            problem = exc
        if self._bash is None or problem is not None:
            self._running[jid] = _Running(job=job, token=0, stdio=stdio)
            on_exit(ProcessOutcome(127, False, 0.0, problem or FileNotFoundError(
                "bash not found on PATH")))
            return
        argv, executable, base = ["bash", "-c", command], self._bash, self._env_id
        if self._steps is not None:  # slurm mode: the job runs as a step of the allocation
            env, base = {**self._base_env, **env}, 0  # a whole one, which wrap() trims
            argv, executable = self._steps.wrap(job, run_id, attempt, argv, env)
        token = self._procs.spawn(argv, executable=executable, env=env, base_env=base,
                                  stdout_path=stdio.stdout, stderr_path=stdio.stderr,
                                  on_exit=on_exit, want_pid=self._monitor.want_pid(job))
        self._running[jid] = _Running(job=job, token=token, stdio=stdio)
        self._monitor.started(jid, token, job)
        if self.state.stopping:
            self._procs.terminate(token)

    def _job_ended(self, jid: int, attempt: int, run_id: int, outcome: ProcessOutcome) -> None:
        """A job's process has ended (called by the process table's task)."""
        return_code = outcome.return_code
        terminated = outcome.terminated or outcome.signal in TERMINATION_SIGNALS
        if self._steps is not None:  # a step past its --time is terminated (srun.py)
            return_code, terminated = self._steps.ended(jid, return_code, terminated,
                                                        outcome.exec_time_s)
        # killed for its memory: failed, 137; its metrics and failure_cause (monitor.py)
        return_code, terminated, self._running[jid].info = self._monitor.finish(
            jid, outcome, return_code, terminated, slurm=self._steps is not None)
        if not terminated and return_code != 0 and self._recover(
                jid, attempt, run_id, return_code, outcome.exec_time_s):
            return  # reported when the recovery script has run
        self._job_done(jid, attempt, run_id, return_code, terminated, outcome.exec_time_s)

    def _job_done(self, jid: int, attempt: int, run_id: int, return_code: int,
                  terminated: bool, exec_time_s: float,
                  extra: dict[str, Any] | None = None) -> None:
        """Release the job's resources and queue its result (``extra``: the recovery
        script's verdict)."""
        running = self._running.pop(jid)
        status = "terminated" if terminated else "completed" if return_code == 0 else "failed"
        completed = status == "completed"
        result = {
            "job_id": jid, "attempt": attempt, "run_id": run_id, "return_code": return_code,
            "status": status, "exec_time_s": round(exec_time_s, 6),
            **job_stdio.result_paths(running.stdio, completed), **running.info,
            **(extra or {}),
        }
        if job_stdio.wants_tails(self._output_tails, completed):  # nothing read otherwise
            self._attach_tails(result, running.stdio)
        if completed and running.stdio.delete_on_success:
            job_stdio.remove(running.stdio)
        self.state.ended(jid, result)
        s = self.summary
        s.jobs_run += 1
        if terminated:
            s.terminated += 1
        elif return_code == 0:
            s.succeeded += 1
        else:
            s.failed += 1
        if self.cfg.on_job_end is not None:
            self.cfg.on_job_end(running.job, result)
        self._fill_slots()
        if self.state.wake_after_end():
            self._wake.set()

    def _attach_tails(self, result: dict[str, Any], stdio: job_stdio.StdioPlan) -> None:
        """The ends of the job's output files, read here: two preads of at most 16 KiB on
        an end that is rare (a failure) unless ``output_tails: all`` asks for every job,
        the same small synchronous file work the hot path already does (its shard
        directory, delete_on_success). Bounded: once MAX_PENDING_TAIL_CHARS of tails wait
        to be reported, further results go without (null: the readers say "not sent"),
        so a report stays far below the server's 64 MiB body even when a burst of jobs
        fail with binary output (JSON may spell a character in 6 bytes)."""
        if stdio.stdout is None and stdio.stderr is None:
            return
        tails = job_stdio.tails(stdio)
        size = sum(len(t) for t in tails.values() if t)
        if self._pending_tail_chars + size > MAX_PENDING_TAIL_CHARS:
            return
        self._pending_tail_chars += size
        result.update(tails)

    def _recover(self, jid: int, attempt: int, run_id: int, return_code: int,
                 exec_time_s: float) -> bool:
        """Start the failure handler's recovery script for a failed job that its rule will
        retry (recovery.py); the job stays running here until the script ends. False: none
        to run."""
        running = self._running[jid]
        script = recovery.script_for(self._handlers, running.job, return_code, attempt)
        if script is None or self._bash is None or self.state.stopping:
            return False
        cfg = self.cfg
        log = job_stdio.job_stem(self._out, cfg.workflow_id, jid, run_id, attempt) + \
            ".recovery.log"
        env = {"TORC_JOB_ID": str(jid), "TORC_JOB_NAME": str(running.job.get("name", "")),
               "TORC_ATTEMPT_ID": str(attempt), "TORC_RUN_ID": str(run_id),
               "TORC_RETURN_CODE": str(return_code)}

        def on_exit(outcome: ProcessOutcome) -> None:
            self._job_done(jid, attempt, run_id, return_code, False, exec_time_s,
                           recovery.verdict(outcome, log))

        running.token = self._procs.spawn(["bash", "-c", script], executable=self._bash,
                                          env=env, base_env=self._env_id, stdout_path=log,
                                          stderr_path=log, on_exit=on_exit)
        return True

    # ------------------------------------------------------------------------------------------

    async def _run_actions(self) -> None:
        """Claim the workflow's due actions of our types and carry them out (each action is
        handed to exactly one claimant by the server)."""
        if not self._actions_pending or self.state.stopping:
            return
        cfg = self.cfg
        reply = await self.client.claim_actions(
            cfg.workflow_id, self._cn, action_types=list(cfg.action_types),
            scheduler_types=None if cfg.scheduler_types is None else list(cfg.scheduler_types))
        self._actions_pending = int(reply.get("pending", 0)) > 0
        for action in reply["actions"]:
            if action["action_type"] == "run_commands":
                for k, command in enumerate(action.get("commands") or []):
                    stem = str(self._stdio / f"action_wf{cfg.workflow_id}_a{action['index']}_{k}")
                    if self._bash is None:
                        _write_text(stem + ".e", "torc-trio: bash not found on PATH\n")
                        continue
                    try:
                        await self._procs.wait(["bash", "-c", command], executable=self._bash,
                                               env=self._base_env, stdout_path=stem + ".o",
                                               stderr_path=stem + ".e")
                    except OSError as exc:
                        _write_text(stem + ".e", f"torc-trio: could not start: {exc}\n")
            elif action["action_type"] == "schedule_nodes" and cfg.schedule_nodes is not None:
                await cfg.schedule_nodes(action)

    # ------------------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        """Keep the lease, and learn of a cancel, when nothing else reaches the server: a
        runner whose slots are all busy with long jobs claims nothing. Any answer (a claim, a
        report) renews the lease too, so a busy runner sends no heartbeats at all."""
        while True:
            await trio.sleep_until(self.state.heartbeat_at(self.client.last_answer_at))
            if not self.state.heartbeat_due(trio.current_time(), self.client.last_answer_at):
                continue  # something else got an answer meanwhile
            reply = await self.client.heartbeat(self.cfg.workflow_id, self._cn)
            if reply.get("is_canceled"):
                self.stop("workflow canceled")

    async def _signal_watch(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if self.state.stopping:  # a second Ctrl-C: no more grace period
                    self._procs.terminate_all(grace_s=0)
                if self.summary.signal is None:
                    self.summary.signal = signum
                self.stop(f"received {signal.Signals(signum).name}")

    async def _walltime_watch(self, terminate_at: float) -> None:
        """execution_config's termination_signal, sigterm_lead_seconds before the end (the
        state's ``terminate_at``, on the runner's clock), then stop."""
        await trio.sleep_until(terminate_at)
        for running in self._running.values():
            self._procs.terminate(running.token, signum=self._termination_signal)
        self.stop("allocation walltime ending")

    def _save_unreported(self) -> None:
        if not self.state.results:
            return
        name = f"unreported_results_wf{self.cfg.workflow_id}_cn{self._cn}.json"
        _write_text(str(self.cfg.output_dir / name), json.dumps(self.state.results, indent=1))


def _write_text(path: str, text: str) -> None:
    """A small local write on a rare path (errors); not worth a thread hop."""
    with open(path, "w") as f:
        f.write(text)
