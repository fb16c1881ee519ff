"""Workflows across hosts, on this one: a runner that follows a server moved to another
address through the URL file, the URL file's bad forms, and `submit`'s refusal of a loopback
server for nodes that are other hosts.

Real servers (`torc-trio serve`, port 0), a real runner process; the server is killed with
SIGKILL (its host lost) and started again on another port with the same database.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import yaml
from cli_helpers import ServerProcess, background, clean_env, torc, torc_json, wait_until

API = "/torc-service/v1"


def _serve(tmp_path: Path, url_file: Path) -> ServerProcess:
    return ServerProcess(tmp_path / "torc.db", cwd=tmp_path, flags=[
        "--database", str(tmp_path / "torc.db"), "--host", "127.0.0.1", "--port", "0",
        "--url-file", str(url_file)])


def test_runner_follows_the_server_to_a_new_address(tmp_path: Path) -> None:
    """The "server moves host" procedure of docs/running-across-hosts.md: the server dies
    mid-run, starts again at a new address on the same database and rewrites the URL file;
    the runner, which knew only the file, finds it there and finishes. Every job ran once."""
    url_file = tmp_path / "shared" / "torc.url"
    url_file.parent.mkdir()
    done = tmp_path / "done.txt"
    n = 40
    spec = {"name": "moves", "jobs": [
        {"name": f"j{i}", "command": f"sleep 0.2 && echo j{i} >> {done}"} for i in range(n)]}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    first = _serve(tmp_path, url_file)
    try:
        assert url_file.read_text() == f"{first.url}\n"
        created = torc_json(tmp_path, "--url", first.url, "create", "spec.yaml")
        wid = str(created["id"])
        # Only the file says where the server is: no --url, no TORC_API_URL.
        env = clean_env(TORC_API_URL_FILE=str(url_file))
        with background(tmp_path, "runner", wid, "-j", "4", env=env) as runner:
            wait_until(lambda: done.exists() and len(done.read_text().split()) >= 8)
            first.proc.send_signal(signal.SIGKILL)  # the host is lost: nothing said, nothing
            first.proc.wait(timeout=30)             # flushed beyond what was acknowledged
            ran_before = len(done.read_text().split())
            assert ran_before < n, "the run ended before the server was lost"
            # Jobs keep running meanwhile; their results wait in the runner.
            wait_until(lambda: len(done.read_text().split()) > ran_before + 4)
            second = _serve(tmp_path, url_file)
            try:
                assert second.port != first.port
                assert url_file.read_text() == f"{second.url}\n"
                out, err = runner.communicate(timeout=120)
                assert runner.returncode == 0, out + err
                assert f"it is now at {second.url} (URL file): switching" in err, err
                lines = done.read_text().split()
                assert Counter(lines) == Counter(f"j{i}" for i in range(n))  # each once
                status = torc_json(tmp_path, "--url", second.url, "status", wid)
                assert {k: v for k, v in status["counts"].items() if v} == {"completed": n}
                results = torc_json(tmp_path, "--url", second.url, "results", "list", wid,
                                    "--all-runs")
                assert sorted(r["job_name"] for r in results) == sorted(f"j{i}"
                                                                         for i in range(n))
                assert {(r["status"], r["return_code"]) for r in results} == {("completed", 0)}
            finally:
                second.stop()
    finally:
        first.stop()


def _runner_with_url_file(tmp_path: Path, path: Path) -> tuple[int, list[str]]:
    proc = torc(tmp_path, "runner", "1", env=clean_env(TORC_API_URL_FILE=str(path)),
                timeout=60)
    return proc.returncode, proc.stderr.strip().splitlines()


def test_a_bad_url_file_is_named_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "none.url"
    code, lines = _runner_with_url_file(tmp_path, missing)
    assert code == 2 and lines == [
        f"torc-trio: error: TORC_API_URL_FILE {missing}: cannot read it: No such file or "
        "directory"], lines
    garbage = tmp_path / "garbage.url"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n binary junk")
    code, lines = _runner_with_url_file(tmp_path, garbage)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"torc-trio: error: TORC_API_URL_FILE {garbage}: holds no "
                               "server URL"), lines
    code, lines = _runner_with_url_file(tmp_path, tmp_path)
    assert code == 2 and lines == [
        f"torc-trio: error: TORC_API_URL_FILE {tmp_path}: cannot read it: Is a directory"]
    assert not (tmp_path / "torc_output").exists()  # nothing was started or made


def test_a_url_file_gone_bad_mid_run_keeps_the_old_url(tmp_path: Path) -> None:
    """A server that stops answering while the file holds garbage: the runner says so once
    and keeps trying its URL; the server back at the same address gets its results."""
    url_file = tmp_path / "torc.url"
    done = tmp_path / "done.txt"
    spec = {"name": "stays", "jobs": [
        {"name": f"j{i}", "command": f"sleep 0.3 && echo j{i} >> {done}"} for i in range(12)]}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    first = _serve(tmp_path, url_file)
    port = first.port
    try:
        wid = str(torc_json(tmp_path, "--url", first.url, "create", "spec.yaml")["id"])
        env = clean_env(TORC_API_URL_FILE=str(url_file))
        with background(tmp_path, "runner", wid, "-j", "2", env=env) as runner:
            wait_until(lambda: done.exists() and len(done.read_text().split()) >= 2)
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(timeout=30)
            url_file.write_text("not a url at all\n")
            again = ServerProcess(tmp_path / "torc.db", cwd=tmp_path, flags=[
                "--database", str(tmp_path / "torc.db"), "--host", "127.0.0.1",
                "--port", str(port)])
            try:
                out, err = runner.communicate(timeout=120)
                assert runner.returncode == 0, out + err
                told = [line for line in err.splitlines() if "where it moved is unknown" in line]
                assert len(told) == 1 and f"TORC_API_URL_FILE {url_file}: holds no server " \
                    "URL" in told[0], err
                assert Counter(done.read_text().split()) == Counter(f"j{i}" for i in range(12))
            finally:
                again.stop()
    finally:
        first.stop()
