"""Exit statuses, and the errors that end a command with one (the README lists them).

| status | meaning |
|---|---|
| 0 | success (for run/exec: every job completed) |
| 1 | a run ended with jobs that did not complete (``--exit-status``: status/watch saw some) |
| 2 | bad input: usage, a spec, a file, an id that does not exist, a refusal by the server |
| 3 | the server: unreachable, failing, or the standalone one did not start |
| 4 | Slurm: sbatch, scancel or squeue failed |
| 5 | the event feed was lost or fell behind (watch, events monitor) |
| 130 | interrupted (Ctrl-C, SIGINT) |
| 141 | the output was closed (a pipe's reader went away) |
| 143 | terminated (SIGTERM) |
"""

from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_FAILED_JOBS = 1
EXIT_USAGE = 2
EXIT_SERVER = 3
EXIT_SLURM = 4
EXIT_FEED = 5
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_PIPE = 128 + signal.SIGPIPE  # 141
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143


class CliError(Exception):
    """An error that ends the command with ``exit_code`` and a message (one or more lines)."""

    exit_code = EXIT_USAGE


class InputError(CliError):
    """Bad user input, with a message that names the problem and where it is."""

    exit_code = EXIT_USAGE


class SlurmFailure(CliError):
    """Slurm refused or failed (sbatch, scancel, squeue)."""

    exit_code = EXIT_SLURM


class FeedLost(CliError):
    """The event feed closed or overflowed before the workflow ended."""

    exit_code = EXIT_FEED


def signal_exit(signum: int) -> int:
    """The status a shell gives a command a signal ended: 128 + the signal number."""
    return 128 + signum
