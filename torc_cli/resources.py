"""What a runner has to offer: CPUs, memory, GPUs, nodes and the end of its wall time.

Inside a Slurm allocation the ``SLURM_*`` environment is the truth (the allocation may be a
slice of the node; :mod:`torc_cli.slurm` reads it); elsewhere the machine itself (psutil).

GPUs are device ids, not only a count, because the runner gives each job its own
(:mod:`torc_cli.gpus`). They come from, first to last:

1. ``CUDA_VISIBLE_DEVICES``, wherever it is set: Slurm sets it for an allocation with GPUs,
   and a user who sets it means "these devices only". The ids handed to jobs are the ones in
   that list (``"1,3"`` gives jobs 1 and 3, never 0), read as CUDA reads it (up to the first
   empty or negative entry; set but empty means none). Slurm's ``NoDevFiles`` names no device
   and is passed over.
2. Inside an allocation: ``SLURM_STEP_GPUS`` or ``SLURM_JOB_GPUS`` (the devices' ids), else
   ``SLURM_GPUS_ON_NODE`` (a count: ids 0..N-1), else none. The node may have more GPUs than
   the allocation; those belong to other jobs, so nothing else is asked.
3. Elsewhere: ``nvidia-smi -L`` if the command exists (one ``GPU n:`` line per device),
   bounded by :data:`NVIDIA_SMI_TIMEOUT_S` so that a hung driver cannot hold up the runner.

``--num-gpus N`` (run, exec, runner) overrides the count: see :func:`with_gpu_count`.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace

import psutil
import trio

from . import slurm
from .exits import InputError
from .gpus import parse_device_list, parse_nvidia_smi_list

#: How long ``nvidia-smi -L`` may take before the runner counts no GPUs (it answers in well
#: under a second on a healthy node; a wedged driver can make it hang for minutes).
NVIDIA_SMI_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Resources:
    cpus: int
    memory_bytes: int
    gpus: int
    nodes: int
    slurm_job_id: str | None = None
    end_time: float | None = None  # epoch seconds when the allocation ends
    #: The GPUs' device ids (``len == gpus``); empty: ids 0..gpus-1 (see :func:`device_ids`).
    gpu_ids: tuple[str, ...] = ()
    #: Where ``gpu_ids`` came from, for messages ("CUDA_VISIBLE_DEVICES", "nvidia-smi -L").
    gpu_source: str = ""

    def __post_init__(self) -> None:
        if self.gpu_ids and len(self.gpu_ids) != self.gpus:
            raise ValueError(f"{self.gpus} GPUs but {len(self.gpu_ids)} device ids "
                             f"({','.join(self.gpu_ids)})")


def device_ids(res: Resources) -> tuple[str, ...]:
    """The ids of ``res``'s GPUs: the detected ones, or 0..gpus-1 when only a count is known
    (resources built by hand, ``--num-gpus`` on a machine where none were detected)."""
    return res.gpu_ids or tuple(str(i) for i in range(res.gpus))


def with_gpu_count(res: Resources, count: int) -> Resources:
    """``res`` with ``--num-gpus count``: the first ``count`` of the detected devices, or
    ids 0..count-1 when none were detected (no ``CUDA_VISIBLE_DEVICES``, Slurm variables or
    ``nvidia-smi``: the user knows the machine). Asking for more GPUs than were detected is
    refused: the extra ids would be devices the environment keeps from this runner (an
    allocation's other jobs' GPUs)."""
    if count < 0:
        raise InputError(f"--num-gpus {count}: the number of GPUs cannot be negative")
    detected = res.gpu_ids
    if not detected:
        ids = tuple(str(i) for i in range(count))
        return replace(res, gpus=count, gpu_ids=ids, gpu_source="--num-gpus")
    if count > len(detected):
        raise InputError(
            f"--num-gpus {count}: this runner has {len(detected)} GPU(s) "
            f"({res.gpu_source}: {','.join(detected)}); ask for at most {len(detected)}, "
            f"or change {res.gpu_source} if it is wrong")
    return replace(res, gpus=count, gpu_ids=detected[:count])


def _env_gpu_ids(allocation: slurm.SlurmAllocation | None,
                 environ: Mapping[str, str]) -> tuple[tuple[str, ...], str] | None:
    """(ids, source) from the environment, or None when it says nothing about GPUs."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() != "NoDevFiles":
        try:
            return parse_device_list(visible, "CUDA_VISIBLE_DEVICES"), "CUDA_VISIBLE_DEVICES"
        except ValueError as exc:
            raise InputError(f"environment: {exc}") from None
    if allocation is None:
        return None
    for name in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        value = environ.get(name)
        if value and value.strip():
            try:
                return parse_device_list(value, name), name
            except ValueError as exc:
                raise InputError(f"environment: {exc}") from None
    return tuple(str(i) for i in range(allocation.num_gpus)), "SLURM_GPUS_ON_NODE"


def _combine(allocation: slurm.SlurmAllocation | None, environ: Mapping[str, str],
             smi_ids: tuple[str, ...] = ()) -> Resources:
    """The runner's resources from Slurm's view (or None: the machine's), the environment and
    what ``nvidia-smi -L`` listed (used only outside an allocation, when the environment
    names no GPUs)."""
    machine_cpus = psutil.cpu_count(logical=True) or 1
    machine_mem = psutil.virtual_memory().total
    found = _env_gpu_ids(allocation, environ)
    if found is None:
        found = (smi_ids, "nvidia-smi -L") if smi_ids else ((), "")
    ids, source = found
    if allocation is None:
        return Resources(cpus=machine_cpus, memory_bytes=machine_mem, gpus=len(ids), nodes=1,
                         gpu_ids=ids, gpu_source=source)
    return Resources(
        cpus=allocation.num_cpus or machine_cpus,
        memory_bytes=allocation.memory_bytes or machine_mem,
        gpus=len(ids),
        nodes=allocation.num_nodes,
        slurm_job_id=allocation.job_id,
        end_time=allocation.end_time,
        gpu_ids=ids,
        gpu_source=source,
    )


async def nvidia_smi_gpus(timeout_s: float = NVIDIA_SMI_TIMEOUT_S) -> tuple[str, ...]:
    """The GPUs ``nvidia-smi -L`` lists; none if the command is missing, fails (no driver)
    or does not answer within ``timeout_s`` (said on stderr: the count is then wrong)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    with trio.move_on_after(timeout_s):
        try:
            proc = await trio.run_process([exe, "-L"], capture_stdout=True,
                                          capture_stderr=True, check=False)
        except OSError:
            return ()
        if proc.returncode != 0:
            return ()
        return parse_nvidia_smi_list(proc.stdout.decode(errors="replace"))
    print(f"torc-trio: warning: {exe} -L did not answer within {timeout_s:g} s; counting no "
          f"GPUs (--num-gpus N sets them)", file=sys.stderr)
    return ()


async def detect_allocation_resources(*, probe_gpus: bool = True) -> Resources:
    """Resources of this runner: the Slurm allocation's if inside one (with its end time,
    asked of Slurm itself when ``SLURM_JOB_END_TIME`` is not exported, as Slurm 22.05 does
    not), else the machine's. ``probe_gpus=False`` skips ``nvidia-smi`` (``--num-gpus`` was
    given, so its answer would not be used)."""
    allocation = await slurm.current_allocation()
    smi: tuple[str, ...] = ()
    if probe_gpus and allocation is None and "CUDA_VISIBLE_DEVICES" not in os.environ:
        smi = await nvidia_smi_gpus()
    return _combine(allocation, os.environ, smi)
