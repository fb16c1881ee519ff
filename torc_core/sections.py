"""The spec's sections other than jobs and actions: resource_requirements, failure_handlers,
slurm_schedulers, files and user_data (with the checks of free-form data), each entry located
in its errors. Used by :mod:`torc_core.parse`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import repeat
from typing import Any, TypeVar, cast

from .checks import (
    check_int64,
    text_problem,
    type_name,
)
from .entries import MAX_ERRORS as MAX_ERRORS
from .entries import Entry as _Entry
from .entries import entries as _entries
from .expand import (
    _FAILED,
    _FORMAT_ERRORS,
    _Budget,
    _bulk_build,
    _Const,
    _Params,
    _Renderer,
)
from .load import FORMATS as FORMATS
from .load import MAX_YAML_ALIAS_NODES as MAX_YAML_ALIAS_NODES
from .load import fmt_for_path as fmt_for_path
from .load import inline_value_files as inline_value_files
from .load import load_spec_text as load_spec_text
from .load import value_file_references as value_file_references
from .spec import (
    FailureHandler,
    FailureHandlerRule,
    FileSpec,
    ResourceRequirements,
    SlurmScheduler,
    UserDataSpec,
)
from .units import MAX_SCALAR_TEXT as MAX_SCALAR_TEXT
from .units import parse_duration as parse_duration
from .units import parse_memory as parse_memory

#: Per field of one expanded block, report this many failing jobs before summarizing.
MAX_ERRORS_PER_FIELD = 3
_PARAM_KEYS = ("parameters", "parameter_mode", "use_parameters")
_FILE_KEYS = frozenset({"name", "path", *_PARAM_KEYS})
_UD_KEYS = frozenset({"name", "data", "is_ephemeral", *_PARAM_KEYS})
_RR_KEYS = frozenset({"name", "num_cpus", "num_gpus", "num_nodes", "memory", "runtime"})
_FH_KEYS = frozenset({"name", "rules"})
_RULE_KEYS = frozenset({"exit_codes", "match_all_exit_codes", "recovery_script", "max_retries"})
_SLURM_KEYS = frozenset(
    {"name", "account", "partition", "nodes", "walltime", "mem", "gres", "qos",
     "ntasks_per_node", "tmp", "extra"}
)
T = TypeVar("T")

# --------------------------------------------------------------------------------------------
# Sections


def _resource_requirements(doc: _Entry) -> list[ResourceRequirements]:
    out: list[ResourceRequirements] = []
    for e in _entries(doc, "resource_requirements"):
        e.check_keys(_RR_KEYS)
        name = e.get_str("name", "", required=True)
        memory: object = e.data.get("memory")
        runtime: object = e.data.get("runtime")
        rr = ResourceRequirements(name=name)
        memory_bytes, runtime_s = rr.memory_bytes, rr.runtime_s
        # As written, once valid (str() of a refused 5000-digit integer would raise).
        memory_text, runtime_text = rr.memory, rr.runtime
        if memory is not None:
            try:
                memory_bytes = parse_memory(memory)
                memory_text = str(memory)
            except ValueError as exc:
                e.fail("memory", str(exc))
        if runtime is not None:
            try:
                runtime_s = parse_duration(runtime)
                runtime_text = str(runtime)
            except ValueError as exc:
                e.fail("runtime", str(exc))
        out.append(
            ResourceRequirements(
                name=name,
                num_cpus=e.get_int("num_cpus", rr.num_cpus, minimum=0),
                num_gpus=e.get_int("num_gpus", rr.num_gpus, minimum=0),
                num_nodes=e.get_int("num_nodes", rr.num_nodes, minimum=1),
                memory_bytes=memory_bytes,
                runtime_s=runtime_s,
                memory=memory_text,
                runtime=runtime_text,
            )
        )
    return out


def _failure_handlers(doc: _Entry) -> list[FailureHandler]:
    out: list[FailureHandler] = []
    for e in _entries(doc, "failure_handlers"):
        e.check_keys(_FH_KEYS)
        name = e.get_str("name", "", required=True)
        rules: list[FailureHandlerRule] = []
        raw = e.data.get("rules")
        if raw is None:
            e.fail("rules", "is required")
            raw = []
        elif not isinstance(raw, list):
            e.fail("rules", f"expected a list, got {type_name(raw)}")
            raw = []
        for k, item in enumerate(raw):
            where = f"{e.where}: rules[{k}]"
            if not isinstance(item, dict):
                e.err.add(f"{where}: expected a mapping, got {type_name(item)}")
                continue
            r = _Entry(cast(dict[str, Any], item), where, e.err)
            r.check_keys(_RULE_KEYS)
            codes = r.data.get("exit_codes", [])
            if not isinstance(codes, list) or not all(
                isinstance(c, int) and not isinstance(c, bool) for c in codes
            ):
                r.fail("exit_codes", "expected a list of integers")
                codes = []
            for k, code in enumerate(codes):  # exit codes may be negative (signals)
                problem = check_int64(code)
                if problem is not None:
                    r.fail(f"exit_codes[{k}]", problem)
            match_all = r.get_bool("match_all_exit_codes", False)
            if not codes and not match_all:
                r.fail("exit_codes", "give exit_codes or match_all_exit_codes: true")
            rules.append(
                FailureHandlerRule(
                    exit_codes=tuple(codes),
                    match_all_exit_codes=match_all,
                    recovery_script=r.get_str("recovery_script", None),
                    # Torc's documented default is 3 retries.
                    max_retries=r.get_int("max_retries", 3, minimum=0),
                )
            )
        out.append(FailureHandler(name=name, rules=tuple(rules)))
    return out


def _slurm_schedulers(doc: _Entry) -> list[SlurmScheduler]:
    out: list[SlurmScheduler] = []
    for e in _entries(doc, "slurm_schedulers"):
        e.check_keys(_SLURM_KEYS)
        d = SlurmScheduler(name="")
        out.append(
            SlurmScheduler(
                name=e.get_str("name", "", required=True),
                account=e.get_str("account", None),
                partition=e.get_str("partition", None),
                nodes=e.get_int("nodes", d.nodes, minimum=1),
                walltime=e.get_str("walltime", d.walltime),
                mem=e.get_str("mem", None),
                gres=e.get_str("gres", None),
                qos=e.get_str("qos", None),
                ntasks_per_node=e.get_int("ntasks_per_node", None, minimum=1),
                tmp=e.get_str("tmp", None),
                extra=e.get_str("extra", None),
            )
        )
    return out


def _files(
    doc: _Entry, params: _Params, interned: dict[Any, Any], budget: _Budget
) -> tuple[list[FileSpec], list[str]]:
    """Expanded files and, per expanded file, where its definition is (for messages)."""
    out: list[FileSpec] = []
    wheres: list[str] = []
    count = budget.count("files", "files")
    for e in _entries(doc, "files"):
        e.check_keys(_FILE_KEYS)
        name = e.get_str("name", "", required=True)
        path = e.get_str("path", "", required=True)
        combos = params.combinations(e, (name, path))
        if combos is _FAILED or not count.admit(e.where, combos):
            continue
        r = _Renderer(e, combos, interned, budget)
        if not budget.charge(e.where, r.size("name", (name,)) + r.size("path", (path,))):
            continue
        names = r.scalar("name", name)
        paths = r.scalar("path", path)
        n = len(combos) if combos is not None else 1
        if isinstance(names, _Const) and n > 1:
            if not isinstance(paths, _Const):
                e.fail("path", "uses parameters but the file name does not")
            n = 1
        out.extend(_bulk_build(FileSpec, n, {"name": names, "path": paths}))
        wheres.extend(repeat(e.where, n))
    if count.report(doc.err):
        budget.exceeded = True
        return [], []
    return out, wheres


def _render_data(data: Any, r: _Renderer, combo: Sequence[Any]) -> Any:
    if isinstance(data, str):
        template = r.template("data", data)
        return template.render(combo) if template is not None else data
    if isinstance(data, list):
        return [_render_data(v, r, combo) for v in data]
    if isinstance(data, dict):
        return {k: _render_data(v, r, combo) for k, v in data.items()}
    return data


def _data_bound(data: Any, r: _Renderer) -> int:
    """The most one rendering of user_data's ``data`` makes, which is copied whole per
    combination: strings by their templates, 8 per other value or container."""
    if isinstance(data, str):
        return r.bound("data", data)
    if isinstance(data, list):
        return 8 + sum(_data_bound(v, r) for v in data)
    if isinstance(data, dict):
        return 8 + sum(len(k) + _data_bound(v, r) for k, v in data.items())
    return 8


#: Free-form data (user_data's data, slurm_defaults, resource_monitor, compute_node_*) nested
#: deeper than this is refused: walking it would reach Python's recursion limit.
MAX_DATA_DEPTH = 100


def _data_problems(value: object, path: str, depth: int, out: list[tuple[str, str]]) -> None:
    """Append (path, problem) for what JSON and SQLite cannot hold in free-form data:
    integers beyond 64 bits, inf and nan, keys that are not strings, types JSON does not have
    (YAML makes dates, bytes and sets), nesting past MAX_DATA_DEPTH. Stops after a few."""
    if len(out) >= MAX_ERRORS_PER_FIELD:
        return
    problem: str | None = None
    if isinstance(value, str):
        problem = text_problem(value)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        problem = check_int64(value)
    elif isinstance(value, float):
        problem = None if math.isfinite(value) else f"not a finite number ({value!r})"
    elif isinstance(value, list | dict) and depth >= MAX_DATA_DEPTH:
        problem = f"nested more than {MAX_DATA_DEPTH} levels deep"
    elif isinstance(value, list):
        for k, item in enumerate(value):
            _data_problems(item, f"{path}[{k}]", depth + 1, out)
    elif isinstance(value, dict):
        for key, item in value.items():
            key_problem = (f"a key must be a string, got {type_name(key)}"
                           if not isinstance(key, str) else text_problem(key))
            if key_problem is not None:
                out.append((f"{path}.{key!r}" if path else repr(key), key_problem))
                continue
            _data_problems(item, f"{path}.{key}" if path else key, depth + 1, out)
    else:
        problem = f"expected JSON data, got {type_name(value)}"
    if problem is not None:
        out.append((path, problem))


def _check_data(e: _Entry, key: str, value: object) -> bool:
    """Whether free-form ``value`` is JSON the store can hold; each problem located by its
    path inside it (``data: runs[3].seed: must be at most ...``)."""
    problems: list[tuple[str, str]] = []
    _data_problems(value, "", 0, problems)
    for path, problem in problems:
        e.fail(key, f"{path if len(path) <= 40 else path[:40] + '...'}: {problem}"
               if path else problem)
    return not problems


def _data_strings(data: Any) -> Iterator[str]:
    if isinstance(data, str):
        yield data
    elif isinstance(data, list):
        for v in data:
            yield from _data_strings(v)
    elif isinstance(data, dict):
        for v in data.values():
            yield from _data_strings(v)


def _user_data(
    doc: _Entry, params: _Params, interned: dict[Any, Any], budget: _Budget
) -> tuple[list[UserDataSpec], list[str]]:
    out: list[UserDataSpec] = []
    wheres: list[str] = []
    count = budget.count("user_data", "user_data")
    for e in _entries(doc, "user_data"):
        e.check_keys(_UD_KEYS)
        name = e.get_str("name", "", required=True)
        data = e.data.get("data")
        ephemeral = e.get_bool("is_ephemeral", False)
        if not _check_data(e, "data", data):
            continue
        combos = params.combinations(e, (name, *_data_strings(data)))
        if combos is _FAILED or not count.admit(e.where, combos):
            continue
        if combos is None:
            out.append(UserDataSpec(name=name, data=data, is_ephemeral=ephemeral))
            wheres.append(e.where)
            continue
        r = _Renderer(e, combos, interned, budget)
        if r.varies("name", name):  # else nothing is rendered: the data is kept as written
            size = r.size("name", (name,)) + combos.count() * _data_bound(data, r)
            if not budget.charge(e.where, size):
                continue
        names = r.scalar("name", name)
        if isinstance(names, _Const):
            out.append(UserDataSpec(name=name, data=data, is_ephemeral=ephemeral))
            wheres.append(e.where)
            continue
        try:
            for ud_name, combo in zip(names, combos, strict=True):
                rendered = _render_data(data, r, combo)
                out.append(UserDataSpec(name=ud_name, data=rendered, is_ephemeral=ephemeral))
                wheres.append(e.where)
        except _FORMAT_ERRORS as exc:
            e.fail("data", f"cannot format: {exc}")
    if count.report(doc.err):
        budget.exceeded = True
        return [], []
    return out, wheres
