"""Direct mode's resource limits: which of a job's stated requirements the runner enforces,
and what a job's end is called (its ``failure_cause``).

Why here and not in Slurm: in direct mode (Torc's default, ``execution_config:
{mode: direct, limit_resources: true}``) nothing else stops a job that outgrows what it asked
for, and the runner packed other jobs around that request. The runner's resource monitor
(:mod:`torc_cli.monitor`) samples each job's process tree; a tree over its memory is killed
(SIGKILL to its process group: 137, failed, cause ``oom``), and a job past its runtime gets the
workflow's termination signal, then SIGKILL after the grace period (terminated, cause
``timeout``).

Defaults are no limits. A job that states no requirements gets Torc's defaults, 1 MiB and
one minute (``P0DT1M``), and the runner cannot tell those from the same values written out.
Torc itself treats 1 MiB as no real memory request (``bash`` alone is bigger; its slurm mode
gives such a job its CPUs' share instead, as :mod:`torc_cli.srun` does), and newer Torc
releases moved the default runtime to an hour, so killing every unstated job after a minute
would be neither Torc's behaviour nor anyone's intent. The rule, per field: memory is a limit
when it is more than 1 MiB, runtime when it is not the 60-second default (to enforce a one
minute limit, write ``PT61S``). ``limit_resources: false`` turns both off.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torc_core.spec import DEFAULT_MEMORY_BYTES, DEFAULT_RUNTIME_S

from .procs import ProcessOutcome

#: Recorded for a job the runner killed for its memory: 128 + SIGKILL, as Slurm and Torc.
OOM_EXIT_CODE = 128 + int(signal.SIGKILL)
#: A job killed by one of these was ended from outside (Slurm's scancel and time limit signal
#: every process of the allocation): terminated, to be rerun, not failed. SIGKILL (the
#: kernel's OOM killer) stays a failure.
TERMINATION_SIGNALS = frozenset(int(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
#: srun's exit status of a step Slurm ended at its --time (torc_cli.srun.TIMEOUT_EXIT_CODE)
_SLURM_TIMEOUT = 152

CAUSES = ("oom", "timeout", "signal", "exit")


@dataclass(frozen=True, slots=True)
class JobLimits:
    """What the runner enforces for one job (None: no limit)."""

    memory_bytes: int | None = None
    runtime_s: float | None = None

    @property
    def any(self) -> bool:
        return self.memory_bytes is not None or self.runtime_s is not None


NO_LIMITS = JobLimits()


def job_limits(job: Mapping[str, Any], enforce: bool) -> JobLimits:
    """The limits of ``job`` (as claimed: ``memory_bytes``, ``runtime_s``) when the runner
    ``enforce``s them (direct mode with ``limit_resources``); see the module's rule."""
    if not enforce:
        return NO_LIMITS
    memory = int(job.get("memory_bytes") or 0)
    runtime = float(job.get("runtime_s") or 0)
    return JobLimits(
        memory_bytes=memory if memory > DEFAULT_MEMORY_BYTES else None,
        runtime_s=runtime if runtime > 0 and runtime != DEFAULT_RUNTIME_S else None)


def failure_cause(outcome: ProcessOutcome, return_code: int, terminated: bool,
                  killed_for: str | None, *, slurm: bool = False) -> str | None:
    """Why a job attempt did not succeed: ``oom`` or ``timeout`` (the runner's limits, or
    Slurm's: srun's 137 for a step over its --mem, 152 past its --time), ``signal`` (the
    process itself died of one), ``exit`` (a non-zero exit status); None for success."""
    if killed_for is not None:
        return killed_for
    if slurm and terminated and return_code == _SLURM_TIMEOUT:
        return "timeout"
    if slurm and not terminated and return_code == OOM_EXIT_CODE and outcome.signal is None:
        return "oom"
    if outcome.signal is not None:
        return "signal"
    if return_code != 0:
        return "exit"
    return None
