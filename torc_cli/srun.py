"""Jobs as Slurm job steps (Torc's ``execution_config``), and what a step's end means.

Why steps: with ``mode: slurm`` (or ``auto`` inside an allocation) each job runs as
``srun ... bash -c COMMAND``, so Slurm itself enforces its CPUs, memory and time, ``sacct``
lists every job with its state, exit code and MaxRSS, and the site's admins see what runs.
``direct`` (the default) runs ``bash -c COMMAND`` as before.

Everything here is pure (no I/O besides reading the environment it is given), so the argv
builder and the status rules are tested without a cluster; :class:`SrunSteps` is the runner's
side (a few calls from :class:`torc_cli.runner.JobRunner`).

The command line of a step (names as Torc's):

``srun --jobid=ALLOC --job-name=wf<W>_j<J>_r<R>_a<A> --nodes=1 --ntasks=1 --exact
--cpus-per-task=N --mem=MB M [--gpus=G] --time=MINUTES [--signal=SIG@SECS] --cpu-bind=none
bash -c COMMAND``

* ``--time`` is the job's runtime rounded up to whole minutes (Slurm's unit), cut to the time
  left before the runner's end buffer: a step that outlives it ends ``TIMEOUT``.
* ``limit_resources: false`` passes no ``--cpus-per-task``/``--mem``/``--gpus`` and
  ``--overlap`` instead of ``--exact``: without limits of their own, steps would otherwise ask
  for the whole allocation (srun reads ``SLURM_MEM_PER_NODE`` from it) and run one at a time.
* A job that states no memory (Torc's default, 1 MiB, is no real limit: bash alone is bigger)
  gets its CPUs' share of the allocation's memory instead.

How a step's end becomes a status (Torc's slurm-exit-codes page):

=========================  ==========  =============  ==========
step                       srun exits  Slurm state    status
=========================  ==========  =============  ==========
over its ``--mem``         137         OUT_OF_MEMORY  failed, 137
past its ``--time``        143 / 137   TIMEOUT        terminated, 152
handled the signal, exit 0  0          TIMEOUT        completed, 0
=========================  ==========  =============  ==========

A step is taken to have timed out when it ended with a nonzero status after running at least
its time limit: Slurm ends such a step only at its limit (``OverTimeLimit=0``), and the srun
exit status alone cannot tell a step killed at its limit from one killed for memory (both
137 when the job ignores SIGTERM).
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .exits import InputError, SlurmFailure

log = logging.getLogger(__name__)

#: Return code recorded for a job whose step was killed for memory (128 + SIGKILL), as Torc.
OOM_EXIT_CODE = 137
#: Return code recorded for a job whose step ran past its ``--time`` (128 + SIGXCPU), as Torc.
TIMEOUT_EXIT_CODE = 152
#: Torc's default memory for a job that states none: no real limit for a step.
UNSTATED_MEMORY_BYTES = 1024 * 1024
_MIB = 1024 * 1024
MODES = ("direct", "slurm", "auto")
#: Environment variables of the allocation (or of the runner's own step) that srun would read
#: as options of every job step: overlap and memory come from the step's own options instead.
_STEP_INPUT_ENV = ("SLURM_OVERLAP", "SLURM_EXACT", "SLURM_MEM_PER_CPU", "SLURM_MEM_PER_GPU",
                   "SLURM_MEM_PER_NODE", "SLURM_CPU_BIND", "SLURM_GPUS")
_STEP_NAME = re.compile(r"wf(\d+)_j(\d+)_r(\d+)_a(\d+)")
_SIGNAL_NAMES = {"HUP": 1, "INT": 2, "QUIT": 3, "KILL": 9, "USR1": 10, "USR2": 12, "ALRM": 14,
                 "TERM": 15, "CONT": 18, "STOP": 19, "XCPU": 24}


class ExecutionConfigError(InputError):
    """A workflow's ``execution_config`` that cannot be used (the parser refuses these when the
    workflow is created; this names the problem should an older or foreign server pass one)."""


class SrunMissing(SlurmFailure):
    """Slurm mode inside an allocation, and no ``srun`` to start the steps with."""


# ------------------------------------------------------------------------------------------
# The configuration


@dataclass(frozen=True, slots=True)
class Execution:
    """How a runner starts its jobs: the workflow's ``execution_config``, resolved for where
    the runner is (``auto`` becomes ``slurm`` inside an allocation)."""

    #: "direct" or "slurm", as resolved
    mode: str = "direct"
    requested: str = "direct"
    limit_resources: bool = True
    srun_termination_signal: str | None = None
    #: direct mode: the signal running jobs get ``end_lead_s`` before the allocation ends
    termination_signal: int = int(signal.SIGTERM)
    #: seconds before the allocation's end at which running jobs are sent the signal; None:
    #: the workflow has no execution_config, the runner keeps half its end buffer
    sigterm_lead_s: float | None = None

    def end_of_allocation(self, end_buffer_s: float) -> tuple[float, int]:
        """(seconds before the allocation ends, signal): when and how the runner ends the
        jobs still running. A step's srun is sent SIGTERM, which it forwards to the step (the
        step's own ``--signal`` is Slurm's to send)."""
        lead = end_buffer_s / 2 if self.sigterm_lead_s is None else self.sigterm_lead_s
        signum = int(signal.SIGTERM) if self.mode == "slurm" else self.termination_signal
        return lead, signum


def signal_number(text: str, where: str) -> int:
    """``SIGTERM``, ``TERM`` or ``15`` -> 15; a clear error naming ``where`` otherwise."""
    bare = str(text).strip().upper().removeprefix("SIG")
    number = int(bare) if bare.isdigit() else _SIGNAL_NAMES.get(bare)
    if number is None or not 0 < number < 65:
        raise ExecutionConfigError(f"{where}: not a signal: {text!r} (e.g. SIGTERM, SIGINT)")
    return number


def _field(config: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any,
           where: str) -> Any:
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, bool) and kind is not bool:
        raise ExecutionConfigError(f"{where}: {key}: expected {_kind(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise ExecutionConfigError(f"{where}: {key}: expected {_kind(kind)}, "
                                   f"got {type(value).__name__}")
    return value


def _kind(kind: type | tuple[type, ...]) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def execution_from_workflow(workflow: Mapping[str, Any],
                            environ: Mapping[str, str]) -> Execution:
    """The execution of ``workflow`` (as ``GET /workflows/{id}`` returns it) for a runner
    with environment ``environ``. No ``execution_config``: direct, as before it existed."""
    settings = workflow.get("spec_settings") or {}
    config = settings.get("execution_config") if isinstance(settings, Mapping) else None
    where = f"workflow {workflow.get('id', '?')}: execution_config"
    if config is None:
        return Execution()
    if not isinstance(config, Mapping):
        raise ExecutionConfigError(f"{where}: expected a mapping, got {type(config).__name__}")
    requested = _field(config, "mode", str, "direct", where)
    if requested not in MODES:
        raise ExecutionConfigError(
            f"{where}: mode: must be one of {', '.join(MODES)}; got {requested!r}")
    in_allocation = bool(environ.get("SLURM_JOB_ID") or environ.get("SLURM_JOBID"))
    mode = "slurm" if requested == "slurm" or (requested == "auto" and in_allocation) \
        else "direct"
    if mode == "slurm" and not in_allocation:
        log.warning("%s: mode slurm outside a Slurm allocation (no SLURM_JOB_ID): jobs run "
                    "directly", where)
        mode = "direct"
    srun_signal = _field(config, "srun_termination_signal", str, None, where)
    if srun_signal is not None:
        sig, _, secs = srun_signal.partition("@")
        signal_number(sig.removeprefix("R:"), f"{where}: srun_termination_signal")
        if secs and not secs.isdigit():
            raise ExecutionConfigError(f"{where}: srun_termination_signal: expected "
                                       f"SIGNAL[@SECONDS], e.g. TERM@120; got {srun_signal!r}")
    lead = _field(config, "sigterm_lead_seconds", (int, float), 30, where)
    if lead < 0:
        raise ExecutionConfigError(f"{where}: sigterm_lead_seconds: must be >= 0; got {lead}")
    return Execution(
        mode=mode, requested=requested,
        limit_resources=_field(config, "limit_resources", bool, True, where),
        srun_termination_signal=srun_signal,
        termination_signal=signal_number(
            _field(config, "termination_signal", str, "SIGTERM", where),
            f"{where}: termination_signal"),
        sigterm_lead_s=float(lead),
    )


# ------------------------------------------------------------------------------------------
# The step's command line


def step_name(workflow_id: int, job_id: int, run_id: int, attempt: int) -> str:
    """Torc's step name, ``wf<W>_j<J>_r<R>_a<A>``: ``sacct`` finds a job attempt by it."""
    return f"wf{workflow_id}_j{job_id}_r{run_id}_a{attempt}"


def parse_step_name(name: str) -> tuple[int, int, int, int] | None:
    """(workflow, job, run, attempt) of a step name; None for any other name."""
    m = _STEP_NAME.fullmatch(name)
    return None if m is None else (int(m[1]), int(m[2]), int(m[3]), int(m[4]))


def step_minutes(runtime_s: float, remaining_s: float | None) -> int:
    """``srun --time`` in minutes: the runtime rounded up, cut to the whole minutes left
    (``remaining_s``, None if the allocation has no end), never below Slurm's one minute."""
    minutes = max(1, math.ceil(max(0.0, float(runtime_s)) / 60))
    if remaining_s is not None:
        minutes = min(minutes, max(1, math.floor(remaining_s / 60)))
    return minutes


def step_memory_mb(memory_bytes: int, num_cpus: int, alloc_memory_bytes: int | None,
                   alloc_cpus: int | None) -> int:
    """``srun --mem`` in MB: the job's memory rounded up; for a job that states none (Torc's
    1 MiB default), its CPUs' share of the allocation (if known), as Slurm's DefMemPerCPU
    would give it."""
    if memory_bytes > UNSTATED_MEMORY_BYTES or not alloc_memory_bytes or not alloc_cpus:
        return max(1, math.ceil(memory_bytes / _MIB))
    share = alloc_memory_bytes * max(1, num_cpus) // max(1, alloc_cpus)
    return max(1, share // _MIB)


@dataclass(frozen=True, slots=True)
class StepRequest:
    """One job attempt's step: what :func:`srun_argv` turns into a command line."""

    name: str
    num_cpus: int = 1
    memory_mb: int = 1
    num_gpus: int = 0
    minutes: int = 1
    #: the node the step must run on (the runner's own, in an allocation of several nodes
    #: with a runner on each: a step started by node2's runner runs on node2)
    node: str | None = None


def srun_argv(srun: str, slurm_job_id: str, step: StepRequest, execution: Execution,
              command: list[str]) -> list[str]:
    """The full command line of a step running ``command`` (``["bash", "-c", CMD]``)."""
    argv = [srun, f"--jobid={slurm_job_id}", f"--job-name={step.name}", "--nodes=1",
            "--ntasks=1"]
    if step.node:
        argv.append(f"--nodelist={step.node}")
    if execution.limit_resources:
        argv += ["--exact", f"--cpus-per-task={max(1, step.num_cpus)}",
                 f"--mem={step.memory_mb}M"]
        if step.num_gpus > 0:
            argv.append(f"--gpus={step.num_gpus}")
    else:
        argv.append("--overlap")
    argv.append(f"--time={step.minutes}")
    if execution.srun_termination_signal:
        argv.append(f"--signal={execution.srun_termination_signal}")
    # Torc's choice: default binding may pin a step outside its CPUs on some sites.
    argv.append("--cpu-bind=none")
    return [*argv, *command]


# ------------------------------------------------------------------------------------------
# What a step's end means


def step_result(return_code: int, terminated: bool, exec_time_s: float,
                time_limit_s: float) -> tuple[int, bool]:
    """(return code to record, terminated?) for a step's srun that exited with
    ``return_code`` after ``exec_time_s``; ``terminated``: the runner ended it (or srun died
    of a termination signal), as in direct mode."""
    if terminated:
        return return_code, True
    if return_code != 0 and exec_time_s >= time_limit_s - STEP_TIME_SLACK_S:
        return TIMEOUT_EXIT_CODE, True  # Slurm's TIMEOUT (srun: 143 or 137)
    return return_code, False


#: Slurm keeps a step's start in whole seconds and may end it up to a second before a limit
#: measured from the runner's own (finer) start of srun: a step ending this close to its
#: limit ran out of time.
STEP_TIME_SLACK_S = 1.5


def sacct_state(state: str, exit_code: str, max_rss: str, step_memory: str) -> str:
    """A step's state for people: Slurm's (``CANCELLED by 0`` -> ``CANCELLED``), except that a
    step cancelled with SIGKILL after using more memory than its own (``step_memory``, e.g.
    ``100M``) is ``OUT_OF_MEMORY``. Why: without cgroups Slurm 22.05 kills such a step by
    polling (``OverMemoryKill``) and records it ``CANCELLED``, exit ``0:9``; cgroup-enforcing
    sites record the same event ``OUT_OF_MEMORY``, and that is the word Torc's users read."""
    word = state.split()[0] if state.strip() else state
    if word != "CANCELLED" or exit_code.partition(":")[2] != "9":
        return word
    rss, limit = memory_bytes(max_rss), memory_bytes(step_memory)
    if rss is not None and limit is not None and rss > limit:
        return "OUT_OF_MEMORY"
    return word


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def memory_bytes(text: str) -> int | None:
    """Bytes in a sacct memory value (``423116K``, ``100M``, ``2Gn``/``2Gc`` of older
    versions); None if empty or unreadable."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)([KMGTP]?)[nc]?\s*", text or "")
    if m is None:
        return None
    return int(float(m[1]) * _UNITS[m[2]])


def exit_status(exit_code: str) -> int | None:
    """sacct's ``EXIT:SIGNAL`` as one number, the way a shell shows it (128 + signal)."""
    code, _, sig = (exit_code or "").partition(":")
    if not code.isdigit():
        return None
    return 128 + int(sig) if sig.isdigit() and int(sig) else int(code)


def _tres_memory(tres: str) -> str:
    """``mem=100M`` of a TRES list (``cpu=1,mem=100M,node=1``); '' if none."""
    for item in (tres or "").split(","):
        key, _, value = item.partition("=")
        if key == "mem":
            return value
    return ""


def step_rows(records: list[dict[str, str]], workflow_id: int) -> list[dict[str, Any]]:
    """The steps of ``workflow_id``'s jobs among sacct records (``torc_cli.slurm.sacct_steps``),
    one row each, in Slurm's order: slurm_job_id, step (its id), step_name, job_id, run_id,
    attempt, state (see :func:`sacct_state`), slurm_state, exit_code (sacct's EXIT:SIGNAL),
    return_code, max_rss, max_rss_bytes, memory (the step's), elapsed, node."""
    rows: list[dict[str, Any]] = []
    for rec in records:
        ids = parse_step_name(rec.get("JobName", ""))
        job, _, step = rec.get("JobID", "").partition(".")
        if ids is None or ids[0] != workflow_id or not step:
            continue
        memory = _tres_memory(rec.get("AllocTRES", ""))
        rows.append({
            "slurm_job_id": job, "step": step, "step_name": rec["JobName"], "job_id": ids[1],
            "run_id": ids[2], "attempt": ids[3],
            "state": sacct_state(rec.get("State", ""), rec.get("ExitCode", ""),
                                 rec.get("MaxRSS", ""), memory),
            "slurm_state": rec.get("State", ""), "exit_code": rec.get("ExitCode", ""),
            "return_code": exit_status(rec.get("ExitCode", "")),
            "max_rss": rec.get("MaxRSS", ""), "max_rss_bytes": memory_bytes(rec.get("MaxRSS", "")),
            "memory": memory, "elapsed": rec.get("Elapsed", ""), "node": rec.get("NodeList", ""),
        })
    return rows


# ------------------------------------------------------------------------------------------
# The runner's side


@dataclass(slots=True)
class SrunSteps:
    """Wraps a runner's jobs in steps of its allocation and reads their ends."""

    execution: Execution
    workflow_id: int
    slurm_job_id: str
    srun: str
    alloc_cpus: int | None = None
    alloc_memory_bytes: int | None = None
    end_time: float | None = None
    end_buffer_s: float = 0.0
    #: see StepRequest.node
    node: str | None = None
    #: job id -> its step's time limit in seconds, while it runs
    _limits: dict[int, float] = field(default_factory=dict)

    def wrap(self, job: Mapping[str, Any], run_id: int, attempt: int, command: list[str],
             env: dict[str, str]) -> tuple[list[str], str]:
        """(argv, executable) running ``command`` as the job's step; ``env`` (the job's own
        copy) loses what srun would take for options of the step."""
        jid = int(job["id"])
        remaining = None if self.end_time is None else \
            self.end_time - time.time() - self.end_buffer_s
        num_cpus = int(job.get("num_cpus") or 1)
        step = StepRequest(
            name=step_name(self.workflow_id, jid, run_id, attempt), num_cpus=num_cpus,
            memory_mb=step_memory_mb(int(job.get("memory_bytes") or 0), num_cpus,
                                     self.alloc_memory_bytes, self.alloc_cpus),
            num_gpus=int(job.get("num_gpus") or 0),
            minutes=step_minutes(float(job.get("runtime_s") or 0), remaining), node=self.node)
        self._limits[jid] = step.minutes * 60.0
        for name in _STEP_INPUT_ENV:
            env.pop(name, None)
        return srun_argv(self.srun, self.slurm_job_id, step, self.execution, command), self.srun

    def ended(self, jid: int, return_code: int, terminated: bool,
              exec_time_s: float) -> tuple[int, bool]:
        """(return code, terminated?) of job ``jid``'s step (see :func:`step_result`)."""
        limit = self._limits.pop(jid, math.inf)
        return step_result(return_code, terminated, exec_time_s, limit)


def runner_steps(execution: Execution, *, workflow_id: int, slurm_job_id: str | None,
                 cpus: int | None, memory_bytes: int | None, end_time: float | None,
                 end_buffer_s: float, which: Any = shutil.which,
                 environ: Mapping[str, str] | None = None) -> SrunSteps | None:
    """The runner's :class:`SrunSteps` in slurm mode (None in direct mode). In an allocation
    of several nodes the steps run on the runner's own node (``SLURMD_NODENAME``): with a
    runner on each node (``start_one_worker_per_node``) each starts steps where it is, and a
    single runner's steps stay beside it rather than wherever Slurm finds room."""
    if execution.mode != "slurm" or not slurm_job_id:
        return None
    srun = which("srun")
    if srun is None:
        raise SrunMissing(f"workflow {workflow_id}: execution_config mode "
                          f"{execution.requested} inside Slurm allocation {slurm_job_id}, "
                          "but srun is not on PATH (put Slurm's commands on PATH, or use "
                          "mode: direct)")
    env = os.environ if environ is None else environ
    several = env.get("SLURM_JOB_NUM_NODES", "1").strip() not in ("", "1")
    return SrunSteps(execution=execution, workflow_id=workflow_id, slurm_job_id=slurm_job_id,
                     srun=srun, alloc_cpus=cpus, alloc_memory_bytes=memory_bytes,
                     end_time=end_time, end_buffer_s=end_buffer_s,
                     node=env.get("SLURMD_NODENAME") if several else None)
