"""What measured use says about jobs' requirements: over-utilization rows, failure diagnoses,
and the new requirements ``correct-resources`` and ``recover`` give jobs.

Pure functions of a job (``GET /jobs``: ``num_cpus``, ``memory_bytes``, ``runtime_s``) and its
result (``GET /results``: ``exec_time_s``, ``return_code``, ``status`` and the monitor's
``peak_memory_bytes``, ``peak_cpu_percent``, ``failure_cause``), so the three commands agree
and the rules are tested without a server.

The rules follow Torc (reports.rs, resource_correction.rs, recover.rs, and the docs'
slurm-exit-codes page), with what torc-trio knows better put first: the runner's
``failure_cause`` ("oom": over its memory limit or killed by the OOM killer; "timeout": past
its runtime) is evidence by itself. Without it, as Torc: a peak above the requirement is an
OOM, return code 137 (128 + SIGKILL) within 80% of the runtime is an OOM, 152 (128 + SIGXCPU,
Slurm's time limit) is a timeout, and a failure after 90% of the runtime is a likely timeout.

Departure from Torc: requirements are per job here (the server's jobs carry them; Torc
shares one resource_requirements record between jobs), so each job gets the values its own
measurements call for, and no job that stayed within its limits is changed with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MIB = 1 << 20
#: Torc's default of --min-over-utilization: smaller excesses are noise, not violations.
MIN_OVER_UTILIZATION = 1.0
#: A failure after this share of the runtime is a likely timeout (Torc's 90%).
TIMEOUT_SHARE = 0.9
#: A SIGKILL (137) before this share of the runtime is an OOM, not a timeout (Torc's 80%).
OOM_KILL_SHARE = 0.8
FAILED_STATUSES = ("failed", "terminated")


def format_memory(n: int) -> str:
    """Torc's format_memory_bytes: '512.0 MB', '8.00 GB'."""
    mb = n / MIB
    return f"{mb:.1f} MB" if mb < 1024 else f"{mb / 1024:.2f} GB"


def format_duration(seconds: float) -> str:
    """Torc's format_duration: '2h 0m 0s', '45m 30s', '4.2s'."""
    h = math.floor(seconds / 3600)
    m = math.floor((seconds % 3600) / 60)
    s = math.floor(seconds % 60)
    if h > 0:
        return f"{h}h {m}m {s}s"
    if m > 0:
        return f"{m}m {s}s"
    return f"{seconds:.1f}s"


def short_memory(n: int) -> str:
    """A requirement as a spec writes it, rounded up: '12g', '300m', '64k'."""
    for unit, size in (("g", 1 << 30), ("m", MIB), ("k", 1 << 10)):
        if n >= size:
            return f"{-(-n // size)}{unit}"
    return f"{n}"


def violations(job: dict[str, Any], result: dict[str, Any], *, show_all: bool = False,
               min_over: float = MIN_OVER_UTILIZATION) -> list[dict[str, Any]]:
    """Torc's check-resource-utilization rows of one result: Memory, CPU and Runtime, each
    ``{job_id, job_name, resource_type, specified, peak_used, over_utilization}``; those
    within the limit only with ``show_all`` (as '-x.x%'), and an excess below ``min_over``
    percent not at all."""
    rows: list[dict[str, Any]] = []

    def row(kind: str, specified: str, used: str, pct: float, over: bool) -> None:
        if over and pct < min_over:
            return
        if over or show_all:
            rows.append({"job_id": int(job["id"]), "job_name": job["name"],
                         "resource_type": kind, "specified": specified, "peak_used": used,
                         "over_utilization": f"{'+' if over else '-'}{pct:.1f}%"})

    peak = result.get("peak_memory_bytes")
    memory = int(job["memory_bytes"])
    if peak is not None and memory > 0:
        over = peak > memory
        pct = (peak / memory - 1) * 100 if over else (1 - peak / memory) * 100
        row("Memory", format_memory(memory), format_memory(int(peak)), pct, over)
    cpu = result.get("peak_cpu_percent")
    cpus = int(job["num_cpus"])
    if cpu is not None and cpus > 0:
        limit = 100.0 * cpus
        over = cpu > limit
        pct = (cpu / limit - 1) * 100 if over else (1 - cpu / limit) * 100
        row("CPU", f"{limit:.0f}% ({cpus} cores)", f"{cpu:.1f}%", pct, over)
    runtime = int(job["runtime_s"])
    ran = float(result["exec_time_s"])
    if runtime > 0:
        over = ran > runtime
        pct = (ran / runtime - 1) * 100 if over else (1 - ran / runtime) * 100
        row("Runtime", format_duration(runtime), format_duration(ran), pct, over)
    return rows


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Why a failed or terminated job failed, as far as its result tells."""

    job_id: int
    job_name: str
    status: str
    return_code: int
    exec_time_s: float
    num_cpus: int
    memory_bytes: int
    runtime_s: int
    peak_memory_bytes: int | None
    peak_cpu_percent: float | None
    likely_oom: bool = False
    oom_reason: str | None = None
    likely_timeout: bool = False
    timeout_reason: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def cause(self) -> str:
        """'oom', 'timeout' or 'unknown' (an OOM first: more memory is what it needs)."""
        return "oom" if self.likely_oom else "timeout" if self.likely_timeout else "unknown"

    def to_json(self) -> dict[str, Any]:
        """Torc's ResourceViolationInfo fields (and this job's status and cause)."""
        return {
            "job_id": self.job_id, "job_name": self.job_name, "status": self.status,
            "return_code": self.return_code, "exec_time_minutes": self.exec_time_s / 60,
            "configured_memory": short_memory(self.memory_bytes),
            "configured_runtime": format_duration(self.runtime_s),
            "configured_cpus": self.num_cpus, "peak_memory_bytes": self.peak_memory_bytes,
            "peak_memory_formatted": None if self.peak_memory_bytes is None
            else format_memory(self.peak_memory_bytes),
            "likely_oom": self.likely_oom, "oom_reason": self.oom_reason,
            "likely_timeout": self.likely_timeout, "timeout_reason": self.timeout_reason,
            "peak_cpu_percent": self.peak_cpu_percent, "cause": self.cause,
        }


def diagnose(job: dict[str, Any], result: dict[str, Any]) -> Diagnosis:
    """The module docstring's rules, applied to one failed or terminated job's result."""
    code = int(result["return_code"])
    ran = float(result["exec_time_s"])
    memory, runtime = int(job["memory_bytes"]), int(job["runtime_s"])
    peak = result.get("peak_memory_bytes")
    cause = result.get("failure_cause")
    oom_reason = timeout_reason = None
    if cause == "oom":
        oom_reason = "failure_cause_oom"
    elif peak is not None and memory > 0 and peak > memory:
        oom_reason = "memory_exceeded"
    if cause == "timeout":
        timeout_reason = "failure_cause_timeout"
    elif code == 152:
        timeout_reason = "sigxcpu_152"
    elif runtime > 0 and ran > runtime * TIMEOUT_SHARE and cause != "oom":
        timeout_reason = "runtime_near_limit"
    # 137 also when the runner saw a plain exit: a shell passes on its child's SIGKILL
    if oom_reason is None and code == 137 and cause != "timeout" and (
            runtime <= 0 or ran < runtime * OOM_KILL_SHARE):
        oom_reason = "sigkill_137"
    return Diagnosis(
        job_id=int(job["id"]), job_name=str(job["name"]), status=str(result["status"]),
        return_code=code, exec_time_s=ran, num_cpus=int(job["num_cpus"]), memory_bytes=memory,
        runtime_s=runtime, peak_memory_bytes=None if peak is None else int(peak),
        peak_cpu_percent=result.get("peak_cpu_percent"),
        likely_oom=oom_reason is not None, oom_reason=oom_reason,
        likely_timeout=timeout_reason is not None, timeout_reason=timeout_reason)


def _round_memory(n: float) -> int:
    """Up to a whole MiB: a requirement a person reads and a spec writes."""
    return max(MIB, -(-math.ceil(n) // MIB) * MIB)


def recovery_change(d: Diagnosis, memory_multiplier: float, runtime_multiplier: float) \
        -> dict[str, Any] | None:
    """``recover``'s new requirements for a diagnosed job (None: nothing to raise). An OOM
    gets ``memory_multiplier`` times the larger of its peak and its requirement (a peak at
    the limit is where the kill came, not what the job needs); a timeout gets
    ``runtime_multiplier`` times the larger of its run time and its runtime."""
    change: dict[str, Any] = {}
    if d.likely_oom:
        base = max(d.memory_bytes, d.peak_memory_bytes or 0)
        change["memory_bytes"] = _round_memory(base * memory_multiplier)
    if d.likely_timeout:
        base_s = max(float(d.runtime_s), d.exec_time_s)
        change["runtime_s"] = max(1, math.ceil(base_s * runtime_multiplier))
    return change or None


def correction(job: dict[str, Any], results: list[dict[str, Any]], memory_multiplier: float,
               runtime_multiplier: float) -> dict[str, Any] | None:
    """``correct-resources``'s new requirements for a job from its results (None: none
    needed): memory, CPUs and runtime each raised to the largest measured use times its
    multiplier where that use went past the requirement (CPUs with the memory multiplier, as
    Torc: both are capacity). A failure diagnosed as an OOM or timeout without a measurement
    past the limit gets its requirement times the multiplier."""
    memory, cpus, runtime = (int(job["memory_bytes"]), int(job["num_cpus"]),
                             int(job["runtime_s"]))
    peak = max((int(r["peak_memory_bytes"]) for r in results
                if r.get("peak_memory_bytes") is not None), default=None)
    cpu = max((float(r["peak_cpu_percent"]) for r in results
               if r.get("peak_cpu_percent") is not None), default=None)
    ran = max((float(r["exec_time_s"]) for r in results), default=0.0)
    failed = [diagnose(job, r) for r in results if r.get("status") in FAILED_STATUSES]
    change: dict[str, Any] = {}
    if peak is not None and peak > memory:
        change["memory_bytes"] = _round_memory(peak * memory_multiplier)
    elif any(d.likely_oom for d in failed):
        change["memory_bytes"] = _round_memory(memory * memory_multiplier)
    if cpu is not None and cpu > 100.0 * cpus:
        change["num_cpus"] = max(1, math.ceil(cpu / 100.0 * memory_multiplier))
    if runtime > 0 and ran > runtime:
        change["runtime_s"] = max(1, math.ceil(ran * runtime_multiplier))
    elif any(d.likely_timeout for d in failed):
        change["runtime_s"] = max(1, math.ceil(runtime * runtime_multiplier))
    change = {k: v for k, v in change.items()
              if v > {"memory_bytes": memory, "num_cpus": cpus, "runtime_s": runtime}[k]}
    return change or None


def describe_change(job: dict[str, Any], change: dict[str, Any]) -> list[str]:
    """'memory 1g -> 2g', 'runtime 10m 0s -> 13m 0s', 'CPUs 1 -> 3' (Torc's arrows)."""
    parts = []
    if "memory_bytes" in change:
        parts.append(f"memory {short_memory(int(job['memory_bytes']))} -> "
                     f"{short_memory(change['memory_bytes'])}")
    if "num_cpus" in change:
        parts.append(f"CPUs {job['num_cpus']} -> {change['num_cpus']}")
    if "runtime_s" in change:
        parts.append(f"runtime {format_duration(int(job['runtime_s']))} -> "
                     f"{format_duration(change['runtime_s'])}")
    return parts


def latest_per_job(results: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each job's result of its latest run and attempt."""
    latest: dict[int, dict[str, Any]] = {}
    for r in results:
        job = int(r["job_id"])
        seen = latest.get(job)
        if seen is None or (int(r["run_id"]), int(r["attempt"])) >= (
                int(seen["run_id"]), int(seen["attempt"])):
            latest[job] = r
    return latest


# ---------------------------------------------------------------------------------------------
# watch --auto-schedule (Torc's): when to submit more allocations


@dataclass(slots=True)
class AutoSchedule:
    """Torc's ``watch --auto-schedule`` rules, as state fed with explicit times (the caller's
    one clock), so they are tested without waiting: new allocations at once when jobs are
    ready and no allocation is pending or running; else when retry jobs (attempt > 1) wait,
    ``threshold`` of them or for ``stranded_s``, at most once per ``cooldown_s``."""

    threshold: int = 5
    cooldown_s: float = 1800.0
    stranded_s: float = 7200.0
    last_scheduled: float | None = None
    retries_since: float | None = None

    def reason(self, now: float, *, ready: int, retry_ready: int, live_allocations: int) \
            -> str | None:
        """Why to submit now (None: not now)."""
        if ready and not live_allocations:
            return f"{ready} job(s) ready and no allocation pending or running"
        if not retry_ready:
            self.retries_since = None
            return None
        if self.retries_since is None:
            self.retries_since = now
        if self.last_scheduled is not None and now - self.last_scheduled < self.cooldown_s:
            return None
        if retry_ready >= self.threshold:
            return f"{retry_ready} retry job(s) waiting (threshold {self.threshold})"
        if now - self.retries_since >= self.stranded_s:
            return (f"{retry_ready} retry job(s) waiting for "
                    f"{now - self.retries_since:.0f} s (stranded)")
        return None

    def scheduled(self, now: float) -> None:
        self.last_scheduled = now
        self.retries_since = None
