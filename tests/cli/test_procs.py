"""The process table: real processes, both ways of waiting (pidfds, and a thread per child as on
kernels without pidfds)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from torc_cli.procs import PIDFDS, ProcessOutcome, ProcessTable

BASH = shutil.which("bash") or "/bin/bash"
MODES = [pytest.param(False, id="threads"),
         pytest.param(True, id="pidfds", marks=pytest.mark.skipif(
             not PIDFDS, reason="this kernel has no pidfds"))]


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


async def _spawn(table: ProcessTable, tmp: Path, name: str, command: str,
                 outcomes: dict[str, ProcessOutcome]) -> int:
    return table.spawn(["bash", "-c", command], executable=BASH, env=dict(os.environ),
                       stdout_path=str(tmp / f"{name}.o"), stderr_path=str(tmp / f"{name}.e"),
                       on_exit=lambda o: outcomes.__setitem__(name, o))


@pytest.mark.parametrize("pidfds", MODES)
async def test_exit_codes_output_and_many_at_once(tmp_path: Path, pidfds: bool) -> None:
    table = ProcessTable(use_pidfds=pidfds)
    outcomes: dict[str, ProcessOutcome] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(table.run)
        for k in range(40):
            await _spawn(table, tmp_path, f"j{k}", f"echo out{k}; echo err{k} >&2; exit {k % 3}",
                         outcomes)
        await _until(lambda: len(outcomes) == 40, 30)
        nursery.cancel_scope.cancel()
    table.close()
    for k in range(40):
        assert outcomes[f"j{k}"].return_code == k % 3
        assert not outcomes[f"j{k}"].terminated
        assert (tmp_path / f"j{k}.o").read_text() == f"out{k}\n"
        assert (tmp_path / f"j{k}.e").read_text() == f"err{k}\n"


@pytest.mark.parametrize("pidfds", MODES)
async def test_terminate_kills_the_whole_group(tmp_path: Path, pidfds: bool) -> None:
    """SIGTERM ignored by the job: SIGKILL after the grace period, and a background child left
    in its group is killed too."""
    table = ProcessTable(grace_s=0.5, use_pidfds=pidfds)
    outcomes: dict[str, ProcessOutcome] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(table.run)
        child_file = tmp_path / "child.pid"
        pid = await _spawn(table, tmp_path, "stubborn",
                           f"trap '' TERM; sleep 300 & echo $! > {child_file}; wait", outcomes)
        await _until(lambda: child_file.exists() and child_file.read_text().strip() != "", 10)
        child = int(child_file.read_text())
        started = time.monotonic()
        table.terminate(pid)
        await _until(lambda: "stubborn" in outcomes, 10)
        assert time.monotonic() - started >= 0.4  # it waited for the grace period
        nursery.cancel_scope.cancel()
    table.close()
    outcome = outcomes["stubborn"]
    assert outcome.terminated and outcome.return_code == -signal.SIGKILL
    await _until(lambda: not _alive(child), 5)


@pytest.mark.parametrize("pidfds", MODES)
async def test_cancelling_the_table_terminates_what_runs(tmp_path: Path, pidfds: bool) -> None:
    table = ProcessTable(grace_s=2.0, use_pidfds=pidfds)
    outcomes: dict[str, ProcessOutcome] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(table.run)
        pids = [await _spawn(table, tmp_path, f"s{k}", "sleep 300", outcomes) for k in range(3)]
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    table.close()
    assert len(table) == 0 and sorted(outcomes) == ["s0", "s1", "s2"]
    assert all(o.terminated and o.return_code == -signal.SIGTERM for o in outcomes.values())
    assert not any(_alive(p) for p in pids)


async def test_a_job_that_cannot_start_raises(tmp_path: Path) -> None:
    table = ProcessTable()
    with pytest.raises(OSError):
        table.spawn(["bash", "-c", "true"], executable=BASH, env={},
                    stdout_path=str(tmp_path / "missing" / "x.o"),
                    stderr_path=str(tmp_path / "x.e"), on_exit=lambda o: None)
    assert len(table) == 0
    table.close()


async def test_jobs_do_not_inherit_ignored_signals(tmp_path: Path) -> None:
    """Python ignores SIGPIPE; a job must get the default (``yes | head`` ends)."""
    table = ProcessTable()
    outcomes: dict[str, ProcessOutcome] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(table.run)
        await _spawn(table, tmp_path, "sig", "grep SigIgn /proc/$$/status; yes | head -1",
                     outcomes)
        await _until(lambda: "sig" in outcomes, 10)
        nursery.cancel_scope.cancel()
    table.close()
    ignored = int((tmp_path / "sig.o").read_text().split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1))
    assert outcomes["sig"].return_code == 0
