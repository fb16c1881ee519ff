"""Slurm helpers for the torc-trio CLI.

Everything that talks to Slurm goes through the standard client commands (``sbatch``,
``squeue``, ``scontrol``, ``scancel``, ``sacct``) run with :func:`trio.run_process`: they are
present on every Slurm cluster, need no extra Python dependency, and keep working
across Slurm versions, whereas the REST API (slurmrestd) is often not deployed.

The pure parts (script rendering, walltime parsing, reading the ``SLURM_*`` environment)
take plain values and are separately testable without a cluster.
"""

from __future__ import annotations

import math
import os
import random
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

__all__ = [
    "SCHEDULER_KEYS",
    "SbatchRequest",
    "SlurmAllocation",
    "SlurmConfigError",
    "SlurmError",
    "current_allocation",
    "job_end_time",
    "parse_cpus_per_node",
    "parse_walltime",
    "render_sbatch_script",
    "sacct_steps",
    "sbatch",
    "scancel",
    "scontrol_job_state",
    "slurm_environment",
    "squeue_states",
]


class SlurmError(Exception):
    """A Slurm command failed (or Slurm is not installed).

    The message carries the command's stderr, because that is the only place Slurm
    explains what went wrong (bad account, unknown partition, controller down...).
    """


class SlurmConfigError(SlurmError, ValueError):
    """A scheduler definition cannot be turned into a valid sbatch script.

    Also a ValueError so that callers validating user input can catch it generically.
    """


# ------------------------------------------------------------------ walltime

_WALLTIME_FORMS = "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"


def parse_walltime(value: str | int) -> int:
    """Seconds in a Slurm ``--time`` value; raise :class:`SlurmConfigError` if invalid.

    Accepts Slurm's own forms: ``minutes``, ``minutes:seconds``, ``hours:minutes:seconds``,
    ``days-hours``, ``days-hours:minutes`` and ``days-hours:minutes:seconds``.  We check it
    here rather than letting sbatch reject it because sbatch's message ("Invalid --time
    specification") does not say which scheduler was wrong, and because the worker needs
    the number of seconds to know when its allocation ends.  ``INFINITE``/``UNLIMITED``
    and zero are refused: a Torc worker needs a finite deadline.
    """
    if isinstance(value, bool):
        raise SlurmConfigError(f"invalid walltime {value!r}: expected {_WALLTIME_FORMS}")
    if isinstance(value, int):
        if value <= 0:
            raise SlurmConfigError(
                f"invalid walltime {value!r}: must be a positive number of minutes"
            )
        return value * 60
    text = str(value).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        raise SlurmConfigError(f"invalid walltime {value!r}: expected {_WALLTIME_FORMS}")
    days_s, a_s, b_s, c_s = m.groups()
    a = int(a_s)
    b = int(b_s) if b_s is not None else None
    c = int(c_s) if c_s is not None else None
    if days_s is not None:
        # D-HH[:MM[:SS]]
        days, hours, minutes, seconds = int(days_s), a, b or 0, c or 0
        if hours > 23:
            raise SlurmConfigError(f"invalid walltime {value!r}: hours must be < 24 with days")
    elif c is not None:
        days, hours, minutes, seconds = 0, a, b or 0, c
    elif b is not None:
        days, hours, minutes, seconds = 0, 0, a, b
    else:
        days, hours, minutes, seconds = 0, 0, a, 0
    if (b is not None and (days_s is not None or c is not None) and minutes > 59) or seconds > 59:
        raise SlurmConfigError(
            f"invalid walltime {value!r}: minutes and seconds must be < 60 ({_WALLTIME_FORMS})"
        )
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise SlurmConfigError(f"invalid walltime {value!r}: must be greater than zero")
    return total


# ------------------------------------------------------------------ sbatch scripts

#: Keys of a Torc ``slurm_schedulers`` entry that map onto sbatch options.
SCHEDULER_KEYS: Mapping[str, str] = {
    "account": "account",
    "partition": "partition",
    "nodes": "nodes",
    "walltime": "time",
    "mem": "mem",
    "gres": "gres",
    "qos": "qos",
    "ntasks_per_node": "ntasks-per-node",
    "tmp": "tmp",
}
#: Scheduler record fields that are bookkeeping, not sbatch options.
_IGNORED_SCHEDULER_KEYS = frozenset(
    {"name", "id", "workflow_id", "scheduler_type", "scheduler_id", "key", "rev"}
)
#: Options this module sets itself; a user value would break output capture/naming.
_RESERVED_OPTIONS = frozenset({"output", "error", "job-name", "parsable", "wrap"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")


def _option_name(key: str) -> str:
    """Canonical sbatch long-option name for a scheduler or ``slurm_defaults`` key.

    ``slurm_defaults`` keys are written either the sbatch way (``cpus-per-task``) or the
    YAML way (``cpus_per_task``); both must merge with the scheduler's own keys.
    """
    k = str(key).strip().lstrip("-")
    if k in SCHEDULER_KEYS:
        return SCHEDULER_KEYS[k]
    k = k.replace("_", "-")
    if not _OPTION_NAME.fullmatch(k):
        raise SlurmConfigError(f"invalid sbatch option name {key!r}")
    return k


def _directive_value(option: str, value: Any) -> str:
    text = str(value)
    if "\n" in text or "\r" in text:
        raise SlurmConfigError(f"sbatch option --{option}: value must not contain a newline")
    if re.search(r"\s", text):
        # sbatch understands double quotes in #SBATCH lines, not single quotes.
        if '"' in text:
            raise SlurmConfigError(
                f"sbatch option --{option}: value {text!r} has both spaces and double quotes"
            )
        return f'"{text}"'
    return text


def _split_extra(extra: str) -> list[str]:
    """Group a raw ``extra`` string into one sbatch option per list item.

    ``"--exclusive --constraint gpu"`` becomes ``["--exclusive", "--constraint gpu"]``
    so each lands on its own ``#SBATCH`` line, which is the only way sbatch reads them.
    """
    try:
        tokens = shlex.split(extra)
    except ValueError as exc:
        raise SlurmConfigError(f"cannot parse extra sbatch arguments {extra!r}: {exc}") from exc
    groups: list[list[str]] = []
    for tok in tokens:
        if tok.startswith("-") or not groups:
            if not tok.startswith("-"):
                raise SlurmConfigError(
                    f"extra sbatch arguments {extra!r}: {tok!r} is not an option"
                )
            groups.append([tok])
        else:
            groups[-1].append(tok)
    out = []
    for g in groups:
        opt = g[0]
        name = opt.lstrip("-").split("=", 1)[0]
        if name in _RESERVED_OPTIONS:
            raise SlurmConfigError(f"extra sbatch arguments: {opt} is managed by torc")
        out.append(" ".join([opt, *(_directive_value(name, v) for v in g[1:])]))
    return out


@dataclass(frozen=True, slots=True)
class SbatchRequest:
    """A fully merged, validated sbatch submission, ready to render.

    Kept separate from the text so callers (and tests) can inspect the effective
    options, e.g. the walltime in seconds that the worker is told about.
    """

    job_name: str
    #: Ordered ``(option, value)``; value ``None`` means a bare flag like ``--exclusive``.
    options: tuple[tuple[str, str | None], ...]
    #: Raw extra option strings, emitted last so they override earlier options.
    extra: tuple[str, ...]
    output_path: str
    error_path: str
    env: tuple[tuple[str, str], ...]
    command: tuple[str, ...]
    walltime_s: int | None
    nodes: int
    start_one_worker_per_node: bool = False
    shell: str = field(default="/bin/bash")

    @classmethod
    def from_scheduler(
        cls,
        *,
        job_name: str,
        scheduler: Mapping[str, Any],
        defaults: Mapping[str, Any],
        runner_argv: Sequence[str],
        env: Mapping[str, str],
        output_dir: str,
        start_one_worker_per_node: bool,
    ) -> SbatchRequest:
        """Merge ``scheduler`` over ``defaults`` (scheduler wins) and validate."""
        if not job_name or "\n" in job_name:
            raise SlurmConfigError(f"invalid Slurm job name {job_name!r}")
        if not runner_argv:
            raise SlurmConfigError("runner_argv must not be empty")
        merged: dict[str, Any] = {}
        extras: list[str] = []
        for source in (defaults, scheduler):
            for key, value in source.items():
                if key in _IGNORED_SCHEDULER_KEYS and source is scheduler:
                    continue
                if key == "extra":
                    if value:
                        extras.extend(_split_extra(str(value)))
                    continue
                opt = _option_name(key)
                if opt in _RESERVED_OPTIONS:
                    raise SlurmConfigError(f"sbatch option --{opt} is managed by torc")
                if value is None and source is scheduler:
                    # An unset scheduler field must not erase a default.
                    continue
                merged[opt] = value
        walltime_s = None
        if merged.get("time") is not None:
            walltime_s = parse_walltime(merged["time"])
        nodes_value = merged.get("nodes", 1)
        try:
            nodes = int(nodes_value) if nodes_value is not None else 1
        except (TypeError, ValueError):
            raise SlurmConfigError(f"invalid node count {nodes_value!r}") from None
        if nodes < 1:
            raise SlurmConfigError(f"invalid node count {nodes_value!r}: must be >= 1")
        options: list[tuple[str, str | None]] = []
        for opt, value in merged.items():
            if value is None or value is False:
                continue
            if value is True:
                options.append((opt, None))
            elif isinstance(value, list | tuple | dict | set):
                raise SlurmConfigError(f"sbatch option --{opt}: unsupported value {value!r}")
            else:
                options.append((opt, _directive_value(opt, value)))
        env_items: list[tuple[str, str]] = []
        for name, value in env.items():
            if not _ENV_NAME.fullmatch(name):
                raise SlurmConfigError(f"invalid environment variable name {name!r}")
            env_items.append((name, str(value)))
        out_dir = str(output_dir).rstrip("/") or "/"
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", job_name)
        return cls(
            job_name=job_name,
            options=tuple(options),
            extra=tuple(extras),
            # %j = Slurm job id: one pair of files per allocation, never overwritten.
            output_path=f"{out_dir}/{safe}_%j.o",
            error_path=f"{out_dir}/{safe}_%j.e",
            env=tuple(env_items),
            command=tuple(str(a) for a in runner_argv),
            walltime_s=walltime_s,
            nodes=nodes,
            start_one_worker_per_node=start_one_worker_per_node,
        )

    def render(self) -> str:
        """The sbatch script text."""
        lines = [f"#!{self.shell}"]
        lines.append(f"#SBATCH --job-name={_directive_value('job-name', self.job_name)}")
        lines.append(f"#SBATCH --output={_directive_value('output', self.output_path)}")
        lines.append(f"#SBATCH --error={_directive_value('error', self.error_path)}")
        for opt, value in self.options:
            lines.append(f"#SBATCH --{opt}" if value is None else f"#SBATCH --{opt}={value}")
        lines.extend(f"#SBATCH {e}" for e in self.extra)
        lines.append("")
        for name, value in self.env:
            lines.append(f"export {name}={shlex.quote(value)}")
        if self.env:
            lines.append("")
        cmd = shlex.join(self.command)
        if self.start_one_worker_per_node:
            # One task per node.  --ntasks is needed too: without it srun inherits the
            # allocation's SLURM_NTASKS (e.g. from --ntasks-per-node=N) and ignores
            # --ntasks-per-node=1 with a warning, starting N workers per node.
            # --wait=0 --kill-on-bad-exit=0 (Torc PR #318): runners end one by one (idle,
            # done); on sites with WaitTime>0 srun would kill the others soon after the
            # first one exits, and a runner that fails must not take the others along.
            # --overlap: jobs in execution_config mode slurm are steps of this allocation
            # too; without it this step holds every CPU and they would wait forever.
            cmd = (
                "srun --nodes=$SLURM_JOB_NUM_NODES --ntasks=$SLURM_JOB_NUM_NODES "
                "--ntasks-per-node=1 --wait=0 --kill-on-bad-exit=0 --overlap " + cmd
            )
        # exec: the runner is the batch step's main process, so Slurm's SIGTERM at the
        # time limit (and scancel) reaches it directly.
        lines.append(f"exec {cmd}")
        return "\n".join(lines) + "\n"


def render_sbatch_script(
    *,
    job_name: str,
    scheduler: dict[str, Any],
    defaults: dict[str, Any],
    runner_argv: list[str],
    env: dict[str, str],
    output_dir: str,
    start_one_worker_per_node: bool,
) -> str:
    """Render an sbatch script for one Torc slurm scheduler.

    ``scheduler`` uses Torc's keys (``account``, ``partition``, ``nodes``, ``walltime``,
    ``mem``, ``gres``, ``qos``, ``ntasks_per_node``, ``tmp``, ``extra``); ``defaults`` are
    the workflow's ``slurm_defaults`` (sbatch option names, ``_`` or ``-``; ``True`` means
    a bare flag).  Scheduler values win; ``extra`` (raw sbatch arguments) comes last.
    Raises :class:`SlurmConfigError` for invalid input such as a bad walltime.
    """
    return SbatchRequest.from_scheduler(
        job_name=job_name,
        scheduler=scheduler,
        defaults=defaults,
        runner_argv=runner_argv,
        env=env,
        output_dir=output_dir,
        start_one_worker_per_node=start_one_worker_per_node,
    ).render()


# ------------------------------------------------------------------ running commands


async def _run(argv: Sequence[str]) -> tuple[int, str, str]:
    """Run a Slurm client command; (returncode, stdout, stderr)."""
    try:
        proc = await trio.run_process(
            list(argv), capture_stdout=True, capture_stderr=True, check=False
        )
    except FileNotFoundError as exc:
        raise SlurmError(f"{argv[0]}: not found (is Slurm installed and on PATH?)") from exc
    except OSError as exc:
        raise SlurmError(f"{argv[0]}: cannot run: {exc}") from exc
    return (
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )


def _invalid_job_id(stderr: str) -> bool:
    return "Invalid job id" in stderr


#: sbatch errors that will not go away by retrying (bad option, account, partition...).
_PERMANENT_SBATCH_ERRORS = re.compile(
    r"unrecognized option|invalid option|Invalid|invalid|not available|"
    r"Unable to open file|can not be satisfied|cannot be satisfied|"
    r"not permitted|Access/permission denied|Job violates accounting/QOS policy|"
    r"exceeds|too many|requires an argument",
)
#: ... unless Slurm itself says it is transient.
_TRANSIENT_SBATCH_ERRORS = re.compile(
    r"timed out|Socket timed out|Unable to contact|Connection refused|temporarily|"
    r"try again|Resource temporarily unavailable|Slurm backup controller in standby|"
    r"Communication connection failure|Zero Bytes were transmitted",
    re.IGNORECASE,
)


def _sbatch_error_is_permanent(stderr: str) -> bool:
    if _TRANSIENT_SBATCH_ERRORS.search(stderr):
        return False
    return bool(_PERMANENT_SBATCH_ERRORS.search(stderr))


def _write_script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


async def sbatch(
    script_text: str,
    *,
    script_path: str,
    retries: int = 5,
    base_delay: float = 1.0,
    max_delay: float = 60.0,
) -> str:
    """Write ``script_text`` to ``script_path`` and submit it; return the Slurm job id.

    Busy controllers do refuse or time out submissions, so failures are retried up to
    ``retries`` times with exponential backoff and full jitter (many workflows may
    submit at once; jitter keeps them from retrying in lockstep).  Errors that retrying
    cannot fix (invalid account, partition, option) raise at once.  Raises
    :class:`SlurmError` with sbatch's stderr.
    """
    path = Path(script_path)
    await trio.to_thread.run_sync(_write_script, path, script_text)
    argv = ["sbatch", "--parsable", str(path)]
    last = ""
    for attempt in range(retries + 1):
        rc, out, err = await _run(argv)
        if rc == 0:
            # --parsable prints "jobid" or "jobid;cluster".
            job_id = out.strip().splitlines()[-1].split(";", 1)[0].strip() if out.strip() else ""
            if job_id.isdigit():
                return job_id
            last = f"unexpected sbatch output {out.strip()!r} {err.strip()}"
        else:
            last = err.strip() or out.strip() or f"exit code {rc}"
            if _sbatch_error_is_permanent(last):
                break
        if attempt < retries:
            cap = min(max_delay, base_delay * (2**attempt))
            await trio.sleep(cap / 2 + random.uniform(0, cap / 2))
    raise SlurmError(f"sbatch {path} failed: {last}")


async def squeue_states(job_ids: list[str]) -> dict[str, str]:
    """Map each queued job id to its state (PENDING, RUNNING, COMPLETING, ...).

    Ids missing from the result are no longer in the queue (finished and gone from
    squeue's default view); use :func:`scontrol_job_state` for how they ended.
    """
    ids = [str(j) for j in job_ids if str(j)]
    states: dict[str, str] = {}
    for start in range(0, len(ids), 200):  # keep the command line bounded
        chunk = ids[start : start + 200]
        rc, out, err = await _run(["squeue", "-h", "-j", ",".join(chunk), "-o", "%i %T"])
        if rc != 0:
            # squeue fails only if *every* listed id is unknown: all of them are gone.
            if _invalid_job_id(err):
                continue
            raise SlurmError(f"squeue failed: {err.strip() or f'exit code {rc}'}")
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] in chunk:
                states[parts[0]] = parts[1]
    return states


def _parse_scontrol_fields(line: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for m in re.finditer(r"(\w+)=(\S*)", line):
        fields.setdefault(m.group(1), m.group(2))
    return fields


async def _scontrol_job(job_id: str) -> dict[str, str] | None:
    rc, out, err = await _run(["scontrol", "show", "job", "-o", str(job_id)])
    if rc != 0:
        if _invalid_job_id(err):
            return None
        raise SlurmError(f"scontrol show job {job_id} failed: {err.strip() or f'exit code {rc}'}")
    for line in out.splitlines():
        fields = _parse_scontrol_fields(line)
        if fields.get("JobId") == str(job_id):
            return fields
    return None


async def scontrol_job_state(job_id: str) -> str | None:
    """State of a job, also for recently finished ones (COMPLETED, FAILED, CANCELLED...).

    slurmctld keeps finished jobs for ``MinJobAge`` seconds (300 by default); after
    that, or for an unknown id, this returns None.  Works without accounting (sacct).
    """
    fields = await _scontrol_job(job_id)
    if fields is None:
        return None
    return fields.get("JobState") or None


async def scancel(job_ids: Sequence[str]) -> None:
    """Cancel jobs; ids that already finished or are unknown are not an error."""
    ids = [str(j) for j in job_ids if str(j)]
    for start in range(0, len(ids), 200):
        chunk = ids[start : start + 200]
        rc, _out, err = await _run(["scancel", *chunk])
        if rc == 0:
            continue
        bad = [
            line
            for line in err.splitlines()
            if line.strip()
            and "Invalid job id" not in line
            and "already completing or completed" not in line
        ]
        if bad:
            raise SlurmError(f"scancel failed: {' '.join(bad)}")


#: What ``sacct_steps`` asks of sacct for each step (AllocTRES carries a step's memory: its
#: ReqMem is empty in Slurm 22.05).
SACCT_FIELDS = ("JobID", "JobName", "State", "ExitCode", "MaxRSS", "AllocTRES", "Elapsed",
                "NodeList")


def parse_sacct(text: str) -> list[dict[str, str]]:
    """Rows of ``sacct -P -n -o SACCT_FIELDS`` output, keyed by field name."""
    rows = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) > len(SACCT_FIELDS):  # a job name with '|' in it
            extra = len(parts) - len(SACCT_FIELDS)
            parts = [parts[0], "|".join(parts[1 : 2 + extra]), *parts[2 + extra :]]
        if len(parts) == len(SACCT_FIELDS):
            rows.append(dict(zip(SACCT_FIELDS, parts, strict=True)))
    return rows


async def sacct_steps(job_ids: Sequence[str]) -> list[dict[str, str]]:
    """Slurm's accounting records of ``job_ids`` and all their steps (see :func:`parse_sacct`).

    Needs accounting (slurmdbd): without it sacct fails and so does this, with its message.
    With ``-j`` sacct looks back to the epoch, so old allocations are found too.
    """
    ids = [str(j) for j in job_ids if str(j)]
    rows: list[dict[str, str]] = []
    for start in range(0, len(ids), 200):  # keep the command line bounded
        chunk = ids[start : start + 200]
        rc, out, err = await _run(["sacct", "-P", "-n", "-j", ",".join(chunk),
                                   "-o", ",".join(SACCT_FIELDS)])
        if rc != 0:
            raise SlurmError(f"sacct failed: {err.strip() or out.strip() or f'exit code {rc}'}")
        rows.extend(parse_sacct(out))
    return rows


# ------------------------------------------------------------------ inside an allocation


@dataclass(frozen=True, slots=True)
class SlurmAllocation:
    """What a worker may use on this node of a Slurm allocation."""

    job_id: str
    #: CPUs allocated on this node.
    num_cpus: int | None
    #: Memory allocated on this node in MB (None: unknown / whole node).
    memory_mb: int | None
    num_gpus: int
    num_nodes: int
    #: Epoch seconds when Slurm will end the job, if known.
    end_time: float | None
    #: Seconds from ``now`` to ``end_time`` (never negative), if known.
    remaining_s: float | None
    node_name: str | None = None
    node_id: int | None = None

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory_mb is None else self.memory_mb * 1024 * 1024

    def with_end_time(self, end_time: float | None, now: float) -> SlurmAllocation:
        """A copy with ``end_time`` filled in (e.g. from :func:`job_end_time`)."""
        remaining = None if end_time is None else max(0.0, end_time - now)
        return SlurmAllocation(
            job_id=self.job_id,
            num_cpus=self.num_cpus,
            memory_mb=self.memory_mb,
            num_gpus=self.num_gpus,
            num_nodes=self.num_nodes,
            end_time=end_time,
            remaining_s=remaining,
            node_name=self.node_name,
            node_id=self.node_id,
        )


def parse_cpus_per_node(value: str) -> list[int]:
    """Expand Slurm's compressed per-node counts: ``"4,2(x3)"`` -> ``[4, 2, 2, 2]``."""
    out: list[int] = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part)
        if not m:
            raise ValueError(f"invalid Slurm per-node count {value!r}")
        out.extend([int(m.group(1))] * int(m.group(2) or 1))
    return out


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    m = re.match(r"\s*(\d+)", value)
    return int(m.group(1)) if m else None


def _mem_mb(value: str | None) -> int | None:
    """Slurm memory values are MB; tolerate a unit suffix (K/M/G/T)."""
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGTkmgt]?)[Bb]?\s*", value)
    if not m:
        return None
    factor = {"": 1.0, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 * 1024}
    return int(float(m.group(1)) * factor[m.group(2).upper()])


def slurm_environment(environ: Mapping[str, str], now: float) -> SlurmAllocation | None:
    """Describe the Slurm allocation we run in, from its environment; None outside Slurm.

    Pure function (no Slurm calls) so it is testable and cheap.  ``SLURM_JOB_END_TIME``
    is only exported by newer Slurm versions (not 22.05); when it is missing,
    ``end_time`` is None and the caller can use :func:`job_end_time` (or
    :func:`current_allocation`, which does both).
    """
    job_id = environ.get("SLURM_JOB_ID") or environ.get("SLURM_JOBID")
    if not job_id:
        return None
    node_id = _int(environ.get("SLURM_NODEID"))
    cpus = _int(environ.get("SLURM_CPUS_ON_NODE"))
    if cpus is None:
        per_node = environ.get("SLURM_JOB_CPUS_PER_NODE")
        if per_node:
            try:
                counts = parse_cpus_per_node(per_node)
            except ValueError:
                counts = []
            if counts:
                idx = node_id if node_id is not None and node_id < len(counts) else 0
                cpus = counts[idx]
    memory_mb = _mem_mb(environ.get("SLURM_MEM_PER_NODE"))
    if memory_mb is None:
        per_cpu = _mem_mb(environ.get("SLURM_MEM_PER_CPU"))
        if per_cpu is not None and cpus is not None:
            memory_mb = per_cpu * cpus
    gpus = _int(environ.get("SLURM_GPUS_ON_NODE"))
    if gpus is None:
        job_gpus = environ.get("SLURM_JOB_GPUS") or environ.get("SLURM_STEP_GPUS")
        gpus = len([g for g in job_gpus.split(",") if g.strip()]) if job_gpus else 0
    nodes = _int(environ.get("SLURM_JOB_NUM_NODES")) or _int(environ.get("SLURM_NNODES")) or 1
    end_time: float | None = None
    end_raw = environ.get("SLURM_JOB_END_TIME")
    if end_raw and end_raw.strip().isdigit() and int(end_raw) > 0:
        end_time = float(end_raw)
    alloc = SlurmAllocation(
        job_id=job_id,
        num_cpus=cpus,
        memory_mb=memory_mb,
        num_gpus=gpus,
        num_nodes=nodes,
        end_time=None,
        remaining_s=None,
        node_name=environ.get("SLURMD_NODENAME") or None,
        node_id=node_id,
    )
    return alloc.with_end_time(end_time, now)


def _parse_slurm_time(text: str) -> float | None:
    """Epoch seconds for Slurm's ``YYYY-MM-DDTHH:MM:SS`` (local time); None for N/A etc."""
    text = text.strip()
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None  # "NONE", "N/A", "Unknown", "INVALID" ...


async def job_end_time(job_id: str) -> float | None:
    """When Slurm will end ``job_id`` (epoch seconds), or None if unknown/unlimited.

    For Slurm versions that do not export ``SLURM_JOB_END_TIME``.  squeue prints the
    time in the local timezone (``%e``); scontrol's ``EndTime`` is the fallback, e.g.
    when the job already left squeue's view.
    """
    rc, out, err = await _run(["squeue", "-h", "-j", str(job_id), "-o", "%e"])
    if rc == 0 and out.strip():
        return _parse_slurm_time(out.strip().splitlines()[0])
    if rc != 0 and not _invalid_job_id(err):
        raise SlurmError(f"squeue failed: {err.strip() or f'exit code {rc}'}")
    fields = await _scontrol_job(job_id)
    if fields is None or "EndTime" not in fields:
        return None
    return _parse_slurm_time(fields["EndTime"])


async def current_allocation(
    environ: Mapping[str, str] | None = None, now: float | None = None
) -> SlurmAllocation | None:
    """:func:`slurm_environment`, with the end time asked from Slurm if not exported."""
    env = os.environ if environ is None else environ
    t = time.time() if now is None else now
    alloc = slurm_environment(env, t)
    if alloc is None or alloc.end_time is not None:
        return alloc
    try:
        end = await job_end_time(alloc.job_id)
    except SlurmError:
        end = None
    if end is None or math.isnan(end):
        return alloc
    return alloc.with_end_time(end, t)
