"""Torc's ``scheduler_type: local`` actions start runners on this machine, and
``compute_node_ignore_workflow_completion`` keeps a runner waiting past completion."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from cli_helpers import ServerProcess, background, clean_env, torc, torc_json, wait_until

from torc_cli.local_runners import is_alive


def _spec(tmp: Path, doc: dict[str, Any]) -> str:
    (tmp / "spec.json").write_text(json.dumps(doc))
    return "spec.json"


def _complete(tmp: Path, env: dict[str, str], wid: int) -> bool:
    return bool(torc_json(tmp, "workflows", "status", str(wid), env=env)["is_complete"])


def test_submit_starts_local_runners_for_a_local_action(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "torc.db")
    env = clean_env(TORC_API_URL=srv.url)
    try:
        # Each job waits until a job on another runner has started: two runners needed.
        spec = _spec(tmp_path, {
            "name": "local", "actions": [{"trigger_type": "on_workflow_start",
                                          "action_type": "schedule_nodes",
                                          "scheduler_type": "local", "num_allocations": 2,
                                          "max_parallel_jobs": 1}],
            "jobs": [{"name": f"j{k}", "command": (
                f"touch started_{k}; while [ ! -e started_{1 - k} ]; do sleep 0.05; done")}
                for k in (0, 1)]})
        wid = torc_json(tmp_path, "create", spec, env=env)["id"]
        out = torc(tmp_path, "submit", str(wid), env=env, check=True).stdout
        pids = [int(line.split("pid ")[1].split(",")[0]) for line in out.splitlines()
                if "local runner (pid" in line]
        assert len(pids) == 2, out
        wait_until(lambda: _complete(tmp_path, env, wid))
        results = torc_json(tmp_path, "results", "list", str(wid), env=env)
        assert len({r["compute_node_id"] for r in results}) == 2  # one job each
        wait_until(lambda: not any(map(is_alive, pids)))  # they end with the workflow
        logs = sorted((tmp_path / "torc_output" / "local_runners").iterdir())
        assert [p.name for p in logs] == ["runner_wf1_a0_1.log", "runner_wf1_a0_2.log"]
        # The action ran once: submitting again starts nothing.
        again = torc(tmp_path, "submit", str(wid), env=env, check=True).stdout
        assert "local runner" not in again
    finally:
        srv.stop()


def test_run_starts_the_runners_of_a_local_action(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {
        "name": "local", "actions": [{"trigger_type": "on_workflow_start",
                                      "action_type": "schedule_nodes",
                                      "scheduler_type": "local", "max_parallel_jobs": 1}],
        "jobs": [{"name": f"j{k}", "command": (
            f"touch started_{k}; while [ ! -e started_{1 - k} ]; do sleep 0.05; done")}
            for k in (0, 1)]})
    proc = torc(tmp_path, "-s", "run", "-j", "1", spec)
    assert proc.returncode == 0, proc.stderr
    assert "started local runner" in proc.stderr
    # Its server ended with the run: so did the runner it started (not left waiting for it).
    pid = int(proc.stderr.split("local runner (pid ")[1].split(",")[0])
    assert not is_alive(pid)
    results = torc_json(tmp_path, "-s", "results", "list", "1")
    assert len({r["compute_node_id"] for r in results}) == 2  # run's runner and the local one


def test_ignore_workflow_completion_keeps_the_runner_for_new_work(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "torc.db")
    env = clean_env(TORC_API_URL=srv.url)
    try:
        spec = _spec(tmp_path, {"name": "stay", "compute_node_ignore_workflow_completion": True,
                                "jobs": [{"name": "a", "command": "echo run >> runs.txt"}]})
        wid = torc_json(tmp_path, "create", spec, env=env)["id"]
        with background(tmp_path, "runner", str(wid), "--idle-timeout-seconds", "30",
                        env=env) as runner:
            wait_until(lambda: _complete(tmp_path, env, wid))
            # Completed, and the runner is still there: a reset gives it the job again.
            torc(tmp_path, "reset-status", str(wid), env=env, check=True)
            wait_until(lambda: (tmp_path / "runs.txt").read_text() == "run\nrun\n")
            assert runner.poll() is None
            runner.send_signal(signal.SIGTERM)
            assert runner.wait(timeout=60) in (0, 143)
        results = torc_json(tmp_path, "results", "list", str(wid), env=env)
        assert len({r["compute_node_id"] for r in results}) == 1  # one runner ran both
    finally:
        srv.stop()


def test_max_parallel_jobs_reaches_the_runners_of_a_slurm_action(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "torc.db")
    env = clean_env(TORC_API_URL=srv.url)
    try:
        spec = _spec(tmp_path, {
            "name": "limited", "slurm_schedulers": [{"name": "cpu", "walltime": "00:10:00"}],
            "actions": [{"trigger_type": "on_workflow_start", "action_type": "schedule_nodes",
                         "scheduler": "cpu", "max_parallel_jobs": 3}],
            "jobs": [{"name": "a", "command": "true", "scheduler": "cpu"}]})
        wid = torc_json(tmp_path, "create", spec, env=env)["id"]
        script = torc(tmp_path, "submit", str(wid), "--dry-run", env=env, check=True).stdout
        assert f"runner {wid} " in script and " -j 3" in script
    finally:
        srv.stop()
