"""Turning what the user gives (a spec file, a command list, `exec` options) into a spec
document for the server, plus the checks that must happen before anything is created.

Reading files happens here, at the edge; parsing and validation are torc_core's.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from torc_core import SpecError, WorkflowSpec
from torc_core.parse import (
    fmt_for_path,
    inline_value_files,
    load_spec_text,
    parse_spec,
    value_file_references,
)

from .exits import InputError

SPEC_SUFFIXES = (".yaml", ".yml", ".json", ".json5", ".kdl")


def is_spec_path(path: str) -> bool:
    return path.lower().endswith(SPEC_SUFFIXES)


def load_spec_file(path: str) -> dict[str, Any]:
    """Read a YAML/JSON/JSON5/KDL spec and inline its ``@file`` parameter values."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise InputError(f"{path}: cannot read spec: {exc.strerror}") from None
    try:
        doc = load_spec_text(text, fmt_for_path(path))
    except SpecError as exc:
        raise SpecError([f"{path}: {e}" for e in exc.errors]) from None
    return _inline_value_files(doc, p.parent, f"{path}: ")


def _inline_value_files(doc: dict[str, Any], base: Path, where: str) -> dict[str, Any]:
    """Replace each ``@file`` parameter value by the file's lines. Relative paths are read
    from ``base`` (a spec's own directory; the working directory for ``exec --param``), so
    a spec and its value files travel together."""
    contents: dict[str, str] = {}
    missing: list[str] = []
    for ref in value_file_references(doc):
        ref_path = base / ref if not os.path.isabs(ref) else Path(ref)
        try:
            contents[ref] = ref_path.read_text()
        except OSError as exc:
            missing.append(f"{where}parameter file '@{ref}': {exc.strerror} ({ref_path})")
    if missing:
        raise InputError("\n".join(missing))
    return inline_value_files(doc, contents) if contents else doc


def read_command_lines(path: str) -> list[str]:
    """A command list: one job per line; blank lines and ``#`` comments skipped."""
    try:
        text = Path(path).read_text() if path != "-" else _stdin_text()
    except OSError as exc:
        raise InputError(f"{path}: cannot read command file: {exc.strerror}") from None
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _stdin_text() -> str:
    import sys

    return sys.stdin.read()


def commands_spec(name: str, commands: list[str], source: str | None = None) -> dict[str, Any]:
    """One job per command. ``source``: the file they came from, named if there are none."""
    if not commands:
        if source is not None:
            raise InputError(f"{source}: no commands to run (every line is blank or a "
                             "# comment)")
        raise InputError(f"{name}: no commands to run")
    width = len(str(len(commands)))
    return {
        "name": name,
        "jobs": [
            {"name": f"job_{i:0{width}d}", "command": command}
            for i, command in enumerate(commands, start=1)
        ],
    }


_PARAM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.+)$")


def exec_spec(
    name: str, commands: list[str], params: list[str], link: str
) -> dict[str, Any]:
    """`exec`: commands, optionally expanded over --param NAME=VALUE (product or zip)."""
    parameters: dict[str, str] = {}
    for item in params:
        match = _PARAM.match(item)
        if not match:
            raise InputError(f"--param {item!r}: expected NAME=VALUE (e.g. i=1:10 or x=[a,b])")
        parameters[match.group(1)] = match.group(2)
    if not commands:
        raise InputError("exec: no commands (use -c CMD, -C FILE, or -- CMD ARGS...)")
    if not parameters:
        return commands_spec(name, commands)
    width = len(str(len(commands)))
    suffix = "_".join("{" + p + "}" for p in parameters)
    jobs = []
    for i, command in enumerate(commands, start=1):
        prefix = f"job{i:0{width}d}_" if len(commands) > 1 else "job_"
        jobs.append({
            "name": prefix + suffix,
            "command": command,
            "parameters": dict(parameters),
            "parameter_mode": link,
        })
    return _inline_value_files({"name": name, "jobs": jobs}, Path.cwd(), "--param: ")


_BRACED = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)(?::[^{}]*)?\}")


def unknown_placeholders(commands: list[str], params: list[str]) -> list[str]:
    """``{name}`` in ``exec`` commands that no ``--param`` defines: they stay as written (a
    shell or awk may want the braces), which is what a mistyped name also gets. ``${VAR}``
    is the shell's and not counted."""
    known = {item.partition("=")[0] for item in params}
    found = {m.group(1) for c in commands for m in _BRACED.finditer(c)}
    return sorted(found - known)


#: The failure handler ``exec --retries N`` adds to its spec.
RETRIES_HANDLER = "exec_retries"


def with_retries(doc: dict[str, Any], retries: int) -> dict[str, Any]:
    """``doc`` whose every job, if it fails (any exit code, a signal too), runs again up to
    ``retries`` more times: Torc's own failure handler, so the server counts the attempts and
    ``results list --all-runs`` shows each one."""
    handler = {"name": RETRIES_HANDLER,
               "rules": [{"match_all_exit_codes": True, "max_retries": retries}]}
    return {**doc, "failure_handlers": [*(doc.get("failure_handlers") or []), handler],
            "jobs": [{**job, "failure_handler": RETRIES_HANDLER} for job in doc["jobs"]]}


def argv_command(argv: list[str]) -> str:
    return shlex.join(argv)


def missing_input_files(spec: WorkflowSpec, base: Path) -> list[str]:
    """Input files that no job produces and that do not exist: the run cannot start."""
    produced = {f for job in spec.jobs for f in job.output_files}
    needed = {f for job in spec.jobs for f in job.input_files} - produced
    paths = {f.name: f.path for f in spec.files}
    missing = []
    for name in sorted(needed):
        path = paths.get(name, name)
        if not (base / path).exists():
            missing.append(f"required input file '{name}' does not exist: {path}")
    return missing


def check_spec(doc: dict[str, Any], *, warn: bool = False) -> WorkflowSpec:
    """Validate locally first: errors come back at once, and nothing is sent. With ``warn``,
    each field accepted without effect here is named on stderr (never silence)."""
    spec = parse_spec(doc)
    if warn:
        for warning in spec.warnings:
            print(f"torc-trio: warning: {warning}", file=sys.stderr)
    return spec
