"""Dependency graph compile (torc_core.graph): edges, barriers, cycles, model columns."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torc_core.errors import SpecError
from torc_core.graph import compile_spec_summary, compile_workflow, model_summary
from torc_core.model import WorkflowModel
from torc_core.parse import fmt_for_path, load_spec_text, parse_spec
from torc_core.spec import WorkflowSpec

SPECS = Path(__file__).parent / "specs"


def load(name: str) -> WorkflowSpec:
    return parse_spec(load_spec_text((SPECS / name).read_text(), fmt_for_path(name)))


def edges(model: WorkflowModel) -> set[tuple[int, int]]:
    return {(u, d) for u in range(model.num_nodes) for d in model.downstream(u)}


def named_edges(spec: WorkflowSpec, model: WorkflowModel) -> set[tuple[str, str]]:
    def name(n: int) -> str:
        return spec.jobs[n].name if n < model.num_jobs else f"<barrier {n - model.num_jobs}>"

    return {(name(u), name(d)) for u, d in edges(model)}


def ancestors(model: WorkflowModel) -> list[frozenset[int]]:
    """Every job's transitive dependencies, real jobs only (barriers are looked through)."""
    up_ptr, up_idx = model.upstream_csr()
    memo: dict[int, frozenset[int]] = {}

    def visit(n: int) -> frozenset[int]:
        if n not in memo:
            acc: set[int] = set()
            for k in range(up_ptr[n], up_ptr[n + 1]):
                u = up_idx[k]
                acc |= visit(u)
                if u < model.num_jobs:
                    acc.add(u)
            memo[n] = frozenset(acc)
        return memo[n]

    return [visit(j) for j in range(model.num_jobs)]


def test_diamond_edges_through_files() -> None:
    spec = load("diamond.yaml")
    model = compile_workflow(spec)
    assert named_edges(spec, model) == {
        ("preprocess", "work1"),
        ("preprocess", "work2"),
        ("work1", "postprocess"),
        ("work2", "postprocess"),
    }
    assert model.num_barriers == 0 and model.num_edges == 4 and model.uncompressed_edges == 4
    assert list(model.cpus) == [1, 4, 4, 1]
    assert list(model.memory) == [1 << 30, 512 << 20, 512 << 20, 1 << 30]
    assert list(model.runtime) == [60, 1800, 1800, 60]
    assert list(model.scheduler) == [-1, -1, -1, -1]
    assert list(model.handler) == [-1, -1, -1, -1]
    assert bytes(model.cancel_on_failure) == b"\x01\x01\x01\x01"
    # input files by index in spec.files: inputs=0, f1=1, ... f4=4
    files = [list(model.input_files_idx[model.input_files_ptr[j] : model.input_files_ptr[j + 1]])
             for j in range(4)]
    assert files == [[0], [1], [2], [3, 4]]
    assert model_summary(spec, model) == {
        "jobs": 4, "dependencies": 4, "barriers": 0, "files": 6, "user_data": 0,
        "uncompressed_dependencies": 4,
    }


def test_default_resources_and_handler_index() -> None:
    spec = load("failure_handler.yaml")
    model = compile_workflow(spec)
    assert list(model.handler) == [0, -1]
    assert model.failure_handlers == spec.failure_handlers
    assert list(model.cpus) == [1, 1] and list(model.memory) == [1 << 20, 1 << 20]
    assert list(model.runtime) == [60, 60]
    assert bytes(model.cancel_on_failure) == b"\x01\x00"
    assert named_edges(spec, model) == {("flaky", "after")}


def test_barrier_pipeline() -> None:
    spec = load("barrier_pipeline.yaml")
    model = compile_workflow(spec)
    assert model.num_jobs == 91 and model.num_barriers == 1
    barrier = model.num_jobs
    assert sorted(model.downstream(barrier)) == list(range(50, 90))
    assert all(list(model.downstream(j)) == [barrier] for j in range(50))
    # report (index 90) waits for the 40 stage2 jobs directly: one dependent, no barrier.
    assert all(list(model.downstream(j)) == [90] for j in range(50, 90))
    assert model.num_edges == 50 + 40 + 40
    assert model.uncompressed_edges == 50 * 40 + 40
    assert model.cancel_on_failure[barrier] == 0
    assert compile_spec_summary(spec)["barriers"] == 1


def all_to_all(n: int, m: int) -> WorkflowSpec:
    return parse_spec({
        "name": "a2a",
        "jobs": [
            {"name": "up_{i}", "command": "u {i}", "parameters": {"i": f"1:{n}"}},
            {"name": "down_{i}", "command": "d {i}", "depends_on_regexes": ["up_\\d+"],
             "parameters": {"i": f"1:{m}"}},
        ],
    })


def test_thousand_by_thousand_is_compressed() -> None:
    spec = all_to_all(1000, 1000)
    model = compile_workflow(spec)
    assert model.num_edges <= 2100
    assert model.num_edges == 2000 and model.num_barriers == 1
    assert model.uncompressed_edges == 1_000_000


def test_all_to_all_through_shared_input_files_is_compressed() -> None:
    spec = parse_spec({
        "name": "files",
        "files": [{"name": "f{i}", "path": "out/{i}", "parameters": {"i": "1:100"}}],
        "jobs": [
            {"name": "make_{i}", "command": "m", "output_files": ["f{i}"],
             "parameters": {"i": "1:100"}},
            {"name": "use_{j}", "command": "u", "input_file_regexes": ["f\\d+"],
             "parameters": {"j": "1:100"}},
        ],
    })
    model = compile_workflow(spec)
    assert model.num_barriers == 1 and model.num_edges == 200
    assert model.uncompressed_edges == 10_000


def test_small_groups_stay_direct() -> None:
    spec = all_to_all(3, 3)
    model = compile_workflow(spec)  # 9 <= threshold: direct edges
    assert model.num_barriers == 0 and model.num_edges == 9
    squeezed = compile_workflow(spec, barrier_threshold=1)
    assert squeezed.num_barriers == 1 and squeezed.num_edges == 6


def test_cycle_is_refused_and_named() -> None:
    spec = parse_spec({
        "name": "cyc",
        "jobs": [
            {"name": "a", "command": "x", "depends_on": ["c"]},
            {"name": "b", "command": "x", "depends_on": ["a"]},
            {"name": "c", "command": "x", "depends_on": ["b"]},
            {"name": "d", "command": "x", "depends_on": ["a"]},
        ],
    })
    with pytest.raises(SpecError) as info:
        compile_workflow(spec)
    assert info.value.errors == ("dependency cycle: a -> b -> c -> a",)


def test_cycle_through_files_and_barrier() -> None:
    spec = parse_spec({
        "name": "cyc",
        "files": [{"name": "f", "path": "f"}],
        "jobs": [
            {"name": "s_{i}", "command": "x", "input_files": ["f"], "parameters": {"i": "1:3"}},
            {"name": "t_{i}", "command": "x", "depends_on_regexes": ["s_.*"],
             "parameters": {"i": "1:3"}},
            {"name": "last", "command": "x", "depends_on_regexes": ["t_.*"],
             "output_files": ["f"]},
        ],
    })
    with pytest.raises(SpecError) as info:
        compile_workflow(spec, barrier_threshold=1)
    assert info.value.errors == ("dependency cycle: s_1 -> t_1 -> last -> s_1",)


def test_self_references_are_dropped() -> None:
    spec = parse_spec({
        "name": "self",
        "files": [{"name": "f", "path": "f"}],
        "jobs": [
            {"name": "a", "command": "x", "depends_on_regexes": ["a|b"]},
            {"name": "b", "command": "x", "input_files": ["f"], "output_files": ["f"]},
        ],
    })
    model = compile_workflow(spec)
    assert edges(model) == {(1, 0)}


def test_implicit_user_data_edges() -> None:
    spec = load("user_data.yaml")
    model = compile_workflow(spec)
    assert named_edges(spec, model) == {
        ("make_config", "use_1"), ("make_config", "use_2"), ("make_config", "use_3"),
        ("use_1", "collect"), ("use_2", "collect"), ("use_3", "collect"),
    }
    ud = [list(model.input_user_data_idx[model.input_user_data_ptr[j]:
                                         model.input_user_data_ptr[j + 1]]) for j in range(5)]
    assert ud == [[], [0], [0], [0], [1, 2, 3]]


def test_duplicate_sources_give_one_edge() -> None:
    spec = parse_spec({
        "name": "dups",
        "files": [{"name": "f", "path": "f"}],
        "user_data": [{"name": "u"}],
        "jobs": [
            {"name": "a", "command": "x", "output_files": ["f"], "output_user_data": ["u"]},
            {"name": "b", "command": "x", "depends_on": ["a", "a"], "depends_on_regexes": ["a"],
             "input_files": ["f"], "input_user_data": ["u"]},
        ],
    })
    model = compile_workflow(spec)
    assert list(model.downstream(0)) == [1] and model.num_edges == 1


def test_two_producers_refused_by_compiler() -> None:
    spec = WorkflowSpec(
        name="w",
        files=(load("diamond.yaml").files[0],),
        jobs=(
            load("diamond.yaml").jobs[0].__class__(name="p", command="x", output_files=("inputs",)),
            load("diamond.yaml").jobs[0].__class__(name="q", command="x", output_files=("inputs",)),
        ),
    )
    with pytest.raises(SpecError) as info:
        compile_workflow(spec)
    assert info.value.errors == (
        "jobs[1] 'q': output_files: 'inputs' is also an output of 'p'",
    )


def test_many_per_job_regexes_use_the_prefix_index() -> None:
    spec = parse_spec({
        "name": "pairs",
        "jobs": [
            {"name": "prep_{i}_x", "command": "p", "parameters": {"i": "1:300"}},
            {"name": "run_{i}", "command": "r", "depends_on_regexes": ["prep_{i}_.*"],
             "parameters": {"i": "1:300"}},
        ],
    })
    model = compile_workflow(spec)
    assert edges(model) == {(i, 300 + i) for i in range(300)}


# ------------------------------------------------------------------ compression equivalence


def reference_ancestors(spec: WorkflowSpec) -> list[frozenset[int]]:
    """Transitive dependencies computed naively from the spec (no barriers, no caching)."""
    names = [j.name for j in spec.jobs]
    producer = {f: k for k, j in enumerate(spec.jobs) for f in j.output_files}
    direct: list[set[int]] = []
    for k, j in enumerate(spec.jobs):
        deps = {names.index(n) for n in j.depends_on}
        deps |= {i for p in j.depends_on_regexes for i, n in enumerate(names) if re.fullmatch(p, n)}
        deps |= {producer[f] for f in j.input_files if f in producer}
        deps.discard(k)
        direct.append(deps)
    memo: dict[int, frozenset[int]] = {}

    def visit(n: int) -> frozenset[int]:
        if n not in memo:
            acc = set(direct[n])
            for u in direct[n]:
                acc |= visit(u)
            memo[n] = frozenset(acc)
        return memo[n]

    return [visit(k) for k in range(len(names))]


@st.composite
def staged_specs(draw: Any) -> dict[str, Any]:
    n1 = draw(st.integers(1, 8))
    n2 = draw(st.integers(1, 8))
    n3 = draw(st.integers(1, 4))
    jobs: list[dict[str, Any]] = [
        {"name": "a_{i}", "command": "x", "parameters": {"i": f"1:{n1}"},
         "output_files": ["fa_{i}"]},
    ]
    pattern = draw(st.sampled_from(["a_.*", "a_[12]", "a_1"]))
    jobs.append({"name": "b_{i}", "command": "x", "parameters": {"i": f"1:{n2}"},
                 "depends_on_regexes": [pattern]})
    for k in range(n3):
        explicit = draw(st.lists(st.integers(1, n2), max_size=3))
        files = draw(st.lists(st.integers(1, n1), max_size=3))
        extra = draw(st.booleans())
        jobs.append({
            "name": f"c_{k}", "command": "x",
            "depends_on": [f"b_{i}" for i in explicit],
            "input_files": [f"fa_{i}" for i in files],
            **({"depends_on_regexes": ["b_.*"]} if extra else {}),
        })
    return {
        "name": "random",
        "files": [{"name": "fa_{i}", "path": "p/{i}", "parameters": {"i": f"1:{n1}"}}],
        "jobs": jobs,
    }


@settings(max_examples=150, deadline=None)
@given(staged_specs(), st.sampled_from([1, 4, 64]))
def test_compression_preserves_transitive_dependencies(doc: dict[str, Any], threshold: int) -> None:
    spec = parse_spec(doc)
    model = compile_workflow(spec, barrier_threshold=threshold)
    assert ancestors(model) == reference_ancestors(spec)
    assert model.uncompressed_edges >= sum(1 for _ in edges(model) if _[0] < model.num_jobs
                                           and _[1] < model.num_jobs)
    assert len(edges(model)) == model.num_edges  # no duplicate edges
    assert all(u != d for u, d in edges(model))
