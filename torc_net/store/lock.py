"""One server per database: an exclusive lock on ``PATH.lock`` (see :class:`DatabaseLock`)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from typing import Any

from .changes import StoreError

log = logging.getLogger("torc_net.store")


class DatabaseLock:
    """An exclusive ``flock`` on ``PATH.lock``, held while a server owns ``PATH`` (Rule 7).

    A lock file beside the database rather than a lock on it: SQLite's own locks are POSIX
    record locks on the database file, which a second lock there could disturb. The file says
    who holds it, as one JSON object (``pid``, ``host``, and ``url`` once the server listens),
    so that a refused server can name the holder and a standalone command can talk to the
    server already running on its database (:func:`torc_cli.early.standalone_holder`). It
    stays after exit: removing it would let a third server lock a fresh file while a second
    still holds the old one."""

    #: Someone may hold the lock for an instant to look at it (a shared lock): retry that long.
    PATIENCE_S = 2.0

    def __init__(self, path: str) -> None:
        self.path = f"{path}.lock"
        self.holder: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname()}
        self.fd: int | None = None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:  # a folder we may read but not write: the database decides
            log.warning("%s: cannot create (%s); not guarding against a second server",
                        self.path, exc.strerror)
            return
        deadline = time.monotonic() + self.PATIENCE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                holder = _describe_holder(os.pread(fd, 4096, 0))
                os.close(fd)
                raise StoreError(
                    f"{path} is in use by another torc-trio server ({holder}); only one server "
                    "may own a database (give this one its own, e.g. --db elsewhere)") from None
            except OSError as exc:  # ENOLCK and the like: a file system without locks
                log.warning("%s: cannot lock (%s); not guarding against a second server",
                            self.path, exc.strerror)
                break
        self.fd = fd
        self._write()

    def note(self, **fields: Any) -> None:
        """Add to what the file says of its holder (``url`` where it listens, ``command_pid``
        of the standalone command it serves)."""
        self.holder.update(fields)
        self._write()

    def _write(self) -> None:
        if self.fd is not None:
            data = (json.dumps(self.holder) + "\n").encode()
            os.pwrite(self.fd, data, 0)
            os.ftruncate(self.fd, len(data))

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def _describe_holder(data: bytes) -> str:
    try:
        holder = json.loads(data)
        return f"pid {holder['pid']} on {holder['host']}"
    except (ValueError, KeyError, TypeError):
        return "unknown"
