"""torc_core: the sans-IO heart of torc-trio.

No trio, sockets, sqlite, clocks or randomness live here: every input carries ``now`` where time
matters, and every output is an effect for the I/O layer to carry out.

The names below are imported on first use (PEP 562): a client that needs only
:class:`SpecError` or the spec parser must not pay for the engine and its event classes
(~40 ms of dataclass creation) on its way to the first job.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names, for type checkers (a redundant alias re-exports one)
    from . import events as events
    from .engine import Engine as Engine
    from .errors import BadInput as BadInput
    from .errors import EngineError as EngineError
    from .errors import IllegalTransition as IllegalTransition
    from .errors import SpecError as SpecError
    from .errors import TorcError as TorcError
    from .errors import UnknownJob as UnknownJob
    from .model import WorkflowModel as WorkflowModel
    from .spec import ActionSpec as ActionSpec
    from .spec import FailureHandler as FailureHandler
    from .spec import FailureHandlerRule as FailureHandlerRule
    from .spec import FileSpec as FileSpec
    from .spec import JobSpec as JobSpec
    from .spec import ResourceRequirements as ResourceRequirements
    from .spec import SlurmScheduler as SlurmScheduler
    from .spec import UserDataSpec as UserDataSpec
    from .spec import WorkflowSpec as WorkflowSpec
    from .status import TRANSITIONS as TRANSITIONS
    from .status import Cause as Cause
    from .status import JobStatus as JobStatus

_WHERE = {
    "Engine": "engine", "WorkflowModel": "model",
    "BadInput": "errors", "EngineError": "errors", "IllegalTransition": "errors",
    "SpecError": "errors", "TorcError": "errors", "UnknownJob": "errors",
    "ActionSpec": "spec", "FailureHandler": "spec", "FailureHandlerRule": "spec",
    "FileSpec": "spec", "JobSpec": "spec", "ResourceRequirements": "spec",
    "SlurmScheduler": "spec", "UserDataSpec": "spec", "WorkflowSpec": "spec",
    "TRANSITIONS": "status", "Cause": "status", "JobStatus": "status",
}

__all__ = sorted([*_WHERE, "events"])


def __getattr__(name: str) -> Any:
    if name == "events":
        return importlib.import_module(".events", __name__)
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{where}", __name__), name)
