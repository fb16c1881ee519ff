"""The SQLite store: everything the server writes or reads on disk (see :mod:`.core`).

The names below are imported on first use (PEP 562): the writer process
(:mod:`.writer`) imports this package too, and must not pay for Trio and the rest of the
store to start."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names, for type checkers (a redundant alias re-exports one)
    from .changes import LINK_TABLES as LINK_TABLES
    from .changes import Change as Change
    from .changes import DeletedWorkflow as DeletedWorkflow
    from .changes import NewRows as NewRows
    from .changes import StoreError as StoreError
    from .core import SYNC_MODES as SYNC_MODES
    from .core import WRITERS as WRITERS
    from .core import Store as Store
    from .lock import DatabaseLock as DatabaseLock
    from .queries import NewWorkflow as NewWorkflow
    from .queries import StoredWorkflow as StoredWorkflow

_WHERE = {
    "LINK_TABLES": "changes", "Change": "changes", "DeletedWorkflow": "changes",
    "NewRows": "changes", "StoreError": "changes", "SYNC_MODES": "core", "WRITERS": "core",
    "Store": "core", "DatabaseLock": "lock", "NewWorkflow": "queries",
    "StoredWorkflow": "queries",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{where}", __name__), name)
