"""What a `torc-trio` command is: one small record the parser and the dispatcher read.

Why a record: adding a command is writing a function and one :class:`Command` next to it
(the theme modules of :mod:`torc_cli.commands` keep their own lists); the parser, ``--help``,
shell completion and the dispatch all come from the records, so nothing else needs touching.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .session import Context

AsyncMain = Callable[["Context"], Awaitable[int]]
SyncMain = Callable[[argparse.Namespace], int]
Arguments = Callable[[argparse.ArgumentParser], None]


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _never(args: argparse.Namespace) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Command:
    """One command.

    ``name`` is its words (``"jobs list"``); ``aliases`` other names for the same command
    (Torc's ``workflows status`` for ``status``). Exactly one of ``run`` (a coroutine given a
    :class:`~torc_cli.session.Context` with a client) and ``main`` (a plain function given the
    arguments, for commands that are no client: ``serve``, ``htpasswd``) is set.
    ``offline(args)`` says when ``run`` needs no server this time (``create --dry-run``).
    ``prepare(args)`` reads and checks the input before any server is contacted (a bad spec
    leaves nothing behind); its value is ``args.prepared``. ``creates`` says the command may
    make a workflow, and so a standalone database that did not exist yet."""

    name: str
    help: str
    examples: str
    arguments: Arguments = _no_arguments
    run: AsyncMain | None = None
    main: SyncMain | None = None
    offline: Callable[[argparse.Namespace], bool] = _never
    prepare: Callable[[argparse.Namespace], Any] | None = None
    creates: bool = False
    aliases: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if (self.run is None) == (self.main is None):
            raise ValueError(f"command {self.name!r}: give exactly one of run and main")

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def epilog(self) -> str:
        """The examples, dedented whatever the indentation of the source."""
        lines = inspect.cleandoc(self.examples).splitlines()
        return "examples:\n" + "\n".join(f"  {line}" for line in lines)
