"""Spec text to a plain document: YAML, JSON, JSON5 or KDL (Torc's formats), with YAML
aliases bounded, and ``"@values.txt"`` parameter values inlined once the caller has read the
files (this module does no I/O).

PyYAML is imported only when YAML text is read (:mod:`.yaml_load`): a server that is sent
specs as JSON, and a standalone run of a command file, start ~20 ms sooner without it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, cast

import json5

from .entries import entry_where as _entry_where
from .errors import SpecError
from .kdl import kdl_to_doc

FORMATS = ("yaml", "json", "json5", "kdl")




def fmt_for_path(path: str) -> str:
    """The format of a spec file by its suffix (.yaml/.yml, .json, .json5, .kdl)."""
    lower = path.lower()
    if lower.endswith((".yaml", ".yml")):
        return "yaml"
    if lower.endswith(".json5"):
        return "json5"
    if lower.endswith(".json"):
        return "json"
    if lower.endswith(".kdl"):
        return "kdl"
    raise SpecError([f"cannot tell the format of {path!r}: "
                     "use .yaml, .yml, .json, .json5 or .kdl"])


#: YAML aliases may add at most this many nodes to a document. "Billion laughs" (anchors whose
#: lists alias the previous anchor, 9 levels of 9) is 500 bytes that load as a shared graph
#: and expand to 10^9 nodes, 2.6 GB of JSON, when sent to the server or walked.
MAX_YAML_ALIAS_NODES = 10_000_000


def _loader_problem(exc: Exception) -> str:
    """What Python itself refuses while loading, in the words of a spec problem."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if "integer string conversion" in str(exc):
        return "a number of more than 4300 digits"
    return str(exc)


def load_spec_text(
    text: str, fmt: str, *, max_alias_nodes: int = MAX_YAML_ALIAS_NODES
) -> dict[str, Any]:
    """Parse spec text. Syntax errors become a SpecError that says the line (and column).

    Bounded: YAML aliases may add at most ``max_alias_nodes`` nodes; nesting deeper than
    Python's recursion limit and integers of more than 4300 digits are SpecErrors too."""
    try:
        return _load_spec_text(text, fmt, max_alias_nodes)
    except (RecursionError, ValueError) as exc:  # syntax errors were SpecErrors already
        label = {"yaml": "YAML", "json": "JSON", "json5": "JSON5", "kdl": "KDL"}.get(fmt, fmt)
        raise SpecError([f"{label}: {_loader_problem(exc)}"]) from None


def _load_spec_text(text: str, fmt: str, max_alias_nodes: int) -> dict[str, Any]:
    data: object
    if fmt == "yaml":
        from .yaml_load import load_yaml  # PyYAML only for YAML text (module docstring)

        data = load_yaml(text, max_alias_nodes)
    elif fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(
                [f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}"]
            ) from None
    elif fmt == "json5":
        try:
            data = json5.loads(text)
        except ValueError as exc:
            message = str(exc)
            m = re.match(r"<string>:(\d+) (.*)", message)
            if m:
                message = f"at line {m.group(1)}: {m.group(2)}"
            raise SpecError([f"JSON5 syntax error {message}"]) from None
    elif fmt == "kdl":
        data = kdl_to_doc(text)
    else:
        raise SpecError([f"unknown spec format {fmt!r} (expected one of {', '.join(FORMATS)})"])
    if not isinstance(data, dict):
        raise SpecError(["the spec must be a mapping at the top level"])
    return cast(dict[str, Any], data)


# --------------------------------------------------------------------------------------------
# @file parameter values


def _parameter_tables(doc: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(where, parameters mapping) of every parameters table in the document."""
    params = doc.get("parameters")
    if isinstance(params, Mapping):
        yield "parameters", params
    for section in ("jobs", "files", "user_data"):
        entries = doc.get(section)
        if not isinstance(entries, list):
            continue
        for k, entry in enumerate(entries):
            if isinstance(entry, Mapping) and isinstance(entry.get("parameters"), Mapping):
                yield f"{_entry_where(section, k, entry)}: parameters", entry["parameters"]


def _value_file(value: object) -> str | None:
    if isinstance(value, str) and value.strip().startswith("@"):
        return value.strip()[1:].strip()
    return None


def value_file_references(doc: Mapping[str, Any]) -> list[str]:
    """The files named by ``"@values.txt"`` parameter values, in order of first use."""
    seen: dict[str, None] = {}
    for _, table in _parameter_tables(doc):
        for value in table.values():
            path = _value_file(value)
            if path:
                seen[path] = None
    return list(seen)


def inline_value_files(doc: Mapping[str, Any], contents: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``doc`` where each ``"@path"`` parameter value is the list of the non-empty
    (stripped) lines of ``contents[path]``. Core does no I/O: the caller read the files."""
    out: dict[str, Any] = dict(doc)
    errors: list[str] = []

    def inline(table: Mapping[str, Any], where: str) -> dict[str, Any]:
        new = dict(table)
        for key, value in table.items():
            path = _value_file(value)
            if path is None:
                continue
            text = contents.get(path)
            if text is None:
                errors.append(f"{where}: {key}: value file {path!r} was not provided")
                continue
            new[key] = [line.strip() for line in text.splitlines() if line.strip()]
        return new

    if isinstance(doc.get("parameters"), Mapping):
        out["parameters"] = inline(doc["parameters"], "parameters")
    for section in ("jobs", "files", "user_data"):
        entries = doc.get(section)
        if not isinstance(entries, list):
            continue
        new_entries: list[Any] = []
        for k, entry in enumerate(entries):
            if isinstance(entry, Mapping) and isinstance(entry.get("parameters"), Mapping):
                entry = dict(entry)
                where = f"{_entry_where(section, k, entry)}: parameters"
                entry["parameters"] = inline(entry["parameters"], where)
            new_entries.append(entry)
        out[section] = new_entries
    if errors:
        raise SpecError(errors)
    return out
