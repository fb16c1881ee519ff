"""Every field of Torc's workflow spec, what it does here, and the settings sections.

:data:`FIELDS` is the one list of Torc's spec fields (its current spec reference, 0.25) with
their status in torc-trio. It drives three things, so they cannot disagree: the warnings a
create or dry run returns for a field that is accepted but has no effect here (never silence),
the keys each section accepts, and the table in ``docs/spec-fields.md`` (a test compares them).

The settings sections (``execution_config`` with its ``stdio``, a job's ``stdio``,
``metadata``, the ``compute_node_*`` settings) are parsed here; the jobs, files and the rest in
:mod:`torc_core.parse`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .entries import Entry
from .spec import EXECUTION_MODES, STDIO_MODES, ExecutionConfig, StdioConfig

SUPPORTED = "supported"
#: Accepted, has no effect here: a create or dry run that sets it gets a warning naming it.
NO_EFFECT = "no effect"


@dataclass(frozen=True, slots=True)
class Field:
    section: str  # "workflow", "job", "execution_config", ...
    name: str
    status: str  # SUPPORTED or NO_EFFECT
    note: str = ""


def _fields(section: str, names: str, status: str = SUPPORTED, note: str = "") -> list[Field]:
    return [Field(section, n, status, note) for n in names.split()]


_PARAMS = "parameters parameter_mode use_parameters"

FIELDS: tuple[Field, ...] = (
    *_fields("workflow", "name user description project parameters jobs files user_data "
                         "resource_requirements failure_handlers slurm_schedulers slurm_defaults "
                         "actions"),
    Field("workflow", "metadata", SUPPORTED, "free-form; stored and returned by workflows get"),
    Field("workflow", "use_pending_failed", SUPPORTED,
          "failed jobs wait as pending_failed for a decision instead of failing downstream"),
    Field("workflow", "jobs_sort_method", SUPPORTED,
          "gpus_runtime_memory (default), gpus_memory_runtime, none: the claim order"),
    Field("workflow", "execution_config", SUPPORTED, "see the execution_config section"),
    Field("workflow", "resource_monitor", NO_EFFECT,
          "jobs are not sampled yet (the monitoring issue); the settings are stored"),
    Field("workflow", "compute_node_expiration_buffer_seconds", SUPPORTED,
          "runners in Slurm allocations stop this long before the allocation ends"),
    Field("workflow", "compute_node_wait_for_new_jobs_seconds", SUPPORTED,
          "runners in Slurm allocations exit after this long with nothing to do"),
    Field("workflow", "compute_node_ignore_workflow_completion", SUPPORTED,
          "runners keep waiting for new jobs after the workflow completes"),
    Field("workflow", "compute_node_wait_for_healthy_database_minutes", NO_EFFECT,
          "runners retry an unreachable server with their own bounded back-off"),
    Field("workflow", "compute_node_min_time_for_new_jobs_seconds", NO_EFFECT,
          "runners claim any job whose runtime fits the time left"),
    Field("workflow", "enable_ro_crate", NO_EFFECT, "no RO-Crate metadata is written"),
    *_fields("job", "name command invocation_script cancel_on_blocking_job_failure "
                    "supports_termination resource_requirements failure_handler scheduler "
                    "depends_on depends_on_regexes input_files output_files input_user_data "
                    "output_user_data input_file_regexes output_file_regexes "
                    f"input_user_data_regexes output_user_data_regexes {_PARAMS}"),
    Field("job", "priority", SUPPORTED, "higher first among ready jobs that fit"),
    Field("job", "stdio", SUPPORTED, "overrides execution_config.stdio for this job"),
    *_fields("file", f"name path {_PARAMS}"),
    *_fields("user_data", f"name data is_ephemeral {_PARAMS}"),
    *_fields("resource_requirements", "name num_cpus num_gpus num_nodes memory runtime"),
    *_fields("slurm_scheduler", "name account partition nodes walltime mem gres qos "
                                "ntasks_per_node tmp extra"),
    *_fields("failure_handler", "name rules"),
    *_fields("failure_handler rule", "exit_codes match_all_exit_codes max_retries"),
    Field("failure_handler rule", "recovery_script", SUPPORTED,
          "runs as its own process before the retry, with TORC_RETURN_CODE set"),
    *_fields("action", "trigger_type action_type jobs job_name_regexes commands scheduler "
                       "num_allocations"),
    Field("action", "start_one_worker_per_node", SUPPORTED,
          "one runner per node of the allocation (srun --wait=0 --kill-on-bad-exit=0)"),
    Field("action", "max_parallel_jobs", SUPPORTED,
          "the runners the action starts run at most this many jobs at a time (-j)"),
    Field("action", "persistent", NO_EFFECT,
          "each action is carried out once, by the first runner or submit that claims it"),
    Field("action", "scheduler_type", SUPPORTED, "slurm submits allocations; local starts "
                                                  "runners on the claiming machine"),
    *_fields("execution_config", "mode limit_resources srun_termination_signal "
                                 "termination_signal sigterm_lead_seconds stdio"),
    Field("execution_config", "sigkill_headroom_seconds", NO_EFFECT,
          "a terminated job gets the runner's grace period before SIGKILL"),
    Field("execution_config", "enable_cpu_bind", NO_EFFECT, "srun steps are not CPU-bound"),
    *_fields("stdio", "mode delete_on_success"),
)


def fields_markdown() -> str:
    """The table of docs/spec-fields.md (a test keeps the page equal to this)."""
    lines = ["| section | field | status here | notes |", "|---|---|---|---|"]
    for f in FIELDS:
        status = "supported" if f.status == SUPPORTED else "accepted, **no effect** (warning)"
        lines.append(f"| {f.section} | `{f.name}` | {status} | {f.note} |")
    return "\n".join(lines) + "\n"


def section_keys(section: str) -> frozenset[str]:
    return frozenset(f.name for f in FIELDS if f.section == section)


def no_effect(section: str) -> dict[str, str]:
    return {f.name: f.note for f in FIELDS if f.section == section and f.status == NO_EFFECT}


COMPUTE_NODE_INTS = (
    "compute_node_expiration_buffer_seconds",
    "compute_node_wait_for_new_jobs_seconds",
    "compute_node_wait_for_healthy_database_minutes",
    "compute_node_min_time_for_new_jobs_seconds",
)
COMPUTE_NODE_BOOLS = ("compute_node_ignore_workflow_completion",)
COMPUTE_NODE_KEYS = frozenset((*COMPUTE_NODE_INTS, *COMPUTE_NODE_BOOLS))

_STDIO_KEYS = section_keys("stdio")
_EXEC_KEYS = section_keys("execution_config")


def parse_stdio(e: Entry, key: str = "stdio") -> StdioConfig | None:
    """A ``stdio`` mapping of ``e`` (absent: None)."""
    value = e.mapping(key)
    if value is None:
        return None
    sub = Entry(value, f"{e.where}: {key}" if e.where else key, e.err)
    sub.check_keys(_STDIO_KEYS)
    return StdioConfig(
        mode=sub.one_of("mode", STDIO_MODES, "separate"),
        delete_on_success=sub.get_bool("delete_on_success", False),
    )


def parse_execution_config(top: Entry) -> ExecutionConfig:
    value = top.mapping("execution_config")
    if value is None:
        return ExecutionConfig()
    e = Entry(value, "execution_config", top.err)
    e.check_keys(_EXEC_KEYS)
    signal = e.get_str("termination_signal", "SIGTERM")
    if not _signal_number(signal):
        e.fail("termination_signal", f"not a signal name: {signal!r} (e.g. SIGTERM, SIGINT)")
    srun_signal = e.get_str("srun_termination_signal", None)
    if srun_signal is not None and not _srun_signal_ok(srun_signal):
        e.fail("srun_termination_signal",
               f"expected SIGNAL[@SECONDS] (srun --signal), e.g. TERM@120; got {srun_signal!r}")
        srun_signal = None
    return ExecutionConfig(
        mode=e.one_of("mode", EXECUTION_MODES, "direct"),
        limit_resources=e.get_bool("limit_resources", True),
        srun_termination_signal=srun_signal,
        termination_signal=signal,
        sigterm_lead_seconds=e.get_int("sigterm_lead_seconds", 30, minimum=0),
        sigkill_headroom_seconds=e.get_int("sigkill_headroom_seconds", 60, minimum=0),
        enable_cpu_bind=e.get_bool("enable_cpu_bind", False),
        stdio=parse_stdio(e) or StdioConfig(),
    )


#: Signal names a job may be sent (no I/O: the numbers are Linux's, the same on every
#: platform torc-trio runs on).
SIGNALS = {"HUP": 1, "INT": 2, "QUIT": 3, "USR1": 10, "USR2": 12, "TERM": 15, "KILL": 9,
           "CONT": 18, "STOP": 19, "XCPU": 24, "ALRM": 14}


def _signal_number(name: str) -> int | None:
    bare = name.upper().removeprefix("SIG")
    if bare.isdigit():
        return int(bare) if 0 < int(bare) < 65 else None
    return SIGNALS.get(bare)


def signal_number(name: str) -> int:
    """The number of a signal name the parser accepted (``SIGTERM``, ``TERM``, ``15``)."""
    number = _signal_number(name)
    if number is None:
        raise ValueError(f"not a signal: {name!r}")
    return number


def _srun_signal_ok(text: str) -> bool:
    sig, _, secs = text.partition("@")
    sig = sig.removeprefix("R:").removeprefix("B:")
    return _signal_number(sig) is not None and (not secs or (secs.isdigit() and
                                                              int(secs) <= 65535))


def parse_compute_node_settings(top: Entry) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in COMPUTE_NODE_INTS:
        value = top.get_int(key, None, minimum=0)
        if value is not None:
            out[key] = value
    for key in COMPUTE_NODE_BOOLS:
        if top.data.get(key) is not None:
            out[key] = top.get_bool(key, False)
    return out


def warnings_for(doc: Mapping[str, Any]) -> list[str]:
    """A warning per field set in ``doc`` that is accepted but has no effect here."""
    out: list[str] = []

    def check(section: str, data: object, where: str) -> None:
        if not isinstance(data, Mapping):
            return
        for name, note in no_effect(section).items():
            value = data.get(name)
            if isinstance(value, Mapping) and value.get("enabled") is False:
                continue
            if value not in (None, False):
                out.append(f"{where}{name}: accepted but has no effect here ({note})")

    check("workflow", doc, "")
    check("execution_config", doc.get("execution_config"), "execution_config: ")
    actions = doc.get("actions")
    for k, action in enumerate(actions if isinstance(actions, list) else ()):
        check("action", action, f"actions[{k}]: ")
    return out
