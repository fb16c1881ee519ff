"""HTTP Basic authentication against an htpasswd file of bcrypt hashes.

Theory of operation
-------------------
Modes: no file -> open (credentials, if sent, are ignored; everyone sees everything). A file ->
credentials are checked whenever they are sent (bad ones are a 401); requests without any
are anonymous unless ``require_auth`` is set, in which case every request needs them.

bcrypt is deliberately slow (tens of milliseconds), and runners send credentials on every
request, so a verified ``user:password`` is cached for ``cache_ttl`` seconds, keyed by its
sha256 (the plain password is never kept). Verification runs in the thread pool so the trio
thread keeps serving. The file is re-read when its mtime changes, so ``torc-trio htpasswd add``
takes effect without a restart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

import bcrypt
import trio

from .state import Principal
from .validate import ApiError

DEFAULT_CACHE_TTL = 60.0
_REALM = 'Basic realm="torc"'


def read_htpasswd(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """``user -> bcrypt hash`` from an htpasswd file; lines without a bcrypt hash are skipped."""
    users: dict[str, bytes] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        user, _, hashed = line.partition(":")
        if hashed.startswith(("$2y$", "$2b$", "$2a$")):
            users[user] = hashed.encode("ascii")
    return users


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, "unauthorized", detail, {"WWW-Authenticate": _REALM})


def parse_basic(header: str) -> tuple[str, str]:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        raise unauthorized("expected HTTP Basic credentials")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise unauthorized("malformed Basic credentials") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise unauthorized("malformed Basic credentials")
    return user, password


class Authenticator:
    """Turns an ``Authorization`` header into a :class:`Principal` (or a 401)."""

    def __init__(
        self,
        auth_file: str | None,
        *,
        require_auth: bool = False,
        admin_users: Iterable[str] = (),
        limiter: trio.CapacityLimiter,
        cache_ttl: float = DEFAULT_CACHE_TTL,
    ) -> None:
        if require_auth and not auth_file:
            raise ValueError("--require-auth needs --auth-file")
        self.auth_file = auth_file
        self.require_auth = require_auth
        self.admins = frozenset(admin_users)
        self.limiter = limiter
        self.cache_ttl = cache_ttl
        self._users: dict[str, bytes] = {}
        self._mtime: float | None = None
        self._cache: dict[bytes, tuple[str, float]] = {}
        if auth_file:
            self._reload()

    def _reload(self) -> None:
        assert self.auth_file is not None
        mtime = os.stat(self.auth_file).st_mtime
        if mtime != self._mtime:
            self._users = read_htpasswd(self.auth_file)
            self._mtime = mtime
            self._cache.clear()

    @property
    def enabled(self) -> bool:
        return self.auth_file is not None

    async def authenticate(self, header: str | None) -> Principal:
        if not self.enabled:
            return Principal()
        if not header:
            if self.require_auth:
                raise unauthorized("credentials required")
            return Principal()
        user, password = parse_basic(header)
        key = hashlib.sha256(f"{user}:{password}".encode()).digest()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            return Principal(cached[0], True, cached[0] in self.admins)
        try:
            self._reload()
        except OSError:
            pass  # keep the users we had
        hashed = self._users.get(user)
        if hashed is None:
            raise unauthorized(f"unknown user or wrong password for {user!r}")
        ok = await trio.to_thread.run_sync(
            bcrypt.checkpw, password.encode("utf-8"), hashed, limiter=self.limiter
        )
        if not ok:
            raise unauthorized(f"unknown user or wrong password for {user!r}")
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (user, now + self.cache_ttl)
        return Principal(user, True, user in self.admins)
