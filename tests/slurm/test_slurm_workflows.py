"""Workflows inside real Slurm allocations (the local single-node cluster of
scripts/local-slurm.sh): submit, walltime ends, scancel + recover, on_jobs_ready actions,
jobs as srun steps (execution_config mode slurm) with per-node runners, and sacct.

The server runs on 127.0.0.1; the allocations run on this same host, so they reach it there.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slurm

sys.path.insert(0, str(Path(__file__).parents[1] / "cli"))
from cli_helpers import ServerProcess, clean_env, torc  # noqa: E402
from slurm_helpers import api, cancel_allocations, create, status, wait_for  # noqa: E402

from torc_cli.submit import startup_jitter_window  # noqa: E402


@pytest.fixture
def server(tmp_path: Path, slurm_cluster: Any) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "torc.db", cwd=tmp_path)
    try:
        yield proc
    finally:
        cancel_allocations(proc)
        proc.stop()


SCHEDULERS = [
    {"name": "debug", "partition": "debug", "account": "torc", "nodes": 1, "walltime": "00:05:00"}
]


def test_diamond_runs_inside_allocations(tmp_path: Path, server: ServerProcess) -> None:
    spec = {
        "name": "slurm_diamond",
        "slurm_schedulers": SCHEDULERS,
        "jobs": [
            {"name": "pre", "command": "echo $SLURM_JOB_ID > pre.slurm"},
            {"name": "left", "command": "echo $SLURM_JOB_ID > left.slurm", "depends_on": ["pre"]},
            {"name": "right", "command": "echo $SLURM_JOB_ID > right.slurm", "depends_on": ["pre"]},
            {
                "name": "post",
                "command": "echo $SLURM_JOB_ID > post.slurm",
                "depends_on": ["left", "right"],
            },
        ],
    }
    wid = create(tmp_path, server, spec)
    submitted = api(tmp_path, server, "submit", str(wid))
    assert len(submitted["allocations"]) == 1
    slurm_id = submitted["allocations"][0]["slurm_job_id"]
    wait_for(lambda: status(tmp_path, server, wid)["is_complete"], 180, "the diamond")
    assert status(tmp_path, server, wid)["counts"]["completed"] == 4
    for name in ("pre", "left", "right", "post"):
        assert (tmp_path / f"{name}.slurm").read_text().strip() == slurm_id
    results = api(tmp_path, server, "results", "list", str(wid))
    assert {r["slurm_job_id"] for r in results} == {slurm_id}


def test_watch_auto_schedule_submits_when_no_allocation_runs(
    tmp_path: Path, server: ServerProcess
) -> None:
    """`watch --auto-schedule` (Torc's): jobs are ready and no allocation is pending or
    running, so it submits the workflow's allocation itself, and ends when the jobs are done."""
    wid = create(tmp_path, server, {
        "name": "auto", "slurm_schedulers": SCHEDULERS,
        "jobs": [{"name": "a", "command": "echo $SLURM_JOB_ID > a.slurm"},
                 {"name": "b", "command": "true", "depends_on": ["a"]}]})
    proc = subprocess.run(
        [sys.executable, "-m", "torc_cli.main", "watch", str(wid), "--auto-schedule",
         "--poll-interval", "1", "--exit-status"],
        cwd=tmp_path, env=clean_env(TORC_API_URL=server.url), capture_output=True, text=True,
        timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Auto-scheduled (2 job(s) ready" not in proc.stdout  # only a is ready at first
    assert "Auto-scheduled (1 job(s) ready and no allocation pending or running)" in proc.stdout
    assert status(tmp_path, server, wid)["counts"]["completed"] == 2
    results = api(tmp_path, server, "results", "list", str(wid))
    (slurm_id,) = {r["slurm_job_id"] for r in results}  # one allocation ran both
    assert (tmp_path / "a.slurm").read_text().strip() == slurm_id


def test_submit_dry_run_prints_scripts(tmp_path: Path, server: ServerProcess) -> None:
    wid = create(
        tmp_path,
        server,
        {
            "name": "dry",
            "slurm_schedulers": SCHEDULERS,
            "slurm_defaults": {"qos": "normal"},
            "jobs": [{"name": "a", "command": "true"}],
        },
    )
    proc = torc(tmp_path, "submit", str(wid), "--dry-run", env=clean_env(TORC_API_URL=server.url))
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH" in proc.stdout and "--account=torc" in proc.stdout.replace(" ", "=")
    assert "runner" in proc.stdout and str(wid) in proc.stdout
    assert api(tmp_path, server, "status", str(wid))["counts"]["ready"] == 1


def test_runners_submitted_together_spread_their_start(tmp_path: Path,
                                                        server: ServerProcess) -> None:
    """Torc staggers runner start-up when many allocations start together: the window grows
    with the number of runners submitted at once (0 for one, 60 s from 100)."""
    assert [startup_jitter_window(n) for n in (1, 2, 20, 100, 1000)] == [0, 1.2, 12, 60, 60]
    action = {"trigger_type": "on_workflow_start", "action_type": "schedule_nodes",
              "scheduler": "debug", "scheduler_type": "slurm", "num_allocations": 20}
    many = create(tmp_path, server, {"name": "many", "slurm_schedulers": SCHEDULERS,
                                     "actions": [action],
                                     "jobs": [{"name": "a", "command": "true"}]})
    scripts = api(tmp_path, server, "submit", str(many), "--dry-run")["allocations"]
    assert len(scripts) == 20
    assert all(re.search(r"--startup-jitter-seconds 12\s", s["script"]) for s in scripts)
    one = create(tmp_path, server, {"name": "one", "slurm_schedulers": SCHEDULERS,
                                    "jobs": [{"name": "a", "command": "true"}]})
    (script,) = api(tmp_path, server, "submit", str(one), "--dry-run")["allocations"]
    assert "--startup-jitter-seconds" not in script["script"]


def test_walltime_end_terminates_then_second_allocation_finishes(
    tmp_path: Path, server: ServerProcess
) -> None:
    spec = {
        "name": "walltime",
        "slurm_schedulers": [{**SCHEDULERS[0], "walltime": "00:01:00"}],
        "compute_node_expiration_buffer_seconds": 20,
        # Direct mode: running jobs get this signal this long before the allocation ends.
        "execution_config": {"termination_signal": "SIGUSR1", "sigterm_lead_seconds": 15},
        "resource_requirements": [{"name": "short", "runtime": "PT10S"}],
        "jobs": [
            # Declared short, so the runner takes it; it runs long until the marker exists.
            # (One job: the allocation has one CPU.)
            {
                "name": "long",
                "command": "trap 'echo USR1 > got_signal' USR1; "
                           "test -e go || { sleep 300 & wait; }; echo ok",
                "resource_requirements": "short",
            },
        ],
    }
    wid = create(tmp_path, server, spec)
    api(tmp_path, server, "submit", str(wid))
    wait_for(
        lambda: status(tmp_path, server, wid)["counts"]["terminated"] == 1,
        150,
        "the allocation's walltime to end and its jobs to be terminated",
    )
    assert (tmp_path / "got_signal").read_text() == "USR1\n"
    (tmp_path / "go").touch()
    api(tmp_path, server, "reset-status", str(wid), "--failed-only")
    api(tmp_path, server, "submit", str(wid))
    wait_for(lambda: status(tmp_path, server, wid)["is_complete"], 150, "the second allocation")
    assert status(tmp_path, server, wid)["counts"]["completed"] == 1
    results = api(tmp_path, server, "results", "list", str(wid), "--all-runs")
    assert [r["status"] for r in results] == ["terminated", "completed"]
    assert len({r["slurm_job_id"] for r in results}) == 2


def _in_squeue(slurm_id: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], text=True, capture_output=True).stdout
    return slurm_id in out.split()


def _victim_workflow(tmp_path: Path, server: ServerProcess, marker: str) -> tuple[int, str]:
    spec = {
        "name": "orphan",
        "slurm_schedulers": SCHEDULERS,
        "jobs": [
            # exec: the job is the sleep itself, so its fate does not depend on the order in
            # which Slurm signals the processes (bash would go on after a killed sleep).
            {"name": "victim", "command": f"echo $SLURM_JOB_ID; test -e go || exec sleep {marker}"},
            {"name": "after", "command": "true", "depends_on": ["victim"]},
        ],
    }
    wid = create(tmp_path, server, spec)
    first = api(tmp_path, server, "submit", str(wid))["allocations"][0]["slurm_job_id"]
    wait_for(
        lambda: status(tmp_path, server, wid)["counts"]["running"] == 1, 90, "the job to start"
    )
    return wid, first


def _recover_and_finish(tmp_path: Path, server: ServerProcess, wid: int, first: str) \
        -> dict[str, Any]:
    wait_for(lambda: not _in_squeue(first), 60, "the allocation to leave the queue")
    (tmp_path / "go").touch()
    recovered = dict(api(tmp_path, server, "recover", str(wid)))
    assert [a["slurm_job_id"] for a in recovered["orphaned_allocations"]] == [first]
    assert len(recovered["submitted"]) == 1
    wait_for(lambda: status(tmp_path, server, wid)["is_complete"], 150, "recovery")
    assert status(tmp_path, server, wid)["counts"]["completed"] == 2
    return recovered


def test_scancel_allocation_is_an_orphan_and_recover_finishes(
    tmp_path: Path, server: ServerProcess
) -> None:
    wid, first = _victim_workflow(tmp_path, server, "301")
    # Slurm's cancel sends SIGTERM first: the runner terminates and reports its job itself.
    subprocess.run(["scancel", first], check=True)
    recovered = _recover_and_finish(tmp_path, server, wid, first)
    assert recovered["terminated_jobs"] == []
    results = api(tmp_path, server, "results", "list", str(wid), "--all-runs")
    assert [r["status"] for r in results if r["job_name"] == "victim"] == [
        "terminated", "completed"]


def test_runner_killed_hard_jobs_marked_terminated_by_recover(
    tmp_path: Path, server: ServerProcess
) -> None:
    marker = f"302.{os.getpid()}"
    wid, first = _victim_workflow(tmp_path, server, marker)
    # As when a node dies: the runner gets SIGKILL and cannot report; the allocation ends.
    runner = subprocess.run(["pgrep", "-f", f"{server.url} .*runner {wid}"], text=True,
                            capture_output=True).stdout.split()
    assert runner, "the runner process was not found"
    for pid in runner:
        os.kill(int(pid), signal.SIGKILL)
    try:
        recovered = _recover_and_finish(tmp_path, server, wid, first)
        assert len(recovered["terminated_jobs"]) == 1
    finally:
        subprocess.run(["pkill", "-f", f"sleep {marker}"], check=False)  # the job it left


def test_on_jobs_ready_schedules_a_second_allocation(tmp_path: Path, server: ServerProcess) -> None:
    spec = {
        "name": "actions",
        "slurm_schedulers": [
            {**SCHEDULERS[0], "name": "first"},
            {**SCHEDULERS[0], "name": "second"},
        ],
        "compute_node_wait_for_new_jobs_seconds": 5,
        "jobs": [
            {"name": "a", "command": "echo $SLURM_JOB_ID > a.slurm", "scheduler": "first"},
            {
                "name": "b",
                "command": "echo $SLURM_JOB_ID > b.slurm",
                "scheduler": "second",
                "depends_on": ["a"],
            },
        ],
        "actions": [
            {
                "trigger_type": "on_workflow_start",
                "action_type": "schedule_nodes",
                "scheduler": "first",
            },
            {
                "trigger_type": "on_jobs_ready",
                "action_type": "schedule_nodes",
                "jobs": ["b"],
                "scheduler": "second",
            },
            {
                "trigger_type": "on_workflow_complete",
                "action_type": "run_commands",
                "commands": ["echo finished > complete.txt"],
            },
        ],
    }
    wid = create(tmp_path, server, spec)
    assert len(api(tmp_path, server, "submit", str(wid))["allocations"]) == 1
    wait_for(lambda: status(tmp_path, server, wid)["is_complete"], 180, "both allocations")
    a_id = (tmp_path / "a.slurm").read_text().strip()
    b_id = (tmp_path / "b.slurm").read_text().strip()
    assert a_id and b_id and a_id != b_id
    allocations = api(tmp_path, server, "workflows", "get", str(wid))
    assert allocations["num_actions"] == 3
    wait_for(lambda: (tmp_path / "complete.txt").exists(), 60, "the on_workflow_complete action")


def test_cancel_scancels_the_allocations(tmp_path: Path, server: ServerProcess) -> None:
    marker = f"303.{os.getpid()}"
    wid, first = _victim_workflow(tmp_path, server, marker)
    try:
        canceled = api(tmp_path, server, "cancel", str(wid))
        assert canceled["scancelled"] == [first]
        wait_for(lambda: not _in_squeue(first), 60, "the allocation to be scancelled")
        final = status(tmp_path, server, wid)
        assert final["is_canceled"] and final["counts"]["canceled"] == 2
        allocations = api(tmp_path, server, "workflows", "get", str(wid))
        assert allocations["is_canceled"]
    finally:
        subprocess.run(["pkill", "-f", f"sleep {marker}"], check=False)


def test_standalone_run_inside_an_allocation_keeps_to_its_walltime(
    tmp_path: Path, slurm_cluster: Any
) -> None:
    """The seed's self-contained job: `torc-trio -s run workflow.yaml` in an sbatch script.
    The run knows the allocation's end: a job that fits the time left runs, one whose runtime
    does not is not started, and the run stops saying so instead of idling to the limit."""
    (tmp_path / "wf.json").write_text(json.dumps({
        "name": "self_contained",
        "resource_requirements": [{"name": "short", "runtime": "PT10S"},
                                  {"name": "long", "runtime": "PT1H"}],
        "jobs": [
            {"name": "quick", "command": "echo $SLURM_JOB_ID > quick.slurm",
             "resource_requirements": "short"},
            {"name": "too_long", "command": "touch too_long_ran",
             "resource_requirements": "long"},
        ],
    }))
    env_line = f"export PATH={shlex.quote(os.environ.get('PATH', ''))}"
    script = textwrap.dedent(f"""\
        #!/bin/bash
        #SBATCH --job-name=torc_wf_standalone
        #SBATCH --time=00:03:00
        #SBATCH --output={tmp_path}/sbatch.out
        {env_line}
        cd {shlex.quote(str(tmp_path))}
        {shlex.quote(sys.executable)} -m torc_cli.main -s run wf.json > run.out 2>&1
        echo $? > run.rc
    """)
    (tmp_path / "job.sh").write_text(script)
    submitted = subprocess.run(["sbatch", "--parsable", str(tmp_path / "job.sh")],
                               capture_output=True, text=True, check=True)
    slurm_id = submitted.stdout.strip().split(";")[0]
    wait_for(lambda: (tmp_path / "run.rc").exists(), 150, "the standalone run in Slurm")
    out = (tmp_path / "run.out").read_text()
    assert (tmp_path / "run.rc").read_text().strip() == "1", out
    assert (tmp_path / "quick.slurm").read_text().strip() == slurm_id
    assert not (tmp_path / "too_long_ran").exists()
    assert "too_long needs 3600 s and" in out, out


def test_jobs_as_slurm_steps_memory_and_time_limits_and_sacct(
    tmp_path: Path, server: ServerProcess
) -> None:
    """execution_config mode slurm: each job is an srun step of the allocation, so Slurm
    enforces its memory and time. In one run (Slurm's --time is at least a minute): a job over
    its memory ends failed with 137, one past its runtime terminated (Torc's 152), a normal one
    completes; `slurm sacct` shows the steps by name with OUT_OF_MEMORY, TIMEOUT, COMPLETED and
    their MaxRSS. The runners start one per node (start_one_worker_per_node), so the steps run
    beside the runners' own step. Then `recover` raises the memory of the job that ran out of
    it and the runtime of the one that ran out of time, resets them and submits an allocation:
    both rerun (as steps with the new limits) and complete."""
    again = tmp_path / "again"  # the reruns need not wait: they find the marker
    hog = (f"{shlex.quote(sys.executable)} -c \"import os, time; b = b'x' * (400 << 20); "
           f"time.sleep(1 if os.path.exists({str(again)!r}) else 30)\"")
    sleeper = f"if [ -e {again} ]; then echo again; else exec sleep 300; fi"
    spec = {
        "name": "steps",
        "execution_config": {"mode": "slurm"},
        "slurm_schedulers": [{**SCHEDULERS[0], "ntasks_per_node": 2}],  # two CPUs
        "compute_node_wait_for_new_jobs_seconds": 5,
        "resource_requirements": [
            {"name": "small", "num_cpus": 1, "memory": "100m", "runtime": "PT1M"}],
        "jobs": [
            {"name": "hog", "command": hog, "resource_requirements": "small"},
            {"name": "sleeper", "command": sleeper, "resource_requirements": "small"},
            {"name": "ok", "command": "sleep 2; echo ok", "resource_requirements": "small"},
        ],
        "actions": [{"trigger_type": "on_workflow_start", "action_type": "schedule_nodes",
                     "scheduler": "debug", "scheduler_type": "slurm",
                     "start_one_worker_per_node": True}],
    }
    wid = create(tmp_path, server, spec)
    (script,) = api(tmp_path, server, "submit", str(wid), "--dry-run")["allocations"]
    assert "--wait=0 --kill-on-bad-exit=0 --overlap" in script["script"]
    api(tmp_path, server, "submit", str(wid))

    def finished() -> bool:
        counts = status(tmp_path, server, wid)["counts"]
        return sum(counts.get(s, 0) for s in ("completed", "failed", "terminated")) == 3

    wait_for(finished, 240, "the three steps to end")
    results = {r["job_name"]: r for r in api(tmp_path, server, "results", "list", str(wid))}
    got = {name: (r["status"], r["return_code"]) for name, r in results.items()}
    assert got == {"hog": ("failed", 137), "sleeper": ("terminated", 152),
                   "ok": ("completed", 0)}, got
    names = {name: f"wf{wid}_j{r['job_id']}_r1_a1" for name, r in results.items()}
    expected = {names["hog"]: "OUT_OF_MEMORY", names["sleeper"]: "TIMEOUT",
                names["ok"]: "COMPLETED"}
    steps: dict[str, dict[str, Any]] = {}

    def accounted() -> bool:  # slurmdbd records a step's end a moment after it
        steps.clear()
        for step in api(tmp_path, server, "slurm", "sacct", str(wid))["steps"]:
            steps[step["step_name"]] = step
        return {n: s["state"] for n, s in steps.items()} == expected

    wait_for(accounted, 60, f"sacct to show {expected}")
    hog_step, sleeper_step = steps[names["hog"]], steps[names["sleeper"]]
    assert hog_step["exit_code"] == "0:9" and hog_step["memory"] == "100M"
    assert hog_step["max_rss_bytes"] > 100 << 20  # what Slurm measured before it killed it
    assert sleeper_step["max_rss"] and sleeper_step["return_code"] == 143  # SIGTERM at --time
    table = torc(tmp_path, "slurm", "sacct", str(wid), env=clean_env(TORC_API_URL=server.url))
    assert table.returncode == 0, table.stderr
    for name, state in expected.items():
        assert re.search(rf"{name}\s.*{state}", table.stdout), table.stdout
    assert hog_step["max_rss"] in table.stdout

    # Recovery on Slurm: OOM -> memory x 6 (600 MB > the hog's 400), timeout -> runtime x 2.
    again.touch()
    recovered = api(tmp_path, server, "recover", str(wid), "--memory-multiplier", "6",
                    "--runtime-multiplier", "2")
    assert len(recovered["submitted"]) == 1, recovered
    wait_for(lambda: status(tmp_path, server, wid)["is_complete"], 240, "the reruns to end")
    counts = status(tmp_path, server, wid)["counts"]
    assert counts["completed"] == 3, counts
    jobs = {j["name"]: j for j in api(tmp_path, server, "jobs", "list", str(wid))}
    assert jobs["hog"]["memory_bytes"] == 600 << 20
    # from what it ran (past its minute) times 2; the job that completed keeps its minute
    assert jobs["sleeper"]["runtime_s"] >= 120 and jobs["ok"]["runtime_s"] == 60
    reruns = {r["job_name"]: r for r in api(tmp_path, server, "results", "list", str(wid))}
    assert {n: (r["run_id"], r["status"]) for n, r in reruns.items()
            if n != "ok"} == {"hog": (2, "completed"), "sleeper": (2, "completed")}
