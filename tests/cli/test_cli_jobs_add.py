"""`torc-trio jobs add`: dynamic jobs from the shell, inside a running job and outside one.

Real standalone runs: the orchestrator job calls the real command, which reaches the real
server through the TORC_* variables its runner set."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import yaml
from cli_helpers import standalone_json, torc

TORC_CMD = f"{shlex.quote(sys.executable)} -m torc_cli.main"


def _orchestrator_spec(generations: int, max_iterations: int = 1000) -> dict[str, Any]:
    """gen0 spawns gen1 (two workers and the next orchestrator), which spawns gen2, ... until
    ``generations``: each orchestrator writes its fragment and adds it after itself."""
    script = f"""
g=${{GEN:-0}}
if [ "$g" -lt {generations} ]; then
  n=$((g + 1))
  cat > frag_$n.yaml <<EOT
jobs:
  - name: work_$n
    command: echo gen $n > out_$n.txt
  - name: orch_$n
    command: GEN=$n bash orch.sh
    depends_on: [work_$n]
EOT
  {TORC_CMD} jobs add "$TORC_WORKFLOW_ID" frag_$n.yaml
fi
"""
    return {"name": "generations", "max_iterations": max_iterations,
            "jobs": [{"name": "orch_0", "command": "bash orch.sh"}], "_script": script}


def _write(tmp_path: Path, spec: dict[str, Any]) -> Path:
    (tmp_path / "orch.sh").write_text(spec.pop("_script"))
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_an_orchestrator_spawns_three_generations_and_stops(tmp_path: Path) -> None:
    spec = _write(tmp_path, _orchestrator_spec(3))
    proc = torc(tmp_path, "run", "-j", "2", str(spec), timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = standalone_json(tmp_path, "jobs", "list", "1")
    by_name = {j["name"]: j for j in jobs}
    assert sorted(by_name) == sorted(["orch_0", *(f"{k}_{g}" for g in (1, 2, 3)
                                                  for k in ("work", "orch"))])
    assert {j["status"] for j in jobs} == {"completed"}
    assert [by_name[f"work_{g}"]["iteration"] for g in (1, 2, 3)] == [1, 2, 3]
    assert by_name[f"work_{2}"]["depends_on"] == [by_name["orch_1"]["id"]]
    for g in (1, 2, 3):
        assert (tmp_path / f"out_{g}.txt").read_text() == f"gen {g}\n"
    results = standalone_json(tmp_path, "results", "list", "1")
    assert len(results) == 7  # every job ran once


def test_a_spawn_past_max_iterations_fails_its_job(tmp_path: Path) -> None:
    spec = _write(tmp_path, _orchestrator_spec(5, max_iterations=2))
    proc = torc(tmp_path, "run", "-j", "2", str(spec), timeout=180)
    assert proc.returncode != 0
    jobs = {j["name"]: j for j in standalone_json(tmp_path, "jobs", "list", "1")}
    assert jobs["orch_2"]["status"] == "failed"
    assert "work_3" not in jobs
    stderr = "".join(p.read_text() for p in (tmp_path / "torc_output").rglob("*.e")
                     if p.name.startswith(f"job_wf1_j{jobs['orch_2']['id']}_"))
    assert "max_iterations" in stderr, stderr


def test_jobs_add_outside_a_job_and_its_errors(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(
        {"name": "w", "jobs": [{"name": "a", "command": "true"}]}))
    created = standalone_json(tmp_path, "create", "spec.yaml")
    wid = created["id"]
    (tmp_path / "more.json5").write_text(
        "{jobs: [{name: 'b{i}', command: 'true', parameters: {i: '1:2'}}]}")
    added = standalone_json(tmp_path, "jobs", "add", str(wid), "more.json5", "--after", "1")
    assert [j["name"] for j in added["jobs"]] == ["b1", "b2"] and added["after"] == 1
    plain = torc(tmp_path, "-s", "jobs", "add", str(wid), "more.json5")
    assert plain.returncode == 0 and "Added 2 jobs to workflow 1 (iteration 1)" in plain.stdout
    (tmp_path / "bad.yaml").write_text("jobs:\n  - name: c\n    depends_on: [zzz]\n")
    bad = torc(tmp_path, "-s", "jobs", "add", str(wid), "bad.yaml")
    assert bad.returncode != 0
    assert "jobs[0] 'c'" in bad.stderr and "zzz" in bad.stderr, bad.stderr
    missing = torc(tmp_path, "-s", "jobs", "add", str(wid), "nope.yaml")
    assert missing.returncode != 0 and "nope.yaml" in missing.stderr
    jobs = standalone_json(tmp_path, "jobs", "list", str(wid))
    assert len(jobs) == 5  # nothing from the refused fragments
