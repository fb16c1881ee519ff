"""GPU assignment: each job its own devices (CUDA_VISIBLE_DEVICES, ROCR_VISIBLE_DEVICES,
HIP_VISIBLE_DEVICES), where the runner's devices come from, and the pool that hands them out.

The end-to-end tests run the real `torc-trio` command against a real server and SQLite file.
Every job records its own start and end time and the variables it saw. Jobs of a group wait
(polling files, not sleeping for a fixed time) until another job of their group has started,
so that jobs certainly run at the same time; the assertions hold for any schedule.
"""

from __future__ import annotations

import os
import stat
import textwrap
from itertools import combinations
from pathlib import Path

import pytest
import trio
from cli_helpers import ServerProcess, clean_env, torc, torc_json

from torc_cli import slurm
from torc_cli.exits import InputError
from torc_cli.gpus import (
    GPU_ENV_VARS,
    GpuPool,
    GpuPoolError,
    gpu_env,
    parse_device_list,
    parse_nvidia_smi_list,
)
from torc_cli.resources import (
    Resources,
    _combine,
    device_ids,
    nvidia_smi_gpus,
    with_gpu_count,
)

# ---------------------------------------------------------------------------------------------
# The real command

#: A job: note the start, join the barrier group $1 and wait (bounded) until $2 of its jobs
#: have started, note the end, and record start|end|the three variables ("unset" if unset).
JOB_SCRIPT = """\
#!/bin/bash
set -u
s=$(date +%s.%N)
mkdir -p "bar/$1" rec
touch "bar/$1/$TORC_JOB_NAME"
for _ in $(seq 1200); do
  [ "$(ls "bar/$1" | wc -l)" -ge "$2" ] && break
  sleep 0.05
done
e=$(date +%s.%N)
printf '%s|%s|%s|%s|%s\\n' "$s" "$e" "${CUDA_VISIBLE_DEVICES-unset}" \\
  "${ROCR_VISIBLE_DEVICES-unset}" "${HIP_VISIBLE_DEVICES-unset}" > "rec/$TORC_JOB_NAME.txt"
"""

#: name -> (resource requirement, barrier group, barrier size)
JOBS = {
    **{f"two_{i}": ("two", "two", 2) for i in range(3)},
    **{f"one_{i}": ("one", "one", 2) for i in range(5)},
    **{f"none_{i}": ("none", "none", 1) for i in range(2)},
}
GPUS_OF = {"two": 2, "one": 1, "none": 0}


def _spec(jobs: dict[str, tuple[str, str, int]]) -> str:
    lines = ["name: gpus", "jobs:"]
    for name, (rr, group, size) in jobs.items():
        lines += [f"  - name: {name}", f"    command: bash job.sh {group} {size}",
                  f"    resource_requirements: {rr}"]
    lines.append("resource_requirements:")
    for rr, gpus in GPUS_OF.items():
        lines += [f"  - name: {rr}", "    num_cpus: 1", f"    num_gpus: {gpus}",
                  "    memory: 10m", "    runtime: PT5M"]
    return "\n".join(lines) + "\n"


def _gpu_free_env(**extra: str) -> dict[str, str]:
    """The test's environment without anything that names GPUs or a Slurm allocation (the
    machine running the tests may be inside one)."""
    env = {k: v for k, v in clean_env().items()
           if k not in GPU_ENV_VARS and not k.startswith("SLURM_")}
    env.update(extra)
    return env


class Record:
    def __init__(self, name: str, line: str) -> None:
        start, end, cuda, rocr, hip = line.rstrip("\n").split("|")
        self.name, self.start, self.end = name, float(start), float(end)
        self.cuda, self.rocr, self.hip = cuda, rocr, hip
        self.devices = [d for d in cuda.split(",") if d]

    def overlaps(self, other: Record) -> bool:
        return self.start < other.end and other.start < self.end


def _records(cwd: Path) -> dict[str, Record]:
    return {p.stem: Record(p.stem, p.read_text()) for p in (cwd / "rec").glob("*.txt")}


def _check_assignment(records: dict[str, Record], jobs: dict[str, tuple[str, str, int]],
                      pool: set[str]) -> None:
    assert sorted(records) == sorted(jobs)
    for name, (rr, _group, _size) in jobs.items():
        r = records[name]
        k = GPUS_OF[rr]
        # Exactly its own k distinct devices of the runner's; ROCr the same, HIP counts them.
        assert len(r.devices) == k and len(set(r.devices)) == k, (name, r.cuda)
        assert set(r.devices) <= pool, (name, r.cuda)
        assert r.rocr == r.cuda, (name, r.rocr, r.cuda)
        assert r.hip == ",".join(str(i) for i in range(k)), (name, r.hip)
        if k == 0:  # set, and empty: no device at all
            assert (r.cuda, r.rocr, r.hip) == ("", "", ""), name
    for a, b in combinations(records.values(), 2):
        if a.overlaps(b):
            assert not set(a.devices) & set(b.devices), \
                f"{a.name} ({a.cuda}) and {b.name} ({b.cuda}) ran at the same time"


def test_run_gives_concurrent_jobs_disjoint_devices(tmp_path: Path) -> None:
    (tmp_path / "job.sh").write_text(JOB_SCRIPT)
    (tmp_path / "gpus.yaml").write_text(_spec(JOBS))
    proc = torc(tmp_path, "-s", "run", "gpus.yaml", "--num-gpus", "4", "--num-cpus", "16",
                "-p", "0.2", env=_gpu_free_env(), check=True)
    assert "completed" in proc.stdout
    records = _records(tmp_path)
    _check_assignment(records, JOBS, {"0", "1", "2", "3"})
    # Not vacuous: the first two 2-GPU jobs waited for each other, so they overlapped, and
    # between them held all four devices.
    first, second = sorted((r for r in records.values() if r.name.startswith("two_")),
                           key=lambda r: r.start)[:2]
    assert first.overlaps(second)
    assert sorted(first.devices + second.devices) == ["0", "1", "2", "3"]
    ones = sorted((r for r in records.values() if r.name.startswith("one_")),
                  key=lambda r: r.start)
    assert ones[0].overlaps(ones[1])


def _fake_nvidia_smi(bin_dir: Path, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "nvidia-smi"
    exe.write_text("#!/bin/bash\n" + body)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)


SMI_TWO_GPUS = textwrap.dedent("""\
    cat <<'EOF'
    GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-0b9c1a7e-aaaa-bbbb-cccc-000000000000)
      MIG 1g.5gb      Device  0: (UUID: MIG-11111111-2222-3333-4444-555555555555)
    GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-0b9c1a7e-aaaa-bbbb-cccc-000000000001)
    EOF
""")


def test_runner_takes_gpus_from_nvidia_smi(tmp_path: Path) -> None:
    """`runner` with no --num-gpus, outside Slurm, no CUDA_VISIBLE_DEVICES: nvidia-smi -L
    lists two GPUs; two 1-GPU jobs that run together get one each."""
    _fake_nvidia_smi(tmp_path / "bin", SMI_TWO_GPUS)
    env = _gpu_free_env(PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    jobs = {"one_a": ("one", "one", 2), "one_b": ("one", "one", 2),
            "none_a": ("none", "none", 1)}
    (tmp_path / "job.sh").write_text(JOB_SCRIPT)
    (tmp_path / "gpus.yaml").write_text(_spec(jobs))
    server = ServerProcess(tmp_path / "torc.db")
    try:
        url = ["--url", server.url]
        wf = torc_json(tmp_path, *url, "create", "gpus.yaml", env=env)
        proc = torc(tmp_path, *url, "runner", str(wf["id"]), "--num-cpus", "4", "-p", "0.2",
                    env=env, check=True)
        assert "ran 3 jobs (3 ok" in proc.stderr
    finally:
        server.stop()
    records = _records(tmp_path)
    _check_assignment(records, jobs, {"0", "1"})
    assert records["one_a"].overlaps(records["one_b"])


def _show_script(cwd: Path) -> None:
    (cwd / "show.sh").write_text(
        'printf "%s|%s|%s" "${CUDA_VISIBLE_DEVICES-unset}" "${ROCR_VISIBLE_DEVICES-unset}" '
        '"${HIP_VISIBLE_DEVICES-unset}" > "$1"\n')


def test_exec_gpu_less_job_sees_no_device(tmp_path: Path) -> None:
    """exec's jobs ask for no GPUs: on a runner that has some, they see none."""
    _show_script(tmp_path)
    torc(tmp_path, "-s", "exec", "--num-gpus", "2", "-c", "bash show.sh seen.txt",
         env=_gpu_free_env(), check=True)
    assert (tmp_path / "seen.txt").read_text() == "||"


def test_queue_mode_leaves_the_environment_alone(tmp_path: Path) -> None:
    """-j N runs jobs whatever they ask for: the runner hands out no devices, and jobs see
    the variables as the runner found them."""
    _show_script(tmp_path)
    env = _gpu_free_env(CUDA_VISIBLE_DEVICES="1,3")
    torc(tmp_path, "-s", "exec", "-j", "1", "--num-gpus", "1", "-c", "bash show.sh seen.txt",
         env=env, check=True)
    assert (tmp_path / "seen.txt").read_text() == "1,3|unset|unset"


def test_num_gpus_must_be_a_count(tmp_path: Path) -> None:
    proc = torc(tmp_path, "-s", "run", "--num-gpus", "-1", "x.txt", env=_gpu_free_env())
    assert proc.returncode == 2
    assert "--num-gpus" in proc.stderr and "expected 0 or more GPUs, got -1" in proc.stderr


# ---------------------------------------------------------------------------------------------
# Where the runner's GPUs come from


def _detect(environ: dict[str, str], smi: tuple[str, ...] = ()) -> Resources:
    allocation = slurm.slurm_environment(environ, 1_000_000.0)
    return _combine(allocation, environ, smi)


SLURM = {"SLURM_JOB_ID": "42", "SLURM_CPUS_ON_NODE": "8", "SLURM_JOB_NUM_NODES": "1"}


@pytest.mark.parametrize(("environ", "ids", "source"), [
    ({**SLURM, "SLURM_JOB_GPUS": "0,2"}, ("0", "2"), "SLURM_JOB_GPUS"),
    ({**SLURM, "SLURM_JOB_GPUS": "0,2", "SLURM_GPUS_ON_NODE": "2"}, ("0", "2"),
     "SLURM_JOB_GPUS"),
    ({**SLURM, "CUDA_VISIBLE_DEVICES": "1,3", "SLURM_GPUS_ON_NODE": "2",
      "SLURM_JOB_GPUS": "1,3"}, ("1", "3"), "CUDA_VISIBLE_DEVICES"),
    ({**SLURM, "CUDA_VISIBLE_DEVICES": "1,3"}, ("1", "3"), "CUDA_VISIBLE_DEVICES"),
    ({**SLURM, "SLURM_GPUS_ON_NODE": "2"}, ("0", "1"), "SLURM_GPUS_ON_NODE"),
    ({**SLURM, "SLURM_STEP_GPUS": "5", "SLURM_JOB_GPUS": "4,5"}, ("5",), "SLURM_STEP_GPUS"),
    ({**SLURM, "CUDA_VISIBLE_DEVICES": "NoDevFiles", "SLURM_GPUS_ON_NODE": "1"}, ("0",),
     "SLURM_GPUS_ON_NODE"),
    (SLURM, (), "SLURM_GPUS_ON_NODE"),
    ({"CUDA_VISIBLE_DEVICES": "1,3"}, ("1", "3"), "CUDA_VISIBLE_DEVICES"),
    ({"CUDA_VISIBLE_DEVICES": ""}, (), "CUDA_VISIBLE_DEVICES"),
    ({"CUDA_VISIBLE_DEVICES": "0, 2,-1,3"}, ("0", "2"), "CUDA_VISIBLE_DEVICES"),
    ({"CUDA_VISIBLE_DEVICES": "GPU-aa,MIG-bb"}, ("GPU-aa", "MIG-bb"), "CUDA_VISIBLE_DEVICES"),
    ({}, (), ""),
])
def test_gpus_from_the_environment(environ: dict[str, str], ids: tuple[str, ...],
                                   source: str) -> None:
    res = _detect(environ)
    assert (res.gpu_ids, res.gpus, res.gpu_source) == (ids, len(ids), source)
    assert (res.slurm_job_id is not None) == ("SLURM_JOB_ID" in environ)


def test_nvidia_smi_only_outside_an_allocation_with_no_visible_list() -> None:
    smi = ("0", "1", "2")
    assert _detect({}, smi).gpu_ids == smi
    assert _detect({}, smi).gpu_source == "nvidia-smi -L"
    assert _detect({"CUDA_VISIBLE_DEVICES": "1"}, smi).gpu_ids == ("1",)
    # An allocation's GPUs are Slurm's to say; the node's others belong to other jobs.
    assert _detect(SLURM, smi).gpu_ids == ()
    assert _detect({**SLURM, "SLURM_GPUS_ON_NODE": "1"}, smi).gpu_ids == ("0",)


def test_a_device_listed_twice_is_refused_with_where() -> None:
    with pytest.raises(InputError, match=r"CUDA_VISIBLE_DEVICES='1,1' names GPU 1 twice"):
        _detect({"CUDA_VISIBLE_DEVICES": "1,1"})
    with pytest.raises(InputError, match=r"SLURM_JOB_GPUS='0,0' names GPU 0 twice"):
        _detect({**SLURM, "SLURM_JOB_GPUS": "0,0"})


def test_num_gpus_overrides_the_count() -> None:
    visible = _detect({"CUDA_VISIBLE_DEVICES": "1,3"})
    assert with_gpu_count(visible, 1).gpu_ids == ("1",)
    assert with_gpu_count(visible, 0).gpu_ids == ()
    with pytest.raises(InputError, match=r"--num-gpus 4: this runner has 2 GPU\(s\) "
                                         r"\(CUDA_VISIBLE_DEVICES: 1,3\)"):
        with_gpu_count(visible, 4)
    nothing = _detect({})
    assert with_gpu_count(nothing, 4).gpu_ids == ("0", "1", "2", "3")
    assert with_gpu_count(nothing, 4).gpus == 4
    with pytest.raises(InputError, match="cannot be negative"):
        with_gpu_count(nothing, -1)


def test_hand_built_resources_count_from_zero() -> None:
    assert device_ids(Resources(cpus=1, memory_bytes=1, gpus=2, nodes=1)) == ("0", "1")
    with pytest.raises(ValueError, match="2 GPUs but 1 device ids"):
        Resources(cpus=1, memory_bytes=1, gpus=2, nodes=1, gpu_ids=("5",))


def test_parse_nvidia_smi_list() -> None:
    text = SMI_TWO_GPUS.split("\n", 1)[1].rsplit("EOF", 1)[0]
    assert parse_nvidia_smi_list(text) == ("0", "1")
    assert parse_nvidia_smi_list("No devices were found\n") == ()


def test_parse_device_list() -> None:
    assert parse_device_list("0,1", "X") == ("0", "1")
    assert parse_device_list("-1", "X") == ()
    assert parse_device_list("", "X") == ()


def test_nvidia_smi_real_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The command is run for real (a stand-in on PATH): its list, its failure, its hang."""
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    _fake_nvidia_smi(bin_dir, SMI_TWO_GPUS)
    assert trio.run(nvidia_smi_gpus) == ("0", "1")
    _fake_nvidia_smi(bin_dir, "echo 'NVIDIA-SMI has failed' >&2; exit 9\n")
    assert trio.run(nvidia_smi_gpus) == ()
    # A wedged driver: the command never answers; the runner does not wait for it.
    _fake_nvidia_smi(bin_dir, "exec sleep 3600\n")
    assert trio.run(nvidia_smi_gpus, 0.5) == ()
    assert "did not answer within 0.5 s" in capsys.readouterr().err


def test_no_nvidia_smi_no_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert trio.run(nvidia_smi_gpus) == ()


# ---------------------------------------------------------------------------------------------
# The pool


def test_pool_hands_out_free_devices_lowest_first() -> None:
    pool = GpuPool(("1", "3", "5", "7"))
    assert (pool.total, pool.free) == (4, 4)
    a = pool.acquire(2)
    b = pool.acquire(1)
    assert (a, b, pool.free) == (("1", "3"), ("5",), 1)
    assert pool.acquire(0) == ()
    pool.release(a)
    assert pool.free == 3
    assert pool.acquire(3) == ("1", "3", "7")  # released ones first again, in pool order
    pool.release(("7", "1"))
    pool.release(b)
    pool.release(("3",))
    assert pool.free == 4 and pool.acquire(4) == ("1", "3", "5", "7")


def test_pool_refuses_what_would_share_a_device() -> None:
    pool = GpuPool(("0", "1"))
    held = pool.acquire(2)
    with pytest.raises(GpuPoolError, match="needs 1 GPUs and 0 of 2 are free"):
        pool.acquire(1)
    pool.release(held)
    with pytest.raises(GpuPoolError, match="was released but is not held"):
        pool.release(("0",))
    with pytest.raises(GpuPoolError, match="not one of this runner's"):
        pool.release(("9",))
    with pytest.raises(GpuPoolError, match="cannot acquire -1"):
        pool.acquire(-1)
    with pytest.raises(GpuPoolError, match="appears twice"):
        GpuPool(("0", "0"))
    assert pool.free == 2  # refused requests changed nothing


def test_gpu_env() -> None:
    assert gpu_env(("1", "3")) == {"CUDA_VISIBLE_DEVICES": "1,3",
                                   "ROCR_VISIBLE_DEVICES": "1,3",
                                   "HIP_VISIBLE_DEVICES": "0,1"}
    assert gpu_env(()) == dict.fromkeys(GPU_ENV_VARS, "")
