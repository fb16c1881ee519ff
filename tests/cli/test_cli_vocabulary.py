"""Torc's vocabulary beyond running: workflows export/import, reports summary, logs analyze,
events monitor, jobs get and jobs log, through the real command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import TORC, ServerProcess, clean_env, torc, torc_json, wait_until

#: dependencies (explicit and through a file), files, user data, a resource requirement, a
#: failure handler that retries once, an action, metadata, a stdio mode and a priority
SPEC: dict[str, Any] = {
    "name": "trip",
    "description": "export and import",
    "metadata": {"owner": "team-a"},
    "execution_config": {"stdio": {"mode": "combined"}},
    "files": [{"name": "raw", "path": "raw.txt"}, {"name": "out", "path": "out.txt"}],
    "user_data": [{"name": "cfg", "data": {"alpha": 1, "list": [1, 2]}}],
    "resource_requirements": [{"name": "small", "num_cpus": 1, "memory": "10m",
                               "runtime": "PT2M"}],
    "failure_handlers": [{"name": "again", "rules": [{"exit_codes": [3], "max_retries": 1}]}],
    "jobs": [
        {"name": "make", "command": "echo made > raw.txt", "output_files": ["raw"],
         "resource_requirements": "small"},
        {"name": "use", "command": "cat raw.txt > out.txt", "input_files": ["raw"],
         "output_files": ["out"], "input_user_data": ["cfg"]},
        {"name": "flaky", "command": "echo flaky >&2; exit 3", "failure_handler": "again"},
        {"name": "after", "command": "echo after", "depends_on": ["use"], "priority": 4,
         "stdio": {"mode": "separate"}},
    ],
    "actions": [{"trigger_type": "on_jobs_complete", "action_type": "run_commands",
                 "jobs": ["after"], "commands": ["echo action"]}],
}


@pytest.fixture
def second(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Another server, with a database of its own."""
    (tmp_path / "second").mkdir()
    srv = ServerProcess(tmp_path / "second" / "torc.db")
    try:
        yield srv
    finally:
        srv.stop()


def _write(tmp_path: Path, doc: dict[str, Any], name: str = "wf.json") -> str:
    (tmp_path / name).write_text(json.dumps(doc))
    return name


def _jobs_by_name(jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Jobs with their dependencies, files and user data by name (ids differ by server)."""
    names = {j["id"]: j["name"] for j in jobs}
    return {j["name"]: {"command": j["command"], "depends_on": sorted(names[d] for d in
                                                                      j["depends_on"]),
                        "resource_requirements": j["resource_requirements"],
                        "priority": j["priority"], "stdio": j["stdio"],
                        "failure_handler": j["failure_handler"],
                        "memory_bytes": j["memory_bytes"], "runtime_s": j["runtime_s"],
                        "files": (len(j["input_files"]), len(j["output_files"])),
                        "user_data": len(j["input_user_data"])}
            for j in jobs}


def _results(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted((r["job_name"], r["run_id"], r["attempt"], r["return_code"], r["status"],
                   r["exec_time_s"], r["completed_at"]) for r in rows)


def test_export_and_import_into_another_server(tmp_path: Path, second: ServerProcess) -> None:
    run = torc(tmp_path, "-s", "run", _write(tmp_path, SPEC))
    assert run.returncode == 1, run.stdout + run.stderr  # flaky failed, twice
    stats = torc_json(tmp_path, "-s", "workflows", "export", "1", "-o", "e.json",
                      "--include-results")
    assert stats == {"success": True, "workflow_id": 1, "workflow_name": "trip",
                     "output_file": "e.json", "jobs": 4, "files": 2, "user_data": 1,
                     "results": 5, "events": 0}
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["export_version"] == "1.0" and "events" not in doc
    by_id = {j["id"]: j for j in doc["jobs"]}
    use = next(j for j in doc["jobs"] if j["name"] == "use")
    assert [by_id[i]["name"] for i in use["depends_on_job_ids"]] == ["make"]
    assert [f["name"] for f in doc["files"] if f["id"] in use["input_file_ids"]] == ["raw"]
    assert doc["workflow_actions"][0]["job_ids"] == [
        j["id"] for j in doc["jobs"] if j["name"] == "after"]
    # Without -o the document itself goes to stdout.
    printed = json.loads(torc(tmp_path, "-s", "workflows", "export", "1", check=True).stdout)
    assert {k for k in printed if k != "exported_at"} == {
        k for k in doc if k not in ("exported_at", "results")}

    env = clean_env(TORC_API_URL=second.url)
    # An earlier workflow there: the imported one gets ids of its own.
    torc(tmp_path, "create", _write(tmp_path, {"name": "first", "jobs": [
        {"name": "x", "command": "true"}, {"name": "y", "command": "true"}]}, "first.json"),
        env=env, check=True)
    imported = torc_json(tmp_path, "workflows", "import", "e.json", "--name", "copy", env=env)
    wid = imported["workflow_id"]
    assert (wid, imported["workflow_name"], imported["jobs"], imported["files"],
            imported["user_data"], imported["results"]) == (2, "copy", 4, 2, 1, 5)
    assert imported["run_id"] == 2  # past the imported run 1
    assert imported["counts"] == {"ready": 2, "blocked": 2}  # fresh, initialized

    source_jobs = torc_json(tmp_path, "-s", "jobs", "list", "1")
    target_jobs = torc_json(tmp_path, "jobs", "list", str(wid), env=env)
    source_ids = {j["name"]: j["id"] for j in source_jobs}
    assert all(j["id"] != source_ids[j["name"]] for j in target_jobs)  # new ids, remapped
    assert _jobs_by_name(target_jobs) == _jobs_by_name(source_jobs)
    assert [(f["name"], f["path"], f["st_mtime"]) for f in doc["files"]] == [
        (f["name"], f["path"], f["st_mtime"])
        for f in json.loads(torc(tmp_path, "workflows", "export", str(wid), env=env,
                                 check=True).stdout)["files"]]
    source_results = torc_json(tmp_path, "-s", "results", "list", "1", "--all-runs")
    target_results = torc_json(tmp_path, "results", "list", str(wid), "--all-runs", env=env)
    assert _results(target_results) == _results(source_results)
    assert all(r["compute_node_id"] is None for r in target_results)
    again = json.loads(torc(tmp_path, "workflows", "export", str(wid), env=env,
                            check=True).stdout)
    for key in ("user_data", "resource_requirements", "failure_handlers"):
        assert [{k: v for k, v in item.items() if k != "id"} for item in again[key]] == [
            {k: v for k, v in item.items() if k != "id"} for item in doc[key]], key
    assert again["workflow"]["description"] == "export and import"
    copy = torc_json(tmp_path, "workflows", "get", str(wid), env=env)
    assert copy["metadata"] == {"owner": "team-a"}
    assert copy["spec_settings"]["execution_config"]["stdio"]["mode"] == "combined"
    assert [(r["stdout_path"], r["stderr_path"]) for r in sorted(
        target_results, key=lambda r: (r["job_name"], r["attempt"]))] == [
        (r["stdout_path"], r["stderr_path"]) for r in sorted(
            source_results, key=lambda r: (r["job_name"], r["attempt"]))]

    # The copy runs as a new run: its results join the imported ones, none is lost.
    torc(tmp_path, "run", str(wid), "-o", "second_out", env=env)
    runs = _results(torc_json(tmp_path, "results", "list", str(wid), "--all-runs", env=env))
    assert [r[:4] for r in runs if r[1] == 2] == [
        ("after", 2, 1, 0), ("flaky", 2, 1, 3), ("flaky", 2, 2, 3), ("make", 2, 1, 0),
        ("use", 2, 1, 0)]
    assert len(runs) == 10

    # --skip-results, and stdin.
    proc = subprocess.run([*TORC, "-f", "json", "workflows", "import", "-", "--skip-results"],
                          input=(tmp_path / "e.json").read_text(), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    plain = json.loads(proc.stdout)
    assert plain["results"] == 0 and plain["run_id"] == 1 and plain["workflow_name"] == "trip"


def test_import_refuses_what_it_cannot_do_and_creates_nothing(tmp_path: Path) -> None:
    torc(tmp_path, "-s", "run", _write(tmp_path, {"name": "small", "jobs": [
        {"name": "a", "command": "true"}, {"name": "b", "command": "true",
                                           "depends_on": ["a"]}]}), check=True)
    torc(tmp_path, "-s", "workflows", "export", "1", "--include-events", "-o", "ev.json",
         check=True)
    doc = json.loads((tmp_path / "ev.json").read_text())
    assert [e["kind"] for e in doc["events"]][:2] == ["created", "initialized"]

    other = ["-s", "--db", "other/torc.db"]
    refused = torc(tmp_path, *other, "workflows", "import", "ev.json")
    assert refused.returncode == 2
    assert "does not import events" in refused.stderr and "--skip-events" in refused.stderr
    broken = dict(doc, jobs=[{**doc["jobs"][1], "depends_on_job_ids": [999]}])
    cases = {
        "missing.json": "cannot read",
        _write(tmp_path, {"name": "x"}, "spec.json"): "no export_version",
        _write(tmp_path, {**doc, "export_version": "9"}, "v9.json"): "export_version '9'",
        _write(tmp_path, broken, "broken.json"): "no jobs with id 999",
    }
    (tmp_path / "bad.json").write_text("{not json")
    cases["bad.json"] = "not a JSON export document"
    for name, message in cases.items():
        proc = torc(tmp_path, *other, "workflows", "import", name, "--skip-events")
        assert proc.returncode == 2, (name, proc.stderr)
        assert name in proc.stderr or "standard input" in proc.stderr, proc.stderr
        assert message in proc.stderr, (name, proc.stderr)
    assert not (tmp_path / "other").exists()  # nothing was created anywhere

    ok = torc_json(tmp_path, *other, "workflows", "import", "ev.json", "--skip-events")
    assert (ok["jobs"], ok["events"]) == (2, 0)
    assert torc(tmp_path, "-s", "workflows", "export", "7").returncode == 2
    unwritable = torc(tmp_path, "-s", "workflows", "export", "1", "-o", "no/such/dir/e.json")
    assert unwritable.returncode == 2 and "no/such/dir/e.json" in unwritable.stderr


#: one job per known cause, one without a known cause, and one that succeeds
FAILING: dict[str, Any] = {"name": "failing", "jobs": [
    {"name": "ok", "command": "echo fine"},
    {"name": "py", "command": "python3 -c \"raise ValueError('boom')\""},
    {"name": "oom", "command": "echo 'slurmstepd: error: Detected 1 oom-kill event(s)' >&2; "
                               "exit 137"},
    {"name": "segv", "command": "kill -SEGV $$"},
    {"name": "nocmd", "command": "no_such_command_here_42"},
    {"name": "slow", "command": "echo '*** JOB 9 CANCELLED AT 12:00 DUE TO TIME LIMIT ***' "
                                ">&2; exit 1"},
    {"name": "odd", "command": "echo one >&2; echo two >&2; exit 4"},
]}


def test_reports_summary_and_logs_analyze(tmp_path: Path) -> None:
    run = torc(tmp_path, "-s", "run", _write(tmp_path, FAILING), "-j", "4")
    assert run.returncode == 1, run.stdout + run.stderr
    summary = torc_json(tmp_path, "-s", "reports", "summary", "1")
    assert summary["workflow_name"] == "failing" and summary["is_complete"] is True
    assert {k: v for k, v in summary["jobs_by_status"].items() if v} == {
        "completed": 1, "failed": 6}
    assert summary["results"] == 7 and summary["total_exec_time_seconds"] > 0
    assert summary["mean_exec_time_seconds"] == pytest.approx(
        summary["total_exec_time_seconds"] / 7)
    codes = {f["job_name"]: f["return_code"] for f in summary["failed_jobs"]}
    assert codes == {"py": 1, "oom": 137, "segv": 139, "nocmd": 127, "slow": 1, "odd": 4}
    for failed in summary["failed_jobs"]:
        assert (tmp_path / failed["stderr"]).is_file(), failed
    text = torc(tmp_path, "-s", "reports", "summary", "1", check=True).stdout
    assert "Workflow Summary" in text and "Failed:        6" in text
    assert "oom (id 3): failed, exit code 137 (killed by SIGKILL), attempt 1" in text
    assert "segv (id 4): failed, exit code 139 (killed by SIGSEGV)" in text

    rows = {r["job_name"]: r for r in torc_json(tmp_path, "-s", "logs", "analyze", "1")}
    assert {name: r["cause"] for name, r in rows.items()} == {
        "py": "python_traceback", "oom": "out_of_memory", "segv": "segfault",
        "nocmd": "command_not_found", "slow": "time_limit", "odd": None}
    assert rows["py"]["match"] == "ValueError: boom"
    assert "oom-kill" in rows["oom"]["match"]
    assert "command not found" in rows["nocmd"]["match"]
    assert rows["odd"]["stderr_tail"] == ["one", "two"]
    lines = torc(tmp_path, "-s", "logs", "analyze", "1", check=True).stdout.splitlines()
    assert any(ln.startswith("py (id 2, failed, exit code 1): Python exception: ")
               and ln.endswith("ValueError: boom") for ln in lines), lines
    assert any(ln.startswith("odd (id 7") and "no known cause" in ln for ln in lines), lines
    assert "    two" in lines

    # The files moved (as from another node's disk): found under --output-dir; where they
    # are in neither place, said per job with the paths looked at.
    (tmp_path / "torc_output" / "job_stdio").rename(tmp_path / "job_stdio")
    (tmp_path / "moved").mkdir()
    (tmp_path / "job_stdio").rename(tmp_path / "moved" / "job_stdio")
    moved = torc_json(tmp_path, "-s", "logs", "analyze", "1", "-o", "moved")
    assert {r["job_name"]: r["cause"] for r in moved} == {
        name: r["cause"] for name, r in rows.items()}
    elsewhere = torc_json(tmp_path, "-s", "logs", "analyze", "1", "-o", "elsewhere")
    assert all(r["cause"] in (None, "segfault", "command_not_found") for r in elsewhere)
    assert all(len(r["missing"]) == 2 for r in elsewhere)
    assert f"no output files at {tmp_path}/torc_output/job_stdio/0/" in torc(
        tmp_path, "-s", "logs", "analyze", "1", "--output-dir", "elsewhere").stdout
    assert torc(tmp_path, "-s", "reports", "summary", "5").returncode == 2


def test_logs_analyze_reads_only_the_end_of_a_big_file(tmp_path: Path) -> None:
    """A job that wrote 3 MB: only the last ~1 MB is read, so an early match does not count
    and the late one does."""
    command = ("python3 -c \"import sys; sys.stderr.write('MemoryError early\\n' + "
               "'x' * 3000000 + '\\nTraceback (most recent call last):\\nKeyError: 7\\n'); "
               "sys.exit(1)\"")
    torc(tmp_path, "-s", "run", _write(tmp_path, {"name": "big", "jobs": [
        {"name": "big", "command": command}]}))
    (row,) = torc_json(tmp_path, "-s", "logs", "analyze", "1")
    assert (row["cause"], row["match"]) == ("python_traceback", "KeyError: 7")


def test_jobs_get_and_jobs_log(tmp_path: Path) -> None:
    torc(tmp_path, "-s", "run", _write(tmp_path, {"name": "one", "jobs": [
        {"name": "a", "command": "echo a"}]}), check=True)
    torc(tmp_path, "-s", "run", _write(tmp_path, {
        "name": "two", "failure_handlers": [{"name": "h", "rules": [
            {"exit_codes": [5], "max_retries": 1}]}],
        "jobs": [{"name": "hello", "command": "echo out-$TORC_ATTEMPT_ID; "
                                              "echo err-$TORC_ATTEMPT_ID >&2"},
                 {"name": "twice", "command": "echo try-$TORC_ATTEMPT_ID; exit 5",
                  "failure_handler": "h"}]}, "two.json"))
    job = torc_json(tmp_path, "-s", "jobs", "get", "2")  # ids are global: workflow 2's first
    assert (job["workflow_id"], job["name"], job["status"]) == (2, "hello", "completed")
    assert "name: hello" in torc(tmp_path, "-s", "jobs", "get", "2", check=True).stdout
    missing = torc(tmp_path, "-s", "jobs", "get", "99")
    assert missing.returncode == 2 and "no job 99" in missing.stderr
    assert torc(tmp_path, "-s", "jobs", "get", "0").returncode == 2

    assert torc(tmp_path, "-s", "jobs", "log", "2", "2", check=True).stdout == "out-1\n"
    assert torc(tmp_path, "-s", "jobs", "log", "2", "2", "--stderr",
                check=True).stdout == "err-1\n"
    assert torc(tmp_path, "-s", "jobs", "log", "2", "3", check=True).stdout == "try-2\n"
    assert torc(tmp_path, "-s", "jobs", "log", "2", "3", "--attempt", "1",
                check=True).stdout == "try-1\n"
    lines = [json.loads(ln) for ln in torc(tmp_path, "-s", "-f", "json", "jobs", "log", "2",
                                           "3", check=True).stdout.splitlines()]
    assert lines == [{"workflow_id": 2, "job_id": 3, "run_id": 1, "attempt": 2,
                      "stream": "stdout", "line": "try-2"}]

    too_far = torc(tmp_path, "-s", "jobs", "log", "2", "3", "--attempt", "3")
    assert too_far.returncode == 2 and "--attempt 3" in too_far.stderr
    other = torc(tmp_path, "-s", "jobs", "log", "2", "1")  # workflow 1's job
    assert other.returncode == 2 and "no job 1 in workflow 2" in other.stderr
    recorded = tmp_path / "torc_output" / "job_stdio" / "0" / "job_wf2_j2_r1_a1.o"
    recorded.rename(tmp_path / "moved.o")  # as if on another node's disk
    gone = torc(tmp_path, "-s", "jobs", "log", "2", "2", "-o", "elsewhere")
    assert gone.returncode == 2
    assert f"{recorded}: no such file" in gone.stderr
    assert "file system" in gone.stderr


def test_jobs_log_follow_prints_until_the_job_ends(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "torc.db")
    env = clean_env(TORC_API_URL=srv.url)
    try:
        spec = _write(tmp_path, {"name": "slow", "jobs": [{"name": "waits", "command": (
            "echo first; while [ ! -e go ]; do sleep 0.05; done; echo second")}]})
        wid = torc_json(tmp_path, "create", spec, env=env)["id"]
        job = torc_json(tmp_path, "jobs", "list", str(wid), env=env)[0]["id"]
        with open(tmp_path / "follow.out", "w") as out, open(tmp_path / "follow.err", "w") as err:
            follow = subprocess.Popen([*TORC, "jobs", "log", str(wid), str(job), "--follow",
                                       "--poll-interval", "0.2"], cwd=tmp_path, env=env,
                                      stdout=out, stderr=err)
            # Before the job runs: it waits for the file, and says so.
            wait_until(lambda: "waiting for torc_output/job_stdio/0/job_wf1_j1_r1_a1.o"
                       in (tmp_path / "follow.err").read_text())
            run = subprocess.Popen([*TORC, "run", str(wid)], cwd=tmp_path, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_until(lambda: (tmp_path / "follow.out").read_text() == "first\n")
                assert follow.poll() is None  # the job still runs: still following
                (tmp_path / "go").touch()
                assert follow.wait(timeout=60) == 0
                assert run.wait(timeout=60) == 0
            finally:
                for proc in (follow, run):
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
        assert (tmp_path / "follow.out").read_text() == "first\nsecond\n"
    finally:
        srv.stop()


def test_events_monitor_prints_every_event_until_the_end(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "torc.db")
    env = clean_env(TORC_API_URL=srv.url)
    try:
        spec = _write(tmp_path, {"name": "chain", "jobs": [
            {"name": "a", "command": "true"}, {"name": "b", "command": "exit 2",
                                               "depends_on": ["a"]},
            {"name": "c", "command": "true", "depends_on": ["b"]}]})
        wid = str(torc_json(tmp_path, "create", spec, env=env)["id"])
        with open(tmp_path / "monitor.out", "w") as out:
            monitor = subprocess.Popen([*TORC, "-f", "json", "events", "monitor", wid],
                                       cwd=tmp_path, env=env, stdout=out,
                                       stderr=subprocess.PIPE, text=True)
            try:
                wait_until(lambda: (tmp_path / "monitor.out").read_text().endswith("\n"))
                torc(tmp_path, "run", wid, env=env)
                _, err = monitor.communicate(timeout=60)
            finally:
                if monitor.poll() is None:
                    monitor.kill()
                    monitor.wait()
        assert monitor.returncode == 0, err
        messages = [json.loads(ln) for ln in
                    (tmp_path / "monitor.out").read_text().splitlines()]
        assert messages[0]["type"] == "counts" and messages[0]["counts"]["ready"] == 1
        changes = [(m["name"], m["new"]) for m in messages if m["type"] == "job_status"]
        for step in [("a", "completed"), ("b", "failed"), ("c", "canceled")]:
            assert step in changes, changes
        assert changes.index(("a", "completed")) < changes.index(("b", "failed"))
        assert messages[-1] == {**messages[-1], "type": "workflow", "event": "completed"}

        # A finished workflow: where it stands, in one line, and done.
        text = torc(tmp_path, "events", "monitor", wid, env=env, check=True).stdout
        assert text.rstrip().endswith(f"workflow {wid}: 1 completed, 1 failed, 1 canceled")

        # --duration ends a monitor of a workflow that does not move.
        idle = torc_json(tmp_path, "create", spec, env=env)["id"]
        ended = torc(tmp_path, "events", "monitor", str(idle), "--duration", "0.01", env=env)
        assert ended.returncode == 0 and "stopped after 0.01 minutes" in ended.stderr
        assert f"workflow {idle}: 2 blocked, 1 ready" in ended.stdout
        for bad in ("0", "-1", "soon"):
            misuse = torc(tmp_path, "events", "monitor", str(idle), "--duration", bad, env=env)
            assert misuse.returncode == 2 and "--duration" in misuse.stderr

        # The server goes away: the feed is lost, exit 5.
        with open(tmp_path / "lost.out", "w") as out:
            lost = subprocess.Popen([*TORC, "events", "monitor", str(idle)], cwd=tmp_path,
                                    env=env, stdout=out, stderr=subprocess.PIPE, text=True)
            try:
                wait_until(lambda: (tmp_path / "lost.out").read_text().endswith("\n"))
                srv.stop()
                _, err = lost.communicate(timeout=60)
            finally:
                if lost.poll() is None:
                    lost.kill()
                    lost.wait()
        assert lost.returncode == 5, err
        assert "closed before it ended" in err
    finally:
        srv.stop()
