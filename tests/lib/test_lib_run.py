"""Running from Python through real servers and processes: standalone runs, runs on a
server, map with its values, failures and postprocess, and the blocking client."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lib_tasks
import pytest

import torc_trio
from torc_trio import MapError, Workflow


def two_jobs() -> Workflow:
    wf = Workflow("two")
    first = wf.add_job("first", "echo hello > first.txt")
    wf.add_job("second", "test -s first.txt && cat first.txt", depends_on=[first])
    return wf


def test_a_dependent_workflow_runs_standalone_to_ok(workdir: Path) -> None:
    result = two_jobs().run(jobs=2)
    assert result.ok and result.counts["completed"] == 2 == result.total
    assert result.database == "torc_output/torc.db" and result.url is None
    results = result.results()  # the standalone server is gone: read from its database
    assert sorted(r["job_name"] for r in results) == ["first", "second"]
    assert all(r["return_code"] == 0 for r in results)
    order = {r["job_name"]: r["completed_at"] for r in results}
    assert order["first"] <= order["second"]


def test_a_failing_job_is_not_ok_and_says_why(workdir: Path) -> None:
    wf = Workflow("fails")
    bad = wf.add_job("bad", "echo oops >&2; exit 3")
    wf.add_job("after", "true", depends_on=[bad])
    result = wf.run(jobs=1)
    assert not result.ok
    assert result.counts["failed"] == 1 and result.counts["canceled"] == 1
    [failed] = result.results(status="failed")
    assert failed["return_code"] == 3
    assert "oops" in result.job_output(failed["job_id"])["stderr"]


def test_a_missing_input_file_stops_the_run_before_anything_exists(workdir: Path) -> None:
    wf = Workflow("needs")
    data = wf.add_file("data", "data.txt")
    wf.add_job("use", "cat data.txt", input_files=[data])
    with pytest.raises(torc_trio.SpecError, match="required input file 'data' does not exist"):
        wf.run()
    assert not (workdir / "torc_output").exists()


def test_map_returns_twenty_values_in_input_order(workdir: Path) -> None:
    values = torc_trio.map(lib_tasks.square, [{"x": i} for i in range(20)], jobs=4)
    assert values == [i * i for i in range(20)]


def test_map_with_postprocess_and_resource_requirements(workdir: Path) -> None:
    out = torc_trio.map(lib_tasks.square, [{"x": i} for i in range(4)], postprocess=lib_tasks.total,
                        resource_requirements={"num_cpus": 1, "memory": "50m"}, name="sq")
    assert out == torc_trio.MapResult([0, 1, 4, 9], 14)
    assert out.postprocessed == 14


def test_a_raising_call_makes_map_raise_naming_it(workdir: Path) -> None:
    with pytest.raises(MapError) as info:
        torc_trio.map(lib_tasks.boom, [{"x": i} for i in range(5)], jobs=3,
                      postprocess=lib_tasks.total)
    err = info.value
    [failure] = err.failures
    assert (failure.index, failure.params, failure.job_name) == (3, {"x": 3}, "boom_3")
    assert failure.status == "failed" and failure.return_code == 1
    assert "ValueError: x must not be 3" in (failure.stderr_tail or "")
    message = str(err)
    assert "map(boom): 1 of 5 calls did not complete" in message
    assert "params[3] {'x': 3} (job boom_3" in message
    assert "ValueError: x must not be 3" in message
    assert "lib_tasks.py" in message  # the user's frame, not the entry point's
    assert err.values == [0, 1, 2, None, 4]


def test_a_failing_postprocess_is_named_with_the_values_kept(workdir: Path) -> None:
    with pytest.raises(MapError) as info:
        torc_trio.map(lib_tasks.square, [{"x": 2}, {"x": 3}], postprocess=lib_tasks.broken_total)
    assert str(info.value).startswith("map(square): the postprocess job did not complete")
    [failure] = info.value.failures
    assert failure.index is None and failure.job_name == "square_postprocess"
    assert "RuntimeError: cannot add 2 values" in (failure.stderr_tail or "")
    assert info.value.values == [4, 9]


def test_map_in_chunks_returns_the_same_values_and_names_each_failed_call(
        workdir: Path) -> None:
    values, total = torc_trio.map(lib_tasks.square, [{"x": i} for i in range(20)],
                                  chunk_size=6, postprocess=lib_tasks.total, jobs=2)
    assert values == [i * i for i in range(20)] and total == sum(values)
    with pytest.raises(MapError) as info:
        torc_trio.map(lib_tasks.boom, [{"x": i} for i in range(6)], chunk_size=2,
                      postprocess=lib_tasks.total)
    [failure] = info.value.failures  # its chunk's other call completed
    assert (failure.index, failure.params, failure.job_name) == (3, {"x": 3}, "boom_2-3")
    assert failure.error == "ValueError: x must not be 3"
    assert "call 1: lib_tasks:boom(x=3) raised ValueError" in (failure.stderr_tail or "")
    assert info.value.values == [0, 1, 2, None, 4, 5]
    with pytest.raises(ValueError, match="chunk_size=0"):
        torc_trio.map(lib_tasks.square, [{"x": 1}], chunk_size=0)


def test_a_value_json_cannot_hold_fails_the_call_with_the_reason(workdir: Path) -> None:
    with pytest.raises(MapError, match="returned set, which is not JSON"):
        torc_trio.map(lib_tasks.not_json, [{"x": 1}])


def test_function_jobs_in_a_built_workflow(workdir: Path) -> None:
    wf = Workflow("calls")
    a = wf.add_call(lib_tasks.square, {"x": 3})
    b = wf.add_call(lib_tasks.square, {"x": 4})
    s = wf.add_call(lib_tasks.total, {"offset": 1}, results_of=[a, b], name="sum")
    wf.add_job("after", "true", depends_on=[s])
    result = wf.run()
    assert result.ok
    assert result.values == {"square": 9, "square_2": 16, "sum": 26}
    assert result.value(s) == 26
    with pytest.raises(KeyError, match="after"):
        result.value("after")


def test_run_and_map_on_a_server(workdir: Path, server_url: str,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    result = two_jobs().run(url=server_url, jobs=2)
    assert result.ok and result.url == server_url and result.database is None
    assert len(result.results()) == 2
    monkeypatch.setenv("TORC_API_URL", server_url)
    assert torc_trio.map(lib_tasks.square, [{"x": 2}, {"x": 5}]) == [4, 25]
    client = torc_trio.connect()
    names = [w["name"] for w in client.workflows()]
    assert names == ["two", "square"]


def test_the_blocking_client_reads_and_changes(workdir: Path, server_url: str) -> None:
    client = torc_trio.connect(server_url)
    wf = Workflow("held")
    first = wf.add_job("first", "true")
    wf.add_job("second", "true", depends_on=[first])
    wid = wf.create(server_url)
    assert client.status(wid)["counts"]["ready"] == 1
    assert [j["name"] for j in client.jobs(wid, status="blocked")] == ["second"]
    assert client.cancel(wid)["is_canceled"]
    assert client.reset_status(wid)["is_canceled"] is False
    assert client.status(wid)["counts"]["ready"] == 1
    with pytest.raises(torc_trio.ApiError) as info:
        client.status(wid + 100)
    assert info.value.status == 404


def test_watch_yields_the_feed_until_the_workflow_ends(workdir: Path, server_url: str) -> None:
    client = torc_trio.connect(server_url)
    wid = two_jobs().create(server_url)
    events = client.watch(wid)
    first = next(iter_events := iter(events))
    assert first["type"] == "counts" and first["counts"]["ready"] == 1
    # run it elsewhere: the feed tells of each change, then the end
    runner = subprocess.Popen([sys.executable, "-m", "torc_cli.main", "--url", server_url,
                               "runner", str(wid), "-p", "0.2"], cwd=workdir)
    try:
        rest = list(iter_events)
    finally:
        assert runner.wait(60) == 0
    changes = [(m["name"], m["new"]) for m in rest if m["type"] == "job_status"]
    assert ("first", "completed") in changes and ("second", "completed") in changes
    assert rest[-1] == {**rest[-1], "type": "workflow", "event": "completed"}
    # watching a finished workflow ends at its first message
    assert [m["type"] for m in client.watch(wid)] == ["counts"]
    with client.watch(wid, until_done=False) as open_feed:
        assert next(iter(open_feed))["type"] == "counts"  # then closed by the with


def test_submit_creates_and_starts_the_workflows_runners(workdir: Path, server_url: str) -> None:
    """submit = create + `torc-trio submit`: here the workflow's own local-runner action
    (Slurm allocations take the same path: tests/slurm)."""
    wf = Workflow("submitted")
    wf.add_action("on_workflow_start", "schedule_nodes", scheduler_type="local",
                  num_allocations=1, max_parallel_jobs=2)
    first = wf.add_job("first", "true")
    wf.add_job("second", "true", depends_on=[first])
    submitted = wf.submit(server_url)
    [runner] = submitted.allocations
    assert runner["kind"] == "local" and (workdir / runner["log"]).exists()
    client = torc_trio.connect(server_url)
    for _ in client.watch(submitted.workflow_id):  # ends when the workflow does
        pass
    status = client.status(submitted.workflow_id)
    assert status["is_complete"] and status["counts"]["completed"] == 2


def test_a_function_of_a_package_elsewhere_imports_in_its_jobs(
        workdir: Path, tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The jobs run in the caller's directory; the function's package is found from its own
    file (the folder above the package goes first on the job's sys.path)."""
    root = tmp_path_factory.mktemp("code")
    (root / "mypkg").mkdir()
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "ops.py").write_text("def double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(root))
    from mypkg.ops import double  # type: ignore[import-not-found]

    assert torc_trio.map(double, [{"x": 1}, {"x": 21}]) == [2, 42]


def test_the_entry_point_outside_a_job_says_what_it_is(workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORC_")}
    proc = subprocess.run([sys.executable, "-m", "torc_trio.call", "lib_tasks:square"],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 1
    assert "torc_trio.call runs as a torc-trio job" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "torc_trio.call"], capture_output=True,
                          text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 1 and "usage: python -m torc_trio.call MODULE:QUALNAME" in proc.stderr


def test_an_unreachable_server_is_said_then_given_up_on(
        workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = torc_trio.connect(f"http://127.0.0.1:{port}/torc-service/v1",
                               wait_for_server_s=1.0)
    with pytest.raises(torc_trio.ServerUnreachable, match="gave up after"):
        client.workflows()
    assert "waiting for the server at http://127.0.0.1" in caplog.text
