"""job_misfit: what keeps a ready job from ever running on a runner, in words."""

from __future__ import annotations

from typing import Any

import pytest

from torc_cli.resources import Resources
from torc_cli.runner import job_misfit

RES = Resources(cpus=4, memory_bytes=8 * 2**30, gpus=1, nodes=1)
FITS = {"name": "j", "num_cpus": 4, "memory_bytes": 8 * 2**30, "num_gpus": 1, "num_nodes": 1,
        "runtime_s": 600, "scheduler": None}


@pytest.mark.parametrize(("change", "walltime", "scheduler", "expected"), [
    ({}, None, None, ""),
    ({}, 600.0, None, ""),
    ({"num_cpus": 5}, None, None, "needs 5 CPUs"),
    ({"memory_bytes": 9 * 2**30}, None, None, "needs 9.0 GiB of memory"),
    ({"num_gpus": 2}, None, None, "needs 2 GPUs"),
    ({"num_nodes": 2}, None, None, "needs 2 nodes"),
    ({}, 599.0, None, "needs 600 s and 599 s are left"),
    ({"scheduler": "gpu"}, None, "cpu", "is for scheduler 'gpu'"),
    ({"scheduler": "cpu"}, None, "cpu", ""),
])
def test_job_misfit(change: dict[str, Any], walltime: float | None, scheduler: str | None,
                    expected: str) -> None:
    assert job_misfit({**FITS, **change}, RES, walltime, scheduler) == expected


def test_queue_mode_ignores_resources_but_not_time() -> None:
    big = {**FITS, "num_cpus": 64, "num_gpus": 8}
    assert job_misfit(big, RES, None, None, check_resources=False) == ""
    assert job_misfit(big, RES, 10.0, None, check_resources=False) == \
        "needs 600 s and 10 s are left"
