"""Every `torc-trio` command, by theme: creating and running (:mod:`.run`), looking
(:mod:`.inspect`), changing (:mod:`.change`), Slurm (:mod:`.slurm`), and the commands that are
no client (:mod:`.service`). Adding a command: a function and a
:class:`~torc_cli.command.Command` in the theme's ``COMMANDS``."""

from __future__ import annotations

from ..command import Command
from . import (
    access,
    change,
    completion,
    dash,
    grow,
    inspect,
    plots,
    reports,
    run,
    service,
    slurm,
    transfer,
    utilization,
)

COMMANDS: list[Command] = [
    *run.COMMANDS, *inspect.COMMANDS, *change.COMMANDS, *slurm.COMMANDS, *service.COMMANDS,
    *completion.COMMANDS, *dash.COMMANDS, *grow.COMMANDS,
    *transfer.COMMANDS, *reports.COMMANDS, *plots.COMMANDS, *utilization.COMMANDS,
    *access.COMMANDS,
]

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
