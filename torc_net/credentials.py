"""Credentials a process did not type: the environment, or a file only its owner can read.

Why a file: the runners ``submit`` starts on compute nodes need the submitting user's password,
and an sbatch script is the wrong place for it (it is kept in the output directory, shown by
``scontrol show job``-like tools, mailed around with logs). The script names a credentials file
instead (``TORC_CREDENTIALS_FILE``): one line ``user:password``, mode 0600, written with
``O_EXCL`` and renamed into place so no one ever reads a half-written or too-open file. A file
that others can read is refused with the ``chmod`` that fixes it: a password there is no secret.

Standard library only: :mod:`torc_trio.jobapi` (a function job's client) imports this.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from .url_file import write_whole

CREDENTIALS_FILE_ENV = "TORC_CREDENTIALS_FILE"


class CredentialsError(ValueError):
    """A credentials file that cannot be used; the message names it and says why."""


def read_credentials_file(path: str | os.PathLike[str]) -> tuple[str, str]:
    """``(user, password)`` from ``path``; refused when others may read it."""
    where = str(path)
    try:
        fd = os.open(where, os.O_RDONLY)
    except OSError as exc:
        raise CredentialsError(f"credentials file {where}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CredentialsError(f"credentials file {where}: not a regular file")
        if st.st_mode & 0o077:
            raise CredentialsError(
                f"credentials file {where} may be read by others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}): chmod 600 {where}")
        raw = os.read(fd, 64 * 1024)
    finally:
        os.close(fd)
    try:
        line = raw.decode("utf-8").splitlines()[0] if raw.strip() else ""
    except UnicodeDecodeError:
        raise CredentialsError(f"credentials file {where}: not UTF-8 text") from None
    user, sep, password = line.partition(":")
    if not sep or not user:
        raise CredentialsError(f"credentials file {where}: expected one line user:password")
    return user, password


def write_credentials_file(path: str | os.PathLike[str], user: str, password: str) -> Path:
    """Write ``user:password`` to ``path`` with mode 0600 (replacing it whole)."""
    if ":" in user or "\n" in user or "\n" in password:
        raise CredentialsError(f"user {user!r}: a credentials file cannot hold a user name "
                               "with ':' or a line break")
    target = Path(path)
    write_whole(target, f"{user}:{password}\n", 0o600)
    return target


def env_credentials(env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """``TORC_USERNAME``/``TORC_PASSWORD``, else the file ``TORC_CREDENTIALS_FILE`` names, else
    None."""
    env = os.environ if env is None else env
    user = env.get("TORC_USERNAME")
    if user and "TORC_PASSWORD" in env:
        return user, env["TORC_PASSWORD"]
    path = env.get(CREDENTIALS_FILE_ENV)
    if path:
        found = read_credentials_file(path)
        if user and found[0] != user:
            raise CredentialsError(f"credentials file {path} is {found[0]!r}'s, but "
                                   f"TORC_USERNAME is {user!r}")
        return found
    if user:
        return user, ""
    return None
