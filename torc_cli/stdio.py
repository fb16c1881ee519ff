"""Where a job's stdout and stderr go: Torc's stdio modes, in shards of a thousand jobs.

``separate`` writes ``.o`` and ``.e``, ``combined`` one ``.log`` with both (in the order
written), ``no_stdout``/``no_stderr`` discard one, ``none`` both; ``delete_on_success``
removes a completed job's files. The files of job J are under
``<output dir>/job_stdio/<J // 1000>/``: a million jobs make a thousand directories of two
thousand entries, not one directory of two million (Torc issue #207), which every ``ls``,
backup and parallel file system handles badly.

This module is the one place that names these files: the runner writes them, each result
records the paths (``stdout_path``/``stderr_path``, null when not captured) and every reader
(``jobs log``, the run summary, ``exec --joblog``) takes them from the result.

Tails: a result may also carry the end of each stream (``stdout_tail``/``stderr_tail``, the
last 16 KiB, :func:`tails`), so that the server never has to open a path a client named
(torc_net.api_output). Which results do is ``execution_config.output_tails``: ``failed``
(the default: failed and terminated jobs), ``all`` or ``none``. The reader is
:func:`torc_net.job_files.read_tail`, the one the dashboard's local server uses too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torc_net import job_files

#: Under the output directory (torc_net.job_files knows the layout too: it reads these files).
STDIO_DIR = job_files.STDIO_DIR
#: Jobs per shard directory.
SHARD = 1000


@dataclass(frozen=True, slots=True)
class StdioPlan:
    stdout: str | None
    stderr: str | None  # equal to stdout: one file with both
    delete_on_success: bool = False

    def paths(self) -> list[str]:
        return list(dict.fromkeys(p for p in (self.stdout, self.stderr) if p is not None))


def job_stem(output_dir: Path | str, workflow_id: object, job_id: object, run_id: object,
             attempt: object) -> str:
    """A job attempt's files, less the suffix."""
    return (f"{output_dir}/{STDIO_DIR}/{int(job_id) // SHARD}/"  # type: ignore[call-overload]
            f"job_wf{workflow_id}_j{job_id}_r{run_id}_a{attempt}")


def effective(workflow_stdio: dict[str, Any] | None, job_stdio: dict[str, Any] | None) \
        -> tuple[str, bool]:
    """(mode, delete_on_success) of a job: its own stdio, else the workflow's, else
    separate files kept."""
    chosen = job_stdio or workflow_stdio or {}
    return str(chosen.get("mode") or "separate"), bool(chosen.get("delete_on_success"))


def plan(stem: str, mode: str, delete_on_success: bool) -> StdioPlan:
    if mode == "combined":
        return StdioPlan(stem + ".log", stem + ".log", delete_on_success)
    out = None if mode in ("no_stdout", "none") else stem + ".o"
    err = None if mode in ("no_stderr", "none") else stem + ".e"
    return StdioPlan(out, err, delete_on_success)


class ShardDirs:
    """Creates each shard directory once (a cache of the ones made)."""

    __slots__ = ("_made",)

    def __init__(self) -> None:
        self._made: set[str] = set()

    def ensure(self, p: StdioPlan) -> None:
        """The directory of ``p``'s files (one: both come from one stem, :func:`plan`)."""
        path = p.stdout if p.stdout is not None else p.stderr
        if path is None:
            return
        parent = os.path.dirname(path)
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)


def remove(p: StdioPlan) -> None:
    """``delete_on_success``: the files of a completed job."""
    for path in p.paths():
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def wants_tails(output_tails: str, completed: bool) -> bool:
    """Whether a result carries its output's tails (``execution_config.output_tails``)."""
    return output_tails == "all" or (output_tails == "failed" and not completed)


def tails(p: StdioPlan) -> dict[str, str | None]:
    """``stdout_tail``/``stderr_tail`` of a job's files: the last 16 KiB of each, decoded as
    UTF-8 (invalid bytes replaced); null for a stream not written to a file. A combined file
    is the stdout tail (its stderr path is the same file). Cheap: a pread at each file's
    end; the caller reads before ``delete_on_success`` removes them."""
    return job_files.read_tails(p.stdout, p.stderr)


def result_paths(p: StdioPlan, completed: bool) -> dict[str, str | None]:
    """What a result records: the files kept (none after delete_on_success removed them)."""
    if completed and p.delete_on_success:
        return {"stdout_path": None, "stderr_path": None}
    return {"stdout_path": p.stdout, "stderr_path": p.stderr}
