"""Running the real `torc-trio` command in a temporary directory."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

TORC = [sys.executable, "-m", "torc_cli.main"]


def chromium_path() -> str:
    """Debian's chromium for the browser tests (Playwright drives it by path); a skip when it is
    missing, a failure when CI=true (.ci/run installs it: scripts/ci-install-browser.sh)."""
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but there is no chromium: .ci/run installs it "
                        "(scripts/ci-install-browser.sh)")
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium, or "
                    "scripts/ci-install-browser.sh)")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORC_")}
    env.update(extra)
    return env


def torc(cwd: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None,
         check: bool | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*TORC, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env=env or clean_env(), stdin=subprocess.DEVNULL,
    )
    if check:
        assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@contextmanager
def background(cwd: Path, *args: str, env: dict[str, str] | None = None,
               stderr_file: Path | None = None) -> Iterator[subprocess.Popen[str]]:
    """`torc-trio ARGS` running in the background (output captured); killed on the way out
    if the test did not see it end. ``stderr_file``: its stderr goes there instead, for a
    test that waits on what it says while it runs."""
    with contextlib.ExitStack() as stack:
        err = subprocess.PIPE if stderr_file is None else \
            stack.enter_context(stderr_file.open("w"))
        proc = subprocess.Popen([*TORC, *args], cwd=cwd, env=env or clean_env(),
                                stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def wait_until(predicate: Callable[[], object], timeout_s: float = 60) -> None:
    """Poll a real process's effect (a file, a pid) until it shows, or fail."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s"
        time.sleep(0.05)


def torc_json(cwd: Path, *args: str, **kw: Any) -> Any:
    proc = torc(cwd, "-f", "json", *args, **kw)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


def standalone_json(cwd: Path, *args: str) -> Any:
    return torc_json(cwd, "-s", *args)


def port_free(port: int) -> bool:
    """Whether ``port`` on 127.0.0.1 can be bound now (Torc's default 8080 may be taken)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`torc-trio serve` as a child process on 127.0.0.1."""

    def __init__(self, db: Path, port: int = 0, cwd: Path | None = None,
                 flags: Sequence[str] | None = None) -> None:
        """``flags`` replace the usual ``--database DB --host 127.0.0.1 --port PORT``."""
        self.db = db
        self.cwd = cwd or db.parent
        if flags is None:
            flags = ["--database", str(db), "--host", "127.0.0.1", "--port", str(port)]
        self.proc = subprocess.Popen(
            [*TORC, "serve", *flags],
            cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=clean_env(PYTHONUNBUFFERED="1"),
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        self.port = 0
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("TORC_SERVER_PORT="):
                self.port = int(line.strip().split("=", 1)[1])
                break
        assert self.port, "server did not report its port"
        self.url = f"http://127.0.0.1:{self.port}/torc-service/v1"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stdout:
            self.proc.stdout.close()


def pids_in_group_alive(pattern: str) -> list[int]:
    """PIDs whose command line contains ``pattern`` (to prove no job process survived)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if pattern in cmdline:
            alive.append(int(entry.name))
    return alive
