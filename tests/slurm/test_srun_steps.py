"""torc_cli.srun without a cluster: the execution_config a runner reads, the srun command line
of a job step, how a step's end becomes a status, and what sacct's records become.

The same things on the real local Slurm are in test_slurm_steps.py.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from torc_cli import srun
from torc_cli.slurm import parse_sacct, render_sbatch_script
from torc_cli.srun import (
    Execution,
    ExecutionConfigError,
    SrunMissing,
    StepRequest,
    execution_from_workflow,
    runner_steps,
    sacct_state,
    srun_argv,
    step_memory_mb,
    step_minutes,
    step_result,
    step_rows,
)

MIB = 1024 * 1024
IN_SLURM = {"SLURM_JOB_ID": "42"}


def _workflow(config: dict[str, Any] | None) -> dict[str, Any]:
    settings: dict[str, Any] = {"project": None}
    if config is not None:
        settings["execution_config"] = config
    return {"id": 7, "spec_settings": settings}


# ------------------------------------------------------------------ the configuration


def test_no_execution_config_is_direct_with_the_old_end_of_allocation() -> None:
    ex = execution_from_workflow(_workflow(None), IN_SLURM)
    assert ex.mode == "direct"
    # Without a config the runner keeps half its end buffer, with SIGTERM, as before.
    assert ex.end_of_allocation(60.0) == (30.0, signal.SIGTERM)


@pytest.mark.parametrize(("mode", "environ", "resolved"), [
    ("direct", IN_SLURM, "direct"),
    ("slurm", IN_SLURM, "slurm"),
    ("auto", IN_SLURM, "slurm"),
    ("auto", {}, "direct"),
    ("slurm", {}, "direct"),  # outside an allocation there is nothing to make steps of
])
def test_mode_resolution(mode: str, environ: dict[str, str], resolved: str) -> None:
    ex = execution_from_workflow(_workflow({"mode": mode}), environ)
    assert (ex.requested, ex.mode) == (mode, resolved)


def test_direct_mode_termination_signal_and_lead() -> None:
    config = {"mode": "direct", "termination_signal": "SIGUSR1", "sigterm_lead_seconds": 45}
    ex = execution_from_workflow(_workflow(config), IN_SLURM)
    assert ex.end_of_allocation(60.0) == (45.0, signal.SIGUSR1)
    # The spec's defaults (the lead's parser stores every key): 30 s, SIGTERM.
    defaults = {"mode": "direct", "limit_resources": True, "srun_termination_signal": None,
                "termination_signal": "SIGTERM", "sigterm_lead_seconds": 30,
                "sigkill_headroom_seconds": 60, "enable_cpu_bind": False,
                "stdio": {"mode": "separate", "delete_on_success": False}}
    assert execution_from_workflow(_workflow(defaults), {}).end_of_allocation(60.0) == \
        (30.0, signal.SIGTERM)


def test_slurm_mode_ends_steps_with_sigterm_which_srun_forwards() -> None:
    config = {"mode": "slurm", "termination_signal": "SIGINT", "sigterm_lead_seconds": 10}
    ex = execution_from_workflow(_workflow(config), IN_SLURM)
    # SIGINT would only make srun print its status; SIGTERM it forwards to the step.
    assert ex.end_of_allocation(60.0) == (10.0, signal.SIGTERM)


@pytest.mark.parametrize(("config", "message"), [
    ({"mode": "slrum"}, r"workflow 7: execution_config: mode: must be one of direct, slurm, "
                        r"auto; got 'slrum'"),
    ({"termination_signal": "SIGNOPE"}, r"termination_signal: not a signal: 'SIGNOPE'"),
    ({"srun_termination_signal": "TERM@soon"}, r"srun_termination_signal: expected "
                                               r"SIGNAL\[@SECONDS\]"),
    ({"srun_termination_signal": "NOPE@10"}, r"srun_termination_signal: not a signal"),
    ({"limit_resources": "no"}, r"limit_resources: expected a boolean, got str"),
    ({"sigterm_lead_seconds": True}, r"sigterm_lead_seconds: expected an integer or a number, "
                                     r"got a boolean"),
    ({"sigterm_lead_seconds": -1}, r"sigterm_lead_seconds: must be >= 0"),
])
def test_bad_config_names_the_field(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ExecutionConfigError, match=message):
        execution_from_workflow(_workflow(config), IN_SLURM)
    with pytest.raises(ExecutionConfigError, match="execution_config: expected a mapping"):
        execution_from_workflow(_workflow("slurm"), IN_SLURM)  # type: ignore[arg-type]


def test_runner_steps_only_in_slurm_mode_and_needs_srun() -> None:
    slurm = execution_from_workflow(_workflow({"mode": "slurm"}), IN_SLURM)
    kw: dict[str, Any] = {"workflow_id": 7, "slurm_job_id": "42", "cpus": 2,
                          "memory_bytes": 4096 * MIB, "end_time": None, "end_buffer_s": 60}
    assert runner_steps(Execution(), **kw) is None
    assert runner_steps(slurm, **{**kw, "slurm_job_id": None}) is None
    steps = runner_steps(slurm, which=lambda name: f"/opt/slurm/bin/{name}", **kw)
    assert steps is not None and steps.srun == "/opt/slurm/bin/srun"
    with pytest.raises(SrunMissing, match=r"workflow 7: execution_config mode slurm inside "
                                          r"Slurm allocation 42, but srun is not on PATH"):
        runner_steps(slurm, which=lambda name: None, **kw)


# ------------------------------------------------------------------ the command line


def test_srun_argv_limits_and_names_the_step() -> None:
    ex = Execution(mode="slurm", requested="slurm", srun_termination_signal="TERM@120")
    step = StepRequest(name="wf7_j3_r1_a2", num_cpus=4, memory_mb=2048, num_gpus=1, minutes=5)
    argv = srun_argv("/usr/bin/srun", "42", step, ex, ["bash", "-c", "echo hi"])
    assert argv == ["/usr/bin/srun", "--jobid=42", "--job-name=wf7_j3_r1_a2", "--nodes=1",
                    "--ntasks=1", "--exact", "--cpus-per-task=4", "--mem=2048M", "--gpus=1",
                    "--time=5", "--signal=TERM@120", "--cpu-bind=none",
                    "bash", "-c", "echo hi"]


def test_steps_of_a_runner_in_a_multi_node_allocation_stay_on_its_node() -> None:
    slurm = Execution(mode="slurm", requested="slurm")
    kw: dict[str, Any] = dict(workflow_id=7, slurm_job_id="42", cpus=2, memory_bytes=None,
                              end_time=None, end_buffer_s=0.0, which=lambda name: "srun")
    two = runner_steps(slurm, environ={"SLURM_JOB_NUM_NODES": "2", "SLURMD_NODENAME": "node2"},
                       **kw)
    assert two is not None
    argv, _ = two.wrap({"id": 3, "num_cpus": 1}, 1, 1, ["bash", "-c", "true"], {})
    assert "--nodelist=node2" in argv
    one = runner_steps(slurm, environ={"SLURM_JOB_NUM_NODES": "1", "SLURMD_NODENAME": "vm"},
                       **kw)
    assert one is not None
    argv, _ = one.wrap({"id": 3, "num_cpus": 1}, 1, 1, ["bash", "-c", "true"], {})
    assert not [a for a in argv if a.startswith("--nodelist")]


def test_srun_argv_without_limits_passes_no_cpus_or_memory() -> None:
    ex = execution_from_workflow(_workflow({"mode": "slurm", "limit_resources": False}),
                                 IN_SLURM)
    step = StepRequest(name="wf7_j3_r1_a1", num_cpus=4, memory_mb=2048, num_gpus=1, minutes=5)
    argv = srun_argv("srun", "42", step, ex, ["bash", "-c", "true"])
    assert not [a for a in argv if a.startswith(("--cpus-per-task", "--mem", "--gpus",
                                                 "--exact"))]
    # Without limits of their own, steps share the allocation instead of queueing for it.
    assert "--overlap" in argv and "--time=5" in argv
    assert "--signal" not in " ".join(argv)


@pytest.mark.parametrize(("runtime_s", "remaining_s", "minutes"), [
    (60, None, 1), (61, None, 2), (0, None, 1), (3600, None, 60),
    (3600, 600, 10), (3600, 659, 10), (3600, 30, 1), (120, 10_000, 2),
])
def test_step_minutes(runtime_s: float, remaining_s: float | None, minutes: int) -> None:
    assert step_minutes(runtime_s, remaining_s) == minutes


def test_step_memory() -> None:
    assert step_memory_mb(100 * MIB, 1, 4096 * MIB, 2) == 100
    assert step_memory_mb(100 * MIB + 1, 1, None, None) == 101
    # Torc's default 1 MiB is no limit a step could live under: the CPUs' share instead.
    assert step_memory_mb(MIB, 1, 4096 * MIB, 2) == 2048
    assert step_memory_mb(MIB, 2, 4096 * MIB, 2) == 4096
    assert step_memory_mb(MIB, 1, None, None) == 1


def test_wrap_builds_the_step_and_cleans_the_environment() -> None:
    ex = execution_from_workflow(_workflow({"mode": "slurm"}), IN_SLURM)
    steps = runner_steps(ex, workflow_id=7, slurm_job_id="42", cpus=2,
                         memory_bytes=4096 * MIB, end_time=None, end_buffer_s=60,
                         which=lambda name: "/usr/bin/srun")
    assert steps is not None
    env = {"PATH": "/bin", "SLURM_OVERLAP": "1", "SLURM_MEM_PER_NODE": "4096",
           "SLURM_JOB_ID": "42"}
    job = {"id": 3, "num_cpus": 1, "memory_bytes": 100 * MIB, "num_gpus": 0, "runtime_s": 60}
    argv, exe = steps.wrap(job, 1, 1, ["bash", "-c", "sleep 1"], env)
    assert exe == "/usr/bin/srun" and argv[0] == exe
    assert "--job-name=wf7_j3_r1_a1" in argv and "--mem=100M" in argv and "--time=1" in argv
    assert env == {"PATH": "/bin", "SLURM_JOB_ID": "42"}
    # Past the step's 60 s with a nonzero status: Slurm timed it out.
    assert steps.ended(3, 143, False, 78.0) == (srun.TIMEOUT_EXIT_CODE, True)


# ------------------------------------------------------------------ a step's end


@pytest.mark.parametrize(("rc", "terminated", "elapsed", "expected"), [
    (0, False, 5.0, (0, False)),          # completed
    (1, False, 5.0, (1, False)),          # failed
    (137, False, 2.0, (137, False)),      # OUT_OF_MEMORY: failed, 137
    (143, False, 78.0, (152, True)),      # TIMEOUT (SIGTERM): terminated, 152
    (137, False, 66.0, (152, True)),      # TIMEOUT, ignored SIGTERM, killed: still a timeout
    (0, False, 78.0, (0, False)),         # handled the signal and exited 0: completed
    (143, True, 10.0, (143, True)),       # the runner ended it (walltime, cancel, Ctrl-C)
])
def test_step_result(rc: int, terminated: bool, elapsed: float,
                     expected: tuple[int, bool]) -> None:
    assert step_result(rc, terminated, elapsed, 60.0) == expected


# ------------------------------------------------------------------ sacct

# What the local cluster's sacct printed for a workflow's steps (Slurm 22.05, polling).
SACCT = """\
107|torc_wf7_debug|COMPLETED|0:0||billing=2,cpu=2,mem=2000M,node=1|00:01:20|vm
107.batch|batch|COMPLETED|0:0|12388K|cpu=2,mem=2000M,node=1|00:01:20|vm
107.0|wf7_j1_r1_a1|CANCELLED by 0|0:9|423116K|cpu=1,mem=100M,node=1|00:00:01|vm
107.1|wf7_j2_r1_a1|TIMEOUT|0:15|1636K|cpu=1,mem=100M,node=1|00:01:18|vm
107.2|wf7_j3_r1_a1|COMPLETED|0:0|2100K|cpu=1,mem=100M,node=1|00:00:02|vm
107.3|wf8_j9_r1_a1|COMPLETED|0:0||cpu=1,mem=100M,node=1|00:00:02|vm
107.4|wf7_j4_r2_a1|CANCELLED by 0|0:9|50000K|cpu=1,mem=100M,node=1|00:00:03|vm
"""


def test_sacct_rows_of_one_workflow() -> None:
    rows = step_rows(parse_sacct(SACCT), 7)
    assert [(r["step_name"], r["state"], r["exit_code"], r["return_code"]) for r in rows] == [
        ("wf7_j1_r1_a1", "OUT_OF_MEMORY", "0:9", 137),
        ("wf7_j2_r1_a1", "TIMEOUT", "0:15", 143),
        ("wf7_j3_r1_a1", "COMPLETED", "0:0", 0),
        # killed with SIGKILL within its memory: a cancel, not memory
        ("wf7_j4_r2_a1", "CANCELLED", "0:9", 137),
    ]
    first = rows[0]
    assert (first["slurm_job_id"], first["step"], first["job_id"], first["run_id"],
            first["attempt"]) == ("107", "0", 1, 1, 1)
    assert (first["max_rss"], first["max_rss_bytes"], first["memory"]) == \
        ("423116K", 423116 * 1024, "100M")
    assert first["slurm_state"] == "CANCELLED by 0"


def test_sacct_state_passes_slurm_words_through() -> None:
    assert sacct_state("OUT_OF_MEMORY", "0:125", "", "") == "OUT_OF_MEMORY"  # cgroup sites
    assert sacct_state("FAILED", "1:0", "", "100M") == "FAILED"
    assert sacct_state("CANCELLED by 1000", "0:15", "900M", "100M") == "CANCELLED"
    assert sacct_state("", "", "", "") == ""


def test_parse_sacct_keeps_a_name_with_the_delimiter() -> None:
    (row,) = parse_sacct("5.1|a|b|COMPLETED|0:0||cpu=1|00:00:01|vm\n")
    assert row["JobName"] == "a|b" and row["State"] == "COMPLETED"


# ------------------------------------------------------------------ per-node runners


def test_per_node_runners_srun_waits_for_all_and_shares_the_node() -> None:
    script = render_sbatch_script(
        job_name="torc_wf1_debug", scheduler={"name": "debug", "nodes": 2, "walltime": "10"},
        defaults={}, runner_argv=["torc-trio", "runner", "1"], env={}, output_dir="/o",
        start_one_worker_per_node=True)
    last = script.rstrip("\n").splitlines()[-1]
    # Torc PR #318: a site's WaitTime must not kill the other runners after one exits.
    assert "--wait=0 --kill-on-bad-exit=0" in last
    # Jobs in slurm mode are steps of the same allocation, beside the runners' step.
    assert "--overlap" in last
    assert last.endswith(" torc-trio runner 1")
