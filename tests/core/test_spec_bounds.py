"""The spec parser does bounded work: whatever a (small) document asks, parse_spec and
compile_workflow either finish in time proportional to what they build, or refuse it with a
located SpecError. Most tests here hung, exhausted memory or crashed before their fix; the
others show that ordinary specs (anchors, non-ASCII text, specs at a limit) still pass."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torc_core.checks import shown
from torc_core.errors import SpecError
from torc_core.graph import NameIndex, RegexError, compile_workflow
from torc_core.params import (
    ParameterError,
    make_combinations,
    parse_parameter_value,
    value_count,
    value_width,
)
from torc_core.parse import load_spec_text, parse_spec
from torc_core.spec import JobSpec, WorkflowSpec


def J(**kw: Any) -> dict[str, Any]:
    return {"name": "a", "command": "echo a", **kw}


def W(*jobs: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "w", "jobs": list(jobs), **top}


def errors_of(doc: dict[str, Any], **kw: Any) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(doc, **kw)
    return list(info.value.errors)


# ----------------------------------------------------------------- regexes in linear time

EVIL = "(a+)+b"  # backtracks exponentially in Python's re on 'aaa...a!'
VICTIM = "a" * 34 + "!"


# thread: a backtracking match in C never returns to let a signal handler run.
@pytest.mark.timeout(20, method="thread")
def test_catastrophic_pattern_finishes() -> None:
    doc = W(J(name=VICTIM), J(name="b", depends_on_regexes=[EVIL]))
    assert errors_of(doc) == [f"jobs[1] 'b': depends_on_regexes: {EVIL!r} matches no job"]


@pytest.mark.timeout(20, method="thread")
def test_catastrophic_pattern_in_every_regex_field() -> None:
    doc = W(
        J(name=VICTIM),
        J(name="b", input_file_regexes=[EVIL], output_user_data_regexes=[EVIL]),
        files=[{"name": VICTIM, "path": "x"}],
        user_data=[{"name": VICTIM}],
        actions=[{"trigger_type": "on_workflow_start", "action_type": "run_commands",
                  "job_name_regexes": [EVIL], "commands": ["true"]}],
    )
    assert errors_of(doc) == [
        f"jobs[1] 'b': input_file_regexes: {EVIL!r} matches nothing",
        f"jobs[1] 'b': output_user_data_regexes: {EVIL!r} matches nothing",
        f"actions[0]: job_name_regexes: {EVIL!r} matches no job",
    ]


@pytest.mark.timeout(20, method="thread")
def test_catastrophic_pattern_in_the_graph_compiler() -> None:
    """compile_workflow resolves depends_on_regexes itself (a spec need not come from
    parse_spec)."""
    spec = WorkflowSpec(name="w", jobs=(
        JobSpec(name=VICTIM, command="x"),
        JobSpec(name="aab", command="x"),
        JobSpec(name="c", command="x", depends_on_regexes=(EVIL,)),
    ))
    model = compile_workflow(spec)
    assert model.num_edges == 1  # aab -> c only


def test_regex_work_is_bounded_across_the_spec() -> None:
    """Linear time per test does not bound the number of tests: 20,000 jobs each with its own
    prefix-less pattern over 20,000 names are 4 x 10^8 tests. A spec's regexes share one
    budget of (pattern, name) tests, in the parser and in the graph compiler alike."""
    n = 60
    jobs: list[dict[str, Any]] = [{"name": f"a_{i}_x", "command": "true"} for i in range(n)]
    jobs += [{"name": f"b_{i}", "command": "true", "depends_on_regexes": [f".*_{i}_x"]}
             for i in range(n)]
    doc = {"name": "w", "jobs": jobs}
    assert len(parse_spec(doc).jobs) == 2 * n  # well within the default budget
    with pytest.raises(SpecError) as info:
        parse_spec(doc, max_regex_tests=1000)
    (message,) = info.value.errors  # reported once, where the budget ran out
    assert "more than 1000 name tests" in message and "literal prefix" in message
    assert "depends_on_regexes" in message
    spec = parse_spec(doc)
    with pytest.raises(SpecError, match="more than 1000 name tests"):
        compile_workflow(spec, max_regex_tests=1000)
    # A literal prefix narrows the candidates first: the same spec with prefixed patterns
    # fits a budget the prefix-less one could not.
    for k, job in enumerate(jobs[n:]):
        job["depends_on_regexes"] = [f"a_{k}_."]
    assert compile_workflow(parse_spec(doc, max_regex_tests=1000), max_regex_tests=1000)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [("(a)\\1", "invalid escape sequence: \\1"),
     ("(?=a)a", "invalid perl operator: (?="),
     ("a(", "missing ): a("),
     ("\\pL{1000}", "pattern too large - compile failed")],
)
def test_patterns_re2_refuses_are_located(pattern: str, reason: str) -> None:
    doc = W(J(), J(name="b", depends_on_regexes=[pattern]),
            actions=[{"trigger_type": "on_workflow_start", "action_type": "run_commands",
                      "job_name_regexes": [pattern], "commands": ["true"]}])
    assert errors_of(doc) == [
        f"jobs[1] 'b': depends_on_regexes: bad regex {pattern!r}: {reason}",
        f"actions[0]: job_name_regexes: bad regex {pattern!r}: {reason}",
    ]


def test_bad_regex_in_file_regexes_is_reported_once() -> None:
    doc = W({"name": "t_{i}", "command": "x", "parameters": {"i": "1:5"},
             "input_file_regexes": ["(a)\\1"]}, files=[{"name": "a", "path": "a"}])
    assert errors_of(doc) == [
        "jobs[0] 't_{i}': input_file_regexes: bad regex '(a)\\\\1': invalid escape sequence: \\1"
    ]


def test_bad_regex_in_the_graph_compiler_is_located() -> None:
    spec = WorkflowSpec(name="w", jobs=(
        JobSpec(name="a", command="x"),
        JobSpec(name="b", command="x", depends_on_regexes=("(?<=a)b",)),
    ))
    with pytest.raises(SpecError) as info:
        compile_workflow(spec)
    assert info.value.errors == (
        "jobs[1] 'b': depends_on_regexes: bad regex '(?<=a)b': invalid perl operator: (?<=",
    )


def test_name_index_fullmatch_semantics() -> None:
    names = ["stage1_1", "stage1_2", "stage10_1", "x\nstage1_3", "stage1_\n", "été_1"]
    index = NameIndex(names)
    assert list(index.match("stage1_.*")) == [0, 1]  # '.' does not match a newline
    assert list(index.match("(?:stage1_.*)")) == [0, 1]  # the same through RE2 itself
    assert list(index.match("^.*")) == list(index.match("(?:.*)")) == [0, 1, 2, 5]
    assert list(index.match("stage1_\\d")) == [0, 1]
    assert list(index.match("(?s)stage1_.*")) == [0, 1, 4]
    assert list(index.match("stage1")) == []  # the whole name must match
    assert list(index.match("\\pL+_\\d")) == [5]  # RE2 syntax, as Torc's (Rust) regex
    assert list(index.match("(?P<s>stage)1_2")) == [1]
    assert index.any_match("stage10?_1") and not index.any_match("stage2_.*")
    with pytest.raises(RegexError, match="invalid escape sequence"):
        index.match("(a)\\1")


def test_name_index_prefix_narrowing_agrees_with_a_full_scan() -> None:
    """After 32 distinct patterns NameIndex narrows candidates by literal prefix over sorted
    names; the answers must not change."""
    names = [f"p_{i}_{j}" for i in range(40) for j in range(5)] + ["p_", "q_1_1"]
    fresh = NameIndex(names)
    warm = NameIndex(names)
    for k in range(40):
        warm.match(f"p_{k}_[0-3]")
    for pattern in ("p_1_.*", "p_1.*", "p_3[0-9]_4", "p_.*", "q_.*", "p_+", "p_\\d_\\d"):
        assert list(warm.match(pattern)) == list(fresh.match(pattern)), pattern


# ------------------------------------------------------------ bounded parameter expansion


@pytest.mark.timeout(20, method="thread")
def test_ten_billion_jobs_are_refused_before_expanding() -> None:
    """141 bytes of spec once grew the server to 5 GB: 10^10 combinations."""
    doc = W({"name": "j_{a}_{b}", "command": "x", "parameters": {"a": "1:100000",
                                                                 "b": "1:100000"}})
    assert errors_of(doc) == [
        "jobs: 10000000000 jobs after parameter expansion, more than the limit of 5000000 "
        "(serve --max-jobs-per-workflow); the most from jobs[0] 'j_{a}_{b}': 10000000000"
    ]


def test_the_limit_itself_is_accepted() -> None:
    doc = W(J(), {"name": "j_{a}_{b}", "command": "x", "parameters": {"a": "1:7", "b": "1:7"}})
    assert len(parse_spec(doc, max_jobs=50).jobs) == 50
    assert errors_of(doc, max_jobs=49) == [
        "jobs: 50 jobs after parameter expansion, more than the limit of 49 "
        "(serve --max-jobs-per-workflow); the most from jobs[1] 'j_{a}_{b}': 49"
    ]


def test_plain_entries_count() -> None:
    doc = W(*(J(name=f"p{k}") for k in range(60)))
    assert len(parse_spec(doc, max_jobs=60).jobs) == 60
    assert errors_of(doc, max_jobs=59) == [
        "jobs: 60 jobs after parameter expansion, more than the limit of 59 "
        "(serve --max-jobs-per-workflow)"
    ]


def test_zip_mode_counts_the_common_length() -> None:
    zipped = {"name": "z_{a}_{b}", "command": "x", "parameter_mode": "zip",
              "parameters": {"a": "1:50", "b": "51:100"}}
    assert len(parse_spec(W(zipped), max_jobs=50).jobs) == 50
    product = {**zipped, "parameter_mode": "product"}
    assert errors_of(W(product), max_jobs=50) == [
        "jobs: 2500 jobs after parameter expansion, more than the limit of 50 "
        "(serve --max-jobs-per-workflow); the most from jobs[0] 'z_{a}_{b}': 2500"
    ]


def test_an_aggregating_entry_counts_its_combinations() -> None:
    """A job whose name has no placeholder is one job, but renders its list fields once per
    combination: it counts as many."""
    doc = W({"name": "f_{i}", "command": "x", "parameters": {"i": "1:30"}},
            {"name": "all", "command": "x", "depends_on": ["f_{i}"],
             "parameters": {"i": "1:30"}})
    assert len(parse_spec(doc, max_jobs=60).jobs) == 31
    assert errors_of(doc, max_jobs=59)[0].startswith("jobs: 60 jobs after parameter expansion")


@pytest.mark.timeout(20, method="thread")
@pytest.mark.parametrize(
    ("value", "count"),
    [("1:99999999999999999999", 99999999999999999999),
     ("-5:99999999999999999999:2", 50000000000000000003),
     ("0.0:1e15:0.001", 1000000000000000001),
     ("[1,2,3,4,5,6,7,8,9,10,11]", 11)],
)
def test_one_parameter_value_is_bounded(value: str, count: int) -> None:
    doc = W({"name": "j_{i}", "command": "x", "parameters": {"i": value}})
    assert errors_of(doc, max_jobs=10) == [
        f"jobs[0] 'j_{{i}}': parameters: i: {value!r} has {count} values, more than the "
        "limit of 10"
    ]


def test_workflow_parameters_are_bounded_too() -> None:
    doc = W(J(), parameters={"i": "1:11"})
    assert errors_of(doc, max_jobs=10) == [
        "parameters: i: '1:11' has 11 values, more than the limit of 10"
    ]


def test_files_and_user_data_have_their_own_counts() -> None:
    doc = W(J(), files=[{"name": "f_{i}", "path": "p_{i}", "parameters": {"i": "1:6"}},
                        {"name": "g_{i}", "path": "q_{i}", "parameters": {"i": "1:5"}}],
            user_data=[{"name": "u_{i}", "parameters": {"i": "1:5"}},
                       {"name": "v_{i}", "parameters": {"i": "1:5"}}])
    spec = parse_spec(doc, max_jobs=11)
    assert (len(spec.jobs), len(spec.files), len(spec.user_data)) == (1, 11, 10)
    assert errors_of(doc, max_jobs=9) == [
        "files: 11 files after parameter expansion, more than the limit of 9 "
        "(serve --max-jobs-per-workflow); the most from files[0] 'f_{i}': 6",
        "user_data: 10 user_data after parameter expansion, more than the limit of 9 "
        "(serve --max-jobs-per-workflow); the most from user_data[0] 'u_{i}': 5",
    ]


def test_counting_never_materializes() -> None:
    huge = parse_parameter_value("1:99999999999999999999")
    assert isinstance(huge, range) and value_count(huge) == 99999999999999999999
    assert value_count(range(10, 0, -3)) == len(range(10, 0, -3)) == 4
    combos = make_combinations({"a": huge, "b": huge, "c": ("x", "y")})
    assert combos.count() == 2 * 99999999999999999999**2
    with pytest.raises(ParameterError, match="has 11 values, more than the limit of 10"):
        parse_parameter_value("0.0:1.0:0.1", max_values=10)


# ------------------------------------------------------- values SQLite cannot hold (int64)

BIG = 2**63  # one more than SQLite's largest integer
RR = "resource_requirements[0] 'r'"
RULE = "failure_handlers[0] 'h': rules[0]"
ACTION = {"trigger_type": "on_workflow_start", "action_type": "schedule_nodes",
          "scheduler": "s"}


@pytest.mark.parametrize(
    ("top", "message"),
    [({"resource_requirements": [{"name": "r", "memory": "99999999999999999999999p"}]},
      f"{RR}: memory: bad memory '99999999999999999999999p': more than 8 EiB "
      f"({BIG - 1} bytes)"),
     ({"resource_requirements": [{"name": "r", "memory": "8192p"}]},
      f"{RR}: memory: bad memory '8192p': more than 8 EiB ({BIG - 1} bytes)"),
     ({"resource_requirements": [{"name": "r", "memory": BIG}]},
      f"{RR}: memory: bad memory {BIG}: more than 8 EiB ({BIG - 1} bytes)"),
     ({"resource_requirements": [{"name": "r", "memory": "9" * 400 + "k"}]},
      f"{RR}: memory: bad memory '{'9' * 40}...': too long (401 characters)"),
     ({"resource_requirements": [{"name": "r", "runtime": "P99999999999999999999D"}]},
      f"{RR}: runtime: bad runtime 'P99999999999999999999D': more than {BIG - 1} seconds"),
     ({"resource_requirements": [{"name": "r", "runtime": "PT" + "9" * 400 + "S"}]},
      f"{RR}: runtime: bad runtime 'PT{'9' * 38}...': too long (403 characters)"),
     ({"resource_requirements": [{"name": "r", "runtime": 10**30}]},
      f"{RR}: runtime: bad runtime {10**30}: more than {BIG - 1} seconds"),
     ({"resource_requirements": [{"name": "r", "num_cpus": BIG}]},
      f"{RR}: num_cpus: must be at most {BIG - 1}, got {BIG}"),
     ({"resource_requirements": [{"name": "r", "num_gpus": 10**5000}]},
      f"{RR}: num_gpus: must be at most {BIG - 1}, got a 16610-bit integer"),
     ({"resource_requirements": [{"name": "r", "num_nodes": -(10**5000)}]},
      f"{RR}: num_nodes: must be at least 1, got a 16610-bit integer"),
     ({"failure_handlers": [{"name": "h", "rules": [{"exit_codes": [1, -BIG - 1]}]}]},
      f"{RULE}: exit_codes[1]: must be at least {-BIG}, got {-BIG - 1}"),
     ({"failure_handlers": [{"name": "h", "rules": [{"exit_codes": [1], "max_retries": BIG}]}]},
      f"{RULE}: max_retries: must be at most {BIG - 1}, got {BIG}"),
     ({"slurm_schedulers": [{"name": "s", "nodes": BIG}]},
      f"slurm_schedulers[0] 's': nodes: must be at most {BIG - 1}, got {BIG}"),
     ({"slurm_schedulers": [{"name": "s"}], "actions": [{**ACTION, "num_allocations": BIG}]},
      f"actions[0]: num_allocations: must be at most {BIG - 1}, got {BIG}"),
     ({"user_data": [{"name": "u", "data": {"a": [1, {"b": BIG}]}}]},
      f"user_data[0] 'u': data: a[1].b: must be at most {BIG - 1}, got {BIG}"),
     ({"user_data": [{"name": "u", "data": [float("nan")]}]},
      "user_data[0] 'u': data: [0]: not a finite number (nan)"),
     ({"slurm_defaults": {"mem_per_cpu": float("inf")}},
      "slurm_defaults: mem_per_cpu: not a finite number (inf)"),
     ({"resource_monitor": {"sample_interval_seconds": -BIG - 1}},
      f"resource_monitor: sample_interval_seconds: must be more than 0 and at most 86400, "
      f"got {-BIG - 1}"),
     ({"compute_node_wait_for_new_jobs_seconds": BIG},
      f"compute_node_wait_for_new_jobs_seconds: must be at most {BIG - 1}, got {BIG}")],
)
def test_integers_beyond_64_bits_are_refused(top: dict[str, Any], message: str) -> None:
    assert errors_of(W(J(), **top)) == [message]


def test_exact_memory_and_runtime_arithmetic() -> None:
    """Largest values that fit; exact decimals (no float rounding on the way)."""
    from torc_core.parse import parse_duration, parse_memory

    assert parse_memory("8191.999999999999999p") == 8191999999999999999 * 2**50 // 10**15
    assert parse_memory(str(BIG - 1)) == BIG - 1
    assert parse_memory("0.1k") == 102 and parse_memory("1.5g") == 3 << 29
    assert parse_duration(f"PT{BIG - 1}S") == BIG - 1
    assert parse_duration("PT0.0000000000000000001S") == 1  # rounded up
    with pytest.raises(ValueError, match="more than 8 EiB"):
        parse_memory("8192p")


@pytest.mark.parametrize(
    ("value", "message"),
    [([1.0, float("inf")], "list items must be finite numbers, got inf"),
     (float("nan"), "expected a finite number, got nan"),
     ("[1, 1e400]", "bad list '[1, 1e400]': 1e400 is not a finite number"),
     ("[" + "1" * 1001 + "]",
      f"bad list '[{'1' * 39}...': a number of 1001 digits (at most 1000)"),
     ("1:" + "9" * 1001,
      f"bad range '1:{'9' * 38}...': a number of 1001 digits (at most 1000)")],
    ids=["inf-item", "nan", "1e400", "long-int", "long-range"],
)
def test_parameter_numbers_are_finite(value: object, message: str) -> None:
    doc = W({"name": "j_{i}", "command": "x", "parameters": {"i": value}})
    assert errors_of(doc) == [f"jobs[0] 'j_{{i}}': parameters: i: {message}"]


def test_non_json_values_are_refused() -> None:
    """YAML makes dates, bytes and sets; the server stores data as JSON."""
    import datetime

    doc = W(J(), user_data=[{"name": "u", "data": {"when": datetime.date(2024, 1, 2),
                                                   "raw": b"x", "tags": {"a"}}}],
            slurm_defaults={datetime.date(2024, 1, 2): 1})
    assert errors_of(doc) == [
        "user_data[0] 'u': data: when: expected JSON data, got date",
        "user_data[0] 'u': data: raw: expected JSON data, got bytes",
        "user_data[0] 'u': data: tags: expected JSON data, got set",
        "slurm_defaults: datetime.date(2024, 1, 2): a key must be a string, got date",
    ]


def test_deep_data_is_refused() -> None:
    data: Any = "x"
    for _ in range(5000):
        data = [data]
    doc = W(J(), user_data=[{"name": "u", "data": data}])
    assert errors_of(doc) == [
        f"user_data[0] 'u': data: {('[0]' * 100)[:40]}...: nested more than 100 levels deep"
    ]


# ------------------------------------------------------------ text SQLite cannot store

BAD = "ab\ud800cd"  # JSON's "ab\ud800cd": a lone surrogate, not encodable as UTF-8
WHY = "not valid text (a lone surrogate \\ud800 at position 2)"


@pytest.mark.parametrize(
    ("doc", "message"),
    [(W(J(), J(name=BAD)), f"jobs[1] {BAD!r}: name: {WHY}"),
     (W(J(command=BAD)), f"jobs[0] 'a': command: {WHY}"),
     (W(J(), J(name="b"), J(name="c", command=BAD)), f"jobs[2] 'c': command: {WHY}"),
     (W(J(invocation_script=BAD)), f"jobs[0] 'a': invocation_script: {WHY}"),
     (W(J(depends_on=["x", BAD])), f"jobs[0] 'a': depends_on[1]: {WHY}"),
     (W(J(depends_on_regexes=[BAD])), f"jobs[0] 'a': depends_on_regexes[0]: {WHY}"),
     (W(J(), description=BAD), f"description: {WHY}"),
     (W(J(), name=BAD), f"name: {WHY}"),
     (W(J(), files=[{"name": "f", "path": BAD}]), f"files[0] 'f': path: {WHY}"),
     (W(J(), user_data=[{"name": BAD}]), f"user_data[0] {BAD!r}: name: {WHY}"),
     (W(J(), user_data=[{"name": "u", "data": {"k": [BAD]}}]),
      f"user_data[0] 'u': data: k[0]: {WHY}"),
     (W(J(), user_data=[{"name": "u", "data": {BAD: 1}}]),
      f"user_data[0] 'u': data: {BAD!r}: {WHY}"),
     (W(J(), slurm_schedulers=[{"name": BAD}]), f"slurm_schedulers[0] {BAD!r}: name: {WHY}"),
     (W(J(), slurm_schedulers=[{"name": "s", "extra": BAD}]),
      f"slurm_schedulers[0] 's': extra: {WHY}"),
     (W(J(), slurm_defaults={"constraint": BAD}), f"slurm_defaults: constraint: {WHY}"),
     (W(J(), failure_handlers=[{"name": "h", "rules": [{"match_all_exit_codes": True,
                                                        "recovery_script": BAD}]}]),
      f"failure_handlers[0] 'h': rules[0]: recovery_script: {WHY}"),
     (W(J(), actions=[{"trigger_type": "on_workflow_start", "action_type": "run_commands",
                       "commands": ["ok", BAD]}]),
      f"actions[0]: commands[1]: {WHY}"),
     (W({"name": "j_{i}", "command": "x", "parameters": {"i": f"[a, {BAD}]"}}),
      f"jobs[0] 'j_{{i}}': parameters: i: {WHY.replace('position 2', 'position 6')}"),
     (W({"name": "j_{i}", "command": "x", "parameters": {"i": ["a", BAD]}}),
      f"jobs[0] 'j_{{i}}': parameters: i: item 1: {WHY}"),
     (W(J(), parameters={"i": BAD}),
      f"parameters: i: {WHY}"),
     # compute_node_* keys are Torc's five settings; any other is unknown (named as repr)
     ({**W(J()), "compute_node_" + BAD: 1},
      f"unknown key {'compute_node_' + BAD!r}")],
)
def test_lone_surrogates_are_refused(doc: dict[str, Any], message: str) -> None:
    assert errors_of(doc) == [message]


def test_valid_text_is_kept() -> None:
    doc = W(J(name="été", command="echo 日本語 🎉"), J(name="b", command="x"))
    assert [j.command for j in parse_spec(doc).jobs] == ["echo 日本語 🎉", "x"]


def test_text_checks() -> None:
    from torc_core.checks import is_valid_text, text_problem

    assert is_valid_text("abc") and is_valid_text("été 🎉") and not is_valid_text(BAD)
    assert text_problem("été") is None and text_problem(BAD) == WHY
    assert text_problem("\udfff") == "not valid text (a lone surrogate \\udfff at position 0)"


# --------------------------------------------------------------------- template output size


@pytest.mark.timeout(20, method="thread")
@pytest.mark.parametrize(
    ("command", "problem"),
    [("echo {i:0999999999d}", "format width 999999999 is more than 1000"),
     ("echo {i:>1001}", "format width 1001 is more than 1000"),
     ("echo {i:.5000f}", "format precision 5000 is more than 1000"),
     ("echo {i:0" + "9" * 5000 + "d}", "format width of 5000 digits is more than 1000"),
     ("echo {i:c}", "format type 'c' is not supported (it makes characters of integers)")],
)
def test_format_width_is_bounded(command: str, problem: str) -> None:
    doc = W({"name": "j_{i}", "command": command, "parameters": {"i": "1:3"}})
    assert errors_of(doc) == [f"jobs[0] 'j_{{i}}': command: cannot format {shown(command)}: "
                              f"{problem}"]


def test_widths_up_to_the_limit_render() -> None:
    doc = W({"name": "j_{i}", "command": "{i:>1000}|{i:.1000f}", "parameters": {"i": "1:2"}})
    command = parse_spec(doc).jobs[0].command
    assert len(command) == 1000 + 1 + 1002 and command.startswith(" " * 999 + "1|1.000")


def test_int_too_large_for_a_float_format_is_located() -> None:
    doc = W({"name": "j_{i}", "command": "{i:.2f}", "parameters": {"i": "[" + "9" * 400 + "]"}})
    assert errors_of(doc) == [
        "jobs[0] 'j_{i}': command: cannot format '{i:.2f}': int too large to convert "
        "to float"
    ]


@pytest.mark.timeout(20, method="thread")
def test_rendered_text_is_bounded_before_rendering() -> None:
    """A 1 MB command template times 5,000,000 jobs is 5 TB."""
    command = "x" * 1_000_000 + " {i}"
    doc = W({"name": "j_{i}", "command": command, "parameters": {"i": "1:5000000"}})
    (message,) = errors_of(doc)
    m = re.fullmatch(r"the spec would expand to about (\d+) bytes of text and references, more "
                     r"than the limit of 2147483648; the most from jobs\[0\] 'j_\{i\}': "
                     r"about (\d+)", message)
    assert m is not None, message
    assert int(m.group(1)) == int(m.group(2)) >= 5 * 10**12


def test_text_limit_counts_every_section() -> None:
    doc = W({"name": "j_{i}", "command": "run {i}", "parameters": {"i": "1:10"}},
            files=[{"name": "f_{i}", "path": "p_{i}", "parameters": {"i": "1:10"}}],
            user_data=[{"name": "u_{i}", "data": {"k": "v{i}", "n": [1, 2]},
                        "parameters": {"i": "1:10"}}])
    assert len(parse_spec(doc, max_text_bytes=100_000).jobs) == 10
    errors = errors_of(doc, max_text_bytes=500)
    assert len(errors) == 1 and errors[0].startswith("the spec would expand to about "), errors
    assert "more than the limit of 500" in errors[0]


def test_references_count_as_the_path_they_become() -> None:
    """${files.input.x} becomes x's path: 10,000 references to a 100 kB path are 1 GB."""
    doc = W(J(command="cat" + " ${files.input.f}" * 10_000),
            files=[{"name": "f", "path": "p" * 100_000}])
    errors = errors_of(doc, max_text_bytes=10**8)
    assert len(errors) == 1 and "the most from jobs[0] 'a'" in errors[0], errors


def test_ordinary_specs_are_far_from_the_text_limit() -> None:
    """A million jobs of realistic templates estimate well below the default budget."""
    from torc_core.params import MAX_FORMAT_WIDTH, Template

    names = ["i", "lr", "opt"]
    widths = [value_width(parse_parameter_value(v)) for v in ("1:1000000",
                                                              "0.0001:0.1:0.0001",
                                                              "[adam, sgd, rmsprop]")]
    template = Template.compile("python train.py --seed {i:07d} --lr {lr:.5f} --opt {opt} "
                                "--out results/run_{i}_{lr}_{opt}.json", names)
    bound = template.size_bound(widths)
    rendered = max(len(template.render((i, lr, "rmsprop")))
                   for i in (1, 1000000) for lr in (0.0001, 0.0999))
    assert rendered <= bound <= 4 * rendered
    assert MAX_FORMAT_WIDTH == 1000


_SPECS = st.builds(
    lambda fill, align, sign, alt, zero, width, grouping, precision, kind: (
        (fill + align if align else "") + sign + alt + zero + width + grouping
        + (f".{precision}" if precision is not None else "") + kind
    ),
    st.sampled_from(["", "*", "0", " "]), st.sampled_from(["", "<", ">", "=", "^"]),
    st.sampled_from(["", "+", "-", " "]), st.sampled_from(["", "#"]), st.sampled_from(["", "0"]),
    st.sampled_from(["", "1", "8", "25"]), st.sampled_from(["", ",", "_"]),
    st.one_of(st.none(), st.integers(0, 30)),
    st.sampled_from(["", "b", "d", "e", "E", "f", "F", "g", "G", "n", "o", "s", "x", "X", "%"]),
)
_VALUES = st.one_of(
    st.lists(st.integers(-(10**30), 10**30), min_size=1, max_size=5),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=5),
    st.lists(st.text(max_size=20), min_size=1, max_size=5),
)


@settings(max_examples=500, deadline=None)
@given(spec=_SPECS, values=_VALUES)
def test_size_bound_is_never_short(spec: str, values: list[Any]) -> None:
    """Whatever the format spec and values, no rendering is longer than the estimate."""
    from torc_core.params import Template

    template = Template.compile(f"a{{v:{spec}}}b", ["v"])
    bound = template.size_bound([value_width(tuple(values))])
    for value in values:
        try:
            rendered = template.render((value,))
        except (ValueError, TypeError, OverflowError):
            continue
        assert len(rendered) <= bound, (spec, value, rendered)


@given(start=st.integers(-(10**25), 10**25), count=st.integers(1, 50),
       step=st.integers(-(10**20), 10**20).filter(bool))
def test_value_width_of_ranges(start: int, count: int, step: int) -> None:
    values = range(start, start + count * step, step)
    assert value_width(values) == max(len(str(v)) for v in values)


# ------------------------------------------------------------------------ YAML alias bombs


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """The classic: each level is a list of ``width`` aliases of the previous one; 500 bytes
    that expand to width**levels strings (2.6 GB of JSON for 9 x 9)."""
    lines = ['name: "lol"', 'a0: &a0 ["lol"]']
    for k in range(1, levels + 1):
        lines.append(f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * width)}]")
    lines.append(f"jobs: [{{name: x, command: y, z: *a{levels}}}]")
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(20, method="thread")
def test_billion_laughs_is_refused_at_the_alias() -> None:
    text = billion_laughs()
    assert len(text) < 600
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "yaml")
    (message,) = info.value.errors
    assert re.fullmatch(
        r"YAML: alias '\*a\d' at line \d+, column \d+ expands the document past 10000000 "
        r"nodes \(an alias bomb\?\)", message), message


def test_alias_bomb_location_and_limit() -> None:
    text = billion_laughs(levels=3, width=10)
    # a0 is 2 nodes, a1 21, a2 211, a3 2111; a1..a3 hold 10 aliases each and jobs one more:
    # aliases add 10*2 + 10*21 + 10*211 + 2111 = 4451 nodes.
    assert load_spec_text(text, "yaml", max_alias_nodes=4451)["name"] == "lol"
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "yaml", max_alias_nodes=4450)
    column = text.splitlines()[5].index("*a3") + 1
    assert info.value.errors == (
        f"YAML: alias '*a3' at line 6, column {column} expands the document past 4450 nodes "
        "(an alias bomb?)",
    )


def test_recursive_alias_is_refused() -> None:
    with pytest.raises(SpecError) as info:
        load_spec_text("name: w\nx: &a [1, *a]\n", "yaml")
    assert info.value.errors == (
        "YAML: alias '*a' at line 2, column 11 refers to the node that contains it "
        "(a recursive structure)",
    )


def test_ordinary_anchors_keep_working() -> None:
    text = """\
name: w
resource_requirements:
  - &small {name: small, num_cpus: 1, memory: 1g}
defaults: &job
  resource_requirements: small
  supports_termination: true
jobs:
  - {<<: *job, name: a, command: "echo a"}
  - {<<: *job, name: b, command: "echo b", depends_on: [a]}
"""
    doc = load_spec_text(text, "yaml")
    doc.pop("defaults")
    spec = parse_spec(doc)
    assert [(j.name, j.resource_requirements, j.supports_termination) for j in spec.jobs] == [
        ("a", "small", True), ("b", "small", True)]


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [("x: " + "[" * 5000 + "]" * 5000, "yaml", "YAML: nested too deeply"),
     ('{"x": ' + "[" * 100000 + "]" * 100000 + "}", "json", "JSON: nested too deeply"),
     ("x: " + "9" * 5000, "yaml", "YAML: a number of more than 4300 digits"),
     ('{"x": ' + "9" * 5000 + "}", "json", "JSON: a number of more than 4300 digits")],
    ids=["yaml-deep", "json-deep", "yaml-long-int", "json-long-int"],
)
def test_loader_errors_are_spec_errors(text: str, fmt: str, message: str) -> None:
    """Deep nesting (RecursionError) and integers Python will not read (ValueError) crashed
    the loaders instead of saying what is wrong."""
    with pytest.raises(SpecError) as info:
        load_spec_text(text, fmt)
    assert info.value.errors == (message,)


# ------------------------------------------- shared reference lists of many jobs (N x M)

FILES = {"name": "f_{k}", "path": "p_{k}", "parameters": {"k": "1:1000"}}


@pytest.mark.timeout(20, method="thread")
def test_shared_outputs_of_many_jobs_are_checked_once() -> None:
    """A million jobs sharing 1000 outputs (one regex) conflict from the second job on;
    checking every job against every output was 10^9 steps."""
    doc = W({"name": "j_{i}", "command": "x", "parameters": {"i": "1:1000000"},
             "output_file_regexes": ["f_.*"]}, files=[FILES])
    errors = errors_of(doc, max_text_bytes=10**11)  # the references alone are 8 GB
    assert errors[0] == ("jobs[0] 'j_{i}': output_files: file 'f_1' (path 'p_1') is also an output "
                         "of 'j_1'")
    assert errors[-1] == "... and 900 more errors" and len(errors) == 101


def test_shared_input_lists_count_per_job() -> None:
    """One regex gives each of N jobs the same M inputs: the compiled model and the store
    hold N x M references (a 200-byte spec of 5,000,000 x 10,000 was 400 GB)."""
    doc = W({"name": "j_{i}", "command": "x", "parameters": {"i": "1:1000"},
             "input_file_regexes": ["f_.*"]}, files=[FILES])
    assert len(parse_spec(doc, max_text_bytes=9_000_000).jobs[0].input_files) == 1000
    (message,) = errors_of(doc, max_text_bytes=8_000_000)
    assert message.startswith("the spec would expand to about 80"), message
    assert message.endswith("; the most from jobs[0] 'j_{i}': about 8000000"), message
