"""Fixtures for tests that need a real (local, single-node) Slurm cluster.

The cluster is started with ``scripts/local-slurm.sh start`` when it is down and we
are root; otherwise the tests are skipped with the reason.  The cluster is left
running at the end: CI starts it explicitly, and restarting it per session is slow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "local-slurm.sh"


#: The extra namespaced nodes .ci/run starts (tests/slurm/test_slurm_multinode.py uses them);
#: a start from here keeps them, so that no module restarts the cluster for another.
EXTRA_NODES = "4"


def _run(action: str, timeout: float) -> subprocess.CompletedProcess[str]:
    extra = ["--nodes", EXTRA_NODES] if action == "start" else []
    return subprocess.run(
        [str(SCRIPT), action, *extra], capture_output=True, text=True, timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[str]:
    """Ensure the local Slurm cluster is up; yields the node (short host) name."""
    missing = [
        c for c in ("sbatch", "squeue", "scontrol", "scancel", "sinfo") if not shutil.which(c)
    ]
    if missing:
        pytest.skip(f"Slurm client commands not installed: {', '.join(missing)}")
    status = _run("status", 30)
    if status.returncode != 0:
        if os.geteuid() != 0:
            pytest.skip(
                "local Slurm cluster is down and starting it needs root "
                "(run: sudo scripts/local-slurm.sh start)"
            )
        if not (shutil.which("slurmctld") or Path("/usr/sbin/slurmctld").exists()):
            pytest.skip("slurmctld/slurmd not installed (scripts/ci-install-slurm.sh)")
        start = _run("start", 300)
        if start.returncode != 0:
            pytest.skip("could not start the local Slurm cluster:\n" + start.stdout + start.stderr)
    node = subprocess.run(
        ["hostname", "-s"], capture_output=True, text=True, check=False
    ).stdout.strip()
    yield node
