"""What a runner has to offer: CPUs, memory, GPUs, nodes and the end of its wall time.

Inside a Slurm allocation the ``SLURM_*`` environment is the truth (the allocation may be a
slice of the node; :mod:`torc_cli.slurm` reads it); elsewhere the machine itself (psutil).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import psutil

from . import slurm


@dataclass(frozen=True, slots=True)
class Resources:
    cpus: int
    memory_bytes: int
    gpus: int
    nodes: int
    slurm_job_id: str | None = None
    end_time: float | None = None  # epoch seconds when the allocation ends


def _visible_gpus(environ: Mapping[str, str]) -> int:
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if not visible:
        return 0
    return len([d for d in visible.split(",") if d.strip() not in ("", "-1")])


def _combine(allocation: slurm.SlurmAllocation | None, environ: Mapping[str, str]) -> Resources:
    machine_cpus = psutil.cpu_count(logical=True) or 1
    machine_mem = psutil.virtual_memory().total
    if allocation is None:
        return Resources(cpus=machine_cpus, memory_bytes=machine_mem,
                         gpus=_visible_gpus(environ), nodes=1)
    return Resources(
        cpus=allocation.num_cpus or machine_cpus,
        memory_bytes=allocation.memory_bytes or machine_mem,
        gpus=allocation.num_gpus or _visible_gpus(environ),
        nodes=allocation.num_nodes,
        slurm_job_id=allocation.job_id,
        end_time=allocation.end_time,
    )


def detect_resources(environ: Mapping[str, str] | None = None) -> Resources:
    """Resources of this runner: the Slurm allocation's if inside one, else the machine's."""
    env = os.environ if environ is None else environ
    return _combine(slurm.slurm_environment(env, time.time()), env)


async def detect_allocation_resources() -> Resources:
    """Like :func:`detect_resources`, and inside Slurm the allocation's end time even when
    ``SLURM_JOB_END_TIME`` is not exported (Slurm 22.05 does not): asked of Slurm itself."""
    return _combine(await slurm.current_allocation(), os.environ)
