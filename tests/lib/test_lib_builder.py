"""The Workflow builder: its spec is what `create --dry-run` accepts, mistakes are the CLI's
located SpecErrors raised before anything exists, spec files of every format load, and
functions a runner could not import are refused by name first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lib_tasks
import pytest

import torc_trio
from torc_trio import SpecError, Workflow

REPO = Path(__file__).resolve().parents[2]


def dry_run(path: Path) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "torc_cli.main", "-f", "json", "create", "--dry-run", str(path)],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def sweep() -> Workflow:
    wf = Workflow("sweep", description="built in Python")
    rr = wf.add_resource_requirements("small", num_cpus=1, memory="100m", runtime="PT1M")
    data = wf.add_file("data", "data.txt")
    prep = wf.add_job("prep", "echo 1 > data.txt", output_files=[data], resource_requirements=rr)
    for lr in (0.1, 0.01):
        wf.add_job(f"train_{lr}", f"cat data.txt; echo {lr}", input_files=[data],
                   resource_requirements="small", priority=2)
    wf.add_job("report", "echo done", depends_on_regexes=["train_.*"], depends_on=[prep])
    wf.add_user_data("config", {"epochs": 3})
    handler = wf.add_failure_handler("retry", [{"exit_codes": [1], "max_retries": 2}])
    wf.add_job("flaky", "true", failure_handler=handler)
    wf.add_call(lib_tasks.square, {"x": 4})
    return wf


def test_to_spec_is_what_create_dry_run_accepts(tmp_path: Path) -> None:
    wf = sweep()
    spec = wf.to_spec()
    assert [j["name"] for j in spec["jobs"]] == ["prep", "train_0.1", "train_0.01", "report",
                                                 "flaky", "square"]
    assert spec["jobs"][1]["input_files"] == ["data"]
    assert spec["jobs"][1]["priority"] == 2
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    summary = dry_run(tmp_path / "spec.json")
    assert summary["jobs"] == 6
    assert summary["user_data"] == 3  # config, square.params, square.result
    # write() gives the same document, in YAML too
    wf.write(tmp_path / "spec.yaml")
    assert dry_run(tmp_path / "spec.yaml")["jobs"] == 6
    assert Workflow.from_file(tmp_path / "spec.yaml").to_spec() == spec


def test_mistakes_are_the_located_errors_of_the_cli(tmp_path: Path) -> None:
    wf = Workflow("bad")
    wf.add_job("a", "true", depends_on=["nope"])
    wf.add_job("b", "true", colour="red")
    with pytest.raises(SpecError) as info:
        wf.to_spec()
    assert "jobs[0] 'a': depends_on: no job named 'nope'" in info.value.errors
    assert "jobs[1] 'b': unknown key 'colour'" in info.value.errors
    # the CLI prints the same lines for the same document
    (tmp_path / "bad.json").write_text(json.dumps(wf._document(["jobs"])))
    proc = subprocess.run([sys.executable, "-m", "torc_cli.main", "create", "--dry-run",
                           str(tmp_path / "bad.json")], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2
    for error in info.value.errors:
        assert error in proc.stderr


def test_cycles_are_found_before_anything_is_created() -> None:
    wf = Workflow("loop")
    wf.add_job("a", "true", depends_on=["b"])
    wf.add_job("b", "true", depends_on=["a"])
    with pytest.raises(SpecError, match="cycle"):
        wf.to_spec()


def test_python_mistakes_are_located_at_once() -> None:
    wf, other = Workflow("one"), Workflow("two")
    theirs = other.add_job("x", "true")
    with pytest.raises(SpecError, match=r"jobs\[0\] 'a': depends_on: 'x' is a handle of "
                                        r"another workflow \('two'\)"):
        wf.add_job("a", "true", depends_on=[theirs])
    f = wf.add_file("f", "f.txt")
    with pytest.raises(SpecError, match="depends_on: 'f' is a file, not a job"):
        wf.add_job("a", "true", depends_on=[f])
    with pytest.raises(SpecError, match=r"user_data\[0\] 'u': data: not JSON"):
        wf.add_user_data("u", {1, 2})
    with pytest.raises(SpecError, match=r"jobs\[0\] 'square': params \{'y': 1\}: "
                                        "missing a required argument: 'x'"):
        wf.add_call(lib_tasks.square, {"y": 1})
    with pytest.raises(TypeError, match="add_job"):
        Workflow("w", jobs=[])
    assert wf.to_spec()["files"] == [{"name": "f", "path": "f.txt"}]  # nothing half-added


@pytest.mark.filterwarnings("ignore::torc_trio.TorcWarning")  # kdl_actions: persistent
@pytest.mark.parametrize("name", ["diamond.yaml", "diamond.json5", "kdl_params.kdl",
                                  "kdl_actions.kdl", "diamond.json"])
def test_from_file_reads_every_format(name: str, tmp_path: Path) -> None:
    path = REPO / "tests" / "core" / "specs" / name
    wf = Workflow.from_file(path)
    spec = wf.to_spec()
    (tmp_path / "again.json").write_text(json.dumps(spec))
    assert dry_run(tmp_path / "again.json") == dry_run(path)
    assert wf.job(spec["jobs"][0]["name"]).name == spec["jobs"][0]["name"]


def test_a_field_without_effect_here_warns_as_the_cli_does() -> None:
    wf = Workflow("w", enable_ro_crate=True)
    wf.add_job("a", "true")
    with pytest.warns(torc_trio.TorcWarning, match="enable_ro_crate: accepted but has no "
                                                   "effect here"):
        wf.to_spec()


def test_from_file_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\njobs:\n  - {name: a, command: true\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: YAML syntax error at line \d+"):
        Workflow.from_file(bad)
    with pytest.raises(torc_trio.InputError, match=r"missing\.json: cannot read spec"):
        Workflow.from_file(tmp_path / "missing.json")
    with pytest.raises(torc_trio.InputError, match=r"did you mean http://127\.0\.0\.1:9/torc"):
        torc_trio.connect("http://127.0.0.1:9")


def test_a_fragment_holds_jobs_files_user_data_and_resources() -> None:
    frag = Workflow("next")
    rr = frag.add_resource_requirements("one", num_cpus=1)
    frag.add_job("x", "true", resource_requirements=rr)
    assert frag.to_fragment() == {"resource_requirements": [{"name": "one", "num_cpus": 1}],
                                  "jobs": [{"name": "x", "command": "true",
                                            "resource_requirements": "one"}]}
    frag.add_failure_handler("h", [])
    with pytest.raises(SpecError, match="failure_handlers"):
        frag.to_fragment()


def square_in_main(x: int) -> int:
    return x


def test_functions_a_runner_cannot_import_are_refused_by_name(workdir: Path) -> None:
    square_in_main.__module__ = "__main__"  # as if defined in the script being run

    def nested(x: int) -> int:
        return x

    cases = [
        (square_in_main, r"map: square_in_main is defined in __main__ .*move square_in_main "
                         "into a module"),
        (lambda x: x, "map: a lambda .* cannot run as a job"),
        (nested, "map: .*nested is defined inside another function"),
    ]
    for func, message in cases:
        with pytest.raises(torc_trio.FunctionNotImportable, match=message):
            torc_trio.map(func, [{"x": 1}])
    with pytest.raises(torc_trio.FunctionNotImportable, match="postprocess"):
        torc_trio.map(lib_tasks.square, [{"x": 1}], postprocess=lambda v: v)
    with pytest.raises(SpecError, match=r"map params\[1\]: expected a mapping"):
        torc_trio.map(lib_tasks.square, [{"x": 1}, 2])  # type: ignore[list-item]
    assert list(workdir.iterdir()) == []  # no server started, nothing created


def test_import_is_cheap_for_job_processes() -> None:
    """The function-job entry point imports neither Trio nor the server's modules."""
    code = ("import sys, torc_trio, torc_trio.call; "
            "print(sorted(m for m in ('trio', 'torc_net', 'torc_core', 'torc_cli') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"
