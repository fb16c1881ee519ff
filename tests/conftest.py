"""Shared fixtures: real torc servers on 127.0.0.1 with a real SQLite file.

Two flavours:

* ``server`` / ``start_inprocess`` run :func:`torc_net.server.serve` in the test's trio loop
  (fast; for endpoint tests).
* ``start_server`` runs ``python -m torc_net.server`` as a subprocess under the test's nursery
  and learns its port from the ``TORC_SERVER_PORT=<port>`` line (for signals, kill -9 and
  restarts). Its stdout lines are collected so tests can wait for ``TORC_SNAPSHOT_DONE=``.

Under pytest-xdist (the README's command runs ``-n``) two hooks keep parallel runs honest:
the Slurm tests share one cluster and run on one worker (see
:func:`pytest_collection_modifyitems`), and a test or module marked ``alone`` runs with no
other test beside it (see :func:`_alone`). A module whose tests share state
(tests/net/test_api_fuzz.py) is an ``xdist_group`` of its own.
"""

from __future__ import annotations

import compileall
import contextlib
import fcntl
import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from torc_net.http import HttpConnectionPool, basic_auth_header
from torc_net.server import Running, ServerConfig, serve
from torc_net.store import Store

# tests/dash's fixtures are a plugin its test modules also import helpers from: rewrite its
# asserts although the test module imports it first.
pytest.register_assert_rewrite("dash_helpers")

#: This module: test modules ``from conftest import Api`` (see :func:`pytest_collectstart`).
_THIS = sys.modules[__name__]


def pytest_collectstart(collector: pytest.Collector) -> None:
    """A test module's ``from conftest import ...`` means this file. A conftest.py further
    down (tests/lib, tests/slurm) is imported under the same name, and pytest drops this
    module from sys.modules first: every module collected after it failed to import (all of
    tests/net behind tests/lib). So before a test module is imported, the name points here
    again; pytest itself finds its conftest plugins by path, not by that name."""
    if isinstance(collector, pytest.Module):
        sys.modules["conftest"] = _THIS

API = "/torc-service/v1"


#: The project's packages, compiled once per run (see :func:`pytest_configure`).
PACKAGES = ("torc_core", "torc_net", "torc_cli", "torc_trio")


def pytest_configure(config: pytest.Config) -> None:
    """Compile the project's modules to bytecode before any test runs. The suite starts
    thousands of Python processes (``torc-trio``, servers, runners, Python jobs), and where
    PYTHONDONTWRITEBYTECODE is set (this CI machine's environment) none of them writes what
    it compiles, so every one compiled all of torc_* again: about a quarter of the CPU a
    ``torc-trio`` start costs, on a machine the suite keeps busy. The files go where Python
    itself would put them (``__pycache__``, ignored by git); up-to-date ones are left alone.
    The xdist controller (or a plain run) does it, before the workers start."""
    if hasattr(config, "workerinput"):
        return
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        for location in (spec.submodule_search_locations or []) if spec else []:
            compileall.compile_dir(location, quiet=2)


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The Slurm tests are one xdist group: they share the one local cluster (its two CPUs,
    and its queue, which some of them read whole), so under ``-n`` they run one at a time on
    one worker. (xdist hands out the biggest groups first, so this longest unit of work, a
    few minutes, starts at once rather than last while the other workers sit idle.)"""
    for item in items:
        if item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.xdist_group("slurm"))


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # releases the lock


class _Turn:
    """Whether this worker holds the exclusive turn for a whole module now."""

    module_alone = False


def _turns(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """Where this run's workers keep their turn's lock files (None: no xdist, no turns)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return None
    return tmp_path_factory.getbasetemp().parent  # shared by this run's workers


@contextlib.contextmanager
def _turn(root: Path, alone: bool) -> Iterator[None]:
    """Hold the run's shared turn, or with ``alone`` its exclusive one. The gate, held shared
    only for an instant by the others and exclusively by a test waiting to run alone, stops
    new tests from starting meanwhile (flock alone would let a stream of shared holders
    starve it)."""
    mode = fcntl.LOCK_EX if alone else fcntl.LOCK_SH
    with contextlib.ExitStack() as held:
        with _flock(root / "alone.gate", mode):
            held.enter_context(_flock(root / "alone.lock", mode))
        yield


@pytest.fixture(scope="module", autouse=True)
def _module_alone(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A module marked ``alone`` (its ``pytestmark``) holds the exclusive turn from before its
    module-scoped fixtures start until they end: tests/net/test_api_fuzz.py's time budget
    starts with its server, and it shares its CPUs with no other test."""
    root = _turns(tmp_path_factory)
    if root is None or request.node.get_closest_marker("alone") is None:
        yield
        return
    with _turn(root, alone=True):
        _Turn.module_alone = True
        try:
            yield
        finally:
            _Turn.module_alone = False


@pytest.fixture(autouse=True)
def _alone(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Under xdist a test marked ``alone`` runs with no other test at the same time: every
    test holds a shared turn for its duration, an ``alone`` one the exclusive turn. For a
    machine-wide resource, such as Torc's default port 8080, which every command without a
    URL probes for a server (torc_cli.early): while a test's server holds it, another
    worker's `torc-trio run` would use that server instead of running standalone."""
    root = _turns(tmp_path_factory)
    if root is None or _Turn.module_alone:
        yield
        return
    with _turn(root, alone=request.node.get_closest_marker("alone") is not None):
        yield


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


class Api:
    """A tiny JSON helper over :class:`HttpConnectionPool` that returns every status as-is."""

    def __init__(self, port: int, auth: tuple[str, str] | None = None) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}{API}"
        self.pool = HttpConnectionPool(self.base_url, auth=auth, max_idle=32)

    async def request(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> Reply:
        with trio.fail_after(30):
            resp = await self.pool.request(
                method, path, json_body=body, body=raw, headers=headers
            )
        try:
            value = json.loads(resp.body) if resp.body else None
        except ValueError:
            value = resp.body
        return Reply(resp.status, value, resp.headers)

    async def get(self, path: str) -> Reply:
        return await self.request("GET", path)

    async def post(self, path: str, body: Any = None) -> Reply:
        return await self.request("POST", path, body if body is not None else {})

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        reply = await self.request(method, path, body)
        assert reply.status == status, (method, path, reply.status, reply.body)
        return reply.body

    async def aclose(self) -> None:
        await self.pool.aclose()


async def wait_for(condition: Callable[[], object], timeout_s: float = 20) -> None:
    """Wait until ``condition()`` is true: for states that no event announces (a server's
    internals seen from a test). Fails after ``timeout_s``."""
    with trio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110 -- nothing to wait on but the state itself
            await trio.sleep(0.02)


def basic(user: str, password: str) -> list[tuple[str, str]]:
    return [("Authorization", basic_auth_header(user, password).decode())]


def simple_spec(n: int = 3, *, chain: bool = False, name: str = "wf", **extra: Any) \
        -> dict[str, Any]:
    jobs = []
    for i in range(n):
        job: dict[str, Any] = {"name": f"job{i}", "command": f"echo {i}"}
        if chain and i:
            job["depends_on"] = [f"job{i - 1}"]
        jobs.append(job)
    return {"name": name, "jobs": jobs, **extra}


#: Where a file database's commits run (torc_net.store.core, Rule 9): tests of the store's
#: promises run with both.
WRITERS = ["process", "thread"]

OpenStore = Callable[[str], Awaitable[Store]]


@pytest.fixture
async def open_store(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[OpenStore]:
    """Open a store on a file database with the given writer, its writer task running;
    flushed and closed after the test."""
    stores: list[Store] = []

    async def open_one(writer: str) -> Store:
        store = Store(str(tmp_path / f"{writer}.db"), writer=writer)
        await trio.to_thread.run_sync(store.open_sync)
        stores.append(store)
        await nursery.start(store.run_writer)
        return store

    yield open_one
    for store in stores:
        await store.flush()
        await store.aclose()


@pytest.fixture
async def start_inprocess(
    nursery: trio.Nursery, tmp_path: Path
) -> Callable[..., Awaitable[Running]]:
    async def start(**overrides: Any) -> Running:
        cfg = ServerConfig(
            database=str(tmp_path / "torc.db"), port=0, threads=2, handle_signals=False,
            print_port=False, shutdown_grace_s=2, log_level="warning",
        )
        for key, value in overrides.items():
            setattr(cfg, key, value)
        return await nursery.start(serve, cfg)

    return start


@pytest.fixture
async def server(start_inprocess: Callable[..., Awaitable[Running]]) -> Running:
    return await start_inprocess()


@pytest.fixture
async def api(server: Running) -> AsyncIterator[Api]:
    client = Api(server.port)
    yield client
    await client.aclose()


@dataclass
class ServerProcess:
    process: trio.Process
    port: int
    lines: list[str] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)
    exited: trio.Event = field(default_factory=trio.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{API}"

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def wait_line(self, prefix: str, *, after: int = 0) -> tuple[int, str]:
        """The first stdout line at index >= ``after`` starting with ``prefix``."""
        while True:
            for i in range(after, len(self.lines)):
                if self.lines[i].startswith(prefix):
                    return i, self.lines[i]
            if self.exited.is_set():
                raise AssertionError(f"server exited before printing {prefix!r}: {self.lines}")
            await self.changed.wait()

    async def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        with trio.fail_after(10):
            await self.process.wait()

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            return await self.process.wait()


@pytest.fixture
async def start_server(nursery: trio.Nursery) -> Callable[..., Awaitable[ServerProcess]]:
    """Start ``python -m torc_net.server`` with the given arguments (``--port 0`` added)."""

    async def start(*args: str, env: Mapping[str, str] | None = None,
                    cwd: str | os.PathLike[str] | None = None) -> ServerProcess:
        argv = [sys.executable, "-m", "torc_net.server", "--port", "0", "--log-level",
                "warning", *args]
        full_env = dict(os.environ)
        full_env.update(env or {})

        async def deliver_cancel(process: trio.Process) -> None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await process.wait()
                return
            process.kill()

        process: trio.Process = await nursery.start(
            partial(
                trio.run_process, argv, stdout=subprocess.PIPE, env=full_env, cwd=cwd,
                check=False, deliver_cancel=deliver_cancel,
            )
        )
        sp = ServerProcess(process, 0)

        async def read_stdout() -> None:
            assert process.stdout is not None
            buf = b""
            async for chunk in process.stdout:
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    text = line.decode(errors="replace")
                    sp.lines.append(text)
                    if text.startswith("TORC_SERVER_PORT=") and not sp.port:
                        sp.port = int(text.split("=", 1)[1])
                    sp.changed.set()
                    sp.changed = trio.Event()
            sp.exited.set()
            sp.changed.set()

        nursery.start_soon(read_stdout)
        with trio.fail_after(30):
            await sp.wait_line("TORC_SERVER_PORT=")
        return sp

    return start
