"""KDL workflow specs (torc_core.kdl): Torc's KDL forms give the same workflow as their YAML
twins, and every problem is reported with the line it is on.

The twins live in tests/core/specs (kdl_*.kdl beside kdl_*.yaml); between them they use every
construct Torc's own KDL examples use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from torc_core.errors import SpecError
from torc_core.graph import compile_spec_summary
from torc_core.kdl import kdl_to_doc
from torc_core.parse import FORMATS, fmt_for_path, load_spec_text, parse_spec
from torc_core.spec import WorkflowSpec

SPECS = Path(__file__).parent / "specs"
REPO = Path(__file__).resolve().parents[2]


def load(name: str) -> WorkflowSpec:
    return parse_spec(load_spec_text((SPECS / name).read_text(), fmt_for_path(name)))


def kdl(text: str) -> dict[str, Any]:
    return kdl_to_doc(textwrap.dedent(text).lstrip("\n"))


def errors(text: str, dedent: bool = True) -> list[str]:
    with pytest.raises(SpecError) as info:
        kdl(text) if dedent else kdl_to_doc(text)
    return list(info.value.errors)


def summary(spec: WorkflowSpec) -> dict[str, Any]:
    """What the twins must agree on, spelled out so a difference reads plainly."""
    return {
        "jobs": [(j.name, j.command) for j in spec.jobs],
        "dependencies": {j.name: (j.depends_on, j.depends_on_regexes) for j in spec.jobs},
        "job files": {j.name: (j.input_files, j.output_files) for j in spec.jobs},
        "job user_data": {j.name: (j.input_user_data, j.output_user_data) for j in spec.jobs},
        "files": [(f.name, f.path) for f in spec.files],
        "user_data": [(u.name, u.data, u.is_ephemeral) for u in spec.user_data],
        "resources": spec.resource_requirements,
        "schedulers": spec.slurm_schedulers,
        "handlers": spec.failure_handlers,
        "actions": spec.actions,
        "compiled": compile_spec_summary(spec),
    }


# ------------------------------------------------------------------------------- the twins


@pytest.mark.parametrize(("kdl_name", "yaml_name"), [
    ("kdl_sample.kdl", "kdl_sample.yaml"),
    ("kdl_sample_v1.kdl", "kdl_sample.yaml"),
    ("kdl_params.kdl", "kdl_params.yaml"),
    ("kdl_actions.kdl", "kdl_actions.yaml"),
])
def test_kdl_spec_is_its_yaml_twin(kdl_name: str, yaml_name: str) -> None:
    from_kdl, from_yaml = load(kdl_name), load(yaml_name)
    assert summary(from_kdl) == summary(from_yaml)
    assert from_kdl == from_yaml  # every other field too (settings, flags, scripts)


def test_sample_twin_content() -> None:
    spec = load("kdl_sample.kdl")
    jobs = {j.name: j for j in spec.jobs}
    assert list(jobs) == ["download", "validate", "analyze", "publish"]
    assert jobs["validate"].depends_on == ("download",)
    assert jobs["validate"].input_files == ("raw", "script")
    assert jobs["publish"].depends_on == ("analyze", "validate")
    assert jobs["download"].supports_termination is True
    assert jobs["download"].cancel_on_blocking_job_failure is False
    assert jobs["validate"].invocation_script == "#!/bin/bash\nset -e\n"
    assert spec.user_data[0].data == {"source": "https://example.com/data.csv", "bytes": 1048576}
    assert spec.user_data[2].data == [1, 2.5, None, "x"]
    assert [f.path for f in spec.files][:2] == ["/data/raw.csv", "/data/clean.csv"]
    assert spec.slurm_schedulers[0].extra == "--constraint=haswell"
    assert spec.slurm_schedulers[1].nodes == 2
    assert spec.resource_requirements[1].runtime == "P0DT2H"


def test_params_and_actions_twin_content() -> None:
    params = load("kdl_params.kdl")
    names = [j.name for j in params.jobs]
    assert names[1:5] == ["train_lr0.0001_optadam", "train_lr0.0001_optsgd",
                          "train_lr0.0100_optadam", "train_lr0.0100_optsgd"]
    assert "zip_cifar10_resnet" in names and "zip_cifar10_cnn" not in names  # zip, not product
    assert [f.name for f in params.files if f.name.startswith("work_")] == [
        "work_1_out", "work_2_out", "work_3_out"]
    actions = load("kdl_actions.kdl")
    assert actions.actions[0].commands == ("mkdir -p output", "echo started > output/log.txt")
    assert actions.actions[1].jobs == ("prep_a", "prep_b")
    assert actions.actions[2].start_one_worker_per_node is True
    assert actions.failure_handlers[0].rules[0].exit_codes == (10, 11)
    assert actions.metadata == {"team": "ml", "version": 2, "tags": ["a", "b"],
                                "owner": {"name": "ana"}}
    assert actions.execution_config.stdio.mode == "combined"
    prep_b = next(j for j in actions.jobs if j.name == "prep_b")
    assert prep_b.priority == 5 and prep_b.stdio is not None and prep_b.stdio.mode == "separate"


def test_document_is_torcs_format() -> None:
    """The dict itself, as the YAML loader would give it."""
    assert kdl("""
        name "wf"
        file "f" path="f.txt"
        job "a" {
            command "echo a"
            output_file "f"
        }
        job "b" {
            command "echo b"
            depends_on_job "a"
            depends_on "a2" "a3"
            input_file "f"
            parameters {
                i "1:3"
                x 1 2 3
            }
        }
        action {
            trigger_type "on_workflow_complete"
            action_type "run_commands"
            command "echo one"
            command "echo two"
            job "b"
        }
    """) == {
        "name": "wf",
        "files": [{"name": "f", "path": "f.txt"}],
        "jobs": [
            {"name": "a", "command": "echo a", "output_files": ["f"]},
            {"name": "b", "command": "echo b", "depends_on": ["a", "a2", "a3"],
             "input_files": ["f"], "parameters": {"i": "1:3", "x": [1, 2, 3]}},
        ],
        "actions": [{"trigger_type": "on_workflow_complete", "action_type": "run_commands",
                     "commands": ["echo one", "echo two"], "jobs": ["b"]}],
    }
    assert kdl('name "empty"') == {"name": "empty", "jobs": []}  # as Torc: jobs always there
    assert kdl('name (title)"typed"\njob "a" { command "x"; priority (u8)3 }')["jobs"] == [
        {"name": "a", "command": "x", "priority": 3}]  # type annotations are only hints


def test_format_name_and_suffix() -> None:
    assert "kdl" in FORMATS
    assert fmt_for_path("flow.KDL") == "kdl"
    with pytest.raises(SpecError, match=r"use \.yaml, \.yml, \.json, \.json5 or \.kdl"):
        fmt_for_path("flow.toml")
    assert load_spec_text('name "x"', "kdl") == {"name": "x", "jobs": []}


# ------------------------------------------------------------------------------- errors


def test_syntax_errors_say_line_and_column() -> None:
    assert errors("""
        name "x"
        job "a" {
            command "x" }}
        job "b" { command "y"; }
    """) == ["KDL syntax error at line 3, column 18: Unexpected '}'"]
    assert errors("""
        name "x"
        job "a" {
            command "echo"
            priority 0x
        }
    """) == ["KDL syntax error at line 4, column 14: Error parsing property or argument"]
    assert errors("""
        name "x"
        job "a" {
            command "echo
        }
    """) == ["KDL syntax error at line 3, column 13: Parse error"]
    assert errors("""
        name "x"
        /* a comment that never ends
        job "a" { command "x"; }
    """) == ["KDL syntax error at line 2, column 1: Parse error"]


def test_unclosed_block_points_at_its_brace() -> None:
    """A missing '}' makes every later node a child: ckdl notices only at the end; the
    message points at the block that swallowed them."""
    assert errors("""
        name "x"
        job "a" {
            command "x"
        }
        job "b" {
            command "y"
        job "c" {
            command "z"
        }
    """) == ["KDL syntax error at line 5, column 9: Unexpected end of data (unclosed lists of "
             "children): this '{' is never closed"]


def test_a_kdl_v1_document_gets_its_v1_error_too() -> None:
    """v2 refuses v1's bare booleans at once; when v1 reads further, both are said."""
    assert errors("""
        name "x"
        resource_monitor {
            enabled true
        }
        job "a" {
            command "x"
            priority 0x
        }
    """) == ["KDL syntax error at line 3, column 13: Error parsing property or argument "
             "(read as KDL v1: line 7, column 14: Error parsing property or argument)"]


# Lexical forms that must not confuse where a line starts: braces and // inside strings,
# comments holding braces and quotes, a block left out with /-, raw and multi-line strings,
# a node continued over lines.
PRELUDE = r'''
name "x"
file "f" path="data/{x}.txt" // {
/* "a comment { with braces and a quote
   over lines */
job "a" {
    command "echo '}' ${files.output.f} // not a comment"
    /- parameters {
        i "1:3"
    }
    output_file "f"
}
/-job "left_out" {
    command "}"
}
job "b" {
    command #"echo "raw \" } {"#
    invocation_script """
        set -e {
        echo }
        """
    depends_on "a" \
        "a"
}
'''
PRELUDE_LINES = PRELUDE.count("\n")


def test_lines_stay_right_after_strings_comments_and_slashdash() -> None:
    doc = kdl_to_doc(PRELUDE)
    assert [j["name"] for j in doc["jobs"]] == ["a", "b"]
    bad_node = errors(PRELUDE + 'job "c" {\n    command "x"\n    colour "red"\n}\n', False)
    assert bad_node == [f"line {PRELUDE_LINES + 3}: job 'c': unknown node 'colour' (known here: "
                        + ", ".join(sorted(_job_nodes())) + ")"]
    bad_syntax = errors(PRELUDE + 'job "c" {\n    command "x" =\n}\n', False)
    assert bad_syntax == [f"KDL syntax error at line {PRELUDE_LINES + 2}, column 17: "
                          "Unexpected end of node (incomplete argument or property?)"]


def _job_nodes() -> set[str]:
    from torc_core.kdl import _accepted

    return set(_accepted("job"))


def test_unknown_nodes_and_properties_are_named_with_their_line() -> None:
    assert errors("""
        name "x"
        job "a" {
            comand "echo"
            depends_on_jb "b"
        }
        jobz "b"
        file "f" path="p" colour="red"
    """) == [
        "line 3: job 'a': unknown node 'comand' (did you mean 'command'?)",
        "line 4: job 'a': unknown node 'depends_on_jb' (did you mean 'depends_on_job'?)",
        "line 6: unknown node 'jobz' at the top level (did you mean 'job'?)",
        "line 7: file 'f': unknown property 'colour' (known here: parameter_mode, parameters, "
        "path, use_parameters)",
    ]
    assert errors("""
        name "x"
        failure_handler "h" {
            rule {
                exit_code 1
            }
        }
        job "a" {
            name "b"
            command "x"
        }
    """) == [
        "line 4: failure_handler 'h': rule: unknown node 'exit_code' (did you mean "
        "'exit_codes'?)",
        "line 8: job 'a': unknown node 'name': the name is the block's argument, "
        "job \"NAME\" { ... }",
    ]


def test_names_values_and_data_are_checked_with_their_line() -> None:
    assert errors("""
        name "x"
        job {
            command "e"
        }
        job 5 { command "e"; }
        job "a" "b" { command "e"; }
        action "x" { trigger_type "on_workflow_start"; }
    """) == [
        'line 2: job needs one name, a string: job "NAME" { ... } (got no name)',
        'line 5: job needs one name, a string: job "NAME" { ... } (got the int 5)',
        'line 6: job needs one name, a string: job "NAME" { ... } (got 2 values)',
        "line 7: action: takes no values (got 1); its settings go in its block",
    ]
    assert errors("""
        name "x"
        name "y"

        // a comment line
        user_data "u" {
            data "{\\"a\\": 1,}"
        }
        job "a" {
            command "a" "b"
            depends_on
            parameters "i"
            stdio mode="combined" {
                mode "separate"
            }
        }
    """) == [
        "line 2: name: given more than once",
        "line 6: user_data 'u': data: not valid JSON: Expecting property name enclosed in "
        "double quotes at character 9 of the text",
        "line 9: job 'a': command: takes one value, got 2",
        "line 10: job 'a': depends_on: expected one or more values "
        "(depends_on \"a\" \"b\", or one depends_on node per value)",
        "line 11: job 'a': parameters: expected a block (parameters { key \"value\" }), "
        "got 1 value(s)",
        "line 13: job 'a': stdio: mode: given more than once",
    ]


def test_a_value_of_the_wrong_kind_is_parse_specs_error() -> None:
    doc = kdl("""
        name "x"
        resource_requirements "small" {
            num_cpus "four"
            memory "2g"
        }
        job "a" { command "x"; resource_requirements "small"; supports_termination "yes"; }
    """)
    with pytest.raises(SpecError) as info:
        parse_spec(doc)
    text = "\n".join(info.value.errors)
    assert "resource_requirements[0] 'small': num_cpus: expected an integer, got string" in text
    assert "jobs[0] 'a': supports_termination: expected a boolean, got string" in text


def test_bad_text_is_refused_by_position() -> None:
    assert errors('name "x"\njob "a" {\n  command "a\x00b"\n}\n') == [
        "KDL: a NUL character at line 3, column 13"]


def test_a_late_error_in_a_long_spec_is_located() -> None:
    jobs = "".join(f'job "j{i}" {{\n    command "echo {{}} {i}"\n}}\n' for i in range(3000))
    with pytest.raises(SpecError) as info:
        kdl_to_doc(f'name "big"\n{jobs}job "last" {{\n    comand "x"\n}}\n')
    assert list(info.value.errors) == [
        f"line {3 * 3000 + 3}: job 'last': unknown node 'comand' (did you mean 'command'?)"]
    with pytest.raises(SpecError) as info:
        kdl_to_doc(f'name "big"\n{jobs}job "last" {{\n    command "x" }}}}\n')
    assert list(info.value.errors) == [
        f"KDL syntax error at line {3 * 3000 + 3}, column 18: Unexpected '}}'"]


# ------------------------------------------------------------------------------- the command


def _torc(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORC_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "torc_cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_cli_create_dry_run_reads_kdl(tmp_path: Path) -> None:
    for name in ("kdl_sample.kdl", "kdl_sample.yaml"):
        (tmp_path / name).write_text((SPECS / name).read_text())
    runs = [_torc(tmp_path, "-f", "json", "create", "--dry-run", name)
            for name in ("kdl_sample.kdl", "kdl_sample.yaml")]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
    from_kdl, from_yaml = (json.loads(p.stdout) for p in runs)
    assert from_kdl == from_yaml
    assert from_kdl["jobs"] == 4 and from_kdl["files"] == 4 and from_kdl["user_data"] == 3

    (tmp_path / "bad.kdl").write_text('name "bad"\njob "a" {\n    comand "true"\n}\n')
    refused = _torc(tmp_path, "create", "--dry-run", "bad.kdl")
    assert refused.returncode == 2
    assert ("bad.kdl: line 3: job 'a': unknown node 'comand' (did you mean 'command'?)"
            in refused.stderr)


def test_cli_runs_a_kdl_workflow(tmp_path: Path) -> None:
    (tmp_path / "seed.txt").write_text("seed\n")
    (tmp_path / "wf.kdl").write_text(textwrap.dedent("""
        name "kdl_run"
        file "seed" path="seed.txt"
        file "mid" path="mid.txt"
        file "out" path="out.txt"
        job "first" {
            command "cat ${files.input.seed} > ${files.output.mid}; echo first >> mid.txt"
        }
        job "second_{i}" {
            command "cat ${files.input.mid} > part_{i}.txt"
            parameters { i "1:2"; }
        }
        job "last" {
            command "cat part_1.txt part_2.txt > ${files.output.out}"
            depends_on_regexes "^second_\\\\d$"
        }
    """))
    proc = _torc(tmp_path, "-s", "run", "wf.kdl")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "out.txt").read_text() == "seed\nfirst\n" * 2
