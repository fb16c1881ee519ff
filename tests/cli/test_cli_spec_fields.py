"""Torc spec fields through the real command: stdio modes and their shards, job priority,
metadata, and the warning for a field accepted without effect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cli_helpers import standalone_json, torc, torc_json


def _spec(tmp: Path, doc: dict[str, Any], name: str = "spec.json") -> str:
    (tmp / name).write_text(json.dumps(doc))
    return name


def _results(tmp: Path, wid: int) -> dict[str, dict[str, Any]]:
    names = {j["id"]: j["name"] for j in standalone_json(tmp, "jobs", "list", str(wid))}
    return {names[r["job_id"]]: r for r in standalone_json(tmp, "results", "list", str(wid))}


def test_stdio_modes_write_what_they_say_and_results_record_the_paths(tmp_path: Path) -> None:
    both = "echo out-$TORC_JOB_NAME; echo err-$TORC_JOB_NAME >&2"
    spec = _spec(tmp_path, {
        "name": "stdio",
        "execution_config": {"stdio": {"mode": "combined", "delete_on_success": True}},
        "jobs": [
            {"name": "default", "command": both},  # combined, deleted: it completes
            {"name": "kept_failure", "command": both + "; exit 3"},  # combined, kept
            {"name": "separate", "command": both, "stdio": {"mode": "separate"}},
            {"name": "no_stdout", "command": both, "stdio": {"mode": "no_stdout"}},
            {"name": "no_stderr", "command": both, "stdio": {"mode": "no_stderr"}},
            {"name": "none", "command": both, "stdio": {"mode": "none"}},
        ]})
    proc = torc(tmp_path, "run", spec)
    assert proc.returncode == 1, proc.stderr  # kept_failure failed
    res = _results(tmp_path, 1)
    shard = tmp_path / "torc_output" / "job_stdio" / "0"

    def paths(name: str) -> tuple[str | None, str | None]:
        return res[name]["stdout_path"], res[name]["stderr_path"]

    assert paths("default") == (None, None)  # deleted on success
    assert not list(shard.glob("job_wf1_j1_*"))
    log = shard / "job_wf1_j2_r1_a1.log"
    assert paths("kept_failure") == (str(log), str(log))
    assert log.read_text() == "out-kept_failure\nerr-kept_failure\n"
    out, err = paths("separate")
    assert Path(out).read_text() == "out-separate\n" and Path(err).read_text() == "err-separate\n"
    assert paths("no_stdout")[0] is None
    assert Path(paths("no_stdout")[1]).read_text() == "err-no_stdout\n"
    assert paths("no_stderr")[1] is None
    assert Path(paths("no_stderr")[0]).read_text() == "out-no_stderr\n"
    assert paths("none") == (None, None)
    assert sorted(p.name for p in shard.iterdir()) == [
        "job_wf1_j2_r1_a1.log", "job_wf1_j3_r1_a1.e", "job_wf1_j3_r1_a1.o",
        "job_wf1_j4_r1_a1.e", "job_wf1_j5_r1_a1.o"]

    # Readers take the recorded paths: jobs log reads the combined file; a stream not kept
    # is said, with the mode.
    assert torc(tmp_path, "-s", "jobs", "log", "1", "2", check=True).stdout == (
        "out-kept_failure\nerr-kept_failure\n")
    none = torc(tmp_path, "-s", "jobs", "log", "1", "6")
    assert none.returncode == 2 and "was not kept" in none.stderr and "'none'" in none.stderr
    summary = torc_json(tmp_path, "-s", "reports", "summary", "1")
    (failed,) = summary["failed_jobs"]
    assert failed["stderr"] == str(log)


def test_job_output_goes_into_shards_of_a_thousand(tmp_path: Path) -> None:
    # A first workflow takes job ids 1..1000: the second's job is 1001, in shard 1.
    first = _spec(tmp_path, {"name": "ids", "parameters": {"i": "1:1000"},
                             "jobs": [{"name": "j{i}", "command": "true"}]}, "first.json")
    torc(tmp_path, "-s", "create", first, check=True)
    second = _spec(tmp_path, {"name": "later", "jobs": [{"name": "x", "command": "echo hi"}]})
    torc(tmp_path, "-s", "create", second, check=True)
    torc(tmp_path, "-s", "run", "2", check=True)
    (result,) = standalone_json(tmp_path, "results", "list", "2")
    expected = tmp_path / "torc_output" / "job_stdio" / "1" / "job_wf2_j1001_r1_a1.o"
    assert result["stdout_path"] == str(expected) and expected.read_text() == "hi\n"


def test_priority_orders_the_claims(tmp_path: Path) -> None:
    order = tmp_path / "order.txt"
    jobs = [{"name": f"p{p}", "command": f"echo p{p} >> {order}", "priority": p}
            for p in (1, 5, 0, 9, 3)]
    spec = _spec(tmp_path, {"name": "prio", "jobs": jobs})
    torc(tmp_path, "run", "-j", "1", spec, check=True)
    assert order.read_text().split() == ["p9", "p5", "p3", "p1", "p0"]
    listed = {j["name"]: j["priority"] for j in standalone_json(tmp_path, "jobs", "list", "1")}
    assert listed == {"p1": 1, "p5": 5, "p0": 0, "p9": 9, "p3": 3}


def test_jobs_sort_method_orders_the_claims(tmp_path: Path) -> None:
    order = tmp_path / "order.txt"
    sizes = {"a": ("1g", "PT30M"), "b": ("4g", "PT5M"), "c": ("2g", "PT1H")}
    rrs = [{"name": n, "memory": m, "runtime": r} for n, (m, r) in sizes.items()]
    jobs = [{"name": n, "command": f"echo {n} >> {order}", "resource_requirements": n}
            for n in sizes]
    for method, expected in (("gpus_memory_runtime", ["b", "c", "a"]),
                             ("gpus_runtime_memory", ["c", "a", "b"])):
        order.unlink(missing_ok=True)
        spec = _spec(tmp_path, {"name": method, "jobs_sort_method": method,
                                "resource_requirements": rrs, "jobs": jobs}, f"{method}.json")
        torc(tmp_path, "run", "-j", "1", spec, "-o", method, check=True)
        assert order.read_text().split() == expected, method


def test_metadata_is_stored_and_unsupported_fields_warn(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {
        "name": "meta", "project": "ml", "metadata": {"owner": "team-a", "tags": [1, 2]},
        "resource_monitor": {"enabled": True, "granularity": "summary"},
        "enable_ro_crate": True,
        "jobs": [{"name": "a", "command": "true"}]})
    dry = torc(tmp_path, "-f", "json", "create", "--dry-run", spec, check=True)
    warnings = json.loads(dry.stdout)["warnings"]
    # resource_monitor is supported (the runner samples jobs): no warning
    assert not any(w.startswith("resource_monitor") for w in warnings)
    assert any(w.startswith("enable_ro_crate: accepted but has no effect") for w in warnings)
    assert "torc-trio: warning: enable_ro_crate: accepted but has no effect" in dry.stderr
    created = torc(tmp_path, "-s", "create", spec, check=True)
    assert "warning: enable_ro_crate" in created.stderr
    wf = torc_json(tmp_path, "-s", "workflows", "get", "1")
    assert wf["metadata"] == {"owner": "team-a", "tags": [1, 2]} and wf["project"] == "ml"
    # A spec without them: no warnings at all.
    quiet = _spec(tmp_path, {"name": "q", "jobs": [{"name": "a", "command": "true"}]}, "q.json")
    assert "warning" not in torc(tmp_path, "create", "--dry-run", quiet, check=True).stderr


def test_bad_settings_are_located_errors(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {
        "name": "bad", "execution_config": {"mode": "fast", "stdio": {"mode": "loud"},
                                            "termination_signal": "SIGNOPE", "extra": 1},
        "compute_node_wait_for_new_job_seconds": 5,
        "jobs": [{"name": "a", "command": "true", "priority": "high",
                  "stdio": {"delete_on_success": "yes"}}]})
    proc = torc(tmp_path, "create", "--dry-run", spec)
    assert proc.returncode != 0
    err = proc.stderr
    assert "execution_config: mode: must be one of direct, slurm, auto; got 'fast'" in err
    assert "execution_config: stdio: mode: must be one of separate, combined" in err
    assert "execution_config: termination_signal: not a signal name: 'SIGNOPE'" in err
    assert "execution_config: unknown key 'extra'" in err
    assert "unknown key 'compute_node_wait_for_new_job_seconds'" in err
    assert "jobs[0] 'a': priority: expected an integer, got string" in err
    assert "jobs[0] 'a': stdio: delete_on_success: expected a boolean, got string" in err
    assert not (tmp_path / "torc_output").exists()


def test_export_and_import_keep_requirements_set_after_creation(tmp_path: Path) -> None:
    import urllib.request

    from cli_helpers import ServerProcess, clean_env

    srv = ServerProcess(tmp_path / "torc.db")
    env = clean_env(TORC_API_URL=srv.url)
    try:
        spec = _spec(tmp_path, {
            "name": "sized", "resource_requirements": [{"name": "small", "memory": "10m"}],
            "jobs": [{"name": "a", "command": "true", "resource_requirements": "small"},
                     {"name": "b", "command": "true", "resource_requirements": "small"}]})
        wid = torc_json(tmp_path, "create", spec, env=env)["id"]
        a = next(j for j in torc_json(tmp_path, "jobs", "list", str(wid), env=env)
                 if j["name"] == "a")
        body = json.dumps({"jobs": [{"job_id": a["id"], "memory_bytes": 50 << 20}],
                           "reason": "measured"}).encode()
        request = urllib.request.Request(f"{srv.url}/workflows/{wid}/jobs/resources",
                                         data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            assert reply.status == 200
        torc(tmp_path, "workflows", "export", str(wid), "-o", "e.json", env=env, check=True)
        copy = torc_json(tmp_path, "workflows", "import", "e.json", env=env)["workflow_id"]
        sizes = {j["name"]: j["memory_bytes"]
                 for j in torc_json(tmp_path, "jobs", "list", str(copy), env=env)}
        assert sizes == {"a": 50 << 20, "b": 10 << 20}
    finally:
        srv.stop()
