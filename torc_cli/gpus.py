"""GPU devices of a runner, each held by one job at a time.

A runner that packs jobs into its resources (no ``-j``) and has GPUs gives every job it starts
the three variables that choose devices, so that two jobs running at once never share one:

* a job asking for ``num_gpus: k`` gets k device ids no running job holds, released when it
  ends: ``CUDA_VISIBLE_DEVICES`` and ``ROCR_VISIBLE_DEVICES`` name them (``"1,3"``), and
  ``HIP_VISIBLE_DEVICES`` counts them from 0 (``"0,1"``). AMD's runtimes apply the two in
  layers: ROCr keeps the devices ``ROCR_VISIBLE_DEVICES`` names and numbers them from 0, then
  HIP picks from *those* (and reads ``HIP_VISIBLE_DEVICES`` before ``CUDA_VISIBLE_DEVICES``).
  Had HIP been given the same ids, a job holding device 3 would find no device 3 among the
  one ROCr left it. NVIDIA's runtime reads only ``CUDA_VISIBLE_DEVICES``.
* a job asking for no GPUs gets all three set to the empty string: no device. HyperQueue
  leaves such tasks the worker's whole environment (every GPU visible), and Torc 0.12 sets
  none of these variables at all; but a GPU-less job that initializes CUDA anyway (a
  framework imported for its CPU code; TensorFlow reserves memory on every device it sees)
  would then use devices that the runner has given to other jobs. Hiding them is the only
  way to keep the promise that a job's devices are its own.

A runner with no GPUs, or in queue mode (``-j N``: jobs run whatever they ask for), leaves
the variables as it found them: it has nothing to hand out, and hiding devices that its
detection missed would break jobs that work today.

The ids are the ones the runner's environment uses: the list in ``CUDA_VISIBLE_DEVICES`` when
Slurm (or the user) set one for the runner, else Slurm's ``SLURM_JOB_GPUS``, else 0..N-1 (see
:func:`torc_cli.resources.detect_allocation_resources`). The pool hands out the lowest free
ones in that order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: The variables a job's devices are named in, in the order they are documented above.
GPU_ENV_VARS = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")


class GpuPoolError(ValueError):
    """A request the pool cannot honour: more devices than are free, or a release of devices
    it did not hand out. The runner's fit check (the server packs claims into
    :attr:`GpuPool.free`) keeps this from happening; if it does, sharing a device silently
    would be worse than stopping."""


class GpuPool:
    """The runner's GPU device ids, each free or held by one job."""

    __slots__ = ("_free", "_ids", "_order")

    def __init__(self, ids: Sequence[str]) -> None:
        ids = tuple(ids)
        seen: set[str] = set()
        for device in ids:
            if not device or device != device.strip() or "," in device:
                raise GpuPoolError(f"GPU id {device!r} is not a device id")
            if device in seen:
                raise GpuPoolError(f"GPU id {device!r} appears twice in {','.join(ids)}")
            seen.add(device)
        self._ids = ids
        self._order = {device: i for i, device in enumerate(ids)}
        self._free: list[str] = list(ids)  # kept in the order of ``ids``

    @property
    def ids(self) -> tuple[str, ...]:
        return self._ids

    @property
    def total(self) -> int:
        return len(self._ids)

    @property
    def free(self) -> int:
        return len(self._free)

    def acquire(self, count: int) -> tuple[str, ...]:
        """``count`` free device ids (the lowest in the pool's order), now held."""
        if count < 0:
            raise GpuPoolError(f"cannot acquire {count} GPUs")
        if count > len(self._free):
            raise GpuPoolError(f"a job needs {count} GPUs and {len(self._free)} of "
                               f"{len(self._ids)} are free")
        taken = tuple(self._free[:count])
        del self._free[:count]
        return taken

    def release(self, ids: Iterable[str]) -> None:
        """Give back devices that :meth:`acquire` handed out."""
        ids = tuple(ids)
        free = set(self._free)
        for device in ids:
            if device not in self._order:
                raise GpuPoolError(f"GPU id {device!r} is not one of this runner's "
                                   f"({','.join(self._ids)})")
            if device in free:
                raise GpuPoolError(f"GPU id {device!r} was released but is not held")
            free.add(device)
        self._free = sorted(free, key=self._order.__getitem__)


def gpu_env(ids: Sequence[str]) -> dict[str, str]:
    """The variables that give a job exactly the devices ``ids`` (none: every variable is
    empty, so the job sees no device)."""
    named = ",".join(ids)
    return {
        "CUDA_VISIBLE_DEVICES": named,
        "ROCR_VISIBLE_DEVICES": named,
        # Positions among the devices ROCr leaves the job, not ids (module docstring).
        "HIP_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(ids))),
    }


def parse_device_list(value: str, where: str) -> tuple[str, ...]:
    """The device ids in a ``CUDA_VISIBLE_DEVICES``-style list, as CUDA reads it: entries up
    to the first empty or negative one (``"0,-1,2"`` is device 0 alone; ``""`` is none).
    ``where`` names the variable for the error a repeated id gets."""
    ids: list[str] = []
    for raw in value.split(","):
        device = raw.strip()
        if not device or (device.startswith("-") and device[1:].isdigit()):
            break
        if device in ids:
            raise ValueError(f"{where}={value!r} names GPU {device} twice; a runner gives "
                             f"each device to one job at a time, so each must be listed once")
        ids.append(device)
    return tuple(ids)


def parse_nvidia_smi_list(text: str) -> tuple[str, ...]:
    """The GPU indices in ``nvidia-smi -L`` output: one ``GPU n: NAME (UUID: ...)`` line per
    device (indented MIG lines are instances of the GPU above them, not devices)."""
    ids: list[str] = []
    for line in text.splitlines():
        if not line.startswith("GPU "):
            continue
        index, colon, _ = line[4:].partition(":")
        if colon and index.isdigit() and index not in ids:
            ids.append(index)
    return tuple(ids)
