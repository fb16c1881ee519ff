"""torc-trio as a Python library: build, run and inspect workflows, map functions over
inputs, and let running jobs add jobs (docs/python.md).

A thin facade: the engine, the server and the runner live in torc_core, torc_net and
torc_cli. Names are imported on first use (PEP 562), so that ``import torc_trio`` and the
function-job entry point ``python -m torc_trio.call`` stay cheap in the job processes that
run them, thousands of times over.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torc_cli.exits import InputError
    from torc_cli.standalone import StandaloneError
    from torc_core.errors import SpecError
    from torc_net.client import ApiError, ServerUnreachable

    from .builder import (
        ActionHandle,
        CallHandle,
        FailureHandlerHandle,
        FileHandle,
        Handle,
        JobHandle,
        ResourceRequirementsHandle,
        SchedulerHandle,
        TorcWarning,
        UserDataHandle,
        Workflow,
    )
    from .client import AsyncClient, Client, SpawnResult, WatchLost, connect
    from .dynamic import CurrentJob, NotInJob, current_job
    from .functions import FunctionNotImportable
    from .mapping import CallFailure, MapError, MapResult, map, map_async
    from .running import RunResult, Submitted

_EXPORTS = {
    "Workflow": "builder", "Handle": "builder", "JobHandle": "builder",
    "CallHandle": "builder", "FileHandle": "builder", "UserDataHandle": "builder",
    "ResourceRequirementsHandle": "builder", "SchedulerHandle": "builder",
    "FailureHandlerHandle": "builder", "ActionHandle": "builder", "TorcWarning": "builder",
    "RunResult": "running", "Submitted": "running",
    "AsyncClient": "client", "Client": "client", "connect": "client",
    "SpawnResult": "client", "WatchLost": "client",
    "map": "mapping", "map_async": "mapping", "MapError": "mapping", "MapResult": "mapping",
    "CallFailure": "mapping",
    "current_job": "dynamic", "CurrentJob": "dynamic", "NotInJob": "dynamic",
    "FunctionNotImportable": "functions",
}
_ELSEWHERE = {
    "SpecError": "torc_core.errors", "ApiError": "torc_net.client",
    "ServerUnreachable": "torc_net.client", "InputError": "torc_cli.exits",
    "StandaloneError": "torc_cli.standalone",
}

__all__ = [
    "ActionHandle",
    "ApiError",
    "AsyncClient",
    "CallFailure",
    "CallHandle",
    "Client",
    "CurrentJob",
    "FailureHandlerHandle",
    "FileHandle",
    "FunctionNotImportable",
    "Handle",
    "InputError",
    "JobHandle",
    "MapError",
    "MapResult",
    "NotInJob",
    "ResourceRequirementsHandle",
    "RunResult",
    "SchedulerHandle",
    "ServerUnreachable",
    "SpawnResult",
    "SpecError",
    "StandaloneError",
    "Submitted",
    "TorcWarning",
    "UserDataHandle",
    "WatchLost",
    "Workflow",
    "connect",
    "current_job",
    "map",
    "map_async",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    elif name in _ELSEWHERE:
        module = importlib.import_module(_ELSEWHERE[name])
    else:
        raise AttributeError(f"module 'torc_trio' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
