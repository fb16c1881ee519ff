"""The SQLite store: everything the server writes or reads on disk (see :mod:`.core`)."""

from .changes import LINK_TABLES, Change, DeletedWorkflow, NewRows, StoreError
from .core import SYNC_MODES, Store
from .lock import DatabaseLock
from .queries import NewWorkflow, StoredWorkflow

__all__ = [
    "LINK_TABLES",
    "SYNC_MODES",
    "Change",
    "DatabaseLock",
    "DeletedWorkflow",
    "NewRows",
    "NewWorkflow",
    "Store",
    "StoreError",
    "StoredWorkflow",
]
