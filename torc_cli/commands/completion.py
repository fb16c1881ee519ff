"""Shell completion: `torc-trio completions SHELL` (Torc's `torc completions SHELL`).

Made with argcomplete (https://github.com/kislyuk/argcomplete), which completes from the
parser itself, so every command and option completes as soon as it exists:

* ``completions SHELL`` prints argcomplete's script for ``torc-trio``
  (:func:`argcomplete.shellcode`). On TAB the shell runs ``torc-trio`` with the line in
  ``COMP_LINE``/``COMP_POINT`` and ``_ARGCOMPLETE`` set;
* the CLI calls :func:`autocomplete` with its parser before parsing: in such a run it writes
  the completions where the script reads them (file descriptor 8, or
  ``_ARGCOMPLETE_STDOUT_FILENAME``) and exits; in any other run it returns at once, without
  importing argcomplete.

Options are offered once a ``-`` is typed (``torc-trio serve --<TAB>``), commands and values
without one.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..command import Command

PROG = "torc-trio"
#: The shells argcomplete writes scripts for (Torc's elvish it does not).
SHELLS = ("bash", "zsh", "fish", "powershell")


def autocomplete(parser: argparse.ArgumentParser) -> None:
    """Answer a completion request for ``parser`` and exit, if this run is one (the script of
    ``completions`` sets ``_ARGCOMPLETE``); otherwise return at once."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete

    argcomplete.autocomplete(parser, always_complete_options=False)


def script(shell: str, prog: str = PROG) -> str:
    """The completion script for ``prog`` in ``shell``."""
    from argcomplete.shell_integration import shellcode  # argcomplete.shellcode

    return shellcode([prog], shell=shell)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shell", choices=SHELLS, help="the shell to write the script for")


def _completions(args: argparse.Namespace) -> int:
    sys.stdout.write(script(args.shell))
    sys.stdout.flush()
    return 0


COMMANDS = [
    Command("completions", "print a shell completion script (Torc's torc completions)",
            """source <(torc-trio completions bash)        # this shell; in ~/.bashrc for all
               torc-trio completions bash > ~/.local/share/bash-completion/completions/torc-trio
               torc-trio completions zsh > ~/.zfunc/_torc-trio  # with fpath=(~/.zfunc $fpath)
               torc-trio completions fish > ~/.config/fish/completions/torc-trio.fish""",
            arguments=_arguments, main=_completions),
]
