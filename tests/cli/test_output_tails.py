"""Output tails end to end: a real standalone `torc-trio run` sends the end of a job's stdout
and stderr with its result (``execution_config.output_tails``: failed, the default; all;
none), and the server answers them without opening a file."""

from __future__ import annotations

import os
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import torc

from torc_cli import stdio
from torc_core.status import JobStatus
from torc_net.job_files import TAIL_BYTES, read_tail

#: The failing job prints more than a tail on stdout (numbered lines), a little on stderr.
SPEC = """
    name: tails
    {settings}
    jobs:
      - name: bad
        command: "seq 1 9000; echo bad-err >&2; exit 3"
      - name: good
        command: "echo good-out; echo good-err >&2"
"""


def run(tmp_path: Path, settings: str = "") -> dict[str, dict[str, Any]]:
    (tmp_path / "wf.yaml").write_text(textwrap.dedent(SPEC.format(settings=settings)).lstrip())
    proc = torc(tmp_path, "-s", "run", "wf.yaml")
    assert proc.returncode == 1, proc.stderr  # the failed job
    conn = sqlite3.connect(tmp_path / "torc_output" / "torc.db")
    try:
        rows = conn.execute(
            "SELECT j.name, r.status, r.stdout_tail, r.stderr_tail, r.stdout_path, r.stderr_path"
            " FROM results r JOIN jobs j ON j.id = r.job_id").fetchall()
    finally:
        conn.close()
    return {r[0]: {"status": r[1], "stdout_tail": r[2], "stderr_tail": r[3],
                   "stdout_path": r[4], "stderr_path": r[5]} for r in rows}


def check_bad(bad: dict[str, Any]) -> None:
    out = bad["stdout_tail"]
    assert out.endswith("\n8999\n9000\n") and len(out.encode()) <= TAIL_BYTES
    # from a line's start (the cut line dropped), and nearly the whole 16 KiB
    assert out.split("\n", 1)[0].isdigit() and len(out.encode()) > TAIL_BYTES - 10
    assert out == read_tail(bad["stdout_path"])
    assert bad["stderr_tail"] == "bad-err\n"


def test_failed_jobs_send_their_tails_by_default(tmp_path: Path) -> None:
    results = run(tmp_path)
    assert results["bad"]["status"] == int(JobStatus.FAILED)
    check_bad(results["bad"])
    good = results["good"]
    assert good["stdout_tail"] is None and good["stderr_tail"] is None
    assert Path(good["stdout_path"]).read_text() == "good-out\n"  # the file is still there


def test_output_tails_all_sends_every_jobs(tmp_path: Path) -> None:
    results = run(tmp_path, "execution_config: {output_tails: all}")
    check_bad(results["bad"])
    good = results["good"]
    assert (good["stdout_tail"], good["stderr_tail"]) == ("good-out\n", "good-err\n")


def test_output_tails_none_sends_none(tmp_path: Path) -> None:
    results = run(tmp_path, "execution_config: {output_tails: none}")
    assert all(r["stdout_tail"] is None and r["stderr_tail"] is None for r in results.values())


def test_combined_output_is_one_tail_and_files_deleted_on_success_are_read_first(
        tmp_path: Path) -> None:
    results = run(tmp_path, "execution_config: {output_tails: all, stdio: {mode: combined, "
                            "delete_on_success: true}}")
    good = results["good"]
    assert (good["stdout_tail"], good["stderr_tail"]) == ("good-out\ngood-err\n", None)
    assert good["stdout_path"] is None  # removed after the tail was read
    assert results["bad"]["stdout_tail"].endswith("9000\nbad-err\n")


def test_a_bad_output_tails_value_is_refused(tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text(textwrap.dedent(SPEC.format(
        settings="execution_config: {output_tails: some}")).lstrip())
    proc = torc(tmp_path, "-s", "run", "wf.yaml")
    assert proc.returncode != 0
    assert "output_tails" in proc.stderr and "failed, all, none" in proc.stderr


# ---------------------------------------------------------------------------------------------
# The pieces


@pytest.mark.parametrize(("setting", "completed", "wanted"), [
    ("failed", False, True), ("failed", True, False), ("all", True, True),
    ("all", False, True), ("none", False, False), ("none", True, False)])
def test_which_results_carry_tails(setting: str, completed: bool, wanted: bool) -> None:
    assert stdio.wants_tails(setting, completed) is wanted


def test_read_tail(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.write_bytes(b"only line without newline")
    assert read_tail(str(small)) == "only line without newline"
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert read_tail(str(empty)) == ""
    one_line = tmp_path / "one_line"
    one_line.write_bytes(b"y" * 40000)  # no line to start from: the last bytes as they are
    assert read_tail(str(one_line)) == "y" * TAIL_BYTES
    broken = tmp_path / "broken"  # a UTF-8 character cut by the tail's start, bad bytes
    broken.write_bytes("é".encode() * 10000 + b"\xff\xfe end")
    got = read_tail(str(broken))
    assert got is not None and got.endswith("\ufffd\ufffd end") and len(got) <= TAIL_BYTES
    assert read_tail(str(tmp_path / "missing")) is None
    assert read_tail(str(tmp_path)) is None  # a directory
    os.mkfifo(tmp_path / "fifo")
    assert read_tail(str(tmp_path / "fifo")) is None  # not waited on
    assert stdio.tails(stdio.plan(str(tmp_path / "x"), "none", False)) == \
        {"stdout_tail": None, "stderr_tail": None}
