"""GNU parallel's habits in `torc-trio exec`, through the real command: input sources
(``:::``, ``:::+``, ``::::``), replacement strings and their quoting, ``--joblog``,
``--halt``, ``--retries``, ``--dry-run``, ``-k``, and a named error for every misuse.

Before this, ``torc-trio exec -c 'echo {}' ::: a b`` silently made two wrong jobs,
``echo {}`` and ``::: a b``."""

from __future__ import annotations

import inspect
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import TORC, clean_env, standalone_json, torc, wait_until

from torc_cli.commands.run import COMMANDS as RUN_COMMANDS
from torc_cli.parallel import parallel_spec, split_sources


def stdout_of(tmp: Path, job: dict[str, object], attempt: int = 1) -> str:
    """A job's captured stdout (workflow 1, run 1)."""
    path = tmp / "torc_output" / "job_stdio" / "0" / f"job_wf1_j{job['id']}_r1_a{attempt}.o"
    return path.read_text()


def jobs_of(tmp: Path) -> list[dict[str, object]]:
    return sorted(standalone_json(tmp, "jobs", "list", "1"), key=lambda j: int(j["id"]))


def counts(tmp: Path) -> dict[str, int]:
    got = standalone_json(tmp, "status", "1")["counts"]
    return {k: v for k, v in got.items() if v}


def test_one_job_per_value_with_the_command_as_words(tmp_path: Path) -> None:
    torc(tmp_path, "exec", "echo", "{}", ":::", "a", "b", "c", check=True)
    jobs = jobs_of(tmp_path)
    assert [j["command"] for j in jobs] == ["echo a", "echo b", "echo c"]
    assert [j["name"] for j in jobs] == ["job_1", "job_2", "job_3"]
    assert [stdout_of(tmp_path, j) for j in jobs] == ["a\n", "b\n", "c\n"]
    assert counts(tmp_path) == {"completed": 3}


def test_the_command_with_dash_c_and_two_lists_make_every_combination(tmp_path: Path) -> None:
    torc(tmp_path, "exec", "-c", "echo {1}-{2}", ":::", "a", "b", ":::", "x", "y", check=True)
    jobs = jobs_of(tmp_path)
    # parallel's order: the first list varies slowest; the ids follow it.
    assert [stdout_of(tmp_path, j) for j in jobs] == ["a-x\n", "a-y\n", "b-x\n", "b-y\n"]


def test_linked_lists_pair_up(tmp_path: Path) -> None:
    torc(tmp_path, "exec", "echo", "{1}{2}", ":::", "a", "b", ":::+", "x", "y", check=True)
    assert [stdout_of(tmp_path, j) for j in jobs_of(tmp_path)] == ["ax\n", "by\n"]


def test_link_zip_links_every_list(tmp_path: Path) -> None:
    torc(tmp_path, "exec", "--link", "zip", "echo", ":::", "a", "b", ":::", "1", "2",
         check=True)
    assert [stdout_of(tmp_path, j) for j in jobs_of(tmp_path)] == ["a 1\n", "b 2\n"]


def test_values_from_files_are_quoted_for_the_shell(tmp_path: Path) -> None:
    """Each line of a :::: file is a value; a value is one argument whatever it holds (a
    space, a quote, a $, a ;), as parallel quotes it; -a FILE is the same source."""
    lines = ["has space", "it's", "$HOME", "a;touch injected", "plain"]
    (tmp_path / "names.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "suffix.txt").write_text("1\n2\n3\n4\n5\n")
    torc(tmp_path, "exec", "printf", "'[%s|%s]\\n'", "{1}", "{2}", "::::", "names.txt",
         "::::+", "suffix.txt", check=True)
    outputs = [stdout_of(tmp_path, j) for j in jobs_of(tmp_path)]
    assert outputs == [f"[{v}|{k}]\n" for k, v in enumerate(lines, start=1)]
    assert not (tmp_path / "injected").exists()


def test_arg_file_and_transforms(tmp_path: Path) -> None:
    (tmp_path / "files.txt").write_text("dir/photo.jpg\narchive.tar.gz\n")
    torc(tmp_path, "exec", "-a", "files.txt", "echo {#} {.} {/} {//} {/.}", check=True)
    assert [stdout_of(tmp_path, j) for j in jobs_of(tmp_path)] == [
        "1 dir/photo photo.jpg dir photo\n", "2 archive.tar archive.tar.gz . archive.tar\n"]


def test_values_alone_are_the_commands_and_a_command_without_braces_gets_them(
        tmp_path: Path) -> None:
    torc(tmp_path, "exec", ":::", "echo one > one.txt", "echo two > two.txt", check=True)
    assert (tmp_path / "one.txt").read_text() == "one\n"
    assert (tmp_path / "two.txt").read_text() == "two\n"
    torc(tmp_path, "exec", "touch", ":::", "made 1", "made2", check=True)
    assert (tmp_path / "made 1").exists() and (tmp_path / "made2").exists()


def test_joblog_has_parallels_columns_and_a_line_per_attempt(tmp_path: Path) -> None:
    before = time.time()
    proc = torc(tmp_path, "exec", "-j", "2", "--retries", "1", "--joblog", "jobs.tsv",
                "echo {}; test {} != bad", ":::", "ok", "bad", "fine")
    assert proc.returncode == 1, proc.stderr
    lines = (tmp_path / "jobs.tsv").read_text().splitlines()
    assert lines[0] == "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand"
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(row) == 9 for row in rows), rows
    # One line per finished attempt: ok and fine once, bad twice (--retries 1).
    assert sorted(int(r[0]) for r in rows) == [1, 2, 2, 3]
    by_seq = {int(r[0]): r for r in rows}
    for seq, value, exitval in ((1, "ok", 0), (2, "bad", 1), (3, "fine", 0)):
        row = by_seq[seq]
        assert row[1] == ":"
        assert row[2].split(".")[1].isdigit() and len(row[2].split(".")[1]) == 3
        assert before - 1 <= float(row[2]) <= time.time()
        assert float(row[3]) >= 0 and len(row[3]) == 10  # %10.3f
        assert (row[4], row[5]) == ("0", str(len(value) + 1))  # received: the stdout bytes
        assert (int(row[6]), int(row[7])) == (exitval, 0)
        assert row[8] == f"echo {value}; test {value} != bad"
    # +FILE appends, without a second header.
    torc(tmp_path, "exec", "--joblog", "+jobs.tsv", "true", ":::", "x", check=True)
    again = (tmp_path / "jobs.tsv").read_text().splitlines()
    assert len(again) == len(lines) + 1 and again[-1].endswith("\ttrue x")
    assert sum(line.startswith("Seq\t") for line in again) == 1


def _halting_run(tmp_path: Path, when: str) -> subprocess.Popen[str]:
    """-j 2 over slow, bad, a, b: slow runs until the file 'go' exists; bad fails once slow
    has started; a and b would leave a.ran and b.ran. The job log goes to jobs.tsv."""
    command = ("case {} in "
               "slow) touch slow.started; while [ ! -e go ]; do sleep 0.05; done; "
               "touch slow.finished;; "
               "bad) while [ ! -e slow.started ]; do sleep 0.05; done; exit 3;; "
               "*) touch {}.ran;; esac")
    with open(tmp_path / "stderr.txt", "w") as err:
        return subprocess.Popen(
            [*TORC, "exec", "-j", "2", "--halt", f"{when},fail=1", "--joblog", "jobs.tsv",
             command,
             ":::", "slow", "bad", "a", "b"],
            cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=err, text=True)


def test_halt_now_terminates_the_running_and_starts_no_more(tmp_path: Path) -> None:
    run = _halting_run(tmp_path, "now")
    out, _ = run.communicate(timeout=120)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert run.returncode == 1, (out, stderr)
    assert "halting: --halt now,fail=1: job_2" in stderr and "exit code 3" in stderr
    assert not (tmp_path / "slow.finished").exists()  # terminated while it waited
    assert not (tmp_path / "a.ran").exists() and not (tmp_path / "b.ran").exists()
    assert counts(tmp_path) == {"failed": 1, "terminated": 1, "ready": 2}
    # The log has the two that ran: bad's exit value, and the signal that ended slow.
    rows = [line.split("\t") for line in (tmp_path / "jobs.tsv").read_text().splitlines()[1:]]
    assert sorted((r[0], r[6], r[7]) for r in rows) == [("1", "0", "15"), ("2", "3", "0")]
    # What the hint says finishes it: reset what did not complete, run again.
    assert "reset-status 1 --failed-only" in stderr
    (tmp_path / "go").touch()
    torc(tmp_path, "-s", "reset-status", "1", "--failed-only", check=True)
    rerun = torc(tmp_path, "-s", "run", "1")
    assert rerun.returncode == 1  # bad fails again, by itself: nothing halts a plain run
    assert (tmp_path / "slow.finished").exists()
    assert (tmp_path / "a.ran").exists() and (tmp_path / "b.ran").exists()
    assert counts(tmp_path) == {"completed": 3, "failed": 1}


def test_halt_soon_lets_the_running_finish(tmp_path: Path) -> None:
    run = _halting_run(tmp_path, "soon")
    try:
        wait_until(lambda: "halting" in (tmp_path / "stderr.txt").read_text())
        (tmp_path / "go").touch()  # slow is still running: now it may finish
        out, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert run.returncode == 1, (out, stderr)
    assert "--halt soon,fail=1" in stderr
    assert (tmp_path / "slow.finished").exists()
    assert not (tmp_path / "a.ran").exists() and not (tmp_path / "b.ran").exists()
    assert counts(tmp_path) == {"completed": 1, "failed": 1, "ready": 2}


def test_halt_percent_of_all_jobs(tmp_path: Path) -> None:
    """fail=50% of 4 jobs: the second failure halts; -j 1 runs them in order."""
    proc = torc(tmp_path, "exec", "-j", "1", "--halt", "soon,fail=50%",
                "test {} -lt 2", ":::", "1", "5", "6", "1")
    assert proc.returncode == 1
    assert counts(tmp_path) == {"completed": 1, "failed": 2, "ready": 1}


def test_retries_run_a_failing_job_again_and_k_prints_the_last_attempt(
        tmp_path: Path) -> None:
    proc = torc(tmp_path, "exec", "-k", "--retries", "2",
                "echo {} $TORC_ATTEMPT_ID; echo x >> {}.tries; "
                "[ {} = flaky ] && [ $TORC_ATTEMPT_ID -ge 2 ]", ":::", "bad", "flaky")
    assert proc.returncode == 1, proc.stderr
    assert (tmp_path / "bad.tries").read_text() == "x\nx\nx\n"  # 1 + 2 retries
    assert (tmp_path / "flaky.tries").read_text() == "x\nx\n"
    results = standalone_json(tmp_path, "results", "list", "1", "--all-runs")
    attempts = sorted((r["job_id"], r["attempt"], r["status"]) for r in results)
    assert attempts == [(1, 1, "failed"), (1, 2, "failed"), (1, 3, "failed"),
                        (2, 1, "failed"), (2, 2, "completed")]
    assert proc.stdout == "bad 3\nflaky 2\n"  # only final attempts, in input order
    # The report names the job that failed for good, not the one a retry saved.
    assert "did not succeed (1):\n  job_1 (id 1): failed, exit code 1" in proc.stderr
    assert counts(tmp_path) == {"completed": 1, "failed": 1}


def test_dry_run_prints_the_commands_and_creates_nothing(tmp_path: Path) -> None:
    proc = torc(tmp_path, "exec", "--dry-run", "--retries", "1", "touch", "{}.made", ":::",
                "a b", "c")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "touch 'a b'.made\ntouch c.made\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no torc_output, nothing made
    as_json = torc(tmp_path, "-f", "json", "exec", "--dry-run", "-c", "echo {i}",
                   "--param", "i=1:2")
    assert json.loads(as_json.stdout) == {"dry_run": True, "jobs": [
        {"name": "job_1", "command": "echo 1"}, {"name": "job_2", "command": "echo 2"}]}
    assert list(tmp_path.iterdir()) == []


def test_words_after_the_first_source_are_values_even_if_they_look_like_options(
        tmp_path: Path) -> None:
    """-s and -f are torc-trio's global options before the command; after ::: they are
    values, as in parallel (and --dry-run there is a value, not a dry run)."""
    proc = torc(tmp_path, "exec", "--dry-run", "echo", ":::", "-s", "-f", "--url")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "echo -s\necho -f\necho --url\n"
    run = torc(tmp_path, "exec", "-k", "echo", ":::", "--dry-run", "-s")
    assert run.returncode == 0, run.stderr
    assert run.stdout == "--dry-run\n-s\n"


def test_keep_order_prints_in_input_order_when_later_jobs_finish_first(
        tmp_path: Path) -> None:
    command = ("if [ {} = first ]; then while [ ! -e third.done ]; do sleep 0.05; done; fi; "
               "echo {}; touch {}.done")
    proc = torc(tmp_path, "exec", "-k", "-j", "3", command, ":::", "first", "second", "third")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "first\nsecond\nthird\n"  # the report went to stderr
    assert "completed" in proc.stderr
    # Without -k: today's summary, no job output.
    plain = torc(tmp_path, "exec", "echo", "{}", ":::", "quiet")
    assert "quiet" not in plain.stdout and "completed" in plain.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["echo", ":::"], "input source 1 (:::) has no values"),
    (["echo", ":::", "a", ":::"], "input source 2 (:::) has no values"),
    (["echo", "{3}", ":::", "a", ":::", "b"], "uses {3}, but there are 2 input sources"),
    (["echo", "{0}", ":::", "a"], "uses {0}, but there is 1 input source"),
    (["echo", "::::", "missing.txt"], "input source 1 (:::: missing.txt): cannot read "
                                      "missing.txt: No such file"),
    (["echo", "::::"], ":::: needs a file"),
    (["echo", ":::", "a", "b", ":::+", "x"], "but has 1 value and that one 2"),
    ([":::+", "a"], "links to the previous input source, and there is none"),
    (["echo", "{%}", ":::", "a"], "the job slot ({%})"),
    (["--halt", "sometimes", "echo", ":::", "a"], "--halt 'sometimes': expected now,fail=N"),
    (["--halt", "now,fail=0", "echo", ":::", "a"], "fail=N needs N >= 1"),
    (["--halt", "now,success=1", "echo", ":::", "a"], "only fail=... conditions"),
    (["--param", "i=1:2", "echo", ":::", "a"], "--param and ::: input sources do not mix"),
    (["-c", "x", "-c", "y", ":::", "a"], "-c was given 2 times"),
    (["-c", "echo", "echo", ":::", "a"], "two commands: -c 'echo' and the words before :::"),
    (["--retries", "-1", "echo", ":::", "a"], "--retries -1: expected 0 or more"),
    (["--joblog", "nodir/log.tsv", "echo", ":::", "a"], "no such folder nodir"),
    (["-k", "-f", "json", "echo", ":::", "a"], "-k prints the jobs' output"),
])
def test_misuse_is_named(tmp_path: Path, args: list[str], message: str) -> None:
    proc = torc(tmp_path, "exec", *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("torc-trio: error: ") and message in proc.stderr, \
        proc.stderr
    assert not (tmp_path / "torc_output").exists()  # refused before anything was made


def test_help_shows_the_parallel_forms(tmp_path: Path) -> None:
    text = torc(tmp_path, "exec", "--help", check=True).stdout
    for form in (":::", ":::+", "::::", "{1}", "{.}", "--joblog", "--halt", "--keep-order",
                 "--retries", "--dry-run", "quoted for the shell"):
        assert form in text, form


def _exec_examples() -> list[str]:
    record = next(c for c in RUN_COMMANDS if c.name == "exec")
    return inspect.cleandoc(record.examples).splitlines()


@pytest.mark.parametrize("example", _exec_examples())
def test_every_exec_example_works(tmp_path: Path, example: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "torc-trio"
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m torc_cli.main "
                       '"$@"\n')
    wrapper.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    (work / "commands.txt").write_text("echo one\necho two\n")
    env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["bash", "-c", example], cwd=work, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (example, proc.stdout, proc.stderr)


def test_a_hundred_thousand_values_are_one_parameterized_entry() -> None:
    values = [str(i) for i in range(100_000)]
    parsed = split_sources(["true", ":::", *values])
    doc = parallel_spec("big", " ".join(parsed.words), parsed.sources)
    assert len(doc["jobs"]) == 1
    params = doc["jobs"][0]["parameters"]
    assert params["seq"] == "1:100000" and len(params["arg1"]) == 100_000
