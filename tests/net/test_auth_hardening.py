"""Authentication under attack: rate-limited failures, no user probing, prompt revocation,
bcrypt's 72-byte limit.

Most tests drive :class:`Authenticator` directly with a hand-moved clock (the rate-limit window
and the file-change check read it), so they neither sleep nor depend on timing. The server
tests use a real in-process server and wait for conditions, never for fixed times.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import bcrypt
import pytest
import trio
import trio.testing
from conftest import Api

from torc_net import auth as auth_module
from torc_net.auth import Authenticator
from torc_net.htpasswd_cli import add_user, remove_user
from torc_net.http import basic_auth_header
from torc_net.server import Running
from torc_net.validate import ApiError

StartFn = Callable[..., Awaitable[Running]]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def header(user: str, password: str) -> str:
    return basic_auth_header(user, password).decode()


def make_file(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    add_user(path, "alice", "apw", rounds=4)
    add_user(path, "bob", "bpw", rounds=4)
    return path


def make_auth(path: Path, clock: Clock, limiter: trio.CapacityLimiter | None = None,
              **kw: object) -> Authenticator:
    return Authenticator(str(path), limiter=limiter or trio.CapacityLimiter(1), clock=clock,
                         **kw)  # type: ignore[arg-type]


async def refused(auth: Authenticator, user: str, password: str,
                  address: str | None) -> ApiError:
    with pytest.raises(ApiError) as info:
        await auth.authenticate(header(user, password), address)
    return info.value


# --------------------------------------------------------------------------------------------
# 1. failed logins are rate-limited per (user, address) and per address, without bcrypt


async def test_failures_locked_out_per_user_and_address(tmp_path: Path) -> None:
    clock = Clock()
    auth = make_auth(make_file(tmp_path), clock)
    limit = auth_module.MAX_FAILURES_PER_USER_ADDRESS
    for _ in range(limit):
        assert (await refused(auth, "alice", "wrong", "10.0.0.1")).status == 401
    assert auth.password_checks == limit
    exc = await refused(auth, "alice", "wrong", "10.0.0.1")
    window = int(auth_module.FAILURE_WINDOW_S)
    assert exc.status == 429 and exc.error == "too many requests"
    assert exc.headers == {"Retry-After": str(window)}
    assert exc.detail == (f"too many failed logins for 'alice' from 10.0.0.1; "
                          f"retry in {window} s")
    # Even the right password is refused from there, and costs nothing.
    assert (await refused(auth, "alice", "apw", "10.0.0.1")).status == 429
    assert auth.password_checks == limit
    # Alice elsewhere, and bob from the same address, are not locked out.
    assert (await auth.authenticate(header("alice", "apw"), "10.0.0.2")).name == "alice"
    assert (await auth.authenticate(header("bob", "bpw"), "10.0.0.1")).name == "bob"
    clock.now += 3
    exc = await refused(auth, "alice", "apw", "10.0.0.1")
    assert exc.headers["Retry-After"] == str(window - 3)
    assert exc.detail.endswith(f"retry in {window - 3} s")  # type: ignore[union-attr]
    clock.now += window
    assert (await auth.authenticate(header("alice", "apw"), "10.0.0.1")).name == "alice"


async def test_failures_locked_out_per_address(tmp_path: Path) -> None:
    clock = Clock()
    auth = make_auth(make_file(tmp_path), clock)
    limit = auth_module.MAX_FAILURES_PER_ADDRESS
    assert limit > auth_module.MAX_FAILURES_PER_USER_ADDRESS
    for i in range(limit):
        assert (await refused(auth, f"user{i}", "x", "10.0.0.9")).status == 401
    checks = auth.password_checks
    exc = await refused(auth, "alice", "apw", "10.0.0.9")
    assert exc.status == 429 and exc.headers["Retry-After"] == str(
        int(auth_module.FAILURE_WINDOW_S))
    assert str(exc.detail).startswith("too many failed logins from 10.0.0.9; retry in ")
    assert auth.password_checks == checks
    assert (await auth.authenticate(header("alice", "apw"), "10.0.0.8")).name == "alice"


async def test_cached_credentials_never_refused_for_others_failures(tmp_path: Path) -> None:
    clock = Clock()
    auth = make_auth(make_file(tmp_path), clock)
    for address in ("10.0.0.1", None):
        assert (await auth.authenticate(header("alice", "apw"), address)).name == "alice"
    for address in ("10.0.0.1", None):
        for i in range(auth_module.MAX_FAILURES_PER_ADDRESS + 5):
            await refused(auth, "alice" if i % 2 else f"u{i}", "wrong", address)
    checks = auth.password_checks
    for address in ("10.0.0.1", None, "10.0.0.3"):
        assert (await auth.authenticate(header("alice", "apw"), address)).name == "alice"
    assert auth.password_checks == checks


async def test_cache_is_no_oracle_for_a_locked_out_address(tmp_path: Path) -> None:
    """A guesser locked out elsewhere must not learn alice's password from the cache: a
    correct guess is refused there like a wrong one, without a check."""
    auth = make_auth(make_file(tmp_path), Clock())
    await auth.authenticate(header("alice", "apw"), "10.0.0.1")  # her runner: cached
    for i in range(auth_module.MAX_FAILURES_PER_USER_ADDRESS):
        await refused(auth, "alice", f"guess{i}", "10.6.6.6")
    checks = auth.password_checks
    assert (await refused(auth, "alice", "guess", "10.6.6.6")).status == 429
    assert (await refused(auth, "alice", "apw", "10.6.6.6")).status == 429
    assert auth.password_checks == checks
    assert (await auth.authenticate(header("alice", "apw"), "10.0.0.1")).name == "alice"


async def test_concurrent_failures_do_not_overrun_the_limit(tmp_path: Path) -> None:
    auth = make_auth(make_file(tmp_path), Clock())
    statuses: list[int] = []

    async def attempt(i: int) -> None:
        statuses.append((await refused(auth, "alice", f"wrong{i}", "10.0.0.1")).status)

    async with trio.open_nursery() as nursery:
        for i in range(3 * auth_module.MAX_FAILURES_PER_USER_ADDRESS):
            nursery.start_soon(attempt, i)
    limit = auth_module.MAX_FAILURES_PER_USER_ADDRESS
    assert auth.password_checks == limit
    assert sorted(statuses) == [401] * limit + [429] * (2 * limit)


async def test_concurrent_first_logins_share_one_check(tmp_path: Path) -> None:
    """A runner opening many connections at once is one login, not a burst of failures."""
    auth = make_auth(make_file(tmp_path), Clock())
    users: list[str | None] = []

    async def attempt() -> None:
        users.append((await auth.authenticate(header("alice", "apw"), "10.0.0.1")).name)

    async with trio.open_nursery() as nursery:
        for _ in range(4 * auth_module.MAX_FAILURES_PER_USER_ADDRESS):
            nursery.start_soon(attempt)
    assert users == ["alice"] * (4 * auth_module.MAX_FAILURES_PER_USER_ADDRESS)
    assert auth.password_checks == 1


async def test_password_checks_run_on_the_given_limiter(tmp_path: Path) -> None:
    limiter = trio.CapacityLimiter(1)
    auth = make_auth(make_file(tmp_path), Clock(), limiter)
    done = trio.Event()

    async def login() -> None:
        await auth.authenticate(header("alice", "apw"), "10.0.0.1")
        done.set()

    async with trio.open_nursery() as nursery:
        async with limiter:  # someone else holds the only password thread
            nursery.start_soon(login)
            await trio.testing.wait_all_tasks_blocked()
            assert limiter.statistics().tasks_waiting == 1
            assert auth.password_checks == 0 and not done.is_set()
        await done.wait()
    assert auth.password_checks == 1


async def test_rate_limit_memory_is_bounded(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_module, "MAX_TRACKED", 16)
    clock = Clock()
    auth = make_auth(make_file(tmp_path), clock)
    for i in range(60):
        await refused(auth, f"user{i}", "x", f"10.1.0.{i}")
        assert auth.tracked_failures <= 2 * 16
    clock.now += auth_module.FAILURE_WINDOW_S + 1
    await refused(auth, "zed", "x", "10.2.0.1")
    assert auth.tracked_failures == 2  # old entries dropped: one per (user, address), address


async def test_success_forgets_that_pair_failures(tmp_path: Path) -> None:
    auth = make_auth(make_file(tmp_path), Clock())
    for _ in range(auth_module.MAX_FAILURES_PER_USER_ADDRESS - 1):
        await refused(auth, "alice", "wrong", "10.0.0.1")
    await auth.authenticate(header("alice", "apw"), "10.0.0.1")
    for _ in range(auth_module.MAX_FAILURES_PER_USER_ADDRESS):
        assert (await refused(auth, "alice", "wrong2", "10.0.0.1")).status == 401


async def test_server_answers_429_with_retry_after(start_inprocess: StartFn,
                                                   tmp_path: Path) -> None:
    server = await start_inprocess(auth_file=str(make_file(tmp_path)))
    wrong = Api(server.port, auth=("alice", "nope"))
    for _ in range(auth_module.MAX_FAILURES_PER_USER_ADDRESS):
        assert (await wrong.get("/ping")).status == 401
    reply = await wrong.get("/ping")
    assert reply.status == 429 and reply.body["error"] == "too many requests"
    assert int(reply.headers["retry-after"]) > 0
    assert reply.body["detail"].startswith("too many failed logins for 'alice' from ")
    bob = Api(server.port, auth=("bob", "bpw"))
    assert (await bob.get("/ping")).status == 200
    await wrong.aclose()
    await bob.aclose()


# --------------------------------------------------------------------------------------------
# 2. an unknown user costs what a wrong password costs


async def test_unknown_user_costs_one_check_like_a_wrong_password(tmp_path: Path) -> None:
    path = make_file(tmp_path)
    add_user(path, "carol", "cpw", rounds=5)
    auth = make_auth(path, Clock())
    assert auth.dummy_cost == 4  # the file's most common cost
    unknown = await refused(auth, "mallory", "x", "10.0.0.1")
    assert auth.password_checks == 1
    assert auth.dummy_hash is not None and auth.dummy_hash.startswith(b"$2b$04$")
    wrong = await refused(auth, "alice", "x", "10.0.0.1")
    assert auth.password_checks == 2
    assert (unknown.status, unknown.error) == (wrong.status, wrong.error) == (401,
                                                                             "unauthorized")
    assert unknown.detail == "unknown user or wrong password for 'mallory'"
    assert wrong.detail == "unknown user or wrong password for 'alice'"


# --------------------------------------------------------------------------------------------
# 3. file changes (a removed user, a new password) take effect within a second


async def test_file_change_clears_cached_credentials(tmp_path: Path) -> None:
    clock = Clock()
    path = make_file(tmp_path)
    auth = make_auth(path, clock)
    assert (await auth.authenticate(header("alice", "apw"), "10.0.0.1")).name == "alice"
    assert (await auth.authenticate(header("bob", "bpw"), "10.0.0.1")).name == "bob"
    remove_user(path, "alice")
    add_user(path, "bob", "new", rounds=4)
    clock.now += auth_module.FILE_CHECK_INTERVAL_S
    assert (await refused(auth, "alice", "apw", "10.0.0.1")).status == 401
    assert (await refused(auth, "bob", "bpw", "10.0.0.1")).status == 401
    assert (await auth.authenticate(header("bob", "new"), "10.0.0.1")).name == "bob"


async def wait_refused(client: Api) -> None:
    """Until the server refuses ``client`` (a condition in another component: polled)."""
    with trio.fail_after(5):
        while (await client.get("/ping")).status != 401:  # noqa: ASYNC110 -- no event to await
            await trio.sleep(0.05)


async def test_server_refuses_removed_user_promptly(start_inprocess: StartFn,
                                                    tmp_path: Path) -> None:
    path = make_file(tmp_path)
    server = await start_inprocess(auth_file=str(path))
    alice = Api(server.port, auth=("alice", "apw"))
    bob = Api(server.port, auth=("bob", "bpw"))
    for _ in range(2):  # the second answer comes from the cache
        assert (await alice.get("/ping")).status == 200
        assert (await bob.get("/ping")).status == 200
    remove_user(path, "alice")
    await wait_refused(alice)
    add_user(path, "bob", "changed", rounds=4)
    await wait_refused(bob)
    bob2 = Api(server.port, auth=("bob", "changed"))
    assert (await bob2.get("/ping")).status == 200
    for client in (alice, bob, bob2):
        await client.aclose()


async def test_unreadable_file_keeps_users_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    path = make_file(tmp_path)
    auth = make_auth(path, clock)
    good = path.read_bytes()
    caplog.set_level(logging.WARNING, logger="torc_net.auth")
    for broken in ("missing", "not utf-8", "a folder"):
        path.unlink()
        if broken == "not utf-8":
            path.write_bytes(b"alice:\xff\xfe\n")
        elif broken == "a folder":
            path.mkdir()
        caplog.clear()
        for _ in range(3):
            clock.now += auth_module.FILE_CHECK_INTERVAL_S
            assert (await auth.authenticate(header("alice", "apw"), "10.0.0.1")).name == "alice"
            assert (await auth.authenticate(header("bob", "bpw"), "10.0.0.1")).name == "bob"
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, (broken, [r.getMessage() for r in warnings])
        assert str(path) in warnings[0].getMessage()
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink(missing_ok=True)
        path.write_bytes(good)  # readable again: the next failure warns again
        clock.now += auth_module.FILE_CHECK_INTERVAL_S
        assert (await auth.authenticate(header("bob", "bpw"), "10.0.0.1")).name == "bob"


# --------------------------------------------------------------------------------------------
# 4. bcrypt reads at most 72 bytes of a password


async def test_password_over_72_bytes_is_a_401(tmp_path: Path) -> None:
    path = make_file(tmp_path)
    at_limit = "é" * 36  # 72 bytes in UTF-8
    add_user(path, "long", at_limit, rounds=4)
    auth = make_auth(path, Clock())
    assert (await auth.authenticate(header("long", at_limit), "10.0.0.1")).name == "long"
    checks = auth.password_checks
    exc = await refused(auth, "long", at_limit + "x", "10.0.0.1")
    assert exc.status == 401 and exc.headers["WWW-Authenticate"].startswith("Basic")
    assert exc.detail == "password is 73 bytes; bcrypt's limit is 72 bytes"
    assert auth.password_checks == checks


async def test_server_answers_long_password_with_401(start_inprocess: StartFn,
                                                     tmp_path: Path) -> None:
    server = await start_inprocess(auth_file=str(make_file(tmp_path)))
    client = Api(server.port, auth=("alice", "p" * 100))
    reply = await client.get("/ping")
    assert reply.status == 401, reply.body
    assert reply.body["detail"] == "password is 100 bytes; bcrypt's limit is 72 bytes"
    await client.aclose()


@pytest.mark.parametrize("how", ["--password", "stdin"])
def test_htpasswd_add_refuses_long_password(tmp_path: Path, how: str) -> None:
    path = tmp_path / "pw"
    argv = [sys.executable, "-m", "torc_cli.main", "htpasswd", "add", str(path), "carol",
            "--rounds", "4"]
    password = "p" * 100
    if how == "--password":
        out = subprocess.run([*argv, "--password", password], capture_output=True, text=True)
    else:
        out = subprocess.run(argv, input=password + "\n", capture_output=True, text=True)
    assert out.returncode == 2, out
    assert out.stderr == ("htpasswd add: password is 100 bytes; bcrypt's limit is 72 bytes\n")
    assert not path.exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["carol:x", "--password", "pw"], "htpasswd add: user names must be non-empty and "
                                      "contain no ':'\n"),
    (["carol", "--password", "pw", "--rounds", "3"],
     "htpasswd add: --rounds must be between 4 and 31\n"),
])
def test_htpasswd_add_other_refusals_are_one_line(tmp_path: Path, extra: list[str],
                                                  message: str) -> None:
    path = tmp_path / "pw"
    out = subprocess.run([sys.executable, "-m", "torc_net.htpasswd_cli", "add", str(path),
                          *extra], capture_output=True, text=True)
    assert (out.returncode, out.stderr) == (2, message)
    assert not path.exists()


def test_htpasswd_add_accepts_72_bytes(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    password = "é" * 36
    subprocess.run([sys.executable, "-m", "torc_net.htpasswd_cli", "add", str(path), "carol",
                    "--rounds", "4"], input=password + "\n", encoding="utf-8", check=True,
                   capture_output=True)
    hashed = path.read_text().split(":", 1)[1].strip()
    assert bcrypt.checkpw(password.encode(), hashed.encode())
