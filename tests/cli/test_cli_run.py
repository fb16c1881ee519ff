"""The `torc-trio` command end to end: real processes, a real server, a real SQLite file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cli_helpers import (
    TORC,
    ServerProcess,
    clean_env,
    free_port,
    pids_in_group_alive,
    standalone_json,
    torc,
    torc_json,
    wait_until,
)

from torc_cli.procs import SPAWNERS


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_run_command_file_standalone_by_default(tmp_path: Path) -> None:
    write(tmp_path / "commands.txt", """
        # a comment
        echo one > one.txt

        echo two > two.txt
        echo $TORC_JOB_NAME $TORC_WORKFLOW_ID $TORC_ATTEMPT_ID > env.txt
    """)
    proc = torc(tmp_path, "run", "-j", "4", "commands.txt", check=True)
    assert "completed" in proc.stdout
    assert (tmp_path / "one.txt").read_text() == "one\n"
    assert (tmp_path / "env.txt").read_text().split() == ["job_3", "1", "1"]
    assert (tmp_path / "torc_output" / "torc.db").exists()
    # The database stays for inspection.
    status = standalone_json(tmp_path, "status", "1")
    assert status["counts"]["completed"] == 3
    jobs = standalone_json(tmp_path, "jobs", "list", "1")
    assert sorted(j["name"] for j in jobs) == ["job_1", "job_2", "job_3"]
    stdio = sorted(p.name for p in (tmp_path / "torc_output" / "job_stdio" / "0").iterdir())
    assert "job_wf1_j1_r1_a1.o" in stdio and "job_wf1_j1_r1_a1.e" in stdio


def test_spec_with_files_and_dependencies_runs_in_order(tmp_path: Path) -> None:
    write(tmp_path / "input.txt", "seed\n")
    write(tmp_path / "wf.yaml", """
        name: diamond
        files:
          - {name: input, path: input.txt}
          - {name: left, path: left.txt}
          - {name: right, path: right.txt}
          - {name: final, path: final.txt}
        jobs:
          - name: left
            command: >-
              sleep 0.2; date +%s.%N > ${files.output.left};
              cat ${files.input.input} >> ${files.output.left}
          - name: right
            command: "date +%s.%N > ${files.output.right}"
          - name: final
            command: >-
              cat ${files.input.left} ${files.input.right} > ${files.output.final};
              date +%s.%N >> ${files.output.final}
    """)
    proc = torc(tmp_path, "-s", "run", "wf.yaml", check=True)
    assert proc.returncode == 0
    lines = (tmp_path / "final.txt").read_text().split()
    left_t, seed, right_t, final_t = lines
    assert seed == "seed"
    assert float(final_t) >= float(left_t) and float(final_t) >= float(right_t)


def test_exec_params_product_and_zip(tmp_path: Path) -> None:
    torc(tmp_path, "exec", "-j", "2", "--param", "i=1:2", "--param", "x=['a','b']",
         "-c", "echo {i}{x} >> product.txt", check=True)
    assert sorted((tmp_path / "product.txt").read_text().split()) == ["1a", "1b", "2a", "2b"]
    torc(tmp_path, "exec", "--param", "i=1:3", "--param", "j=[7,8,9]", "--link", "zip",
         "-c", "echo {i}-{j} >> zip.txt", check=True)
    assert sorted((tmp_path / "zip.txt").read_text().split()) == ["1-7", "2-8", "3-9"]
    torc(tmp_path, "exec", "--", "touch", "from argv.txt", check=True)
    assert (tmp_path / "from argv.txt").exists()


def test_failure_cancels_dependents_and_exit_status(tmp_path: Path) -> None:
    write(tmp_path / "wf.yaml", """
        name: fails
        jobs:
          - {name: bad, command: "exit 3"}
          - {name: after_bad, command: "touch after_bad", depends_on: [bad]}
          - {name: fine, command: "touch fine"}
    """)
    proc = torc(tmp_path, "-s", "run", "wf.yaml")
    assert proc.returncode == 1
    assert "bad" in proc.stdout and "3" in proc.stdout
    assert not (tmp_path / "after_bad").exists()
    assert (tmp_path / "fine").exists()
    status = standalone_json(tmp_path, "status", "1")
    assert status["counts"]["failed"] == 1
    assert status["counts"]["canceled"] == 1
    assert status["counts"]["completed"] == 1
    # Reset the failed part only: the completed job stays completed.
    torc(tmp_path, "-s", "reset-status", "1", "--failed-only", check=True)
    jobs = {j["name"]: j["status"] for j in standalone_json(tmp_path, "jobs", "list", "1")}
    assert jobs == {"bad": "ready", "after_bad": "blocked", "fine": "completed"}


def test_a_job_that_cannot_start_fails_by_name(tmp_path: Path) -> None:
    """Its stdout path is taken by a directory: the job fails with exit code 127 and the
    reason, naming that path, in its stderr file; the others run; the exit status says so."""
    write(tmp_path / "commands.txt", """
        echo first > first.txt
        echo second > second.txt
    """)
    blocker = tmp_path / "torc_output" / "job_stdio" / "0" / "job_wf1_j1_r1_a1.o"
    blocker.mkdir(parents=True)
    proc = torc(tmp_path, "run", "-j", "2", "commands.txt")
    assert proc.returncode == 1
    assert (tmp_path / "second.txt").read_text() == "second\n"
    assert not (tmp_path / "first.txt").exists()
    results = {r["job_id"]: r for r in standalone_json(tmp_path, "results", "list", "1")}
    assert results[1]["return_code"] == 127 and results[1]["status"] == "failed"
    assert results[2]["return_code"] == 0
    reason = (blocker.parent / "job_wf1_j1_r1_a1.e").read_text()
    assert "could not start job" in reason and str(blocker) in reason
    assert "127" in proc.stdout


def test_reset_failed_then_run_reruns_only_failed_part(tmp_path: Path) -> None:
    write(tmp_path / "wf.yaml", """
        name: flaky
        jobs:
          - {name: flaky, command: "test -e ok || exit 5; echo x >> flaky.log"}
          - {name: after, command: "echo x >> after.log", depends_on: [flaky]}
          - {name: other, command: "echo x >> other.log"}
    """)
    assert torc(tmp_path, "-s", "run", "wf.yaml").returncode == 1
    (tmp_path / "ok").touch()
    torc(tmp_path, "-s", "reset-status", "1", "--failed-only", check=True)
    torc(tmp_path, "-s", "run", "1", check=True)
    assert (tmp_path / "flaky.log").read_text() == "x\n"
    assert (tmp_path / "after.log").read_text() == "x\n"
    assert (tmp_path / "other.log").read_text() == "x\n"  # ran once, not rerun


def test_reinitialize_after_touching_input_reruns_downstream_only(tmp_path: Path) -> None:
    write(tmp_path / "a.in", "1\n")
    write(tmp_path / "b.in", "2\n")
    write(tmp_path / "wf.yaml", """
        name: reinit
        files:
          - {name: a_in, path: a.in}
          - {name: b_in, path: b.in}
          - {name: a_out, path: a.out}
        jobs:
          - {name: a, command: "cat ${files.input.a_in} > ${files.output.a_out}; echo a >> log"}
          - {name: a2, command: "cat ${files.input.a_out} > /dev/null; echo a2 >> log"}
          - {name: b, command: "cat ${files.input.b_in} > /dev/null; echo b >> log"}
    """)
    torc(tmp_path, "-s", "run", "wf.yaml", check=True)
    assert sorted((tmp_path / "log").read_text().split()) == ["a", "a2", "b"]
    write(tmp_path / "a.in", "changed\n")
    os.utime(tmp_path / "a.in", (time.time() + 5, time.time() + 5))
    dry = standalone_json(tmp_path, "reinitialize", "1", "--dry-run")
    assert dry["dry_run"] is True and len(dry["jobs"]) == 2
    (tmp_path / "log").unlink()
    torc(tmp_path, "-s", "reinitialize", "1", check=True)
    torc(tmp_path, "-s", "run", "1", check=True)
    assert sorted((tmp_path / "log").read_text().split()) == ["a", "a2"]


def test_missing_required_input_file_is_refused_by_name(tmp_path: Path) -> None:
    write(tmp_path / "wf.yaml", """
        name: missing
        files:
          - {name: data, path: data/input.csv}
          - {name: also, path: also.csv}
        jobs:
          - {name: use, command: "cat ${files.input.data} ${files.input.also}"}
    """)
    proc = torc(tmp_path, "-s", "run", "wf.yaml")
    assert proc.returncode == 2
    assert "data/input.csv" in proc.stderr and "also.csv" in proc.stderr
    # Nothing was created.
    assert not (tmp_path / "torc_output").exists()  # nothing left behind


def test_bad_spec_reports_located_errors_and_creates_nothing(tmp_path: Path) -> None:
    write(tmp_path / "wf.yaml", """
        name: bad
        jobs:
          - {name: a, command: "true", depends_on: [nope]}
          - {name: b, command: "true", colour: blue}
    """)
    proc = torc(tmp_path, "-s", "run", "wf.yaml")
    assert proc.returncode == 2
    assert "jobs[0] 'a'" in proc.stderr and "nope" in proc.stderr
    assert "colour" in proc.stderr
    assert not (tmp_path / "torc_output").exists()  # nothing left behind


def test_create_dry_run_json(tmp_path: Path) -> None:
    write(tmp_path / "wf.yaml", """
        name: fan
        jobs:
          - {name: "s1_{i}", command: "true", parameters: {i: "1:100"}}
          - {name: "s2_{i}", command: "true", parameters: {i: "1:100"},
             depends_on_regexes: ["s1_.*"]}
    """)
    summary = torc_json(tmp_path, "create", "--dry-run", "wf.yaml")
    assert summary["jobs"] == 200
    assert summary["dependencies"] <= 210  # 100 x 100 through one barrier


def test_sigterm_terminates_jobs_and_rerun_finishes(tmp_path: Path) -> None:
    # A distinctive sleep duration marks every job process (bash and its sleep) in /proc.
    marker = f"59.{os.getpid()}"
    write(tmp_path / "commands.txt", "\n".join(
        f"test -e go || sleep {marker}; echo {i} >> done.log" for i in range(3)) + "\n")
    proc = subprocess.Popen([*TORC, "run", "-j", "3", "commands.txt"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env())
    wait_until(lambda: len(pids_in_group_alive(marker)) >= 6)  # 3 x (bash + sleep)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143  # terminated, as a shell says
    wait_until(lambda: pids_in_group_alive(marker) == [], timeout_s=10)
    status = standalone_json(tmp_path, "status", "1")
    assert status["counts"]["terminated"] == 3, (out, err)
    (tmp_path / "go").touch()
    torc(tmp_path, "-s", "reset-status", "1", "--failed-only", check=True)
    torc(tmp_path, "-s", "run", "1", check=True)
    assert sorted((tmp_path / "done.log").read_text().split()) == ["0", "1", "2"]


def _children(pid: int) -> dict[int, str]:
    """The child processes of ``pid``: pid -> command line."""
    out = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            if entry.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                cmdline = (entry / "cmdline").read_bytes()
                out[int(entry.name)] = cmdline.replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return out


_COUNT_SPAWNERS = """
import os

def ppid(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])

def cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()

spawner = os.getppid()  # up from the job's shell to the spawner that started it
while b"spawner.py" not in cmdline(spawner):
    spawner = ppid(spawner)
runner = ppid(spawner)
count = 0
for name in os.listdir("/proc"):
    try:
        count += name.isdigit() and ppid(name) == runner and b"spawner.py" in cmdline(name)
    except (OSError, ValueError, IndexError):
        pass
print(count)
"""


@pytest.mark.parametrize(("command", "parallel", "expected"), [
    ("run", ["-j", "1"], 1), ("run", ["-j", "2"], 2), ("run", ["-j", "32"], SPAWNERS),
    ("run", [], SPAWNERS), ("exec", ["-j", "1"], 1), ("run-existing", ["-j", "1"], 1)])
def test_a_runner_starts_no_more_spawners_than_jobs_can_run(
        tmp_path: Path, command: str, parallel: list[str], expected: int) -> None:
    """Each spawner overlaps the start of one job with the others': with -j 1 a second one
    would only cost a process (the count is seen by a job, while the run is going on)."""
    write(tmp_path / "count.py", _COUNT_SPAWNERS)
    line = f"{sys.executable} count.py > spawners.txt"
    if command == "run":
        write(tmp_path / "commands.txt", line + "\n")
        torc(tmp_path, "run", *parallel, "commands.txt", check=True)
    elif command == "run-existing":  # the runner starts its spawners itself
        (tmp_path / "spec.json").write_text(json.dumps(
            {"name": "count", "jobs": [{"name": "count", "command": line}]}))
        torc(tmp_path, "-s", "create", "spec.json", check=True)
        torc(tmp_path, "-s", "run", *parallel, "1", check=True)
    else:
        torc(tmp_path, "exec", *parallel, "-c", line, check=True)
    assert int((tmp_path / "spawners.txt").read_text()) == expected


def test_sigkill_of_a_standalone_run_leaves_nothing_running(tmp_path: Path) -> None:
    """kill -9 of `torc-trio run`: its standalone server shuts down by itself and its jobs are
    killed (by the runner's spawner); the database stays readable."""
    marker = f"61.{os.getpid()}"
    write(tmp_path / "commands.txt", f"sleep {marker}\nsleep {marker}\n")
    proc = subprocess.Popen([*TORC, "run", "-j", "2", "commands.txt"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env())
    try:
        wait_until(lambda: len(pids_in_group_alive(marker)) == 2)
        servers = [p for p, cmd in _children(proc.pid).items() if "torc_net.server" in cmd]
        assert len(servers) == 1
    finally:
        proc.kill()
        proc.wait()
    # A job outliving its runner, or the standalone server its command, fails the wait.
    wait_until(lambda: not pids_in_group_alive(marker)
               and not Path(f"/proc/{servers[0]}").exists(), timeout_s=15)
    status = standalone_json(tmp_path, "status", "1")
    assert sum(status["counts"].values()) == 2


def _run_until_outage(tmp_path: Path, server: ServerProcess, jobs: int, before: int,
                      *run_args: str) -> tuple[dict[str, str], int, subprocess.Popen[str]]:
    """Create ``jobs`` jobs (each sleeps 0.3 s, then appends its index to ran.log), start
    ``torc-trio run`` on them, and kill the server once ``before`` have run."""
    env = clean_env(TORC_API_URL=server.url)
    spec = {"name": "outage", "jobs": [
        {"name": f"j{i}", "command": f"sleep 0.3; echo {i} >> ran.log"} for i in range(jobs)]}
    (tmp_path / "outage.json").write_text(json.dumps(spec))
    wid = torc_json(tmp_path, "create", "outage.json", env=env)["id"]
    runner = subprocess.Popen(
        [*TORC, "run", str(wid), "-j", "2", *run_args], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    log = tmp_path / "ran.log"
    wait_until(lambda: log.exists() and len(log.read_text().split()) >= before, timeout_s=30)
    server.kill()
    return env, wid, runner


def test_server_killed_and_restarted_mid_run_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "torc.db"
    server = ServerProcess(db, port=port, cwd=tmp_path)
    try:
        env, wid, runner = _run_until_outage(tmp_path, server, 12, 3)
        # Jobs keep running while the server is down: more of them end before it is back.
        log = tmp_path / "ran.log"
        done = len(log.read_text().split())
        wait_until(lambda: len(log.read_text().split()) > done, timeout_s=30)
        server = ServerProcess(db, port=port, cwd=tmp_path)
        out, err = runner.communicate(timeout=120)
        assert runner.returncode == 0, (out, err)
        status = torc_json(tmp_path, "status", str(wid), env=env)
        assert status["counts"]["completed"] == 12
        ran = (tmp_path / "ran.log").read_text().split()
        assert sorted(ran, key=int) == [str(i) for i in range(12)], "a job ran twice or never"
        results = torc_json(tmp_path, "results", "list", str(wid), env=env)
        assert len(results) == 12
    finally:
        server.stop()


def test_server_gone_for_good_keeps_every_result(tmp_path: Path) -> None:
    """The server dies and does not come back within --wait-for-server-minutes: the runner
    finishes what it runs, then writes the results it could not report to a file and exits
    with an error. Every job that ran is in the database or in that file."""
    port = free_port()
    db = tmp_path / "torc.db"
    server = ServerProcess(db, port=port, cwd=tmp_path)
    try:
        env, wid, runner = _run_until_outage(tmp_path, server, 8, 2,
                                             "--wait-for-server-minutes", "0.05")
        out, err = runner.communicate(timeout=120)
        assert runner.returncode != 0, (out, err)
        saved = list((tmp_path / "torc_output").glob(f"unreported_results_wf{wid}_cn*.json"))
        assert len(saved) == 1, (out, err)
        unreported = json.loads(saved[0].read_text())
        assert unreported and all(r["return_code"] == 0 for r in unreported)
        server = ServerProcess(db, port=port, cwd=tmp_path)
        names = {j["id"]: j["name"] for j in torc_json(tmp_path, "jobs", "list", str(wid),
                                                        env=env)}
        recorded = {names[r["job_id"]] for r in torc_json(tmp_path, "results", "list",
                                                            str(wid), env=env)}
        kept = recorded | {names[r["job_id"]] for r in unreported}
        ran = {f"j{i}" for i in (tmp_path / "ran.log").read_text().split()}
        assert ran <= kept, "a job ran and its result was lost"
    finally:
        server.stop()


def test_watch_prints_transitions(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "torc.db", cwd=tmp_path)
    try:
        env = clean_env(TORC_API_URL=server.url)
        spec = {"name": "watched", "jobs": [
            {"name": "first", "command": "sleep 0.5"},
            {"name": "second", "command": "true", "depends_on": ["first"]}]}
        (tmp_path / "w.json").write_text(json.dumps(spec))
        wid = torc_json(tmp_path, "create", "w.json", env=env)["id"]
        watch = subprocess.Popen([*TORC, "watch", str(wid)], cwd=tmp_path, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert watch.stdout is not None
        watch.stdout.readline()  # it watches: its first progress line
        torc(tmp_path, "run", str(wid), env=env, check=True)
        out, err = watch.communicate(timeout=60)
        assert watch.returncode == 0, err
        assert "job first" in out, out
        assert "running -> completed" in out or "pending -> completed" in out, out
        assert "job second" in out and "blocked -> ready" in out, out
    finally:
        server.stop()


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["exec", "--help"],
                                  ["status", "--help"], ["serve", "--help"]])
def test_help_has_examples(tmp_path: Path, args: list[str]) -> None:
    proc = torc(tmp_path, *args, check=True)
    assert "example" in proc.stdout
