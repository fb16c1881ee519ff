"""torc_core: the sans-IO heart of torc-trio.

No trio, sockets, sqlite, clocks or randomness live here: every input carries ``now`` where time
matters, and every output is an effect for the I/O layer to carry out.
"""

from __future__ import annotations

from . import events
from .engine import Engine
from .errors import BadInput, EngineError, IllegalTransition, SpecError, TorcError, UnknownJob
from .model import WorkflowModel
from .spec import (
    ActionSpec,
    FailureHandler,
    FailureHandlerRule,
    FileSpec,
    JobSpec,
    ResourceRequirements,
    SlurmScheduler,
    UserDataSpec,
    WorkflowSpec,
)
from .status import TRANSITIONS, Cause, JobStatus

__all__ = [
    "TRANSITIONS",
    "ActionSpec",
    "BadInput",
    "Cause",
    "Engine",
    "EngineError",
    "FailureHandler",
    "FailureHandlerRule",
    "FileSpec",
    "IllegalTransition",
    "JobSpec",
    "JobStatus",
    "ResourceRequirements",
    "SlurmScheduler",
    "SpecError",
    "TorcError",
    "UnknownJob",
    "UserDataSpec",
    "WorkflowModel",
    "WorkflowSpec",
    "events",
]
