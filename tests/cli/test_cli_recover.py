"""`recover`, `correct-resources` and `reports check-resource-utilization` / `reports results`:
the real command against a real `torc-trio serve` with a real SQLite file.

The recovery test runs real jobs: one fails with 137 (what a SIGKILL for memory gives) until
its memory requirement, read back from the server through the real `jobs get`, is raised;
`recover` diagnoses it, raises it, resets it and its downstream, and reruns them here. The
report tests record results carrying the resource monitor's fields through the runner
protocol itself (a registered compute node claiming and completing jobs)."""

from __future__ import annotations

import json
import shlex
import sys
import urllib.request
from pathlib import Path
from typing import Any

from cli_helpers import ServerProcess, torc, torc_json

MIB = 1 << 20
GIB = 1 << 30

#: Succeeds only when the job's own memory requirement is at least 140 MiB; else exits 137.
PICKY = ("mem=$({py} -m torc_cli.main -f json jobs get $TORC_JOB_ID | {py} -c "
         "'import json,sys; print(json.load(sys.stdin)[\"memory_bytes\"])') && "
         "[ \"$mem\" -ge {limit} ] || exit 137").format(py=shlex.quote(sys.executable),
                                                       limit=140 * MIB)


def post(url: str, path: str, body: Any) -> Any:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def events(tmp_path: Path, url: list[str], wf: str, kind: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url[1]}/workflows/{wf}/events?limit=1000", timeout=30) as r:
        return [e["data"] for e in json.loads(r.read())["items"] if e["kind"] == kind]


def test_recover_raises_memory_resets_and_reruns_here(tmp_path: Path) -> None:
    spec = {"name": "oom", "resource_requirements": [
        {"name": "small", "num_cpus": 1, "memory": "100m", "runtime": "PT10M"}],
        "jobs": [{"name": "big", "command": PICKY, "resource_requirements": "small"},
                 {"name": "after", "command": "true", "depends_on": ["big"],
                  "resource_requirements": "small"},
                 {"name": "bug", "command": "exit 3", "resource_requirements": "small"}]}
    path = tmp_path / "oom.json"
    path.write_text(json.dumps(spec))
    server = ServerProcess(tmp_path / "torc.db")
    try:
        url = ["--url", server.url]
        wf = str(torc_json(tmp_path, *url, "create", str(path))["id"])
        first = torc(tmp_path, *url, "run", wf, "-j", "2", "--poll-interval", "0.2")
        assert first.returncode == 1, first.stdout + first.stderr

        def jobs() -> dict[str, dict[str, Any]]:
            return {j["name"]: j for j in torc_json(tmp_path, *url, "jobs", "list", wf)}

        before = jobs()
        assert [before[n]["status"] for n in ("big", "after", "bug")] == [
            "failed", "canceled", "failed"]

        # --dry-run: the diagnosis and the plan, nothing changed.
        dry = torc_json(tmp_path, *url, "recover", wf, "--dry-run")
        causes = {d["job_name"]: (d["cause"], d["oom_reason"]) for d in dry["diagnoses"]}
        assert causes == {"big": ("oom", "sigkill_137"), "bug": ("unknown", None)}
        assert dry["changes"] == [{"job_id": before["big"]["id"], "job_name": "big",
                                   "cause": "oom", "reason": "sigkill_137",
                                   "old": {"memory_bytes": 100 * MIB},
                                   "new": {"memory_bytes": 150 * MIB}}]
        assert dry["skipped_jobs"] == [before["bug"]["id"]] and dry["reset_jobs"] == []
        assert jobs() == before
        assert events(tmp_path, url, wf, "job_resources") == []

        # The recovery: memory raised, big and after reset and run here; bug stays failed.
        done = torc(tmp_path, *url, "recover", wf, "-j", "2", "--poll-interval", "0.2")
        assert done.returncode == 1, done.stdout + done.stderr  # bug still failed
        out = done.stdout
        assert (f"Job {before['big']['id']} (big): OOM detected, increasing memory 100m -> "
                "150m") in out
        assert "1 job(s) with unknown failure cause (skipped, use --retry-unknown" in out
        assert "Reset 2 job(s)" in out
        after = jobs()
        assert [after[n]["status"] for n in ("big", "after", "bug")] == [
            "completed", "completed", "failed"]
        assert after["big"]["memory_bytes"] == 150 * MIB
        assert after["after"]["memory_bytes"] == 100 * MIB
        changed = events(tmp_path, url, wf, "job_resources")
        assert [(e["job_id"], e["reason"], e["old"]["memory_bytes"], e["new"]["memory_bytes"])
                for e in changed] == [(before["big"]["id"], "recover", 100 * MIB, 150 * MIB)]
        assert any(e.get("job_ids") == [before["big"]["id"]]
                   for e in events(tmp_path, url, wf, "reset"))

        # Unknown failures only with --retry-unknown; --no-submit resets without running.
        again = torc_json(tmp_path, *url, "recover", wf, "--retry-unknown", "--no-submit")
        assert again["retried_jobs"] == [before["bug"]["id"]]
        assert again["changes"] == []
        assert jobs()["bug"]["status"] == "ready"
    finally:
        server.kill()


def spec3() -> dict[str, Any]:
    return {"name": "measured", "resource_requirements": [
        {"name": "one", "num_cpus": 1, "memory": "1g", "runtime": "PT10M"}],
        "jobs": [{"name": f"j{i}", "command": "true", "resource_requirements": "one"}
                 for i in range(3)]}


def test_reports_and_corrections_from_measured_use(tmp_path: Path) -> None:
    path = tmp_path / "measured.json"
    path.write_text(json.dumps(spec3()))
    server = ServerProcess(tmp_path / "torc.db")
    try:
        url = ["--url", server.url]
        wf = str(torc_json(tmp_path, *url, "create", str(path))["id"])
        ids = {j["name"]: j["id"] for j in torc_json(tmp_path, *url, "jobs", "list", wf)}
        cn = post(server.url, f"/workflows/{wf}/compute_nodes", {"hostname": "n1"})["id"]
        claimed = post(server.url, f"/workflows/{wf}/compute_nodes/{cn}/claim", {"limit": 3})
        assert len(claimed["jobs"]) == 3

        # While jobs are held, recover and correct-resources are refused; nothing changes.
        refused = torc(tmp_path, *url, "recover", wf)
        assert refused.returncode == 2 and "pending or running" in refused.stderr
        before = torc_json(tmp_path, *url, "jobs", "list", wf)

        def result(name: str, rc: int, exec_s: float, **info: Any) -> dict[str, Any]:
            return {"job_id": ids[name], "attempt": 1, "run_id": 1, "return_code": rc,
                    "exec_time_s": exec_s, **info}

        post(server.url, f"/workflows/{wf}/compute_nodes/{cn}/complete", {"results": [
            result("j0", 0, 900, peak_memory_bytes=3 * GIB // 2, avg_memory_bytes=GIB,
                   peak_cpu_percent=250.0, avg_cpu_percent=180.0),
            result("j1", 0, 60, peak_memory_bytes=512 * MIB, peak_cpu_percent=50.0),
            result("j2", 152, 610, failure_cause="timeout", peak_memory_bytes=100 * MIB)]})
        assert torc_json(tmp_path, *url, "jobs", "list", wf) != before  # statuses moved on

        report = torc_json(tmp_path, *url, "reports", "check-resource-utilization", wf)
        assert report == {"workflow_id": int(wf), "total_results": 2,
                          "over_utilization_count": 3, "violations": [
            {"job_id": ids["j0"], "job_name": "j0", "resource_type": "Memory",
             "specified": "1.00 GB", "peak_used": "1.50 GB", "over_utilization": "+50.0%"},
            {"job_id": ids["j0"], "job_name": "j0", "resource_type": "CPU",
             "specified": "100% (1 cores)", "peak_used": "250.0%",
             "over_utilization": "+150.0%"},
            {"job_id": ids["j0"], "job_name": "j0", "resource_type": "Runtime",
             "specified": "10m 0s", "peak_used": "15m 0s", "over_utilization": "+50.0%"}]}
        full = torc_json(tmp_path, *url, "reports", "check-resource-utilization", wf,
                         "--all", "--include-failed", "--run-id", "1")
        assert full["run_id"] == 1 and full["total_results"] == 3
        assert full["over_utilization_count"] == 4  # j2's runtime too
        assert {"job_name": "j1", "resource_type": "Memory",
                "over_utilization": "-50.0%"}.items() <= full["violations"][3].items()
        (diag,) = full["resource_violations"]
        assert (diag["job_name"], diag["likely_timeout"], diag["timeout_reason"],
                diag["cause"]) == ("j2", True, "failure_cause_timeout", "timeout")

        table = torc(tmp_path, *url, "reports", "check-resource-utilization", wf)
        assert "⚠ Found 3 resource over-utilization violations:" in table.stdout
        assert "Over-Utilization" in table.stdout and "+150.0%" in table.stdout
        assert f"torc-trio correct-resources {wf}" in table.stderr

        results = torc_json(tmp_path, *url, "reports", "results", wf)
        assert results["total_results"] == 3
        j0 = next(r for r in results["results"] if r["job_name"] == "j0")
        assert (j0["peak_memory_bytes"], j0["avg_memory_bytes"], j0["peak_cpu_percent"],
                j0["avg_cpu_percent"], j0["memory_bytes"]) == (3 * GIB // 2, GIB, 250.0,
                                                               180.0, GIB)
        assert "1.50 GB" in torc(tmp_path, *url, "reports", "results", wf).stdout

        jobs_before = torc_json(tmp_path, *url, "jobs", "list", wf)
        dry = torc_json(tmp_path, *url, "correct-resources", wf, "--dry-run",
                        "--runtime-buffer", "1.3")
        assert dry["corrections"] == [
            {"job_id": ids["j0"], "job_name": "j0",
             "old": {"memory_bytes": GIB, "num_cpus": 1, "runtime_s": 600},
             "new": {"memory_bytes": 1844 * MIB, "num_cpus": 3, "runtime_s": 1170}},
            {"job_id": ids["j2"], "job_name": "j2", "old": {"runtime_s": 600},
             "new": {"runtime_s": 793}}]
        assert torc_json(tmp_path, *url, "jobs", "list", wf) == jobs_before

        done = torc(tmp_path, *url, "correct-resources", wf, "--runtime-buffer", "1.3")
        assert done.returncode == 0, done.stderr
        assert "j0 (id" in done.stdout and "memory 1g -> 2g, CPUs 1 -> 3" in done.stdout
        rows = {j["name"]: j for j in torc_json(tmp_path, *url, "jobs", "list", wf)}
        assert (rows["j0"]["memory_bytes"], rows["j0"]["num_cpus"],
                rows["j0"]["runtime_s"]) == (1844 * MIB, 3, 1170)
        assert rows["j1"]["memory_bytes"] == GIB
        reasons = {e["job_name"]: e["reason"]
                   for e in events(tmp_path, url, wf, "job_resources")}
        assert set(reasons) == {"j0", "j2"} and reasons["j0"].startswith("correct-resources")

        # recover: j2 timed out; its runtime grows from the corrected 793 s (x1.4), reset.
        rec = torc_json(tmp_path, *url, "recover", wf, "--no-submit")
        assert [(c["job_name"], c["cause"], c["new"]) for c in rec["changes"]] == [
            ("j2", "timeout", {"runtime_s": 1111})]
        assert rec["reset_jobs"] == [ids["j2"]]
        rows = {j["name"]: j for j in torc_json(tmp_path, *url, "jobs", "list", wf)}
        assert (rows["j2"]["status"], rows["j2"]["runtime_s"]) == ("ready", 1111)
    finally:
        server.kill()


def test_watch_recover_until_complete_or_retries_run_out(tmp_path: Path) -> None:
    """Needs two recoveries (100m -> 150m -> 225m >= 200m): one retry is not enough (exit 1,
    says so); watching again with the default three completes it."""
    picky = PICKY.replace(str(140 * MIB), str(200 * MIB))
    spec = {"name": "watched", "resource_requirements": [
        {"name": "small", "num_cpus": 1, "memory": "100m", "runtime": "PT10M"}],
        "jobs": [{"name": "big", "command": picky, "resource_requirements": "small"},
                 {"name": "after", "command": "true", "depends_on": ["big"]}]}
    path = tmp_path / "watched.json"
    path.write_text(json.dumps(spec))
    server = ServerProcess(tmp_path / "torc.db")
    try:
        url = ["--url", server.url]
        wf = str(torc_json(tmp_path, *url, "create", str(path))["id"])
        assert torc(tmp_path, *url, "run", wf, "-j", "2", "--poll-interval", "0.2").returncode == 1

        once = torc(tmp_path, *url, "watch", wf, "--recover", "--max-retries", "1", "-j", "2",
                    "--poll-interval", "0.2")
        assert once.returncode == 1, once.stdout + once.stderr
        assert "Attempting automatic recovery (attempt 1/1)" in once.stdout
        assert "OOM detected, increasing memory 100m -> 150m" in once.stdout
        assert "Max retries (1) exceeded. Manual intervention required." in once.stdout

        again = torc(tmp_path, *url, "watch", wf, "--recover", "-j", "2",
                     "--poll-interval", "0.2", "--exit-status")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "OOM detected, increasing memory 150m -> 225m" in again.stdout
        jobs = {j["name"]: j for j in torc_json(tmp_path, *url, "jobs", "list", wf)}
        assert [jobs[n]["status"] for n in ("big", "after")] == ["completed", "completed"]
        assert jobs["big"]["memory_bytes"] == 225 * MIB
        assert [e["new"]["memory_bytes"] for e in events(tmp_path, url, wf, "job_resources")] \
            == [150 * MIB, 225 * MIB]
    finally:
        server.kill()


HOLD_300MB = 'python3 -c "b=bytearray(300*2**20); import time; time.sleep(3)"'


def test_real_oom_under_direct_limits_is_reported_and_recovered(tmp_path: Path) -> None:
    """End to end with the runner's monitor: a job holding 300 MB under a 100m limit is
    killed (137, failure_cause oom); the report shows it, recover raises its memory from the
    measured peak and reruns it here (-s: a standalone server on the local database)."""
    (tmp_path / "oom.json").write_text(json.dumps({
        "name": "oom", "resource_monitor": {"sample_interval_seconds": 1},
        "execution_config": {"mode": "direct", "limit_resources": True},
        "resource_requirements": [{"name": "small", "memory": "100m", "runtime": "PT5M"}],
        "jobs": [{"name": "hog", "command": HOLD_300MB, "resource_requirements": "small"},
                 {"name": "after", "command": "true", "depends_on": ["hog"]}]}))
    first = torc(tmp_path, "-s", "run", "oom.json")
    assert first.returncode == 1, first.stdout + first.stderr

    report = torc_json(tmp_path, "-s", "reports", "check-resource-utilization", "1",
                       "--include-failed")
    (diag,) = report["resource_violations"]
    assert (diag["job_name"], diag["likely_oom"], diag["oom_reason"]) == (
        "hog", True, "failure_cause_oom")
    assert any(v["resource_type"] == "Memory" and v["over_utilization"].startswith("+")
               for v in report["violations"])
    peak = diag["peak_memory_bytes"]
    assert peak > 100 * MIB

    rec = torc_json(tmp_path, "-s", "recover", "1", "--memory-multiplier", "4")
    (change,) = rec["changes"]
    assert (change["job_name"], change["cause"], change["reason"]) == (
        "hog", "oom", "failure_cause_oom")
    assert change["new"]["memory_bytes"] >= 4 * peak
    assert rec["counts"]["completed"] == 2, rec
    jobs = {j["name"]: j for j in torc_json(tmp_path, "-s", "jobs", "list", "1")}
    assert jobs["hog"]["memory_bytes"] == change["new"]["memory_bytes"]
