"""Failure handlers as Torc runs them (the recovery script is its own process, run before the
retry with TORC_RETURN_CODE; when it fails the job is not retried and its result says why), and
use_pending_failed (a failure waits as pending_failed for a decision)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cli_helpers import standalone_json, torc, torc_json


def _spec(tmp: Path, doc: dict[str, Any]) -> str:
    (tmp / "spec.json").write_text(json.dumps(doc))
    return "spec.json"


def _handler(script: str) -> list[dict[str, Any]]:
    return [{"name": "h", "rules": [{"exit_codes": [3], "max_retries": 2,
                                     "recovery_script": script}]}]


def test_the_recovery_script_runs_on_its_own_before_the_retry(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {
        "name": "recover",
        "failure_handlers": _handler('echo "rc=$TORC_RETURN_CODE job=$TORC_JOB_NAME '
                                     'attempt=$TORC_ATTEMPT_ID" >> recovery.txt; touch fixed'),
        "jobs": [{"name": "a", "command": "echo try-$TORC_ATTEMPT_ID; [ -e fixed ] || exit 3",
                  "failure_handler": "h"}]})
    torc(tmp_path, "run", spec, check=True)
    assert (tmp_path / "recovery.txt").read_text() == "rc=3 job=a attempt=1\n"
    results = sorted(standalone_json(tmp_path, "results", "list", "1"),
                     key=lambda r: r["attempt"])
    assert [(r["attempt"], r["status"], r["return_code"]) for r in results] == [
        (1, "failed", 3), (2, "completed", 0)]
    assert results[0]["note"] == "recovery script succeeded: retried"
    # Its own process: the retried attempt's output is the job's alone.
    assert Path(results[1]["stdout_path"]).read_text() == "try-2\n"


def test_a_failed_recovery_script_stops_the_retries_and_says_why(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {
        "name": "unrecoverable", "failure_handlers": _handler("echo cannot fix >&2; exit 4"),
        "jobs": [{"name": "a", "command": "exit 3", "failure_handler": "h"}]})
    assert torc(tmp_path, "run", spec).returncode == 1
    (result,) = standalone_json(tmp_path, "results", "list", "1")
    assert (result["attempt"], result["status"], result["return_code"]) == (1, "failed", 3)
    assert result["note"].startswith("recovery script exited 4: not retried (its output: ")
    log = Path(result["note"].split("its output: ")[1].rstrip(")"))
    assert log.read_text() == "cannot fix\n"


def test_a_held_failure_waits_for_a_decision(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {
        "name": "held", "use_pending_failed": True,
        "jobs": [{"name": "a", "command": "exit 2"},
                 {"name": "b", "command": "echo b", "depends_on": ["a"]},
                 {"name": "c", "command": "echo c"}]})
    proc = torc(tmp_path, "run", spec)
    assert proc.returncode != 0
    assert "wait for a decision (pending_failed)" in proc.stdout + proc.stderr
    counts = torc_json(tmp_path, "-s", "status", "1")["counts"]
    assert (counts["pending_failed"], counts["blocked"], counts["completed"]) == (1, 1, 1)

    # Run it again: reset-status --failed-only takes held failures too.
    torc(tmp_path, "-s", "reset-status", "1", "--failed-only", check=True)
    assert torc_json(tmp_path, "-s", "status", "1")["counts"]["ready"] == 1
    torc(tmp_path, "-s", "run", "1")
    # Or decide it is a failure: its dependent is canceled and the workflow is complete.
    out = torc_json(tmp_path, "-s", "jobs", "confirm-failed", "1")
    assert (out["counts"]["failed"], out["counts"]["canceled"]) == (1, 1)
    assert out["is_complete"] is True
    again = torc(tmp_path, "-s", "jobs", "confirm-failed", "1", "--job-ids", "1")
    assert again.returncode != 0 and "not pending_failed" in again.stderr
