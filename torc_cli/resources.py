"""What a runner has to offer: CPUs, memory, GPUs, nodes and the end of its wall time.

Inside a Slurm allocation the ``SLURM_*`` environment is the truth (the allocation may be a
slice of the node; :mod:`torc_cli.slurm` reads it); elsewhere the machine itself (psutil).
"""

from __future__ import annotations

import os
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


async def detect_allocation_resources() -> Resources:
    """Resources of this runner: the Slurm allocation's if inside one (with its end time,
    asked of Slurm itself when ``SLURM_JOB_END_TIME`` is not exported, as Slurm 22.05 does
    not), else the machine's."""
    return _combine(await slurm.current_allocation(), os.environ)
