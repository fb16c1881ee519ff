"""Runners started on this machine for a ``schedule_nodes`` action of ``scheduler_type:
local`` (Torc's local scheduler): the way a workflow grows its own workers without Slurm.

Each is a ``torc-trio runner`` process in its own session (so a Ctrl-C of the command that
started it does not stop it; it stops as any runner does: the workflow completes, it is idle
for ``--idle-timeout-seconds``, or it is signalled), writing to
``<output dir>/local_runners/runner_wf<W>_a<A>_<k>.log``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: A local runner with nothing to claim waits this long for new jobs, then exits.
DEFAULT_IDLE_S = 60.0


def runner_argv(url: str, workflow_id: int, output_dir: Path, *, max_parallel: int | None,
                idle_timeout_s: float) -> list[str]:
    argv = [sys.executable, "-m", "torc_cli.main", "--url", url, "-o", str(output_dir),
            "runner", str(workflow_id), "--idle-timeout-seconds", f"{idle_timeout_s:g}"]
    if max_parallel is not None:
        argv += ["-j", str(max_parallel)]
    return argv


def start_local_runners(url: str, workflow_id: int, output_dir: Path,
                        action: dict[str, Any], *, idle_timeout_s: float = DEFAULT_IDLE_S,
                        env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Start ``num_allocations`` runners for ``action``; what was started, one dict each.
    ``env``: more environment for them (torc_cli.reach.access_env: TLS trust, credentials)."""
    logs = output_dir / "local_runners"
    logs.mkdir(parents=True, exist_ok=True)
    argv = runner_argv(url, workflow_id, output_dir,
                       max_parallel=action.get("max_parallel_jobs"),
                       idle_timeout_s=idle_timeout_s)
    env = {**os.environ, **(env or {}), "TORC_API_URL": url}
    started = []
    for k in range(int(action.get("num_allocations") or 1)):
        log = logs / f"runner_wf{workflow_id}_a{action.get('index')}_{k + 1}.log"
        # Through a shell that exits at once: the runner is then nobody's child here, so it
        # is not left a zombie in the (long-lived) process that started it.
        shell = subprocess.run(
            ["/bin/sh", "-c", 'LOG=$1; shift; "$@" </dev/null >>"$LOG" 2>&1 & echo $!',
             "sh", str(log), *argv],
            env=env, capture_output=True, text=True, check=True, start_new_session=True)
        started.append({"kind": "local", "pid": int(shell.stdout.strip()), "log": str(log),
                        "action_index": action.get("index")})
    return started


def describe(runner: dict[str, Any]) -> str:
    return f"local runner (pid {runner['pid']}, log {runner['log']})"


def stop_local_runners(started: list[dict[str, Any]], timeout_s: float = 30.0) -> None:
    """SIGTERM to each runner started here, then wait (polling, at most ``timeout_s``) until
    they are gone; SIGKILL to any left."""
    pids = [int(r["pid"]) for r in started]
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if is_alive(pid)]
        if pids:
            time.sleep(0.05)
    for pid in pids:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def is_alive(pid: int) -> bool:
    """Whether process ``pid`` still exists (signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
