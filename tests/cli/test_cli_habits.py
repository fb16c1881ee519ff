"""A newcomer's first hour, and a Torc user's habits, through the real command: which server a
command uses and says so, waits that say what they wait for, URLs with a hint, global options
after the command, exit statuses and the next step after a failed run, what tables and times
look like, and failed commands that leave nothing behind. Each test reproduces something seen
going wrong."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest
from cli_helpers import (
    TORC,
    ServerProcess,
    background,
    clean_env,
    pids_in_group_alive,
    port_free,
    torc,
    torc_json,
    wait_until,
)


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# ---------------------------------------------------------------------------------------------
# Which server, and saying so


def test_after_a_plain_run_status_needs_no_flags(tmp_path: Path) -> None:
    """`run` fell back to the local database, `status 1` said 'no server'."""
    _write(tmp_path / "c.txt", "echo one\necho two\n")
    first = torc(tmp_path, "run", "-j", "2", "c.txt")
    assert first.returncode == 0, first.stderr
    assert "no server configured: running standalone on torc_output/torc.db" in first.stderr
    status = torc(tmp_path, "status", "1")
    assert status.returncode == 0, status.stderr
    assert "using the local database torc_output/torc.db" in status.stderr
    assert "completed" in status.stdout
    # Torc's habit: with one workflow, the id may be left out.
    assert torc_json(tmp_path, "results", "list")[0]["status"] == "completed"
    # Commands that only look create nothing where nothing has run.
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = torc(empty, "status", "1")
    assert proc.returncode == 2 and "no server" in proc.stderr and "torc-trio serve" in proc.stderr
    assert list(empty.iterdir()) == []


@pytest.mark.alone  # holds port 8080 (see tests/conftest.py)
def test_torc_quick_start_with_a_server_at_the_default_port(tmp_path: Path) -> None:
    """Torc's quick start: `torc-server run`, then `torc workflows list`, `torc run
    workflow.yaml --poll-interval 1`, `torc results list`, with no URL set anywhere."""
    if not port_free(8080):
        pytest.skip("port 8080 is in use here; the quick start needs Torc's default port")
    # Torc's first line, with torc-server run -> torc-trio serve (port 8080 by default; the
    # completion check interval is accepted and unneeded: dependents are released at once).
    server = ServerProcess(tmp_path / "torc.db", cwd=tmp_path, flags=[
        "--database", "torc.db", "--host", "localhost", "--completion-check-interval-secs", "5"])
    try:
        work = tmp_path / "work"
        work.mkdir()
        _write(work / "workflow.yaml", """\
            name: hello_world
            description: Simple hello world workflow
            jobs:
              - name: job 1
                command: echo "Hello from torc!"
              - name: job 2
                command: echo "Hello again from torc!"
        """)
        listed = torc(work, "workflows", "list")
        assert listed.returncode == 0, listed.stderr
        assert "using the server at http://localhost:8080/torc-service/v1" in listed.stderr
        run = torc(work, "run", "workflow.yaml", "--poll-interval", "1")
        assert run.returncode == 0, run.stdout + run.stderr
        assert not (work / "torc_output" / "torc.db").exists()  # the server's, not a local one
        results = torc_json(work, "results", "list")
        assert sorted(r["job_name"] for r in results) == ["job 1", "job 2"]
        assert all(r["return_code"] == 0 for r in results)
    finally:
        server.stop()


def test_an_unreachable_server_says_at_once_that_it_waits(tmp_path: Path) -> None:
    """`TORC_API_URL=http://127.0.0.1:1/torc-service/v1 torc-trio status 1` printed nothing
    for 30 s."""
    env = clean_env(TORC_API_URL="http://127.0.0.1:1/torc-service/v1")
    with background(tmp_path, "status", "1", env=env) as proc:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the first thing it says, long before it gives up
        assert "waiting for the server at http://127.0.0.1:1/torc-service/v1" in line, line
        assert "retrying for" in line


def test_a_url_without_the_api_path_gets_a_hint(tmp_path: Path) -> None:
    """A URL without /torc-service/v1 got Quart's generic 404 text."""
    proc = torc(tmp_path, "--url", "http://127.0.0.1:1", "status", "1")
    assert proc.returncode == 2
    assert "does not end with /torc-service/v1" in proc.stderr
    assert "did you mean http://127.0.0.1:1/torc-service/v1?" in proc.stderr


# ---------------------------------------------------------------------------------------------
# Option positions


def test_global_options_after_the_command(tmp_path: Path) -> None:
    """`torc-trio -s status 1 -f json` was 'unrecognized arguments'; `torc-trio run -o out
    b.txt` silently took `out` as the target."""
    _write(tmp_path / "b.txt", "echo b > b.out\n")
    run = torc(tmp_path, "run", "-o", "out", "b.txt")
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "out" / "job_stdio").is_dir()  # -o is run's output directory
    status = torc(tmp_path, "-s", "status", "1", "-f", "json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["counts"]["completed"] == 1
    again = torc(tmp_path, "status", "1", "--standalone", "--format", "json")
    assert json.loads(again.stdout)["id"] == 1
    # After `jobs list`, -s is its status filter, as in Torc.
    jobs = torc(tmp_path, "jobs", "list", "1", "-s", "completed", "-f", "json")
    assert [j["status"] for j in json.loads(jobs.stdout)] == ["completed"]


# ---------------------------------------------------------------------------------------------
# Exit statuses and the next step


def test_sigterm_exits_143_and_says_how_to_rerun(tmp_path: Path) -> None:
    marker = f"61.{os.getpid()}"
    _write(tmp_path / "c.txt", f"sleep {marker}\n")
    with background(tmp_path, "run", "c.txt") as run:
        wait_until(lambda: len(pids_in_group_alive(marker)) >= 1)
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=60)
    assert run.returncode == 143, out + err
    assert "To run what did not complete: torc-trio reset-status 1 --failed-only && " \
           "torc-trio run 1" in err
    assert pids_in_group_alive(marker) == []


def test_status_and_watch_exit_status_on_request(tmp_path: Path) -> None:
    _write(tmp_path / "c.txt", "true\nexit 3\n")
    assert torc(tmp_path, "run", "c.txt").returncode == 1
    assert torc(tmp_path, "status", "1").returncode == 0
    assert torc(tmp_path, "status", "1", "--exit-status").returncode == 1
    assert torc(tmp_path, "watch", "1").returncode == 0
    assert torc(tmp_path, "watch", "1", "--exit-status").returncode == 1
    _write(tmp_path / "ok.txt", "true\n")
    ok = tmp_path / "ok"
    ok.mkdir()
    (ok / "ok.txt").write_text("true\n")
    assert torc(ok, "run", "ok.txt").returncode == 0
    assert torc(ok, "status", "1", "--exit-status").returncode == 0


def test_a_lost_event_feed_exits_5(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "torc.db", cwd=tmp_path)
    try:
        env = clean_env(TORC_API_URL=server.url)
        spec = tmp_path / "wf.json"
        spec.write_text(json.dumps({"name": "w", "jobs": [{"name": "a", "command": "true"}]}))
        wid = torc_json(tmp_path, "create", str(spec), env=env)["id"]
        with background(tmp_path, "watch", str(wid), env=env) as watch:
            assert watch.stdout is not None
            watch.stdout.readline()  # it is watching: the first progress line
            server.kill()
            out, err = watch.communicate(timeout=60)
        assert watch.returncode == 5, out + err
        assert "event feed" in err
    finally:
        server.stop()


def test_a_slurm_failure_exits_4(tmp_path: Path) -> None:
    """Slurm's failures have their own status: here sbatch is not there at all."""
    _write(tmp_path / "wf.yaml", """\
        name: s
        slurm_schedulers: [{name: short, account: a, walltime: "00:10:00"}]
        jobs: [{name: a, command: "true", scheduler: short}]
        actions:
          - {trigger_type: on_workflow_start, action_type: schedule_nodes,
             scheduler: short, num_allocations: 1}
    """)
    env = clean_env(PATH="/nonexistent")
    env_path = os.path.dirname(os.path.realpath(TORC[0]))
    env["PATH"] = env_path  # python only: no sbatch
    proc = torc(tmp_path, "-s", "submit", "wf.yaml", env=env)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "sbatch" in proc.stderr


# ---------------------------------------------------------------------------------------------
# What people see


def test_times_owners_and_tables_for_people(tmp_path: Path) -> None:
    """`workflows get` showed `created_at: 1796173454.13` and `user: None`; piped tables
    wrapped mid-word (`return_cod e`)."""
    long_command = "echo " + "supercalifragilistic_" * 6
    _write(tmp_path / "c.txt", long_command + "\n")
    assert torc(tmp_path, "run", "c.txt").returncode == 0
    shown = torc(tmp_path, "workflows", "get", "1").stdout
    created = next(line for line in shown.splitlines() if "created_at" in line)
    assert "T" in created and ("+" in created or "-" in created.split("T")[1])  # ISO, offset
    assert "None" not in shown
    assert next(line for line in shown.splitlines() if line.strip().startswith("user:")) \
        .split(":", 1)[1].strip() == "-"
    jobs = torc(tmp_path, "jobs", "list", "1").stdout  # a pipe: no width limit
    assert long_command in jobs  # one piece, not wrapped or cut
    results = torc(tmp_path, "results", "list", "1").stdout
    assert "return_code" in results  # the header whole
    nothing = torc(tmp_path, "results", "list", "1", "--failed").stdout
    assert nothing == "Results of workflow 1 (run 1): none\n"  # no headings over nothing


def test_help_examples_are_aligned(tmp_path: Path) -> None:
    """exec's and submit's examples were misindented (the first line flush, the rest not)."""
    for command in (["exec"], ["submit"], ["jobs", "list"], ["results", "list"], ["run"]):
        text = torc(tmp_path, *command, "--help", check=True).stdout
        examples = text.split("examples:\n", 1)[1].splitlines()
        lines = [line for line in examples if line.strip()]
        assert lines and all(line.startswith("  torc-trio ") or line.startswith("  printf")
                             or line.startswith("  export") for line in lines), (command, lines)


# ---------------------------------------------------------------------------------------------
# Failed commands leave nothing behind, and name what the user gave


def test_refused_input_leaves_nothing_and_names_the_file(tmp_path: Path) -> None:
    _write(tmp_path / "typo.yaml", """\
        name: t
        jobs: [{name: a, comand: "true"}]
    """)
    proc = torc(tmp_path, "-s", "run", "typo.yaml")
    assert proc.returncode == 2 and "comand" in proc.stderr
    _write(tmp_path / "empty.txt", "# nothing\n\n")
    proc = torc(tmp_path, "run", "empty.txt")
    assert proc.returncode == 2
    assert "empty.txt: no commands to run" in proc.stderr
    proc = torc(tmp_path, "run", "missing.yaml")
    assert proc.returncode == 2 and "missing.yaml" in proc.stderr
    assert not (tmp_path / "torc_output").exists()


def test_a_cycle_reads_the_same_in_run_and_dry_run(tmp_path: Path) -> None:
    """`run` of a spec with a cycle showed `invalid spec (422)` where `create --dry-run`
    showed the plain message."""
    _write(tmp_path / "cyc.yaml", """\
        name: c
        jobs:
          - {name: a, command: "true", depends_on: [b]}
          - {name: b, command: "true", depends_on: [a]}
    """)
    dry = torc(tmp_path, "create", "--dry-run", "cyc.yaml")
    run = torc(tmp_path, "run", "cyc.yaml")
    assert dry.returncode == run.returncode == 2
    assert "cycle" in dry.stderr and "cycle" in run.stderr
    assert "(422)" not in run.stderr
    dry_lines = [line for line in dry.stderr.splitlines() if "cycle" in line]
    assert dry_lines[0] in run.stderr


def test_dry_run_warns_of_missing_input_files(tmp_path: Path) -> None:
    _write(tmp_path / "wf.yaml", """\
        name: w
        files: [{name: data, path: data/input.csv}]
        jobs: [{name: a, command: "cat data/input.csv", input_files: [data]}]
    """)
    proc = torc(tmp_path, "create", "--dry-run", "wf.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "warning" in proc.stderr and "data/input.csv" in proc.stderr
    assert "Spec is valid" in proc.stdout


def test_a_run_of_one_command_file_is_quick_to_report(tmp_path: Path) -> None:
    """The progress words add up: 'done' counted every final status ('4/4 done, failed 0
    canceled 4')."""
    _write(tmp_path / "c.txt", "true\nexit 1\n")
    proc = torc(tmp_path, "run", "-j", "1", "c.txt")
    last = [line for line in proc.stdout.splitlines() if line.startswith("workflow 1:")][-1]
    assert "2/2 finished (1 completed, 1 failed)" in last, last


def test_ctrl_c_of_a_command_that_waits_exits_130(tmp_path: Path) -> None:
    env = clean_env(TORC_API_URL="http://127.0.0.1:1/torc-service/v1")
    proc = subprocess.Popen([*TORC, "status", "1"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert "waiting for the server" in proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130


def test_every_exit_status_is_in_the_readme() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for status in ("0", "1", "2", "3", "4", "5", "130", "141", "143"):
        assert f"| {status} |" in readme, status
