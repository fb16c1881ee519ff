"""The flags of `serve` (Torc's `torc-server run`'s, all accepted), what they become, and the
lines a server prints once it listens."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import torc_net.server as server_module
from torc_net.auth import DEFAULT_CACHE_TTL, Authenticator
from torc_net.config import (
    DEFAULT_CREDENTIAL_CACHE_TTL,
    DEFAULT_PORT,
    TORC_FLAGS_WITHOUT_EFFECT,
    ServerConfig,
    add_serve_arguments,
    api_url,
    client_host,
    config_from_args,
)
from torc_net.server import PidFileError, check_pid_file, remove_pid_file, write_pid_file


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(list(argv))


def _config(*argv: str) -> ServerConfig:
    return config_from_args(_parse(*argv))


def test_torc_default_port() -> None:
    assert DEFAULT_PORT == 8080
    assert _config().port == 8080
    assert _config("--port", "8085").port == 8085  # the README's examples keep working


def test_every_flag_of_torc_server_run_is_accepted(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path) -> None:
    """Torc's `torc-server run` flags, by their short forms where Torc has them (--https
    with the certificate pair it needs here)."""
    import trustme

    auth = tmp_path / "users.htpasswd"
    issued = trustme.CA().issue_cert("127.0.0.1")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    cfg = _config(
        "-l", "debug", "--https", "--tls-cert", str(cert), "--tls-key", str(key),
        "-H", "0.0.0.0", "-p", "9000", "-t", "2",
        "-d", str(tmp_path / "t.db"), "--auth-file", str(auth), "--require-auth",
        "--credential-cache-ttl-secs", "5", "--enforce-access-control",
        "--log-dir", str(tmp_path), "--json-logs", "--daemon",
        "--pid-file", str(tmp_path / "torc.pid"), "-c", "5", "--admin-user", "root",
    )
    assert (cfg.log_level, cfg.host, cfg.port, cfg.threads) == ("debug", "0.0.0.0", 9000, 2)
    assert cfg.database == str(tmp_path / "t.db")
    assert (cfg.auth_file, cfg.require_auth) == (str(auth), True)
    assert cfg.credential_cache_ttl_s == 5
    assert cfg.admin_users == ["root"]
    assert cfg.pid_file == str(tmp_path / "torc.pid")
    assert (cfg.tls_cert, cfg.tls_key, cfg.scheme) == (str(cert), str(key), "https")
    # Each flag that changes nothing here says so, once, on stderr: never silently ignored.
    err = capsys.readouterr().err.splitlines()
    assert len(err) == len(TORC_FLAGS_WITHOUT_EFFECT)
    for flag, why in TORC_FLAGS_WITHOUT_EFFECT.values():
        assert f"torc-trio serve: {flag}: {why}" in err
    assert ("torc-trio serve: --completion-check-interval-secs: not needed: dependents are "
            "released the moment a job completes") in err


def test_long_forms_and_no_notes_without_those_flags(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config("--log-level", "warning", "--host", "127.0.0.1", "--threads", "3",
                  "--completion-check-interval-secs", "0.5")
    assert (cfg.log_level, cfg.threads) == ("warning", 3)
    assert capsys.readouterr().err.splitlines() == [
        "torc-trio serve: --completion-check-interval-secs: not needed: dependents are "
        "released the moment a job completes"]
    _config()
    assert capsys.readouterr().err == ""


def test_torc_log_level_names() -> None:
    assert _config("-l", "trace").log_level == "debug"
    assert _config("-l", "warn").log_level == "warning"
    assert _config("-l", "error").log_level == "error"


def test_url_is_torcs_deprecated_alias_of_host() -> None:
    assert _config("--url", "node7").host == "node7"
    assert _config("-u", "node7").host == "node7"
    assert _config().host == "127.0.0.1"
    with pytest.raises(SystemExit, match="not a URL"):
        _config("--url", "http://node7:8080/torc-service/v1")


def test_credential_cache_ttl() -> None:
    assert DEFAULT_CREDENTIAL_CACHE_TTL == DEFAULT_CACHE_TTL
    assert _config().credential_cache_ttl_s == DEFAULT_CACHE_TTL
    assert _config("--credential-cache-ttl-secs", "0").credential_cache_ttl_s == 0
    with pytest.raises(SystemExit, match="credential-cache-ttl-secs"):
        _config("--credential-cache-ttl-secs", "-1")


async def test_credential_cache_ttl_reaches_the_authenticator(
        start_inprocess: Callable[..., Awaitable[Any]], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    made: list[float] = []

    class Recording(Authenticator):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self.cache_ttl)

    monkeypatch.setattr(server_module, "Authenticator", Recording)
    await start_inprocess(credential_cache_ttl_s=7.5)
    assert made == [7.5]


def test_client_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "login1")
    assert client_host("127.0.0.1") == "127.0.0.1"
    assert client_host("localhost") == "127.0.0.1"
    assert client_host("0.0.0.0") == "login1"  # what the nodes reach
    assert client_host("::") == "login1"
    assert client_host("[::]") == "login1"
    assert client_host("node7.cluster") == "node7.cluster"
    assert client_host("10.1.2.3") == "10.1.2.3"
    assert client_host("::1") == "[::1]"
    assert api_url("0.0.0.0", 8080) == "http://login1:8080/torc-service/v1"


async def test_port_line_first_then_the_export_line(
        start_server: Callable[..., Awaitable[Any]], tmp_path: Path) -> None:
    sp = await start_server("--database", str(tmp_path / "torc.db"), "--host", "127.0.0.1")
    index, export = await sp.wait_line("export TORC_API_URL=")
    assert sp.lines[0] == f"TORC_SERVER_PORT={sp.port}"
    assert index == 1
    assert export == f"export TORC_API_URL=http://127.0.0.1:{sp.port}/torc-service/v1"
    assert await sp.stop() == 0


# ---------------------------------------------------------------------------------------------
# The pid file's rules, one by one (the whole story through a real server is in
# tests/cli/test_cli_serve.py)


def test_pid_file_written_whole_and_removed_only_if_ours(tmp_path: Path) -> None:
    path = tmp_path / "torc.pid"
    check_pid_file(path)  # none yet: fine
    write_pid_file(path)
    assert path.read_text() == f"{os.getpid()}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["torc.pid"]  # no temporary file left
    check_pid_file(path)  # our own pid is no other server
    remove_pid_file(path)
    assert not path.exists()
    path.write_text("1\n")  # taken over by another: not ours to remove
    remove_pid_file(path)
    assert path.read_text() == "1\n"


def test_stale_pid_files_are_replaced(tmp_path: Path) -> None:
    path = tmp_path / "torc.pid"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    path.write_text(gone.stdout)  # a process that has ended
    check_pid_file(path)
    path.write_text("")  # an empty file holds nothing to lose
    check_pid_file(path)
    other = subprocess.Popen(["sleep", "300"])  # alive, but no torc-trio server
    try:
        path.write_text(f"{other.pid}\n")
        check_pid_file(path)
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()


def test_a_file_that_is_no_pid_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "torc.db"
    path.write_text("SQLite format 3\0...")
    with pytest.raises(PidFileError, match="holds no pid"):
        check_pid_file(path)
    with pytest.raises(PidFileError, match="cannot write"):
        check_pid_file(tmp_path / "missing" / "torc.pid")


def test_a_server_process_collects_garbage_less_often(tmp_path: Path) -> None:
    """main_run (every `serve` and `dash` process) raises the collector's thresholds
    (server.tune_gc): checked inside a served process, once it listens."""
    code = (
        "import gc, os, signal, sys, trio\n"
        "from torc_net.config import ServerConfig\n"
        "from torc_net.server import main_run\n"
        "async def listening(port):\n"
        "    print(gc.get_threshold(), flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    await trio.sleep_forever()\n"
        f"sys.exit(main_run(ServerConfig(database={str(tmp_path / 'gc.db')!r}, port=0),"
        " listening))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-1] == str(server_module.GC_THRESHOLDS), out.stdout
