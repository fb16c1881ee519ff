"""The validated, parameter-expanded workflow definition.

These are the objects a spec document (YAML, JSON, JSON5 in Torc's format) turns into after
parsing, parameter expansion and validation (:func:`torc_core.parse.parse_spec`). Every name
reference in them has been checked; regexes are kept as written (and resolved by the graph
compiler, which caches each distinct pattern so an N x M all-to-all costs N + M work).

Why slotted frozen dataclasses: a million expanded jobs must fit in memory next to the engine,
and immutability lets the graph compiler share tuples between jobs safely.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

EMPTY: tuple[str, ...] = ()

#: Torc's defaults for a job with no resource_requirements.
DEFAULT_NUM_CPUS = 1
DEFAULT_MEMORY_BYTES = 1024 * 1024  # "1m"
DEFAULT_RUNTIME_S = 60  # "P0DT1M"

#: The deepest iteration of dynamic jobs a workflow allows unless it says otherwise.
DEFAULT_MAX_ITERATIONS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceRequirements:
    name: str
    num_cpus: int = DEFAULT_NUM_CPUS
    num_gpus: int = 0
    num_nodes: int = 1
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    runtime_s: int = DEFAULT_RUNTIME_S
    memory: str = "1m"  # as written, for display
    runtime: str = "P0DT1M"  # as written, for display


@dataclass(frozen=True, slots=True, kw_only=True)
class FileSpec:
    name: str
    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UserDataSpec:
    name: str
    data: Any = None
    is_ephemeral: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureHandlerRule:
    exit_codes: tuple[int, ...] = ()
    match_all_exit_codes: bool = False
    recovery_script: str | None = None
    max_retries: int = 0

    def matches(self, return_code: int) -> bool:
        return self.match_all_exit_codes or return_code in self.exit_codes


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureHandler:
    name: str
    rules: tuple[FailureHandlerRule, ...] = ()

    def rule_for(self, return_code: int) -> FailureHandlerRule | None:
        """The first rule matching an exit code; specific codes win over match-all."""
        for rule in self.rules:
            if not rule.match_all_exit_codes and return_code in rule.exit_codes:
                return rule
        for rule in self.rules:
            if rule.match_all_exit_codes:
                return rule
        return None


def failure_handler_from_json(h: Mapping[str, Any]) -> FailureHandler:
    """A handler from its JSON (as the server stores it and the runner receives it)."""
    return FailureHandler(
        name=str(h["name"]),
        rules=tuple(
            FailureHandlerRule(
                exit_codes=tuple(int(c) for c in r.get("exit_codes", ())),
                match_all_exit_codes=bool(r.get("match_all_exit_codes", False)),
                recovery_script=r.get("recovery_script"),
                max_retries=int(r.get("max_retries", 0)),
            )
            for r in h.get("rules", ())
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SlurmScheduler:
    name: str
    account: str | None = None
    partition: str | None = None
    nodes: int = 1
    walltime: str = "01:00:00"
    mem: str | None = None
    gres: str | None = None
    qos: str | None = None
    ntasks_per_node: int | None = None
    tmp: str | None = None
    extra: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionSpec:
    trigger_type: str  # on_workflow_start | on_workflow_complete | on_jobs_ready | on_jobs_complete
    action_type: str  # run_commands | schedule_nodes
    jobs: tuple[str, ...] = EMPTY  # resolved job names (from `jobs` and `job_name_regexes`)
    commands: tuple[str, ...] = EMPTY
    scheduler: str | None = None
    scheduler_type: str = "slurm"
    num_allocations: int = 1
    start_one_worker_per_node: bool = False
    max_parallel_jobs: int | None = None
    #: Whether the action persists and can be claimed by multiple workers (Torc).
    persistent: bool = False


#: Torc's stdio modes: where a job's stdout and stderr go.
STDIO_MODES = ("separate", "combined", "no_stdout", "no_stderr", "none")
#: Torc's execution modes: jobs run directly, as ``srun`` steps, or as steps inside Slurm.
EXECUTION_MODES = ("direct", "slurm", "auto")
#: ``execution_config.output_tails`` (ours): which results carry the end of their output.
OUTPUT_TAILS = ("failed", "all", "none")


@dataclass(frozen=True, slots=True, kw_only=True)
class StdioConfig:
    """Torc's ``stdio``: ``separate`` (``.o`` and ``.e``), ``combined`` (one ``.log``),
    ``no_stdout``, ``no_stderr`` or ``none``; ``delete_on_success`` removes the files of a job
    that completed."""

    mode: str = "separate"
    delete_on_success: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionConfig:
    """Torc's ``execution_config``: how runners start jobs (see docs/spec-fields.md)."""

    mode: str = "direct"
    #: slurm mode: pass the job's CPUs, memory and GPUs to ``srun`` (Slurm enforces them)
    limit_resources: bool = True
    #: slurm mode: ``srun --signal`` (e.g. ``TERM@120``)
    srun_termination_signal: str | None = None
    #: direct mode: the signal sent to running jobs ``sigterm_lead_seconds`` before the
    #: allocation ends
    termination_signal: str = "SIGTERM"
    sigterm_lead_seconds: int = 30
    sigkill_headroom_seconds: int = 60
    enable_cpu_bind: bool = False
    stdio: StdioConfig = field(default_factory=StdioConfig)
    #: torc-trio's own: the results that carry the last 16 KiB of the job's stdout and stderr
    #: (``failed``: failed and terminated jobs; ``all``; ``none``)
    output_tails: str = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    name: str
    command: str
    invocation_script: str | None = None
    depends_on: tuple[str, ...] = EMPTY
    depends_on_regexes: tuple[str, ...] = EMPTY
    input_files: tuple[str, ...] = EMPTY  # file names (regexes already resolved)
    output_files: tuple[str, ...] = EMPTY
    input_user_data: tuple[str, ...] = EMPTY
    output_user_data: tuple[str, ...] = EMPTY
    resource_requirements: str | None = None  # name in WorkflowSpec.resource_requirements
    scheduler: str | None = None  # name in WorkflowSpec.slurm_schedulers
    failure_handler: str | None = None
    cancel_on_blocking_job_failure: bool = True
    supports_termination: bool = False
    #: Claims take ready jobs of higher priority first (Torc PR #227); ties keep the packing
    #: order (GPUs, runtime, memory, CPUs, largest first).
    priority: int = 0
    #: This job's stdio, overriding the workflow's ``execution_config.stdio``.
    stdio: StdioConfig | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowSpec:
    name: str
    user: str | None = None
    description: str | None = None
    #: Project name or identifier for grouping workflows (Torc).
    project: str | None = None
    jobs: tuple[JobSpec, ...] = ()
    files: tuple[FileSpec, ...] = ()
    user_data: tuple[UserDataSpec, ...] = ()
    resource_requirements: tuple[ResourceRequirements, ...] = ()
    failure_handlers: tuple[FailureHandler, ...] = ()
    slurm_schedulers: tuple[SlurmScheduler, ...] = ()
    slurm_defaults: dict[str, Any] = field(default_factory=dict)
    resource_monitor: dict[str, Any] | None = None
    actions: tuple[ActionSpec, ...] = ()
    use_pending_failed: bool = False
    jobs_sort_method: str | None = None
    #: Dynamic jobs: a job spawned by a job of iteration ``i`` is of iteration ``i + 1`` (the
    #: spec's own jobs are of iteration 0); no spawn may make one past this.
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    #: compute_node_* settings, keyed by their full name
    #: (e.g. compute_node_expiration_buffer_seconds)
    compute_node_settings: dict[str, Any] = field(default_factory=dict)
    #: Free-form data stored with the workflow and returned by ``workflows get`` (Torc).
    metadata: Any = None
    execution_config: ExecutionConfig = field(default_factory=ExecutionConfig)
    enable_ro_crate: bool = False
    #: Fields accepted that have no effect here, each named ("resource_monitor: ...").
    warnings: tuple[str, ...] = ()
