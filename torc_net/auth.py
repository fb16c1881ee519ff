"""HTTP Basic authentication against an htpasswd file of bcrypt hashes.

Theory of operation
-------------------
Modes: no file -> open (credentials, if sent, are ignored; everyone sees everything). A file ->
credentials are checked whenever they are sent (bad ones are a 401); requests without any
are anonymous unless ``require_auth`` is set, in which case every request needs them. What an
anonymous or a named principal may see in each mode is :meth:`Principal.may_see`'s, to which
the access groups a workflow is shared with add their members (:meth:`Service.may_see
<torc_net.service.Service.may_see>`, :mod:`torc_net.access`).

Cost. bcrypt is deliberately slow (about 0.25 s of CPU at the default cost 12) and runners send
credentials on every request, so:

* A verified ``user:password`` is cached for ``cache_ttl`` seconds, keyed by its sha256 (the
  plain password is never kept). A cached credential is answered without bcrypt, and is never
  refused because someone else is failing.
* Checks run only on ``limiter``, which the server dedicates to them (one thread), never on the
  threads that commit to the database: wrong passwords sent in a loop had made an authenticated
  runner's heartbeat 200 times slower. Now they can only delay other password checks.
* Concurrent checks of the same credential share one check (a runner opening several
  connections at once is one login, not a burst).
* Failed logins are counted per (user, address) and per address over a sliding window of
  ``FAILURE_WINDOW_S``. Past the limit, attempts from there are answered 429 with
  ``Retry-After`` at once, without bcrypt. An attempt takes its place in the window *before*
  bcrypt runs (and gives it back if it succeeds), so concurrent attempts cannot overrun the
  limit. Users are never locked out everywhere: that would let anyone lock alice's runners out
  by failing as alice. The tables are bounded: entries leave when their window has passed, and
  each table holds at most ``MAX_TRACKED`` keys (the least recently failing go first). An
  ``address`` of None (a caller that does not know it) counts as one address shared by all such
  callers.

Probing. An unknown user is checked against a dummy hash of the cost most of the file's hashes
have (made once, lazily, on the password thread), so it costs what a wrong password costs and
gets the same answer: the time to answer does not tell which user names exist.

Revocation. The file is stat'ed (device, inode, size, mtime, ctime) at most every
``FILE_CHECK_INTERVAL_S`` on any authenticate call, cached ones included; a change reloads it
and drops the cached credentials whose user is gone or has a new hash, so a removed user or a
changed password is refused within a second, and ``torc-trio htpasswd add`` needs no restart.
A check that finishes after such a change is judged against the new file. A file that cannot
be read (gone, not UTF-8, a folder) keeps the users it had, with one warning until it reads
again.

bcrypt reads at most 72 bytes of a password and refuses longer ones: such a password is a 401
that says so, not a 500.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import logging
import math
import os
import re
import secrets
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import trio

from .htpasswd_cli import DEFAULT_ROUNDS, password_problem
from .state import Principal
from .validate import ApiError

log = logging.getLogger("torc_net.auth")

DEFAULT_CACHE_TTL = 60.0
#: Verified credentials kept at most (the cache is emptied when it would grow past this).
MAX_CACHED = 10_000
#: Addresses remembered per cached credential (those it keeps working from while their
#: address is locked out by someone else's failures).
MAX_ADDRESSES_PER_CREDENTIAL = 256

# Failed-login limits. A person who mistypes gets a few tries and, at worst, waits half a
# minute; a guesser gets 10 tries a minute per user name and address (hopeless against any
# real password, and at most 20 bcrypt checks per 30 s, ~5 s of one thread, per address).
# Per address, more: a login node is shared by many users, some of whom mistype.
FAILURE_WINDOW_S = 30.0
MAX_FAILURES_PER_USER_ADDRESS = 5
MAX_FAILURES_PER_ADDRESS = 20
#: Keys per failure table; memory stays bounded whatever names and addresses come in.
MAX_TRACKED = 10_000
#: A user name is remembered by at most this many characters (headers may be 64 KiB).
MAX_NAME_CHARS = 128

#: How often the file is stat'ed for changes: revocation within a second, for one cheap
#: syscall at most four times a second.
FILE_CHECK_INTERVAL_S = 0.25

_REALM = 'Basic realm="torc"'
# A bcrypt hash bcrypt can check: variant, cost 04..31, 22 characters of salt + 31 of hash.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


def read_htpasswd(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """``user -> bcrypt hash`` from an htpasswd file. Lines without a bcrypt hash (other
    schemes) are skipped; a malformed bcrypt hash is skipped with a warning (checking against
    it would fail on every request)."""
    users: dict[str, bytes] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        user, _, hashed = line.partition(":")
        if not hashed.startswith(("$2y$", "$2b$", "$2a$")):
            continue
        if _BCRYPT_HASH.fullmatch(hashed):
            users[user] = hashed.encode("ascii")
        else:
            log.warning("%s line %d: malformed bcrypt hash for %r; line skipped",
                        path, number, user)
    return users


def bcrypt_cost(hashed: bytes) -> int:
    """The cost (log2 rounds) of a hash :func:`read_htpasswd` accepted."""
    return int(hashed[4:6])


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


def _wrong(user: str) -> ApiError:
    # One answer for both: it must not tell an unknown user from a wrong password.
    return unauthorized(f"unknown user or wrong password for {user[:MAX_NAME_CHARS]!r}")


class _Failures:
    """Times of recent failed logins per key, over a sliding window of FAILURE_WINDOW_S.

    Bounded: at most ``limit`` times per key (older ones no longer matter), at most
    MAX_TRACKED keys (the least recently failing are forgotten first; dict order is kept as
    that order), and keys whose window has passed are swept out once per window.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._times: dict[Hashable, collections.deque[float]] = {}
        self._swept = -math.inf

    def __len__(self) -> int:
        return len(self._times)

    def retry_in(self, key: Hashable, now: float) -> float | None:
        """Seconds until ``key`` may try again; None if it may now."""
        times = self._times.get(key)
        if times is None:
            return None
        while times and times[0] <= now - FAILURE_WINDOW_S:
            times.popleft()
        if not times:
            del self._times[key]
            return None
        if len(times) < self.limit:
            return None
        return times[0] + FAILURE_WINDOW_S - now

    def add(self, key: Hashable, now: float) -> int:
        """Count an attempt at ``now``; returns how many ``key`` has in the window."""
        self._sweep(now)
        times = self._times.pop(key, None)
        if times is None:
            times = collections.deque(maxlen=self.limit)
            while len(self._times) >= MAX_TRACKED:
                del self._times[next(iter(self._times))]
        times.append(now)
        self._times[key] = times
        return len(times)

    def give_back(self, key: Hashable, stamp: float) -> None:
        """Uncount the attempt :meth:`add` counted at ``stamp`` (it succeeded)."""
        times = self._times.get(key)
        if times is None:
            return
        try:
            times.remove(stamp)
        except ValueError:
            pass  # already out of the window
        if not times:
            del self._times[key]

    def forget(self, key: Hashable) -> None:
        self._times.pop(key, None)

    def _sweep(self, now: float) -> None:
        if now - self._swept < FAILURE_WINDOW_S:
            return
        self._swept = now
        cutoff = now - FAILURE_WINDOW_S
        for key in [k for k, times in self._times.items() if not times or times[-1] <= cutoff]:
            del self._times[key]


@dataclass(slots=True)
class _Cached:
    """A verified credential: whose, until when, the hash it matched, and where it was used."""

    user: str
    expires: float
    hashed: bytes
    addresses: set[str | None] = field(default_factory=set)

    def seen_from(self, address: str | None) -> None:
        if len(self.addresses) < MAX_ADDRESSES_PER_CREDENTIAL:
            self.addresses.add(address)


@dataclass(slots=True)
class _Flight:
    """A check in progress that identical concurrent credentials wait for."""

    done: trio.Event = field(default_factory=trio.Event)
    ok: bool | None = None  # None: the checking task was cancelled or failed


class Authenticator:
    """Turns an ``Authorization`` header (and the client's address) into a :class:`Principal`,
    or a 401 (bad credentials) or a 429 (too many failed logins from there).

    ``limiter`` is the limiter dedicated to password checks: give it its own thread(s), not
    the database's. ``clock`` (seconds, monotonic) times the cache, the failure window and the
    file checks; tests pass a clock they move by hand.
    """

    def __init__(
        self,
        auth_file: str | None,
        *,
        require_auth: bool = False,
        admin_users: Iterable[str] = (),
        limiter: trio.CapacityLimiter,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if require_auth and not auth_file:
            raise ValueError("--require-auth needs --auth-file")
        self.auth_file = auth_file
        self.require_auth = require_auth
        self.admins = frozenset(admin_users)
        self.limiter = limiter
        self.cache_ttl = cache_ttl
        self.clock = clock
        #: bcrypt.checkpw calls so far (dummy checks of unknown users included)
        self.password_checks = 0
        #: the cost unknown users are checked at: that of most of the file's hashes
        self.dummy_cost = DEFAULT_ROUNDS
        self._dummy: bytes | None = None
        self._users: dict[str, bytes] = {}
        self._cache: dict[bytes, _Cached] = {}  # keyed by sha256(user:password)
        self._inflight: dict[bytes, _Flight] = {}
        self._pair_failures = _Failures(MAX_FAILURES_PER_USER_ADDRESS)
        self._address_failures = _Failures(MAX_FAILURES_PER_ADDRESS)
        self._signature: tuple[int, ...] | None = None
        self._next_file_check = -math.inf
        self._file_warned = False
        if auth_file:
            # At start a file that cannot be read is an error (a typo in --auth-file).
            self._signature = self._stat()
            self._load(read_htpasswd(auth_file))

    @property
    def enabled(self) -> bool:
        return self.auth_file is not None

    @property
    def dummy_hash(self) -> bytes | None:
        """The hash unknown users are checked against (made at the first unknown user)."""
        return self._dummy

    @property
    def tracked_failures(self) -> int:
        """Keys in the failure tables ((user, address) and address): bounded memory."""
        return len(self._pair_failures) + len(self._address_failures)

    # -- the file ----------------------------------------------------------------------------

    def _stat(self) -> tuple[int, ...]:
        assert self.auth_file is not None
        st = os.stat(self.auth_file)
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _load(self, users: dict[str, bytes]) -> None:
        """Use ``users``: cached credentials stay only while their user keeps the same hash."""
        self._users = users
        self._cache = {key: entry for key, entry in self._cache.items()
                       if users.get(entry.user) == entry.hashed}
        costs = collections.Counter(bcrypt_cost(h) for h in users.values())
        cost = costs.most_common(1)[0][0] if costs else DEFAULT_ROUNDS
        if cost != self.dummy_cost:
            self.dummy_cost = cost
            self._dummy = None

    def _check_file(self) -> None:
        """Reload the file if it changed; at most every FILE_CHECK_INTERVAL_S."""
        assert self.auth_file is not None
        now = self.clock()
        if now < self._next_file_check:
            return
        self._next_file_check = now + FILE_CHECK_INTERVAL_S
        try:
            signature: tuple[int, ...] | None = self._stat()
            if signature == self._signature:
                return
            self._signature = signature  # read once per change, not on every check
            users = read_htpasswd(self.auth_file)
        except (OSError, UnicodeDecodeError) as exc:
            if not self._file_warned:
                self._file_warned = True
                log.warning("cannot read %s (%s); keeping its %d users until it can be read",
                            self.auth_file, exc, len(self._users))
            if isinstance(exc, FileNotFoundError):
                self._signature = None
            return
        self._file_warned = False
        self._load(users)

    # -- requests ----------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """How the server decides who sees what (:class:`~torc_net.state.Principal`)."""
        return "required" if self.require_auth else "optional" if self.enabled else "open"

    def _principal(self, user: str) -> Principal:
        return Principal(user, user in self.admins, self.mode)

    async def authenticate(self, header: str | None, address: str | None = None) -> Principal:
        """Who sent ``header`` (an ``Authorization`` value, or None) from ``address`` (the
        client's IP, or None when unknown).

        Raises :class:`ApiError` 401 (missing when required, malformed, unknown user or wrong
        password, password over 72 bytes) or 429 (too many failed logins for this user from
        this address, or from this address; ``Retry-After`` says when to try again).
        """
        if not self.enabled:
            return Principal()
        self._check_file()
        if not header:
            if self.require_auth:
                raise unauthorized("credentials required")
            return Principal(mode=self.mode)
        user, password = parse_basic(header)
        problem = password_problem(password)
        if problem:
            raise unauthorized(problem)
        key = hashlib.sha256(f"{user}:{password}".encode()).digest()
        while True:
            now = self.clock()
            cached = self._cache.get(key)
            if cached is not None and cached.expires > now:
                # From a locked-out address the cache answers only for addresses that used
                # this credential before: otherwise it would tell a guesser there, for free
                # and at any rate, which guess is right.
                if address in cached.addresses or self._limits(user, address, now) is None:
                    cached.seen_from(address)
                    return self._principal(user)
            self._refuse_if_limited(user, address, now)
            flight = self._inflight.get(key)
            if flight is None:
                break
            await flight.done.wait()
            if flight.ok is True:
                return self._principal(user)
            if flight.ok is False:
                raise _wrong(user)
            # The checking task went away without an answer: check ourselves.
        return await self._check(key, user, password, address)

    def _limits(self, user: str, address: str | None,
                now: float) -> tuple[float | None, float | None] | None:
        """None if ``user`` may try from ``address`` now, else the seconds until the
        (user, address) and the address limits let it (None for a limit not reached)."""
        pair_wait = self._pair_failures.retry_in((user[:MAX_NAME_CHARS], address), now)
        address_wait = self._address_failures.retry_in(address, now)
        if pair_wait is None and address_wait is None:
            return None
        return pair_wait, address_wait

    def _refuse_if_limited(self, user: str, address: str | None, now: float) -> None:
        """The 429 for too many failed logins, if there were."""
        limits = self._limits(user, address, now)
        if limits is None:
            return
        pair_wait = limits[0]
        wait = max(w for w in limits if w is not None)
        seconds = max(1, math.ceil(wait))
        where = address if address is not None else "an unknown address"
        who = f" for {user[:MAX_NAME_CHARS]!r}" if pair_wait is not None else ""
        raise ApiError(429, "too many requests",
                       f"too many failed logins{who} from {where}; retry in {seconds} s",
                       {"Retry-After": str(seconds)})

    async def _check(self, key: bytes, user: str, password: str,
                     address: str | None) -> Principal:
        """One bcrypt check, counted in the failure windows before it runs."""
        now = self.clock()
        self._refuse_if_limited(user, address, now)
        pair = (user[:MAX_NAME_CHARS], address)
        pair_count = self._pair_failures.add(pair, now)
        address_count = self._address_failures.add(address, now)
        flight = _Flight()
        self._inflight[key] = flight
        try:
            hashed = self._users.get(user)
            ok = await self._verify(password, hashed)
            # Judged against the file as it is now: a user removed (or given a new password)
            # while this check ran is refused, and nothing stale goes into the cache.
            ok = ok and hashed is not None and self._users.get(user) == hashed
            flight.ok = ok
        finally:
            del self._inflight[key]
            flight.done.set()
        if not ok:
            where = address if address is not None else "an unknown address"
            if pair_count == MAX_FAILURES_PER_USER_ADDRESS:
                log.warning("%d failed logins for %r from %s within %g s; refusing more",
                            pair_count, user[:MAX_NAME_CHARS], where, FAILURE_WINDOW_S)
            elif address_count == MAX_FAILURES_PER_ADDRESS:
                log.warning("%d failed logins from %s within %g s; refusing more",
                            address_count, where, FAILURE_WINDOW_S)
            raise _wrong(user)
        self._pair_failures.forget(pair)
        self._address_failures.give_back(address, now)
        assert hashed is not None
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        entry = _Cached(user, self.clock() + self.cache_ttl, hashed)
        entry.seen_from(address)
        self._cache[key] = entry
        return self._principal(user)

    async def _verify(self, password: str, hashed: bytes | None) -> bool:
        """bcrypt on the password limiter; an unknown user (``hashed`` None) is checked against
        the dummy hash, so it costs the same, and is always False."""
        dummy = self._dummy
        cost = self.dummy_cost

        def work() -> tuple[bool, bytes | None]:
            made = None
            target = hashed
            if target is None:
                if dummy is None:
                    made = bcrypt.hashpw(secrets.token_urlsafe(24).encode(),
                                         bcrypt.gensalt(rounds=cost))
                target = dummy or made
                assert target is not None
            return bcrypt.checkpw(password.encode("utf-8"), target), made

        ok, made = await trio.to_thread.run_sync(work, limiter=self.limiter)
        self.password_checks += 1
        if made is not None and cost == self.dummy_cost:
            self._dummy = made
        return ok and hashed is not None
