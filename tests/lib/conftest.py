"""Fixtures of the torc_trio library tests: a server process for the blocking API (which
runs trio.run itself, so it cannot share a test's Trio loop), and a working directory of
the test's own (jobs run in the caller's directory)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test runs in its own directory, with no server configured from outside."""
    monkeypatch.chdir(tmp_path)
    for name in ("TORC_API_URL", "TORC_USERNAME", "TORC_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    """``python -m torc_net.server`` on 127.0.0.1, a free port, a database in tmp_path."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "torc_net.server", "--database", str(tmp_path / "server.db"),
         "--host", "127.0.0.1", "--port", "0", "--log-level", "warning",
         "--parent-pid", str(os.getpid())],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    try:
        port = None
        for line in proc.stdout:  # bounded: the server prints this line or exits
            if line.startswith("TORC_SERVER_PORT="):
                port = int(line.split("=", 1)[1])
                break
        assert port is not None, f"server did not start (exit {proc.wait(10)})"
        # keep its stdout drained (a full pipe would stop it)
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield f"http://127.0.0.1:{port}/torc-service/v1"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
