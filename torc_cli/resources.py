"""What a runner has to offer: CPUs, memory, GPUs, nodes and the end of its wall time.

Inside a Slurm allocation the ``SLURM_*`` environment is the truth (the allocation may be a
slice of the node); elsewhere the machine itself (psutil).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import psutil


@dataclass(frozen=True, slots=True)
class Resources:
    cpus: int
    memory_bytes: int
    gpus: int
    nodes: int
    slurm_job_id: str | None = None
    end_time: float | None = None  # epoch seconds when the allocation ends


def _first_int(text: str | None) -> int | None:
    if not text:
        return None
    match = re.match(r"\s*(\d+)", text)
    return int(match.group(1)) if match else None


def _gpu_count(environ: Mapping[str, str]) -> int:
    for key in ("SLURM_GPUS_ON_NODE",):
        value = _first_int(environ.get(key))
        if value is not None:
            return value
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return len([d for d in visible.split(",") if d.strip() not in ("", "-1")])
    return 0


def detect_resources(environ: Mapping[str, str] | None = None) -> Resources:
    """Resources of this runner: the Slurm allocation's if inside one, else the machine's."""
    env = os.environ if environ is None else environ
    machine_cpus = psutil.cpu_count(logical=True) or 1
    machine_mem = psutil.virtual_memory().total
    job_id = env.get("SLURM_JOB_ID")
    if not job_id:
        return Resources(cpus=machine_cpus, memory_bytes=machine_mem, gpus=_gpu_count(env),
                         nodes=1)
    cpus = _first_int(env.get("SLURM_CPUS_ON_NODE")) or _first_int(
        env.get("SLURM_JOB_CPUS_PER_NODE")) or machine_cpus
    mem_mb = _first_int(env.get("SLURM_MEM_PER_NODE"))
    if mem_mb is None:
        per_cpu = _first_int(env.get("SLURM_MEM_PER_CPU"))
        mem_mb = per_cpu * cpus if per_cpu is not None else None
    memory = mem_mb * 1024 * 1024 if mem_mb else machine_mem
    nodes = _first_int(env.get("SLURM_JOB_NUM_NODES")) or _first_int(env.get("SLURM_NNODES")) or 1
    end = env.get("SLURM_JOB_END_TIME")
    end_time = float(end) if end and end.strip().isdigit() else None
    return Resources(cpus=cpus, memory_bytes=memory, gpus=_gpu_count(env), nodes=nodes,
                     slurm_job_id=job_id, end_time=end_time)


async def detect_allocation_resources() -> Resources:
    """Like :func:`detect_resources`, and inside Slurm the allocation's end time even when
    ``SLURM_JOB_END_TIME`` is not exported (asked of Slurm itself)."""
    res = detect_resources()
    if res.slurm_job_id and res.end_time is None:
        from .slurm import job_end_time

        end = await job_end_time(res.slurm_job_id)
        if end is not None:
            res = dataclasses.replace(res, end_time=end)
    return res
