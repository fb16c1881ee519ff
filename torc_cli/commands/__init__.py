"""Every `torc-trio` command, by theme: creating and running (:mod:`.run`), looking
(:mod:`.inspect`), changing (:mod:`.change`), Slurm (:mod:`.slurm`), and the commands that are
no client (:mod:`.service`). Adding a command: a function and a
:class:`~torc_cli.command.Command` in the theme's ``COMMANDS`` (and, for a new first word, an
entry in :data:`BY_WORD`)."""

from __future__ import annotations

import importlib
from typing import Any

from ..command import Command

#: The theme modules, in the order their commands are listed.
MODULES = ("run", "inspect", "change", "slurm", "service", "completion", "dash", "grow",
           "transfer", "reports", "plots", "utilization", "access")

#: The modules whose commands (or aliases) start with each first word. Why: importing every
#: theme module (and what each imports) and building every command's parser is a fifth of a
#: second, on the path to the first job of `run`; a command needs only its own. A test checks
#: this against the modules' records.
BY_WORD: dict[str, tuple[str, ...]] = {
    "access-groups": ("access",), "cancel": ("change",), "completions": ("completion",),
    "correct-resources": ("utilization",), "create": ("run",), "dash": ("dash",),
    "events": ("reports",), "exec": ("run",), "htpasswd": ("service",),
    "jobs": ("inspect", "change", "grow", "reports"), "logs": ("reports",),
    "ping": ("inspect",), "plot-resources": ("plots",), "recover": ("slurm",),
    "reinitialize": ("change",), "reports": ("reports", "utilization"),
    "reset-status": ("change",), "results": ("inspect",), "run": ("run",),
    "runner": ("run",), "serve": ("service",), "slurm": ("slurm",), "status": ("inspect",),
    "submit": ("slurm",), "watch": ("inspect",),
    "workflows": ("run", "inspect", "change", "slurm", "transfer", "utilization"),
}


def _records(modules: tuple[str, ...]) -> list[Command]:
    out: list[Command] = []
    for name in sorted(modules, key=MODULES.index):
        out.extend(importlib.import_module(f"{__name__}.{name}").COMMANDS)
    return out


def all_commands() -> list[Command]:
    """Every command, in the order of ``--help``."""
    return _records(MODULES)


def commands_for(word: str) -> list[Command] | None:
    """The commands a command line starting with ``word`` may name (None: not a command)."""
    modules = BY_WORD.get(word)
    if modules is None:
        return None
    return [c for c in _records(modules) if any(n.split()[0] == word for n in c.names)]


def __getattr__(name: str) -> Any:
    if name == "COMMANDS":  # the whole list, imported on first use (PEP 562)
        return all_commands()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Descriptions of the command groups (``torc-trio jobs --help``).
GROUPS = {
    "workflows": "create, list, inspect and change workflows (Torc's names)",
    "jobs": "a workflow's jobs",
    "results": "a workflow's results",
    "events": "a workflow's events",
    "reports": "reports on a workflow",
    "logs": "jobs' output",
    "slurm": "Slurm's view of a workflow (sacct of its job steps)",
    "access-groups": "share workflows with teams: groups, members, shared workflows (Torc's "
                     "names)",
}
