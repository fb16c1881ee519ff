"""Workflows across hosts, on this one: a runner that follows a server moved to another
address through the URL file, the URL file's bad forms, and `submit`'s refusal of a loopback
server for nodes that are other hosts.

Real servers (`torc-trio serve`, port 0), a real runner process; the server is killed with
SIGKILL (its host lost) and started again on another port with the same database.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from cli_helpers import (
    ServerProcess,
    background,
    clean_env,
    free_port,
    torc,
    torc_json,
    wait_until,
)

from torc_cli.reach import (
    loopback_refusal,
    partition_nodes,
    refusal_for_scripts,
    sbatch_targets,
    this_host_names,
)

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
        log = tmp_path / "runner.err"
        with background(tmp_path, "runner", wid, "-j", "4", env=env,
                        stderr_file=log) as runner:
            wait_until(lambda: done.exists() and len(done.read_text().split()) >= 8)
            first.proc.send_signal(signal.SIGKILL)  # the host is lost: nothing said, nothing
            first.proc.wait(timeout=30)             # flushed beyond what was acknowledged
            assert len(done.read_text().split()) < n, "the run ended before the server was lost"
            # The runner finds the server gone (the jobs it holds keep running, their results
            # wait in it) before the server is back: how many jobs it holds then depends on
            # its prefetch, so the test waits on what the runner says, not on a job count.
            wait_until(lambda: "waiting for the server at" in log.read_text())
            second = _serve(tmp_path, url_file)
            try:
                assert second.port != first.port
                assert url_file.read_text() == f"{second.url}\n"
                out, _ = runner.communicate(timeout=120)
                err = log.read_text()
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
        log = tmp_path / "runner.err"
        with background(tmp_path, "runner", wid, "-j", "2", env=env,
                        stderr_file=log) as runner:
            wait_until(lambda: done.exists() and len(done.read_text().split()) >= 2)
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(timeout=30)
            # replaced whole, as the server writes it: a truncate-then-write would let the
            # runner read it empty in between, which is another (true) warning
            (tmp_path / "torc.url.new").write_text("not a url at all\n")
            os.replace(tmp_path / "torc.url.new", url_file)
            # the server comes back only once the runner has found the file bad (else a slow
            # runner could find the server back before it ever looked)
            wait_until(lambda: "where it moved is unknown" in log.read_text())
            again = ServerProcess(tmp_path / "torc.db", cwd=tmp_path, flags=[
                "--database", str(tmp_path / "torc.db"), "--host", "127.0.0.1",
                "--port", str(port)])
            try:
                out, _ = runner.communicate(timeout=120)
                err = log.read_text()
                assert runner.returncode == 0, out + err
                told = [line for line in err.splitlines() if "where it moved is unknown" in line]
                assert len(told) == 1 and f"TORC_API_URL_FILE {url_file}: holds no server " \
                    "URL" in told[0], err
                assert Counter(done.read_text().split()) == Counter(f"j{i}" for i in range(12))
            finally:
                again.stop()
    finally:
        first.stop()


# ---------------------------------------------------------------------------------------------
# submit: the URL runners get, and the refusal of a loopback server for other hosts


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.loads(reply.read())


def _far_spec(extra: str) -> dict[str, Any]:
    return {"name": "far",
            "slurm_schedulers": [{"name": "far", "account": "torc", "walltime": "00:05:00",
                                  "extra": extra}],
            "actions": [{"trigger_type": "on_workflow_start", "action_type": "schedule_nodes",
                         "scheduler": "far", "scheduler_type": "slurm"}],
            "jobs": [{"name": "a", "command": "true"}]}


def test_submit_refuses_a_loopback_server_for_other_hosts(tmp_path: Path) -> None:
    """Runners on other hosts could never reach 127.0.0.1: refused before anything is claimed,
    written or submitted, with the flag that fixes it. (--nodelist names the hosts without
    asking Slurm; a partition's nodes come from sinfo, tested on a real cluster by
    tests/slurm/test_slurm_multinode.py.)"""
    server = ServerProcess(tmp_path / "torc.db", cwd=tmp_path)
    try:
        env = clean_env(TORC_API_URL=server.url)
        (tmp_path / "far.json").write_text(json.dumps(_far_spec("--nodelist=faraway1")))
        wid = str(torc_json(tmp_path, "create", "far.json", env=env)["id"])
        for dry in ((), ("--dry-run",)):
            refused = torc(tmp_path, "submit", wid, *dry, env=env)
            assert refused.returncode == 4, refused.stdout + refused.stderr
            assert refused.stdout == ""
            assert refused.stderr.strip().splitlines() == [
                f"torc-trio: error: the server's URL {server.url} is loopback: only this host "
                "reaches it, but --nodelist faraway1 runs on faraway1; start the server with "
                "`serve --host 0.0.0.0` (or --host ADDRESS the nodes reach), or tell it the "
                "URL they should use with `serve --advertise-url "
                "http://HOST:PORT/torc-service/v1`; nothing was submitted"], refused.stderr
        actions = _get(f"{server.url}/workflows/{wid}/actions")["items"]
        assert [a["claimed"] for a in actions] == [False]  # a fixed submit may still claim it
        assert _get(f"{server.url}/workflows/{wid}/allocations")["items"] == []
        assert not (tmp_path / "torc_output" / "slurm").exists()
    finally:
        server.stop()


def test_submit_gives_runners_the_advertised_url_and_the_url_file(tmp_path: Path) -> None:
    """The client talks to 127.0.0.1; the scripts name the URL the server advertises (an
    address other hosts reach, so nothing is refused) and its URL file."""
    url_file = tmp_path / "torc.url"
    port = free_port()
    advertised = f"http://10.77.0.1:{port}{API}"
    server = ServerProcess(tmp_path / "torc.db", cwd=tmp_path, flags=[
        "--database", str(tmp_path / "torc.db"), "--host", "127.0.0.1", "--port", str(port),
        "--advertise-url", advertised, "--url-file", str(url_file)])
    try:
        env = clean_env(TORC_API_URL=server.url)
        (tmp_path / "far.json").write_text(json.dumps(_far_spec("--nodelist=faraway1")))
        wid = str(torc_json(tmp_path, "create", "far.json", env=env)["id"])
        dry = torc_json(tmp_path, "submit", wid, "--dry-run", env=env)
        [script] = [a["script"] for a in dry["allocations"]]
        assert f"export TORC_API_URL={advertised}\n" in script
        assert f"export TORC_API_URL_FILE={url_file}\n" in script
        assert f" --url {advertised} " in script and server.url not in script
    finally:
        server.stop()


def test_loopback_refusal_decides_by_url_and_nodes() -> None:
    here = {"vm"}
    url = f"http://127.0.0.1:8080{API}"
    refused = loopback_refusal(url, ["node1", "node2"], target="partition multi", this_host=here)
    assert refused is not None and refused.startswith(
        f"the server's URL {url} is loopback: only this host reaches it, but partition multi "
        "runs on node1, node2; start the server with `serve --host 0.0.0.0`")
    assert loopback_refusal(url, ["vm"], target="the default partition", this_host=here) is None
    assert loopback_refusal(url, ["vm.cluster.org"], target="p", this_host=here) is None
    assert loopback_refusal(url, ["vm", "node1"], target="p", this_host=here) is not None
    for ok in (f"http://10.77.0.1:8080{API}", f"http://[fd00::2]:8080{API}"):
        assert loopback_refusal(ok, ["node1"], target="p", this_host=here) is None
    for local in (f"http://localhost:1{API}", f"http://[::1]:1{API}", f"http://127.1.2.3:1{API}"):
        assert loopback_refusal(local, ["node1"], target="p", this_host=here) is not None
    # A name is judged by what it resolves to here: loopback only, routable, or unknown.
    names = {"vm": ["127.0.0.1"], "torc-head": ["10.77.0.1"], "dual": ["127.0.0.1", "10.0.0.5"]}

    def resolver(host: str) -> list[str]:
        return names.get(host, [])

    said = loopback_refusal(f"http://vm:1{API}", ["node1"], target="p", this_host=here,
                            resolver=resolver)
    assert said is not None and f"http://vm:1{API} names vm, which is 127.0.0.1 here " \
        "(loopback)" in said
    for host in ("torc-head", "dual", "unknown-here"):
        assert loopback_refusal(f"http://{host}:1{API}", ["node1"], target="p",
                                this_host=here, resolver=resolver) is None
    many = loopback_refusal(url, [f"n{i}" for i in range(20)], target="p", this_host=here)
    assert many is not None and "n7 and 12 more;" in many


def test_sbatch_targets_reads_the_directives_as_sbatch_does() -> None:
    script = ("#!/bin/bash\n#SBATCH --job-name=x\n#SBATCH --partition=debug\n"
              "#SBATCH -p multi\n#SBATCH -w node[1-2]\n\nexport A=1\n#SBATCH -p ignored\n")
    assert sbatch_targets(script, {}) == ("multi", "node[1-2]")
    assert sbatch_targets(script, {"SBATCH_PARTITION": "env"}) == ("env", "node[1-2]")
    assert sbatch_targets("#!/bin/sh\n#SBATCH -pgpu --nodelist n3\n", {}) == ("gpu", "n3")
    assert sbatch_targets("#!/bin/sh\nexec true\n", {}) == (None, None)


def test_partition_nodes_of_the_local_cluster() -> None:
    """The default partition of this machine's Slurm (scripts/local-slurm.sh) is this host,
    so a loopback server is fine for it."""
    if shutil.which("sinfo") is None or subprocess.run(
            ["sinfo", "-h"], capture_output=True, check=False, timeout=30).returncode != 0:
        pytest.skip("no Slurm cluster answers here (scripts/local-slurm.sh start)")
    nodes = trio.run(partition_nodes, None)
    assert nodes and set(nodes) <= {n.split(".")[0] for n in this_host_names()}, nodes
    assert trio.run(refusal_for_scripts, f"http://127.0.0.1:1{API}",
                    ["#!/bin/bash\nexec true\n"]) is None
