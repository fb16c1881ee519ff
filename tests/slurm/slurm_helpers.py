"""What the Slurm tests share: the CLI against a test's server, waiting, and cleaning up only
the allocations that server recorded (other tests' may share the cluster)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1] / "cli"))
from cli_helpers import ServerProcess, clean_env, torc


def api(tmp_path: Path, server: ServerProcess, *args: str, timeout: float = 120) -> Any:
    """``torc-trio -f json ARGS`` against ``server``; the parsed output (exit 0 asserted)."""
    proc = torc(
        tmp_path, "-f", "json", *args, env=clean_env(TORC_API_URL=server.url), timeout=timeout
    )
    assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


def get(server: ServerProcess, path: str) -> Any:
    """One GET of the server's API (what the CLI has no command for)."""
    with urllib.request.urlopen(server.url + path, timeout=30) as reply:
        return json.loads(reply.read())


def create(tmp_path: Path, server: ServerProcess, spec: dict[str, Any]) -> int:
    (tmp_path / "wf.json").write_text(json.dumps(spec))
    return int(api(tmp_path, server, "create", "wf.json")["id"])


def status(tmp_path: Path, server: ServerProcess, wid: int) -> dict[str, Any]:
    return dict(api(tmp_path, server, "status", str(wid)))


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def cancel_allocations(server: ServerProcess) -> None:
    """scancel what this server's workflows submitted (a failed test's allocations must not
    hold the nodes for the next test; another test's allocations are left alone)."""
    mine: set[str] = set()
    try:
        for wf in get(server, "/workflows?limit=1000")["items"]:
            page = get(server, f"/workflows/{wf['id']}/allocations?limit=1000")
            mine |= {str(a["slurm_job_id"]) for a in page["items"]}
    except (OSError, urllib.error.URLError, ValueError):
        pass  # the server is gone: nothing to ask
    if mine:
        subprocess.run(["scancel", *sorted(mine)], capture_output=True, check=False)
