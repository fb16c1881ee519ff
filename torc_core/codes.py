"""The engine's status codes as plain ints, and the transition table as a dense array: what
its hot paths index (a lookup in an IntEnum-keyed dict per job costs ~10x an index into
bytes). Shared by :mod:`torc_core.engine` and :mod:`torc_core.resets`."""

from __future__ import annotations

from .status import TRANSITIONS, Cause, JobStatus

_NUM_STATUSES = len(JobStatus)

# TRANSITIONS as a dense table for the hot path: _TABLE[cause][status] -> new status or -1.
_TABLE: list[list[int]] = [[-1] * _NUM_STATUSES for _ in Cause]
for (_old, _cause), _new in TRANSITIONS.items():
    _TABLE[_cause][_old] = int(_new)

_UNINITIALIZED = int(JobStatus.UNINITIALIZED)
_BLOCKED = int(JobStatus.BLOCKED)
_READY = int(JobStatus.READY)
_PENDING = int(JobStatus.PENDING)
_RUNNING = int(JobStatus.RUNNING)
_COMPLETED = int(JobStatus.COMPLETED)
_FAILED = int(JobStatus.FAILED)
_CANCELED = int(JobStatus.CANCELED)
_TERMINATED = int(JobStatus.TERMINATED)
_DISABLED = int(JobStatus.DISABLED)
_PENDING_FAILED = int(JobStatus.PENDING_FAILED)

#: Per status: 0 = not final, 1 = final and satisfied, 2 = final and failed.
_OUTCOME = bytes(
    1 if s in (_COMPLETED, _DISABLED) else 2 if s in (_FAILED, _CANCELED, _TERMINATED) else 0
    for s in range(_NUM_STATUSES)
)
_NOT_FINAL = (_UNINITIALIZED, _BLOCKED, _READY, _PENDING, _RUNNING, _PENDING_FAILED)
#: Per status: whether it is a failed outcome.
_FAILS = bytes(o == 2 for o in _OUTCOME)
