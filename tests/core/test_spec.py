"""Spec loading, expansion and validation (torc_core.parse) on specs in Torc's format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from torc_core.errors import SpecError
from torc_core.parse import (
    fmt_for_path,
    inline_value_files,
    load_spec_text,
    parse_duration,
    parse_memory,
    parse_spec,
    value_file_references,
)
from torc_core.spec import FailureHandlerRule, FileSpec, JobSpec, WorkflowSpec

SPECS = Path(__file__).parent / "specs"


def load(name: str) -> WorkflowSpec:
    path = SPECS / name
    return parse_spec(load_spec_text(path.read_text(), fmt_for_path(name)))


def job(spec: WorkflowSpec, name: str) -> JobSpec:
    return next(j for j in spec.jobs if j.name == name)


# ------------------------------------------------------------------------------- loading


@pytest.mark.parametrize("name", ["diamond.yaml", "diamond.json", "diamond.json5"])
def test_diamond_in_every_format(name: str) -> None:
    spec = load(name)
    assert spec.name == "diamond"
    assert [j.name for j in spec.jobs] == ["preprocess", "work1", "work2", "postprocess"]
    assert job(spec, "preprocess") == JobSpec(
        name="preprocess",
        command="python preprocess.py -i data/inputs.json -o data/f1.json -o data/f2.json",
        input_files=("inputs",),
        output_files=("f1", "f2"),
        resource_requirements="small",
    )
    assert job(spec, "postprocess").input_files == ("f3", "f4")
    assert job(spec, "postprocess").output_files == ("f5",)
    assert spec.files[0] == FileSpec(name="inputs", path="data/inputs.json")
    small, medium = spec.resource_requirements
    assert (small.num_cpus, small.memory_bytes, small.runtime_s) == (1, 1 << 30, 60)
    assert (medium.num_cpus, medium.memory_bytes, medium.runtime_s) == (4, 512 << 20, 1800)
    assert medium.memory == "512m" and medium.runtime == "PT30M"


def test_formats_agree() -> None:
    assert load("diamond.yaml") == load("diamond.json") == load("diamond.json5")


@pytest.mark.parametrize(
    ("path", "fmt"),
    [("a.yaml", "yaml"), ("a.YML", "yaml"), ("a.json", "json"), ("dir/a.json5", "json5")],
)
def test_fmt_for_path(path: str, fmt: str) -> None:
    assert fmt_for_path(path) == fmt


def test_fmt_for_unknown_suffix() -> None:
    with pytest.raises(SpecError) as info:
        fmt_for_path("spec.toml")
    assert info.value.errors == (
        "cannot tell the format of 'spec.toml': use .yaml, .yml, .json, .json5 or .kdl",
    )


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("name: w\njobs: [\n", "yaml",
         "YAML syntax error at line 3, column 1: expected the node content, but found "
         "'<stream end>'"),
        ('{"name": "w",\n "jobs": [}', "json",
         "JSON syntax error at line 2, column 11: Expecting value"),
        ("{name: 'w',\n jobs: [}", "json5",
         'JSON5 syntax error at line 2: Unexpected "}" at column 9'),
        ("- a\n- b\n", "yaml", "the spec must be a mapping at the top level"),
        ("{}", "toml", "unknown spec format 'toml' (expected one of yaml, json, json5, kdl)"),
    ],
)
def test_syntax_errors_say_where(text: str, fmt: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, fmt)
    assert info.value.errors == (message,)


# ------------------------------------------------------------------------- parameterization


def test_hundred_parameterized_jobs() -> None:
    spec = load("hundred.yaml")
    assert len(spec.jobs) == 100
    assert spec.jobs[0].name == "task_001" and spec.jobs[-1].name == "task_100"
    assert spec.jobs[41].command == "./process.sh --index 42"
    # Fields that do not vary are shared between expanded jobs, not copied.
    assert all(j.depends_on is spec.jobs[0].depends_on for j in spec.jobs)
    assert {j.resource_requirements for j in spec.jobs} == {"tiny"}


def test_zip_parameters() -> None:
    spec = load("zip.yaml")
    assert [(j.name, j.command) for j in spec.jobs] == [
        ("train_cifar10_resnet", "python train.py --dataset=cifar10 --model=resnet"),
        ("train_mnist_cnn", "python train.py --dataset=mnist --model=cnn"),
        ("train_imagenet_transformer", "python train.py --dataset=imagenet --model=transformer"),
    ]


def test_shared_workflow_parameters() -> None:
    spec = load("shared_params.yaml")
    train = [j for j in spec.jobs if j.name.startswith("train_")]
    assert len(train) == 18
    assert train[0].name == "train_lr0.0001_bs16_optadam"
    assert train[0].command == "python train.py --lr=0.0001 --batch-size=16 --optimizer=adam"
    assert train[0].output_files == ("model_lr0.0001_bs16_optadam",)
    # No parameters and no use_parameters: workflow parameters its templates use apply.
    assert [j.name for j in spec.jobs if j.name.startswith("prepare_")] == [
        "prepare_adam",
        "prepare_sgd",
    ]
    # Local parameters override shared ones.
    assert [j.name for j in spec.jobs if j.name.startswith("special_")] == [
        "special_lr0.0100",
        "special_lr0.1000",
    ]
    # A job whose name has no placeholder is not expanded: it collects every combination.
    aggregate = job(spec, "aggregate_results")
    assert len(aggregate.input_files) == 18
    assert aggregate.input_files == tuple(j.output_files[0] for j in train)
    assert len(spec.files) == 18
    assert spec.files[-1] == FileSpec(
        name="model_lr0.0100_bs64_optsgd", path="/models/model_lr0.0100_bs64_optsgd.pt"
    )


def test_parameterized_dependencies_and_formats() -> None:
    spec = parse_spec(
        {
            "name": "w",
            "jobs": [
                {"name": "gen_{c}", "command": "gen {c}", "parameters": {"c": "['A','B']"}},
                {
                    "name": "proc_{c}_{x:.2f}",
                    "command": "proc {c} {x}",
                    "invocation_script": "bash -c '{c}'",
                    "depends_on": ["gen_{c}"],
                    "parameters": {"c": "['A','B']", "x": "0.5:1.0:0.5"},
                },
            ],
        }
    )
    assert [(j.name, j.depends_on, j.invocation_script) for j in spec.jobs[2:]] == [
        ("proc_A_0.50", ("gen_A",), "bash -c 'A'"),
        ("proc_A_1.00", ("gen_A",), "bash -c 'A'"),
        ("proc_B_0.50", ("gen_B",), "bash -c 'B'"),
        ("proc_B_1.00", ("gen_B",), "bash -c 'B'"),
    ]
    assert spec.jobs[2].command == "proc A 0.5"


def test_file_and_user_data_references_in_commands() -> None:
    spec = parse_spec(
        {
            "name": "w",
            "files": [
                {"name": "raw_{d}", "path": "data/{d}.csv", "parameters": {"d": "[train, test]"}},
                {"name": "out_{d}", "path": "results/{d}.json",
                 "parameters": {"d": "[train, test]"}},
            ],
            "user_data": [{"name": "cfg", "data": {"a": 1}}],
            "jobs": [
                {
                    "name": "process_{d}",
                    "command": "p -i ${files.input.raw_{d}} -o ${files.output.out_{d}} "
                    "-c ${user_data.input.cfg} ${HOME}",
                    "parameters": {"d": "[train, test]"},
                }
            ],
        }
    )
    first = spec.jobs[0]
    assert first.command == "p -i data/train.csv -o results/train.json -c cfg ${HOME}"
    assert first.input_files == ("raw_train",)
    assert first.output_files == ("out_train",)
    assert first.input_user_data == ("cfg",)
    assert spec.jobs[1].input_files == ("raw_test",)


def test_regex_fields_resolve_to_names() -> None:
    spec = load("user_data.yaml")
    assert job(spec, "collect").input_user_data == ("result_1", "result_2", "result_3")
    assert job(spec, "use_2").output_user_data == ("result_2",)
    assert job(spec, "use_2").input_user_data == ("config",)
    assert spec.user_data[2].data == {"k": "2"}
    files = parse_spec(
        {
            "name": "w",
            "files": [{"name": f"f{i}", "path": f"p{i}"} for i in range(3)] + [
                {"name": "other", "path": "o"}
            ],
            "jobs": [{"name": "a", "command": "x", "input_files": ["other"],
                      "input_file_regexes": ["f\\d"]}],
        }
    )
    assert files.jobs[0].input_files == ("other", "f0", "f1", "f2")


def test_depends_on_regexes_stay_unresolved() -> None:
    spec = load("barrier_pipeline.yaml")
    assert len(spec.jobs) == 91
    assert job(spec, "stage2_07").depends_on_regexes == ("^stage1_.*",)
    assert job(spec, "report").depends_on_regexes == ("stage2_\\d+",)


def test_failure_handler_spec() -> None:
    spec = load("failure_handler.yaml")
    (handler,) = spec.failure_handlers
    assert handler.rules == (
        FailureHandlerRule(exit_codes=(137, 139), recovery_script="./bump_memory.sh",
                           max_retries=2),
        FailureHandlerRule(match_all_exit_codes=True, max_retries=1),
    )
    assert job(spec, "flaky").failure_handler == "retry_oom"
    assert job(spec, "flaky").supports_termination is True
    assert job(spec, "after").cancel_on_blocking_job_failure is False
    assert job(spec, "flaky").cancel_on_blocking_job_failure is True


def test_every_top_level_field() -> None:
    doc: dict[str, Any] = {
        "name": "full",
        "user": "me",
        "description": "all fields",
        "project": "p",
        "jobs": [{"name": "a", "command": "x", "scheduler": "short"},
                 {"name": "b_{i}", "command": "y", "parameters": {"i": "1:2"}}],
        "slurm_schedulers": [{"name": "short", "account": "acct", "partition": "debug",
                              "nodes": 2, "walltime": "00:30:00", "mem": "10G", "gres": "gpu:1",
                              "qos": "high", "ntasks_per_node": 4, "tmp": "1G",
                              "extra": "--exclusive"}],
        "slurm_defaults": {"constraint": "cpu", "account": "acct"},
        "resource_monitor": {"enabled": True, "granularity": "Summary"},
        "actions": [
            {"trigger_type": "on_workflow_start", "action_type": "schedule_nodes",
             "scheduler": "short", "scheduler_type": "slurm", "num_allocations": 2,
             "start_one_worker_per_node": True, "max_parallel_jobs": 8},
            {"trigger_type": "on_jobs_complete", "action_type": "run_commands",
             "jobs": ["a"], "job_name_regexes": ["b_.*"], "commands": ["echo hi"],
             "persistent": True},
        ],
        "use_pending_failed": True,
        "jobs_sort_method": "gpus_runtime_memory",
        "compute_node_expiration_buffer_seconds": 60,
        "compute_node_wait_for_new_jobs_seconds": 30,
        "compute_node_ignore_workflow_completion": False,
        "compute_node_wait_for_healthy_database_minutes": 5,
    }
    spec = parse_spec(doc)
    assert (spec.user, spec.description, spec.project) == ("me", "all fields", "p")
    assert spec.slurm_schedulers[0].ntasks_per_node == 4
    assert spec.slurm_defaults == {"constraint": "cpu", "account": "acct"}
    assert spec.resource_monitor == {"enabled": True, "granularity": "Summary"}
    assert spec.actions[0].num_allocations == 2 and spec.actions[0].max_parallel_jobs == 8
    assert spec.actions[1].jobs == ("a", "b_1", "b_2")
    assert spec.actions[1].persistent is True
    assert spec.use_pending_failed is True
    assert spec.jobs_sort_method == "gpus_runtime_memory"
    assert spec.compute_node_settings == {
        "compute_node_expiration_buffer_seconds": 60,
        "compute_node_wait_for_new_jobs_seconds": 30,
        "compute_node_ignore_workflow_completion": False,
        "compute_node_wait_for_healthy_database_minutes": 5,
    }


# ---------------------------------------------------------------------------- @file values


def test_value_files_are_inlined() -> None:
    doc = {
        "name": "w",
        "parameters": {"s": "@samples.txt"},
        "jobs": [
            {"name": "run_{f}", "command": "run {f}", "parameters": {"f": "@files.txt"}},
            {"name": "s_{s}", "command": "s", "use_parameters": ["s"]},
        ],
    }
    assert value_file_references(doc) == ["samples.txt", "files.txt"]
    inlined = inline_value_files(
        doc, {"samples.txt": "x\ny\n", "files.txt": "a.csv\n\n  b.csv  \n"}
    )
    assert doc["jobs"][0]["parameters"]["f"] == "@files.txt"  # the input is not modified
    spec = parse_spec(inlined)
    assert [j.name for j in spec.jobs] == ["run_a.csv", "run_b.csv", "s_x", "s_y"]


def test_missing_value_file_is_located() -> None:
    doc = {"name": "w", "jobs": [{"name": "r_{f}", "command": "x", "parameters": {"f": "@v.txt"}}]}
    with pytest.raises(SpecError) as info:
        inline_value_files(doc, {})
    assert info.value.errors == (
        "jobs[0] 'r_{f}': parameters: f: value file 'v.txt' was not provided",
    )
    with pytest.raises(SpecError) as info:
        parse_spec(doc)
    assert info.value.errors == (
        "jobs[0] 'r_{f}': parameters: f: value file '@v.txt' was not inlined",
    )


# ----------------------------------------------------------------------------- scalars


@pytest.mark.parametrize(
    ("value", "expected"),
    [("512m", 512 << 20), ("4g", 4 << 30), ("1.5g", 3 << 29), ("512M", 512 << 20),
     ("4G", 4 << 30), ("100k", 102400), (1024, 1024), ("2048", 2048), ("1t", 1 << 40)],
)
def test_parse_memory(value: object, expected: int) -> None:
    assert parse_memory(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("PT30M", 1800), ("P0DT1M", 60), ("P1DT2H", 93600), ("PT90S", 90), ("PT1.5H", 5400),
     ("PT1H", 3600), ("P1W", 604800), ("pt10m", 600), (45, 45)],
)
def test_parse_duration(value: object, expected: int) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize("value", ["P", "PT", "30M", "PT-1M", "P1DT", True, "1 hour"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


# --------------------------------------------------------------------------- bad specs


def J(**kw: Any) -> dict[str, Any]:
    return {"name": "a", "command": "echo a", **kw}


def W(*jobs: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "w", "jobs": list(jobs), **top}


BAD_SPECS: list[tuple[dict[str, Any], list[str]]] = [
    ({"jobs": []}, ["name: is required"]),
    (W(J(), jobz=[]), ["unknown key 'jobz'"]),
    (W(J(dependson=["b"])), ["jobs[0] 'a': unknown key 'dependson'"]),
    (W({"name": "a"}), ["jobs[0] 'a': command: is required"]),
    (W({"name": 5, "command": "x"}), ["jobs[0]: name: expected a string, got integer"]),
    (W(J(depends_on="b")), ["jobs[0] 'a': depends_on: expected a list of strings, got string"]),
    (W(J(supports_termination="yes")),
     ["jobs[0] 'a': supports_termination: expected a boolean, got string"]),
    (W(J(), {"name": "train_{i}", "command": "x", "depends_on": ["prep"],
             "parameters": {"i": "1:3"}}),
     ["jobs[1] 'train_{i}': depends_on: no job named 'prep'"]),
    (W(J(), J()), ["jobs[1] 'a': duplicate job name 'a'"]),
    (W({"name": "t_{i}", "command": "x {j}", "parameters": {"i": "1:2", "j": "1:2"}}),
     ["jobs[0] 't_{i}': duplicate job name 't_1'", "jobs[0] 't_{i}': duplicate job name 't_2'"]),
    (W(J(input_files=["nope"])), ["jobs[0] 'a': input_files: no file named 'nope'"]),
    (W(J(output_user_data=["nope"])),
     ["jobs[0] 'a': output_user_data: no user_data named 'nope'"]),
    (W(J(resource_requirements="big")),
     ["jobs[0] 'a': resource_requirements: no resource_requirements named 'big'"]),
    (W(J(scheduler="s")), ["jobs[0] 'a': scheduler: no scheduler named 's'"]),
    (W(J(failure_handler="h")), ["jobs[0] 'a': failure_handler: no failure_handler named 'h'"]),
    (W(J(), {"name": "b", "command": "x", "depends_on_regexes": ["a("]}),
     ["jobs[1] 'b': depends_on_regexes: bad regex 'a(': missing ): a("]),
    (W(J(), {"name": "b", "command": "x", "depends_on_regexes": ["prep_.*"]}),
     ["jobs[1] 'b': depends_on_regexes: 'prep_.*' matches no job"]),
    (W({"name": "t_{a}_{b}", "command": "x", "parameter_mode": "zip",
        "parameters": {"a": "[1,2,3]", "b": "[1,2]"}}),
     ["jobs[0] 't_{a}_{b}': parameters: all parameters must have the same number of values "
      "in zip mode: 'a' has 3, 'b' has 2"]),
    (W({"name": "t_{a}", "command": "x", "parameter_mode": "diag", "parameters": {"a": "1:2"}}),
     ["jobs[0] 't_{a}': parameter_mode: must be one of product, zip; got 'diag'"]),
    (W({"name": "t_{a}", "command": "x", "parameters": {"a": "1:b"}}),
     ["jobs[0] 't_{a}': parameters: a: bad range '1:b': start, end and step must be numbers"]),
    (W(J(), resource_requirements=[{"name": "r", "memory": "4q"}]),
     ["resource_requirements[0] 'r': memory: bad memory '4q': expected a number with k, m, g "
      "or t"]),
    (W(J(), resource_requirements=[{"name": "r", "runtime": "30 minutes"}]),
     ["resource_requirements[0] 'r': runtime: bad runtime '30 minutes': expected an ISO 8601 "
      "duration like 'PT30M'"]),
    (W(J(), resource_requirements=[{"name": "r"}, {"name": "r"}]),
     ["resource_requirements[1] 'r': duplicate resource_requirements name 'r'"]),
    (W(J(), files=[{"name": "f", "path": "x"}, {"name": "f", "path": "y"}]),
     ["files[1] 'f': duplicate file name 'f'"]),
    (W(J(output_files=["f"]), {"name": "b", "command": "x", "output_files": ["g"]},
       files=[{"name": "f", "path": "out.txt"}, {"name": "g", "path": "out.txt"}]),
     ["jobs[1] 'b': output_files: file 'g' (path 'out.txt') is also an output of 'a'"]),
    (W(J(use_parameters=["lr"])),
     ["jobs[0] 'a': use_parameters: no workflow parameter named 'lr'"]),
    (W({"name": "t_{s:03d}", "command": "x", "parameters": {"s": "['a','b']"}}),
     ["jobs[0] 't_{s:03d}': name: cannot format 't_{s:03d}': Unknown format code 'd' for "
      "object of type 'str'"]),
    (W(J(), actions=[{"trigger_type": "on_lunch", "action_type": "run_commands"}]),
     ["actions[0]: trigger_type: must be one of on_workflow_start, on_workflow_complete, "
      "on_jobs_ready, on_jobs_complete; got 'on_lunch'"]),
    (W(J(), actions=[{"trigger_type": "on_jobs_ready", "action_type": "run_commands",
                      "jobs": ["zz"], "commands": ["x"]}]),
     ["actions[0]: jobs: no job named 'zz'"]),
    (W(J(command="cat ${files.input.nope}")), ["jobs[0] 'a': command: no file named 'nope'"]),
    (W(J(input_file_regexes=["x.*"])), ["jobs[0] 'a': input_file_regexes: 'x.*' matches nothing"]),
    (W(J(), failure_handlers=[{"name": "h", "rules": [{"max_retries": 2}]}]),
     ["failure_handlers[0] 'h': rules[0]: exit_codes: give exit_codes or "
      "match_all_exit_codes: true"]),
    (W(J(), slurm_defaults={"partition": "debug"}),
     ["slurm_defaults: partition: is managed by torc (set it on a scheduler)"]),
    (W(J(), resource_requirements=[{"name": "r", "num_cpus": -1}]),
     ["resource_requirements[0] 'r': num_cpus: must be at least 0, got -1"]),
    ({"name": "w", "jobs": {"a": 1}}, ["jobs: expected a list, got mapping"]),
    (W("a"), ["jobs[0]: expected a mapping, got string"]),  # type: ignore[arg-type]
    (W({"name": "agg", "command": "x {i}", "parameters": {"i": "1:2"}}),
     ["jobs[0] 'agg': command: uses parameters but the job name does not"]),
    (W(J(), jobs_sort_method="fast"),
     ["jobs_sort_method: must be one of none, gpus_runtime_memory, gpus_memory_runtime; "
      "got 'fast'"]),
    # Every problem is reported together.
    (W(J(depends_on=["x"]), J(), {"name": "c", "command": "x", "scheduler": "nope"}),
     ["jobs[1] 'a': duplicate job name 'a'", "jobs[0] 'a': depends_on: no job named 'x'",
      "jobs[2] 'c': scheduler: no scheduler named 'nope'"]),
]


@pytest.mark.parametrize(("doc", "errors"), BAD_SPECS)
def test_bad_specs(doc: dict[str, Any], errors: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(doc)
    assert list(info.value.errors) == errors
    assert info.value.status_hint == 422


def test_many_missing_references_are_summarized() -> None:
    doc = W({"name": "t_{i}", "command": "x", "depends_on": ["p_{i}"],
             "parameters": {"i": "1:1000"}})
    with pytest.raises(SpecError) as info:
        parse_spec(doc)
    assert info.value.errors == (
        "jobs[0] 't_{i}': depends_on: no job named 'p_1'",
        "jobs[0] 't_{i}': depends_on: no job named 'p_2'",
        "jobs[0] 't_{i}': depends_on: no job named 'p_3'",
        "jobs[0] 't_{i}': depends_on: ... and 997 more missing names",
    )


EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize(
    ("name", "jobs"),
    [("diamond.yaml", 4), ("sweep.yaml", 7), ("barrier_pipeline.json5", 201)],
)
def test_examples_parse(name: str, jobs: int) -> None:
    path = EXAMPLES / name
    spec = parse_spec(load_spec_text(path.read_text(), fmt_for_path(name)))
    assert len(spec.jobs) == jobs


def test_plain_entries_match_the_general_path() -> None:
    """Entries with only a literal name and command take a fast path (command files, exec);
    they must give exactly the jobs the general path gives, errors included."""
    commands = ["true", "echo '{x}'", "awk '{print $1}' f", "sleep 0"]
    plain = [{"name": f"job_{i}", "command": c} for i, c in enumerate(commands)]
    # A key set to its default sends each entry through the general path.
    general = [{**job, "supports_termination": False} for job in plain]
    mixed = [*plain[:2], {"name": "p_{i}", "command": "x {i}", "parameters": {"i": "1:3"}},
             *plain[2:]]
    a = parse_spec({"name": "w", "jobs": plain})
    b = parse_spec({"name": "w", "jobs": general})
    assert a.jobs == b.jobs
    c = parse_spec({"name": "w", "jobs": mixed})
    assert [j.name for j in c.jobs] == ["job_0", "job_1", "p_1", "p_2", "p_3", "job_2", "job_3"]
    assert c.jobs[5] == a.jobs[2] and c.jobs[2].command == "x 1"
    with pytest.raises(SpecError) as exc:
        parse_spec({"name": "w", "jobs": [*plain, {"name": "job_1", "command": "again"}]})
    assert list(exc.value.errors) == ["jobs[4] 'job_1': duplicate job name 'job_1'"]
