"""The URL file: where a server says, on a file system its runners share, at which URL it
answers now (``serve --url-file PATH``; runners read it through ``TORC_API_URL_FILE``).

Why a file: a server that dies with its host is restarted elsewhere (another login node,
another allocation) at another address, while runners in allocations keep their jobs going.
They cannot be told the new address over the network; a file they already know the path of
can. The server writes it whole (a temporary file beside it, renamed over it) every time it
starts listening, so a reader sees the old URL or the new one, never half of either.

The format is one line: ``http://HOST:PORT/torc-service/v1``. Standard library only: the CLI
reads the file before its heavy imports (:mod:`torc_cli.early`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

API_PATH = "/torc-service/v1"
ENV_VAR = "TORC_API_URL_FILE"
#: More than any URL: a bigger file is not ours, and a runner reads it on every outage.
MAX_BYTES = 4096


class UrlFileError(Exception):
    """The URL file cannot be read, holds no server URL, or cannot be written (one line)."""


def check_server_url(url: str) -> str | None:
    """Why ``url`` is no server API URL (None: it is one)."""
    stripped = url.rstrip("/")
    if not stripped.startswith(("http://", "https://")):
        return f"expected http://HOST:PORT{API_PATH}"
    rest = stripped.split("://", 1)[1]
    host = rest.split("/", 1)[0]
    if not host or any(c.isspace() for c in stripped):
        return f"expected http://HOST:PORT{API_PATH}"
    if not stripped.endswith(API_PATH) or "/" + rest.split("/", 1)[-1] != API_PATH:
        return f"expected it to end with {API_PATH} (http://HOST:PORT{API_PATH})"
    return None


def read_url_file(path: str | os.PathLike[str], *, name: str = ENV_VAR) -> str:
    """The server URL in ``path``. Raises :class:`UrlFileError` naming ``name`` (where the
    path came from), the path and what is wrong."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise UrlFileError(f"{name} {path}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise UrlFileError(f"{name} {path}: holds no server URL (larger than {MAX_BYTES} "
                           "bytes; a URL file is one line written by `serve --url-file`)")
    text = data.decode("utf-8", "replace").strip()
    if not text:
        raise UrlFileError(f"{name} {path}: is empty (is the server started with "
                           "`serve --url-file` on the same path?)")
    why = None if "\n" in text else check_server_url(text)
    if "\n" in text or why is not None:
        shown = text.splitlines()[0][:80]
        raise UrlFileError(f"{name} {path}: holds no server URL ({why or 'more than one line'}"
                           f"; it starts {shown!r})")
    return text.rstrip("/")


def check_url_file_target(path: Path) -> None:
    """Refuse, before a server starts, a URL file it could not write: its folder missing or
    not writable, or the path a folder."""
    if path.is_dir():
        raise UrlFileError(f"--url-file {path}: is a folder")
    folder = path.parent
    if not folder.is_dir():
        raise UrlFileError(f"--url-file {path}: no folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UrlFileError(f"--url-file {path}: cannot write in {folder}")


def write_whole(path: Path, text: str, mode: int = 0o644) -> None:
    """``text`` into ``path``, whole or not at all: written to a new temporary file in the
    same folder (created with ``mode``, never an older file's), synced, and renamed over
    ``path`` (a rename within a folder is atomic, also on NFS, so a reader meanwhile sees the
    old text or the new one). Raises OSError."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)  # a crashed writer's: its mode may be another
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def write_url_file(path: Path, url: str) -> None:
    """``url`` into ``path``, whole or not at all (:func:`write_whole`): a runner reading it
    meanwhile sees the old URL or the new one."""
    try:
        write_whole(path, f"{url}\n")
    except OSError as exc:
        raise UrlFileError(f"--url-file {path}: cannot write it: {exc.strerror or exc}") \
            from None


def env_url_source(environ: Mapping[str, str] = os.environ) -> Callable[[], str] | None:
    """A reader of the URL file ``TORC_API_URL_FILE`` names (a client's ``url_source``), or
    None when it names none."""
    path = environ.get(ENV_VAR)
    return partial(read_url_file, path) if path else None
