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

from .entries import Entry, Errors
from .errors import SpecError
from .spec import EXECUTION_MODES, OUTPUT_TAILS, STDIO_MODES, ExecutionConfig, StdioConfig

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
    Field("workflow", "max_iterations", SUPPORTED,
          "dynamic jobs: how many spawns deep a lineage may go (default 1000)"),
    Field("workflow", "execution_config", SUPPORTED, "see the execution_config section"),
    Field("workflow", "resource_monitor", SUPPORTED,
          "runners sample each job's process tree (see the resource_monitor section)"),
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
    Field("execution_config", "output_tails", SUPPORTED,
          "torc-trio's own, not Torc's: failed (default), all or none: the results that carry "
          "the last 16 KiB of the job's stdout and stderr (failed: failed and terminated jobs),"
          " which the API's job output and the dashboard show"),
    *_fields("stdio", "mode delete_on_success"),
    Field("resource_monitor", "enabled", SUPPORTED,
          "default true; Torc 0.12's flat form, for jobs when there is no jobs block"),
    Field("resource_monitor", "granularity", SUPPORTED,
          "summary (default): peak/average CPU and memory with each result; time_series: "
          "also every sample, in <output>/resource_utilization/resource_metrics_*.db"),
    Field("resource_monitor", "sample_interval_seconds", SUPPORTED,
          "default 10 (Torc 0.22+; 0.12 said 5)"),
    Field("resource_monitor", "generate_plots", SUPPORTED,
          "with time_series: the runner writes the plot files next to its database"),
    Field("resource_monitor", "jobs", SUPPORTED, "enabled, granularity: per-job sampling"),
    Field("resource_monitor", "compute_node", SUPPORTED,
          "enabled, granularity (default off): the node's CPU and memory; time_series adds "
          "system_resource_samples to the same database"),
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
        output_tails=e.one_of("output_tails", OUTPUT_TAILS, "failed"),
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


#: ``resource_monitor`` granularities, as Torc names them (written forms are normalized:
#: ``Summary``, ``time-series`` and ``TimeSeries`` are accepted too).
MONITOR_GRANULARITIES = ("summary", "time_series")
#: Torc's default sampling interval (0.22+; 0.12's was 5 s).
DEFAULT_SAMPLE_INTERVAL_S = 10.0
#: Longest interval accepted: a day (a sample per allocation is no monitoring at all).
MAX_SAMPLE_INTERVAL_S = 86400.0
_MONITOR_KEYS = section_keys("resource_monitor")
_MONITOR_SCOPE_KEYS = frozenset(("enabled", "granularity"))


@dataclass(frozen=True, slots=True)
class ResourceMonitor:
    """What a runner samples (Torc's ``resource_monitor``, either shape resolved).

    Why both shapes: Torc 0.12 wrote ``{enabled, granularity, sample_interval_seconds,
    generate_plots}``; 0.23 nests ``jobs: {enabled, granularity}`` and ``compute_node: {...}``
    under one interval and reads the flat fields for jobs when ``jobs`` is absent. Specs of
    both ages run unchanged."""

    jobs: bool = True
    granularity: str = "summary"
    compute_node: bool = False
    compute_node_granularity: str = "summary"
    sample_interval_s: float = DEFAULT_SAMPLE_INTERVAL_S
    generate_plots: bool = False

    @property
    def time_series(self) -> bool:
        """Whether a time-series database is written (for the jobs or the node)."""
        return (self.jobs and self.granularity == "time_series") or (
            self.compute_node and self.compute_node_granularity == "time_series")

    @property
    def active(self) -> bool:
        return self.jobs or self.compute_node


#: Monitoring off (``--no-resource-monitoring``, ``enabled: false``).
MONITOR_OFF = ResourceMonitor(jobs=False)


def _granularity(e: Entry, default: str) -> str:
    value = e.get_str("granularity", None)
    if value is None:
        return default
    norm = value.strip().replace("-", "_").lower()
    norm = {"timeseries": "time_series"}.get(norm, norm)
    if norm not in MONITOR_GRANULARITIES:
        e.fail("granularity", f"must be one of {', '.join(MONITOR_GRANULARITIES)}; "
                              f"got {value!r}")
        return default
    return norm


def _monitor_scope(e: Entry, key: str, enabled: bool, granularity: str) -> tuple[bool, str]:
    """(enabled, granularity) of a nested ``jobs``/``compute_node`` block (absent: the given
    ones). A block that is there but says nothing of ``enabled`` is on."""
    value = e.mapping(key)
    if value is None:
        return enabled, granularity
    sub = Entry(value, f"{e.where}: {key}", e.err)
    sub.check_keys(_MONITOR_SCOPE_KEYS)
    return sub.get_bool("enabled", True), _granularity(sub, granularity)


def read_resource_monitor(e: Entry) -> ResourceMonitor:
    """``e`` (a ``resource_monitor`` mapping) as a :class:`ResourceMonitor`; each problem is
    added to ``e``'s errors with where it is."""
    e.check_keys(_MONITOR_KEYS)
    enabled = e.get_bool("enabled", True)
    granularity = _granularity(e, "summary")
    interval = DEFAULT_SAMPLE_INTERVAL_S
    raw = e.data.get("sample_interval_seconds")
    if raw is not None:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            e.fail("sample_interval_seconds", f"expected a number of seconds, got "
                                              f"{type(raw).__name__}")
        elif not 0 < raw <= MAX_SAMPLE_INTERVAL_S:  # also refuses nan, inf and huge ints
            shown = raw if isinstance(raw, float) or abs(raw) < 10**20 else "a huge integer"
            e.fail("sample_interval_seconds",
                   f"must be more than 0 and at most {MAX_SAMPLE_INTERVAL_S:g}, got {shown}")
        else:
            interval = float(raw)
    jobs, granularity = _monitor_scope(e, "jobs", enabled, granularity)
    node, node_granularity = _monitor_scope(e, "compute_node", False, "summary")
    return ResourceMonitor(jobs=jobs, granularity=granularity, compute_node=node,
                           compute_node_granularity=node_granularity,
                           sample_interval_s=interval,
                           generate_plots=e.get_bool("generate_plots", False))


def parse_resource_monitor(top: Entry) -> dict[str, Any] | None:
    """The spec's ``resource_monitor``, checked (located errors), kept as written: it is
    stored and exported as the user wrote it, and runners resolve it with
    :func:`resource_monitor_of`."""
    value = top.mapping("resource_monitor")
    if value is None:
        return None
    read_resource_monitor(Entry(value, "resource_monitor", top.err))
    return dict(value)


def resource_monitor_of(value: object, where: str = "resource_monitor") -> ResourceMonitor:
    """The :class:`ResourceMonitor` of a stored ``resource_monitor`` (None: Torc's defaults,
    monitoring on). Raises SpecError naming each problem (a spec the parser never saw)."""
    if value is None:
        return ResourceMonitor()
    if not isinstance(value, Mapping):
        raise SpecError([f"{where}: expected a mapping, got {type(value).__name__}"])
    err = Errors()
    monitor = read_resource_monitor(Entry(value, where, err))
    err.raise_if_any()
    return monitor


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
    check("resource_monitor", doc.get("resource_monitor"), "resource_monitor: ")
    actions = doc.get("actions")
    for k, action in enumerate(actions if isinstance(actions, list) else ()):
        check("action", action, f"actions[{k}]: ")
    return out
