"""HTTPS end to end: `serve --tls-cert --tls-key` with a throwaway CA (trustme), and every client
speaking to it: the CLI, a runner, the websocket feed (`watch`), a function job's blocking
client. Verification failures (wrong CA, wrong host name, plain HTTP to the TLS port and the
reverse) are one line naming the host and the reason, at once, never a traceback or twenty
minutes of retries.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cli_helpers import ServerProcess, background, clean_env, torc, torc_json
from tls_helpers import Pki, htpasswd, make_pki, tls_server

from torc_net.tls import TlsError, TlsSettings

SPEC = """
name: over-tls
jobs:
  - name: first
    command: echo first
  - name: then_{i}
    command: echo then {i}
    depends_on: [first]
    parameters: {i: "1:5"}
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    # Issued for the address only: https://localhost is then a wrong host name.
    return make_pki(tmp_path_factory.mktemp("pki"), "127.0.0.1")


@pytest.fixture
def server(tmp_path: Path, pki: Pki) -> Iterator[ServerProcess]:
    users = htpasswd(tmp_path / "htpasswd", {"alice": "apw"})
    srv = tls_server(tmp_path / "torc.db", pki,
                     more=("--auth-file", str(users), "--require-auth"))
    try:
        yield srv
    finally:
        srv.stop()


@contextmanager
def _silent_tls_server(pki: Pki) -> Iterator[int]:
    """A TLS port on 127.0.0.1 that completes handshakes and closes every connection on
    anything else, without a word."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert, pki.key)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                try:
                    conn.settimeout(5)
                    with context.wrap_socket(conn, server_side=True) as tls:
                        tls.recv(1)  # the client's probe closes; nothing is ever answered
                except (OSError, ssl.SSLError):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()


def env_for(srv: ServerProcess, pki: Pki, **extra: str) -> dict[str, str]:
    base = {"TORC_API_URL": srv.url, "TORC_CA_FILE": str(pki.ca), "TORC_USERNAME": "alice",
            "TORC_PASSWORD": "apw", "TORC_INTERACTIVE_WAIT_SECONDS": "5"}
    return clean_env(**{**base, **extra})


def one_line_error(proc: object, *needles: str) -> str:
    stderr = proc.stderr  # type: ignore[attr-defined]
    assert proc.returncode != 0, proc.stdout  # type: ignore[attr-defined]
    assert "Traceback" not in stderr, stderr
    assert "waiting for the server" not in stderr, stderr  # refused at once, not retried
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_a_workflow_runs_over_https_with_runner_feed_and_results(tmp_path: Path,
                                                                 server: ServerProcess,
                                                                 pki: Pki) -> None:
    assert server.printed_url == (  # type: ignore[attr-defined]
        f"export TORC_API_URL=https://127.0.0.1:{server.port}/torc-service/v1")
    env = env_for(server, pki)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    wid = int(torc_json(tmp_path, "create", str(spec), env=env)["id"])
    # The websocket feed over wss://, following the run to its end.
    # (Whether it subscribes before or after the runner ends, it ends with the workflow: its
    # first message, the counts, may already show every job done.)
    with background(tmp_path, "watch", str(wid), env=env) as watch:
        runner = torc(tmp_path, "runner", str(wid), "--idle-timeout-seconds", "1", env=env)
        assert runner.returncode == 0, runner.stderr
        watch.wait(timeout=60)
        out = watch.stdout.read() if watch.stdout else ""
        err = watch.stderr.read() if watch.stderr else ""
        assert watch.returncode == 0, err
    assert "then_5" in out or "completed" in out, out
    status = torc_json(tmp_path, "status", str(wid), env=env)
    assert status["counts"]["completed"] == 6, status
    results = torc_json(tmp_path, "results", "list", str(wid), env=env)
    assert len(results) == 6 and {r["return_code"] for r in results} == {0}


def test_a_wrong_ca_is_refused_at_once_in_one_line(tmp_path: Path, server: ServerProcess,
                                                   pki: Pki) -> None:
    proc = torc(tmp_path, "workflows", "list", env=env_for(server, pki,
                                                            TORC_CA_FILE=str(pki.wrong_ca)))
    one_line_error(proc, f"TLS: cannot verify the server at 127.0.0.1:{server.port}",
                   "unable to get local issuer certificate", str(pki.wrong_ca))
    # Without any CA file: the system's CAs do not know the throwaway one either.
    env = env_for(server, pki)
    del env["TORC_CA_FILE"]
    one_line_error(torc(tmp_path, "workflows", "list", env=env), "system's CAs")
    # The flag (Torc's name and ours) does what the variable does.
    for flag in ("--ca-file", "--tls-ca-cert"):
        ok = torc(tmp_path, flag, str(pki.ca), "workflows", "list", env=env)
        assert ok.returncode == 0, ok.stderr


def test_a_wrong_host_name_is_refused(tmp_path: Path, server: ServerProcess, pki: Pki) -> None:
    url = f"https://localhost:{server.port}/torc-service/v1"
    proc = torc(tmp_path, "workflows", "list", env=env_for(server, pki, TORC_API_URL=url))
    one_line_error(proc, f"TLS: cannot verify the server at localhost:{server.port}",
                   "localhost")
    # --tls-insecure (testing only) skips verification, as Torc's does.
    insecure = torc(tmp_path, "--tls-insecure", "workflows", "list",
                    env=env_for(server, pki, TORC_API_URL=url))
    assert insecure.returncode == 0, insecure.stderr


def test_plain_http_to_the_tls_port_and_https_to_a_plain_one(tmp_path: Path,
                                                              server: ServerProcess,
                                                              pki: Pki) -> None:
    url = f"http://127.0.0.1:{server.port}/torc-service/v1"
    proc = torc(tmp_path, "workflows", "list", env=env_for(server, pki, TORC_API_URL=url))
    one_line_error(proc, "this server speaks HTTPS (TLS): use an https:// URL")
    # Any plain-HTTP client (a browser, curl) gets that answer in plain HTTP, and the close.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /torc-service/v1/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"Connection: close" in head, answer
    assert json.loads(body)["detail"] == "this server speaks HTTPS (TLS): use an https:// URL"
    # A TLS server that just drops the request (a proxy's, say): the client finds out itself.
    with _silent_tls_server(pki) as port:
        url = f"http://127.0.0.1:{port}/torc-service/v1"
        proc = torc(tmp_path, "workflows", "list", env=env_for(server, pki, TORC_API_URL=url))
        one_line_error(proc, f"the server at 127.0.0.1:{port} speaks HTTPS",
                       f"use https://127.0.0.1:{port}/torc-service/v1")
    plain = ServerProcess(tmp_path / "plain.db")
    try:
        url = f"https://127.0.0.1:{plain.port}/torc-service/v1"
        proc = torc(tmp_path, "workflows", "list", env=env_for(server, pki, TORC_API_URL=url))
        one_line_error(proc, f"the server at 127.0.0.1:{plain.port} does not speak TLS",
                       "use an http:// URL")
    finally:
        plain.stop()


def test_bad_ca_files_and_credentials_files_are_named(tmp_path: Path, server: ServerProcess,
                                                      pki: Pki) -> None:
    missing = tmp_path / "nope.pem"
    proc = torc(tmp_path, "--ca-file", str(missing), "workflows", "list",
                env=env_for(server, pki))
    one_line_error(proc, f"CA file {missing}: no such file")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    proc = torc(tmp_path, "workflows", "list", env=env_for(server, pki, TORC_CA_FILE=str(junk)))
    one_line_error(proc, f"CA file {junk}")
    # A credentials file (how runners on compute nodes get the password) must be 0600.
    creds = tmp_path / "creds"
    creds.write_text("alice:apw\n")
    creds.chmod(0o644)
    env = env_for(server, pki, TORC_CREDENTIALS_FILE=str(creds))
    del env["TORC_USERNAME"], env["TORC_PASSWORD"]
    one_line_error(torc(tmp_path, "workflows", "list", env=env),
                   f"may be read by others (mode 0644): chmod 600 {creds}")
    creds.chmod(0o600)
    ok = torc(tmp_path, "workflows", "list", env=env)
    assert ok.returncode == 0, ok.stderr


def test_a_function_jobs_client_speaks_https(server: ServerProcess, pki: Pki,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from torc_trio.jobapi import JobApi

    monkeypatch.setenv("TORC_CA_FILE", str(pki.ca))
    with JobApi(server.url, auth=("alice", "apw")) as api:
        assert api.get("/ping") == {"status": "ok"}
    monkeypatch.setenv("TORC_CA_FILE", str(pki.wrong_ca))
    with JobApi(server.url, auth=("alice", "apw"), wait_for_server_s=5) as api, \
            pytest.raises(TlsError, match=r"cannot verify the server at 127\.0\.0\.1"):
        api.get("/ping")


def test_runners_started_by_submit_get_the_ca_and_a_credentials_file_not_the_password(
        tmp_path: Path, pki: Pki) -> None:
    from torc_cli.reach import ServerAddress, access_env, credentials_path
    from torc_cli.submit import allocation_script
    from torc_net.client import TorcClient

    client = TorcClient("https://login1:8443/torc-service/v1", auth=("alice", "s3cret pw"),
                        tls=TlsSettings(str(pki.ca)))
    access = access_env(client, tmp_path)
    where = ServerAddress("https://login1:8443/torc-service/v1", access=access)
    workflow = {"id": 7, "spec_settings": {}}
    script = allocation_script(workflow, where, tmp_path, {"name": "cpu", "walltime": "1:00"},
                               scheduler_filter="cpu")
    assert "s3cret" not in script
    creds = credentials_path(tmp_path, "alice")
    assert f"export TORC_CREDENTIALS_FILE={creds}" in script
    assert f"export TORC_CA_FILE={pki.ca}" in script
    assert creds.read_text() == "alice:s3cret pw\n"
    assert (creds.stat().st_mode & 0o777) == 0o600
    # A runner holding the same credentials through that file passes the file on.
    os.environ["TORC_CREDENTIALS_FILE"] = str(creds)
    try:
        assert dict(access_env(client, tmp_path / "elsewhere"))["TORC_CREDENTIALS_FILE"] == \
            str(creds)
    finally:
        del os.environ["TORC_CREDENTIALS_FILE"]
    assert not (tmp_path / "elsewhere").exists()


def test_serve_flags_check_the_pair_and_warn_of_clear_text_passwords(
        tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    from torc_net.config import add_serve_arguments, config_from_args

    def config(*argv: str) -> object:
        parser = argparse.ArgumentParser()
        add_serve_arguments(parser)
        return config_from_args(parser.parse_args(list(argv)))

    users = str(htpasswd(tmp_path / "htpasswd", {"alice": "apw"}))
    with pytest.raises(SystemExit, match="--tls-cert and --tls-key go together"):
        config("--tls-cert", str(pki.cert))
    with pytest.raises(SystemExit, match="--https needs --tls-cert"):
        config("--https")
    with pytest.raises(SystemExit, match="cannot use them"):
        config("--tls-cert", str(pki.key), "--tls-key", str(pki.key))
    capsys.readouterr()
    config("--host", "10.77.0.1", "--auth-file", users, "--require-auth")
    warning = capsys.readouterr().err
    assert "warning: serving plain HTTP on 10.77.0.1 with --require-auth" in warning
    assert "clear text" in warning
    for quiet in (("--host", "127.0.0.1", "--auth-file", users, "--require-auth"),
                  ("--host", "10.77.0.1", "--auth-file", users, "--require-auth",
                   "--tls-cert", str(pki.cert), "--tls-key", str(pki.key)),
                  ("--host", "10.77.0.1")):
        config(*quiet)
        assert "warning" not in capsys.readouterr().err, quiet
