"""The rest of the `torc-trio` command surface, through the real command: the read and change
commands against a shared server, cancel of a live run, exec's inputs, what a person sees in a
terminal and out of one, and --help on every command."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from cli_helpers import (
    TORC,
    ServerProcess,
    background,
    clean_env,
    pids_in_group_alive,
    torc,
    torc_json,
    wait_until,
)

from torc_cli.cli import _commands, build_parser
from torc_cli.commands import BY_WORD, GROUPS, MODULES
from torc_cli.commands import COMMANDS as COMMAND_RECORDS


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    srv = ServerProcess(tmp_path / "torc.db", cwd=tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


def _spec(tmp_path: Path, doc: dict[str, object], name: str = "wf.json") -> str:
    (tmp_path / name).write_text(json.dumps(doc))
    return name


def test_read_and_change_commands_against_a_shared_server(tmp_path: Path,
                                                          server: ServerProcess) -> None:
    env = clean_env(TORC_API_URL=server.url)
    spec = _spec(tmp_path, {"name": "shared", "jobs": [
        {"name": "ok", "command": "sleep 0.2"},
        {"name": "bad", "command": "exit 3"},
        {"name": "after_bad", "command": "true", "depends_on": ["bad"]}]})
    created = torc_json(tmp_path, "create", spec, env=env)
    wid = created["id"]
    assert isinstance(wid, int)
    assert torc_json(tmp_path, "status", str(wid), env=env)["counts"]["ready"] == 2

    run = torc(tmp_path, "run", str(wid), env=env)
    assert run.returncode == 1, run.stdout + run.stderr

    status = torc_json(tmp_path, "status", str(wid), env=env)
    assert {k: v for k, v in status["counts"].items() if v} == {
        "completed": 1, "failed": 1, "canceled": 1}
    listed = torc_json(tmp_path, "workflows", "list", env=env)
    assert [(w["id"], w["name"], w["num_jobs"]) for w in listed] == [(wid, "shared", 3)]
    assert torc_json(tmp_path, "workflows", "get", str(wid), env=env)["name"] == "shared"

    failed = torc_json(tmp_path, "jobs", "list", str(wid), "--status", "failed", env=env)
    assert [j["name"] for j in failed] == ["bad"]
    results = {r["job_name"]: r for r in torc_json(tmp_path, "results", "list", str(wid),
                                                    env=env)}
    assert set(results) == {"ok", "bad"}  # the canceled job never ran
    assert results["bad"]["return_code"] == 3 and results["bad"]["status"] == "failed"
    assert results["ok"]["exec_time_s"] >= 0.2  # the job's own run time, start to exit
    only_failed = torc_json(tmp_path, "results", "list", str(wid), "--status", "failed",
                            env=env)
    assert [r["job_name"] for r in only_failed] == ["bad"]

    # Tables for people: every row is there, nothing is cut short.
    table = torc(tmp_path, "jobs", "list", str(wid), env=env, check=True).stdout
    assert "after_bad" in table and "exit 3" in table and "…" not in table

    missing = torc(tmp_path, "status", "99", env=env)
    assert missing.returncode != 0 and "99" in missing.stderr
    missing = torc(tmp_path, "run", "99", env=env)
    assert missing.returncode == 2 and "no workflow 99" in missing.stderr
    assert "Running workflow" not in missing.stderr

    torc(tmp_path, "workflows", "delete", str(wid), env=env, check=True)
    assert torc_json(tmp_path, "workflows", "list", env=env) == []


def test_cancel_stops_a_live_run_and_its_jobs(tmp_path: Path, server: ServerProcess) -> None:
    env = clean_env(TORC_API_URL=server.url)
    marker = f"67.{os.getpid()}"
    spec = _spec(tmp_path, {"name": "long", "jobs": [
        {"name": "a", "command": f"sleep {marker}"},
        {"name": "b", "command": f"sleep {marker}"},
        {"name": "c", "command": "touch c_ran", "depends_on": ["a"]}]})
    wid = torc_json(tmp_path, "create", spec, env=env)["id"]
    with background(tmp_path, "run", str(wid), "-j", "4", env=env) as run:
        wait_until(lambda: len(pids_in_group_alive(marker)) == 2)
        torc(tmp_path, "cancel", str(wid), env=env, check=True)
        out, err = run.communicate(timeout=60)
    assert run.returncode == 1, out + err
    assert "canceled" in out
    assert pids_in_group_alive(marker) == [], "a job outlived the cancel"
    assert not (tmp_path / "c_ran").exists()
    counts = torc_json(tmp_path, "status", str(wid), env=env)["counts"]
    assert counts["canceled"] == 3
    assert torc_json(tmp_path, "workflows", "get", str(wid), env=env)["is_canceled"] is True


def test_exec_reads_stdin_and_value_files(tmp_path: Path) -> None:
    proc = subprocess.run([*TORC, "exec", "-C", "-", "-j", "2"], cwd=tmp_path, env=clean_env(),
                          input="echo one >> stdin.txt\n# skipped\n\necho two >> stdin.txt\n",
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted((tmp_path / "stdin.txt").read_text().split()) == ["one", "two"]

    (tmp_path / "values.txt").write_text("alpha\n\nbeta\n")
    torc(tmp_path, "exec", "-n", "sweep", "--param", "v=@values.txt", "-c",
         "echo {v} >> values.out", check=True)
    assert sorted((tmp_path / "values.out").read_text().split()) == ["alpha", "beta"]
    names = [w["name"] for w in torc_json(tmp_path, "-s", "workflows", "list")]
    assert names == ["exec", "sweep"]

    missing = torc(tmp_path, "exec", "--param", "v=@nowhere.txt", "-c", "echo {v}")
    assert missing.returncode == 2
    assert "nowhere.txt" in missing.stderr and "No such file" in missing.stderr
    assert len(torc_json(tmp_path, "-s", "workflows", "list")) == 2  # nothing created


def test_an_unreachable_server_is_an_error_not_a_hang(tmp_path: Path) -> None:
    """Commands without a runner retry for 30 s (a server restart), then name the URL and
    the reason; runners would wait --wait-for-server-minutes (default 20). The 30 s are in
    what the command says at once; the end is seen after the shorter wait
    TORC_INTERACTIVE_WAIT_SECONDS sets (the same retry loop), and a bad value is refused."""
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/torc-service/v1"
    with background(tmp_path, "status", "1", env=clean_env(TORC_API_URL=url)) as waiting:
        assert waiting.stderr is not None
        line = waiting.stderr.readline()
        assert f"waiting for the server at {url}" in line and "retrying for 30 s" in line, line
    proc = torc(tmp_path, "status", "1", timeout=90,
                env=clean_env(TORC_API_URL=url, TORC_INTERACTIVE_WAIT_SECONDS="2"))
    assert proc.returncode == 3
    assert url in proc.stderr and "cannot connect" in proc.stderr
    assert "retrying for 2 s" in proc.stderr
    bad = torc(tmp_path, "status", "1",
               env=clean_env(TORC_API_URL=url, TORC_INTERACTIVE_WAIT_SECONDS="soon"))
    assert bad.returncode == 2
    assert "TORC_INTERACTIVE_WAIT_SECONDS='soon': expected a number of seconds" in bad.stderr


def test_standalone_in_memory_keeps_its_database(tmp_path: Path) -> None:
    """-s --in-memory: the database lives in RAM while the command runs, is written to the
    --db file at the end (a run shorter than the snapshot interval too), and the next
    standalone command, in memory or not, starts from it."""
    (tmp_path / "c.txt").write_text("echo one >> out.txt\nexit 4\n")
    first = torc(tmp_path, "-s", "--in-memory", "--snapshot-interval-seconds", "600",
                 "run", "c.txt")
    assert first.returncode == 1, first.stdout + first.stderr
    db = tmp_path / "torc_output" / "torc.db"
    assert db.is_file()
    counts = torc_json(tmp_path, "-s", "status", "1")["counts"]  # the file database
    assert (counts["completed"], counts["failed"]) == (1, 1)

    torc(tmp_path, "-s", "--in-memory", "reset-status", "1", "--failed-only", check=True)
    torc_json(tmp_path, "-s", "--in-memory", "jobs", "list", "1")
    rerun = torc(tmp_path, "-s", "--in-memory", "run", "1")
    # Only the failed job (exit 4) ran again, and failed again.
    assert rerun.returncode == 1
    assert (tmp_path / "out.txt").read_text() == "one\n"
    results = torc_json(tmp_path, "-s", "--in-memory", "results", "list", "1", "--all-runs")
    assert sorted((r["job_name"], r["run_id"]) for r in results) == [
        ("job_1", 1), ("job_2", 1), ("job_2", 2)]
    spec = _spec(tmp_path, {"name": "second", "jobs": [{"name": "a", "command": "true"}]})
    second = torc_json(tmp_path, "-s", "--in-memory", "create", spec)
    assert second["id"] == 2  # ids go on from the file
    assert len(torc_json(tmp_path, "-s", "workflows", "list")) == 2


def test_watch_of_a_finished_workflow_and_a_closed_pipe(tmp_path: Path) -> None:
    """`watch` of a workflow that has ended prints where it stands and exits 0 (closing the
    feed right after it opened raced the server's first ping and lost the exit status);
    output into a pipe whose reader has gone ends quietly with 141, as cat would."""
    (tmp_path / "c.txt").write_text("true\ntrue\n")
    torc(tmp_path, "run", "c.txt", check=True)
    for _ in range(3):
        watch = torc(tmp_path, "-s", "watch", "1", timeout=60)
        assert watch.returncode == 0, watch.stdout + watch.stderr
        assert "2/2 finished" in watch.stdout
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    proc = subprocess.run([*TORC, "-s", "-f", "json", "results", "list", "1"], cwd=tmp_path,
                          stdout=write, stderr=subprocess.PIPE, text=True, env=clean_env(),
                          timeout=120)
    os.close(write)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_second_standalone_run_in_the_same_directory_is_refused(tmp_path: Path) -> None:
    """Two standalone servers on one torc_output/torc.db would hand out the same ids: the
    second is refused at once, with the first's pid, and the first finishes untouched."""
    marker = f"go.{os.getpid()}"
    (tmp_path / "slow.txt").write_text(f"until test -e {marker}; do sleep 0.05; done\n")
    with background(tmp_path, "run", "slow.txt") as first:
        wait_until(lambda: pids_in_group_alive(marker))
        (tmp_path / "other.txt").write_text("touch other_ran\n")
        second = torc(tmp_path, "run", "other.txt", timeout=60)
        assert second.returncode == 3
        assert f"in use by another torc-trio (pid {first.pid} " in second.stderr, second.stderr
        assert not (tmp_path / "other_ran").exists()
        # Looking is fine: a standalone command that only reads or changes state talks to
        # the server of the run in progress, and sees its live state.
        live = torc_json(tmp_path, "-s", "status", "1")
        assert live["counts"]["running"] + live["counts"]["pending"] == 1
        (tmp_path / marker).touch()
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, out + err
    assert [w["name"] for w in torc_json(tmp_path, "-s", "workflows", "list")] == ["slow"]


def test_a_second_ctrl_c_kills_at_once(tmp_path: Path) -> None:
    """The first SIGINT gives jobs the grace period (5 s) to end after SIGTERM; a job that
    ignores it would live on for 4 s and leave a mark. A second SIGINT kills it at once."""
    marker = f"stubborn.{os.getpid()}"
    (tmp_path / "c.txt").write_text(
        f"trap '' TERM INT; touch started; sleep 4; touch survived # {marker}\n")
    with background(tmp_path, "run", "c.txt") as run:
        wait_until((tmp_path / "started").exists)
        run.send_signal(signal.SIGINT)
        time.sleep(0.3)
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=60)
    assert run.returncode == 130, out + err  # interrupted, as a shell says
    assert "To run what did not complete: torc-trio reset-status 1 --failed-only" in err
    time.sleep(4.5)  # longer than the job would have lived
    assert not (tmp_path / "survived").exists()
    assert pids_in_group_alive(marker) == []
    assert torc_json(tmp_path, "-s", "status", "1")["counts"]["terminated"] == 1


def test_standalone_cancel_reaches_the_run_in_progress(tmp_path: Path) -> None:
    """`-s cancel` beside a running standalone run goes to that run's server, and the run,
    whose only slot is busy with a long job, hears of it and stops its job."""
    marker = f"go.{os.getpid()}"
    (tmp_path / "slow.txt").write_text(f"until test -e {marker}; do sleep 0.05; done\n"
                                        "true\n")
    with background(tmp_path, "run", "-j", "1", "slow.txt") as run:
        wait_until(lambda: pids_in_group_alive(marker))
        holder = json.loads((tmp_path / "torc_output" / "torc.db.lock").read_text())
        assert holder["url"].startswith("http://127.0.0.1:")
        torc(tmp_path, "-s", "cancel", "1", check=True)
        # Its one slot is busy, so it claims nothing: a heartbeat (at most 10 s apart when
        # nothing else reaches the server) brings the news.
        out, err = run.communicate(timeout=40)
    assert run.returncode == 1 and "workflow canceled" in out, out + err
    assert pids_in_group_alive(marker) == []
    assert torc_json(tmp_path, "-s", "status", "1")["counts"]["canceled"] == 2


def test_exec_warns_of_a_placeholder_no_param_defines(tmp_path: Path) -> None:
    proc = torc(tmp_path, "exec", "--param", "i=1:2", "-c",
                "echo {i} {j} ${HOME} {i:02d} >> out.txt", check=True)
    assert "warning: {j} is not a --param" in proc.stderr
    assert "{i}" not in proc.stderr and "HOME" not in proc.stderr
    lines = sorted((tmp_path / "out.txt").read_text().splitlines())
    assert lines == [f"{i} {{j}} {os.environ['HOME']} 0{i}" for i in (1, 2)]


def _write_commands(tmp_path: Path) -> None:
    (tmp_path / "commands.txt").write_text(textwrap.dedent("""\
        sleep 0.3
        sleep 0.3
        exit 3
        sleep 0.3
    """))


def test_not_a_terminal_plain_lines_and_a_summary(tmp_path: Path) -> None:
    _write_commands(tmp_path)
    proc = torc(tmp_path, "run", "-j", "2", "commands.txt")
    assert proc.returncode == 1
    out = proc.stdout
    assert "\x1b[" not in out  # no terminal codes in a pipe
    assert "workflow 1: 4/4 finished (3 completed, 1 failed)" in out
    assert "Jobs that ran and did not succeed (1):" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("job_3"))
    assert "failed, exit code 3" in line
    log = line.rsplit("log ", 1)[1]
    assert (tmp_path / log).is_file()  # the whole path, not cut short


def test_a_terminal_gets_a_progress_bar(tmp_path: Path) -> None:
    _write_commands(tmp_path)
    master, slave = pty.openpty()
    proc = subprocess.Popen([*TORC, "run", "-j", "2", "commands.txt"], cwd=tmp_path,
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env=clean_env(TERM="xterm", COLUMNS="120", LINES="40"))
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        proc.wait(timeout=60)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 1
    assert "━" in screen, screen  # the bar
    assert "4/4" in screen and "jobs/s" in screen
    assert "done," not in screen  # not the plain lines meant for pipes
    assert "exit code 3" in screen


def test_a_job_that_fits_nowhere_stops_the_run_by_name(tmp_path: Path) -> None:
    """Resource mode: a job asking for more CPUs than the machine has can never start here.
    The standalone run does not wait for it forever: it runs the rest, then stops and says
    which job needs what. With -j (queue mode) requirements are not enforced, so it runs."""
    (tmp_path / "wf.yaml").write_text(textwrap.dedent("""\
        name: big
        resource_requirements:
          - {name: huge, num_cpus: 100000, memory: 1m, runtime: P0DT1H}
          - {name: one, num_cpus: 1, memory: 1m, runtime: P0DT1H}
        jobs:
          - {name: fits, command: "touch fits", resource_requirements: one}
          - {name: toobig, command: "touch toobig", resource_requirements: huge}
          - {name: after, command: "touch after", depends_on: [toobig]}
    """))
    proc = torc(tmp_path, "-s", "run", "wf.yaml", timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "toobig needs 100000 CPUs" in proc.stdout, proc.stdout
    # the last progress line is where it stopped
    assert "workflow 1: 1/3 finished (1 completed" in proc.stdout
    assert (tmp_path / "fits").exists() and not (tmp_path / "toobig").exists()
    counts = torc_json(tmp_path, "-s", "status", "1")["counts"]
    assert (counts["completed"], counts["ready"], counts["blocked"]) == (1, 1, 1)
    torc(tmp_path, "-s", "run", "1", "-j", "2", check=True, timeout=60)
    assert (tmp_path / "toobig").exists() and (tmp_path / "after").exists()


EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir() if p.is_file()))
def test_every_example_runs_as_the_readme_says(tmp_path: Path, example: str) -> None:
    """From the repository's top folder: `torc-trio -s run examples/X` for a spec,
    `torc-trio run -j 4 examples/commands.txt` for the command list. Every job completes."""
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    args = ["-s", "run", f"examples/{example}"]
    if example.endswith(".txt"):
        args = ["run", "-j", "4", f"examples/{example}"]
    proc = torc(tmp_path, *args, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = torc_json(tmp_path, "-s", "status", "1")["counts"]
    assert counts["completed"] == sum(counts.values()) > 0


def _subcommands(parser: argparse.ArgumentParser,
                 prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = _subcommands(sub, (*prefix, name))
                found.extend(nested or [(*prefix, name)])
    return found


COMMANDS = _subcommands(build_parser(COMMAND_RECORDS, GROUPS))


def test_the_command_list_is_complete() -> None:
    expected = {"serve", "create", "run", "exec", "status", "watch", "jobs list",
                "results list", "reinitialize", "reset-status", "cancel", "runner",
                "htpasswd", "submit", "recover", "ping", "workflows create", "workflows list",
                "workflows get", "workflows status", "workflows reset-status",
                "workflows reinitialize", "workflows is-complete", "workflows sync-status",
                "workflows cancel", "workflows delete", "workflows run", "workflows submit"}
    assert expected <= {" ".join(c) for c in COMMANDS}


def test_each_first_word_names_the_modules_of_its_commands() -> None:
    """``BY_WORD`` (the modules a command line imports, by its first word) against the
    records of every module."""
    by_word: dict[str, set[str]] = {}
    for module in MODULES:
        for record in importlib.import_module(f"torc_cli.commands.{module}").COMMANDS:
            for name in record.names:
                by_word.setdefault(name.split()[0], set()).add(module)
    assert {word: set(modules) for word, modules in BY_WORD.items()} == by_word


def test_a_command_line_gets_the_parser_of_its_first_word_only() -> None:
    names = {" ".join(c) for c in COMMANDS}
    for words in COMMANDS:
        records, groups = _commands(["-f", "json", *words, "x"])
        assert all(words[0] in {n.split()[0] for n in r.names} for r in records)
        parser = build_parser(records, groups)
        assert " ".join(words) in {" ".join(c) for c in _subcommands(parser)}
    for argv in (["--help"], ["run", "-h"], ["no-such-command"], []):
        records, groups = _commands(argv)
        assert {" ".join(c) for c in _subcommands(build_parser(records, groups))} == names


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(tmp_path: Path, command: tuple[str, ...]) -> None:
    proc = torc(tmp_path, *command, "--help", check=True)
    assert "example" in proc.stdout and "torc-trio" in proc.stdout


def test_version(tmp_path: Path) -> None:
    proc = torc(tmp_path, "--version", check=True)
    assert proc.stdout.startswith("torc-trio ")
