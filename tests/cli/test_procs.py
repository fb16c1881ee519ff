"""The process table and its spawner process: real processes, real signals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from torc_cli.procs import (
    ProcessOutcome,
    ProcessTable,
    SpawnerFailed,
    SpawnerProcess,
    Spawners,
)

BASH = shutil.which("bash") or "/bin/bash"


async def _until(condition: Callable[[], bool], timeout_s: float) -> None:
    with trio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110 -- polling real processes and files
            await trio.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _pid_in(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text else None


def _spawn(table: ProcessTable, tmp: Path, name: str, command: str,
           outcomes: dict[str, ProcessOutcome]) -> int:
    return table.spawn(["bash", "-c", command], executable=BASH, env=dict(os.environ),
                       stdout_path=str(tmp / f"{name}.o"), stderr_path=str(tmp / f"{name}.e"),
                       on_exit=lambda o: outcomes.__setitem__(name, o))


async def test_exit_codes_output_and_many_at_once(tmp_path: Path) -> None:
    table = ProcessTable()
    outcomes: dict[str, ProcessOutcome] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(table.run)
        for k in range(40):
            _spawn(table, tmp_path, f"j{k}", f"echo out{k}; echo err{k} >&2; exit {k % 3}",
                   outcomes)
        await _until(lambda: len(outcomes) == 40, 30)
        nursery.cancel_scope.cancel()
    table.close()
    for k in range(40):
        assert outcomes[f"j{k}"].return_code == k % 3
        assert not outcomes[f"j{k}"].terminated and outcomes[f"j{k}"].error is None
        assert (tmp_path / f"j{k}.o").read_text() == f"out{k}\n"
        assert (tmp_path / f"j{k}.e").read_text() == f"err{k}\n"


async def test_terminate_kills_the_whole_group(tmp_path: Path) -> None:
    """SIGTERM ignored by the job: SIGKILL after the grace period, and a background child left
    in its group is killed too."""
    table = ProcessTable(grace_s=0.5)
    outcomes: dict[str, ProcessOutcome] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(table.run)
        child_file = tmp_path / "child.pid"
        token = _spawn(table, tmp_path, "stubborn",
                       f"trap '' TERM; sleep 300 & echo $! > {child_file}; wait", outcomes)
        await _until(lambda: _pid_in(child_file) is not None, 10)
        child = _pid_in(child_file)
        assert child is not None
        started = time.monotonic()
        table.terminate(token)
        await _until(lambda: "stubborn" in outcomes, 10)
        assert time.monotonic() - started >= 0.4  # it waited for the grace period
        nursery.cancel_scope.cancel()
    table.close()
    outcome = outcomes["stubborn"]
    assert outcome.terminated and outcome.return_code == 128 + signal.SIGKILL
    await _until(lambda: not _alive(child), 5)


async def test_terminating_again_without_grace_kills_now(tmp_path: Path) -> None:
    """A second Ctrl-C: the grace period of a job that ignores SIGTERM is cut short."""
    table = ProcessTable(grace_s=300)
    outcomes: dict[str, ProcessOutcome] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(table.run)
        ready = tmp_path / "ready"
        token = _spawn(table, tmp_path, "stubborn", f"trap '' TERM; touch {ready}; sleep 300",
                       outcomes)
        await _until(ready.exists, 10)
        table.terminate(token)
        with trio.move_on_after(0.5):
            await _until(lambda: "stubborn" in outcomes, 1)
        assert "stubborn" not in outcomes  # SIGTERM ignored; the grace period runs
        table.terminate(token)  # the same grace again changes nothing
        table.terminate_all(grace_s=0)
        await _until(lambda: "stubborn" in outcomes, 30)  # far less than 300 s
        nursery.cancel_scope.cancel()
    table.close()
    assert outcomes["stubborn"].return_code == 128 + signal.SIGKILL


async def test_cancelling_the_table_terminates_what_runs(tmp_path: Path) -> None:
    table = ProcessTable(grace_s=2.0)
    outcomes: dict[str, ProcessOutcome] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(table.run)
        for k in range(3):
            _spawn(table, tmp_path, f"s{k}", f"echo $$ > {tmp_path}/s{k}.pid; exec sleep 300",
                   outcomes)
        await _until(lambda: all(_pid_in(tmp_path / f"s{k}.pid") for k in range(3)), 10)
        nursery.cancel_scope.cancel()
    table.close()
    assert len(table) == 0 and sorted(outcomes) == ["s0", "s1", "s2"]
    assert all(o.terminated and o.return_code == 128 + signal.SIGTERM for o in outcomes.values())
    assert not any(_alive(_pid_in(tmp_path / f"s{k}.pid") or 0) for k in range(3))


async def test_terminated_as_soon_as_spawned(tmp_path: Path) -> None:
    """Terminated in the same tick as spawned: each ends as terminated, none is left."""
    table = ProcessTable(grace_s=2.0)
    outcomes: dict[str, ProcessOutcome] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(table.run)
        tokens = [_spawn(table, tmp_path, f"t{k}", f"echo $$ > {tmp_path}/t{k}.pid; sleep 300",
                         outcomes) for k in range(10)]
        for token in tokens:
            table.terminate(token)
        await _until(lambda: len(outcomes) == 10, 15)
        nursery.cancel_scope.cancel()
    table.close()
    assert all(o.terminated and o.error is None for o in outcomes.values())
    assert not any(_alive(_pid_in(tmp_path / f"t{k}.pid") or 0) for k in range(10))


async def test_a_job_that_cannot_start_is_an_error_outcome(tmp_path: Path) -> None:
    table = ProcessTable()
    outcomes: dict[str, ProcessOutcome] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(table.run)
        table.spawn(["bash", "-c", "true"], executable=BASH, env={},
                    stdout_path=str(tmp_path / "missing" / "x.o"),
                    stderr_path=str(tmp_path / "x.e"), on_exit=lambda o: outcomes.update(x=o))
        table.spawn(["x"], executable=str(tmp_path / "no-such-program"), env={},
                    stdout_path=str(tmp_path / "y.o"), stderr_path=str(tmp_path / "y.e"),
                    on_exit=lambda o: outcomes.update(y=o))
        table.spawn(["bash", "-c", "true"], executable=BASH, env={"BAD": "nul\0byte"},
                    stdout_path=str(tmp_path / "z.o"), stderr_path=str(tmp_path / "z.e"),
                    on_exit=lambda o: outcomes.update(z=o))
        await _until(lambda: len(outcomes) == 3, 10)
        with pytest.raises(FileNotFoundError):
            await table.wait(["x"], executable=str(tmp_path / "no-such-program"), env={},
                             stdout_path=str(tmp_path / "w.o"), stderr_path=str(tmp_path / "w.e"))
        ok = await table.wait(["bash", "-c", "exit 3"], executable=BASH, env={},
                              stdout_path=str(tmp_path / "v.o"), stderr_path=str(tmp_path / "v.e"))
        assert ok.return_code == 3
        nursery.cancel_scope.cancel()
    table.close()
    assert len(table) == 0
    # Each error names what was missing: the output file's path, or the program.
    assert isinstance(outcomes["x"].error, FileNotFoundError)
    assert outcomes["x"].error.filename == str(tmp_path / "missing" / "x.o")
    assert isinstance(outcomes["y"].error, FileNotFoundError)
    assert outcomes["y"].error.filename == str(tmp_path / "no-such-program")
    assert "null" in str(outcomes["z"].error)
    assert all(o.return_code == 127 and not o.terminated for o in outcomes.values())


async def test_what_a_job_starts_with(tmp_path: Path) -> None:
    """Default signal dispositions (Python ignores SIGPIPE, the spawner SIGINT/SIGTERM/SIGHUP;
    ``yes | head`` must end), its own session, stdin from /dev/null, exactly the environment
    given."""
    table = ProcessTable()
    outcomes: dict[str, ProcessOutcome] = {}
    # The shell's open files are listed into a file, not a pipe: with `ls ... | wc -l` the
    # shell may still hold the pipe when ls looks (seen under load: 4 instead of 3).
    fds = tmp_path / "fds.txt"
    script = ("grep SigIgn /proc/$$/status; yes | head -1; "
              "echo sid=$(cut -d' ' -f6 /proc/$$/stat) pid=$$; readlink /proc/$$/fd/0; "
              f"echo \"v=$TORC_TEST_VALUE\"; ls /proc/$$/fd > {fds}; wc -l < {fds}")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(table.run)
        table.spawn(["bash", "-c", script], executable=BASH,
                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                         "TORC_TEST_VALUE": "a b=c é"},
                    stdout_path=str(tmp_path / "sig.o"), stderr_path=str(tmp_path / "sig.e"),
                    on_exit=lambda o: outcomes.update(sig=o))
        await _until(lambda: "sig" in outcomes, 10)
        nursery.cancel_scope.cancel()
    table.close()
    lines = (tmp_path / "sig.o").read_text().splitlines()
    ignored = int(lines[0].split()[1], 16)
    for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        assert not ignored & (1 << (sig - 1)), sig
    assert lines[1] == "y"
    sid, pid = (int(w.split("=")[1]) for w in lines[2].split())
    assert sid == pid
    assert lines[3] == "/dev/null"
    assert lines[4] == "v=a b=c é"
    assert int(lines[5]) == 3  # the job's stdin, stdout and stderr: nothing else inherited
    assert outcomes["sig"].return_code == 0


async def test_a_base_environment_with_each_jobs_changes(tmp_path: Path) -> None:
    """The runner sends its environment once; each job gives only its own variables (None
    removes one). Two jobs on one base see their own values, never the other's; a job whose
    change cannot be a variable (a NUL) fails alone, and a base whole jobs may still use."""
    table = ProcessTable()
    outcomes: dict[str, ProcessOutcome] = {}
    script = 'echo "$SHARED|${GONE-unset}|$OWN|${OTHER-unset}"'
    async with trio.open_nursery() as nursery:
        nursery.start_soon(table.run)
        base = table.base_environment({"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                       "SHARED": "s é", "GONE": "g"})
        for name, env in (("a", {"OWN": "a", "GONE": None}),
                          ("b", {"OWN": "b=1", "OTHER": "o"}),
                          ("bad", {"OWN": "nul\0byte"})):
            table.spawn(["bash", "-c", script], executable=BASH, env=env, base_env=base,
                        stdout_path=str(tmp_path / f"{name}.o"),
                        stderr_path=str(tmp_path / f"{name}.e"),
                        on_exit=lambda o, name=name: outcomes.update({name: o}))
        table.spawn(["bash", "-c", script], executable=BASH, env={"OWN": "whole"},
                    stdout_path=str(tmp_path / "whole.o"), stderr_path=str(tmp_path / "whole.e"),
                    on_exit=lambda o: outcomes.update(whole=o))
        await _until(lambda: len(outcomes) == 4, 10)
        nursery.cancel_scope.cancel()
    table.close()
    assert (tmp_path / "a.o").read_text() == "s é|unset|a|unset\n"
    assert (tmp_path / "b.o").read_text() == "s é|g|b=1|o\n"
    assert (tmp_path / "whole.o").read_text() == "|unset|whole|unset\n"  # no base: only env
    assert outcomes["bad"].return_code == 127 and "null" in str(outcomes["bad"].error)
    assert all(outcomes[k].return_code == 0 for k in ("a", "b", "whole"))


async def test_spawners_started_before_the_table_share_its_jobs(tmp_path: Path) -> None:
    """`run` and `exec` start the spawners while the workflow is created: the table runs its
    jobs on those, each new job on the one with the fewest (the job's parent is its
    spawner), and closes them; a spawner never used stops when closed."""
    spawners = Spawners.start(2)
    table = ProcessTable(spawners=spawners)
    outcomes: dict[str, ProcessOutcome] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(table.run)
        for k in range(4):
            _spawn(table, tmp_path, f"j{k}", "echo $PPID", outcomes)
        await _until(lambda: len(outcomes) == 4, 10)
        nursery.cancel_scope.cancel()
    table.close()
    parents = [int((tmp_path / f"j{k}.o").read_text()) for k in range(4)]
    assert sorted(parents) == sorted(2 * [m.proc.pid for m in spawners.members])
    assert all(m.proc.returncode == 0 for m in spawners.members)  # exited once closed
    unused = SpawnerProcess.start()
    unused.close()
    unused.close()  # closing again does nothing
    assert unused.proc.returncode == 0


def _spawner_of(table: ProcessTable, token: int) -> SpawnerProcess:
    """The spawner running job ``token``."""
    assert table._spawners is not None
    return table._spawners.members[table._links.index(table._live[token].link)]


def test_jobs_do_not_outlive_a_killed_runner(tmp_path: Path) -> None:
    """kill -9 of the runner: its spawner sees the socket close and kills every job's group."""
    pid_file = tmp_path / "job.pid"
    script = textwrap.dedent(f"""
        import trio
        from torc_cli.procs import ProcessTable

        async def main():
            table = ProcessTable()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(table.run)
                table.spawn(["bash", "-c", "echo $$ > {pid_file}; exec sleep 300"],
                            executable={BASH!r}, env={{}}, stdout_path="/dev/null",
                            stderr_path="/dev/null", on_exit=print)

        trio.run(main)
    """)
    runner = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 20
        while _pid_in(pid_file) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        job = _pid_in(pid_file)
        assert job is not None and _alive(job)
    finally:
        runner.kill()
        runner.wait()
    deadline = time.monotonic() + 10
    while _alive(job) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(job)


async def test_a_dead_spawner_stops_the_table(tmp_path: Path) -> None:
    """Someone kills a spawner: run() raises instead of waiting forever (or spinning)."""
    table = ProcessTable()
    outcomes: dict[str, ProcessOutcome] = {}
    pid_file = tmp_path / "job.pid"
    job = 0
    try:
        with pytest.raises(BaseExceptionGroup) as excinfo:  # from the nursery
            async with trio.open_nursery() as nursery:
                nursery.start_soon(table.run)
                token = _spawn(table, tmp_path, "orphan",
                               f"echo $$ > {pid_file}; exec sleep 300", outcomes)
                await _until(lambda: _pid_in(pid_file) is not None, 10)
                job = _pid_in(pid_file) or 0
                _spawner_of(table, token).proc.kill()
                with trio.fail_after(10):
                    await trio.sleep_forever()
    finally:
        table.close()
        if job:
            os.killpg(job, signal.SIGKILL)
    assert excinfo.group_contains(SpawnerFailed, match="1 job", depth=None)
    assert not outcomes


async def test_a_dead_spawner_stops_an_idle_table() -> None:
    table = ProcessTable()
    try:
        with pytest.raises(BaseExceptionGroup) as excinfo:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(table.run)
                await _until(lambda: table._spawners is not None, 10)
                assert table._spawners is not None
                table._spawners.members[0].proc.kill()
                with trio.fail_after(10):
                    await trio.sleep_forever()
    finally:
        table.close()
    assert excinfo.group_contains(SpawnerFailed, match="0 job", depth=None)
