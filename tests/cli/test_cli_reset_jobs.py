"""`reset-status WF --job-ids` and `jobs reset-status WF --job-ids`: the real command against
a real `torc-trio serve`, while a real `torc-trio run` keeps another branch running."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cli_helpers import ServerProcess, background, clean_env, torc, torc_json, wait_until

WAIT = 'while [ ! -e "{gate}" ]; do sleep 0.05; done'


def write_spec(tmp_path: Path, gate: Path) -> Path:
    spec = {"name": "branches", "jobs": [
        {"name": "a1", "command": "true"},
        {"name": "a2", "command": "true", "depends_on": ["a1"]},
        {"name": "b0", "command": "true"},
        {"name": "b1", "command": WAIT.format(gate=gate), "depends_on": ["b0"]},
        {"name": "b2", "command": "true", "depends_on": ["b1"]},
    ]}
    path = tmp_path / "branches.json"
    path.write_text(json.dumps(spec))
    return path


def test_reset_jobs_while_another_branch_runs(tmp_path: Path) -> None:
    gate = tmp_path / "GATE"
    server = ServerProcess(tmp_path / "torc.db")
    try:
        url = ["--url", server.url]
        wf = str(torc_json(tmp_path, *url, "create", str(write_spec(tmp_path, gate)))["id"])

        def jobs() -> dict[str, dict[str, Any]]:
            return {j["name"]: j for j in torc_json(tmp_path, *url, "jobs", "list", wf)}

        def results(run: int) -> set[str]:
            rows = torc_json(tmp_path, *url, "results", "list", wf, "--all-runs")
            names = {j["id"]: n for n, j in ids.items()}
            return {names[r["job_id"]] for r in rows if r["run_id"] == run}

        ids = jobs()
        with background(tmp_path, *url, "run", wf, "-j", "4", "--poll-interval", "0.2",
                        env=clean_env()) as run:
            wait_until(lambda: [jobs()[n]["status"] for n in ("a1", "a2", "b1")]
                       == ["completed", "completed", "running"])
            b1 = jobs()["b1"]

            # The running job's upstream: refused, naming the running job; nothing changed.
            before = torc_json(tmp_path, *url, "status", wf)
            refused = torc(tmp_path, *url, "reset-status", wf, "--job-ids", str(ids["b0"]["id"]))
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert f"job {b1['id']}: cannot reset while pending or running" in refused.stderr
            assert torc_json(tmp_path, *url, "status", wf) == before

            # a1 (and a2 after it) again, while b1 runs on.
            done = torc(tmp_path, *url, "reset-status", wf, "--job-ids", str(ids["a1"]["id"]),
                        check=True)
            assert (f"Reset 2 jobs of workflow {wf} for run 2 (the 1 named and what depends "
                    f"on them): {ids['a1']['id']}, {ids['a2']['id']}") in done.stdout
            wait_until(lambda: results(2) == {"a1", "a2"})

            # Torc's other spelling, the option repeated: a2 alone (nothing depends on it).
            a2 = str(ids["a2"]["id"])
            answer = torc_json(tmp_path, *url, "jobs", "reset-status", wf, "--job-ids", a2,
                               "--job-ids", a2)
            assert answer["jobs"] == [ids["a2"]["id"]] and answer["run_id"] == 3
            wait_until(lambda: results(3) == {"a2"})

            now = jobs()["b1"]
            assert (now["status"], now["compute_node_id"], now["attempt"], now["run_id"]) == \
                ("running", b1["compute_node_id"], 1, 1)
            gate.touch()
            out, err = run.communicate(timeout=120)
            assert run.returncode == 0, out + err
        assert {j["status"] for j in jobs().values()} == {"completed"}
        assert results(1) == {"a1", "a2", "b0", "b1"}  # b1 counted in the run it ran in
    finally:
        server.stop()


def test_jobs_reset_status_needs_job_ids(tmp_path: Path) -> None:
    """`jobs reset-status 41` (Torc's form: job ids alone) must not reset workflow 41."""
    proc = torc(tmp_path, "jobs", "reset-status", "41")
    assert proc.returncode == 2 and "--job-ids" in proc.stderr
    proc = torc(tmp_path, "reset-status", "1", "--failed-only", "--job-ids", "3")
    assert proc.returncode == 2 and "not allowed with argument --failed-only" in proc.stderr
    proc = torc(tmp_path, "reset-status", "1", "--job-ids", "3,x")
    assert proc.returncode == 2 and "expected job ids like 3,4" in proc.stderr
    assert not (tmp_path / "torc_output").exists()  # refused before any server or database


def test_unknown_job_ids_are_named(tmp_path: Path) -> None:
    spec = tmp_path / "one.json"
    spec.write_text(json.dumps({"name": "one", "jobs": [{"name": "j", "command": "true"}]}))
    torc(tmp_path, "-s", "create", str(spec), check=True)
    proc = torc(tmp_path, "-s", "reset-status", "1", "--job-ids", "1,99,98")
    assert proc.returncode == 2
    assert "job_ids: no job 98, 99 in workflow 1" in proc.stderr
