"""torc_cli.slurm: script rendering, env parsing (pure) and real Slurm round trips."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

import pytest
import trio

from torc_cli.slurm import (
    SbatchRequest,
    SlurmConfigError,
    SlurmError,
    job_end_time,
    parse_cpus_per_node,
    parse_walltime,
    render_sbatch_script,
    sbatch,
    scancel,
    scontrol_job_state,
    slurm_environment,
    squeue_states,
)

ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}


def _render(**kw: object) -> str:
    args: dict[str, object] = {
        "job_name": "wf1_sched",
        "scheduler": {"name": "short", "account": "proj", "walltime": "01:00:00", "nodes": 2},
        "defaults": {},
        "runner_argv": ["torc-trio", "slurm", "run-jobs", "--url", "http://h:1/x y"],
        "env": {},
        "output_dir": "/out/dir",
        "start_one_worker_per_node": False,
    }
    args.update(kw)
    return render_sbatch_script(**args)  # type: ignore[arg-type]


def _sbatch_lines(script: str) -> list[str]:
    return [
        line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH")
    ]


# ------------------------------------------------------------------ rendering


def test_render_basic_script() -> None:
    script = _render()
    assert script.startswith("#!/bin/bash\n")
    lines = _sbatch_lines(script)
    assert lines[:3] == [
        "--job-name=wf1_sched",
        "--output=/out/dir/wf1_sched_%j.o",
        "--error=/out/dir/wf1_sched_%j.e",
    ]
    assert "--account=proj" in lines
    assert "--time=01:00:00" in lines
    assert "--nodes=2" in lines
    assert not any(line.startswith("--name") for line in lines)  # scheduler name is not an option
    last = script.rstrip("\n").splitlines()[-1]
    assert last == "exec torc-trio slurm run-jobs --url 'http://h:1/x y'"
    assert "srun" not in script


def test_render_merges_defaults_scheduler_wins() -> None:
    script = _render(
        scheduler={
            "name": "s",
            "account": "mine",
            "walltime": "2-00:00:00",
            "mem": "10G",
            "gres": "gpu:2",
            "qos": None,  # unset must not erase the default
            "ntasks_per_node": 4,
            "tmp": "100G",
            "partition": "debug",
        },
        defaults={
            "account": "theirs",
            "qos": "high",
            "cpus_per_task": 2,
            "exclusive": True,
            "mail-type": "END",
            "requeue": False,
        },
    )
    lines = _sbatch_lines(script)
    assert "--account=mine" in lines and "--account=theirs" not in lines
    assert "--qos=high" in lines
    assert "--cpus-per-task=2" in lines
    assert "--exclusive" in lines
    assert "--mail-type=END" in lines
    assert not any("requeue" in line for line in lines)
    for expected in (
        "--time=2-00:00:00",
        "--mem=10G",
        "--gres=gpu:2",
        "--ntasks-per-node=4",
        "--tmp=100G",
        "--partition=debug",
    ):
        assert expected in lines


def test_render_extra_args_last_and_grouped() -> None:
    script = _render(
        scheduler={"walltime": "10", "extra": "--exclusive --constraint gpu -C 'a b'"},
        defaults={"extra": "--hint=nomultithread"},
    )
    lines = _sbatch_lines(script)
    assert lines[-4:] == ["--hint=nomultithread", "--exclusive", "--constraint gpu", '-C "a b"']


def test_render_srun_prefix_and_env() -> None:
    script = _render(
        start_one_worker_per_node=True,
        env={"TORC_URL": "http://h:8080/api", "WEIRD": "it's $HOME"},
    )
    assert "export TORC_URL=http://h:8080/api\n" in script
    weird = "it's $HOME"
    assert f"export WEIRD={shlex.quote(weird)}\n" in script
    last = script.rstrip("\n").splitlines()[-1]
    assert last.startswith(
        "exec srun --nodes=$SLURM_JOB_NUM_NODES --ntasks=$SLURM_JOB_NUM_NODES "
        "--ntasks-per-node=1 --wait=0 --kill-on-bad-exit=0 --overlap torc-trio slurm run-jobs"
    )
    # env is exported before the command
    assert script.index("export TORC_URL") < script.index("exec srun")


def test_sbatch_request_fields() -> None:
    req = SbatchRequest.from_scheduler(
        job_name="j",
        scheduler={"walltime": "1-01:00:00", "nodes": 3},
        defaults={},
        runner_argv=["x"],
        env={},
        output_dir="/o/",
        start_one_worker_per_node=True,
    )
    assert req.walltime_s == 25 * 3600
    assert req.nodes == 3
    assert req.output_path == "/o/j_%j.o"


@pytest.mark.parametrize(
    "bad",
    [
        {"scheduler": {"walltime": "1:2:3:4"}},
        {"scheduler": {"walltime": "abc"}},
        {"scheduler": {"walltime": "01:61:00"}},
        {"scheduler": {"walltime": "1-25:00:00"}},
        {"scheduler": {"walltime": "0"}},
        {"scheduler": {"walltime": "INFINITE"}},
        {"scheduler": {"extra": "--output=/tmp/x"}},
        {"scheduler": {"extra": "stray"}},
        {"defaults": {"job-name": "x"}},
        {"defaults": {"bad name": 1}},
        {"env": {"NOT-OK": "1"}},
        {"scheduler": {"account": "a\nb"}},
        {"scheduler": {"nodes": 0}},
        {"runner_argv": []},
    ],
)
def test_render_rejects_invalid(bad: dict[str, object]) -> None:
    with pytest.raises(SlurmConfigError):
        _render(**bad)


def test_walltime_error_is_clear() -> None:
    with pytest.raises(ValueError, match=r"invalid walltime '25:61:00'.*HH:MM:SS"):
        parse_walltime("25:61:00")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 1800),
        (30, 1800),
        ("90:30", 90 * 60 + 30),
        ("04:00:00", 4 * 3600),
        ("48:00:00", 48 * 3600),
        ("1-00:00:00", 86400),
        ("2-12", 2 * 86400 + 12 * 3600),
        ("0-00:30", 1800),
        ("00:00:05", 5),
    ],
)
def test_parse_walltime(text: str | int, seconds: int) -> None:
    assert parse_walltime(text) == seconds


# ------------------------------------------------------------------ environment


def test_slurm_environment_outside_slurm() -> None:
    assert slurm_environment({"HOME": "/root"}, 0.0) is None


def test_slurm_environment_full() -> None:
    env = {
        "SLURM_JOB_ID": "123",
        "SLURM_CPUS_ON_NODE": "36",
        "SLURM_MEM_PER_NODE": "92160",
        "SLURM_GPUS_ON_NODE": "2",
        "SLURM_JOB_NUM_NODES": "4",
        "SLURM_JOB_END_TIME": "1000",
        "SLURMD_NODENAME": "r1i0n3",
        "SLURM_NODEID": "2",
    }
    a = slurm_environment(env, 400.0)
    assert a is not None
    assert (a.job_id, a.num_cpus, a.memory_mb, a.num_gpus, a.num_nodes) == ("123", 36, 92160, 2, 4)
    assert a.memory_bytes == 92160 * 1024 * 1024
    assert a.end_time == 1000.0 and a.remaining_s == 600.0
    assert a.node_name == "r1i0n3" and a.node_id == 2


def test_slurm_environment_fallbacks() -> None:
    # What Slurm 22.05 exports for `sbatch -N4` without --mem, on node index 1.
    env = {
        "SLURM_JOBID": "77",
        "SLURM_JOB_CPUS_PER_NODE": "4,2(x3)",
        "SLURM_MEM_PER_CPU": "1000",
        "SLURM_NNODES": "4",
        "SLURM_NODEID": "1",
        "SLURM_JOB_GPUS": "0,1,3",
    }
    a = slurm_environment(env, 0.0)
    assert a is not None
    assert a.job_id == "77"
    assert a.num_cpus == 2
    assert a.memory_mb == 2000
    assert a.num_nodes == 4
    assert a.num_gpus == 3
    assert a.end_time is None and a.remaining_s is None


def test_slurm_environment_minimal_and_past_end() -> None:
    a = slurm_environment({"SLURM_JOB_ID": "5", "SLURM_JOB_END_TIME": "100"}, 500.0)
    assert a is not None
    assert (a.num_cpus, a.memory_mb, a.num_gpus, a.num_nodes) == (None, None, 0, 1)
    assert a.remaining_s == 0.0
    b = slurm_environment({"SLURM_JOB_ID": "5", "SLURM_JOB_CPUS_PER_NODE": "8(x2)"}, 0.0)
    assert b is not None and b.num_cpus == 8


def test_parse_cpus_per_node() -> None:
    assert parse_cpus_per_node("4") == [4]
    assert parse_cpus_per_node("2(x3)") == [2, 2, 2]
    assert parse_cpus_per_node("72(x2),36") == [72, 72, 36]
    with pytest.raises(ValueError):
        parse_cpus_per_node("x")


# ------------------------------------------------------------------ real cluster


async def _wait_finished(job_id: str, limit_s: float = 60.0) -> str | None:
    """Poll until the job leaves the active states; its final state (via scontrol)."""
    with trio.move_on_after(limit_s):
        while True:
            states = await squeue_states([job_id])
            if states.get(job_id) not in ACTIVE:
                return await scontrol_job_state(job_id)
            await trio.sleep(0.5)
    pytest.fail(f"Slurm job {job_id} did not finish within {limit_s} s")


@pytest.mark.slurm
async def test_real_submission(slurm_cluster: str, tmp_path: Path) -> None:
    out = tmp_path / "result.txt"
    script = (
        "#!/bin/bash\n"
        f"#SBATCH --output={tmp_path}/slurm_%j.o\n"
        f'echo "$SLURM_JOB_ID $SLURM_CPUS_ON_NODE" > {shlex.quote(str(out))}\n'
    )
    job_id = await sbatch(script, script_path=str(tmp_path / "sub" / "job.sh"))
    assert job_id.isdigit()
    assert (tmp_path / "sub" / "job.sh").read_text() == script
    assert await _wait_finished(job_id) == "COMPLETED"
    got_id, cpus = out.read_text().split()
    assert got_id == job_id
    assert int(cpus) >= 1
    assert await squeue_states([job_id, "999999999"]) == {}


@pytest.mark.slurm
async def test_rendered_script_runs_with_srun_and_reports_allocation(
    slurm_cluster: str, tmp_path: Path
) -> None:
    """End to end: render (account, mem, walltime, srun) -> sbatch -> the job reads its env."""
    probe = (
        "import json, os, time, trio\n"
        "from torc_cli.slurm import current_allocation, slurm_environment\n"
        "a = slurm_environment(os.environ, time.time())\n"
        "b = trio.run(current_allocation)\n"
        "print(json.dumps({'job_id': a.job_id, 'cpus': a.num_cpus, 'mem': a.memory_mb,\n"
        "  'nodes': a.num_nodes, 'env_end': a.end_time, 'end': b.end_time,\n"
        "  'remaining': b.remaining_s, 'step': os.environ.get('SLURM_STEP_ID'),\n"
        "  'marker': os.environ.get('TORC_TEST_MARKER')}))\n"
    )
    script = render_sbatch_script(
        job_name="torc_test",
        scheduler={
            "name": "s",
            "account": "foo",
            "partition": "debug",
            "nodes": 1,
            "walltime": "00:02:00",
            "mem": "100M",
        },
        defaults={"ntasks_per_node": 1},
        runner_argv=[sys.executable, "-c", probe],
        env={"TORC_TEST_MARKER": "hello world"},
        output_dir=str(tmp_path),
        start_one_worker_per_node=True,
    )
    t0 = time.time()
    job_id = await sbatch(script, script_path=str(tmp_path / "job.sh"))
    state = await _wait_finished(job_id)
    stdout = tmp_path / f"torc_test_{job_id}.o"
    stderr = tmp_path / f"torc_test_{job_id}.e"
    assert state == "COMPLETED", stderr.read_text() if stderr.exists() else state
    info = json.loads(stdout.read_text().strip().splitlines()[-1])
    assert info["job_id"] == job_id
    assert info["marker"] == "hello world"
    assert info["step"] == "0"  # ran under srun
    assert info["cpus"] >= 1
    assert info["mem"] == 100
    assert info["nodes"] == 1
    # End time: from SLURM_JOB_END_TIME on newer Slurm, else asked from squeue.
    assert info["end"] is not None
    assert t0 + 60 <= info["end"] <= time.time() + 130
    assert 0 < info["remaining"] <= 120


@pytest.mark.slurm
async def test_scancel(slurm_cluster: str, tmp_path: Path) -> None:
    script = f"#!/bin/bash\n#SBATCH --output={tmp_path}/slurm_%j.o\nsleep 300\n"
    job_id = await sbatch(script, script_path=str(tmp_path / "sleep.sh"))
    with trio.fail_after(30):
        while True:
            if (await squeue_states([job_id])).get(job_id) in {"RUNNING", "PENDING"}:
                break
            await trio.sleep(0.2)
    end = await job_end_time(job_id)
    assert end is None or end > time.time()
    await scancel([job_id])
    assert await _wait_finished(job_id, limit_s=30) == "CANCELLED"
    # Cancelling again (finished / unknown ids) is not an error.
    await scancel([job_id, "999999999"])
    await scancel([])
    assert await scontrol_job_state("999999999") is None


@pytest.mark.slurm
async def test_sbatch_permanent_error_fails_fast(slurm_cluster: str, tmp_path: Path) -> None:
    script = "#!/bin/bash\n#SBATCH --partition=no_such_partition\ntrue\n"
    t0 = time.monotonic()
    with pytest.raises(SlurmError, match=r"(?i)invalid partition"):
        await sbatch(script, script_path=str(tmp_path / "bad.sh"), retries=3)
    assert time.monotonic() - t0 < 10


async def test_sbatch_retries_with_backoff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transient failure is retried (with sleeps, not a tight loop), then reported."""
    fake = tmp_path / "bin"
    fake.mkdir()
    counter = tmp_path / "count"
    (fake / "sbatch").write_text(
        "#!/bin/bash\n"
        f"echo x >> {counter}\n"
        f"if [ $(wc -l < {counter}) -lt 3 ]; then\n"
        "  echo 'sbatch: error: Batch job submission failed: Socket timed out on send/recv' >&2\n"
        "  exit 1\n"
        "fi\n"
        "echo '4242;cluster'\n"
    )
    (fake / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    t0 = trio.current_time()
    job_id = await sbatch(
        "#!/bin/bash\ntrue\n", script_path=str(tmp_path / "s.sh"), base_delay=0.05
    )
    assert job_id == "4242"
    assert len(counter.read_text().splitlines()) == 3
    assert trio.current_time() - t0 >= 0.05  # backed off between attempts

    counter.write_text("")
    (fake / "sbatch").write_text(
        "#!/bin/bash\necho 'sbatch: error: Unable to contact slurm controller' >&2\nexit 1\n"
    )
    with pytest.raises(SlurmError, match="Unable to contact"):
        await sbatch(
            "#!/bin/bash\n", script_path=str(tmp_path / "s2.sh"), retries=2, base_delay=0.01
        )
