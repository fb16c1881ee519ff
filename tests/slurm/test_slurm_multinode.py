"""Workflows across several hosts: a real Slurm cluster whose extra nodes are slurmd daemons in
network and UTS namespaces of their own (``scripts/local-slurm.sh start --nodes 4``: node1..4
on a private bridge, partition ``multi``; this host is ``torc-head`` at 10.77.0.1 there).

The server listens on the bridge address, as a login-node server listens on the cluster's
network; runners inside the nodes reach it there, and nowhere else (the nodes have no other
route). Each test is skipped with the reason where namespaces or Slurm are unavailable.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slurm

sys.path.insert(0, str(Path(__file__).parents[1] / "cli"))
from cli_helpers import ServerProcess, clean_env, torc  # noqa: E402
from slurm_helpers import api, cancel_allocations, create, get, status, wait_for  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "local-slurm.sh"
NODES = 4  # as many as tests/slurm/conftest.py's EXTRA_NODES (and .ci/run) start


def _status() -> dict[str, str]:
    proc = subprocess.run([str(SCRIPT), "status"], capture_output=True, text=True, timeout=60,
                          check=False)
    facts = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    facts["ok"] = str(proc.returncode == 0)
    return facts


@pytest.fixture(scope="module")
def cluster(slurm_cluster: str) -> dict[str, str]:
    """The cluster with its extra nodes: started here (as root) when .ci/run did not."""
    facts = _status()
    if facts.get("ok") != "True" or int(facts.get("nodes", "0")) < NODES:
        import os

        if os.geteuid() != 0:
            pytest.skip("the cluster has no extra nodes and starting them needs root "
                        f"(sudo scripts/local-slurm.sh start --nodes {NODES})")
        start = subprocess.run([str(SCRIPT), "start", "--nodes", str(NODES)],
                               capture_output=True, text=True, timeout=300, check=False)
        if start.returncode != 0:
            pytest.skip("could not start the extra nodes (network namespaces unavailable?):\n"
                        + start.stderr[-2000:])
        facts = _status()
    assert facts.get("head_address") and facts.get("partition") == "multi", facts
    return facts


@pytest.fixture
def server(tmp_path: Path, cluster: dict[str, str]) -> Iterator[ServerProcess]:
    head = cluster["head_address"]
    proc = ServerProcess(tmp_path / "torc.db", cwd=tmp_path, flags=[
        "--database", str(tmp_path / "torc.db"), "--host", head, "--port", "0",
        "--lease-seconds", "15"])
    proc.url = f"http://{head}:{proc.port}/torc-service/v1"
    try:
        yield proc
    finally:
        cancel_allocations(proc)
        proc.stop()


def scheduler(name: str, nodes: int) -> dict[str, Any]:
    # mem: the nodes declare 2 GB; Slurm's default per-CPU share of this host would not fit.
    return {"name": name, "partition": "multi", "nodes": nodes, "walltime": "00:10:00",
            "mem": "512M"}


def start_action(sched: str, *, per_node: bool, allocations: int = 1) -> dict[str, Any]:
    return {"trigger_type": "on_workflow_start", "action_type": "schedule_nodes",
            "scheduler": sched, "scheduler_type": "slurm", "num_allocations": allocations,
            "start_one_worker_per_node": per_node}


def completed_once(tmp_path: Path, server: ServerProcess, wid: int, jobs: int) -> list[Any]:
    results = api(tmp_path, server, "results", "list", str(wid))
    done = [r for r in results if r["status"] == "completed"]
    assert len(done) == jobs and len({r["job_id"] for r in done}) == jobs, results
    return list(results)


@pytest.mark.parametrize("mode", ["direct", "slurm"])
def test_one_runner_per_node_across_two_hosts(tmp_path: Path, server: ServerProcess,
                                              mode: str) -> None:
    """Each job writes the host it ran on; with a runner on each of the allocation's two
    nodes both hosts appear, every job ran once, and ran where the runner that claimed it
    is (in slurm mode too, where each job is a step of the allocation)."""
    jobs = 40 if mode == "direct" else 12
    (tmp_path / "hosts").mkdir()
    wid = create(tmp_path, server, {
        "name": "two_hosts", "slurm_schedulers": [scheduler("two", 2)],
        "execution_config": {"mode": mode},
        "actions": [start_action("two", per_node=True)],
        "jobs": [{"name": "h{i}", "command": "hostname > hosts/{i}.txt && sleep 0.3",
                  "parameters": {"i": f"1:{jobs}"}}]})
    api(tmp_path, server, "submit", str(wid))
    wait_for(lambda: status(tmp_path, server, wid)["is_complete"], 240, f"{jobs} jobs, 2 hosts")
    assert status(tmp_path, server, wid)["counts"]["completed"] == jobs
    ran_on = {int(p.stem): p.read_text().strip() for p in (tmp_path / "hosts").iterdir()}
    assert len(ran_on) == jobs
    assert len(set(ran_on.values())) == 2, ran_on
    assert set(ran_on.values()) <= {f"node{i}" for i in range(1, NODES + 1)}, ran_on
    results = completed_once(tmp_path, server, wid, jobs)
    runner_host = {n["id"]: n["hostname"]
                   for n in get(server, f"/workflows/{wid}/compute_nodes?limit=100")["items"]}
    names = {j["id"]: j["name"] for j in api(tmp_path, server, "jobs", "list", str(wid))}
    for r in results:
        assert ran_on[int(names[r["job_id"]][1:])] == runner_host[r["compute_node_id"]], r


def test_a_two_node_job_gets_both_nodes(tmp_path: Path, server: ServerProcess) -> None:
    wid = create(tmp_path, server, {
        "name": "wide", "slurm_schedulers": [scheduler("two", 2)],
        "resource_requirements": [{"name": "wide", "num_nodes": 2, "num_cpus": 1,
                                   "memory": "100m", "runtime": "PT2M"}],
        "actions": [start_action("two", per_node=False)],
        "jobs": [{"name": "mpi_like", "resource_requirements": "wide",
                  "command": "scontrol show hostnames $SLURM_JOB_NODELIST > nodelist.txt && "
                             "srun --overlap -N 2 -n 2 hostname | sort > ran_on.txt"}]})
    api(tmp_path, server, "submit", str(wid))
    wait_for(lambda: status(tmp_path, server, wid)["is_complete"], 240, "the 2-node job")
    assert status(tmp_path, server, wid)["counts"]["completed"] == 1
    listed = (tmp_path / "nodelist.txt").read_text().split()
    assert len(listed) == 2 and all(n.startswith("node") for n in listed), listed
    assert (tmp_path / "ran_on.txt").read_text().split() == sorted(listed)
    completed_once(tmp_path, server, wid, 1)


def _our_allocations(server: ServerProcess) -> dict[str, str]:
    """Slurm job id -> node list of the allocations this test's server recorded that are
    still pending or running (another test's may share the cluster)."""
    mine: set[str] = set()
    for wf in get(server, "/workflows")["items"]:
        page = get(server, f"/workflows/{wf['id']}/allocations")
        mine |= {str(a["slurm_job_id"]) for a in page["items"]}
    out = subprocess.run(["squeue", "-h", "-o", "%i %N"], capture_output=True, text=True,
                         check=False).stdout
    return {fields[0]: (fields[1] if len(fields) > 1 else "")
            for fields in (line.split() for line in out.splitlines())
            if fields and fields[0] in mine}


def _hostnames(nodelist: str) -> list[str]:
    return subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                          text=True, check=False).stdout.split()


def test_losing_a_node_loses_no_job(tmp_path: Path, server: ServerProcess) -> None:
    """A node dies mid-run (every process in its namespace, slurmd included): its runner's
    jobs go back to ready with the same attempt when its lease ends, the other node (or a new
    allocation, through ``recover``) runs them; every job completes exactly once."""
    wid = create(tmp_path, server, {
        "name": "node_loss", "slurm_schedulers": [scheduler("two", 2)],
        "actions": [start_action("two", per_node=True)],
        "jobs": [{"name": "s{i}", "command": "sleep 2", "parameters": {"i": "1:24"}}]})
    api(tmp_path, server, "submit", str(wid))

    def both_busy() -> bool:
        running = [j for j in api(tmp_path, server, "jobs", "list", str(wid))
                   if j["status"] == "running"]
        return len({j["compute_node_id"] for j in running}) >= 2

    wait_for(both_busy, 180, "both nodes running jobs")
    allocations = _our_allocations(server)
    assert len(allocations) == 1, allocations
    victim = _hostnames(next(iter(allocations.values())))[-1]  # not the batch script's node
    on_victim = {n["id"] for n in get(server, f"/workflows/{wid}/compute_nodes")["items"]
                 if n["hostname"] == victim}
    held = [j for j in api(tmp_path, server, "jobs", "list", str(wid))
            if j["status"] in ("pending", "running") and j["compute_node_id"] in on_victim]
    try:
        subprocess.run([str(SCRIPT), "kill-node", victim.removeprefix("node")], check=True,
                       capture_output=True, timeout=60)
        recovered = False
        deadline = time.monotonic() + 300
        while not status(tmp_path, server, wid)["is_complete"]:
            assert time.monotonic() < deadline, "the workflow did not finish after the loss"
            if not _our_allocations(server) and not recovered:
                # Slurm ended the allocation with its node: recover submits a new one.
                api(tmp_path, server, "recover", str(wid), timeout=180)
                recovered = True
            time.sleep(2)
    finally:
        subprocess.run([str(SCRIPT), "start", "--nodes", str(NODES)], capture_output=True,
                       timeout=300, check=False)
    print(f"node {victim} lost with {len(held)} jobs; "
          f"{'a new allocation (recover)' if recovered else 'the other node'} ran them again")
    assert status(tmp_path, server, wid)["counts"]["completed"] == 24
    results = completed_once(tmp_path, server, wid, 24)
    lost = {j["id"] for j in held}
    # A lost runner is not the job's failure: its jobs ran again with the same attempt.
    assert {r["attempt"] for r in results if r["job_id"] in lost} == {1}


def test_ten_one_node_allocations_at_once(tmp_path: Path, server: ServerProcess) -> None:
    """Four hosts, ten one-node allocations submitted together against 2,000 jobs: every job
    completes once and every allocation ends. Prints, per allocation, how long after its
    submission its runner registered and first finished a job (not asserted: timings)."""
    wid = create(tmp_path, server, {
        "name": "burst", "slurm_schedulers": [scheduler("one", 1)],
        "actions": [start_action("one", per_node=False, allocations=10)],
        "jobs": [{"name": "t{i}", "command": "true", "parameters": {"i": "1:2000"}}]})
    api(tmp_path, server, "submit", str(wid))
    wait_for(lambda: status(tmp_path, server, wid)["is_complete"], 420, "2,000 jobs")
    wait_for(lambda: not _our_allocations(server), 180, "every allocation to end")
    results = completed_once(tmp_path, server, wid, 2000)
    submitted = {str(a["slurm_job_id"]): a["submitted_at"]
                 for a in get(server, f"/workflows/{wid}/allocations")["items"]}
    assert len(submitted) == 10
    registered = {str(n["slurm_job_id"]): n["created_at"]
                  for n in get(server, f"/workflows/{wid}/compute_nodes?limit=100")["items"]}
    first_done: dict[str, float] = {}
    for r in results:
        sid = str(r.get("slurm_job_id"))
        first_done[sid] = min(first_done.get(sid, r["completed_at"]), r["completed_at"])
    report = {sid: {"registered_after_s": round(registered[sid] - at, 2) if sid in registered
                    else None,
                    "first_job_done_after_s": round(first_done[sid] - at, 2)
                    if sid in first_done else None}
              for sid, at in sorted(submitted.items())}
    assert set(first_done) <= set(submitted)
    print("time to first claim per allocation:", json.dumps(report))


def test_submit_refuses_a_loopback_server_for_other_hosts(tmp_path: Path,
                                                         cluster: dict[str, str]) -> None:
    """A server on 127.0.0.1 cannot be reached from node1..4: submit says so and which flag
    fixes it, before anything is submitted or claimed."""
    local = ServerProcess(tmp_path / "torc.db", cwd=tmp_path)
    try:
        (tmp_path / "wf.json").write_text(json.dumps({
            "name": "unreachable", "slurm_schedulers": [scheduler("two", 2)],
            "actions": [start_action("two", per_node=True)],
            "jobs": [{"name": "a", "command": "true"}]}))
        env = clean_env(TORC_API_URL=local.url)
        assert torc(tmp_path, "create", "wf.json", env=env).returncode == 0
        before = set(_our_allocations(local))
        proc = torc(tmp_path, "submit", "1", env=env)
        assert proc.returncode == 4, proc.stdout + proc.stderr
        assert "loopback" in proc.stderr and "--host" in proc.stderr, proc.stderr
        assert set(_our_allocations(local)) == before
        actions = get(local, "/workflows/1/actions")["items"]
        assert not any(a["claimed"] for a in actions)
    finally:
        local.stop()
